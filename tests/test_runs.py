"""Run folders: status derived from files alone, listing and deleting (the event log itself: test_history.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from app import history, runs
from app.config import RunConfig


def _cfg(**changes) -> RunConfig:
    return RunConfig().replace(**changes) if changes else RunConfig()


def test_create_run_names_folder_and_saves_complete_config(runs_tmp):
    cfg = _cfg(**{"lora.rank": 16, "train.run_name": "my run/1"})
    a = runs.create_run(cfg)
    b = runs.create_run(cfg)  # same second: a distinct folder, never a shared one
    assert a != b and a.parent == runs_tmp and a.name.endswith("-my-run-1")
    assert RunConfig.from_yaml(a / "config.yaml") == cfg
    assert runs.run_status(a) == "created"


def _lock(run_dir, **info):
    (run_dir / runs.LOCK).write_text(json.dumps(info))


def test_status_from_events_and_lock(runs_tmp):
    run_dir = runs.create_run(_cfg())
    runs.write_lock(run_dir)
    assert runs.run_status(run_dir) == "running"  # this process holds it
    history.append_event(run_dir, "started", total_steps=3)
    history.append_event(run_dir, "stopped", step=2)
    assert runs.run_status(run_dir) == "running"  # still locked until the trainer lets go
    runs.clear_lock(run_dir)
    assert runs.run_status(run_dir) == "stopped"
    history.append_event(run_dir, "resumed", from_step=2, total_steps=3)
    assert runs.run_status(run_dir) == "interrupted"  # a session began, no process, no final event

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _lock(run_dir, pid=int(dead.stdout), hostname=socket.gethostname(), process_start=0.0)
    assert runs.run_status(run_dir) == "interrupted"
    _lock(run_dir, pid=os.getpid(), hostname=socket.gethostname(), process_start=12.0)  # a reused pid
    assert runs.run_status(run_dir) == "interrupted"
    history.append_event(run_dir, "finished", step=3)
    assert runs.run_status(run_dir) == "finished"


def test_list_runs_newest_first_with_summary_and_delete(runs_tmp):
    old = runs.create_run(_cfg(method="full"))
    history.append_event(old, "started", total_steps=4)
    history.append_event(old, "log", step=1, loss=2.0)
    history.append_event(old, "eval", step=1, eval_loss=1.8)
    history.append_event(old, "eval", step=2, eval_loss=1.6)
    history.append_event(old, "log", step=2, loss=1.7)
    history.append_event(old, "failed", step=2, message="Out of RAM")
    os.rename(old, old.with_name("20000101-000000-old"))
    new = runs.create_run(_cfg())
    listed = runs.list_runs()
    assert [r.path for r in listed] == [new, runs_tmp / "20000101-000000-old"]
    summary = listed[1]
    assert (summary.status, summary.method, summary.step, summary.total_steps) == ("failed", "full", 2, 4)
    assert summary.best_eval_loss == 1.6 and summary.last_loss == 1.7 and summary.message == "Out of RAM"
    assert summary.best_step == 2 and summary.stop_reason is None
    assert listed[0].status == "created" and listed[0].adapter is None

    runs.write_lock(new)
    with pytest.raises(runs.RunError, match="stop it"):
        runs.delete_run(new)
    runs.clear_lock(new)
    runs.delete_run(new)
    assert not new.exists()
    with pytest.raises(runs.RunError, match="not a run folder"):
        runs.delete_run(runs_tmp)
