"""`python -m app launch-command`: the accelerate config files and commands for several GPUs or machines, each
file checked with accelerate's own loader (accelerate.commands.config.config_args.load_config_from_file) and the
launch-argument code `accelerate launch` runs before it starts processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from app import launch
from app.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


def _cfg(tmp_path: Path, model: str, **distributed) -> tuple[RunConfig, Path]:
    cfg = RunConfig.from_dict(
        {
            "model": {"name_or_path": str(model)},
            "method": "qlora",
            "quant": {"bits": 4},
            "data": {"path": "assets/sample_data.json", "max_seq_len": 512},
            "train": {"gradient_checkpointing": True},
            "distributed": {"num_processes": 2, **distributed},
        }
    )
    path = tmp_path / "run.yaml"
    cfg.save(path)
    return cfg, path


def test_fsdp_file_for_two_gpus_is_what_accelerate_reads(tiny_model_dir, tmp_path):
    cfg, path = _cfg(tmp_path, tiny_model_dir, strategy="fsdp", cpu_offload=True)
    plan = launch.plan_launch(cfg, path, 24 * GIB)
    (machine,) = plan.machines
    assert plan.strategy == "fsdp" and plan.cpu_offload
    assert machine.command == f"accelerate launch --config_file {machine.config_file} -m app train {path}"
    assert Path(machine.config_file) == tmp_path / "run.accelerate.yaml"
    loaded = load_config_from_file(machine.config_file)
    assert loaded.distributed_type.value == "FSDP" and loaded.num_processes == 2 and not loaded.use_cpu
    fsdp = loaded.fsdp_config
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"  # the tiny model is a Llama
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and fsdp["fsdp_use_orig_params"] is True
    assert fsdp["fsdp_state_dict_type"] == "SHARDED_STATE_DICT" and fsdp["fsdp_offload_params"] is True
    assert fsdp["fsdp_cpu_ram_efficient_loading"] and fsdp["fsdp_sync_module_states"]
    assert fsdp["fsdp_activation_checkpointing"] is True  # train.gradient_checkpointing
    assert launch.check_file(machine.config_file) == []


def test_auto_takes_the_planners_strategy(tmp_path):
    cfg, path = _cfg(tmp_path, "llama-3.1-70b-instruct", strategy="auto")
    plan = launch.plan_launch(cfg, path, 24 * GIB, host_memory_bytes=128 * GIB)  # a workstation's RAM
    assert plan.strategy == "fsdp" and plan.plan.startswith("FSDP")  # 70B QLoRA on 2 x 24 GB: no whole copy fits
    assert yaml.safe_load(Path(plan.machines[0].config_file).read_text())["distributed_type"] == "FSDP"


def test_several_machines_get_a_file_and_command_each(tiny_model_dir, tmp_path):
    cfg, path = _cfg(tmp_path, tiny_model_dir, strategy="ddp", num_processes=4, num_machines=2)
    cfg = cfg.replace(**{"distributed.main_process_ip": "10.0.0.1", "distributed.main_process_port": 29555})
    cfg.save(path)
    out = tmp_path / "launch"
    plan = launch.plan_launch(cfg, path, 80 * GIB, out_dir=out)
    assert [m.machine_rank for m in plan.machines] == [0, 1]
    for m in plan.machines:
        loaded = load_config_from_file(m.config_file)
        assert loaded.machine_rank == m.machine_rank and loaded.num_machines == 2 and loaded.num_processes == 4
        assert loaded.main_process_ip == "10.0.0.1" and loaded.main_process_port == 29555
        assert loaded.distributed_type.value == "MULTI_GPU"
        assert Path(m.config_file).parent == out and m.command.endswith(f"-m app train {path}")
    assert any("same paths" in note for note in plan.notes)


def test_deepspeed_zero3_file_and_the_note_when_it_is_absent(tiny_model_dir, tmp_path):
    cfg, path = _cfg(tmp_path, tiny_model_dir, strategy="deepspeed_zero3", cpu_offload=True)
    plan = launch.plan_launch(cfg, path, 24 * GIB)
    loaded = load_config_from_file(plan.machines[0].config_file)
    ds = loaded.deepspeed_config
    assert loaded.distributed_type.value == "DEEPSPEED" and ds["zero_stage"] == 3
    assert ds["offload_param_device"] == "cpu" and ds["offload_optimizer_device"] == "cpu"
    assert ds["zero3_save_16bit_model"] is True  # the adapter is gathered whole at save
    assert ds["gradient_accumulation_steps"] == cfg.train.grad_accum
    installed = importlib.util.find_spec("deepspeed") is not None
    assert installed or any("DeepSpeed is not installed" in note for note in plan.notes)


def test_cpu_processes_run_through_torchrun(tiny_model_dir, tmp_path):
    cfg, path = _cfg(tmp_path, tiny_model_dir, strategy="fsdp")
    cfg = cfg.replace(**{"train.device": "cpu", "method": "lora", "quant.bits": None})
    cfg.save(path)
    plan = launch.plan_launch(cfg, path)
    (machine,) = plan.machines
    assert machine.command == f"torchrun --standalone --nproc_per_node 2 -m app train {path}"
    loaded = load_config_from_file(machine.config_file)
    assert loaded.distributed_type.value == "MULTI_CPU" and loaded.use_cpu
    assert any("mpirun" in note for note in plan.notes) and any("GPUs only" in note for note in plan.notes)


def test_one_process_needs_no_launcher(tiny_model_dir, tmp_path):
    cfg, path = _cfg(tmp_path, tiny_model_dir, num_processes=1)
    plan = launch.plan_launch(cfg, path)
    assert [m.command for m in plan.machines] == [f"python -m app train {path}"]
    assert not list(tmp_path.glob("*.accelerate*.yaml"))


def test_a_users_file_is_never_overwritten(tiny_model_dir, tmp_path):
    cfg, path = _cfg(tmp_path, tiny_model_dir, strategy="ddp")
    theirs = tmp_path / "run.accelerate.yaml"
    theirs.write_text("distributed_type: MULTI_GPU\n")
    with pytest.raises(launch.LaunchError, match="not written by launch-command"):
        launch.plan_launch(cfg, path, 24 * GIB)
    assert theirs.read_text() == "distributed_type: MULTI_GPU\n"
    theirs.unlink()
    launch.plan_launch(cfg, path, 24 * GIB)
    launch.plan_launch(cfg.replace(**{"distributed.strategy": "fsdp"}), path, 24 * GIB)  # its own file: rewritten
    assert load_config_from_file(str(theirs)).distributed_type.value == "FSDP"


def test_check_file_says_what_accelerate_refuses(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 2\nfsdp_confg: {}\n")
    (problem,) = launch.check_file(bad)
    assert "fsdp_confg" in problem and str(bad) in problem


def test_data_parallel_command_names_the_config():
    assert launch.data_parallel_command("runs/x/config.yaml", 1) == "python -m app train runs/x/config.yaml"
    assert launch.data_parallel_command("my cfg.yaml", 4, device="cuda") == (
        "accelerate launch --multi_gpu --num_processes 4 -m app train 'my cfg.yaml'"
    )
    assert launch.data_parallel_command("c.yaml", 2, device="cpu").startswith("torchrun ")


def _cli(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "app", "launch-command", *argv], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_cli_prints_plan_command_and_file(tiny_model_dir, tmp_path):
    _, path = _cfg(tmp_path, tiny_model_dir, strategy="fsdp")
    out = _cli(str(path), "--device-memory-gib", "24", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["strategy"] == "fsdp" and Path(result["machines"][0]["config_file"]).is_file()
    text = _cli(str(path), "--device-memory-gib", "24").stdout.splitlines()
    assert text[0].startswith("plan: ") and text[1].startswith("accelerate launch --config_file ")
    assert text[2] == f"  config file: {tmp_path / 'run.accelerate.yaml'}"


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed: {strategy: zero9, num_processes: 3, num_machines: 2}\n")
    out = _cli(str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "distributed.strategy" in out.stderr and "distributed.num_processes" in out.stderr
    assert not list(tmp_path.glob("*.accelerate*"))
    missing = _cli(str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nope.yaml" in missing.stderr
    gib = _cli(str(bad), "--device-memory-gib", "-1")
    assert gib.returncode == 2 and "Traceback" not in gib.stderr


def test_a_gpu_launch_planned_on_a_machine_without_one_says_so(tiny_model_dir, tmp_path):
    """train.device auto plans for the GPUs that will run the command; planned on this CPU-only machine, the notes
    say the command is for GPU machines and how to train here instead (train.device cpu: torchrun)."""
    from app import devices

    cfg, path = _cfg(tmp_path, tiny_model_dir, strategy="ddp")
    plan = launch.plan_launch(cfg, path, 24 * GIB)
    here_without_gpu = devices.detect().kind != devices.CUDA
    assert any("no CUDA GPU" in note for note in plan.notes) == here_without_gpu
    on_cpu = launch.plan_launch(cfg.replace(**{"train.device": "cpu", "method": "lora", "quant.bits": None}), path)
    assert not any("no CUDA GPU" in note for note in on_cpu.notes)


def test_auto_refuses_when_nothing_fits_and_writes_nothing(tmp_path, capsys):
    """70B QLoRA on 2 x 24 GiB GPUs of machines with 24 GiB of RAM: the offloaded shards do not fit the RAM, so the
    planner finds nothing; launch-command says why (exit 2) and writes no file."""
    from app import __main__ as cli

    _, path = _cfg(tmp_path, "llama-3.1-70b-instruct", strategy="auto")
    args = ["launch-command", str(path), "--device-memory-gib", "24", "--host-memory-gib", "24"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Nothing fits" in err and "CPU RAM per machine" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.accelerate*.yaml"))
