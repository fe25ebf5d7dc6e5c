"""A failed run in words: the message a person can act on (out of memory, full disk, a refused config), written down.

`record_failure` turns any exception into the run's `failed` event (the message, the error type, the step, peak
memory) and appends the traceback to error.log, so nothing vanishes into the app's training thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import shutil
import time
import traceback
from pathlib import Path

import torch

from app import devices, history, modeling, objectives, runs
from app.config import ConfigError, RunConfig
from app.train_events import peak_memory

log = logging.getLogger("tunedesk.train")


class TrainError(RuntimeError):
    """A problem found before or during training; the message says what to change."""


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
    ckpt = history.latest_checkpoint(run_dir)
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
        history.append_event(run_dir, "failed", message=message, error=type(exc).__name__, step=step, **peak_memory())
    with contextlib.suppress(OSError):
        with open(run_dir / runs.ERROR_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} step {step}\n{tb}\n")
    return "failed"
