"""`python -m app launch-command CFG`: the accelerate config file(s) and the exact command that train a run config on
several GPUs or machines, with the plan (app.parallel) in one line.

    python -m app launch-command CFG [--device-memory-gib G] [--out DIR] [--json]

The config's `distributed` section decides: strategy (auto is app.parallel's pick for these GPUs), num_processes
(GPUs in all, accelerate's meaning), num_machines, machine_rank, main_process_ip/port. One file is written per
machine (its machine_rank differs); every machine runs

    accelerate launch --config_file FILE -m app train CFG

with CFG at the same path (the run folder appears on machine 0, whose rank 0 writes it). A file this command did
not write is never overwritten. Each file is checked with accelerate's own loader and launch-argument code before
it is shown, so a file accelerate would refuse is never printed.

CPU processes (train.device cpu): accelerate starts MULTI_CPU processes only through mpirun with a hostfile
(accelerate.utils.launch.prepare_simple_launcher_cmd_env runs one plain python otherwise), so the command is
torchrun (gloo); accelerate's FSDP and DeepSpeed need GPUs (accelerate.state.AcceleratorState turns FSDP on only
for a GPU-type process group), so CPU processes train data-parallel whatever the strategy.
Torch-free at import; transformers is imported only to name the model's decoder layer class.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app import parallel
from app.config import ConfigError, RunConfig

GIB = 1024**3
HEADER = "# written by `python -m app launch-command`; edit the run config and run it again rather than this file\n"
DISTRIBUTED_TYPES = {
    "ddp": "MULTI_GPU",
    "fsdp": "FSDP",
    "deepspeed_zero3": "DEEPSPEED",
    "deepspeed_zero2": "DEEPSPEED",
}
"""Resolved strategy -> accelerate's distributed_type."""
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16", "auto": "bf16"}
"""train.precision -> accelerate's mixed_precision on GPUs (auto: bf16, what app.modeling picks on a GPU that has it;
the Trainer passes the run's own choice to the Accelerator, which wins over the file)."""


class LaunchError(ValueError):
    """The launch cannot be planned or written; the message says what and what to do."""


@dataclass(frozen=True)
class MachineLaunch:
    machine_rank: int
    config_file: str | None
    """The accelerate config file this machine passes to --config_file (None: no file, e.g. one process)."""
    command: str


@dataclass(frozen=True)
class LaunchPlan:
    strategy: str
    """ddp | fsdp | deepspeed_zero3 | deepspeed_zero2 | single (one process) | cpu (torchrun, gloo)."""
    cpu_offload: bool
    plan: str
    """The plan in one line (app.parallel's why, or what the command does)."""
    fits: bool | None
    machines: list[MachineLaunch]
    notes: list[str] = field(default_factory=list)
    """What the user must know before running it (DeepSpeed not installed here, CPU processes, same paths)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the plan ------------------------------------------------------------------------------------------------
def on_cpu(cfg: RunConfig) -> bool:
    """Processes on CPUs: only when the config says so (auto means the GPUs of the machines that run it)."""
    return cfg.train.device == "cpu"


def resolve(
    cfg: RunConfig, device_memory_bytes: int | None = None, host_memory_bytes: int | None = None
) -> tuple[str, bool, str, bool | None]:
    """(strategy, cpu_offload, the plan in one line, fits) from app.parallel: auto is the planner's pick for these
    GPUs; a named strategy is estimated as named."""
    from app import devices
    from app.architecture import EstimateError

    d = cfg.distributed
    try:
        # the GPUs that will run the command, whether or not this machine has one (then their size is unknown
        # without --device-memory-gib)
        p = parallel.plan_config(cfg, device_memory_bytes, host_memory_bytes, device=devices.CUDA)
    except EstimateError as exc:
        if d.strategy == "auto":
            raise LaunchError(f"distributed.strategy auto: no plan without an estimate ({exc})") from None
        return d.strategy, d.cpu_offload, f"{d.strategy} as named (no estimate: {exc})", None
    return p.strategy, p.cpu_offload, p.why, p.fits


def decoder_layer_class(cfg: RunConfig) -> str | None:
    """The model's decoder block class name (FSDP wraps each one), from transformers' class for its model_type
    (`_no_split_modules`, what accelerate falls back to); None when it cannot be told (accelerate then asks the
    loaded model itself)."""
    from app.architecture import EstimateError, architecture_from

    try:
        model_type = architecture_from(cfg.model.name_or_path).model_type
    except EstimateError:
        return None
    try:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    except (KeyError, AttributeError, ImportError):
        return None
    blocks = list(getattr(cls, "_no_split_modules", None) or [])
    return blocks[0] if blocks else None


def accelerate_config(cfg: RunConfig, strategy: str, cpu_offload: bool, machine_rank: int = 0) -> dict[str, Any]:
    """The accelerate config (what `accelerate launch --config_file` reads) for one machine."""
    d, cpu = cfg.distributed, on_cpu(cfg)
    out: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_CPU" if cpu else DISTRIBUTED_TYPES[strategy],
        "num_processes": d.num_processes,
        "num_machines": d.num_machines,
        "machine_rank": machine_rank,
        "main_process_port": d.main_process_port,
        "mixed_precision": "no" if cpu else MIXED_PRECISION[cfg.train.precision],
        "use_cpu": cpu,
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "downcast_bf16": "no",
        "debug": False,
    }
    if d.num_machines > 1:
        out["main_process_ip"] = d.main_process_ip
    if cpu:
        return out
    if strategy == "fsdp":
        out["fsdp_config"] = fsdp_config(cfg, cpu_offload)
    elif strategy.startswith("deepspeed"):
        out["deepspeed_config"] = deepspeed_config(cfg, strategy, cpu_offload)
    return out


def fsdp_config(cfg: RunConfig, cpu_offload: bool) -> dict[str, Any]:
    """PyTorch FSDP (version 1, as the PEFT and bitsandbytes FSDP-QLoRA guides run it) for a transformers model
    with LoRA: each decoder block its own unit (transformers' Trainer adds PEFT's policy that wraps the LoRA layers
    apart), original parameters kept (frozen and trainable ones in one unit), sharded checkpoints (each rank
    writes its shard; app.train gathers the adapter on rank 0 at the end), weights read once on rank 0 and sent to
    the others (cpu_ram_efficient_loading + sync_module_states: a 70B is read once per machine, not per GPU)."""
    layer = decoder_layer_class(cfg)
    out: dict[str, Any] = {
        "fsdp_version": 1,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_sharding_strategy": "FULL_SHARD",
        "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_forward_prefetch": False,
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_offload_params": cpu_offload,
        "fsdp_use_orig_params": True,
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_sync_module_states": True,
        "fsdp_activation_checkpointing": bool(cfg.train.gradient_checkpointing),
    }
    if layer:
        out["fsdp_transformer_layer_cls_to_wrap"] = layer
    return out


def deepspeed_config(cfg: RunConfig, strategy: str, cpu_offload: bool) -> dict[str, Any]:
    """DeepSpeed ZeRO through accelerate: stage 3 shards weights, gradients and optimizer states (stage 2 the last
    two); offload moves optimizer states (and stage 3's weights) to CPU RAM; the 16-bit weights are gathered at save
    so the adapter is a plain PEFT folder."""
    stage = 3 if strategy == "deepspeed_zero3" else 2
    out: dict[str, Any] = {
        "zero_stage": stage,
        "offload_optimizer_device": "cpu" if cpu_offload else "none",
        "gradient_accumulation_steps": cfg.train.grad_accum,
        "gradient_clipping": cfg.train.max_grad_norm,
    }
    if stage == 3:
        out.update(
            offload_param_device="cpu" if cpu_offload else "none", zero3_init_flag=True, zero3_save_16bit_model=True
        )
    return out


# ---- the commands --------------------------------------------------------------------------------------------
def accelerate_command(config_file: str | Path, cfg_path: str | Path) -> str:
    return f"accelerate launch --config_file {shlex.quote(str(config_file))} -m app train {shlex.quote(str(cfg_path))}"


def data_parallel_command(config_path: str | Path, num_processes: int = 2, device: str = "auto") -> str:
    """The command that trains `config_path` data-parallel on `num_processes` GPUs (or CPU processes) of this
    machine, with no config file: `accelerate launch --multi_gpu` on GPUs, torchrun (gloo) on CPUs (accelerate's CPU
    launcher needs mpirun), plain `python -m app train` for one process."""
    from app import devices

    cfg = shlex.quote(str(config_path))
    if num_processes <= 1:
        return f"python -m app train {cfg}"
    if devices.kind(device) == devices.CUDA:
        return f"accelerate launch --multi_gpu --num_processes {num_processes} -m app train {cfg}"
    return f"torchrun --standalone --nproc_per_node {num_processes} -m app train {cfg}"


def torchrun_command(cfg: RunConfig, cfg_path: str | Path, machine_rank: int = 0) -> str:
    """CPU processes (gloo): torchrun starts them directly; several machines meet at machine 0's address."""
    d, quoted = cfg.distributed, shlex.quote(str(cfg_path))
    per = d.num_processes // max(d.num_machines, 1)
    if d.num_machines <= 1:
        return f"torchrun --standalone --nproc_per_node {per} -m app train {quoted}"
    return (
        f"torchrun --nnodes {d.num_machines} --node_rank {machine_rank} --nproc_per_node {per} "
        f"--master_addr {shlex.quote(d.main_process_ip)} --master_port {d.main_process_port} -m app train {quoted}"
    )


def config_files(cfg_path: str | Path, out_dir: str | Path | None, machines: int) -> list[Path]:
    """Where each machine's file goes: <CFG stem>.accelerate[.machineN].yaml next to CFG, or under `out_dir`, or
    under runs/launch/ when CFG's folder cannot be written."""
    import os

    from app import paths

    cfg_path = Path(cfg_path)
    folder = Path(out_dir) if out_dir else cfg_path.parent
    if out_dir is None and not os.access(folder, os.W_OK):
        folder = paths.runs_dir() / "launch"
    if machines <= 1:
        return [folder / f"{cfg_path.stem}.accelerate.yaml"]
    return [folder / f"{cfg_path.stem}.accelerate.machine{rank}.yaml" for rank in range(machines)]


def write_file(path: Path, data: dict[str, Any]) -> None:
    """Write an accelerate config; refuses (LaunchError) to replace a file this command did not write."""
    if path.exists() and not path.read_text(encoding="utf-8", errors="replace").startswith(HEADER):
        raise LaunchError(
            f"{path} exists and was not written by launch-command; move it, or pass --out DIR for another folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(HEADER + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def check_file(path: str | Path) -> list[str]:
    """What accelerate says of a config file: its own loader (unknown keys, distributed_type), then what `accelerate
    launch` does with it before starting processes (the launch arguments it fills from the file, and the environment
    it hands to each process). Empty when accelerate takes it."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import launch as accelerate_launch

    try:
        loaded = load_config_from_file(str(path))
        args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "app", "train", "CFG"])
        args, _, _ = _validate_launch_command(args)
        if loaded.distributed_type.value in ("FSDP", "MULTI_GPU"):
            accelerate_launch.prepare_multi_gpu_env(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError, AssertionError) as exc:
        return [f"{path}: accelerate refuses it: {exc}"]
    return []


def plan_launch(
    cfg: RunConfig,
    cfg_path: str | Path,
    device_memory_bytes: int | None = None,
    out_dir: str | Path | None = None,
    host_memory_bytes: int | None = None,
) -> LaunchPlan:
    """Plan, write and check the launch of `cfg` (saved at `cfg_path`): one file and command per machine."""
    problems = cfg.validate()
    if problems:
        raise ConfigError(problems, str(cfg_path))
    d = cfg.distributed
    if d.num_processes <= 1 and d.num_machines <= 1:
        command = f"python -m app train {shlex.quote(str(cfg_path))}"
        return LaunchPlan("single", False, "one process: no launcher needed", None, [MachineLaunch(0, None, command)])
    if on_cpu(cfg):
        return _cpu_launch(cfg, cfg_path, out_dir)
    strategy, offload, why, fits = resolve(cfg, device_memory_bytes, host_memory_bytes)
    if fits is False and d.strategy == "auto":  # the planner refuses: no file, no command for a run that cannot fit
        raise LaunchError(f"distributed.strategy auto: {why}")
    files = config_files(cfg_path, out_dir, d.num_machines)
    machines = []
    for rank, path in enumerate(files):
        write_file(path, accelerate_config(cfg, strategy, offload, rank))
        problems = check_file(path)
        if problems:
            raise LaunchError("\n".join(problems))
        machines.append(MachineLaunch(rank, str(path), accelerate_command(path, cfg_path)))
    notes = _notes(cfg, strategy)
    if fits is False:  # a named strategy: its command, as asked, with the estimate's warning first
        notes.insert(0, f"estimated not to fit as named ({strategy}); strategy auto picks one that does, if any")
    return LaunchPlan(strategy, offload, why, fits, machines, notes)


def _cpu_launch(cfg: RunConfig, cfg_path: str | Path, out_dir: str | Path | None) -> LaunchPlan:
    d = cfg.distributed
    files = config_files(cfg_path, out_dir, d.num_machines)
    machines = []
    for rank, path in enumerate(files):
        write_file(path, accelerate_config(cfg, "ddp", False, rank))
        problems = check_file(path)
        if problems:
            raise LaunchError("\n".join(problems))
        machines.append(MachineLaunch(rank, str(path), torchrun_command(cfg, cfg_path, rank)))
    notes = [
        "CPU processes train data-parallel with gloo, started by torchrun: accelerate starts MULTI_CPU processes "
        "only through mpirun with a hostfile (the file is for `accelerate launch --mpirun_hostfile HOSTS`)"
    ]
    if d.strategy in parallel.SHARDED or d.cpu_offload:
        notes.append(
            f"distributed.strategy {d.strategy}: accelerate runs FSDP and DeepSpeed on GPUs only, so CPU processes "
            "each hold the whole model (set train.device to auto on GPU machines to shard)"
        )
    plan = f"{d.num_processes} CPU processes over {d.num_machines} machine(s), data-parallel (gloo)"
    return LaunchPlan("cpu", False, plan, None, machines, notes + _notes(cfg, "cpu"))


def _notes(cfg: RunConfig, strategy: str) -> list[str]:
    notes = []
    if strategy != "cpu" and cfg.train.device == "auto":
        from app import devices

        if devices.detect().kind != devices.CUDA:
            notes.append(
                "this machine has no CUDA GPU: the command is for the GPU machines that will run it; to train here "
                "with CPU processes, set train.device to cpu"
            )
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        notes.append(
            "DeepSpeed is not installed in this environment: install it on every machine that runs the command "
            "(pip install deepspeed); accelerate refuses a DEEPSPEED config without it"
        )
    if cfg.distributed.num_machines > 1:
        notes.append(
            f"every machine needs the run config, data and model at the same paths, and port "
            f"{cfg.distributed.main_process_port} of machine 0 ({cfg.distributed.main_process_ip}) open to the "
            "others; the run folder is written on machine 0"
        )
    return notes


# ---- the command line ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config YAML (its distributed section: strategy, GPUs, machines)")
    parser.add_argument(
        "--device-memory-gib",
        type=float,
        help="memory of each GPU in GiB, to plan for GPUs this machine does not have (default: this machine's)",
    )
    parser.add_argument(
        "--host-memory-gib",
        type=float,
        help="each machine's RAM in GiB, which CPU-offloaded shards must fit (default: this machine's)",
    )
    parser.add_argument("--out", metavar="DIR", help="folder for the accelerate config files (default: next to CFG)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def main(args: argparse.Namespace) -> int:
    name = "python -m app launch-command"
    try:
        cfg = RunConfig.from_yaml(args.config)
        memory = None
        if args.device_memory_gib is not None:
            if not args.device_memory_gib > 0:
                raise LaunchError(f"--device-memory-gib {args.device_memory_gib}: give a GPU's memory in GiB, e.g. 24")
            memory = int(args.device_memory_gib * GIB)
        host = None
        if args.host_memory_gib is not None:
            if not args.host_memory_gib > 0:
                raise LaunchError(f"--host-memory-gib {args.host_memory_gib}: give a machine's RAM in GiB, e.g. 128")
            host = int(args.host_memory_gib * GIB)
        result = plan_launch(cfg, args.config, memory, args.out, host)
    except (ConfigError, LaunchError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{name}: {exc.filename or args.config}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_plan(result))
    return 0


def format_plan(result: LaunchPlan) -> str:
    lines = [f"plan: {result.plan}"]
    several = len(result.machines) > 1
    for m in result.machines:
        if several:
            lines.append(f"# machine {m.machine_rank}{' (main)' if m.machine_rank == 0 else ''}")
        lines.append(m.command)
        if m.config_file:
            lines.append(f"  config file: {m.config_file}")
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)
