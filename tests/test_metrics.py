"""Metric values on small hand-made examples, each worked out by hand in the comment beside it."""

from __future__ import annotations

import math

import pytest

from app import metrics


def test_rouge1_counts_shared_words():
    # 2 of 3 words shared both ways: P = R = 2/3, F = 2/3
    assert metrics.rouge_scores("the cat sat", "the cat ran")["rouge1"] == pytest.approx(200 / 3)


def test_rouge2_and_rougel_by_hand():
    # bigrams: pred {the cat, cat sat}, ref {the cat, cat ran}: 1 of 2 shared -> F = 1/2
    # LCS "the cat" = 2 of 3 words -> F = 2/3
    s = metrics.rouge_scores("the cat sat", "the cat ran")
    assert s["rouge2"] == pytest.approx(50.0)
    assert s["rougeL"] == pytest.approx(200 / 3)


def test_rouge_precision_recall_differ():
    # pred "a b" vs ref "a b c d": P = 1, R = 1/2, F = 2PR/(P+R) = 2/3
    assert metrics.rouge_scores("a b", "a b c d")["rouge1"] == pytest.approx(200 / 3)


def test_chinese_scored_by_character():
    # 我 爱 北 京 vs 我 爱 上 海: 2 of 4 characters shared -> F = 1/2 (not 0, as one unknown token would give)
    assert metrics.rouge_scores("我爱北京", "我爱上海")["rouge1"] == pytest.approx(50.0)
    # bigrams 我爱 爱北 北京 vs 我爱 爱上 上海: 1 of 3 -> 1/3
    assert metrics.rouge_scores("我爱北京", "我爱上海")["rouge2"] == pytest.approx(100 / 3)


def test_tokenize_mixes_scripts():
    assert metrics.tokenize("TuneBot是一个助手 v2") == ["tunebot", "是", "一", "个", "助", "手", "v2"]


def test_exact_match_normalises_space_and_case():
    assert metrics.exact_match("  Paris\n", "paris") == 100.0
    assert metrics.exact_match("The  capital is\tParis", "the capital is paris") == 100.0
    assert metrics.exact_match("Paris.", "Paris") == 0.0  # punctuation is kept: "Paris." is not "Paris"


def test_bleu_identical_is_100_and_disjoint_is_0():
    sentence = "the quick brown fox jumps over the lazy dog"
    assert metrics.corpus_bleu([sentence], [sentence]) == pytest.approx(100.0)
    assert metrics.sentence_bleu(sentence, sentence) == pytest.approx(100.0)
    assert metrics.corpus_bleu(["completely different words here"], [sentence]) == 0.0


def test_bleu_short_exact_answers_still_100():
    # Three-token answers have no 4-grams; plain corpus BLEU would be 0 for a perfect system
    assert metrics.corpus_bleu(["I am TuneBot", "yes"], ["I am TuneBot", "yes"]) == pytest.approx(100.0)


def test_bleu_known_value_by_hand():
    # pred "a b c d e" vs ref "a b c d f" (13a keeps these tokens): n-gram precisions 4/5, 3/4, 2/3, 1/2,
    # same length -> BP = 1; BLEU = 100 * (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 100 * 0.2 ** 0.25
    assert metrics.corpus_bleu(["a b c d e"], ["a b c d f"]) == pytest.approx(100 * 0.2**0.25)


def test_chinese_switches_bleu_to_zh_tokenizer():
    assert metrics.bleu_tokenizer(["我爱北京天安门"]) == "zh"
    assert metrics.bleu_tokenizer(["I love Beijing"]) == "13a"
    # with 13a the unsegmented sentence is one token and a one-character change zeroes it; zh splits characters
    pred, ref = "我爱北京天安门广场", "我爱北京天安门"
    assert metrics.corpus_bleu([pred], [ref], "13a") == 0.0
    assert metrics.score([pred], [ref])["bleu"] > 50
    assert metrics.score([pred], [ref])["bleu_tokenize"] == "zh"


def test_score_averages_over_examples():
    s = metrics.score(["the cat sat", "hello world"], ["the cat ran", "hello world"])
    assert s["rouge1"] == pytest.approx((200 / 3 + 100) / 2)
    assert s["exact_match"] == pytest.approx(50.0)
    assert s["n"] == 2


def test_score_empty_and_mismatched():
    assert metrics.score([], [])["rouge1"] is None
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.score(["a", "b"], ["a"])


def test_empty_prediction_scores_zero():
    s = metrics.per_example([""], ["the cat"])[0]
    assert s["rouge1"] == 0.0 and s["bleu"] == 0.0 and s["exact_match"] == 0.0


def test_perplexity_is_exp_of_token_weighted_loss():
    # example A: 3 tokens, NLL sum 3.0; example B: 1 token, NLL 5.0 -> token-weighted loss 8/4 = 2.0
    loss, ppl = metrics.perplexity(3.0 + 5.0, 3 + 1)
    assert loss == pytest.approx(2.0)
    assert ppl == pytest.approx(math.e**2)
    assert metrics.perplexity(0.0, 0) == (None, None)
