"""The real Alpaca demo data (../shared/data): every record valid, counts right, and for both templates the
trained tokens decode to exactly the answer + eos while every prompt token is -100."""

from __future__ import annotations

import pytest

from app.config import DataConfig
from app.data import IGNORE, load_examples, prepare, render_segments
from app.data_render import tokenize_segments


def check_labels(examples, tok, template: str) -> None:
    """Decode the trained tokens and the prompt tokens of every example and compare them to the rendered text."""
    rendered = [render_segments(ex, tok, template) for ex in examples]
    for ex, segs, (ids, flags) in zip(examples, rendered, tokenize_segments(rendered, tok), strict=True):
        answer = tok.decode([i for i, f in zip(ids, flags, strict=True) if f])
        prompt = tok.decode([i for i, f in zip(ids, flags, strict=True) if not f])
        assert answer == ex.messages[-1]["content"] + tok.eos_token, f"record {ex.index}"
        assert prompt == "".join(t for t, is_resp in segs if not is_resp), f"record {ex.index}"


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    from app.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def english(shared_data):
    return load_examples(str(shared_data / "alpaca_en_demo.json"))


@pytest.fixture(scope="module")
def chinese(shared_data):
    return load_examples(str(shared_data / "alpaca_zh_demo.json"))


def test_english_demo_all_valid_and_counted(english):
    assert (english.format, english.records, len(english.examples), english.skipped) == ("alpaca", 999, 999, 0)
    assert sum(bool(ex.fields["input"]) for ex in english.examples) == 412
    assert all(p.severity == "warning" and p.message.startswith("duplicate of record") for p in english.problems)


def test_chinese_demo_all_valid_and_counted(chinese):
    assert (chinese.format, chinese.records, len(chinese.examples), chinese.skipped) == ("alpaca", 1000, 1000, 0)
    assert all(p.severity == "warning" for p in chinese.problems)


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_labels_are_exactly_the_answers_tiny_tokenizer(english, chinese, tiny_tok, template):
    # Every 5th record (200 + 200, with and without input): the tiny 512-token BPE is slow on long text.
    check_labels(english.examples[::5] + chinese.examples[::5], tiny_tok, template)


def test_identity_placeholders_fill_every_record(shared_data, tiny_tok):
    cfg = DataConfig(
        path=str(shared_data / "identity.json"), placeholders={"name": "TuneBot", "author": "Ada"}, val_size=0.0
    )
    prepared = prepare(cfg, tiny_tok)
    assert prepared.load.problems == [] and prepared.stats.valid == 91
    texts = [tiny_tok.decode(e.input_ids) for e in prepared.train]
    assert not any("{{" in t for t in texts) and sum("TuneBot" in t for t in texts) > 40


@pytest.mark.slow
@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_labels_are_exactly_the_answers_default_model(english, chinese, default_model_dir, template):
    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(default_model_dir))
    check_labels(english.examples + chinese.examples, tok, template)


@pytest.mark.slow
def test_prepare_the_english_demo_with_the_default_model(shared_data, default_model_dir):
    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(default_model_dir))
    prepared = prepare(DataConfig(path=str(shared_data / "alpaca_en_demo.json")), tok)
    s = prepared.stats
    assert (s.records, s.valid, s.skipped) == (999, 999, 0)
    assert (s.train_count, s.val_count) == (950, 49)  # int(999 x 0.05) = 49 held out
    assert 0 < s.truncated < 999 and s.max_tokens > 512  # some long answers are cut at the default 512
    assert all(len(e.input_ids) <= 512 and any(t != IGNORE for t in e.labels) for e in prepared.train)
