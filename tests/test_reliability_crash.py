"""SIGKILL of the app mid-training loses nothing: a real `python -m app ui` on the tiny model trains through its
own Start, is killed with SIGKILL after a checkpoint, and a new app on the same runs folder lists the run as
interrupted and resumes it from that checkpoint to the end.

What must survive the kill: every completed checkpoint (loadable weights, optimizer state, trainer state), the
events log (every line parses; the steps logged before the kill are there), and no half-written checkpoint left
where Resume would pick it up."""

from __future__ import annotations

import json
import signal

import pytest
from apprunner import HEADERS, running_app
from safetensors.torch import load_file
from test_reliability_kit import app_env, ended, events, only_run, page_inputs, start_training, table_rows, wait_for

from app import history, runs

pytestmark = pytest.mark.slow

STEPS = 40
SAVE_EVERY = 10


def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, headers=HEADERS)


def test_sigkill_mid_training_then_restart_lists_interrupted_and_resume_finishes(tiny_model_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    env = app_env(runs_dir)
    with running_app("--model", str(tiny_model_dir), env=env, log_path=tmp_path / "app1.log", timeout=180) as (
        url,
        proc,
    ):
        client = _client(url)
        start_training(client, STEPS, **{"f-train-save_steps": SAVE_EVERY}).result(timeout=180)
        run_dir = wait_for(lambda: only_run(runs_dir), 30, "the run folder")
        wait_for(lambda: history.checkpoints(run_dir), 300, "the first checkpoint", poll=0.02)
        proc.send_signal(signal.SIGKILL)  # no handler runs: as if the machine lost power for this process
        proc.wait(30)
        client.close()
    assert ended(run_dir) is None, "the run ended before the kill; make STEPS larger"

    # what the kill left on disk
    # every finished line is whole JSON (a kill inside the write of a line can only cut that last line, which
    # history.read_events leaves until it has its newline)
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    parsed = [json.loads(line) for line in lines]
    assert [e["type"] for e in history.load_events(run_dir)] == [e["type"] for e in parsed]
    logged = [e["step"] for e in parsed if e["type"] == "log"]
    assert logged == list(range(1, len(logged) + 1)) and logged, logged
    ckpts = history.checkpoints(run_dir)
    for ckpt in ckpts:
        step = history.checkpoint_step(ckpt)
        assert step % SAVE_EVERY == 0 and step <= logged[-1]
        weights = load_file(str(ckpt / "adapter_model.safetensors"))
        assert weights and all(t.isfinite().all() for t in weights.values())
        assert (ckpt / "optimizer.pt").is_file()
        assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step
    assert not list(run_dir.glob("checkpoints/.partial*/**/trainer_state.json")), "a half-written checkpoint"
    resume_from = history.checkpoint_step(ckpts[-1])

    with running_app("--model", str(tiny_model_dir), env=env, log_path=tmp_path / "app2.log", timeout=180) as (
        url,
        proc,
    ):
        client = _client(url)
        table, _pick = client.predict(*page_inputs(client, "list_runs"), api_name="/list_runs")
        rows = {row["run"]: row for row in table_rows(table)}
        assert rows[run_dir.name]["status"] == "interrupted", rows
        answer = client.predict(
            *page_inputs(client, "resume_run", **{"run-pick": run_dir.name}), api_name="/resume_run"
        )
        assert run_dir.name in str(answer[0]), answer[0]
        final = wait_for(lambda: ended(run_dir), 600, "the resumed run to end", poll=0.5)
        client.close()
        assert proc.poll() is None, "the app died during the resumed run"

    assert final["type"] == "finished" and final["step"] == STEPS, final
    resumed = events(run_dir, "resumed")
    assert resumed and resumed[-1]["previous_status"] == "interrupted"
    # the resumed session starts after the checkpoint: no step is trained twice in the effective history
    steps = [e["step"] for e in history.effective_events(events(run_dir)) if e["type"] == "log"]
    assert steps == list(range(1, STEPS + 1)), steps
    after = [e["step"] for e in events(run_dir, "log")][len(logged) :]
    assert after and after[0] == resume_from + 1, (resume_from, after[:3])
    assert runs.run_status(run_dir) == "finished" and runs.final_artifact(run_dir).name == "adapter"
