"""Run folders: one per training run, the single channel between the trainer, the UI and the CLI.

    runs/20250101-120000-lora-smollm2/
        config.yaml        the complete RunConfig (rerun with `python -m app train runs/X/config.yaml`)
        events.jsonl       what happened, one JSON event a line (app.history writes and reads it)
        run.flock          empty; a trainer holds an exclusive OS lock on it (fcntl.flock) for the run's life: the
                           real exclusion, released by the kernel when the process ends, even by SIGKILL
        run.lock           pid + hostname + process start time while a trainer owns the folder (for display:
                           the status "running" and the pid in messages)
        checkpoints/checkpoint-<step>/   resumable Hugging Face Trainer checkpoints (app.history's too)
        adapter/ | model/  the final LoRA adapter, or the full model for full/freeze (tokenizer included)
        error.log          tracebacks of failures

Status (`run_status`: app.history's reading of the events plus the lock) and the runs list are derived from the
files alone (no database), so they survive an app restart and work for runs started from the CLI. No torch import.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from app import history, paths
from app.config import RunConfig

try:  # POSIX
    import fcntl

    msvcrt = None
except ImportError:  # Windows
    import msvcrt

    fcntl = None

CONFIG = "config.yaml"
LOCK = "run.lock"
FLOCK = "run.flock"
ERROR_LOG = "error.log"
ADAPTER = "adapter"
MODEL = "model"


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
    """A new folder runs/<YYYYmmdd-HHMMSS>-<name>/ holding config.yaml; two runs in one second get -2, -3. The
    saved config names the commit of each Hub dataset in the cache (app.data.pinned), so it reads the same records
    again."""
    from dataclasses import replace

    from app import data

    config = replace(config, data=data.pinned(config.data))
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


def final_artifact(run_dir: str | Path) -> Path | None:
    """adapter/ (LoRA, QLoRA) or model/ (full, freeze) when training saved one."""
    run_dir = Path(run_dir)
    if (run_dir / ADAPTER / "adapter_config.json").is_file():
        return run_dir / ADAPTER
    if (run_dir / MODEL / "config.json").is_file():
        return run_dir / MODEL
    return None


# ---- status and summaries -----------------------------------------------------------------------------------
def status_of(found: history.RunHistory, lock: dict | None) -> str:
    """running (a live process holds the lock), finished / stopped / failed (the last session ended so),
    interrupted (a session began and its process is gone without a final event), or created."""
    if lock_alive(lock):
        return "running"
    if found.outcome == "open" or (found.outcome == "created" and lock is not None):
        return "interrupted"  # no final event; or died while loading, before the first event
    return found.outcome


def run_status(run_dir: str | Path) -> str:
    """ "running" | "finished" | "stopped" | "failed" | "interrupted" | "created"."""
    return status_of(history.read(run_dir), read_lock(run_dir))


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
    best_step: int | None = None
    """The step of best_eval_loss: the checkpoint a run with load_best_at_end keeps as its result."""
    stop_reason: str | None = None
    """Why the run ended before its total steps (early stopping), else None."""


def _config_facts(run_dir: Path) -> tuple[str | None, str | None]:
    try:
        data = yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8")) or {}
        return data.get("method"), (data.get("model") or {}).get("name_or_path")
    except (OSError, yaml.YAMLError, AttributeError):
        return None, None


def summarize(run_dir: str | Path) -> RunSummary:
    run_dir = Path(run_dir)
    found = history.read(run_dir)
    method, model = _config_facts(run_dir)
    status = status_of(found, read_lock(run_dir))
    return RunSummary(
        id=run_dir.name,
        path=run_dir,
        status=status,
        method=method,
        model=model,
        step=found.step,
        total_steps=found.total_steps,
        best_eval_loss=found.best_eval_loss,
        last_loss=found.last_loss,
        started=found.started,
        adapter=final_artifact(run_dir),
        message=found.ending.message if status == "failed" and found.ending else None,
        best_step=found.best_step,
        stop_reason=found.stop_reason,
    )


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / CONFIG).is_file() or history.has_events(path))


def signature(output_dir: str | Path | None = None) -> tuple:
    """What the list of runs depends on, cheaply: each run folder's name, its history's stamp (events, checkpoints)
    and the (mtime, size) of its lock and final adapter/model folder. Equal signatures mean equal lists (a status
    that changes without a file change, a trainer killed while running, shows at the next file change). The run
    pickers redraw when it changes (~1 ms for 100 runs)."""
    root = paths.runs_dir(output_dir if output_dir is not None else RunConfig().train.output_dir)
    try:
        entries = sorted((e for e in os.scandir(root) if e.is_dir()), key=lambda e: e.name)
    except OSError:  # no runs folder yet
        return ()
    own = (LOCK, ADAPTER, MODEL)
    return tuple(
        (e.name, *history.stamp(e.path), *(history.file_stamp(Path(e.path) / p) for p in own)) for e in entries
    )


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
