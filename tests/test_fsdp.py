"""Training under sharding (FSDP / ZeRO-3 through accelerate): what a sharded process changes, FSDP-QLoRA's storage
dtype, the adapter saved from gathered weights, and what accelerate does with an FSDP launch on CPUs.

accelerate 1.16 does not run FSDP on CPU processes: AcceleratorState (accelerate/state.py) switches to
DistributedType.FSDP only for a GPU-type process group (MULTI_GPU, MULTI_XPU, ...), never MULTI_CPU, so an FSDP
launch on CPUs trains data-parallel with gloo; and FullyShardedDataParallelPlugin.__post_init__
(accelerate/utils/dataclasses.py) refuses sync_module_states (which cpu_ram_efficient_loading implies) with
"FSDP parameter initialization with `sync_module_states=True` is not supported on cpu". PyTorch itself shards on
CPU with gloo (FSDP1 and FSDP2). The canary test below fails the day accelerate shards on CPUs; then the 2-process
test can assert real sharding (pytorch_model_fsdp_0/ in each checkpoint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import history, launch, modeling, runs, train
from app.config import QuantConfig

ROOT = Path(__file__).resolve().parent.parent


def test_sharding_comes_from_the_launch_environment():
    assert train.sharding_from_env({"ACCELERATE_USE_FSDP": "true"}) == "fsdp"
    zero3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    assert train.sharding_from_env(zero3) == "deepspeed_zero3"
    assert train.sharding_from_env({**zero3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}) is None
    assert train.sharding_from_env({}) is None
    assert not train.Dist(0, 0, 1, "fsdp").sharded and train.Dist(1, 1, 2, "fsdp").sharded


def test_a_sharded_session_makes_no_rank_0_only_model_passes(tiny_model_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_model_dir, tmp_path / "d.json", **{"train.sample_every": 2, "train.eval_generations": 2})
    assert train.session_config(cfg, train.Dist(0, 0, 2)) is cfg
    sharded = train.session_config(cfg, train.Dist(0, 0, 2, "fsdp"))
    assert (sharded.train.learn_check, sharded.train.sample_every, sharded.train.eval_generations) == (0, 0, 0)
    assert sharded.train.gradient_checkpointing == cfg.train.gradient_checkpointing
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")  # FSDP checkpoints the blocks: not transformers too
    on = cfg.replace(**{"train.gradient_checkpointing": True})
    assert train.session_config(on, train.Dist(1, 1, 2, "fsdp")).train.gradient_checkpointing is False


def test_fsdp_qlora_stores_4bit_values_in_the_compute_dtype(tiny_model_dir, tmp_path):
    quant = QuantConfig(bits=4, compute_dtype="bfloat16")
    assert modeling.bnb_config(quant, "cpu", sharded=True).bnb_4bit_quant_storage == torch.bfloat16
    assert modeling.bnb_config(quant, "cpu").bnb_4bit_quant_storage == torch.uint8  # bitsandbytes' default
    cfg = tiny_config(tiny_model_dir, tmp_path / "d.json", "qlora", **{"quant.compute_dtype": "bfloat16"})
    loaded = modeling.load_model(cfg.model, cfg.quant, device="cpu", sharded=True)
    model = modeling.prepare_for_method(loaded, cfg, sharded=True)
    base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert base == {torch.bfloat16}  # one dtype for FSDP to flatten: no k-bit fp32 upcast of norms and embeddings
    kinds = {p.__class__.__name__ for p in model.parameters()}
    assert "Params4bit" in kinds


def test_the_adapter_is_saved_from_the_gathered_weights(tiny_model_dir, tmp_path):
    """Under FSDP each rank's modules hold a shard; the adapter is written from the full state dict gathered on
    rank 0, and it is the same PEFT folder a single-device run writes."""
    from peft import PeftModel

    cfg = tiny_config(tiny_model_dir, tmp_path / "d.json")
    loaded = modeling.load_model(cfg.model, device="cpu")
    model = modeling.prepare_for_method(loaded, cfg)
    whole = {k: (torch.full_like(v, 0.5) if "lora_" in k else v) for k, v in model.state_dict().items()}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    folder = train.save_artifact(model, loaded.tokenizer, run_dir, "lora", state_dict=whole)
    assert folder == run_dir / runs.ADAPTER and (folder / "adapter_config.json").is_file()
    base = modeling.load_model(cfg.model, device="cpu").model
    reloaded = PeftModel.from_pretrained(base, folder)
    lora = {n: p for n, p in reloaded.named_parameters() if "lora_" in n}
    assert lora and all(torch.all(p == 0.5) for p in lora.values())  # the gathered values, not the module's own


def _launch_env(runs_dir: Path) -> dict:
    return {**os.environ, "TUNEDESK_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


CANARY = """
from accelerate import Accelerator
state = Accelerator(cpu=True).state
print("TYPE", state.distributed_type.value, getattr(state, "fsdp_plugin", None) is not None)
"""


@pytest.mark.slow
def test_canary_accelerate_runs_an_fsdp_launch_on_cpus_data_parallel(tmp_path):
    """The day this fails, accelerate shards on CPUs: make the 2-process test below assert real FSDP."""
    script = tmp_path / "canary.py"
    script.write_text(CANARY)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**_launch_env(tmp_path), "ACCELERATE_USE_FSDP": "true", "FSDP_SYNC_MODULE_STATES": "false"}
    env["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    out = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("TYPE MULTI_CPU False") == 2


@pytest.mark.slow
def test_fsdp_launch_on_two_cpu_processes_writes_one_run(tiny_model_dir, runs_tmp, tmp_path):
    """The printed FSDP command, on 2 CPU processes: accelerate trains it data-parallel (gloo; see the module
    docstring), through the sharded path of app.train (the launch says FSDP: no rank-0-only passes, weights gathered
    for the adapter), and it writes the run folder, events and a plain PEFT adapter like a single-device run."""
    from peft import PeftModel

    data = write_alpaca(tmp_path / "alpaca.json", n=32)
    cfg = tiny_config(tiny_model_dir, data, **{"train.max_steps": 3, "train.run_name": "fsdp"})
    cfg = cfg.replace(**{"distributed.strategy": "fsdp", "distributed.num_processes": 2})
    cfg_path = tmp_path / "fsdp.yaml"
    cfg.save(cfg_path)
    (machine,) = launch.plan_launch(cfg, cfg_path, 24 * 1024**3).machines
    file = Path(machine.config_file)
    data_ = yaml.safe_load(file.read_text())
    data_["main_process_port"] = 29531
    data_["fsdp_config"].update(fsdp_cpu_ram_efficient_loading=False, fsdp_sync_module_states=False)  # GPU-only
    file.write_text(launch.HEADER + yaml.safe_dump(data_))
    command = machine.command.split()
    command[0] = str(Path(sys.executable).parent / "accelerate")
    out = subprocess.run(command, cwd=ROOT, env=_launch_env(runs_tmp), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = runs_tmp.iterdir()
    counts = {k: len(events_of(run_dir, k)) for k in ("started", "log", "checkpoint", "finished")}
    assert counts == {"started": 1, "log": 3, "checkpoint": 2, "finished": 1}  # only rank 0 writes
    assert events_of(run_dir, "started")[0]["world_size"] == 2
    assert not (run_dir / "learned_base.json").exists()  # rank 0's lone model passes are off under sharding
    assert runs.run_status(run_dir) == "finished" and runs.final_artifact(run_dir).name == "adapter"
    assert history.latest_checkpoint(run_dir) is not None
    base = modeling.load_model(cfg.model, device="cpu").model
    PeftModel.from_pretrained(base, run_dir / "adapter")  # plain PEFT loads it
