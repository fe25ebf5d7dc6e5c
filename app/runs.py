"""Run folders: one per training run, the single channel between the trainer, the UI and the CLI.

    runs/20250101-120000-lora-smollm2/
        config.yaml        the complete RunConfig (rerun with `python -m app train runs/X/config.yaml`)
        events.jsonl       one JSON object per line, appended with flush + fsync, so a crash loses at most the
                           line being written; readers skip a truncated last line
        run.flock          empty; a trainer holds an exclusive OS lock on it (fcntl.flock) for the run's life: the
                           real exclusion, released by the kernel when the process ends, even by SIGKILL
        run.lock           pid + hostname + process start time while a trainer owns the folder (for display:
                           the status "running" and the pid in messages)
        checkpoints/checkpoint-<step>/   resumable Hugging Face Trainer checkpoints
        adapter/ | model/  the final LoRA adapter, or the full model for full/freeze (tokenizer included)
        error.log          tracebacks of failures

Events (every one has "type" and "time", epoch seconds):
    started     total_steps, method, model, device, dtype, trainable_params, total_params, world_size, threads,
                memory (app.memory estimate or null), train_examples, val_examples, train_rows, skipped_records,
                truncated, tokens_per_epoch, label_tokens_per_epoch, template
    resumed     the same as started, plus from_step, checkpoint, previous_status (a resume's first event)
    log         step, total_steps, epoch, loss, learning_rate, grad_norm, tokens_per_s (real tokens),
                label_tokens_per_s (tokens that carry loss), elapsed_s, eta_s
    eval        step, epoch, eval_loss
    checkpoint  step, path
    sample      step, samples: [{prompt, answer}]
    finished / stopped   step, total_steps, loss, eval_loss, best_eval_loss, adapter | model (path or null),
                train_s, label_tokens_per_s, peak_rss_mb, peak_cuda_mb (CUDA only)
    failed      message (what to do), error (exception type), step, peak_rss_mb

Status is derived from the files alone (no database), so it survives an app restart and works for runs
started from the CLI. No torch import.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app import paths
from app.config import RunConfig

try:  # POSIX
    import fcntl

    msvcrt = None
except ImportError:  # Windows
    import msvcrt

    fcntl = None

EVENTS = "events.jsonl"
CONFIG = "config.yaml"
LOCK = "run.lock"
FLOCK = "run.flock"
ERROR_LOG = "error.log"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
MODEL = "model"
TERMINAL = ("finished", "stopped", "failed")
SESSION_START = ("started", "resumed")
_write_lock = threading.Lock()


class RunError(RuntimeError):
    """A run folder operation that cannot be done (deleting a running run, a folder that is not a run)."""


class RunBusy(RunError):
    """The run cannot be taken: another process or job trains in it, or it already finished. Nothing was written."""


# ---- creating -------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    """Folder-safe name: letters, digits, '.', '_' and '-'; at most 60 characters.

    >>> _slug("LoRA on HuggingFaceTB/SmolLM2 135M!")
    'LoRA-on-HuggingFaceTB-SmolLM2-135M'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "run"


def default_name(config: RunConfig) -> str:
    model = Path(config.model.name_or_path.rstrip("/")).name.removesuffix(".gguf")
    return f"{config.method}-{model}"


def create_run(config: RunConfig, name: str | None = None) -> Path:
    """A new folder runs/<YYYYmmdd-HHMMSS>-<name>/ holding config.yaml; two runs in one second get -2, -3."""
    root = paths.runs_dir(config.train.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(name or config.train.run_name or default_name(config))}"
    for n in range(1, 1000):
        run_dir = root / (base if n == 1 else f"{base}-{n}")
        try:
            run_dir.mkdir()  # atomic: two processes never get the same folder
        except FileExistsError:
            continue
        config.save(run_dir / CONFIG)
        return run_dir
    raise RunError(f"could not create a run folder under {root}: names {base}-* are all taken")


def load_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.from_yaml(Path(run_dir) / CONFIG)


# ---- events -----------------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers reject them), Paths become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def append_event(run_dir: str | Path, type: str, **fields: Any) -> dict:
    """Append one event line and fsync it; returns the event. A torn last line (crash mid-write) is closed off
    with a newline first, so the new event is never glued onto it."""
    event = _clean({"type": type, "time": round(time.time(), 3), **fields})
    line = (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")
    path = Path(run_dir) / EVENTS
    with _write_lock, open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return event


def read_events(run_dir: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset`, and the offset to pass next time.

    Only complete lines are consumed: a last line without its newline (being written, or torn by a crash) is
    left for the next call. Lines that are not JSON objects are skipped. An offset past the end (the file was
    replaced) starts again from 0.
    """
    path = Path(run_dir) / EVENTS
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if offset > size:
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and "type" in event:
            events.append(event)
    return events, offset + end


def load_events(run_dir: str | Path) -> list[dict]:
    return read_events(run_dir, 0)[0]


def effective_events(events: list[dict]) -> list[dict]:
    """Events with the ones a resume superseded removed: a run killed at step 9 whose last checkpoint was step 5
    redoes steps 6-9 after resuming, so the first 6-9 log/eval/sample/checkpoint events are dropped. The loss
    curve is then one continuous line."""
    out: list[dict] = []
    for event in events:
        if event["type"] == "resumed":
            step = event.get("from_step") or 0
            out = [e for e in out if e.get("step") is None or e["type"] in SESSION_START or e["step"] <= step]
        out.append(event)
    return out


# ---- the lock: who owns the folder right now ------------------------------------------------------------------
def _process_start(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # psutil.NoSuchProcess/AccessDenied, or psutil missing
        return None


def write_lock(run_dir: str | Path) -> None:
    """Claim the folder for this process (written to a temp name, then renamed)."""
    info = {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "process_start": _process_start(os.getpid()),
        "time": time.time(),
    }
    path = Path(run_dir) / LOCK
    tmp = path.with_name(f"{LOCK}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)


def clear_lock(run_dir: str | Path) -> None:
    path = Path(run_dir) / LOCK
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def read_lock(run_dir: str | Path) -> dict | None:
    try:
        info = json.loads((Path(run_dir) / LOCK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def lock_alive(info: dict | None) -> bool:
    """The locking process still runs: same pid AND same process start time (a reused pid is not alive).
    A lock from another host cannot be checked and counts as alive."""
    if not info:
        return False
    if info.get("hostname") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int):
        return False
    started = _process_start(pid)
    if started is None:
        return False
    recorded = info.get("process_start")
    return recorded is None or abs(started - recorded) < 2.0


# ---- the claim: one trainer per run folder, by an OS lock ------------------------------------------------------
@dataclass
class Claim:
    """This process owns a run folder while `fd` (an open descriptor of run.flock, OS-locked) stays open."""

    run_dir: Path
    fd: int
    previous_status: str
    """The run's status before this claim: created, stopped, failed or interrupted (a resume's `previous_status`)."""

    def release(self) -> None:
        clear_lock(self.run_dir)
        _os_unlock(self.fd)
        os.close(self.fd)


def claim(run_dir: str | Path, resume: bool = False) -> Claim:
    """Take the run folder for this process before anything is written into it; raises RunBusy, writing nothing,
    when another process or job trains in it (its OS lock is held) or when a resume targets a finished run.

    The OS lock is checked and taken in one step (two `--resume` 0.3 s apart cannot both pass), and the kernel
    releases it when the process ends, so a run whose trainer was SIGKILLed stays resumable. run.lock (the pid)
    is written after it, for display."""
    run_dir = Path(run_dir)
    if resume and run_status(run_dir) == "finished":  # before the lock file: a finished run is left as it is
        raise RunBusy(_finished_message(run_dir))
    fd = _os_lock(run_dir / FLOCK)
    if fd is None:
        raise RunBusy(_busy_message(run_dir))
    try:
        status = run_status(run_dir)
        if status == "running":  # a live trainer without the OS lock (a TuneDesk from before run.flock)
            raise RunBusy(_busy_message(run_dir))
        if resume and status == "finished":
            raise RunBusy(_finished_message(run_dir))
        write_lock(run_dir)
    except BaseException:
        _os_unlock(fd)
        os.close(fd)
        raise
    return Claim(run_dir, fd, status)


def _busy_message(run_dir: Path) -> str:
    pid = (read_lock(run_dir) or {}).get("pid")
    who = f"process {pid}" if pid else "another process"
    return (
        f"run {run_dir.name} is already training ({who} holds it); nothing was changed. Follow it in the Train tab "
        "or wait for it to end; resume it only once it is stopped, failed or interrupted."
    )


def _finished_message(run_dir: Path) -> str:
    return (
        f"run {run_dir.name} already finished; nothing was changed. Start a new run to train more "
        f"(python -m app train {Path(run_dir) / CONFIG})."
    )


def _os_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive, non-blocking OS lock on `path`, or None when another holds it.

    POSIX: fcntl.flock (per open file, so two jobs of one process exclude each other too). Windows: msvcrt.locking
    of the first byte. A file system without locks (some network mounts) degrades to the pid file, with a warning.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):  # held elsewhere (POSIX EWOULDBLOCK; Windows EACCES)
        os.close(fd)
        return None
    except OSError as exc:  # ENOLCK and the like: no OS locks here
        if msvcrt is not None and exc.errno == errno.EDEADLOCK:  # Windows reports a held lock so too
            os.close(fd)
            return None
        warnings.warn(f"{path}: no OS file lock here ({exc}); only the pid in {LOCK} guards the run", stacklevel=2)
    return fd


def _os_unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


# ---- status and summaries -----------------------------------------------------------------------------------
def status_from(events: list[dict], lock: dict | None) -> str:
    """running (a live process holds the lock), finished / stopped / failed (the last session ended so),
    interrupted (a session began and its process is gone without a final event), or created."""
    if lock_alive(lock):
        return "running"
    last = "created"
    for event in events:
        if event["type"] in SESSION_START:
            last = "interrupted"
        elif event["type"] in TERMINAL:
            last = event["type"]
    if last == "created" and lock is not None:
        return "interrupted"  # died while loading, before the first event
    return last


def run_status(run_dir: str | Path) -> str:
    """ "running" | "finished" | "stopped" | "failed" | "interrupted" | "created"."""
    return status_from(load_events(run_dir), read_lock(run_dir))


def _step_of(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (trainer_state.json is written last, and the folder is renamed into
    place only when whole)."""
    folder = Path(run_dir) / CHECKPOINTS
    found = [p for p in folder.glob("checkpoint-*") if _step_of(p) >= 0 and (p / "trainer_state.json").is_file()]
    return sorted(found, key=_step_of)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def checkpoint_step(path: str | Path) -> int:
    return _step_of(Path(path))


def final_artifact(run_dir: str | Path) -> Path | None:
    """adapter/ (LoRA, QLoRA) or model/ (full, freeze) when training saved one."""
    run_dir = Path(run_dir)
    if (run_dir / ADAPTER / "adapter_config.json").is_file():
        return run_dir / ADAPTER
    if (run_dir / MODEL / "config.json").is_file():
        return run_dir / MODEL
    return None


@dataclass
class RunSummary:
    id: str
    path: Path
    status: str
    method: str | None
    model: str | None
    step: int
    total_steps: int | None
    best_eval_loss: float | None
    last_loss: float | None
    started: float | None
    adapter: Path | None
    message: str | None = None
    """Why the run failed (the failed event's message), else None."""


def _config_facts(run_dir: Path) -> tuple[str | None, str | None]:
    try:
        data = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8")) or {}
        return data.get("method"), (data.get("model") or {}).get("name_or_path")
    except (OSError, yaml.YAMLError, AttributeError):
        return None, None


def summarize(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    events = effective_events(load_events(run_dir))
    method, model = _config_facts(run_dir)
    logs = [e for e in events if e["type"] == "log"]
    evals = [e["eval_loss"] for e in events if e["type"] == "eval" and e.get("eval_loss") is not None]
    starts = [e for e in events if e["type"] in SESSION_START]
    failed = [e for e in events if e["type"] == "failed"]
    status = status_from(events, read_lock(run_dir))
    return RunSummary(
        id=run_dir.name,
        path=run_dir,
        status=status,
        method=method,
        model=model,
        step=max([e.get("step") or 0 for e in events if e["type"] in ("log", "checkpoint", *TERMINAL)], default=0),
        total_steps=starts[-1].get("total_steps") if starts else None,
        best_eval_loss=min(evals) if evals else None,
        last_loss=logs[-1].get("loss") if logs else None,
        started=starts[0]["time"] if starts else None,
        adapter=final_artifact(run_dir),
        message=failed[-1].get("message") if failed and status == "failed" else None,
    )


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / CONFIG).is_file() or (path / EVENTS).is_file())


def list_runs(output_dir: str | Path | None = None) -> list[RunSummary]:
    """Every run under the runs folder, newest first (folder names start with the creation time)."""
    root = paths.runs_dir(output_dir if output_dir is not None else RunConfig().train.output_dir)
    if not root.is_dir():
        return []
    return [summarize(p) for p in sorted(root.iterdir(), key=lambda p: p.name, reverse=True) if is_run_dir(p)]


def delete_run(run_dir: str | Path) -> None:
    """Remove a run folder; refused while a process trains in it, or for a folder that is not a run."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunError(f"{run_dir} is not a run folder (no config.yaml or events.jsonl); nothing deleted")
    if run_status(run_dir) == "running":
        info = read_lock(run_dir) or {}
        raise RunError(f"run {run_dir.name} is training (pid {info.get('pid')}); stop it before deleting")
    shutil.rmtree(run_dir)
