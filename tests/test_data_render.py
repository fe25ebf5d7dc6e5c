"""Prompt rendering, labels and the prepared dataset, on the tiny ChatML tokenizer (tests/tiny.py).

The claim under test: the text the Data tab shows is exactly the text that is tokenized, and the labels train on
the answers (plus the end-of-turn token) and nothing else."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import DataConfig
from app.data import (
    IGNORE,
    Example,
    RenderError,
    encode_example,
    length_histogram,
    load_examples,
    mask_view,
    prepare,
    render_segments,
    resolve_template,
)
from app.data_render import ALPACA_PREAMBLE, ALPACA_PREAMBLE_INPUT, tokenize_segments

FIX = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from app.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def base_tok(tiny_model_dir):
    """The same tokenizer without a chat template (like a base model)."""
    from app.modeling import load_tokenizer

    t = load_tokenizer(str(tiny_model_dir))
    t.chat_template = None
    return t


def alpaca(instruction: str, output: str, given: str = "", index: int = 0) -> Example:
    user = f"{instruction}\n\n{given}" if given else instruction
    return Example(
        [{"role": "user", "content": user}, {"role": "assistant", "content": output}],
        index,
        {"instruction": instruction, "input": given},
    )


def trained_text(enc, tok) -> str:
    return tok.decode([t for t in enc.labels if t != IGNORE])


def prompt_ids(enc) -> list[int]:
    return [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label == IGNORE]


def test_alpaca_prompt_text_with_and_without_input(tok):
    cfg = DataConfig(template="alpaca")
    segs = render_segments(alpaca("Capital of France?", "Paris."), tok, "alpaca")
    assert segs == [
        (f"{ALPACA_PREAMBLE}\n\n### Instruction:\nCapital of France?\n\n### Response:\n", False),
        ("Paris.<|im_end|>", True),
    ]
    segs = render_segments(alpaca("Translate.", "Bonjour.", given="Hello."), tok, "alpaca")
    assert segs[0][0] == (
        f"{ALPACA_PREAMBLE_INPUT}\n\n### Instruction:\nTranslate.\n\n### Input:\nHello.\n\n### Response:\n"
    )
    enc = encode_example(alpaca("Translate.", "Bonjour.", given="Hello."), tok, cfg)
    assert trained_text(enc, tok) == "Bonjour.<|im_end|>"  # the answer and the eos that teaches stopping
    assert tok.decode(prompt_ids(enc)) == segs[0][0]
    first = enc.labels.index(next(t for t in enc.labels if t != IGNORE))
    assert all(t == IGNORE for t in enc.labels[:first]) and all(t != IGNORE for t in enc.labels[first:])


def test_chat_text_is_the_models_own_template_and_end_of_turn_is_trained(tok):
    ex = alpaca("Capital of France?", "Paris.")
    segs = render_segments(ex, tok, "chat")
    assert "".join(t for t, _ in segs) == tok.apply_chat_template(ex.messages, tokenize=False)
    assert segs == [
        ("<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n", False),
        ("Paris.<|im_end|>", True),
        ("\n", False),
    ]
    enc = encode_example(ex, tok, DataConfig(template="chat"))
    assert trained_text(enc, tok) == "Paris.<|im_end|>"
    assert enc.labels[-1] == IGNORE and enc.input_ids[-1] == tok("\n", add_special_tokens=False)["input_ids"][0]


def test_multi_turn_trains_every_assistant_turn(tok):
    res = load_examples(str(FIX / "sharegpt.json"))
    ex = res.examples[1]  # system + 2 user/assistant rounds
    segs = render_segments(ex, tok, "chat")
    assert [t for t, is_resp in segs if is_resp] == ["4<|im_end|>", "6<|im_end|>"]
    assert segs[0][0].startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    enc = encode_example(ex, tok, DataConfig(template="chat"))
    assert trained_text(enc, tok) == "4<|im_end|>6<|im_end|>"
    alp = render_segments(ex, tok, "alpaca")
    assert [t for t, is_resp in alp if is_resp] == ["4<|im_end|>", "6<|im_end|>"]
    assert alp[0][0].startswith(
        "You are terse.\n\n### Instruction:\n2+2?"
    )  # the record's system replaces the preamble


def test_system_prompt_goes_first_unless_the_record_has_its_own(tok):
    segs = render_segments(alpaca("Hi", "Hello."), tok, "chat", system_prompt="Be kind.")
    assert segs[0][0].startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nHi")
    own = load_examples(str(FIX / "messages.jsonl")).examples[0]
    segs = render_segments(own, tok, "chat", system_prompt="Be kind.")
    assert "Be brief." in segs[0][0] and "Be kind." not in segs[0][0]
    assert "Be kind." not in render_segments(alpaca("Hi", "Hello."), tok, "alpaca", system_prompt="Be kind.")[0][0]


def test_template_auto_follows_the_tokenizer(tok, base_tok):
    assert resolve_template("auto", tok) == "chat"
    assert resolve_template("auto", base_tok) == "alpaca"
    assert resolve_template("alpaca", tok) == "alpaca"
    with pytest.raises(RenderError, match="no chat template"):
        resolve_template("chat", base_tok)


def test_bos_is_rendered_into_the_text_for_tokenizers_that_add_it(tmp_path, tiny_model_dir):
    from tokenizers import processors

    from app.modeling import load_tokenizer

    t = load_tokenizer(str(tiny_model_dir))
    bos_id = t.convert_tokens_to_ids("<|endoftext|>")
    t.bos_token = "<|endoftext|>"
    t._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos_id)]
    )
    segs = render_segments(alpaca("Hi", "Yo."), t, "alpaca")
    assert segs[0][0].startswith("<|endoftext|>Below is")
    enc = encode_example(alpaca("Hi", "Yo."), t, DataConfig(template="alpaca"))
    assert enc.input_ids[0] == bos_id and enc.input_ids.count(bos_id) == 1
    assert enc.input_ids == t("".join(s for s, _ in segs).removeprefix("<|endoftext|>"))["input_ids"]


def test_a_token_straddling_the_prompt_boundary_falls_back_to_per_segment_tokens(tok):
    assert len(tok("Response", add_special_tokens=False)["input_ids"]) == 1  # one merged token in the tiny BPE
    [(ids, flags)] = tokenize_segments([[("Resp", False), ("onse", True)]], tok)
    assert tok.decode([i for i, f in zip(ids, flags, strict=True) if f]) == "onse"
    assert tok.decode([i for i, f in zip(ids, flags, strict=True) if not f]) == "Resp"


def test_truncation_cuts_the_answer_end_and_reports_answers_cut_entirely(tok, tmp_path):
    long_answer = "The capital of France is Paris. " * 20
    ex = alpaca("Capital of France?", long_answer)
    full = encode_example(ex, tok, DataConfig(template="chat", max_seq_len=10**9))
    cut = encode_example(ex, tok, DataConfig(template="chat", max_seq_len=40))
    assert (cut.truncated, len(cut.input_ids), len(cut.labels), cut.full_length) == (True, 40, 40, full.full_length)
    assert cut.input_ids == full.input_ids[:40] and cut.labels == full.labels[:40]
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            [{"instruction": "Short?", "output": "Yes."}, {"instruction": "word " * 60, "output": "Cut entirely."}]
        )
    )
    prepared = prepare(DataConfig(path=str(path), template="chat", max_seq_len=30, val_size=0.0), tok)
    assert [e.index for e in prepared.train] == [0]
    [problem] = prepared.load.problems
    assert problem.index == 1 and problem.message.startswith("response cut off entirely by max_seq_len=30")
    assert (prepared.stats.records, prepared.stats.valid, prepared.stats.skipped) == (2, 1, 1)


def test_train_on_prompt_labels_every_token(tok):
    enc = encode_example(alpaca("Hi", "Hello."), tok, DataConfig(template="chat", train_on_prompt=True))
    assert enc.labels == enc.input_ids


def test_mask_view_states_text_and_cut_tokens(tok):
    ex = alpaca("你好，请介绍一下你自己。", "我是一个有用的助手。" * 3)
    full = encode_example(ex, tok, DataConfig(template="chat", max_seq_len=10**9))
    cut = encode_example(ex, tok, DataConfig(template="chat", max_seq_len=30))
    view = mask_view(cut, tok, full.input_ids)
    assert "".join(text for text, _ in view) == tok.decode(full.input_ids)
    assert all("\ufffd" not in text for text, _ in view)  # multi-byte characters are never shown broken
    states = [s for _, s in view]
    assert states[0] == "prompt" and "trained" in states and states[-1] == "cut"
    assert states == sorted(states, key=["prompt", "trained", "cut"].index)  # prompt, then answer, then the cut
    plain = mask_view(full, tok)
    assert "cut" not in {s for _, s in plain}
    assert "".join(t for t, s in plain if s == "trained") == "我是一个有用的助手。" * 3 + "<|im_end|>"


def test_prepare_split_is_deterministic_and_keeps_duplicates_together(tok):
    cfg = DataConfig(path=str(FIX / "duplicates.json"), val_size=0.3, template="alpaca")
    a, b = prepare(cfg, tok, seed=1), prepare(cfg, tok, seed=1)
    assert [e.index for e in a.val] == [e.index for e in b.val] and len(a.val) >= 3
    dup_sides = {("val" if i in {e.index for e in a.val} else "train") for i in (0, 1, 2)}
    assert len(dup_sides) == 1  # records 0-2 are identical: all in train or all in val
    seeds = {tuple(e.index for e in prepare(cfg, tok, seed=s).val) for s in range(6)}
    assert len(seeds) > 1
    none = prepare(replace(cfg, val_size=0.05), tok)  # 10 x 0.05 = 0.5 -> no eval set
    assert none.val == [] and len(none.train) == 10


def test_prepare_stats_and_histogram(tok):
    progress = []
    prepared = prepare(
        DataConfig(path=str(FIX / "bad_line.jsonl"), max_seq_len=40, val_size=0.25),
        tok,
        progress=lambda f, m: progress.append(f),
    )
    s = prepared.stats
    assert (s.records, s.valid, s.skipped, s.train_count, s.val_count) == (5, 4, 1, 3, 1)
    kept = sorted(prepared.train + prepared.val, key=lambda e: e.index)
    assert s.lengths == [e.full_length for e in kept] and s.total_tokens == sum(s.lengths)
    assert s.max_tokens == max(s.lengths) and s.mean_tokens == pytest.approx(sum(s.lengths) / 4)
    assert s.truncated == sum(n > 40 for n in s.lengths) and s.tokens_per_epoch == sum(
        len(e.input_ids) for e in prepared.train
    )
    assert s.to_json() == {
        "total": s.total_tokens,
        "mean": round(s.mean_tokens, 2),
        "max": s.max_tokens,
        "truncated": s.truncated,
    }
    assert progress[-1] == 1.0 and prepared.template == "chat"
    fig = length_histogram([10, 20, 30, 50], 40)
    assert list(fig.data[0].x) == [10, 20, 30, 50]
    assert fig.layout.shapes[0].x0 == 40 and "1 cut (25.0%)" in fig.layout.annotations[0].text


def test_max_samples_uses_only_the_first_valid_records(tok):
    prepared = prepare(DataConfig(path=str(FIX / "duplicates.json"), max_samples=4, val_size=0.0), tok)
    assert [e.index for e in prepared.train] == [0, 1, 2, 3] and prepared.stats.valid == 10


def test_placeholders_reach_the_rendered_text(tok, tmp_path):
    path = tmp_path / "id.json"
    path.write_text(json.dumps([{"instruction": "Who are you?", "output": "I am {{name}}."}]))
    cfg = DataConfig(path=str(path), placeholders={"name": "TuneBot"}, val_size=0.0)
    prepared = prepare(cfg, tok)
    assert trained_text(prepared.train[0], tok) == "I am TuneBot.<|im_end|>"
