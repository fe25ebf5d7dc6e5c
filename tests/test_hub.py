"""app.hub and `python -m app download` against the Hub stand-in (tests/hubstub.py): the real huggingface_hub client
searches, plans, downloads, resumes and refuses as it would against the Hub."""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hubstub import (  # noqa: F401  (hub_fixture registers the `hub` fixture here)
    GATED_MODEL,
    PICKLE_MODEL,
    TINY_JUNK,
    TINY_MODEL,
    TINY_NEEDED,
    closed_port_endpoint,
    hub_fixture,
    point_clients_at,
    subprocess_env,
)

from app import hub as core
from app import modeling
from app.paths import ROOT
from app.ui import hub_panel


def _weights_size(stub, repo_id=TINY_MODEL) -> int:
    return stub.repos[("model", repo_id)].files["model.safetensors"].size


def test_search_lists_the_tiny_model_with_its_weights_size_license_and_state(hub):
    hits = {h.id: h for h in core.search_models("tiny-llama")}
    tiny = hits[TINY_MODEL]
    assert tiny.weights_bytes == _weights_size(hub) and tiny.downloads == 1234
    assert tiny.license == "apache-2.0" and not tiny.gated and tiny.state == "absent"
    assert hits[GATED_MODEL].gated  # listed, marked gated, although its files need a token


def test_plan_fetches_only_what_training_needs_and_pickle_needs_consent(hub):
    plan = core.plan_download(TINY_MODEL)
    assert sorted(plan.patterns) == sorted(TINY_NEEDED)
    assert {f.path for f in plan.skipped} >= set(TINY_JUNK)
    with pytest.raises(core.HubError) as err:
        core.plan_download(PICKLE_MODEL)
    assert err.value.kind == "consent" and "pickle" in str(err.value)
    assert "pytorch_model.bin" in core.plan_download(PICKLE_MODEL, allow_pickle=True).patterns


def test_download_reports_progress_then_the_model_is_ready_and_loads(hub):
    events: list = []
    folder = core.download(core.plan_download(TINY_MODEL), events.append)
    assert sorted(p.name for p in folder.iterdir()) == sorted(TINY_NEEDED)
    assert not any(hub.requested(name) for name in TINY_JUNK)
    total = events[-1].total_bytes
    assert len(events) >= 3 and events[-1].done_bytes == total and events[-1].files_done == len(TINY_NEEDED)
    assert [e.done_bytes for e in events] == sorted(e.done_bytes for e in events)  # it only moves forward
    assert "of" in events[1].line() and "files" in events[1].line()
    assert core.cached_state(TINY_MODEL) == "ready"
    assert modeling.resolve_model(TINY_MODEL) == str(folder)


def test_cancel_leaves_the_model_partial_never_ready_and_download_again_fetches_only_the_rest(hub):
    hub.throttle(400_000)  # ~1.5 s for the weights: Cancel lands mid-file, after the small files arrived
    cancel = threading.Event()

    def on_progress(p):
        if p.done_bytes > 200_000:
            cancel.set()

    plan = core.plan_download(TINY_MODEL)
    with pytest.raises(core.HubError) as err:
        core.download(plan, on_progress, cancel)
    assert err.value.kind == "cancelled"
    assert core.cached_state(TINY_MODEL) == "partial" and core.cached_path(TINY_MODEL) is None
    assert TINY_MODEL not in core.downloaded() and TINY_MODEL not in hub_panel.base_choices()  # never listed
    with pytest.raises(modeling.ModelError, match="only partly downloaded"):
        modeling.resolve_model(TINY_MODEL)
    hub.throttle(None)
    hub.clear_log()
    folder = core.download(plan)
    assert [r.path.rsplit("/", 1)[-1] for r in hub.file_requests()] == ["model.safetensors"]  # the rest was kept
    assert core.cached_state(TINY_MODEL) == "ready" and modeling.resolve_model(TINY_MODEL) == str(folder)
    assert core.downloaded() == [TINY_MODEL] and hub_panel.base_choices()[-1] == TINY_MODEL


def test_a_transfer_cut_halfway_resumes_to_a_complete_loadable_model(hub):
    from transformers import AutoModelForCausalLM

    hub.cut_after("model.safetensors", _weights_size(hub) // 2)
    folder = core.download(core.plan_download(TINY_MODEL))
    cuts = [r for r in hub.file_requests() if r.path.endswith("model.safetensors")]
    assert len(cuts) == 2 and cuts[1].range  # the cut, then the resume
    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == 2


def test_the_apps_one_download_runs_in_a_thread_keeps_its_outcome_and_refuses_a_second(hub):
    """app.hub.start: the download belongs to the app (a daemon thread, not a page's event); the same key follows
    the running one, any other (a model's or a dataset's) is Busy; the last progress and the result, or the error
    as one line, stay after the thread ends; Cancel reaches the work."""
    hub.throttle(400_000)  # ~1 MB of weights: ~2.5 s, long enough to ask while it runs
    plan = core.plan_download(TINY_MODEL)
    transfer = core.start(TINY_MODEL, functools.partial(core.download, plan))
    assert core.current() is transfer and transfer.thread.daemon
    assert core.start(TINY_MODEL, lambda report, cancel: None) is transfer  # a second press: the same transfer
    for key, repo_type in ((PICKLE_MODEL, "model"), (TINY_MODEL, "dataset")):  # a dataset of that id is another one
        with pytest.raises(core.Busy) as busy:
            core.start(key, lambda report, cancel: None, repo_type)
        assert (busy.value.key, busy.value.repo_type, busy.value.kind) == (TINY_MODEL, "model", "busy")
    assert (
        str(busy.value)
        == f"the model {TINY_MODEL} is downloading now (one download at a time): wait for it or cancel it"
    )
    assert transfer.wait(60) and core.current() is None
    assert transfer.error is None and transfer.result == core.cached_path(TINY_MODEL)
    assert transfer.progress.done_bytes == transfer.progress.total_bytes == plan.total_bytes

    def broken(report, cancel):
        raise ValueError("bad value\nsecond line")

    failed = core.start("owner/broken", broken)  # the last one ended: a new one starts
    assert failed.wait(10) and failed.result is None and failed.error.kind == "failed"
    assert str(failed.error) == "owner/broken could not be fetched: ValueError: bad value"

    def until_cancelled(report, cancel):
        report(core.Progress(1, 2, None, None, 0, 1))
        cancel.wait(10)
        raise core.HubError("cancelled", "stopped")

    stopped = core.start("owner/slow", until_cancelled, "dataset")
    stopped.cancel.set()
    assert stopped.wait(10) and stopped.error.kind == "cancelled" and stopped.progress.done_bytes == 1


def test_gated_repo_without_token_says_which_license_to_accept_then_the_token_opens_it(hub):
    with pytest.raises(core.HubError) as err:
        core.plan_download(GATED_MODEL)
    assert err.value.kind == "gated"
    assert f"{hub.url}/{GATED_MODEL}" in str(err.value) and "license" in str(err.value)
    with pytest.raises(core.HubError, match="did not accept"):
        core.login("hf_notAValidTokenAtAll00000000000")
    assert core.login(hub.token) == hub.user and core.saved_token_name()
    folder = core.download(core.plan_download(GATED_MODEL))
    assert (folder / "model.safetensors").is_file()
    assert all(r.token == hub.token for r in hub.file_requests())
    core.logout()
    assert core.saved_token_name() is None


def test_a_wrong_id_is_not_found_with_the_id(hub):
    with pytest.raises(core.HubError) as err:
        core.plan_download("tunedesk-test/no-such-model")
    assert err.value.kind == "not_found" and "tunedesk-test/no-such-model" in str(err.value)


def test_an_id_in_another_case_finds_the_repo_the_hub_names_and_a_malformed_id_is_one_line(hub):
    hub.repos[("model", "tunedesk-test/TINY-LLAMA")] = hub.repos[("model", TINY_MODEL)]  # the Hub ignores case
    folder = core.download(core.plan_download("tunedesk-test/TINY-LLAMA"))
    assert core.folder_repo_id(folder) == TINY_MODEL  # stored as the Hub spells it
    assert (
        core.cached_path("tunedesk-test/TINY-LLAMA") == folder
        and core.cached_state("tunedesk-test/TINY-LLAMA") == "ready"
    )
    for bad in ("owner/na me", "a/b/c", "owner/name."):
        with pytest.raises(core.HubError, match="is not a Hub id") as err:
            core.plan_download(bad)
        assert err.value.kind == "not_found"
        assert core.cached_state(bad) == "absent" and core.cached_file(bad, "config.json") is None
        with pytest.raises(modeling.ModelError, match="not a Hub id|path not found"):
            modeling.resolve_model(bad)


def test_forget_removes_only_the_saved_token_and_an_environment_token_is_said(hub, monkeypatch):
    from huggingface_hub.utils import _auth

    _auth._save_token("hf_otherTokenKeptByTheUser000000000", "kept")  # another tool's token in the same store
    core.login(hub.token)
    core.logout()
    assert core.saved_token_name() is None and "kept" in _auth.get_stored_tokens()
    monkeypatch.setenv("HF_TOKEN", hub.token)
    with pytest.raises(core.HubError, match="HF_TOKEN"):
        core.logout()


def test_a_disk_too_small_refuses_before_any_file_is_requested(hub, monkeypatch):
    # The machine's real disk cannot be shrunk for a test: free space is what app.hub.free_bytes reports.
    monkeypatch.setattr(core, "free_bytes", lambda folder: 10_000)
    plan = core.plan_download(TINY_MODEL)
    hub.clear_log()
    with pytest.raises(core.HubError) as err:
        core.download(plan)
    assert err.value.kind == "disk" and "free" in str(err.value) and core.fmt_bytes(10_000) in str(err.value)
    assert hub.file_requests() == [] and hub.file_requests("HEAD") == []
    assert core.cached_state(TINY_MODEL) == "absent"


def test_an_unreachable_hub_is_said_within_3_s_and_the_default_model_still_resolves(tmp_path, monkeypatch):
    point_clients_at(closed_port_endpoint(), tmp_path / "hf", monkeypatch)
    start = time.monotonic()
    with pytest.raises(core.HubError) as err:
        core.search_models("llama")
    assert time.monotonic() - start < 3 and err.value.kind == "unreachable" and "cannot be reached" in str(err.value)
    assert Path(modeling.resolve_model("default"), "config.json").is_file()


def _cli(args, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_download_prints_progress_and_the_path_and_refuses_unreachable_fast(hub, tmp_path):
    env = subprocess_env(hub.url, tmp_path / "hf")
    done = _cli(["download", "model", TINY_MODEL], env)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert (folder / "model.safetensors").is_file() and "files" in done.stderr and "of" in done.stderr
    missing = _cli(["download", "model", "tunedesk-test/nope"], env)
    assert missing.returncode == 1 and "tunedesk-test/nope" in missing.stderr and "Traceback" not in missing.stderr
    malformed = _cli(["download", "model", "owner/na me"], env)
    assert malformed.returncode == 1 and "is not a Hub id" in malformed.stderr and "Traceback" not in malformed.stderr
    offline = subprocess_env(closed_port_endpoint(), tmp_path / "hf")
    start = time.monotonic()
    gone = _cli(["download", "model", "tunedesk-test/other"], offline)
    assert gone.returncode == 1 and "cannot be reached" in gone.stderr
    assert time.monotonic() - start < 3 + 10  # 3 s for the check; the rest is Python starting up
