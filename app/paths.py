"""Where TuneDesk keeps things: one place, overridable by $TUNEDESK_HOME. No torch, no gradio."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: presets/, assets/ and (by default) runs/ live here."""


def home() -> Path:
    """$TUNEDESK_HOME, else ~/.cache/tunedesk."""
    env = os.environ.get("TUNEDESK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunedesk"


def models_dir() -> Path:
    """Model cache: the converted default model and any converted .gguf files."""
    return home() / "models"


def runs_dir(output_dir: str | os.PathLike[str] = "runs") -> Path:
    """Run folders; a relative output_dir is taken from $TUNEDESK_RUNS, else from the checkout."""
    path = Path(output_dir).expanduser()
    if path.is_absolute():
        return path
    base = os.environ.get("TUNEDESK_RUNS")
    return Path(base).expanduser() if base else ROOT / path


def presets_dir() -> Path:
    return ROOT / "presets"


def assets_dir() -> Path:
    return ROOT / "assets"


def resolve_data_path(path: str) -> Path:
    """A data path as written in a config: absolute, relative to the working directory, or to the checkout."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return ROOT / p
