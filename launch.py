#!/usr/bin/env python3
"""TuneDesk bootstrap: one command from a fresh clone to a running app.

    python launch.py [--port 7860] [--no-browser] [--listen --auth USER:PASS] [--model ID] [--lang en|zh]

1. Uses the virtual environment it runs in, or creates `.venv` beside this file and re-runs itself there.
2. Installs the project (and torch==2.13.0 when no torch is present) unless nothing changed since the last
   install: a stamp in the environment holds a hash of pyproject.toml and the extras.
3. Fetches and converts the embedded default model once (SmolLM2-135M-Instruct, into ~/.cache/tunedesk/models
   or $TUNEDESK_HOME/models).
4. Starts the app: `python -m app ui ...` with the remaining options.

`--setup-only` stops after step 3 (used by `make test` with `--extras test,trackers`).
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TORCH_PIN = "torch==2.13.0"


def _in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _split_args(argv: list[str]) -> tuple[bool, str, list[str]]:
    """Pull launch.py's own options out of argv; the rest goes to `python -m app ui`."""
    setup_only, extras, rest = False, "", []
    it = iter(argv)
    for arg in it:
        if arg == "--setup-only":
            setup_only = True
        elif arg == "--extras":
            extras = next(it, "")
        elif arg.startswith("--extras="):
            extras = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return setup_only, extras, rest


def _stamp_value(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(extras.encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def build_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment pip builds llama-cpp-python (the `gguf` extra, source only on PyPI) in: no multimodal library
    (TuneDesk does not use it; it is a third of the build) and every core. Settings the user made are kept. The same
    as app.llamacpp.build_env (a test compares them: launch.py runs before the app is importable)."""
    env = dict(os.environ if env is None else env)
    if "LLAVA_BUILD" not in env.get("CMAKE_ARGS", ""):
        env["CMAKE_ARGS"] = (env.get("CMAKE_ARGS", "") + " -DLLAVA_BUILD=OFF").strip()
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    return env


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("[launch] " + " ".join(cmd[2:]), flush=True)
    subprocess.check_call(cmd, env=build_env())


def _has_module(name: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({name!r}) is None)"
    return subprocess.call([sys.executable, "-c", probe]) == 0


def _stamp(extras: str) -> Path:
    return Path(sys.prefix) / f".tunedesk-stamp{'-' + extras if extras else ''}"


def _up_to_date(extras: str) -> bool:
    stamp = _stamp(extras)
    return stamp.exists() and stamp.read_text().strip() == _stamp_value(extras)


def _extras_of(extras: str) -> set[str]:
    """`--extras test,trackers` -> {"test", "trackers"}."""
    return {name.strip() for name in extras.split(",") if name.strip()}


def install(extras: str) -> None:
    # an up-to-date install with more extras holds everything a smaller one needs (make test, then launch.py)
    stamped = (p.name.removeprefix(".tunedesk-stamp").lstrip("-") for p in Path(sys.prefix).glob(".tunedesk-stamp*"))
    if any(_extras_of(extras) <= _extras_of(e) and _up_to_date(e) for e in stamped) and _has_module("app"):
        print("[launch] environment up to date", flush=True)
        return
    stamp, want = _stamp(extras), _stamp_value(extras)
    if not _has_module("torch"):
        _pip(TORCH_PIN)
    target = f"{ROOT}[{extras}]" if extras else str(ROOT)
    _pip("-e", target)
    stamp.write_text(want)


def main() -> int:
    setup_only, extras, rest = _split_args(sys.argv[1:])
    if not _in_venv():
        if not _venv_python().exists():
            print(f"[launch] creating {VENV}", flush=True)
            venv.EnvBuilder(with_pip=True).create(VENV)
        os.execv(str(_venv_python()), [str(_venv_python()), str(Path(__file__).resolve()), *sys.argv[1:]])
    install(extras)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    code = subprocess.call([sys.executable, "-m", "app", "setup"], cwd=ROOT, env=env)
    if code != 0 or setup_only:
        return code
    os.chdir(ROOT)
    os.execv(sys.executable, [sys.executable, "-m", "app", "ui", *rest])


if __name__ == "__main__":
    sys.exit(main())
