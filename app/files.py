"""Files the app keeps for the user: its private scratch folder, and uploaded datasets (stored once). No gradio.

- The scratch folder (`tunedesk-<pid>-XXXX` in the system temp folder, mode 700) holds Gradio's upload cache
  ($GRADIO_TEMP_DIR) and downloads the app makes (CSV tables). It is removed at exit (Ctrl-C, SIGTERM, a normal
  end) and, when the process died without cleaning up (SIGKILL, power loss), at the next start: each folder
  names its owner (pid and the process's start time, so a reused pid is not taken for the owner).
- An upload is moved out of Gradio's cache into `uploads_dir()` (~/.cache/tunedesk/uploads, mode 700), under
  the hash of its content: a run's config.yaml names that file, and Resume after a restart must still find it.
  The same file uploaded twice is kept once.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from app import paths

PREFIX = "tunedesk-"
OWNER = ".owner.json"
UPLOADS = "uploads"
LEGACY_AGE_S = 24 * 3600
"""Folders of versions that wrote no owner file are removed once untouched this long (no owner to ask)."""

_scratch: Path | None = None


def scratch_dir() -> Path:
    """This process's private scratch folder (created on first use, mode 700, removed at exit)."""
    global _scratch
    if _scratch is None or not _scratch.is_dir():
        _scratch = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        os.chmod(_scratch, 0o700)
        (_scratch / OWNER).write_text(json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid())}))
        atexit.register(shutil.rmtree, _scratch, True)
    return _scratch


def fresh_dir() -> Path:
    """A new subfolder of scratch_dir(): files of the same name never clash."""
    return Path(tempfile.mkdtemp(dir=scratch_dir()))


def clean_stale(root: Path | None = None) -> list[Path]:
    """Remove scratch folders (of this user) whose owner process is gone; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(PREFIX + "*"):
        if folder == _scratch or not _ours(folder) or _owner_alive(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _ours(folder: Path) -> bool:
    try:
        st = folder.lstat()
    except OSError:
        return False
    return folder.is_dir() and not folder.is_symlink() and (not hasattr(os, "getuid") or st.st_uid == os.getuid())


def _owner_alive(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return time.time() - folder.stat().st_mtime < LEGACY_AGE_S
    pid, started = owner.get("pid"), owner.get("started")
    return isinstance(pid, int) and _start_time(pid) == started and started is not None


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # gone, or no psutil: treat as gone only when the pid does not exist at all
        return None


def uploads_dir() -> Path:
    folder = paths.home() / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def keep_upload(src: str | os.PathLike[str], name: str | None = None) -> Path:
    """Store an uploaded file once under uploads_dir()/<content hash>/<name>; a file inside the scratch folder
    (Gradio's upload cache) is moved, so it is not kept twice. Returns the kept file."""
    src = Path(src)
    digest = _sha256(src)
    target = uploads_dir() / digest[:16] / (name or src.name)
    if not (target.is_file() and _sha256(target) == digest):
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(target)
    if _scratch is not None and _scratch in src.resolve().parents:
        src.unlink(missing_ok=True)
    return target


def upload_name(path: str | os.PathLike[str]) -> str | None:
    """The file's own name when `path` is a kept upload (uploads_dir()/<content hash>/<name>), else None: the Data
    tab shows "my_data.json (uploaded)", not ~/.cache/tunedesk/uploads/3f2a.../my_data.json.

    >>> upload_name(uploads_dir() / "3f2a9c0d1e2b4a5c" / "my_data.json")  # doctest: +SKIP
    'my_data.json'
    """
    p = Path(path).expanduser()
    try:
        inside = p.resolve().relative_to((paths.home() / UPLOADS).resolve())
    except (OSError, ValueError):
        return None
    return p.name if len(inside.parts) == 2 else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_append_lock = threading.Lock()


def append_json_line(path: Path, record: dict) -> None:
    """Append `record` as one JSON line and fsync it (a run's events.jsonl, a Chat vote file). A torn last line (a
    crash mid-write) is closed off with a newline first, so the new record is never glued onto it; the file opens
    in append mode, so every write lands at the end and nothing is rewritten."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with _append_lock, open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = b"\n" + line
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
