"""Several datasets in one run (data.sources): the record counts a limit and a share give, problems that name their
dataset and record, the preview of a mix, the config checks, every existing data.path config unchanged, the CLI
and the Data tab's mix table. Tiny local files only: no Hub (tests/test_hub_data.py mixes one in)."""

from __future__ import annotations

import json

import pytest
from ui_ctx import tab_context, wired

from app import data, paths
from app.config import ConfigError, DataConfig, DataSource, RunConfig
from app.ui import data_hub


@pytest.fixture()
def two(tmp_path):
    """a.json: 10 valid records; b.jsonl: 30 lines, line 4 has an empty output and line 21 is not JSON (28 valid)."""
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"instruction": f"a{i}", "output": f"A{i}"} for i in range(10)]), encoding="utf-8")
    lines = [json.dumps({"instruction": f"b{i}", "output": f"B{i}"}) for i in range(30)]
    lines[3], lines[20] = json.dumps({"instruction": "b3", "output": ""}), "not json"
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(a), str(b)


def mixed(a: str, b: str, first: dict, second: dict, **data_fields) -> DataConfig:
    return RunConfig.from_dict(
        {"data": {"path": a, "sources": [{"path": a, **first}, {"path": b, **second}], **data_fields}}
    ).data


def firsts(load) -> list[str]:
    return [e.messages[0]["content"] for e in load.examples]


def test_a_limit_and_a_share_give_the_expected_counts(two):
    a, b = two
    load = data.load_from_config(mixed(a, b, {"limit": 4}, {"share": 0.5}))
    assert firsts(load) == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b4"]  # b3 is broken: the 4th valid is b4
    assert (load.records, load.skipped) == (9, 1) and [p.records for p in load.parts] == [4, 5]
    assert [e.index for e in load.examples] == [0, 1, 2, 3, 4, 5, 6, 8]  # b's records numbered after a's


def test_shares_on_every_dataset_take_the_most_they_allow(two):
    a, b = two
    load = data.load_from_config(mixed(a, b, {"share": 0.25}, {"share": 0.75}))
    counts = [sum(e.messages[0]["content"][0] == k for e in load.examples) for k in "ab"]
    assert counts == [9, 28]  # 10 / 0.25 = 40 > 28 / 0.75 = 37.3: b's 28 valid decide, a gives 37.3 x 0.25 = 9
    load = data.load_from_config(mixed(a, b, {}, {"limit": 6}))
    assert len(load.examples) == 15 and load.records == 16  # all of a, b's first 6 records (one broken)


def test_max_samples_caps_a_mix_keeping_its_proportions(two):
    a, b = two
    load = data.load_from_config(mixed(a, b, {}, {}, max_samples=19))
    assert firsts(load)[:5] == ["a0", "a1", "a2", "a3", "a4"] and len(load.examples) == 19
    assert sum(x.startswith("a") for x in firsts(load)) == 5  # 10 of 38 valid: 19 x 10 / 38 = 5
    assert any("of its 28 valid records are used (max samples 19)" in p.message for p in load.problems)


def test_a_bad_record_says_which_dataset_and_which_record_there(two):
    a, b = two
    load = data.load_from_config(mixed(a, b, {}, {}))
    errors = {(p.index, p.line, p.field, p.message) for p in load.errors}
    assert errors == {
        (13, 4, "output", "is empty (in b.jsonl, record 3)"),
        (30, 21, None, "invalid JSON at column 1 (Expecting value): not json (in b.jsonl, record 20)"),
    }
    assert load.examples.find(13) is None and load.examples.find(14).messages[0]["content"] == "b4"
    assert load.path == "a.json + b.jsonl" and data.describe(mixed(a, b, {}, {})) == "a.json + b.jsonl"


def test_an_unmet_share_is_said(two):
    a, b = two
    load = data.load_from_config(mixed(a, b, {"limit": 2}, {"share": 0.9}))
    assert len(load.examples) == 20  # 2 fixed records are 10%: b would need 18, it gives them
    load = data.load_from_config(mixed(b, a, {}, {"share": 0.5}))
    assert len(load.examples) == 38  # a's 10 are all it has, short of b's 28
    assert any("share 0.5 asked for, 0.26 reached" in p.message for p in load.problems)


def test_the_preview_pages_through_the_mix_as_it_numbers_records(two):
    a, b = two
    cfg = mixed(a, b, {"limit": 4}, {"share": 0.5})
    frame, total = data.preview(cfg, 0, 6)
    assert total == 9 and list(frame.columns[:2]) == ["#", "dataset"]
    assert list(frame["#"]) == [0, 1, 2, 3, 4, 5] and list(frame["dataset"]) == ["a.json"] * 4 + ["b.jsonl"] * 2
    frame, _ = data.preview(cfg, 1, 6, load=data.load_from_config(cfg))
    assert list(frame["#"]) == [6, 7, 8] and list(frame["instruction"]) == ["b2", "b3", "b4"]


def test_training_data_of_a_mix_is_the_mixed_examples(two, tiny_model_dir):
    from app.modeling import load_tokenizer

    a, b = two
    prepared = data.prepare(mixed(a, b, {"limit": 4}, {"share": 0.5}, val_size=0.25), load_tokenizer(tiny_model_dir))
    assert (len(prepared.train), len(prepared.val)) == (6, 2)
    assert sorted(e.index for e in prepared.train + prepared.val) == [0, 1, 2, 3, 4, 5, 6, 8]


def test_config_checks_of_sources(two):
    a, b = two
    problems = RunConfig.from_dict(
        {"data": {"path": b, "sources": [{"path": a, "limit": 0, "share": 0.7}, {"path": "", "share": 0.6}]}}
    ).validate()
    assert problems == [
        "data.sources[0].limit: 0 must be >= 1 or null",
        "data.sources[1].path: empty; name a file, a save_to_disk folder or a Hub dataset id",
        f"data.path: {b!r} is not the first of data.sources ({a!r}); set data.path to {a!r}",
        "data.sources: every dataset has a share and they add up to 1.3; make them add up to 1 (or leave one "
        "without a share: it keeps all its records)",
    ]
    only = RunConfig.from_dict({"data": {"path": a, "sources": [{"path": a}, {"path": b, "share": 1.0}]}})
    assert only.validate()[0].startswith("data.sources: the shares add up to 1, leaving nothing")
    with pytest.raises(ConfigError, match=r"data.sources\[1\].limt: unknown key; did you mean 'data.sources\[1\]"):
        RunConfig.from_dict({"data": {"path": a, "sources": [{"path": a}, {"path": b, "limt": 3}]}})


def test_a_config_without_sources_and_every_preset_read_data_path_alone():
    for preset in paths.presets_dir().glob("*.yaml"):
        cfg = RunConfig.from_preset(preset)
        assert cfg.data.sources == [] and cfg.data.datasets() == [DataSource(cfg.data.path)], preset.name
    saved = RunConfig.from_dict({"data": {"path": "assets/sample_data.json", "max_samples": 5}})  # an older run
    assert len(data.load_from_config(saved.data).examples) == 300 and saved.to_dict()["data"]["sources"] == []
    # A caller that points data.path elsewhere (an evaluation file) means that file alone, not the run's mix.
    mix = DataConfig(path="x.json", sources=[DataSource("x.json"), DataSource("y.json", share=0.5)])
    assert DataConfig(**{**mix.__dict__, "path": "other.json"}).datasets() == [DataSource("other.json")]


def test_cli_inspects_a_mix_and_a_run_config(two, tiny_model_dir, tmp_path, capsys):
    from app.__main__ import main

    a, b = two
    args = ["data", "inspect", a, b, "--limit", "4", "--limit", "0", "--share", "0", "--share", "0.5"]
    assert main([*args, "--model", str(tiny_model_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["records"], report["valid"], report["skipped"]) == (9, 8, 1)
    assert {"index": 7, "field": "output", "message": "line 4: is empty (in b.jsonl, record 3)"} in report["problems"]
    run = tmp_path / "config.yaml"
    RunConfig(data=mixed(a, b, {"limit": 4}, {"share": 0.5})).save(run)
    assert main(["data", "inspect", str(run), "--model", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.startswith("a.json + b.jsonl: alpaca, 9 records, 8 valid, 1 skipped")
    assert main(["data", "inspect", a, b, "--limit", "4", "--model", str(tiny_model_dir)]) == 2
    assert "--limit: given 1 times for 2 datasets" in capsys.readouterr().err


# ---- the Data tab's mix table ------------------------------------------------------------------------------------
def test_the_table_reads_into_data_sources_with_the_path_field_first():
    rows = [["a.json", "", "", "", 4, ""], ["org/ds", "en", "train", "abc", "", 0.3]]
    assert data_hub.sources_of(rows, "a.json") == [
        {"path": "a.json", "config": "", "split": "", "revision": "", "limit": 4, "share": None},
        {"path": "org/ds", "config": "en", "split": "train", "revision": "abc", "limit": None, "share": 0.3},
    ]
    moved = data_hub.sources_of([["org/ds", "en", "train", "abc", "", 0.5], ["b.json", "", "", "", "", ""]], "c.json")
    assert moved[0] == {"path": "c.json", "limit": None, "share": 0.5}  # the path field's dataset, not org/ds's commit
    assert data_hub.sources_of([["a.json", "", "", "", "", ""]], "a.json") == []  # one plain dataset: no mix
    assert data_hub.sources_of([], "a.json") == [] and data_hub.sources_of([["", "", "", "", "", ""]], "a") == []
    with pytest.raises(ConfigError, match=r"data.sources\[1\].limit: 'ten' is not a number"):
        data_hub.sources_of([["a", "", "", "", "", ""], ["b", "", "", "", "ten", ""]], "a")


def test_load_shows_a_mix_and_start_reads_the_same_mix(two, tiny_model_dir):
    a, b = two
    demo, ctx = tab_context(["data"], str(tiny_model_dir))
    h = ctx.data
    rows = [[a, "", "", "", 4, ""], [b, "", "", "", "", 0.5]]
    fn, values = wired(ctx, "data_load", data__path=a)
    assert h.hub.sources in values  # Load reads the table (else a mix would preview as its first file)
    out = fn({**values, h.hub.sources: rows})
    assert "**a.json + b.jsonl**" in out[h.status] and "9 records, **8 valid**, 1 skipped" in out[h.status]
    assert list(out[h.table]["value"]["dataset"]) == ["a.json"] * 4 + ["b.jsonl"] * 5
    assert "(in b.jsonl, record 3)" in out[h.problems].iloc[-1, -1]
    cfg = ctx.form.to_config({**values, h.hub.sources: rows})
    assert [(s.path, s.limit, s.share) for s in cfg.data.datasets()] == [(a, 4, None), (b, None, 0.5)]
    shown = ctx.form.updates_from(cfg)[h.hub.sources]["value"]
    assert shown == [[a, "", "", "", 4, ""], [b, "", "", "", "", 0.5]]


def test_picking_another_dataset_makes_it_the_first_row_and_a_plain_one_empties_the_table(two, tiny_model_dir):
    a, b = two
    demo, ctx = tab_context(["data"], str(tiny_model_dir))
    table = [["org/ds", "en", "train", "abc", "", ""], [b, "", "", "", "", 0.5]]
    assert data_hub.follow_path(ctx, a, table)["value"].values.tolist() == [[a, "", "", "", "", ""], table[1]]
    assert data_hub.follow_path(ctx, a, [["org/ds", "en", "train", "abc", "", ""]])["value"].empty
    assert data_hub.follow_path(ctx, "org/ds", table) == data_hub.gr.skip()
