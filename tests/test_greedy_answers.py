"""app.train_events.greedy_answers: several prompts decoded together (left-padded, app.evaluate.generate_answers)
give each prompt the answer it gets alone, each within its own budget, the answer transformers' greedy `generate`
gives (samples, evaluation answers and the did-it-learn check all answer through it)."""

from __future__ import annotations

import pytest
import torch

from app import train_events
from app.modeling import load_tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    return model, load_tokenizer(str(tiny_model_dir))


def _prompts(tokenizer):
    texts = ["Name the capital of France.", "hi", "Write one long sentence about rivers, hills and the sea."]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_answers_in_one_batch_are_the_answers_one_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [(ids, budget) for ids, budget in zip(_prompts(tok), (12, 5, 9), strict=True)]
    assert len({len(ids) for ids, _ in prompts}) == 3  # different lengths: the batch is left-padded
    alone = [train_events.greedy_answers(model, tok, [p])[0] for p in prompts]
    together = train_events.greedy_answers(model, tok, prompts, batch=3)
    assert together == alone
    assert any(alone)  # the tiny model says something, or equality shows nothing
    pairs = train_events.greedy_answers(model, tok, prompts, batch=2)  # [2 prompts] + [1 prompt]
    assert pairs == alone
    assert train_events.greedy_answer(model, tok, prompts[0][0], 12) == alone[0]


def test_each_answer_in_a_batch_keeps_its_own_budget(model_and_tokenizer):
    model, tok = model_and_tokenizer
    ids = _prompts(tok)[0]
    budgets = [1, 3, 12]
    answers = train_events.greedy_answers(model, tok, [(ids, n) for n in budgets])
    prompt = torch.tensor([ids])
    for n, answer in zip(budgets, answers, strict=True):
        plain = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                               do_sample=False, pad_token_id=tok.pad_token_id)  # fmt: skip
        assert answer == tok.decode(plain[0, len(ids) :], skip_special_tokens=True).strip(), n
    assert answers[2].startswith(answers[1]) and answers[1].startswith(answers[0])  # greedy: a prefix of longer
    assert train_events.greedy_answers(model, tok, []) == []
