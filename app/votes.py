"""Chat votes become preference data: each vote appends one pair to a JSON Lines file the user names. No gradio.

A vote compares two answers to the same prompt (two columns of the Chat tab). The record is TRL's standard
conversational layout, which app.preference_data reads and a DPO, ORPO or SimPO run trains on directly, plus who
answered and when:

    {"prompt": [{"role": "user", "content": "Hi"}],
     "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
     "rejected": [{"role": "assistant", "content": "hi hi hi"}],
     "models": {"chosen": "my-run", "rejected": "smollm2-135m-instruct (base)"},
     "time": "2026-01-01T12:00:00+01:00"}

The file only ever grows: each record is one line appended (O_APPEND, one write, fsync), never a rewrite, so the
votes already there survive a crash mid-vote and two voters never overwrite each other. Each file voted into is put
among the recent files (app.recent), so the Data tab's dataset picker lists it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from app import files, paths, recent

SUFFIX = ".jsonl"
_lock = threading.Lock()


class VoteError(ValueError):
    """A vote that cannot be recorded; the message says why and what to do."""


@dataclass(frozen=True)
class Side:
    """One column's side of a vote: the model's name and its conversation, ending with the answer voted on."""

    model: str
    messages: list[dict]


def default_path() -> Path:
    """Where votes go unless the user names another file: <home>/votes/preferences.jsonl (app.paths.home)."""
    return paths.home() / "votes" / f"preferences{SUFFIX}"


def target(path: str | os.PathLike[str] | None) -> Path:
    """The vote file a path names, resolved as the Data tab resolves data paths (app.paths.resolve_data_path), so
    the file a vote wrote is the file the same text loads there. Raises VoteError for a path that cannot be one.

    >>> target("~/votes.txt")
    Traceback (most recent call last):
    ...
    app.votes.VoteError: votes are appended as JSON Lines: name a .jsonl file (not ~/votes.txt)
    """
    text = str(path or "").strip()
    if not text:
        raise VoteError("name the file votes go to (a .jsonl path)")
    if not text.lower().endswith(SUFFIX):
        raise VoteError(f"votes are appended as JSON Lines: name a {SUFFIX} file (not {text})")
    found = paths.resolve_data_path(text).resolve()
    if found.is_dir():
        raise VoteError(f"{found} is a folder: name a {SUFFIX} file")
    return found


def problems(chosen: Side, rejected: Side) -> list[str]:
    """Why two sides are not one preference pair: each must end with a non-empty answer to the same last prompt,
    and the answers must differ (a pair of equal answers teaches nothing).

    >>> q = {"role": "user", "content": "Hi"}
    >>> problems(Side("a", [q, {"role": "assistant", "content": "Hello"}]), Side("b", [q]))
    ['b has no answer to vote on yet']
    """
    out = [f"{s.model} has no answer to vote on yet" for s in (chosen, rejected) if not _answer(s)]
    if out:
        return out
    if _last_prompt(chosen) is None or _last_prompt(chosen) != _last_prompt(rejected):
        return [f"{chosen.model} and {rejected.model} answered different prompts: send one prompt to both"]
    if chosen.model == rejected.model:
        return [f"the better and the worse answer are both {chosen.model}'s: pick two different columns"]
    if _answer(chosen).strip() == _answer(rejected).strip():
        return [f"{chosen.model} and {rejected.model} gave the same answer: there is nothing to prefer"]
    return []


def make_record(chosen: Side, rejected: Side, when: datetime | None = None) -> dict:
    """The preference record of a vote. The prompt is the chosen side's conversation before its answer: the
    conversation the user endorsed (in a multi-turn chat each column's earlier answers are its own)."""
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in chosen.messages[:-1]],
        "chosen": [{"role": "assistant", "content": _answer(chosen)}],
        "rejected": [{"role": "assistant", "content": _answer(rejected)}],
        "models": {"chosen": chosen.model, "rejected": rejected.model},
        "time": (when or datetime.now()).astimezone().isoformat(timespec="seconds"),
    }


def record_vote(path: str | os.PathLike[str] | None, chosen: Side, rejected: Side) -> tuple[Path, int]:
    """Append the vote "chosen is better than rejected" to the file `path` names; returns (the file, how many
    records it holds now). The file joins the recent files, so the Data tab lists it. Raises VoteError."""
    file = target(path)
    found = problems(chosen, rejected)
    if found:
        raise VoteError("; ".join(found))
    try:
        count = append(file, make_record(chosen, rejected))
    except OSError as exc:
        raise VoteError(f"cannot write {file}: {exc.strerror or exc}") from None
    recent.remember(file)
    return file, count


def append(file: Path, record: dict) -> int:
    """Append `record` as one JSON line and fsync it; returns the file's line count. A torn last line (a crash
    mid-write) is closed off with a newline first, so the new record is never glued onto it."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with _lock:  # the count is of this append's file: no other vote between the write and the count
        files.append_json_line(file, record)
        with open(file, "rb") as fh:
            return sum(1 for text in fh if text.strip())


def _answer(side: Side) -> str:
    last = side.messages[-1] if side.messages else {}
    return str(last.get("content") or "") if last.get("role") == "assistant" else ""


def _last_prompt(side: Side) -> str | None:
    users = [m["content"] for m in side.messages[:-1] if m.get("role") == "user"]
    return users[-1] if users else None
