"""Text metrics for evaluation: ROUGE-1/2/L, BLEU, exact match, and loss -> perplexity. Pure Python: no torch.

Every text metric is a percentage, 0-100 (higher is better), so they share one axis in the chart:

>>> s = score(["the cat sat"], ["the cat ran"])
>>> round(s["rouge1"], 2), s["exact_match"]
(66.67, 0.0)

Chinese, Japanese and other scripts without spaces between words are split one character per token (rouge-score's
default tokenizer keeps only [a-z0-9], so "我爱北京" vs "我爱上海" would score 0 instead of 50):

>>> round(rouge_scores("我爱上海", "我爱北京")["rouge1"], 2)
50.0

BLEU is sacrebleu's: corpus BLEU over all examples plus smoothed sentence BLEU per example; its tokenizer is "zh"
when at least 25% of the reference characters are CJK ideographs or kana, else the standard "13a".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "exact_match")
"""Keys of score(); each is a percentage 0-100."""

# Han ideographs (basic, extension A, compatibility, extensions B+) and Japanese kana. Hangul is left out:
# Korean separates words with spaces, so it is tokenised by word like English.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
CJK_SHARE_FOR_ZH = 0.25
"""Share of CJK characters (of all non-space characters) from which BLEU switches to sacrebleu's "zh" tokenizer."""


# ---- tokenising and normalising --------------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lower-cased words of letters/digits in any script, with each CJK character a token of its own.

    >>> tokenize("Hello, 世界! It's 2024.")
    ['hello', '世', '界', 'it', 's', '2024']
    """
    return _TOKEN.findall(text.lower())


def normalize(text: str) -> str:
    """What exact match compares: stripped, whitespace runs collapsed to one space, case-folded.

    >>> normalize("  The  Cat\\n SAT ")
    'the cat sat'
    """
    return " ".join(text.split()).casefold()


def cjk_share(texts: Sequence[str]) -> float:
    """Share of CJK characters among all non-space characters (0 for empty text).

    >>> cjk_share(["我爱北京", "ok"])
    0.6666666666666666
    """
    chars = sum(len("".join(t.split())) for t in texts)
    return sum(len(_CJK_CHAR.findall(t)) for t in texts) / chars if chars else 0.0


def bleu_tokenizer(references: Sequence[str]) -> str:
    """sacrebleu tokenizer name for this corpus: "zh" for mostly-CJK references, else "13a"."""
    return "zh" if cjk_share(references) >= CJK_SHARE_FOR_ZH else "13a"


class _Tokenizer:
    """The object rouge-score wants: anything with tokenize(text) -> list[str]."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_Tokenizer())


# ---- per example ------------------------------------------------------------------------------------------
def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure of one prediction against one reference, in percent.

    >>> rouge_scores("the cat sat", "the cat sat")["rougeL"]
    100.0
    """
    scores = _rouge_scorer().score(reference, prediction)  # rouge-score's order is (target, prediction)
    return {name: 100.0 * scores[name].fmeasure for name in ROUGE_TYPES}


def exact_match(prediction: str, reference: str) -> float:
    """100.0 when the normalised strings are equal, else 0.0."""
    return 100.0 if normalize(prediction) == normalize(reference) else 0.0


def sentence_bleu(prediction: str, reference: str, tokenize: str = "13a") -> float:
    """Smoothed sentence BLEU (sacrebleu defaults: exp smoothing, effective order), 0-100."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [reference], tokenize=tokenize).score)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU, 0-100. Effective order is on: it only changes the result when no prediction has 4 tokens (then
    plain BLEU is 0 even for perfect answers; with it, four 3-token exact answers score 100)."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize=tokenize, effective_order=True)
    return float(bleu.corpus_score(list(predictions), [list(references)]).score)


def per_example(predictions: Sequence[str], references: Sequence[str], tokenize: str | None = None) -> list[dict]:
    """One dict per pair: rouge1, rouge2, rougeL, bleu (sentence), exact_match; all 0-100."""
    _check_lengths(predictions, references)
    tok = tokenize or bleu_tokenizer(references)
    rows = []
    for pred, ref in zip(predictions, references, strict=True):
        row = rouge_scores(pred, ref)
        row["bleu"] = sentence_bleu(pred, ref, tok)
        row["exact_match"] = exact_match(pred, ref)
        rows.append(row)
    return rows


# ---- corpus -------------------------------------------------------------------------------------------------
def score(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus scores, each a percentage 0-100: rouge1/rouge2/rougeL (mean F-measure over examples), bleu (corpus
    BLEU), exact_match (share of exact answers). Also n (pairs) and bleu_tokenize ("13a" or "zh").

    With no pairs every metric is None. Raises ValueError when the two lists differ in length.

    >>> score(["Paris is the capital of France."], ["paris  is the capital of france."])["exact_match"]
    100.0
    """
    _check_lengths(predictions, references)
    tok = bleu_tokenizer(references)
    if not predictions:
        return {**dict.fromkeys(TEXT_METRICS), "n": 0, "bleu_tokenize": tok}
    rows = [rouge_scores(p, r) for p, r in zip(predictions, references, strict=True)]
    out: dict = {name: sum(r[name] for r in rows) / len(rows) for name in ROUGE_TYPES}
    out["bleu"] = corpus_bleu(predictions, references, tok)
    out["exact_match"] = sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / len(rows)
    out["n"] = len(rows)
    out["bleu_tokenize"] = tok
    return out


def perplexity(nll_sum: float, tokens: int) -> tuple[float | None, float | None]:
    """(loss, perplexity) from a summed negative log-likelihood (nats) over `tokens` tokens.

    Token-weighted: a 200-token answer counts 20x a 10-token one, as in training. None, None without tokens.

    >>> loss, ppl = perplexity(2 * math.log(4), 2)
    >>> round(loss, 4), round(ppl, 4)
    (1.3863, 4.0)
    """
    if tokens <= 0:
        return None, None
    loss = nll_sum / tokens
    return loss, math.exp(min(loss, 700.0))  # exp(710) overflows a float; a loss that high means "broken" anyway


def _check_lengths(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair up")
