"""Preference data: every layout read and detected, each bad record named with its field and reason, rows in TRL's
formats, a seeded val split, and the token view the Data tab shows equal to what TRL's DPOTrainer tokenizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import preference_data as pd
from app.config import DataConfig, DataSource, RunConfig
from app.data_io import DataError

Q = [{"role": "user", "content": "2+2?"}]


def _write(folder: Path, name: str, records: list) -> str:
    path = folder / name
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return str(path)


def _load(folder: Path, records: list, kind: str = pd.PAIRS, **data) -> pd.PreferenceLoad:
    return pd.load(DataConfig(path=_write(folder, "d.jsonl", records), **data), kind)


def _problems(got: pd.PreferenceLoad) -> list[tuple[int | None, str | None, str]]:
    return [(p.index, p.field, p.message) for p in got.problems]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def plain_tok(tok):
    """The tiny tokenizer without a chat template (a base model): TRL's standard string format."""
    import copy

    plain = copy.deepcopy(tok)
    plain.chat_template = None
    return plain


def _cfg(path: str, objective: str = "dpo", **data) -> RunConfig:
    cfg = RunConfig()
    cfg.objective = objective
    cfg.data = DataConfig(path=path, **data)
    return cfg


# ---- the real LlamaBoard demo files ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dpo_en_demo.json", "dpo_zh_demo.json"])
def test_llamaboard_ranking_files_load_every_pair(shared_data, name):
    raw = json.loads((shared_data / name).read_text(encoding="utf-8"))
    assert pd.detect(raw[:50]) == pd.PAIRS
    got = pd.load(DataConfig(path=str(shared_data / name)), pd.PAIRS)
    assert (got.read, got.valid, got.layouts, got.errors) == (len(raw), len(raw), ["ranking"], [])
    first = got.records[0]
    assert first.prompt[-1] == {"role": "user", "content": raw[0]["conversations"][-1]["value"]}
    assert (first.chosen, first.rejected) == (raw[0]["chosen"]["value"], raw[0]["rejected"]["value"])


def test_kto_demo_file_loads_labelled_answers(shared_data):
    raw = json.loads((shared_data / "kto_en_demo.json").read_text(encoding="utf-8"))
    assert pd.detect(raw[:50]) == pd.UNPAIRED
    got = pd.load(DataConfig(path=str(shared_data / "kto_en_demo.json")), pd.UNPAIRED)
    assert (got.valid, got.layouts, got.errors) == (len(raw), ["kto"], [])
    assert [r.label for r in got.records] == [r["label"] for r in raw]
    assert got.records[0].completion == raw[0]["messages"][-1]["content"]
    assert got.records[0].prompt == [{"role": m["role"], "content": m["content"]} for m in raw[0]["messages"][:-1]]


def test_kto_file_for_a_pair_objective_says_what_to_do(shared_data):
    with pytest.raises(DataError, match="objective kto"):
        pd.load(DataConfig(path=str(shared_data / "kto_en_demo.json")), pd.PAIRS)


def test_supervised_data_is_not_preference_data():
    with pytest.raises(DataError, match="not preference records.*chosen, rejected"):
        pd.load(DataConfig(path="assets/sample_data.json"), pd.PAIRS)
    assert pd.detect([{"instruction": "Hi", "output": "Yo"}]) is None


# ---- each layout ---------------------------------------------------------------------------------------------
LAYOUTS = {
    "trl strings": ({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "trl"),
    "trl messages": (
        {
            "prompt": Q,
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
        },
        "trl",
    ),
    "trl implicit prompt": (
        {
            "chosen": [*Q, {"role": "assistant", "content": "4"}],
            "rejected": [*Q, {"role": "assistant", "content": "5"}],
        },
        "trl",
    ),
    "llamaboard ranking": (
        {
            "conversations": [{"from": "human", "value": "2+2?"}],
            "chosen": {"from": "gpt", "value": "4"},
            "rejected": {"from": "gpt", "value": "5"},
        },
        "ranking",
    ),
    "chat vote": (
        {"prompt": Q, "chosen": "4", "rejected": "5", "models": ["base", "a1"], "time": "2025-01-01"},
        "trl",
    ),
}


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_each_pair_layout_gives_the_same_pair(tmp_path, case):
    record, layout = LAYOUTS[case]
    assert pd.detect([record]) == pd.PAIRS
    got = _load(tmp_path, [record])
    assert got.layouts == [layout] and got.problems == []
    assert got.records == [pd.Pair(0, Q, "4", "5")]


@pytest.mark.parametrize(
    "record",
    [
        {"messages": [*Q, {"role": "assistant", "content": "4"}], "label": True},
        {"prompt": "2+2?", "completion": "4", "label": True},
        {"prompt": Q, "completion": [{"role": "assistant", "content": "4"}], "label": True},
    ],
)
def test_each_unpaired_layout_gives_the_same_answer(tmp_path, record):
    assert pd.detect([record]) == pd.UNPAIRED
    got = _load(tmp_path, [record, {**record, "label": False}], pd.UNPAIRED)
    assert got.problems == []
    assert got.records == [pd.Unpaired(0, Q, "4", True), pd.Unpaired(1, Q, "4", False)]


def test_pairs_train_kto_as_a_desirable_and_an_undesirable_answer(tmp_path):
    got = _load(tmp_path, [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}], pd.UNPAIRED)
    assert got.records == [pd.Unpaired(0, Q, "4", True), pd.Unpaired(0, Q, "5", False)]
    assert (got.valid, got.skipped) == (1, 0)


def test_a_system_key_and_a_multi_turn_prompt_are_kept(tmp_path):
    turns = [*Q, {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]
    got = _load(tmp_path, [{"prompt": turns, "system": "Be brief.", "chosen": "6", "rejected": "7"}])
    assert got.records[0].prompt == [{"role": "system", "content": "Be brief."}, *turns]


# ---- problems, by record and field ---------------------------------------------------------------------------
def test_every_bad_record_is_named_with_its_field_and_reason(tmp_path):
    got = _load(
        tmp_path,
        [
            {"prompt": "ok?", "chosen": "yes", "rejected": "no"},
            {"prompt": "2+2?", "chosen": "4"},
            {"prompt": "2+2?", "chosen": "4", "rejected": None},
            {"prompt": "2+2?", "chosen": "4", "rejected": " 4 "},
            {"prompt": "   ", "chosen": "4", "rejected": "5"},
            {"conversations": [], "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}},
            {"prompt": [*Q, {"role": "assistant", "content": "4"}], "chosen": "a", "rejected": "b"},
            {"prompt": "2+2?", "chosen": [{"role": "robot", "content": "4"}], "rejected": "5"},
            {"prompt": "2+2?", "chosen": "", "rejected": "5"},
        ],
    )
    assert [r.index for r in got.records] == [0] and (got.read, got.skipped) == (9, 8)
    found = _problems(got)
    assert [(i, f) for i, f, _ in found] == [
        (1, "rejected"),
        (2, "rejected"),
        (3, "rejected"),
        (4, "prompt"),
        (5, "conversations"),
        (6, "prompt"),
        (7, "chosen[0].role"),
        (8, "chosen"),
    ]
    messages = [m for _, _, m in found]
    assert messages[0].startswith("missing side") and messages[1].startswith("missing side")
    assert messages[2].startswith("identical to chosen")
    assert messages[3].startswith("empty prompt") and messages[4].startswith("empty prompt")
    assert "ends with an assistant turn" in messages[5]
    assert "unknown role 'robot'" in messages[6] and messages[7] == "is empty"
    assert all(p.severity == "error" for p in got.problems)


def test_bad_labels_and_unreadable_lines_are_named(tmp_path):
    path = tmp_path / "kto.jsonl"
    good = {"prompt": "2+2?", "completion": "4", "label": True}
    lines = [
        json.dumps(good),
        json.dumps({**good, "label": "yes"}),
        "{broken",
        json.dumps({"messages": Q, "label": False}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = pd.load(DataConfig(path=str(path)), pd.UNPAIRED)
    assert [r.index for r in got.records] == [0]
    assert [(p.index, p.line, p.field) for p in got.problems] == [
        (None, None, "label"),  # every answer left is desirable: KTO has nothing to contrast
        (1, 2, "label"),
        (2, 3, None),
        (3, 4, "messages"),
    ]
    assert (
        "got text" in got.problems[1].message and "the prompt, then the assistant's answer" in got.problems[3].message
    )


def test_placeholders_are_filled_and_unfilled_ones_warned(tmp_path):
    records = [{"prompt": "Who are you?", "chosen": "I am {{name}}.", "rejected": "I am {{other}}."}]
    got = _load(tmp_path, records, placeholders={"name": "TuneBot"})
    assert got.records[0].chosen == "I am TuneBot." and got.records[0].rejected == "I am {{other}}."
    [warning] = got.problems
    assert (warning.index, warning.field, warning.severity) == (0, "rejected", "warning")
    assert "{{other}}" in warning.message


def test_several_datasets_are_numbered_on_and_named(tmp_path):
    a = _write(
        tmp_path, "a.jsonl", [{"prompt": "1?", "chosen": "a", "rejected": "b"}, {"prompt": "2?", "chosen": "a"}]
    )
    b = _write(
        tmp_path,
        "b.jsonl",
        [{"prompt": "3?", "chosen": "c", "rejected": "c"}, {"prompt": "4?", "chosen": "x", "rejected": "y"}],
    )
    got = pd.load(DataConfig(path=a, sources=[DataSource(a), DataSource(b)]), pd.PAIRS)
    assert [r.index for r in got.records] == [0, 3]
    assert [(p.index, p.field) for p in got.problems] == [(1, "rejected"), (2, "rejected")]
    assert got.problems[1].message.endswith("(in b.jsonl, record 0)")


# ---- rows for TRL ----------------------------------------------------------------------------------------------
PAIRS = [{"prompt": f"What is {k}+{k}?", "chosen": str(2 * k), "rejected": str(2 * k + 1)} for k in range(20)]


def test_prepare_gives_conversational_rows_with_the_system_prompt(tmp_path, tok):
    cfg = _cfg(_write(tmp_path, "p.jsonl", PAIRS), system_prompt="Be brief.", val_size=0.0)
    prepared = pd.prepare(cfg, tok)
    assert prepared.val is None and len(prepared.train) == 20
    assert prepared.train[3] == {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3+3?"}],
        "chosen": [{"role": "assistant", "content": "6"}],
        "rejected": [{"role": "assistant", "content": "7"}],
    }
    facts = prepared.facts
    assert (facts["kind"], facts["format"], facts["layouts"], facts["train"], facts["val"]) == (
        "pairs",
        "conversational",
        ["trl"],
        20,
        0,
    )


def test_prepare_without_a_chat_template_gives_standard_alpaca_rows(tmp_path, plain_tok):
    prepared = pd.prepare(_cfg(_write(tmp_path, "p.jsonl", PAIRS), val_size=0.0), plain_tok)
    row = prepared.train[0]
    assert prepared.facts["format"] == "standard" and prepared.facts["template"] == "alpaca"
    assert row["prompt"].startswith("Below is an instruction") and row["prompt"].endswith(
        "### Instruction:\nWhat is 0+0?\n\n### Response:\n"
    )
    assert (row["chosen"], row["rejected"]) == ("0", "1")


def test_kto_rows_carry_the_label(tmp_path, tok):
    prepared = pd.prepare(_cfg(_write(tmp_path, "p.jsonl", PAIRS[:4]), "kto", val_size=0.0), tok)
    assert prepared.train.column_names == ["prompt", "completion", "label"]
    assert [r["label"] for r in prepared.train] == [True, False] * 4
    assert (prepared.facts["desirable"], prepared.facts["undesirable"]) == (4, 4)


def test_val_split_is_seeded_and_keeps_a_prompt_on_one_side(tmp_path, tok):
    path = _write(tmp_path, "p.jsonl", PAIRS)
    first = pd.prepare(_cfg(path, "kto", val_size=0.2), tok)
    again = pd.prepare(_cfg(path, "kto", val_size=0.2), tok)
    other = _cfg(path, "kto", val_size=0.2)
    other.train.seed = 7
    moved = pd.prepare(other, tok)
    prompts = [json.dumps(r["prompt"]) for r in first.val]
    assert len(first.val) == 8 and len(first.train) == 32  # 2 answers per pair, 4 of 20 pairs held out
    assert list(first.val) == list(again.val) and list(moved.val) != list(first.val)
    assert not set(prompts) & {json.dumps(r["prompt"]) for r in first.train}


def test_max_samples_and_prompts_longer_than_max_seq_len(tmp_path, tok):
    long = {"prompt": "What is the capital of France? " * 40, "chosen": "Paris", "rejected": "Rome"}
    path = _write(tmp_path, "p.jsonl", [long, *PAIRS])
    prepared = pd.prepare(_cfg(path, max_seq_len=64, max_samples=5, val_size=0.0), tok)
    assert len(prepared.train) == 4  # records 0..4, of which record 0 cannot train
    [problem] = prepared.load.problems
    assert problem.index == 0 and "the prompt alone is" in problem.message and "max_seq_len is 64" in problem.message
    assert prepared.facts["skipped"] == 1


def test_sft_is_not_prepared_here(tmp_path, tok):
    with pytest.raises(DataError, match="not preference training"):
        pd.prepare(_cfg(_write(tmp_path, "p.jsonl", PAIRS), "sft"), tok)


# ---- what trains, token by token -----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tok", "plain_tok"])
def test_encode_tokenizes_as_trl_does(tmp_path, which, request):
    """The label mask the Data tab shows is TRL's: prompt ids, then each answer from where prompt and prompt +
    answer part (trl.data_utils), for its conversational and its standard format."""
    from trl.data_utils import _tokenize, common_prefix_length

    tokenizer = request.getfixturevalue(which)
    cfg = _cfg(_write(tmp_path, "p.jsonl", PAIRS[:3]), val_size=0.0, system_prompt="Be brief.")
    prepared = pd.prepare(cfg, tokenizer)
    record = prepared.load.records[1]
    encoding = pd.encode(record, tokenizer, cfg.data)
    row = prepared.train[1]
    chat = which == "tok"
    kwargs = {"add_generation_prompt": True} if chat else {}
    prompt_ids = _tokenize(tokenizer, row["prompt"], **kwargs)["input_ids"]
    for side in ("chosen", "rejected"):
        answer = row[side] if chat else row[side] + tokenizer.eos_token  # TRL adds EOS to standard answers
        full = _tokenize(tokenizer, row["prompt"] + answer)["input_ids"]
        cut = common_prefix_length(prompt_ids, full)
        encoded = encoding.answers[side]
        assert encoded.input_ids == full and encoding.prompt_tokens == cut
        assert [t for t in encoded.labels if t != -100] == full[cut:]
        assert tokenizer.decode(full[cut:]).startswith(getattr(record, side))


def test_encode_cuts_at_max_seq_len(tok):
    record = pd.Pair(0, Q, "four " * 30, "five")
    encoding = pd.encode(record, tok, DataConfig(max_seq_len=30))
    chosen, rejected = encoding.answers["chosen"], encoding.answers["rejected"]
    assert len(chosen.input_ids) == 30 and chosen.truncated and chosen.full_length > 30
    assert not rejected.truncated and rejected.full_length == len(rejected.input_ids)


# ---- the Data tab, through the inputs the UI wires -------------------------------------------------------------
TAB_PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Rome.", "models": ["a", "b"]},
    {"prompt": "What is the capital of France?", "chosen": "Paris."},
    {"prompt": "Give three tips.", "chosen": "Eat well.", "rejected": "Eat well."},
]


@pytest.fixture(scope="module")
def data_ctx(tiny_model_dir):
    from ui_ctx import tab_context

    return tab_context(["data"], str(tiny_model_dir))[1]


@pytest.fixture(scope="module")
def app_ctx(tiny_model_dir):
    """The whole app: the Train tab's objective reaches the Data tab only there (data_tab.wire)."""
    from app.ui import app as ui_app

    return ui_app.build_blocks("en", model=str(tiny_model_dir))[1]


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """The recent-files list goes to this test's own home."""
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))


def _text(view: list[tuple[str, str]], state: str | None = None) -> str:
    return "".join(text for text, s in view if state is None or s == state)


def test_data_tab_detects_pairs_lists_problems_and_shows_a_pair_side_by_side(tmp_path, data_ctx):
    from ui_ctx import wired

    h = data_ctx.handles["data"]
    load, values = wired(data_ctx, "data_load", data__path=_write(tmp_path, "votes.jsonl", TAB_PAIRS))
    out = load(values)
    assert "preference data, pairs of a chosen and a rejected answer" in out[h.status]
    assert "3 records, **1 valid**, 2 skipped" in out[h.status] and "DPO, ORPO or SimPO" in out[h.status]
    problems = out[h.problems]
    assert list(problems.iloc[:, 0]) == [1, 2] and list(problems.iloc[:, 2]) == ["rejected", "rejected"]
    assert problems.iloc[0, 4].startswith("missing side") and problems.iloc[1, 4].startswith("identical to chosen")
    assert out[h.sft_box]["visible"] is False and out[h.pair_box]["visible"] is True
    assert out[h.chosen_box]["visible"] is True and out[h.rejected_box]["visible"] is True
    prompt = out[h.pair_prompt]
    assert {s for _, s in prompt} == {"prompt"} and "What is the capital of France?" in _text(prompt)
    chosen, rejected = out[h.chosen_mask], out[h.rejected_mask]
    assert _text(chosen, "trained").startswith("Paris.<|im_end|>") and {s for _, s in chosen} == {"trained"}
    assert _text(rejected, "trained").startswith("Rome.<|im_end|>")
    assert "Record **0**: prompt" in out[h.record_info] and "conversational format" in out[h.record_info]
    assert "| Train / validation | 1 / 0 pairs |" in out[h.stats]


def test_data_tab_record_view_says_why_a_pair_is_skipped_and_marks_the_cut(tmp_path, data_ctx):
    from ui_ctx import wired

    h = data_ctx.handles["data"]
    path = _write(tmp_path, "votes.jsonl", TAB_PAIRS)
    show, values = wired(data_ctx, "data_record", data__path=path, data__max_seq_len=24)
    out = show({**values, h.record: 1})
    assert "Record 1 is skipped" in out[h.record_info] and "rejected: missing side" in out[h.record_info]
    out = show({**values, h.record: 0})
    states = {s for _, s in out[h.chosen_mask]}
    assert states == {"trained", "cut"} and "cut" in out[h.record_info]


def test_data_tab_supervised_preview_returns_after_pairs(tmp_path, data_ctx):
    from ui_ctx import wired

    h = data_ctx.handles["data"]
    load, values = wired(data_ctx, "data_load", data__path=_write(tmp_path, "votes.jsonl", TAB_PAIRS))
    load(values)
    load, values = wired(data_ctx, "data_load", data__path="assets/sample_data.json")
    out = load(values)
    assert out[h.sft_box]["visible"] is True and out[h.pair_box]["visible"] is False
    assert out[h.status].startswith("✅") and "alpaca" in out[h.status] and out[h.mask]


def test_objective_kto_reads_pairs_as_labelled_answers(tmp_path, app_ctx):
    from ui_ctx import wired

    h = app_ctx.data
    path = _write(tmp_path, "votes.jsonl", TAB_PAIRS[:1])
    change, values = wired(app_ctx, "data_objective", data__path=path, objective="kto")
    out = change(values)
    assert "Objective KTO trains on it" in out[h.status] and "desirable (chosen)" in out[h.status]
    assert "desirable" in out[h.record_info] and "undesirable" in out[h.record_info]
    assert _text(out[h.chosen_mask], "trained").startswith("Paris.") and out[h.chosen_box]["visible"] is True
    assert _text(out[h.rejected_mask], "trained").startswith("Rome.") and out[h.rejected_box]["visible"] is True


def test_objective_and_data_that_do_not_fit_are_named(tmp_path, app_ctx, shared_data):
    from ui_ctx import wired

    h = app_ctx.data
    kto = str(shared_data / "kto_en_demo.json")
    change, values = wired(app_ctx, "data_objective", data__path=kto, objective="kto")
    out = change(values)
    assert "answers labelled desirable or undesirable" in out[h.status] and "Objective KTO" in out[h.status]
    assert out[h.chosen_box]["visible"] is True and out[h.rejected_box]["visible"] is False  # record 0: label true
    change, values = wired(app_ctx, "data_objective", data__path=kto, objective="dpo")
    assert "train it with objective kto" in change(values)[h.status]
    change, values = wired(app_ctx, "data_objective", data__path=_write(tmp_path, "p.jsonl", PAIRS), objective="sft")
    assert "Supervised fine-tuning cannot train on preference data" in change(values)[h.status]
    change, values = wired(app_ctx, "data_objective", data__path="assets/sample_data.json", objective="orpo")
    assert "not preference records" in change(values)[h.status]
