"""Helpers shared by the training tests (tests/test_train*.py, test_runs.py, test_jobs.py): a small Alpaca file
and a RunConfig that trains the tiny model in a few seconds. Imported as `from test_train_kit import ...`."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from app import history
from app.config import RunConfig

WORDS = (
    "the capital of France is Paris . eat well sleep and exercise who are you I am a helpful assistant "
    "trained by TuneDesk give three tips for staying healthy abc 0123456789"
).split()


def write_alpaca(path: Path, n: int = 24, seed: int = 0) -> Path:
    """`n` Alpaca records of varied length (4-40 word answers) from words the tiny tokenizer knows."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        instruction = " ".join(rng.choices(WORDS, k=rng.randint(3, 10))) + f" {i}?"
        output = " ".join(rng.choices(WORDS, k=rng.randint(4, 40))) + "."
        records.append({"instruction": instruction, "input": "", "output": output})
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def tiny_config(model_dir: Path, data_path: Path, method: str = "lora", **changes) -> RunConfig:
    """3 optimizer steps of batch 2 x accumulation 2 on the tiny model; `changes` are dotted overrides."""
    base = {
        "model": {"name_or_path": str(model_dir)},
        "method": method,
        "quant": {"bits": 4 if method == "qlora" else None},
        "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "freeze": {"trainable_layers": 1},
        "data": {"path": str(data_path), "max_seq_len": 96, "val_size": 0.2},
        "train": {
            "max_steps": 3,
            "batch_size": 2,
            "grad_accum": 2,
            "learning_rate": 1.0e-2,
            "warmup_ratio": 0.0,
            "save_steps": 2,
            "gradient_checkpointing": False,
            "lr_scheduler": "constant",
        },
    }
    cfg = RunConfig.from_dict(base)
    return cfg.replace(**changes) if changes else cfg


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` (relative path -> sha256 of the bytes, or "dir"): equal before and
    after means nothing was written, replaced, added or removed."""
    import hashlib

    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def events_of(run_dir: Path, kind: str | None = None) -> list[dict]:
    events = history.load_events(run_dir)
    return [e for e in events if kind is None or e["type"] == kind]


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Tiny-model steps are microseconds of math; on a shared 2-core box, two OpenMP threads spin-waiting on each
    other made them ~5x slower. Tests import this fixture; threads.configure_threads leaves OMP_NUM_THREADS alone."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stop_when(run_dir, stop: threading.Event, step: int, kind: str = "log") -> threading.Thread:
    """Set `stop` (the UI's Stop) once the run has written a `kind` event ("log", or "eval": the evaluation) at
    `step` or later: a watcher thread on its events file."""

    def watch():
        offset = 0
        while not stop.is_set():
            events, offset = history.read_events(run_dir, offset)
            if any(e["type"] == kind and e["step"] >= step for e in events):
                stop.set()
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
