"""One trainer per run folder (issue 20, items 4 and 5): a refused resume writes nothing into the run it targets
(every file byte-identical), and two `python -m app train --resume RUN` started at once make one resume; the other
exits non-zero saying which run is taken. The exclusion is an OS lock (runs.claim: fcntl.flock on run.flock) held
for the run's life, taken by the CLI, train.run and the UI's job manager alike."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_train_kit import events_of, one_torch_thread, tiny_config, tree_hashes, write_alpaca  # noqa: F401

from app import jobs, runs, train

ROOT = Path(__file__).resolve().parent.parent


def _env(runs_dir: Path) -> dict:
    return {**os.environ, "TUNEDESK_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _resume_cli(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "train", "--resume", str(run_dir)],
        cwd=ROOT,
        env=_env(run_dir.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _refusal(stderr: str, run_dir: Path, words: str) -> None:
    """One message naming the run and saying why, and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("python -m app train:")]
    assert len(lines) == 1, stderr[-3000:]
    assert run_dir.name in lines[0] and words in lines[0] and "nothing was changed" in lines[0], lines[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=24)


@pytest.fixture()
def finished_run(tiny_model_dir, data_file, runs_tmp) -> Path:
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.max_steps": 2, "train.save_steps": 1})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    return run_dir


@pytest.fixture()
def stopped_run(tiny_model_dir, data_file, runs_tmp) -> Path:
    """A run stopped before its first step (so resumable from step 0), whose config trains `max_steps` more."""
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.max_steps": 400, "train.save_steps": 0})
    run_dir = runs.create_run(cfg)
    stop = threading.Event()
    stop.set()
    assert train.run(cfg, run_dir, stop) == "stopped"
    return run_dir


# ---- item 4: a refused resume writes nothing ------------------------------------------------------------------
def test_cli_resume_of_a_finished_run_changes_no_byte(finished_run):
    before = tree_hashes(finished_run)
    proc = _resume_cli(finished_run)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    _refusal(stderr, finished_run, "already finished")
    assert tree_hashes(finished_run) == before
    assert runs.run_status(finished_run) == "finished" and runs.final_artifact(finished_run) is not None


def test_core_and_ui_resume_of_a_finished_run_change_no_byte(finished_run):
    cfg = runs.load_config(finished_run)
    before = tree_hashes(finished_run)
    with pytest.raises(runs.RunBusy, match="already finished"):
        train.run(cfg, finished_run, resume=True)
    with pytest.raises(jobs.JobBusy, match="already finished"):
        jobs.JobManager().start(cfg, resume_dir=finished_run)  # the Train tab's Resume
    assert tree_hashes(finished_run) == before


def test_resume_of_a_run_another_process_trains_changes_no_byte(stopped_run):
    """The claim a trainer holds (taken here in the test process) refuses the CLI, train.run and the UI alike."""
    held = runs.claim(stopped_run, resume=True)
    try:
        before = tree_hashes(stopped_run)
        proc = _resume_cli(stopped_run)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1
        _refusal(stderr, stopped_run, "already training")
        assert f"process {os.getpid()}" in stderr
        cfg = runs.load_config(stopped_run)
        with pytest.raises(runs.RunBusy, match="already training"):
            train.run(cfg, stopped_run, resume=True)
        with pytest.raises(jobs.JobBusy, match="already training"):
            jobs.JobManager().start(cfg, resume_dir=stopped_run)
        assert tree_hashes(stopped_run) == before
    finally:
        held.release()
    assert runs.run_status(stopped_run) == "stopped"


def test_cli_resume_of_a_run_training_in_the_app_leaves_it_training(stopped_run):
    manager = jobs.JobManager()
    # Far more steps than the CLI needs to start and be refused (400 tiny steps once ended first): Stop ends it.
    runs.load_config(stopped_run).replace(**{"train.max_steps": 100_000}).save(stopped_run / runs.CONFIG)
    cfg = runs.load_config(stopped_run)
    assert manager.start(cfg, resume_dir=stopped_run) == stopped_run  # the UI's Resume: a job of this process
    try:
        while not events_of(stopped_run, "log"):
            time.sleep(0.05)
        proc = _resume_cli(stopped_run)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 1
        _refusal(stderr, stopped_run, "already training")
        assert runs.run_status(stopped_run) == "running"
    finally:
        manager.stop()
        assert manager.wait(120) == "stopped"
    kinds = [e["type"] for e in events_of(stopped_run)]
    assert "failed" not in kinds and kinds.count("resumed") == 1, kinds
    assert not (stopped_run / runs.ERROR_LOG).exists()


# ---- item 5: two resumes at once make one ----------------------------------------------------------------------
def test_two_cli_resumes_at_once_make_one_resume(stopped_run):
    """Both processes start together and reach the claim within a second or so of each other; the winner trains
    for longer than that (400 tiny steps), so the loser meets a run in training, as two clicks 0.3 s apart did."""
    procs = [_resume_cli(stopped_run) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, [err[-2000:] for _, err in outs])
    _refusal(outs[codes.index(1)][1], stopped_run, "already training")
    assert "Traceback" not in outs[codes.index(0)][1]
    kinds = [e["type"] for e in events_of(stopped_run)]
    assert kinds.count("resumed") == 1 and "failed" not in kinds, kinds
    assert events_of(stopped_run, "finished")[0]["step"] == 400
    assert runs.run_status(stopped_run) == "finished" and not (stopped_run / runs.LOCK).exists()


def test_a_sigkilled_trainer_leaves_the_run_claimable(stopped_run):
    """The OS releases the lock with the process: no stale lock survives a kill -9 (the pid file may)."""
    code = f"from app import runs; runs.claim({str(stopped_run)!r}, resume=True); print('held', flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(stopped_run.parent), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert runs.run_status(stopped_run) == "running"
        with pytest.raises(runs.RunBusy, match="already training"):
            runs.claim(stopped_run, resume=True)
    finally:
        holder.kill()
        holder.wait(30)
    assert (stopped_run / runs.LOCK).exists() and runs.run_status(stopped_run) == "stopped"  # a stale pid file
    claim = runs.claim(stopped_run, resume=True)
    assert claim.previous_status == "stopped"
    claim.release()
