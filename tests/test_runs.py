"""Run folders: events written and read safely, status derived from files alone, listing and deleting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from app import runs
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


def test_events_round_trip_with_offsets_and_a_torn_last_line(runs_tmp):
    run_dir = runs.create_run(_cfg())
    runs.append_event(run_dir, "started", total_steps=10)
    events, offset = runs.read_events(run_dir)
    assert [e["type"] for e in events] == ["started"] and events[0]["time"] > 0
    runs.append_event(run_dir, "log", step=1, loss=float("nan"))
    with open(run_dir / runs.EVENTS, "ab") as fh:
        fh.write(b'{"type": "log", "st')  # a crash in the middle of a line
    new, offset2 = runs.read_events(run_dir, offset)
    assert [e["step"] for e in new] == [1] and new[0]["loss"] is None  # NaN written as null
    assert runs.read_events(run_dir, offset2) == ([], offset2)  # the torn line is not consumed
    runs.append_event(run_dir, "log", step=2, loss=1.5)  # after a resume: starts on a fresh line
    new, _ = runs.read_events(run_dir, offset2)
    assert [(e["type"], e["step"]) for e in new] == [("log", 2)]
    for line in (run_dir / runs.EVENTS).read_text().splitlines()[:2]:
        json.loads(line)


def _lock(run_dir, **info):
    (run_dir / runs.LOCK).write_text(json.dumps(info))


def test_status_from_events_and_lock(runs_tmp):
    run_dir = runs.create_run(_cfg())
    runs.write_lock(run_dir)
    assert runs.run_status(run_dir) == "running"  # this process holds it
    runs.append_event(run_dir, "started", total_steps=3)
    runs.append_event(run_dir, "stopped", step=2)
    assert runs.run_status(run_dir) == "running"  # still locked until the trainer lets go
    runs.clear_lock(run_dir)
    assert runs.run_status(run_dir) == "stopped"
    runs.append_event(run_dir, "resumed", from_step=2, total_steps=3)
    assert runs.run_status(run_dir) == "interrupted"  # a session began, no process, no final event

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _lock(run_dir, pid=int(dead.stdout), hostname=socket.gethostname(), process_start=0.0)
    assert runs.run_status(run_dir) == "interrupted"
    _lock(run_dir, pid=os.getpid(), hostname=socket.gethostname(), process_start=12.0)  # a reused pid
    assert runs.run_status(run_dir) == "interrupted"
    runs.append_event(run_dir, "finished", step=3)
    assert runs.run_status(run_dir) == "finished"


def test_effective_events_drop_steps_a_resume_redid():
    events = [
        {"type": "started"},
        *({"type": "log", "step": s} for s in range(1, 10)),
        {"type": "checkpoint", "step": 5},
        {"type": "resumed", "from_step": 5},
        *({"type": "log", "step": s} for s in range(6, 11)),
        {"type": "finished", "step": 10},
    ]
    steps = [e["step"] for e in runs.effective_events(events) if e["type"] == "log"]
    assert steps == list(range(1, 11))


def test_list_runs_newest_first_with_summary_and_delete(runs_tmp):
    old = runs.create_run(_cfg(method="full"))
    runs.append_event(old, "started", total_steps=4)
    runs.append_event(old, "log", step=1, loss=2.0)
    runs.append_event(old, "eval", step=1, eval_loss=1.8)
    runs.append_event(old, "eval", step=2, eval_loss=1.6)
    runs.append_event(old, "log", step=2, loss=1.7)
    runs.append_event(old, "failed", step=2, message="Out of RAM")
    os.rename(old, old.with_name("20000101-000000-old"))
    new = runs.create_run(_cfg())
    listed = runs.list_runs()
    assert [r.path for r in listed] == [new, runs_tmp / "20000101-000000-old"]
    summary = listed[1]
    assert (summary.status, summary.method, summary.step, summary.total_steps) == ("failed", "full", 2, 4)
    assert summary.best_eval_loss == 1.6 and summary.last_loss == 1.7 and summary.message == "Out of RAM"
    assert listed[0].status == "created" and listed[0].adapter is None

    runs.write_lock(new)
    with pytest.raises(runs.RunError, match="stop it"):
        runs.delete_run(new)
    runs.clear_lock(new)
    runs.delete_run(new)
    assert not new.exists()
    with pytest.raises(runs.RunError, match="not a run folder"):
        runs.delete_run(runs_tmp)
