"""The training recipe: setup -> fit -> save, shared by the UI's background thread, the CLI and DDP launches.

    run(config, run_dir, stop)         never raises for training errors; returns finished | stopped | failed
    python -m app train CONFIG.yaml    the same, headless, with a progress bar
    torchrun --nproc_per_node 2 -m app train CONFIG.yaml     data-parallel (accelerate launch on GPUs)

It is a Hugging Face `Trainer` (standard resumable checkpoints, gradient accumulation, schedulers, DDP) with
three changes that make it about 2x faster per useful token than a plain Trainer+PEFT script:
- batches come from `app.batching`: length-grouped, or packed with per-example position_ids (no padding);
- logits and loss are computed only where the shifted label is not -100: a forward pre-hook on the output layer
  gathers those hidden states, so the batch x seq x vocab logits tensor is never made
  (4 x 256 tokens x 49,152 vocab x 4 B = 201 MB for SmolLM2, ~60% of it prompt positions that carry no loss);
- a `TrainerCallback` writes events.jsonl (the UI's one channel) and honours Stop at the next optimizer step.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app import libs
from app.batching import EpochSampler
from app.config import ConfigError, RunConfig

libs.load()  # transformers, whole, under the lock another thread's first use waits on (see app/libs.py)

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402

from app import consent, devices, history, methods, modeling, objectives, runs  # noqa: E402
from app.objectives import LabelGather, Objective  # noqa: E402

log = logging.getLogger("tunedesk.train")

OPTIMIZERS = {  # config name -> transformers OptimizerNames
    "adamw_torch": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
}
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
SAMPLE_TOKENS = 48
"""New tokens per sample generation: enough for a sentence, ~1 s on the default model on a CPU."""


class TrainError(RuntimeError):
    """A problem found before or during training; the message says what to change."""


# ---- checks before anything is loaded ------------------------------------------------------------------------
def preflight(cfg: RunConfig) -> list[str]:
    """Every problem that makes the run impossible, found without loading anything (config, device, optimizer)."""
    problems = cfg.validate()
    try:
        on_cpu = devices.resolve(cfg.train.device) == devices.CPU
    except devices.DeviceError as exc:
        problems.append(f"train.device: {exc}")
        on_cpu = True
    if on_cpu and cfg.train.optimizer.startswith("paged_"):
        problems.append(
            f"train.optimizer: {cfg.train.optimizer} pages optimizer state through CUDA unified memory and needs "
            "a CUDA GPU; on the CPU use adamw_torch (or adamw_8bit to save memory)"
        )
    if on_cpu and cfg.train.precision == "fp16":
        problems.append("train.precision: fp16 training needs a CUDA GPU; on the CPU use auto (float32)")
    found = (_model_problem(cfg.model.name_or_path), _data_problem(cfg.data.path), _output_problem(cfg))
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


def _data_problem(path: str) -> str | None:
    """data.path that is neither a file or folder (where app.data looks for it) nor a hub dataset id."""
    from app import paths
    from app.data_io import looks_like_hub_id

    if not path.strip():
        return "data.path: empty; choose a dataset file (e.g. assets/sample_data.json)"
    if paths.resolve_data_path(path).exists() or looks_like_hub_id(path):
        return None
    return f"data.path: {path}: file not found (looked in the working directory and {paths.ROOT}); check the path"


def _output_problem(cfg: RunConfig) -> str | None:
    """train.output_dir that cannot hold run folders: a file, or a folder this user may not write to."""
    from app import paths

    root = paths.runs_dir(cfg.train.output_dir)
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is None or (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        return None
    what = "is a file" if not existing.is_dir() else "is a folder you may not write to"
    return f"train.output_dir: {existing} {what}, so no run folder can be made under {root}; choose another folder"


def cpu_threads(local_world: int = 1) -> int:
    """Intra-op threads for training on the CPU: one per physical core (hyper-threads share the same FP units),
    split among local processes, and fewer when other programs keep the cores busy right now: OpenMP threads wait
    for each other at every op, so on an oversubscribed CPU each extra thread costs more than it brings
    (measured here at load 9 on 2 cores: tiny-model steps 5x slower with 2 threads than with 1)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    share = max(1, cores // max(1, local_world))
    spare = (os.cpu_count() or cores) - busy_cpus()
    return max(1, min(share, round(spare)))


def busy_cpus(interval_s: float = 0.3) -> float:
    """CPUs that other programs keep busy now: all CPUs' busy time over `interval_s`, less this process's own.

    Sampled rather than read from the 1-minute load average, which still says "busy" for a minute after the
    previous job ends (it decays with a 60 s time constant) and then starved the next run at 1 thread."""
    import psutil

    me = psutil.Process()
    all0, own0, t0 = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
    time.sleep(interval_s)
    all1, own1, wall = psutil.cpu_times(), me.cpu_times(), time.perf_counter() - t0
    busy = _busy_seconds(all1) - _busy_seconds(all0)
    total = _total_seconds(all1) - _total_seconds(all0)
    if total <= 0:
        return 0.0
    cpus = psutil.cpu_count() or 1
    others = busy / total * cpus - ((own1.user + own1.system) - (own0.user + own0.system)) / wall
    return min(float(cpus), max(0.0, others))


def _total_seconds(t: Any) -> float:
    # guest time is already counted in user time on Linux (psutil docs)
    return sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _busy_seconds(t: Any) -> float:
    # steal counts as busy: on a shared VM it is time another guest had our core
    return _total_seconds(t) - t.idle - getattr(t, "iowait", 0.0)


def configure_threads(device: str, local_world: int = 1) -> int:
    """Set torch's CPU threads (unless OMP_NUM_THREADS says otherwise) or enable TF32 on CUDA; returns threads."""
    kind = devices.kind(device)
    if kind == devices.CPU and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(local_world))
    elif kind == devices.CUDA:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores: ~8x faster, 10-bit mantissa
        torch.backends.cudnn.allow_tf32 = True
    return torch.get_num_threads()


class TuneTrainer(Trainer):
    """Trainer with our batches, the objective's loss, counters for tokens/s and atomic checkpoints."""

    loss_is_scaled_for_ga = True  # the objective's loss divides by the label count of the whole accumulated step

    def __init__(
        self,
        *args: Any,
        sampler: EpochSampler,
        gather: LabelGather,
        eval_collator: Any = None,
        objective: Objective | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sampler, self.gather, self.eval_collator = sampler, gather, eval_collator
        self.objective = objective or objectives.get(objectives.DEFAULT)
        self.model_accepts_loss_kwargs = True  # makes the Trainer count labels per step -> num_items_in_batch
        self.tokens_seen = 0
        self.labels_seen = 0

    def _get_train_sampler(self, train_dataset: Any = None) -> EpochSampler:
        return self.sampler

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        train_collator = self.data_collator
        self.data_collator = self.eval_collator or train_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler:
        return torch.utils.data.SequentialSampler(eval_dataset)  # RowDataset.build(sort=True) already sorted it

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, count = self.objective.loss(model, inputs, self.gather, num_items_in_batch)
        if model.training:
            self.tokens_seen += int(inputs.get("num_tokens", 0))
            self.labels_seen += count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo for a token mean
        return (loss, {}) if return_outputs else loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write checkpoint-<step> under a staging folder, then rename it into place: a crash mid-save never
        leaves a half-written checkpoint that resume would pick."""
        final_root = self.args.output_dir
        staging = os.path.join(final_root, ".partial")
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # half a checkpoint only holds space the failure report needs
            raise
        finally:
            self.args.output_dir = final_root
        self.accelerator.wait_for_everyone()  # every rank has written its rng_state_<rank>.pth
        if self.args.should_save:
            name = history.checkpoint_name(self.state.global_step)
            target = Path(final_root) / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(Path(staging) / name, target)
            shutil.rmtree(staging, ignore_errors=True)
            for old in runs.checkpoints(Path(final_root).parent)[: -self.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)  # keep the newest save_total_limit, by step
        self.accelerator.wait_for_everyone()


# ---- events ---------------------------------------------------------------------------------------------
class EventsCallback(TrainerCallback):
    """Writes events.jsonl (rank 0 only), honours Stop at the next optimizer step, and generates samples."""

    def __init__(self, run_dir: Path, cfg: RunConfig, stop: threading.Event, started: dict, main: bool):
        self.run_dir, self.cfg, self.stop, self.started, self.main = run_dir, cfg, stop, started, main
        self.trainer: TuneTrainer | None = None
        self.stopped = False
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        self.best_eval: float | None = None
        self.elapsed_before = float(started.pop("elapsed_before", 0.0))
        self.t_begin = self.t_step = time.perf_counter()
        self.train_s = 0.0
        self.first_step = 0
        self.mark = (0.0, 0, 0)  # train seconds, tokens, label tokens at the last log

    def event(self, type: str, **fields: Any) -> None:
        if self.main:
            runs.append_event(self.run_dir, type, **fields)

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step
        self.t_begin = time.perf_counter()
        kind = "resumed" if self.started.get("from_step") is not None else "started"
        self.event(kind, total_steps=state.max_steps, **self.started)

    def on_step_begin(self, args, state, control, **kwargs):
        self.t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.train_s += time.perf_counter() - self.t_step
        every = self.cfg.train.sample_every
        if every and state.global_step % every == 0 and self.cfg.train.sample_prompts:
            self.sample(state.global_step, kwargs.get("processing_class"))
        if self._should_stop(args):
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at this step, so Resume continues exactly here
        return control

    def _should_stop(self, args: Any) -> bool:
        flag = self.stop.is_set()
        if args.world_size > 1 and torch.distributed.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0], device=args.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)  # every rank stops at the same step
            flag = bool(t.item())
        return flag

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "eval_loss" in logs:
            self.last_eval = logs["eval_loss"]
            self.best_eval = min(self.best_eval or math.inf, self.last_eval)
            self.event("eval", step=state.global_step, epoch=_round(state.epoch, 4), eval_loss=logs["eval_loss"])
        if "loss" in logs:
            self.last_loss = logs["loss"]
            self.event("log", **self.log_fields(state, logs, args.world_size))

    def log_fields(self, state: Any, logs: dict, world: int) -> dict:
        trainer = self.trainer
        seconds, tokens, labels = self.train_s, trainer.tokens_seen, trainer.labels_seen
        span = max(seconds - self.mark[0], 1e-9)
        rate = (tokens - self.mark[1]) * world / span
        label_rate = (labels - self.mark[2]) * world / span
        self.mark = (seconds, tokens, labels)
        elapsed = time.perf_counter() - self.t_begin
        done = state.global_step - self.first_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
        return {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": _round(state.epoch, 4),
            "loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": _round(logs.get("grad_norm"), 6),
            "tokens_per_s": round(rate, 1),
            "label_tokens_per_s": round(label_rate, 1),
            "elapsed_s": round(self.elapsed_before + elapsed, 2),
            "eta_s": round(eta, 1) if eta is not None else None,
        }

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / history.checkpoint_name(state.global_step)
        self.event("checkpoint", step=state.global_step, path=str(path))

    def sample(self, step: int, tokenizer: Any) -> None:
        if not self.main or self.trainer is None or tokenizer is None:
            return
        answers = generate_samples(self.trainer.model, tokenizer, self.cfg, self.cfg.train.sample_prompts[:3])
        self.event("sample", step=step, samples=answers)


def _round(value: Any, digits: int) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) else value


def render_prompt(tokenizer: Any, cfg: RunConfig, prompt: str) -> str:
    """The prompt exactly as training renders it (app.data's template and system prompt), up to where the answer
    starts, so samples show what the model learned in the format it learned it."""
    from app import data as data_mod

    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
    example = data_mod.Example(turns, 0, {"instruction": prompt, "input": ""})
    segments = data_mod.render_segments(example, tokenizer, cfg.data.template, cfg.data.system_prompt)
    return segments[0][0]


@torch.no_grad()
def generate_samples(model: Any, tokenizer: Any, cfg: RunConfig, prompts: list[str]) -> list[dict]:
    """Greedy answers (48 new tokens) to a few prompts, in eval mode; the model is put back in train mode."""
    was_training = model.training
    model.eval()
    out = []
    try:
        device = next(model.parameters()).device
        for prompt in prompts:
            text = render_prompt(tokenizer, cfg, prompt)
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
            gen = model.generate(
                **ids,
                max_new_tokens=SAMPLE_TOKENS,
                do_sample=False,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
            )
            answer = tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            out.append({"prompt": prompt, "answer": answer.strip()})
    finally:
        model.train(was_training)
    return out


# ---- setup ---------------------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_info() -> Dist:
    """This process's place in a torchrun / accelerate launch (rank 0 of 1 when launched plainly)."""
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def load_for_training(cfg: RunConfig, device: str) -> modeling.LoadedModel:
    """The base model in the dtype training wants. fp16 full/freeze training keeps fp32 master weights (AMP with
    loss scaling cannot step fp16 parameters); LoRA keeps an fp16 base with fp32 adapters."""
    precision = cfg.train.precision
    dtype = modeling.resolve_dtype(precision, device)
    method = methods.of(cfg)
    if dtype == torch.float16 and method.trains_base:
        precision = "fp32"
    quant = cfg.quant if method.quantized else None
    return modeling.load_model(cfg.model, quant, device=device, precision=precision, progress=lambda f, m: None)


def training_arguments(
    cfg: RunConfig, run_dir: Path, device: str, progress: bool, evaluate: bool
) -> TrainingArguments:
    t = cfg.train
    dtype = modeling.resolve_dtype(t.precision, device)
    save_steps = t.save_steps if t.save_steps > 0 else None
    eval_steps = t.eval_steps or save_steps or 10**9  # 10**9: only the evaluation at the end
    return TrainingArguments(
        output_dir=str(run_dir / runs.CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=SCHEDULERS[t.lr_scheduler],
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=OPTIMIZERS[t.optimizer],
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_steps,
        prediction_loss_only=True,
        seed=t.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=devices.kind(device) == devices.CPU,
        dataloader_pin_memory=devices.kind(device) == devices.CUDA,
        dataloader_num_workers=0,  # collation is a few numpy copies; worker processes would only add memory
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=not progress,
        ddp_find_unused_parameters=False,  # gradient checkpointing is enabled by modeling.prepare_for_method
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
def save_artifact(model: Any, tokenizer: Any, run_dir: Path, method: str) -> Path:
    """adapter/ (LoRA/QLoRA: adapter_config.json + adapter_model.safetensors) or model/ (full/freeze, all
    weights), with the tokenizer. Written to a temp folder and renamed, so it is never half-written."""
    name = runs.ADAPTER if methods.get(method).saves == "adapter" else runs.MODEL
    final = run_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=run_dir))
    try:
        target = modeling.base_model(model) if name == runs.MODEL else getattr(model, "module", model)
        if name == runs.MODEL:
            target.config.use_cache = True  # the saved model is for inference
        target.save_pretrained(tmp, safe_serialization=True)
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


def peak_memory() -> dict:
    import resource

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB on Linux
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


# ---- failures -------------------------------------------------------------------------------------------
def describe_failure(exc: BaseException, cfg: RunConfig, device: str, run_dir: Path | None = None) -> str:
    """The message a person can act on; the traceback goes to error.log."""
    text = str(exc).strip() or type(exc).__name__
    if run_dir is not None and disk_full(exc, run_dir):
        return _disk_full_message(text, run_dir)
    oom = isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text.lower()
    if oom:
        where = "GPU memory" if devices.kind(device) == devices.CUDA else "RAM"
        return f"Out of {where} during training ({text.splitlines()[0][:200]}). {_memory_advice(cfg, device)}"
    plain = (TrainError, ConfigError, modeling.ModelError, objectives.ObjectiveError)
    if isinstance(exc, plain) or type(exc).__name__ == "DataError":
        return text
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]} (full traceback in error.log)"


def _memory_advice(cfg: RunConfig, device: str) -> str:
    """app.memory's estimate and suggested fixes in words; generic advice when it cannot estimate this model."""
    try:
        from app import estimate, memory

        est = memory.estimate_config(cfg, device)
        fixes = estimate.suggest_fixes(memory.architecture_from(cfg.model.name_or_path), cfg, device)
        return (
            f"The estimate for this run is {est.total_gib:.1f} GiB. Try: "
            + "; ".join(f.description for f in fixes)
            + "."
        )
    except Exception:  # an architecture app.memory does not know
        return (
            "Try: a smaller train.batch_size (raise grad_accum to keep the effective batch), a shorter "
            "data.max_seq_len, train.gradient_checkpointing on, or method qlora."
        )


LOW_DISK_MB = 64
"""Under this much free space a failed write counts as a full disk."""


def disk_full(exc: BaseException, run_dir: Path) -> bool:
    """ENOSPC in the exception chain, or a failed write with under 64 MB free where the run is saved (torch.save
    reports a full disk as RuntimeError 'file write failed', without the errno)."""
    seen: BaseException | None = exc
    for _ in range(8):  # __context__ chains are short; a bound guards against cycles
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    return "no space left" in text or ("write" in text and _free_mb(run_dir) < LOW_DISK_MB)


def _free_mb(path: Path) -> float:
    try:
        return shutil.disk_usage(path).free / 2**20
    except OSError:
        return math.inf


def _disk_full_message(text: str, run_dir: Path) -> str:
    ckpt = runs.latest_checkpoint(run_dir)
    kept = (
        f"the last complete checkpoint ({ckpt.name}) is intact and Resume continues from it"
        if ckpt
        else "no checkpoint was saved before it"
    )
    return (
        f"The disk is full ({_free_mb(run_dir):.1f} MB free where {run_dir.name} is saved): "
        f"{text.splitlines()[0][:200]}. Free some space, or set train.output_dir to another drive; {kept}."
    )


def record_failure(run_dir: Path, exc: BaseException, cfg: RunConfig, device: str, step: int | None) -> str:
    message = describe_failure(exc, cfg, device, run_dir)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("training failed: %s\n%s", message, tb)
    with contextlib.suppress(OSError):  # the event first: on a nearly full disk its line is what the UI needs
        runs.append_event(run_dir, "failed", message=message, error=type(exc).__name__, step=step, **peak_memory())
    with contextlib.suppress(OSError):
        with open(run_dir / runs.ERROR_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} step {step}\n{tb}\n")
    return "failed"


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

    trainer: TuneTrainer
    callback: EventsCallback
    loaded: modeling.LoadedModel
    gather: LabelGather
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
    loaded = load_for_training(cfg, device)
    model = modeling.prepare_for_method(loaded, cfg)
    trainable, total = modeling.count_params(model)
    started.update(
        method=cfg.method,
        model=loaded.path,
        device=device,
        dtype=loaded.dtype,
        trainable_params=trainable,
        total_params=total,
        world_size=dist.world,
        threads=torch.get_num_threads(),
        memory=memory_estimate(cfg, device),
        **data.facts,
    )
    gather = LabelGather(model)
    callback = EventsCallback(run_dir, cfg, stop, started, dist.main)
    trainer = TuneTrainer(
        model=model,
        args=training_arguments(cfg, run_dir, device, progress, evaluate=data.val is not None),
        train_dataset=data.train,
        eval_dataset=data.val,
        data_collator=data.collator,
        processing_class=loaded.tokenizer,
        callbacks=[callback],
        sampler=EpochSampler(data.train.lengths, cfg.train.batch_size, cfg.train.seed, cfg.train.group_by_length),
        gather=gather,
        eval_collator=data.eval_collator,
        objective=objective,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; events.jsonl has them
    callback.trainer = trainer
    return Session(trainer, callback, loaded, gather, ckpt)


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
        session.gather.remove()


def _finish(
    trainer: TuneTrainer, callback: EventsCallback, tokenizer: Any, cfg: RunConfig, run_dir: Path, dist: Dist
) -> str:
    status = "stopped" if callback.stopped else "finished"
    artifact = save_artifact(trainer.model, tokenizer, run_dir, cfg.method) if dist.main else None
    trainer.accelerator.wait_for_everyone()
    fields = {
        "step": trainer.state.global_step,
        "total_steps": trainer.state.max_steps,
        "loss": callback.last_loss,
        "eval_loss": callback.last_eval,
        "best_eval_loss": callback.best_eval,
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
        runs.append_event(run_dir, "stopped", step=0, adapter=None, model=None, message="stopped before training")
    return "stopped"


# ---- launching -----------------------------------------------------------------------------------------
def launch_command(config_path: str, num_processes: int = 2, device: str = "auto") -> str:
    """The command that trains `config_path` data-parallel on `num_processes` GPUs (or CPU processes).

    GPUs: `accelerate launch --multi_gpu`; CPUs: torchrun with the gloo backend (accelerate's CPU launcher
    needs mpirun). One process: plain `python -m app train`.
    """
    cfg = shlex.quote(str(config_path))
    if num_processes <= 1:
        return f"python -m app train {cfg}"
    if devices.kind(device) == devices.CUDA:
        return f"accelerate launch --multi_gpu --num_processes {num_processes} -m app train {cfg}"
    return f"torchrun --standalone --nproc_per_node {num_processes} -m app train {cfg}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="run config YAML: a preset, or a run's config.yaml")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides train.max_steps)")
    parser.add_argument("--run-name", help="name appended to the run folder")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="you have read the model folder's .py files and let them run (needed when the config has "
        "model.trust_remote_code: true; the config alone does not run a model's code)",
    )


def _load_cli_config(args: argparse.Namespace) -> RunConfig:
    if args.resume:
        cfg = runs.load_config(args.resume)
    elif args.config:
        cfg = RunConfig.from_yaml(args.config)
    else:
        raise ConfigError(["give a config YAML, or --resume RUN_DIR"])
    changes: dict[str, Any] = {}
    if args.max_steps is not None:
        changes["train.max_steps"] = args.max_steps
    if args.run_name:
        changes["train.run_name"] = args.run_name
    return cfg.replace(**changes) if changes else cfg


def _consent_from_cli(cfg: RunConfig, args: argparse.Namespace) -> None:
    """--trust-remote-code is the user's consent (app.consent) to the config's model code, for this process."""
    if getattr(args, "trust_remote_code", False) and cfg.model.trust_remote_code:
        try:
            consent.grant(modeling.resolve_model(cfg.model.name_or_path))
        except modeling.ModelError:
            pass  # preflight names the missing model


def _shared_run_dir(cfg: RunConfig, args: argparse.Namespace, dist: Dist) -> Path:
    """Rank 0 creates the run folder; under torchrun every rank receives its path."""
    run_dir = Path(args.resume) if args.resume else None
    if run_dir is None and dist.main:
        run_dir = runs.create_run(cfg, args.run_name)
    if dist.world > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # joins the process group (gloo on CPU, nccl on CUDA)
        box = [str(run_dir) if run_dir else None]
        torch.distributed.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    return run_dir


def main(args: argparse.Namespace) -> int:
    """Every check before the run folder is made (or, for --resume, before anything is written into it): a
    refusal prints one message and leaves runs/ as it was."""
    logging.basicConfig(level=logging.INFO, format="[tunedesk] %(message)s")
    try:
        cfg = _load_cli_config(args)
        _consent_from_cli(cfg, args)
        problems = preflight(cfg)  # validate() and what needs the machine: device, model, data, output folder
        if problems:
            raise ConfigError(problems, args.config or args.resume)
    except ConfigError as exc:
        print(f"python -m app train: {exc}", file=sys.stderr)
        return 2
    dist = dist_info()
    claim = None
    if args.resume and dist.main:
        try:
            claim = runs.claim(args.resume, resume=True)
        except runs.RunBusy as exc:
            print(f"python -m app train: {exc}", file=sys.stderr)
            return 1
    run_dir = _shared_run_dir(cfg, args, dist)
    if args.resume and args.max_steps is not None and dist.main:
        cfg.save(run_dir / runs.CONFIG)
    stop = threading.Event()
    _install_stop_signals(stop)
    if dist.main:
        print(f"[tunedesk] run folder: {run_dir}", file=sys.stderr, flush=True)
    status = run(cfg, run_dir, stop, resume=bool(args.resume), progress=True, claim=claim)
    if dist.main:
        _print_outcome(run_dir, status)
    return 0 if status in ("finished", "stopped") else 1


def _install_stop_signals(stop: threading.Event) -> None:
    """First Ctrl-C / SIGTERM: stop at the next step and save; a second Ctrl-C aborts (the run is resumable)."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            "\n[tunedesk] stopping after this step (saving a checkpoint); Ctrl-C again to abort",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _print_outcome(run_dir: Path, status: str) -> None:
    end = history.read(run_dir).ending or history.Ending(status, 0.0)
    if status == "failed":
        print(f"[tunedesk] failed: {end.message}", file=sys.stderr)
    else:
        print(f"[tunedesk] {status} at step {end.step}, loss {end.loss}; saved {end.artifact}", file=sys.stderr)
