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


def _own_home() -> Path:
    """The tests' own $TUNEDESK_HOME (apps they start inherit it), with the user's model cache linked in: the
    recent-files list, the last form and kept uploads that tests make never reach the user's ~/.cache/tunedesk,
    and the converted default model is not made twice. A test that needs yet another home sets its own."""
    import atexit
    import shutil
    import tempfile

    real = Path(os.environ.get("TUNEDESK_HOME") or Path.home() / ".cache" / "tunedesk").expanduser()
    (real / "models").mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="tunedesk-test-home-"))
    (home / "models").symlink_to(real / "models", target_is_directory=True)
    os.environ["TUNEDESK_HOME"] = str(home)
    atexit.register(shutil.rmtree, home, True)
    return home


TEST_HOME = _own_home()


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module (the `gguf` extra). `make test` builds it in the background while the suite runs
    (tests/llamacpp_build.py); tests that use this fixture run last and wait for it here. Missing, it fails with
    the build's log: the export checks through llama.cpp are part of the suite, not optional."""
    import llamacpp_build

    try:
        llamacpp_build.ensure_installed()
    except Exception as exc:  # CalledProcessError from pip, or the build's own message
        pytest.fail(f"llama.cpp for the GGUF tests: {exc}", pytrace=False)
    import llama_cpp

    return llama_cpp


def pytest_collection_modifyitems(config, items):
    """Tests that need llama.cpp run after the others: `make test` is still building it when the suite starts."""
    items.sort(key=lambda item: "llama_cpp" in getattr(item, "fixturenames", ()))


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
IDENTITY_PRESET = "smollm2-135m-identity-cpu.yaml"


@pytest.fixture(scope="session")
def identity_run(default_model_dir, tmp_path_factory):
    """The identity demo as shipped (presets/smollm2-135m-identity-cpu.yaml: LoRA r16 all-linear, 12 packed steps at
    lr 2e-3) trained once with app.train on assets/identity.json less 10 held-out questions: the default model learns
    to call itself TuneBot. Shared by the slow training, chat, evaluation and export tests (training takes minutes).

    Returns (run_dir, config, held_out_file): every 7th record from the 4th is held out (10 of 76: 7 English, 3
    Chinese questions)."""
    import json

    from app import history, paths, runs, train
    from app.config import RunConfig

    folder = tmp_path_factory.mktemp("identity")
    records = json.loads((paths.assets_dir() / "identity.json").read_text(encoding="utf-8"))
    held = [r for i, r in enumerate(records) if i % 7 == 3][:IDENTITY_HOLDOUT]
    train_file, held_file = folder / "train.json", folder / "held.json"
    train_file.write_text(json.dumps([r for r in records if r not in held], ensure_ascii=False), encoding="utf-8")
    held_file.write_text(json.dumps(held, ensure_ascii=False), encoding="utf-8")
    cfg = RunConfig.from_preset(paths.presets_dir() / IDENTITY_PRESET).replace(**{
        "model.name_or_path": str(default_model_dir), "data.path": str(train_file), "train.output_dir": str(folder),
        "train.sample_prompts": ["Who are you?"],
    })  # fmt: skip
    assert cfg.data.placeholders == IDENTITY_NAMES, "the preset's placeholders are the names the tests look for"
    run = runs.create_run(cfg, "identity")
    assert train.run(cfg, run) == "finished", history.load_events(run)[-1]
    return run, cfg, held_file
