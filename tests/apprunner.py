"""Start `python -m app ui` in a subprocess on a free port and wait for its page (shared by e2e and security tests)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_urlsafe(24)
"""The access token every app started here gets ($TUNEDESK_TOKEN), so tests can call it like a script would."""
HEADERS = {"X-TuneDesk-Token": TOKEN}


def page_url(url: str) -> str:
    """The address a person opens: the printed one, token included (it sets the cookie the page then uses)."""
    return f"{url}/?token={TOKEN}"


def get(url: str, timeout: float = 30):
    """urlopen with the token header."""
    return urllib.request.urlopen(urllib.request.Request(url, headers=HEADERS), timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> float:
    """Seconds until `url` answers (any HTTP status); raises if the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"app exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.monotonic() - start
        except urllib.error.HTTPError:
            return time.monotonic() - start
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def running_app(
    *args: str,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 120,
    entry: list[str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The app on a free port; `entry` replaces `-m app ui` (e.g. [".../launch.py"])."""
    port = free_port()
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TUNEDESK_TOKEN": TOKEN,
        **(env or {}),
    }
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, *(entry or ["-m", "app", "ui"]), "--no-browser", "--port", str(port), *args],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", timeout, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_path:
            log.close()


def served_config(url: str) -> dict:
    """The page's Gradio config (components, dependencies, css) as a browser receives it."""
    with get(url + "/config") as resp:
        return json.load(resp)


def tab_labels(config: dict) -> list[str]:
    """Labels of every tab in a served config, in page order."""
    return [c["props"].get("label") for c in config["components"] if c["type"] in ("tab", "tabitem")]
