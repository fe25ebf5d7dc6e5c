"""The Model tab's Hub panel (app/ui/hub_panel.py) against the stand-in Hub (tests/hubstub.py), through the
handlers with exactly the inputs the UI wires: search lists the tiny model with its size and fit; Download
streams progress and the model then loads; Cancel leaves it not ready and Download resumes it; a page that goes
away leaves no download that says "downloading" forever; one download at a time across the Model and Data tabs;
the progress line in English and Chinese; gated, not found, pickle consent, a full disk and an
unreachable Hub each say one line; the token never reaches a run folder, the last form or the log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hubstub import (  # noqa: F401  (hub_fixture registers the `hub` fixture here)
    ALPACA_DATASET,
    GATED_MODEL,
    PICKLE_MODEL,
    TINY_MODEL,
    closed_port_endpoint,
    hub_fixture,
    point_clients_at,
)
from ui_ctx import only_outputs, wired

from app import hub as core
from app.ui import app as ui_app
from app.ui import hub_panel, model_tab


@pytest.fixture(scope="module")
def built():
    return ui_app.build_blocks("en")


@pytest.fixture(autouse=True)
def no_transfer_left():
    """Every test ends with no download running (a leftover would refuse the next test's as busy) and no model
    loaded in the Model tab's holder (other tests expect it empty)."""
    yield
    model_tab.HOLDER.release()
    running = core.current()
    if running is not None:
        running.cancel.set()
        running.wait(30)
    assert core.current() is None


def panel(ctx):
    return ctx.model.hub


def run_download(ctx, name: str, consent: bool = False, api_name: str = "hub_download") -> list[dict]:
    """Press Download for `name` and follow the event to its end; every yield is checked against its outputs."""
    fn, values = wired(ctx, api_name, model__name_or_path=name)
    values[panel(ctx).consent] = consent
    return drain(ctx, api_name, fn(values))


def drain(ctx, api_name: str, events) -> list[dict]:
    out = []
    for update in events:
        only_outputs(ctx, api_name, update)
        out.append(update)
    return out


def status_of(ctx, updates: list[dict]) -> str:
    shown = [u[panel(ctx).status] for u in updates if isinstance(u.get(panel(ctx).status), str)]
    return shown[-1] if shown else ""


def start_running(ctx, hub, bytes_per_second: float):
    """Press Download for the tiny model on a throttled stand-in and read its event until the bar runs; (the
    handler, its inputs, the event's open generator)."""
    hub.throttle(bytes_per_second)
    fn, values = wired(ctx, "hub_download", model__name_or_path=TINY_MODEL)
    events = fn(values)
    next(u for u in events if "td-running" in str(u.get(panel(ctx).progress)))
    return fn, values, events


def running_bars(ctx, updates: list[dict]) -> list[str]:
    return [u[panel(ctx).progress] for u in updates if "td-running" in str(u.get(panel(ctx).progress))]


def load(ctx, name: str) -> str:
    fn, values = wired(ctx, "load_model", model__name_or_path=name)
    return fn(values)[ctx.model.status]


# ---- search ----------------------------------------------------------------------------------------------------
def test_search_lists_the_tiny_model_with_its_size_and_whether_it_fits(built, hub):
    _, ctx = built
    h = panel(ctx)
    fn, values = wired(ctx, "hub_search")
    values[h.query] = "tiny-llama"
    out = fn(values)
    table = out[h.results]
    rows = {row["model"]: row for row in table.to_dict("records")}
    assert {TINY_MODEL, GATED_MODEL, PICKLE_MODEL} <= set(rows), rows
    weights = (hub.repos[("model", TINY_MODEL)].files["model.safetensors"]).size
    tiny = rows[TINY_MODEL]
    assert tiny["weights"] == core.fmt_bytes(weights)  # the safetensors file, not the .bin/.gguf/.onnx copies
    assert (tiny["license"], tiny["gated"], tiny["cached"]) == ("apache-2.0", "no", "-")
    assert (tiny["LoRA"], tiny["QLoRA"]) == ("yes", "yes")  # a 2-layer, hidden-64 model fits anywhere
    assert rows[GATED_MODEL]["gated"] == "yes" and "found" in out[h.status]
    assert not any(hub.requested(f) for f in ("model.safetensors", "pytorch_model.bin", "model.gguf"))
    # picking its row puts the id in Base model
    pick, values = wired(ctx, "hub_pick")
    values[h.hits] = out[h.hits]
    row = list(rows).index(TINY_MODEL)
    picked = pick(values[h.hits], "en", _Select(row))
    assert picked[ctx.form.components["model.name_or_path"]]["value"] == TINY_MODEL


class _Select:
    """What Gradio passes a Dataframe's select handler: the [row, column] clicked."""

    def __init__(self, row: int):
        self.index = [row, 0]


# ---- download, load, cancel, resume ----------------------------------------------------------------------------
def test_download_streams_progress_then_the_model_loads(built, hub):
    _, ctx = built
    hub.throttle(400_000)  # ~1 MB of weights over ~3 s: several redraws of the bar
    updates = run_download(ctx, TINY_MODEL)
    bars = running_bars(ctx, updates)
    assert len(bars) >= 2 and any(" of " in b and "files" in b for b in bars), bars
    assert "Downloaded" in status_of(ctx, updates) and "td-finished" in updates[-1][panel(ctx).progress]
    assert core.cached_state(TINY_MODEL) == "ready"
    assert not any(hub.requested(f) for f in ("pytorch_model.bin", "model.gguf", "model.onnx", "README.md"))
    assert "Loaded" in load(ctx, TINY_MODEL)
    # pressing Download again: already complete, no transfer
    hub.clear_log()
    assert "already downloaded" in status_of(ctx, run_download(ctx, TINY_MODEL)) and not hub.file_requests()


def test_cancel_leaves_it_not_ready_and_download_picks_up_from_there(built, hub):
    """huggingface_hub 2.4 keeps the files a cancelled download completed and drops the one it was in the middle
    of (file_download._download_to_tmp_and_move deletes its process-unique temporary file), so pressing Download
    again fetches only what is missing."""
    _, ctx = built
    h = panel(ctx)
    hub.throttle(100_000)
    fn, values = wired(ctx, "hub_download", model__name_or_path=TINY_MODEL)
    events = fn(values)
    for update in events:
        if "td-running" in str(update.get(h.progress)) and hub.requested("tokenizer.json"):
            break
    time.sleep(1.0)  # some bytes of the weights arrive
    cancel, lang = wired(ctx, "hub_cancel")
    assert "Cancelling" in cancel(*lang.values())
    rest = drain(ctx, "hub_download", events)
    assert "cancelled" in status_of(ctx, rest) and "td-stopped" in rest[-1][h.progress]
    assert core.cached_state(TINY_MODEL) != "ready" and core.cached_path(TINY_MODEL) is None
    assert "not on this machine" in load(ctx, TINY_MODEL)  # never loaded from a partial snapshot
    hub.throttle(None)
    hub.clear_log()
    assert "Downloaded" in status_of(ctx, run_download(ctx, TINY_MODEL))
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.file_requests()}
    assert "model.safetensors" in fetched and "tokenizer.json" not in fetched, fetched
    assert "Loaded" in load(ctx, TINY_MODEL)


def test_a_page_that_goes_away_leaves_no_download_saying_downloading(built, hub):
    """The transfer belongs to the app: closing the page's event (Gradio closes a generator whose page went away)
    leaves it running, the next page's load event draws it to its end, and after that nothing says downloading."""
    _, ctx = built
    h = panel(ctx)
    _, _, events = start_running(ctx, hub, 300_000)
    events.close()  # the page is refreshed
    assert core.current() is not None  # still downloading, in the app
    watch, lang = wired(ctx, "hub_watch")
    after = drain(ctx, "hub_watch", watch(*lang.values()))
    assert "Downloaded" in status_of(ctx, after) and core.current() is None
    again = drain(ctx, "hub_watch", watch(*lang.values()))
    assert not any("Downloading" in str(u.get(h.status)) for u in again)
    assert core.cached_state(TINY_MODEL) == "ready"


def test_one_download_at_a_time(built, hub):
    _, ctx = built
    h = panel(ctx)
    fn, values, events = start_running(ctx, hub, 100_000)
    other = run_download(ctx, PICKLE_MODEL, consent=True)
    assert f"{TINY_MODEL}** is downloading now" in status_of(ctx, other) and other[-1][h.cancel]["visible"] is True
    again = fn(values)  # Download pressed again for the same model (or on another page): the same transfer
    checking, following = next(again)[h.status], next(again)[h.status]
    assert "Checking" in checking and f"Downloading **{TINY_MODEL}**" in following
    again.close()
    cancel, lang = wired(ctx, "hub_cancel")
    cancel(*lang.values())
    assert "cancelled" in status_of(ctx, drain(ctx, "hub_download", events))
    assert not hub.requested("pytorch_model.bin")


def test_a_model_download_makes_a_dataset_download_wait_and_either_tab_cancels_it(built, hub):
    """One download at a time across the Model and Data tabs (they share the disk and the bandwidth): the Data tab's
    Download says which model is downloading and fetches nothing, its page-load event leaves the model's transfer to
    the Model tab, and its Cancel stops it."""
    _, ctx = built
    h, dh = panel(ctx), ctx.data.hub
    hub.throttle(100_000)
    fn, values = wired(ctx, "hub_download", model__name_or_path=TINY_MODEL)
    events = fn(values)
    next(u for u in events if "td-running" in str(u.get(h.progress)) and hub.requested("tokenizer.json"))
    get, get_values = wired(ctx, "data_hub_download")
    get_values.update({dh.repo: ALPACA_DATASET, dh.config: "default", dh.split: "train"})
    refused = drain(ctx, "data_hub_download", get(get_values))
    assert [u[dh.status] for u in refused] == [
        f"The model **{TINY_MODEL}** is downloading now (one download at a time, models and datasets alike): wait "
        "for it or cancel it."
    ]
    assert not hub.requested("train.json")
    page, page_values = wired(ctx, "data_hub_watch")
    assert not any("Downloading" in str(u.get(dh.status)) for u in drain(ctx, "data_hub_watch", page(page_values)))
    cancel, cancel_values = wired(ctx, "data_hub_cancel")
    assert f"Cancelling the download of **{TINY_MODEL}**" in cancel(cancel_values)[dh.status]
    assert "cancelled" in status_of(ctx, drain(ctx, "hub_download", events))
    assert core.cached_state(TINY_MODEL) != "ready"


def test_the_progress_line_speaks_the_pages_language():
    """app.hub gives the figures; the panel words them (the Data tab's Hub panel uses the same line)."""
    p = core.Progress(312_000_000, 1_200_000_000, 45_000_000, 20.0, 3, 7)
    assert hub_panel.progress_line(p, "en") == p.line() == "312.0 MB of 1.2 GB · 45.0 MB/s · 20 s left · 3/7 files"
    assert hub_panel.progress_line(p, "zh") == "312.0 MB / 1.2 GB · 45.0 MB/s · 剩余 20 s · 3/7 个文件"
    done = core.Progress(5_000, 5_000, None, 0.0, 2, 2)
    assert hub_panel.progress_line(done, "zh") == "5.0 KB / 5.0 KB · 2/2 个文件"  # no speed yet, nothing left
    assert "个文件" in hub_panel.progress_html(p, "running", "zh") and "td-running" in hub_panel.progress_html(
        None, "running"
    )
    busy = core.Busy(f"{ALPACA_DATASET} (default, train)", "dataset")
    assert hub_panel.busy_line(busy, "zh").startswith(f"数据集 **{ALPACA_DATASET} (default, train)** 正在下载")
    assert busy.kind == "busy" and str(busy).startswith(
        f"the dataset {ALPACA_DATASET} (default, train) is downloading"
    )


def test_download_takes_the_name_a_person_types(built, hub, tiny_model_dir):
    """A catalog id downloads its Hub repo; a folder, a .gguf file or the bundled default model is already here."""
    _, ctx = built
    facts = hub_panel.catalog.lookup("llama-3.1-8b-instruct")
    assert hub_panel.repo_of("llama-3.1-8b-instruct") == facts.hub_id
    assert hub_panel.repo_of(TINY_MODEL) == TINY_MODEL
    assert hub_panel.repo_of(str(tiny_model_dir)) is None
    assert hub_panel.repo_of(ctx.defaults.model.name_or_path) is None
    text = status_of(ctx, run_download(ctx, "llama-3.1-8b-instruct"))  # the stand-in has no such repo
    assert facts.hub_id in text and "not found" in text
    assert "on this machine already" in status_of(ctx, run_download(ctx, str(tiny_model_dir)))


# ---- refusals: one line each, before any byte moves ---------------------------------------------------------
def test_gated_without_a_token_says_which_license_to_accept(built, hub):
    _, ctx = built
    text = status_of(ctx, run_download(ctx, GATED_MODEL))
    assert text.startswith("❌") and "gated" in text and f"{hub.url}/{GATED_MODEL}" in text and "token" in text
    assert "Traceback" not in text and not hub.file_requests()


def test_a_wrong_id_says_not_found_with_the_id(built, hub):
    _, ctx = built
    text = status_of(ctx, run_download(ctx, "tunedesk-test/no-such-model"))
    assert "not found" in text and "tunedesk-test/no-such-model" in text and "Traceback" not in text


def test_pickle_weights_need_the_consent_box(built, hub):
    _, ctx = built
    h = panel(ctx)
    refused = run_download(ctx, PICKLE_MODEL)
    assert "pickle" in status_of(ctx, refused) and refused[-1][h.consent]["visible"] is True
    assert not hub.requested("pytorch_model.bin")
    assert "Downloaded" in status_of(ctx, run_download(ctx, PICKLE_MODEL, consent=True))
    assert hub.requested("pytorch_model.bin")


def test_a_disk_too_small_refuses_before_any_file_request(built, hub, monkeypatch):
    """A real full disk cannot be made in a test: app.hub reads free space through hub.free_bytes (its one place
    for that), so the test makes it report 50 MB free, less than the tiny model's ~1 MB plus app.hub's 256 MiB
    reserve."""
    _, ctx = built
    monkeypatch.setattr(core, "free_bytes", lambda folder: 50_000_000)
    hub.clear_log()
    text = status_of(ctx, run_download(ctx, TINY_MODEL))
    assert "not enough disk space" in text and "50.0 MB free" in text and "needs" in text
    assert hub.file_requests("GET") == [] and hub.file_requests("HEAD") == []  # nothing asked of the files
    assert core.cached_state(TINY_MODEL) == "absent"


def test_an_unreachable_hub_says_so_within_3_s_and_the_default_model_loads(built, tmp_path, monkeypatch):
    _, ctx = built
    h = panel(ctx)
    point_clients_at(closed_port_endpoint(), tmp_path / "hf", monkeypatch)
    fn, values = wired(ctx, "hub_search")
    values[h.query] = "llama"
    start = time.monotonic()
    found = fn(values)[h.status]
    assert time.monotonic() - start < 3 and "cannot be reached" in found and "\n" not in found.strip()
    start = time.monotonic()
    text = status_of(ctx, run_download(ctx, TINY_MODEL))
    assert time.monotonic() - start < 3 and "cannot be reached" in text
    assert "Loaded" in load(ctx, ctx.defaults.model.name_or_path)


# ---- the token -------------------------------------------------------------------------------------------------
def test_the_token_goes_to_the_token_store_and_nowhere_else(built, hub, runs_tmp, capfd, caplog):
    from test_train_kit import tiny_config

    from app import last_form, paths, runs, train

    caplog.set_level("DEBUG")
    _, ctx = built
    h = panel(ctx)
    assert h.token not in ctx.form.inputs()  # not a form widget: never in a preset, the last form or a run config
    save, values = wired(ctx, "hub_save_token")
    values[h.token] = "hf_not_a_valid_token"
    refused = save(values)
    assert "did not accept" in refused[h.who] and refused[h.token]["value"] == ""
    values[h.token] = hub.token
    saved = save(values)
    assert hub.user in saved[h.who] and saved[h.token]["value"] == "" and hub.token not in str(saved)
    # the gated model now downloads with the stored token, and trains one step
    assert "Downloaded" in status_of(ctx, run_download(ctx, GATED_MODEL))
    cfg = tiny_config(Path(GATED_MODEL), paths.assets_dir() / "sample_data.json", **{"train.max_steps": 1})
    cfg = cfg.replace(**{"model.name_or_path": GATED_MODEL, "data.max_samples": 8})
    assert train.run(cfg, runs.create_run(cfg, "token-check")) == "finished"
    remember, form = wired(ctx, "remember_form", model__name_or_path=GATED_MODEL)
    remember(form)
    written = [p for p in runs_tmp.rglob("*") if p.is_file()] + [last_form.path()]
    assert len(written) > 3
    assert [p for p in written if hub.token.encode() in p.read_bytes()] == []
    logged = capfd.readouterr()
    assert hub.token not in logged.out + logged.err + caplog.text
    # Forget token: huggingface_hub's store no longer has it
    forget, lang = wired(ctx, "hub_forget_token")
    assert "No Hub token" in forget(*lang.values())[h.who] and core.saved_token_name() is None
