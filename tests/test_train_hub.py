"""`python -m app train` with a gated Hub model and a Hub dataset that are not on the machine yet, against the Hub
stand-in: both are downloaded (with progress, with the saved token) before the run starts, one step trains, the
run's config.yaml names the dataset's commit so a rerun reads the same records, and the token is in no file under
the runs folder and in none of the output."""

from __future__ import annotations

import subprocess
import sys

from hubstub import ALPACA_DATASET, GATED_MODEL, hub_fixture, subprocess_env  # noqa: F401  (the `hub` fixture)

from app import hub as core
from app.config import RunConfig
from app.paths import ROOT


def test_train_fetches_a_gated_model_and_a_hub_dataset_first_pins_the_commit_and_leaks_no_token(hub, tmp_path):
    core.login(hub.token)  # huggingface_hub's token store, which the subprocess shares through HF_HOME
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {{name_or_path: {GATED_MODEL}}}\nmethod: lora\n"
        "lora: {rank: 4, alpha: 8, target_modules: [q_proj, v_proj]}\n"
        f"data: {{path: {ALPACA_DATASET}, max_seq_len: 64, val_size: 0}}\n"
        "train: {max_steps: 1, batch_size: 2, grad_accum: 1, save_steps: 0, gradient_checkpointing: false}\n",
        encoding="utf-8",
    )
    runs_dir = tmp_path / "runs"
    env = subprocess_env(hub.url, tmp_path / "hf") | {"TUNEDESK_RUNS": str(runs_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "app", "train", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "downloading " + GATED_MODEL in done.stderr and "files" in done.stderr
    assert core.cached_state(GATED_MODEL) == "ready" and core.cached_state(ALPACA_DATASET, "dataset") == "ready"
    (run_dir,) = runs_dir.iterdir()
    saved = RunConfig.from_yaml(run_dir / "config.yaml")
    assert [(s.path, s.revision) for s in saved.data.datasets()] == [
        (ALPACA_DATASET, hub.repos[("dataset", ALPACA_DATASET)].sha)
    ]
    files = [p for p in runs_dir.rglob("*") if p.is_file()]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert [p for p in files if hub.token.encode() in p.read_bytes()] == []
    assert hub.token not in done.stdout + done.stderr


def test_a_config_error_is_said_before_anything_is_downloaded(hub, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(f"model: {{name_or_path: {GATED_MODEL}}}\ntrain: {{learning_rate: -1.0}}\n", encoding="utf-8")
    env = subprocess_env(hub.url, tmp_path / "hf") | {"TUNEDESK_RUNS": str(tmp_path / "runs")}
    done = subprocess.run(
        [sys.executable, "-m", "app", "train", str(config)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "train.learning_rate" in done.stderr and "Traceback" not in done.stderr
    assert hub.requests == [] and not (tmp_path / "runs").exists()
