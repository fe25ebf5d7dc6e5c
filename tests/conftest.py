from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests never reach a hub; the default model comes from the converted cache that `make test` prepares.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama (hidden 64) + BPE tokenizer with a ChatML template, saved with save_pretrained."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real Alpaca data); tests using it skip where it is absent."""
    folder = SHARED / "data"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (real Alpaca data lives beside the checkout)")
    return folder


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The converted embedded default model (SmolLM2-135M-Instruct); `make test` fetches it first."""
    from app.modeling import ensure_default_model

    return ensure_default_model()


@pytest.fixture()
def runs_tmp(tmp_path, monkeypatch) -> Path:
    """An isolated runs folder for tests that train."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("TUNEDESK_RUNS", str(folder))
    return folder


IDENTITY_NAMES = {"name": "TuneBot", "author": "the TuneDesk team"}
IDENTITY_HOLDOUT = 10


@pytest.fixture(scope="session")
def identity_run(shared_data, default_model_dir, tmp_path_factory):
    """LoRA (r16, all-linear) trained once with app.train on 81 of identity.json's 91 records: the default model
    learns to call itself TuneBot. Shared by the slow training and evaluation tests (training takes minutes).

    Returns (run_dir, config, held_out_file): every 9th record is held out (10: 2 English, 8 Chinese questions,
    as in the whole file). 12 steps x 8 examples (~1.2 epochs) at lr 3e-3; a 135M model in fp32 takes ~12 s a
    step on 2 CPU cores, so the 60-120 steps one would pick on a GPU do not fit a test."""
    import json

    from app import history, runs, train
    from app.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig

    folder = tmp_path_factory.mktemp("identity")
    records = json.loads((shared_data / "identity.json").read_text(encoding="utf-8"))
    held = [r for i, r in enumerate(records) if i % 9 == 4][:IDENTITY_HOLDOUT]
    train_file, held_file = folder / "train.json", folder / "held.json"
    train_file.write_text(json.dumps([r for r in records if r not in held], ensure_ascii=False), encoding="utf-8")
    held_file.write_text(json.dumps(held, ensure_ascii=False), encoding="utf-8")
    cfg = RunConfig(
        model=ModelConfig(name_or_path=str(default_model_dir)),
        lora=LoraConfig(rank=16, alpha=32, dropout=0.0, target_modules="all-linear"),
        # 160 tokens keeps the name and author of every answer (the longest Chinese answers are cut at the end)
        data=DataConfig(path=str(train_file), placeholders=IDENTITY_NAMES, max_seq_len=160, val_size=0.05),
        train=TrainConfig(
            max_steps=12,
            batch_size=8,
            grad_accum=1,
            learning_rate=3.0e-3,
            warmup_ratio=0.05,
            save_steps=0,
            precision="fp32",
            gradient_checkpointing=False,
            sample_every=12,
            sample_prompts=["Who are you?"],
            output_dir=str(folder),
        ),
    )
    run = runs.create_run(cfg, "identity")
    assert train.run(cfg, run) == "finished", history.load_events(run)[-1]
    return run, cfg, held_file
