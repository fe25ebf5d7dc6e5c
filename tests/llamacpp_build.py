"""llama-cpp-python (the `gguf` extra) for `make test`, built while the rest of the set-up and the suite run.

PyPI has it as source only: pip compiles llama.cpp, about 10 minutes on 2 cores. Done in line, that would come on
top of the set-up and the whole suite; so `make test` starts the build first, in the background and at the lowest
CPU priority (it takes the cycles the suite leaves idle), and the tests that need llama.cpp run last
(conftest.py orders them) and wait for it here:

    python3 tests/llamacpp_build.py start      # Makefile, before `launch.py --setup-only`: stdlib only
    llamacpp_build.ensure_installed()          # conftest's `llama_cpp` fixture: wait, pip install the wheel, import

The wheel is built with the same interpreter version as .venv (both come from `python3`) into .cache/llamacpp/
(git-ignored) with launch.py's build settings; log, pid and exit status lie beside it. Nothing is started when the
venv already has llama_cpp or the wheel is already built (a second `make test` costs nothing).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / ".cache" / "llamacpp"
LOG, PID, RC = FOLDER / "build.log", FOLDER / "build.pid", FOLDER / "build.rc"
WAIT_S = 60 * 60
"""How long the fixture waits for a build still running: the suite's own limit is the real bound."""


def requirement() -> str:
    """The pin of pyproject's `gguf` extra (also app.llamacpp.REQUIREMENT: a test compares them)."""
    import re

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^gguf = \["([^"]+)"\]', text, re.MULTILINE).group(1)


def wheels() -> list[Path]:
    return sorted(FOLDER.glob("llama_cpp_python-*.whl"))


def _venv_has_it() -> bool:
    python = ROOT / ".venv" / "bin" / "python"
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('llama_cpp') is None)"
    return python.exists() and subprocess.call([str(python), "-c", probe]) == 0


def start() -> int:
    """Start `pip wheel` in the background (niced); return at once. Nothing to do when built or installed."""
    if _venv_has_it() or wheels():
        print("[llamacpp] already built or installed", flush=True)
        return 0
    FOLDER.mkdir(parents=True, exist_ok=True)
    RC.unlink(missing_ok=True)
    sys.path.insert(0, str(ROOT))
    from launch import build_env

    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(FOLDER)]
    script = f"{' '.join(pip)} {requirement()!r}; echo $? > {RC}"
    with LOG.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            ["nice", "-n", "19", "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT,
            env=build_env(), start_new_session=True, cwd=ROOT,
        )  # fmt: skip
    PID.write_text(str(proc.pid))
    print(f"[llamacpp] building {requirement()} in the background (log: {LOG})", flush=True)
    return 0


def _running() -> bool:
    try:
        os.kill(int(PID.read_text()), 0)
    except (OSError, ValueError):
        return False
    return not RC.exists()


def ensure_installed() -> None:
    """Import llama_cpp, first waiting for the background build and installing its wheel into this environment.

    Raises RuntimeError with the build log's tail when there is no build, or it failed."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return
    deadline = time.monotonic() + WAIT_S
    while not wheels() and PID.exists() and _running() and time.monotonic() < deadline:
        time.sleep(5)
    found = wheels()
    if not found:
        tail = LOG.read_text(encoding="utf-8", errors="replace").splitlines()[-25:] if LOG.exists() else []
        raise RuntimeError(
            "llama-cpp-python (the gguf extra) is not installed and no build of it finished"
            + (f" (exit {RC.read_text().strip()})" if RC.exists() else "")
            + ": run `make test`, or `pip install -e '.[gguf]'`.\n"
            + "\n".join(tail)
        )
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", str(found[-1])]
    subprocess.check_call(pip)
    importlib.invalidate_caches()


if __name__ == "__main__":
    if sys.argv[1:] != ["start"]:
        sys.exit("usage: python3 tests/llamacpp_build.py start")
    sys.exit(start())
