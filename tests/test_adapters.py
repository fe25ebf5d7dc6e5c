"""What an adapter folder is, read from real PEFT adapters saved on the tiny Llama: a run's adapter/, a checkpoint,
an untouched initialisation, a pickle-only copy, a full model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from ui_ctx import make_adapter, make_run

from app import adapters, history, runs
from app.adapters import AdapterError


@pytest.fixture
def run(tiny_model_dir, runs_tmp) -> Path:
    """A finished run whose adapter/ was trained on the tiny model, plus a checkpoint-3 copy of it."""
    run_dir = make_run(tiny_model_dir)
    ckpt = run_dir / history.CHECKPOINTS / "checkpoint-3"
    shutil.copytree(run_dir / runs.ADAPTER, ckpt)
    (ckpt / "trainer_state.json").write_text("{}")
    return run_dir


def untouched(model_dir: Path, folder: Path, safe: bool = True) -> Path:
    """An adapter as PEFT initialises it (lora_B = 0): loading it changes nothing."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], use_dora=True))
    peft_model.save_pretrained(str(folder), safe_serialization=safe)
    return folder


def test_run_adapter_and_checkpoint_resolve_to_the_loadable_folder(run, tiny_model_dir):
    ckpt = run / history.CHECKPOINTS / "checkpoint-3"
    assert adapters.resolve_source(run) == ("adapter", run / runs.ADAPTER)
    assert adapters.resolve_source(run / runs.ADAPTER) == ("adapter", run / runs.ADAPTER)
    assert adapters.resolve_source(ckpt) == ("adapter", ckpt)
    assert adapters.resolve_source(tiny_model_dir) == ("model", Path(tiny_model_dir))
    shutil.rmtree(run / runs.ADAPTER)  # stopped before the final save: the newest checkpoint
    assert adapters.resolve_source(run) == ("adapter", ckpt)
    with pytest.raises(AdapterError, match="not found or not a folder"):
        adapters.resolve_source(run / "missing")


def test_facts_of_a_trained_run_adapter(run, tiny_model_dir):
    info = adapters.describe(run)
    assert info.path == run / runs.ADAPTER and info.run_dir == run
    assert info.name == run.name
    assert info.base == str(tiny_model_dir)  # the run's config.yaml names it
    assert info.method == "lora"
    assert (info.rank, info.alpha, info.targets) == (4, 8, ("q_proj", "v_proj"))
    assert info.trained is True
    ckpt = adapters.describe(run / history.CHECKPOINTS / "checkpoint-3")
    assert ckpt.name == f"{run.name}/checkpoint-3" and ckpt.run_dir == run and ckpt.trained


def test_an_untouched_initialisation_is_not_trained(tmp_path, tiny_model_dir):
    info = adapters.describe(untouched(tiny_model_dir, tmp_path / "init"))
    assert info.trained is False
    assert info.method == "dora" and info.rank == 2 and info.targets == ("q_proj",)
    assert info.run_dir is None and info.name == "init"
    assert info.base == str(tiny_model_dir)  # adapter_config.json's base_model_name_or_path
    assert adapters.infer_base(info.path) == str(tiny_model_dir)
    trained = adapters.describe(make_adapter(tiny_model_dir, tmp_path / "trained"))
    assert trained.trained is True


def test_weights_check_refuses_pickles_and_missing_weights(tmp_path, tiny_model_dir):
    pickled = untouched(tiny_model_dir, tmp_path / "pickled", safe=False)
    with pytest.raises(AdapterError, match="allow_pickle=True"):
        adapters.check_adapter_files(pickled)
    assert adapters.check_adapter_files(pickled, allow_pickle=True) == pickled / adapters.PICKLE_WEIGHTS
    assert adapters.is_trained(pickled, allow_pickle=True) is False
    (pickled / adapters.PICKLE_WEIGHTS).unlink()
    with pytest.raises(AdapterError, match="weights are missing"):
        adapters.check_adapter_files(pickled)
    with pytest.raises(AdapterError, match="full model folder"):
        adapters.describe(tiny_model_dir)


def test_an_adapter_fits_its_base_and_not_another(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    folder = make_adapter(tiny_model_dir, tmp_path / "a")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert adapters.check_adapter_fits(folder, base, str(tiny_model_dir)) == []
    cfg = LlamaConfig(**{**base.config.to_dict(), "hidden_size": 32, "intermediate_size": 64})
    torch.manual_seed(0)
    with pytest.raises(AdapterError, match="does not fit the base model other.*input features"):
        adapters.check_adapter_fits(folder, LlamaForCausalLM(cfg), "other")


def test_display_names_base_of_and_candidates(run, tmp_path):
    ckpt = run / history.CHECKPOINTS / "checkpoint-3"
    assert adapters.display_name(run / runs.ADAPTER) == run.name
    assert adapters.display_name(ckpt) == f"{run.name}/checkpoint-3"
    assert adapters.display_name(tmp_path / "loose") == "loose"
    assert adapters.run_dir_of(ckpt) == run and adapters.run_dir_of(tmp_path) is None
    assert adapters.base_of(ckpt) == adapters.base_of(run / runs.ADAPTER) is not None
    assert adapters.base_of(tmp_path) is None
    found = dict(adapters.candidates(run.parent))
    assert found[f"{run.name} (adapter)"] == str(run / runs.ADAPTER)
    assert found[f"{run.name}/checkpoint-3"] == str(ckpt)
