"""Datasets from the Hub against the stand-in (tests/hubstub.py) with the real huggingface_hub and datasets clients:
configs and splits listed, a download with progress that validates and previews like a local file (through the
Data tab's handlers, with the inputs the UI wires), Cancel leaves it not ready and a second Download resumes, a
download belongs to the app (a closed page leaves it running, a new page loads it), an unreachable Hub is said in
one line within 3 s while a downloaded dataset still loads, the CLI."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hubstub import (  # noqa: F401  (hub_fixture registers the `hub` fixture here)
    ALPACA_DATASET,
    CONFIGS_DATASET,
    DATASET_ROWS,
    PARQUET_DATASET,
    closed_port_endpoint,
    hub_fixture,
)
from ui_ctx import only_outputs, tab_context, wired

from app import data, hub_data
from app import hub as app_hub
from app.config import DataConfig, DataSource, RunConfig


@pytest.fixture(scope="module")
def data_ctx(tiny_model_dir):
    return tab_context(["data"], str(tiny_model_dir))[1]


@pytest.fixture(autouse=True)
def no_transfer_left():
    """Every test ends with no download running in the app (a leftover would refuse the next test's as busy)."""
    yield
    running = app_hub.current()
    if running is not None:
        running.cancel.set()
        running.wait(30)
    assert app_hub.current() is None


def _closed_hub(monkeypatch) -> str:
    from huggingface_hub import constants

    endpoint = closed_port_endpoint()
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    return endpoint


def _big_dataset(hub, tmp_path, rows: int = 3000) -> str:
    """A dataset repo with one ~300 KB JSON Lines file: several 64 KiB chunks, so a throttled transfer is cancelled
    midway (the standard ones are a few hundred bytes)."""
    folder = tmp_path / "big-repo"
    folder.mkdir()
    lines = [json.dumps({"instruction": f"Repeat {i}: " + "word " * 12, "output": f"{i}"}) for i in range(rows)]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    hub.add_repo("tunedesk-test/big-jsonl", folder, "dataset")
    return "tunedesk-test/big-jsonl"


# ---- core ----------------------------------------------------------------------------------------------------------
def test_configs_and_splits_are_listed_default_config_first(hub):
    assert hub_data.dataset_choices(CONFIGS_DATASET) == (
        ["en", "zh"],
        {"en": ["train", "test"], "zh": ["train", "test"]},
    )
    assert hub_data.dataset_choices(ALPACA_DATASET) == (["default"], {"default": ["train", "test"]})
    assert hub_data.dataset_choices(PARQUET_DATASET)[1] == {"default": ["train"]}


def test_download_fetches_one_config_split_counts_it_and_records_the_commit(hub):
    seen = []
    got = hub_data.download_dataset(CONFIGS_DATASET, "zh", "train", on_progress=seen.append)
    assert (got.config, got.split, got.module) == ("zh", "train", "json")
    assert got.sha == hub.repos[("dataset", CONFIGS_DATASET)].sha
    assert got.records == {"train": DATASET_ROWS[(CONFIGS_DATASET, "zh")]["train"]}
    assert [f.relative_to(got.path).as_posix() for f in got.files["train"]] == ["zh/train.json"]
    assert seen and seen[-1].done_bytes == seen[-1].total_bytes > 0
    assert not hub.requested("en/train.json") and not hub.requested("zh/test.json")  # only what was asked for
    assert hub_data.cached_download(CONFIGS_DATASET, "zh")[1] == "train"
    assert hub_data.cached_download(CONFIGS_DATASET, "en") is None  # another config is not here


def test_a_hub_dataset_validates_like_a_local_file_with_no_problem_noted(hub):
    sha = hub.repos[("dataset", CONFIGS_DATASET)].sha
    cfg = DataConfig(path=CONFIGS_DATASET, sources=[DataSource(CONFIGS_DATASET, "en", "test", sha)])
    load = data.load_from_config(cfg)  # not downloaded yet: fetched first
    assert (load.format, load.records, len(load.examples), load.skipped) == ("alpaca", 2, 2, 0)
    assert load.problems == []  # a clean Hub split reads as clean as a clean file
    frame, total = data.preview(cfg, 0, 20)
    assert total == 2 and list(frame["instruction"]) == ["Add 100 and 101.", "Add 101 and 102."]
    assert data.fingerprint(cfg) is not None and data.missing_hub(cfg) == []


def test_pinned_records_the_commit_of_a_downloaded_dataset_for_the_runs_config(hub, monkeypatch):
    cfg = DataConfig(path=ALPACA_DATASET)
    assert data.pinned(cfg) is cfg  # not downloaded: nothing to pin
    data.fetch(cfg)
    sha = hub.repos[("dataset", ALPACA_DATASET)].sha
    pinned = data.pinned(cfg)
    assert pinned.sources == [DataSource(ALPACA_DATASET, "default", "train", sha)]
    assert pinned.datasets() == pinned.sources
    assert RunConfig(data=pinned).validate() == []
    _closed_hub(monkeypatch)
    assert len(data.load_from_config(pinned).examples) == DATASET_ROWS[(ALPACA_DATASET, None)]["train"]


def test_an_empty_split_is_train_even_when_only_another_split_was_downloaded(hub):
    sha = hub.repos[("dataset", CONFIGS_DATASET)].sha
    assert hub_data.download_dataset(CONFIGS_DATASET, "zh", "test").records == {"test": 2}
    assert hub_data.cached_download(CONFIGS_DATASET, "zh") is None  # train is not here: the test split never stands in
    cfg = DataConfig(path=CONFIGS_DATASET, sources=[DataSource(CONFIGS_DATASET, "zh")])
    assert data.missing_hub(cfg) == cfg.sources and data.pinned(cfg) is cfg
    load = data.load_from_config(cfg)  # fetches train first
    assert len(load.examples) == DATASET_ROWS[(CONFIGS_DATASET, "zh")]["train"]
    assert load.examples[0].messages[0]["content"] == "计算 0 加 1。"
    assert hub_data.cached_download(CONFIGS_DATASET, "zh")[1] == "train"
    # config.yaml spells out what an empty config and split resolved to, so a rerun elsewhere reads the same records
    assert data.pinned(cfg).sources == [DataSource(CONFIGS_DATASET, "zh", "train", sha)]
    assert data.pinned(DataConfig(path=CONFIGS_DATASET)).sources == []  # its default config, en, is not here


def test_an_empty_split_of_a_config_without_train_is_its_first_split(hub, tmp_path):
    folder = tmp_path / "no-train"
    folder.mkdir()
    for split, rows in (("validation", 3), ("test", 2)):
        lines = [json.dumps({"instruction": f"{split} {i}", "output": f"{i}"}) for i in range(rows)]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    hub.add_repo("tunedesk-test/no-train", folder, "dataset")
    assert hub_data.dataset_choices("tunedesk-test/no-train")[1] == {"default": ["validation", "test"]}
    hub_data.download_dataset("tunedesk-test/no-train", split="test")
    assert hub_data.cached_download("tunedesk-test/no-train") is None
    cfg = DataConfig(path="tunedesk-test/no-train")
    said = [e.messages[0]["content"] for e in data.load_from_config(cfg).examples]
    assert said == [f"validation {i}" for i in range(3)]
    assert data.pinned(cfg).sources[0].split == "validation"


def test_wrong_id_config_and_split_each_say_what_exists(hub):
    with pytest.raises(app_hub.HubError, match="'nobody/nothing' was not found") as info:
        hub_data.dataset_choices("nobody/nothing")
    assert info.value.kind == "not_found"
    with pytest.raises(app_hub.HubError, match="has no config 'fr'; it has en, zh"):
        hub_data.download_dataset(CONFIGS_DATASET, "fr")
    with pytest.raises(app_hub.HubError, match="no split 'validation'; it has train, test"):
        hub_data.download_dataset(CONFIGS_DATASET, "en", "validation")
    with pytest.raises(data.DataError, match="nobody/nothing"):
        data.load_from_config(DataConfig(path="nobody/nothing"))


def test_cancel_leaves_it_not_ready_and_the_next_download_resumes(hub, tmp_path):
    repo = _big_dataset(hub, tmp_path)
    hub.throttle(100_000)  # ~300 KB: about 3 s
    cancel, seen = threading.Event(), []

    def on_progress(p):
        seen.append(p)
        if p.done_bytes > 0:
            cancel.set()

    with pytest.raises(app_hub.HubError) as info:
        hub_data.download_dataset(repo, on_progress=on_progress, cancel=cancel)
    assert info.value.kind == "cancelled"
    assert hub_data.cached_download(repo) is None
    assert data.missing_hub(DataConfig(path=repo)) == [DataSource(repo)]
    hub.throttle(None)
    got = hub_data.download_dataset(repo)
    assert got.records == {"train": 3000} and hub_data.cached_download(repo) is not None


def test_unreachable_hub_is_said_within_3_s_and_a_downloaded_dataset_still_loads(hub, monkeypatch):
    hub_data.download_dataset(ALPACA_DATASET, split="train")
    _closed_hub(monkeypatch)
    started = time.monotonic()
    with pytest.raises(app_hub.HubError, match="cannot be reached") as info:
        hub_data.dataset_choices(ALPACA_DATASET)
    assert info.value.kind == "unreachable" and time.monotonic() - started < 3
    load = data.load_from_config(DataConfig(path=ALPACA_DATASET))  # train, from the cache alone
    assert len(load.examples) == DATASET_ROWS[(ALPACA_DATASET, None)]["train"]
    started = time.monotonic()
    with pytest.raises(data.DataError, match="cannot be reached") as err:
        data.load_from_config(DataConfig(path=ALPACA_DATASET, sources=[DataSource(ALPACA_DATASET, split="test")]))
    assert time.monotonic() - started < 3 and "\n" not in str(err.value)


def test_a_hub_dataset_and_a_local_file_mixed_give_the_expected_counts(hub, tmp_path):
    local = tmp_path / "local.json"
    local.write_text(json.dumps([{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(12)]), encoding="utf-8")
    run = RunConfig().replace(
        **{
            "data.path": str(local),
            "data.sources": [{"path": str(local), "limit": 4}, {"path": PARQUET_DATASET, "share": 0.5}],
        }
    )
    assert run.validate() == []
    load = data.load_from_config(run.data)
    assert [e.messages[0]["content"] for e in load.examples] == [
        "Q0", "Q1", "Q2", "Q3", "Add 0 and 1.", "Add 1 and 2.", "Add 2 and 3.", "Add 3 and 4.",
    ]  # fmt: skip
    assert load.records == 8 and [p.records for p in load.parts] == [4, 4]


# ---- the Data tab --------------------------------------------------------------------------------------------------
def test_data_tab_lists_configs_downloads_with_progress_then_validates_and_previews(hub, data_ctx):
    h, hh = data_ctx.data, data_ctx.data.hub
    fn, values = wired(data_ctx, "data_hub_choices")
    values[hh.repo] = CONFIGS_DATASET
    out = fn(values)
    assert out[hh.config]["choices"] == ["en", "zh"] and out[hh.config]["value"] == "en"
    assert out[hh.split]["value"] == "train" and out[hh.splits]["zh"] == ["train", "test"]
    fn, values = wired(data_ctx, "data_hub_download")
    values.update({hh.repo: CONFIGS_DATASET, hh.config: "zh", hh.split: "train"})
    steps = list(fn(values))
    for step in steps:
        only_outputs(data_ctx, "data_hub_download", step)
    assert steps[0][hh.status].startswith("⏳")
    last = steps[-1]
    assert last[hh.status].startswith("✅") and "config zh, split train, 4 records" in last[hh.status]
    assert last[h.fields["data.path"]] == CONFIGS_DATASET
    sha = hub.repos[("dataset", CONFIGS_DATASET)].sha
    table = last[hh.sources]["value"]
    assert table.values.tolist() == [[CONFIGS_DATASET, "zh", "train", sha, "", ""]]
    assert last[h.status].startswith("✅") and "**4 valid**" in last[h.status]
    assert sha[:12] in last[hh.status]  # the Hub panel names the commit the records come from
    assert "tunedesk-test/tiny-alpaca-configs (zh, train)" in last[h.status]
    assert list(last[h.table]["value"]["instruction"])[:1] == ["计算 0 加 1。"]
    assert {state for _, state in last[h.mask]} >= {"trained", "prompt"}
    # What Start reads: the form's config holds the Hub dataset with its commit.
    cfg = data_ctx.form.to_config({**values, h.fields["data.path"]: CONFIGS_DATASET, hh.sources: table})
    assert cfg.data.datasets() == [DataSource(CONFIGS_DATASET, "zh", "train", sha)] and cfg.validate() == []


def test_data_tab_cancel_stops_the_download_and_says_so(hub, data_ctx, tmp_path):
    hh = data_ctx.data.hub
    repo = _big_dataset(hub, tmp_path)
    hub.throttle(50_000)
    fn, values = wired(data_ctx, "data_hub_download")
    values.update({hh.repo: repo, hh.config: "default", hh.split: "train"})
    steps = fn(values)
    assert next(steps)[hh.status] == f"⏳ Downloading **{repo} (default, train)**…"
    progress = next(steps)
    assert progress[hh.status].startswith("⏳") and " of " in progress[hh.status] and " files" in progress[hh.status]
    cancel, cancel_values = wired(data_ctx, "data_hub_cancel")
    said = cancel(cancel_values)
    assert f"Cancelling the download of **{repo} (default, train)**" in said[hh.status]
    rest = list(steps)
    assert "cancelled" in rest[-1][hh.status] and rest[-1][hh.status].startswith("⏹")
    assert hub_data.cached_download(repo) is None
    assert "Nothing is downloading" in cancel(cancel_values)[hh.status]


def test_a_dataset_download_belongs_to_the_app_a_closed_page_leaves_it_running_and_a_new_page_loads_it(
    hub, data_ctx, tmp_path
):
    """As a model's download: Gradio closes the event's generator when its page goes away, and the transfer goes
    on; Download pressed again for the same dataset follows it (no second transfer, no busy refusal); a page that
    opens draws it (its load event) and, when it ends, loads the dataset as Download would have."""
    h, hh = data_ctx.data, data_ctx.data.hub
    repo = _big_dataset(hub, tmp_path)
    hub.throttle(100_000)  # ~300 KB: about 3 s
    fn, values = wired(data_ctx, "data_hub_download")
    values.update({hh.repo: repo, hh.config: "default", hh.split: "train"})
    steps = fn(values)
    next(s for s in steps if " of " in s[hh.status])
    steps.close()  # the page went away
    running = app_hub.current()
    assert running is not None and running.key == f"{repo} (default, train)" and not running.cancel.is_set()
    again = fn(values)
    assert "⏳" in next(again)[hh.status] and app_hub.current() is running
    again.close()
    watch, page = wired(data_ctx, "data_hub_watch")
    after = list(watch(page))
    for step in after:
        only_outputs(data_ctx, "data_hub_watch", step)
    assert any(" of " in str(s.get(hh.status)) for s in after[:-1])
    last = after[-1]
    assert last[hh.status].startswith("✅") and "split train, 3,000 records" in last[hh.status]
    assert last[h.fields["data.path"]] == repo and "valid" in last[h.status]
    assert last[hh.sources]["value"].values.tolist()[0][:3] == [repo, "default", "train"]
    assert (
        app_hub.current() is None
        and [r.path for r in hub.file_requests()].count(
            f"/datasets/{repo}/resolve/{hub.repos[('dataset', repo)].sha}/train.jsonl"
        )
        == 1
    )  # one transfer for the three pages
    assert len(list(watch(page))) == 1  # nothing runs: the next page shows nothing


def test_data_tab_says_an_unreachable_hub_in_one_line_within_3_s(hub, data_ctx, monkeypatch):
    hh = data_ctx.data.hub
    _closed_hub(monkeypatch)
    fn, values = wired(data_ctx, "data_hub_choices")
    started = time.monotonic()
    out = fn({**values, hh.repo: ALPACA_DATASET})
    assert time.monotonic() - started < 3
    assert out[hh.status].startswith("❌") and "cannot be reached" in out[hh.status] and "\n" not in out[hh.status]


def test_a_dataset_added_to_the_mix_is_fetched_by_load(hub, data_ctx, tmp_path):
    h, hh = data_ctx.data, data_ctx.data.hub
    local = tmp_path / "mine.jsonl"
    local.write_text("".join(json.dumps({"instruction": f"Q{i}", "output": "A"}) + "\n" for i in range(3)))
    fn, values = wired(data_ctx, "data_hub_add")
    out = fn({**values, hh.repo: ALPACA_DATASET, hh.config: "default", hh.split: "test", h.fields["data.path"]: local})
    rows = out[hh.sources]["value"].values.tolist()
    assert rows == [[str(local), "", "", "", "", ""], [ALPACA_DATASET, "default", "test", "", "", ""]]
    fn, values = wired(data_ctx, "data_load", data__path=str(local))
    out = fn({**values, hh.sources: rows})
    assert "mine.jsonl + tunedesk-test/tiny-alpaca (default, test)" in out[h.status] and "**5 valid**" in out[h.status]
    assert (
        list(out[h.table]["value"]["dataset"])
        == ["mine.jsonl"] * 3 + ["tunedesk-test/tiny-alpaca (default, test)"] * 2
    )


# ---- the command line ----------------------------------------------------------------------------------------------
def test_cli_downloads_prints_the_path_and_inspects_a_hub_dataset(hub, tiny_model_dir, capsys):
    from app.__main__ import main

    sha = hub.repos[("dataset", CONFIGS_DATASET)].sha
    assert main(["download", "dataset", CONFIGS_DATASET, "--config", "en", "--split", "test"]) == 0
    out = capsys.readouterr()
    assert out.out.strip().endswith(sha)
    first = out.err.splitlines()[0]
    assert first.startswith(f"downloading {CONFIGS_DATASET} (config en, split test: ")
    assert first.endswith(" in 2 files)")
    assert out.err.splitlines()[-1] == f"{CONFIGS_DATASET} at commit {sha[:12]} (config en, split test, 2 records)"
    args = ["data", "inspect", CONFIGS_DATASET, "--config", "en", "--split", "test", "--model", str(tiny_model_dir)]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["records"], report["valid"]) == (2, 2)
    assert main(["data", "inspect", "nobody/nothing", "--model", str(tiny_model_dir)]) == 2
    assert "'nobody/nothing' was not found" in capsys.readouterr().err


def test_cli_download_of_a_cached_split_needs_no_network(hub, monkeypatch, capsys):
    from app.__main__ import main

    sha = hub.repos[("dataset", CONFIGS_DATASET)].sha
    assert main(["download", "dataset", CONFIGS_DATASET, "--config", "zh", "--split", "train"]) == 0
    path = capsys.readouterr().out.strip()
    _closed_hub(monkeypatch)
    assert main(["download", "dataset", CONFIGS_DATASET, "--config", "zh", "--split", "train"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == path and "downloading" not in out.err
    assert out.err.strip() == f"{CONFIGS_DATASET} at commit {sha[:12]} (config zh, split train, 4 records)"
    # Every split of the config is asked for (no --split): train alone is not all of it, so the Hub is needed.
    assert main(["download", "dataset", CONFIGS_DATASET, "--config", "zh"]) == 1
    assert "cannot be reached" in capsys.readouterr().err
