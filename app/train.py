"""The training recipe: preflight -> build -> fit -> save, shared by the UI's background thread, the CLI and DDP.

    run(config, run_dir, stop)         never raises for training errors; returns finished | stopped | failed
    python -m app train CONFIG.yaml    the same, headless, with a progress bar (app.train_cli)
    torchrun --nproc_per_node 2 -m app train CONFIG.yaml     data-parallel (accelerate launch on GPUs)

It is a Hugging Face `Trainer` (standard resumable checkpoints, gradient accumulation, schedulers, DDP) with
three changes that make it about 2x faster per useful token than a plain Trainer+PEFT script:
- batches come from `app.batching`: length-grouped, or packed with per-example position_ids (no padding);
- logits and loss are computed only where the shifted label is not -100: a forward pre-hook on the output layer
  gathers those hidden states, so the batch x seq x vocab logits tensor is never made
  (4 x 256 tokens x 49,152 vocab x 4 B = 201 MB for SmolLM2, ~60% of it prompt positions that carry no loss);
- a `TrainerCallback` writes events.jsonl (the UI's one channel) and honours Stop at the next optimizer step.
The Trainer is `app.trainer`, the callback and samples `app.train_events`, a failure's message
`app.train_failures`, CPU threads `app.threads`. A preference objective (dpo, orpo, simpo, kto: app.objectives)
trains with TRL's trainer instead (`app.preference_train`), through the same run, events, Stop, Resume and saving.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app import libs
from app.batching import EpochSampler
from app.config import RunConfig

libs.load()  # transformers, whole, under the lock another thread's first use waits on (see app/libs.py)

from transformers.trainer_callback import EarlyStoppingCallback, PrinterCallback  # noqa: E402

from app import (  # noqa: E402
    accel,
    devices,
    history,
    learned,
    methods,
    modeling,
    objectives,
    preference_train,
    runs,
    tracking,
)
from app.objectives import LabelGather  # noqa: E402
from app.threads import configure_threads  # noqa: E402
from app.train_events import EventsCallback, peak_memory  # noqa: E402
from app.train_failures import TrainError, record_failure  # noqa: E402
from app.trainer import TuneTrainer, training_arguments  # noqa: E402

log = logging.getLogger("tunedesk.train")


# ---- checks before anything is loaded ------------------------------------------------------------------------
def preflight(cfg: RunConfig) -> list[str]:
    """Every problem that makes the run impossible, found without loading anything (config, device, precision).
    Options this machine cannot run but has a stand-in for (flash attention, Liger, paged optimizers) are not
    problems: app.accel plans the stand-in and build() logs why."""
    problems = cfg.validate() + tracking.problems(cfg)
    try:
        on_cpu = devices.resolve(cfg.train.device) == devices.CPU
    except devices.DeviceError as exc:
        problems.append(f"train.device: {exc}")
        on_cpu = True
    if on_cpu and cfg.train.precision == "fp16":
        problems.append("train.precision: fp16 training needs a CUDA GPU; on the CPU use auto (float32)")
    found = (_model_problem(cfg.model.name_or_path), *_data_problems(cfg), _output_problem(cfg))
    found += (_consent_problem(cfg),)
    return problems + [p for p in found if p]


def _consent_problem(cfg: RunConfig) -> str | None:
    """Trust remote code without the user's consent (app.consent) is refused before a run folder exists, so a
    Resume of a run whose config.yaml has it on asks again instead of failing inside the run."""
    if not cfg.model.trust_remote_code:
        return None
    try:
        path = modeling.resolve_model(cfg.model.name_or_path)
    except modeling.ModelError:
        return None  # _model_problem says why
    try:
        modeling.require_consent(path, True)
    except modeling.ModelError as exc:
        return f"model.trust_remote_code: {exc}"
    return None


def _model_problem(name: str) -> str | None:
    """Why model.name_or_path cannot be found, asked of modeling.resolve_model without loading anything; the
    default model and an existing .gguf file pass (they are fetched or converted when the run loads them)."""
    name = name.strip()
    path = Path(name).expanduser()
    if not name or name in modeling.DEFAULT_ALIASES or (path.suffix.lower() == ".gguf" and path.is_file()):
        return None  # empty: validate() already said so
    try:
        modeling.resolve_model(name)
    except modeling.ModelError as exc:
        return f"model.name_or_path: {exc}"
    return None


def _data_problems(cfg: RunConfig) -> list[str]:
    """Datasets (data.path and every data.sources entry) that are neither a file or folder where app.data looks
    for them nor a Hub dataset id."""
    from app.data import source_problems

    if not cfg.data.path.strip():
        return ["data.path: empty; choose a dataset file (e.g. assets/sample_data.json)"]
    return source_problems(cfg.data)


def _output_problem(cfg: RunConfig) -> str | None:
    """train.output_dir that cannot hold run folders: a file, or a folder this user may not write to."""
    from app import paths

    root = paths.runs_dir(cfg.train.output_dir)
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is None or (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        return None
    what = "is a file" if not existing.is_dir() else "is a folder you may not write to"
    return f"train.output_dir: {existing} {what}, so no run folder can be made under {root}; choose another folder"


# ---- setup ---------------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    sharding: str | None = None
    """"fsdp" or "deepspeed_zero3" when `accelerate launch` shards the model over the processes (the launch's
    environment says so: app.launch writes the file it reads); None for one process or data-parallel."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.sharding is not None and self.world > 1


def dist_info() -> Dist:
    """This process's place in a torchrun / accelerate launch (rank 0 of 1 when launched plainly)."""
    env = os.environ
    dist = Dist(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))
    dist.sharding = sharding_from_env(env)
    return dist


def sharding_from_env(env: Any) -> str | None:
    """What `accelerate launch` set for this process: ACCELERATE_USE_FSDP, or ACCELERATE_USE_DEEPSPEED with ZeRO
    stage 3 (stage 2 keeps whole weights on every GPU, so the model loads and saves as in data-parallel)."""
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed_zero3" if env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else None
    return None


def session_config(cfg: RunConfig, dist: Dist) -> RunConfig:
    """The config a sharded process trains with: every forward of a sharded model is collective (each rank holds a
    shard that the others gather), so the model passes rank 0 makes alone (the did-it-learn check, samples, the
    evaluation's generated answers) would leave the other ranks waiting; they are off under sharding. With FSDP's
    own activation checkpointing (the launch file's fsdp_activation_checkpointing) transformers' is off too: one
    of them, not both (transformers' Trainer refuses both)."""
    if not dist.sharded:
        return cfg
    changes: dict[str, Any] = {"train.learn_check": 0, "train.sample_every": 0, "train.eval_generations": 0}
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        changes["train.gradient_checkpointing"] = False
    if dist.main:
        log.info(
            "sharded over %d processes (%s): no did-it-learn check, samples or generated answers",
            dist.world,
            dist.sharding,
        )
    return cfg.replace(**changes)


def load_for_training(cfg: RunConfig, device: str, sharded: bool = False) -> modeling.LoadedModel:
    """The base model in the dtype training wants. fp16 full/freeze training keeps fp32 master weights (AMP with
    loss scaling cannot step fp16 parameters); LoRA keeps an fp16 base with fp32 adapters. `sharded`: FSDP or
    ZeRO-3 places and shards the weights (app.modeling.load_model)."""
    precision = cfg.train.precision
    dtype = modeling.resolve_dtype(precision, device)
    method = methods.of(cfg)
    if dtype == torch.float16 and method.trains_base:
        precision = "fp32"
    quant = cfg.quant if method.quantized else None
    return modeling.load_model(
        cfg.model, quant, device=device, precision=precision, progress=lambda f, m: None, sharded=sharded
    )


def memory_estimate(cfg: RunConfig, device: str) -> dict | None:
    """app.memory's estimate for this run as a dict (None when it cannot estimate this model)."""
    try:
        from app import memory

        return memory.estimate_config(cfg, device).to_dict()
    except Exception as exc:  # an estimate is a nicety (e.g. an architecture it does not know); never fail a run
        log.debug("memory estimate unavailable: %s", exc)
        return None


# ---- saving ---------------------------------------------------------------------------------------------
def save_artifact(model: Any, tokenizer: Any, run_dir: Path, method: str, state_dict: dict | None = None) -> Path:
    """adapter/ (LoRA/QLoRA: adapter_config.json + adapter_model.safetensors) or model/ (full/freeze, all
    weights), with the tokenizer. Written to a temp folder and renamed, so it is never half-written. `state_dict`:
    the whole weights gathered from a sharded model (full_state_dict()), which its own modules only hold a shard of."""
    name = runs.ADAPTER if methods.get(method).saves == "adapter" else runs.MODEL
    final = run_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=run_dir))
    try:
        target = modeling.base_model(model) if name == runs.MODEL else getattr(model, "module", model)
        if name == runs.MODEL:
            target.config.use_cache = True  # the saved model is for inference
        if state_dict is not None and name == runs.MODEL and target is not getattr(model, "module", model):
            state_dict = _base_keys(state_dict)
        target.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if final.exists():
            old = run_dir / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.replace(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _base_keys(state_dict: dict) -> dict:
    """A PeftModel's full state dict keyed as its base model's (full/freeze never wrap one, so this is a safeguard)."""
    prefix = "base_model.model."
    return {k.removeprefix(prefix): v for k, v in state_dict.items()}


def full_state_dict(trainer: Any, dist: Dist) -> dict | None:
    """The whole weights of a sharded model, gathered on rank 0 (a collective: every rank calls it). transformers'
    Trainer.save_model does the same under FSDP: accelerate's get_state_dict unshards (FSDP's FULL_STATE_DICT, rank 0
    only, offloaded to CPU) or, under ZeRO-3, consolidates the 16-bit weights. None when not sharded."""
    if not dist.sharded:
        return None
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return state if dist.main else None


# ---- the run ---------------------------------------------------------------------------------------------
def resume_point(run_dir: Path, previous_status: str = "interrupted") -> tuple[Path | None, dict]:
    """The checkpoint to continue from and facts for the `resumed` event. Whether the run may be resumed at all
    (not finished, not training) is runs.claim()'s decision, made before anything is written."""
    found = history.read(run_dir)
    ckpt = found.checkpoints[-1] if found.checkpoints else None
    step = history.checkpoint_step(ckpt) if ckpt else 0
    elapsed = [p.elapsed_s or 0 for p in found.until(step).logs]
    return ckpt, {
        "from_step": step,
        "checkpoint": str(ckpt) if ckpt else None,
        "previous_status": previous_status,
        "elapsed_before": elapsed[-1] if elapsed else 0.0,
    }


def run(
    config: RunConfig,
    run_dir: Path,
    stop: threading.Event | None = None,
    resume: bool = False,
    progress: bool = False,
    claim: runs.Claim | None = None,
) -> str:
    """Train `config` into `run_dir`; returns "finished", "stopped" or "failed". Never raises for training
    errors: they end as a `failed` event with a message, and the traceback in error.log.

    `claim` is the caller's runs.claim() of the folder (the UI takes it before its thread starts); without one,
    rank 0 takes it here, and a run that cannot be taken (training elsewhere, or a finished run to resume) raises
    runs.RunBusy with nothing written. The claim is released when this returns."""
    run_dir = Path(run_dir)
    dist = dist_info()
    if claim is None and dist.main:
        claim = runs.claim(run_dir, resume=resume)
    try:
        previous = claim.previous_status if claim is not None else "interrupted"
        return _run_claimed(config, run_dir, stop or threading.Event(), resume, progress, dist, previous)
    finally:
        if claim is not None:
            claim.release()


def _run_claimed(
    config: RunConfig, run_dir: Path, stop: threading.Event, resume: bool, progress: bool, dist: Dist, previous: str
) -> str:
    device = "cpu"
    step: int | None = None
    state: dict[str, Any] = {}
    try:
        resume_from = resume_point(run_dir, previous) if resume else None
        problems = preflight(config)
        if problems:
            raise TrainError("the config cannot run:\n  - " + "\n  - ".join(problems))
        device = devices.resolve(config.train.device)
        status = _fit(config, run_dir, stop, resume_from, progress, dist, device, state)
    except Exception as exc:
        step = state.get("step")
        if dist.main:
            status = record_failure(run_dir, exc, config, device, step)
        else:
            log.exception("rank %d: training failed", dist.rank)
            status = "failed"
    finally:
        state.clear()
        gc.collect()
        if devices.kind(device) == devices.CUDA:
            torch.cuda.empty_cache()
    return status


@dataclass
class Session:
    """Everything one training session holds; `build()` makes it, `_fit()` trains and saves it."""

    trainer: Any
    """TuneTrainer (sft), or app.preference_train's TRL trainer (both app.trainer.RunTrainer)."""
    callback: EventsCallback
    loaded: modeling.LoadedModel
    gather: LabelGather | None
    """sft's output-layer hook (removed after training); None for a preference objective."""
    checkpoint: Path | None


def build(
    cfg: RunConfig,
    run_dir: Path,
    stop: threading.Event,
    device: str = "cpu",
    dist: Dist | None = None,
    resume_from: tuple[Path | None, dict] | None = None,
    progress: bool = False,
) -> Session | None:
    """Tokenize the data, load and prepare the model, and make the Trainer; None when Stop came first.
    `resume_from` is resume_point()'s (checkpoint, facts) when continuing a run."""
    dist = dist or Dist()
    ckpt, started = resume_from or (None, {})
    configure_threads(device, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()
    if not progress:
        hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars would go to the app's log
    set_seed(cfg.train.seed)
    tokenizer = modeling.load_tokenizer(modeling.resolve_model(cfg.model.name_or_path), cfg.model.trust_remote_code)
    objective = objectives.of(cfg)
    data = objective.prepare(cfg, tokenizer)
    if stop.is_set():
        return None
    loaded = load_for_training(cfg, device, dist.sharded)
    plan = accel.plan(cfg, device, loaded.dtype)  # what modeling and the trainer use of the GPU options asked for
    for message in plan.messages if dist.main else ():
        log.warning("%s", message)
    model = modeling.prepare_for_method(loaded, cfg, dist.sharded)
    trainable, total = modeling.count_params(model)
    facts = preference_train.session_facts(data.facts) if objective.preference else data.facts
    started.update(
        method=cfg.method,
        objective=objective.name,
        model=loaded.path,
        device=device,
        dtype=loaded.dtype,
        trainable_params=trainable,
        total_params=total,
        world_size=dist.world,
        threads=torch.get_num_threads(),
        memory=memory_estimate(plan.apply(cfg), device),
        message="; ".join(plan.messages) or None,  # the GPU options that fell back, and why: shown in the run's log
        **facts,
    )
    callback = EventsCallback(run_dir, cfg, stop, started, dist.main)
    callbacks = [callback, *_evaluation_callbacks(cfg, data.val is not None)]
    trainer, gather = _trainer(cfg, objective, model, loaded.tokenizer, data, callbacks, (run_dir, device, progress))
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; events.jsonl has them
    callback.trainer = trainer
    tracking.attach(trainer, cfg, run_dir)
    return Session(trainer, callback, loaded, gather, ckpt)


def _trainer(
    cfg: RunConfig,
    objective: objectives.Objective,
    model: Any,
    tokenizer: Any,
    data: Any,
    callbacks: list,
    where: tuple,
) -> tuple[Any, LabelGather | None]:
    """The objective's Trainer and sft's output-layer hook: a TRL trainer for a preference objective (its reference
    a frozen copy loaded again when it needs one), else TuneTrainer with our batches and the loss at label
    positions only. `where` is (run_dir, device, progress)."""
    run_dir, device, progress = where
    evaluate = data.val is not None
    if objective.preference:
        args = run_precision(preference_train.arguments(cfg, objective, run_dir, device, progress, evaluate))
        trainer = preference_train.make_trainer(
            cfg, objective, model, tokenizer, data, args, callbacks, lambda: load_for_training(cfg, device).model
        )
        return trainer, None
    gather = LabelGather(model)
    trainer = TuneTrainer(
        model=model,
        args=run_precision(training_arguments(cfg, run_dir, device, progress, evaluate)),
        train_dataset=data.train,
        eval_dataset=data.val,
        data_collator=data.collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        sampler=EpochSampler(data.train.lengths, cfg.train.batch_size, cfg.train.seed, cfg.train.group_by_length),
        gather=gather,
        eval_collator=data.eval_collator,
        objective=objective,
        eval_generations=cfg.train.eval_generations,
        chunk_tokens=accel.chunk_tokens(device),
    )
    return trainer, gather


def run_precision(args: Any) -> Any:
    """The run's own precision for the Accelerator, whatever the launch says. With neither bf16 nor fp16 set,
    transformers takes ACCELERATE_MIXED_PRECISION, which `accelerate launch` sets from its config file's
    mixed_precision: an fp32 run (train.precision fp32, or auto on CPUs) launched with a bf16 file trained under
    bf16 autocast while its events said float32 (the 2-process CPU launch of a GPU file: step-1 loss off by 6e-5,
    ~100x float noise)."""
    args.mixed_precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    return args


def _evaluation_callbacks(cfg: RunConfig, has_val: bool) -> list[Any]:
    """transformers' EarlyStoppingCallback (on eval_loss) when train.early_stopping_patience is on. It and
    load_best_at_end need validation rows, which a small data set may not leave at a small val_size (validate()
    only sees the share): that is said before training instead of failing at its first evaluation."""
    t = cfg.train
    wanted = {"early_stopping_patience": t.early_stopping_patience > 0, "load_best_at_end": t.load_best_at_end}
    asked = [key for key, on in wanted.items() if on]
    if asked and not has_val:
        raise TrainError(
            f"train.{asked[0]}: needs validation examples, but data.val_size {cfg.data.val_size} of these records "
            "holds out none; raise data.val_size or add records"
        )
    return [EarlyStoppingCallback(t.early_stopping_patience)] if t.early_stopping_patience > 0 else []


def _fit(
    cfg: RunConfig,
    run_dir: Path,
    stop: threading.Event,
    resume_from: tuple | None,
    progress: bool,
    dist: Dist,
    device: str,
    state: dict,
) -> str:
    """build -> train -> save; `state` lets run() report the step a failure happened at."""
    if dist.main and not (run_dir / runs.CONFIG).is_file():
        cfg.save(run_dir / runs.CONFIG)
    cfg = session_config(cfg, dist)
    session = build(cfg, run_dir, stop, device, dist, resume_from, progress)
    if session is None:
        return _stopped_early(run_dir, dist)
    trainer = session.trainer
    state["trainer"] = trainer
    try:
        trainer.train(resume_from_checkpoint=str(session.checkpoint) if session.checkpoint else None)
        state["step"] = trainer.state.global_step
        return _finish(trainer, session.callback, session.loaded.tokenizer, cfg, run_dir, dist)
    finally:
        state["step"] = trainer.state.global_step
        if session.gather is not None:
            session.gather.remove()


def _finish(trainer: Any, callback: EventsCallback, tokenizer: Any, cfg: RunConfig, run_dir: Path, dist: Dist) -> str:
    """Save the artifact (the best checkpoint's weights with load_best_at_end: the Trainer loaded them at the end of
    train()) and write the final event: what was saved, from which step, the best evaluation, and why training
    ended early when early stopping ended it."""
    status = "stopped" if callback.stopped else "finished"
    whole = full_state_dict(trainer, dist)  # every rank takes part; rank 0 gets the weights
    model = trainer.accelerator.unwrap_model(trainer.model) if dist.sharded else trainer.model
    artifact = save_artifact(model, tokenizer, run_dir, cfg.method, whole) if dist.main else None
    if dist.main:  # the tuned side of "did it learn?", with the result safe on disk and before the final event
        learned.record_tuned(run_dir, cfg, trainer.model, tokenizer, trainer.artifact_step())  # the weights measured
    trainer.accelerator.wait_for_everyone()
    best_step, best_loss = trainer.best_evaluation()
    fields = {
        "step": trainer.state.global_step,
        "total_steps": trainer.state.max_steps,
        "loss": callback.last_loss,
        "eval_loss": callback.last_eval,
        "best_eval_loss": best_loss,
        "best_step": best_step,
        "artifact_step": trainer.artifact_step(),
        "stop_reason": trainer.early_stop_reason(),
        "adapter": str(artifact) if artifact and artifact.name == runs.ADAPTER else None,
        "model": str(artifact) if artifact and artifact.name == runs.MODEL else None,
        "train_s": round(callback.train_s, 2),
        "label_tokens_per_s": round(trainer.labels_seen * dist.world / max(callback.train_s, 1e-9), 1),
        **peak_memory(),
    }
    callback.event(status, **fields)
    return status


def _stopped_early(run_dir: Path, dist: Dist) -> str:
    if dist.main:
        history.append_event(run_dir, "stopped", step=0, adapter=None, model=None, message="stopped before training")
    return "stopped"
