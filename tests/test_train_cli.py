"""Headless training: `python -m app train`, a kill -9 mid-run that resumes, and 2-process DDP (gloo) on the CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import history, launch, runs, train

ROOT = Path(__file__).resolve().parent.parent


def _env(runs_dir: Path) -> dict:
    return {**os.environ, "TUNEDESK_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"trainer exited early with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_kill_9_leaves_an_interrupted_run_that_resumes(tiny_model_dir, runs_tmp, tmp_path):
    data = write_alpaca(tmp_path / "alpaca.json", n=24)
    cfg = tiny_config(tiny_model_dir, data, **{"train.max_steps": 400, "train.save_steps": 3})
    cfg_path = tmp_path / "run.yaml"
    cfg.save(cfg_path)
    cmd = [sys.executable, "-m", "app", "train", str(cfg_path), "--run-name", "killed"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(runs_tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        run_dir = _wait_for(lambda: next(runs_tmp.glob("*-killed"), None), 120, proc)
        _wait_for(lambda: events_of(run_dir, "checkpoint"), 180, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert runs.run_status(run_dir) == "interrupted"
    ckpt = history.latest_checkpoint(run_dir)
    assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    assert not list((run_dir / "checkpoints").glob(".partial/checkpoint-*/trainer_state.json"))

    short = cfg.replace(**{"train.max_steps": history.checkpoint_step(ckpt) + 3})
    short.save(run_dir / "config.yaml")  # finish 3 steps after the checkpoint instead of 400
    assert train.run(short, run_dir, resume=True) == "finished"
    steps = [e["step"] for e in history.effective_events(events_of(run_dir)) if e["type"] == "log"]
    assert steps == list(range(1, short.train.max_steps + 1))
    assert events_of(run_dir, "resumed")[0]["previous_status"] == "interrupted"
    assert runs.run_status(run_dir) == "finished" and runs.final_artifact(run_dir).name == "adapter"


def test_cli_reports_config_problems_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {learning_rate: 1e-4, batchsize: 2}\n")
    out = subprocess.run(
        [sys.executable, "-m", "app", "train", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(tmp_path / "runs"),
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "train.batch_size" in out.stderr and "1.0e-4" in out.stderr  # did-you-mean and the YAML float hint
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_one_run(tiny_model_dir, runs_tmp, tmp_path):
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed beside this Python")
    data = write_alpaca(tmp_path / "alpaca.json", n=32)
    cfg = tiny_config(tiny_model_dir, data, **{"train.max_steps": 4, "train.save_steps": 2, "train.run_name": "ddp"})
    cfg_path = tmp_path / "ddp.yaml"
    cfg.save(cfg_path)
    command = launch.data_parallel_command(cfg_path, 2, device="cpu").split()
    command[0] = str(Path(sys.executable).parent / "torchrun")
    out = subprocess.run(command, cwd=ROOT, env=_env(runs_tmp), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = runs_tmp.iterdir()  # rank 0 made the folder and told rank 1
    counts = {k: len(events_of(run_dir, k)) for k in ("started", "log", "checkpoint", "finished")}
    assert counts == {"started": 1, "log": 4, "checkpoint": 2, "finished": 1}  # only rank 0 writes
    started = events_of(run_dir, "started")[0]
    assert started["world_size"] == 2 and started["total_steps"] == 4
    ckpt = history.latest_checkpoint(run_dir)
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert runs.run_status(run_dir) == "finished"
