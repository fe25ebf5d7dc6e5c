"""launch.py: the one-command bootstrap, and the network guard at its end."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from apprunner import running_app, served_config, tab_labels

ROOT = Path(__file__).resolve().parent.parent


def _launch_module():
    spec = importlib.util.spec_from_file_location("launch", ROOT / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_options_are_split_from_app_options():
    launch = _launch_module()
    setup_only, extras, rest = launch._split_args(
        ["--setup-only", "--extras", "test", "--port", "7861", "--no-browser"]
    )
    assert setup_only and extras == "test" and rest == ["--port", "7861", "--no-browser"]


def test_the_gguf_extra_is_built_the_same_way_by_launch_the_export_tab_and_make_test():
    """launch.py (before the app is importable), app.llamacpp (the Export tab's Install) and make test's
    background build (tests/llamacpp_build.py) pin the same llama-cpp-python and build it with the same settings."""
    import llamacpp_build

    from app import llamacpp

    launch = _launch_module()
    assert llamacpp_build.requirement() == llamacpp.REQUIREMENT
    for env in (
        {},
        {"CMAKE_ARGS": "-DGGML_CUDA=on"},
        {"CMAKE_ARGS": "-DLLAVA_BUILD=ON", "CMAKE_BUILD_PARALLEL_LEVEL": "1"},
    ):
        assert launch.build_env(env) == llamacpp.build_env(env)
    assert "-DLLAVA_BUILD=OFF" in launch.build_env({})["CMAKE_ARGS"]


def test_install_stamp_changes_with_extras_and_pyproject():
    launch = _launch_module()
    assert launch._stamp_value("") != launch._stamp_value("test")
    assert launch._stamp_value("test") == launch._stamp_value("test")


def test_second_launch_reinstalls_nothing_and_listen_without_auth_is_refused():
    """In a prepared environment the second run skips installing; --listen without --auth exits non-zero."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--listen", "--no-browser"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**_clean_env(), "TUNEDESK_AUTH": ""},
    )
    assert proc.returncode != 0
    assert "--auth" in proc.stderr and "refusing" in proc.stderr
    if _set_up_by_make_test():
        proc2 = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "--setup-only", "--extras", "test"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc2.returncode == 0 and "environment up to date" in proc2.stdout
        assert INSTALL_LINE not in proc2.stdout


INSTALL_LINE = "[launch] pip install"
"""What launch.py prints when it installs (its _pip); other tools' advice to "pip install" something is not it."""


def _set_up_by_make_test() -> bool:
    """make setup ran launch.py --extras test,trackers before us: its stamp covers a request for fewer extras."""
    return any("test" in p.name.split("-", 2)[-1].split(",") for p in Path(sys.prefix).glob(".tunedesk-stamp-*"))


def _clean_env():
    import os

    return {k: v for k, v in os.environ.items() if k != "TUNEDESK_AUTH"}


@pytest.mark.slow
def test_launch_py_serves_the_page_with_every_tab_within_60_s(tmp_path):
    """Once set up, `python launch.py --no-browser --port P` (the README's command) serves the page, with every
    tab, within 60 s of starting."""
    from test_ui_app import TAB_LABELS

    env = {"TUNEDESK_RUNS": str(tmp_path / "runs")}
    with running_app(env=env, log_path=tmp_path / "launch.log", timeout=60, entry=[str(ROOT / "launch.py")]) as (
        url,
        _proc,
    ):
        config = served_config(url)
    assert [label for label in tab_labels(config) if label in TAB_LABELS] == TAB_LABELS
    if _set_up_by_make_test():  # nothing is reinstalled
        log = (tmp_path / "launch.log").read_text()
        assert "environment up to date" in log and INSTALL_LINE not in log, log[-2000:]
