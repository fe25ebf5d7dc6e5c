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
