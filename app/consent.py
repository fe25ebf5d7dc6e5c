"""Consent to run a model's own Python code (`trust_remote_code`): given by the user's act, checked where it runs.

A model folder can ship Python files (its `auto_map`) that transformers imports when `trust_remote_code=True`:
that code runs with the user's rights. A config flag is not consent: it arrives in presets, in a run's
config.yaml that Resume reopens, or from anyone who can call the app. So the flag only says "this model needs its
code"; the code runs only when this process holds the user's consent for that folder and that exact code:

- in the app, ticking "I have read this model's code and trust it" (Model tab) grants it for the model named;
- on the command line, `--trust-remote-code` grants it for the config's model.

`require()` is called by `app.modeling` wherever a tokenizer, config or model is loaded with the flag on, for
every caller (every tab, the API, the CLI, Resume). Consent is bound to a digest of the folder's `.py` files, so
code changed after the tick is refused again, and it lives only as long as the process (nothing on disk).
No torch, no gradio.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path


class ConsentError(ValueError):
    """Remote code was asked for without the user's consent; the message says how to give it."""


_lock = threading.Lock()
_granted: dict[str, str] = {}


def code_digest(folder: str | Path) -> str:
    """sha256 over the folder's Python files (relative names and bytes, sorted): what would run."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _key(folder: str | Path) -> str:
    return str(Path(folder).expanduser().resolve())


def grant(folder: str | Path) -> None:
    """The user's act: allow the code now in `folder` to run in this process."""
    with _lock:
        _granted[_key(folder)] = code_digest(folder)


def revoke(folder: str | Path | None = None) -> None:
    """Withdraw consent for `folder` (every folder when None)."""
    with _lock:
        if folder is None:
            _granted.clear()
        else:
            _granted.pop(_key(folder), None)


def granted(folder: str | Path) -> bool:
    with _lock:
        given = _granted.get(_key(folder))
    return given is not None and given == code_digest(folder)


def require(folder: str | Path, trust_remote_code: bool) -> None:
    """Raise ConsentError unless the flag is off or the user consented to this folder's current code."""
    if not trust_remote_code or granted(folder):
        return
    with _lock:
        changed = _key(folder) in _granted
    raise ConsentError(message(folder, changed))


def message(folder: str | Path, changed: bool = False) -> str:
    why = "its Python files changed since you confirmed" if changed else "you have not confirmed you trust it"
    return (
        f"model {Path(folder).name} asks to run its own Python code (Trust remote code), and {why}. That code runs "
        "with your rights. Read the .py files in the model folder, then tick \"I have read this model's code and "
        'trust it" (Model tab, Advanced model options) or add --trust-remote-code on the command line; or turn '
        "Trust remote code off."
    )
