"""Network and file-serving guard: localhost by default, a password before listening, no files from outside."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from apprunner import HEADERS, ROOT, running_app


def _status(opener, url: str, data: dict | None = None) -> int:
    body = urllib.parse.urlencode(data).encode() if data else None
    try:
        with opener.open(url, data=body, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("flag", ["--listen", "--share"])
def test_listen_or_share_without_auth_refuses_to_start(flag):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "ui", flag, "--no-browser"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--auth" in proc.stderr and "TUNEDESK_AUTH" in proc.stderr


def test_malformed_auth_is_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "app", "ui", "--auth", "nopassword", "--no-browser"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "USER:PASS" in proc.stderr


@pytest.mark.slow
def test_auth_rejects_wrong_password_and_files_outside_are_not_served(tmp_path):
    with running_app("--auth", "alice:s3cret", env={"TUNEDESK_RUNS": str(tmp_path)}) as (url, _proc):
        anon = urllib.request.build_opener()
        assert _status(anon, url + "/config") == 401
        assert _status(anon, url + "/login", {"username": "alice", "password": "wrong"}) in (400, 401)
        assert _status(anon, url + "/config") == 401
        jar = CookieJar()
        user = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        assert _status(user, url + "/login", {"username": "alice", "password": "s3cret"}) == 200
        assert _status(user, url + "/config") == 200
        for outside in ("/etc/passwd", str(ROOT / "README.md"), str(ROOT / "app" / "config.py")):
            assert _status(user, url + "/gradio_api/file=" + outside) in (403, 404), outside


@pytest.mark.slow
def test_default_bind_is_localhost_only(tmp_path):
    import psutil

    with running_app(env={"TUNEDESK_RUNS": str(tmp_path)}) as (url, proc):
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        listening = [
            c.laddr
            for p in procs
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listening, f"nothing of the app's processes listens on port {port}"
        # The local address only: a peer column such as ss's "0.0.0.0:*" is not a bind address.
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening


@pytest.mark.slow
def test_uploads_go_to_a_private_folder_and_the_size_limit_answers_413_and_sigterm_removes_it(tmp_path):
    import httpx

    env = {"TUNEDESK_RUNS": str(tmp_path / "runs"), "TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": ""}
    stale = tmp_path / "tunedesk-999999-dead"  # left by an app that was killed: its owner is gone
    stale.mkdir()
    (stale / ".owner.json").write_text('{"pid": 999999, "started": 1.0}')
    (stale / "upload.json").write_text("[]")
    with running_app("--max-upload-mb", "1", env=env) as (url, proc):
        assert not stale.exists()  # cleaned at start
        small = httpx.post(
            url + "/gradio_api/upload", files={"files": ("ok.json", b'[{"a": 1}]')}, headers=HEADERS, timeout=30
        )
        assert small.status_code == 200, small.text
        stored = Path(small.json()[0])
        private = next(tmp_path.glob("tunedesk-*"))
        assert private in stored.parents, (stored, private)
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # other accounts cannot list or read uploads
        big = httpx.post(
            url + "/gradio_api/upload", files={"files": ("big.json", b"x" * (2 << 20))}, headers=HEADERS, timeout=30
        )
        assert big.status_code == 413 and "maximum allowed size" in big.text, (big.status_code, big.text[:300])
        proc.send_signal(signal.SIGTERM)  # what `kill` and a service manager send
        assert proc.wait(30) is not None
    assert not private.exists(), list(private.rglob("*"))


def test_launch_py_listen_without_auth_exits_nonzero_saying_why():
    """The README's own command: launch.py checks the environment, then refuses before serving anything."""
    env = {k: v for k, v in os.environ.items() if k != "TUNEDESK_AUTH"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--listen", "--no-browser"],
        cwd=ROOT,
        env={**env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "--auth USER:PASS" in proc.stderr and "refusing" in proc.stderr, proc.stderr[-1000:]
