"""Training under sharding (FSDP / ZeRO-3 through accelerate): what a sharded process changes, FSDP-QLoRA's storage
dtype, the adapter saved from gathered weights, what accelerate does with an FSDP launch on CPUs, and the printed
command on 2 CPU processes against one process of the same batch: its loss curve, Ctrl-C and --resume.

accelerate 1.16 does not run FSDP on CPU processes: AcceleratorState (accelerate/state.py) switches to
DistributedType.FSDP only for a GPU-type process group (MULTI_GPU, MULTI_XPU, ...), never MULTI_CPU, so an FSDP
launch on CPUs trains data-parallel with gloo; and FullyShardedDataParallelPlugin.__post_init__
(accelerate/utils/dataclasses.py) refuses sync_module_states (which cpu_ram_efficient_loading implies) with
"FSDP parameter initialization with `sync_module_states=True` is not supported on cpu". PyTorch itself shards on
CPU with gloo (FSDP1 and FSDP2). The canary test below fails the day accelerate shards on CPUs; then the 2-process
test can assert real sharding (pytorch_model_fsdp_0/ in each checkpoint)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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
import os
from accelerate import Accelerator
state = Accelerator(cpu=True).state
line = f"TYPE {state.distributed_type.value} {getattr(state, 'fsdp_plugin', None) is not None}\\n"
os.write(1, line.encode())  # one write per process: the two ranks' lines cannot interleave on the shared pipe
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


def test_the_runs_precision_wins_over_the_launch_file(tiny_model_dir, tmp_path, monkeypatch):
    """`accelerate launch` exports its file's mixed_precision; transformers takes it when the run sets neither bf16
    nor fp16, so an fp32 run (auto on CPUs) trained under bf16 autocast while its events said float32."""
    from app.trainer import training_arguments

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what a launch-command file for GPUs says
    cfg = tiny_config(tiny_model_dir, tmp_path / "d.json")
    assert training_arguments(cfg, tmp_path, "cpu", False, False).mixed_precision == "bf16"  # transformers' default
    assert train.run_precision(training_arguments(cfg, tmp_path, "cpu", False, False)).mixed_precision == "no"
    bf16 = cfg.replace(**{"train.precision": "bf16"})
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert train.run_precision(training_arguments(bf16, tmp_path, "cpu", False, False)).mixed_precision == "bf16"


# ---- the printed FSDP command against one process: the loss curve, Ctrl-C and --resume ------------------------
CURVE_TOLERANCE = 1.0e-5
"""Largest |loss difference| allowed at any step between 2 processes x batch 1 and 1 process x batch 2 (same seed,
data and order, accumulation 2, lr 1e-2, constant). Measured on the tiny model over 8 steps: the same effective
batch split differently in one process (batch 1 x accumulation 4) differs by at most 4.8e-7 (float summation
order, the only thing 2 processes change); a different seed by 1e-3 to 1.2e-1 per step; the 2-process launch by
4.8e-7 (7.1e-5 while the launch file's bf16 reached the fp32 run, see test_the_runs_precision_wins_...). 1e-5 is 20x
the summation noise, catches that bf16 leak, and is 10,000x below the seed spread."""
CURVE = {
    "train.group_by_length": False,  # one order of examples whatever the batch size
    "train.logging_steps": 1,
    "train.save_steps": 2,
    "train.learn_check": 0,  # rank 0's lone passes are off under sharding; off here too, for speed
    "train.eval_generations": 0,
    "train.report_to": [],
}


@dataclass
class CurveRuns:
    launched: Path
    """The 2-process run: Ctrl-C after a checkpoint, then resumed with --resume to `end`."""
    single: Path
    """One process, batch 2, `end` steps."""
    first: tuple[list[int], list[float]]
    """The launched run's loss curve when Ctrl-C stopped it."""
    stopped_at: int
    """The step of its latest checkpoint then (the one --resume continues from)."""
    end: int


def _printed_command(cfg_path: Path, port: int) -> list[str]:
    """What `python -m app launch-command CFG` prints, as argv, with the venv's accelerate and the GPU-only FSDP
    settings turned off on the command line (accelerate refuses sync_module_states on CPU, see the module
    docstring); a port of its own so another launch on this machine does not meet it at the default 29500."""
    out = subprocess.run(
        [sys.executable, "-m", "app", "launch-command", str(cfg_path), "--device-memory-gib", "24"],
        cwd=ROOT,
        env=_launch_env(cfg_path.parent),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = shlex.split(out.stdout.splitlines()[1])
    assert printed[:3] == ["accelerate", "launch", "--config_file"] and printed[-3:] == ["app", "train", str(cfg_path)]
    cpu = ["--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
    return [str(Path(sys.executable).parent / "accelerate"), "launch", *cpu, "--main_process_port", str(port)] + (
        printed[2:]
    )


def _ctrl_c_after_checkpoint(command: list[str], runs_dir: Path, step: int) -> Path:
    """Start the launch, press Ctrl-C (SIGINT to the launcher, which sends it on to each rank) once a checkpoint at
    `step` or later is on disk, and wait for the ranks to stop and save."""
    proc = subprocess.Popen(
        command, cwd=ROOT, env=_launch_env(runs_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline, run_dir = time.time() + 300, None
        while not (run_dir and any(e["step"] >= step for e in events_of(run_dir, "checkpoint"))):
            assert proc.poll() is None, f"the launch ended early: {proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, "no checkpoint in 300 s"
            run_dir = next(runs_dir.glob("*-launched"), None)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return run_dir


@pytest.fixture(scope="module")
def curve_runs(tiny_model_dir, tmp_path_factory) -> CurveRuns:
    """One 2-process launch shared by the curve and resume tests: the printed FSDP command with max_steps 400,
    Ctrl-C once checkpoint-4 exists, the same command with --resume to 3 steps past the stop, and one process
    trained to that step for reference (~80 s on 2 cores)."""
    root = tmp_path_factory.mktemp("fsdp-curve")
    runs_dir = root / "runs"
    data = write_alpaca(root / "alpaca.json", n=32)
    launched = tiny_config(tiny_model_dir, data, **CURVE, **{"train.batch_size": 1, "train.max_steps": 400})
    launched = launched.replace(**{"distributed.strategy": "fsdp", "distributed.num_processes": 2})
    cfg_path = root / "launched.yaml"
    launched.replace(**{"train.run_name": "launched"}).save(cfg_path)
    run_dir = _ctrl_c_after_checkpoint(_printed_command(cfg_path, 29533), runs_dir, 4)
    first = history.read(run_dir).series("loss")
    stopped_at = history.checkpoint_step(history.latest_checkpoint(run_dir))
    end = stopped_at + 3
    resume = _printed_command(cfg_path, 29534) + ["--resume", str(run_dir), "--max-steps", str(end)]
    out = subprocess.run(resume, cwd=ROOT, env=_launch_env(runs_dir), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    single = tiny_config(tiny_model_dir, data, **CURVE, **{"train.max_steps": end, "train.run_name": "single"})
    single.save(root / "single.yaml")
    out = subprocess.run(
        [sys.executable, "-m", "app", "train", str(root / "single.yaml")],
        cwd=ROOT,
        env=_launch_env(runs_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return CurveRuns(run_dir, next(runs_dir.glob("*-single")), first, stopped_at, end)


@pytest.mark.slow
def test_the_launch_loss_curve_matches_one_process_of_the_same_batch(curve_runs):
    """2 processes x batch 1 (the printed FSDP command; data-parallel on CPUs) against 1 process x batch 2: the
    same examples in each optimizer step, so the per-step losses agree to float summation noise (CURVE_TOLERANCE
    says how that was measured)."""
    steps, losses = curve_runs.first
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 4
    single = dict(zip(*history.read(curve_runs.single).series("loss"), strict=True))
    assert events_of(curve_runs.launched, "started")[0]["world_size"] == 2
    worst = max(abs(loss - single[step]) for step, loss in zip(steps, losses, strict=True))
    assert worst <= CURVE_TOLERANCE, (worst, losses, [single[s] for s in steps])


@pytest.mark.slow
def test_a_stopped_launch_resumes_from_its_checkpoint(curve_runs, tiny_model_dir):
    """Ctrl-C on the printed command stops both ranks at one step and saves; the same command with --resume
    continues from that checkpoint (not step 0) to max_steps, on the same curve as one process, and the adapter
    loads with plain PEFT."""
    from peft import PeftModel

    run_dir, at, end = curve_runs.launched, curve_runs.stopped_at, curve_runs.end
    (stopped,) = events_of(run_dir, "stopped")
    assert stopped["step"] == at  # the stop's own checkpoint: Resume continues exactly there
    (resumed,) = events_of(run_dir, "resumed")
    assert resumed["from_step"] == at and resumed["previous_status"] == "stopped"
    events = events_of(run_dir)
    after = [e["step"] for e in events[events.index(resumed) :] if e["type"] == "log"]
    assert after == list(range(at + 1, end + 1))
    steps, losses = history.read(run_dir).series("loss")
    assert steps == list(range(1, end + 1))
    single = dict(zip(*history.read(curve_runs.single).series("loss"), strict=True))
    worst = max(abs(loss - single[step]) for step, loss in zip(steps, losses, strict=True))
    assert worst <= CURVE_TOLERANCE, (worst, losses)  # optimizer state and data order came back with the checkpoint
    assert runs.run_status(run_dir) == "finished" and events_of(run_dir, "finished")[0]["step"] == end
    assert runs.final_artifact(run_dir).name == "adapter"
    cfg = runs.load_config(run_dir)
    base = modeling.load_model(cfg.model, device="cpu").model
    model = PeftModel.from_pretrained(base, run_dir / "adapter")
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # trained: LoRA B starts at zero
