"""Data files the user picked recently, remembered across restarts for the Data tab's picker. No gradio.

Kept in `paths.home()/recent_data.json` (~/.cache/tunedesk, or $TUNEDESK_HOME) as a JSON list of absolute paths,
newest first, at most MAX. A file that is gone is left out when the list is read, and a broken list file reads as
empty: a picker must never fail because of its history.

>>> remember("assets/sample_data.json")  # doctest: +SKIP
['/home/me/tunedesk/assets/sample_data.json']
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from app import paths

FILE = "recent_data.json"
MAX = 8
"""Eight entries: a dropdown of eight fits a screen without scrolling, and older files are a browse away."""

_lock = threading.Lock()


def list_file() -> Path:
    return paths.home() / FILE


def recent() -> list[str]:
    """The remembered data files that still exist, newest first."""
    return [p for p in _read() if Path(p).exists()]


def remember(path: str | os.PathLike[str]) -> list[str]:
    """Put a local data file (or save_to_disk folder) first in the list; returns the list. A path that names no
    local file (a Hub dataset id, a typo) is not remembered."""
    found = paths.resolve_data_path(str(path))
    if not str(path).strip() or not found.exists():
        return recent()
    entry = str(found.resolve())
    with _lock:
        items = [entry] + [p for p in _read() if p != entry and Path(p).exists()]
        _write(items[:MAX])
        return items[:MAX]


def _read() -> list[str]:
    try:
        items = json.loads(list_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in items if isinstance(p, str)] if isinstance(items, list) else []


def _write(items: list[str]) -> None:
    target = list_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.part")  # whole file or nothing: rename is atomic
        tmp.write_text(json.dumps(items, indent=1), encoding="utf-8")
        tmp.replace(target)
    except OSError:  # a read-only home: the picker just has no history
        pass
