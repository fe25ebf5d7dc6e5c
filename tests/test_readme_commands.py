"""Every `python -m app ...` command the README shows parses as printed (issue 20, item 11: the README's chat
command once failed with "unrecognized arguments"), and its `--help` with the same arguments runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import COMMANDS, command_parser

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[list[str]]:
    """The arguments after `python -m app` of each such line in the README's shell code blocks, comments removed,
    placeholders like runs/<id> filled in."""
    out, lang = [], None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            lang = None if lang is not None else (line[3:].strip() or "text")
            continue
        match = re.search(r"python -m app (.*)$", line.split(" #", 1)[0].strip())
        if lang in ("bash", "sh", "console") and match:
            out.append(shlex.split(re.sub(r"<[^>]+>", "x", match.group(1))))
    return out


COMMAND_LINES = readme_commands()


def test_the_readme_shows_every_command():
    shown = {args[0] for args in COMMAND_LINES}
    assert {"train", "estimate", "data", "merge", "export", "evaluate", "chat"} <= shown, shown
    assert shown <= set(COMMANDS)


@pytest.mark.parametrize("args", COMMAND_LINES, ids=[" ".join(a)[:60] for a in COMMAND_LINES])
def test_readme_command_parses_as_printed(args):
    _, parser = command_parser(args[0])
    try:
        parser.parse_args(args[1:])
    except SystemExit as exc:
        pytest.fail(f"`python -m app {' '.join(args)}` is refused by its parser (exit {exc.code})")


def test_readme_commands_help_runs_with_the_same_arguments():
    for name in sorted({args[0] for args in COMMAND_LINES}):
        args = next(a for a in COMMAND_LINES if a[0] == name)
        proc = subprocess.run(
            [sys.executable, "-m", "app", *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0 and "usage: python -m app " + name in proc.stdout, (args, proc.stderr[-800:])
