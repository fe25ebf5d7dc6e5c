"""Record validation: detect a dataset's format and turn each raw record into an Example or the problems it has.

Every problem names the record (index and line), the field as the file calls it, and the reason; placeholders are
filled before the checks, and a repeat of an earlier conversation is a warning, not a drop.

    >>> detect_format([{"question": "2+2?", "answer": "4"}])
    ('alpaca', {'instruction': 'question', 'output': 'answer'})
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any

from app.config import DATA_FORMATS
from app.data_io import TOO_DEEP, DataError, Note, RawRecord
from app.data_render import Example, Examples

# Column names seen in the wild for each canonical field, tried in order when data.columns does not name one.
ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
    "system": ("system", "system_prompt"),
    "history": ("history",),
}
CONVERSATION_KEYS = {"messages": ("messages",), "sharegpt": ("conversations", "conversation")}
ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
MISSING = object()


@dataclass
class Problem:
    index: int | None
    """Record index in the source (0-based); None for a note about the whole file."""
    line: int | None
    """1-based line where the record starts, where the source has lines."""
    field: str | None
    """Column as named in the file (e.g. 'question' when mapped to instruction); None for the whole record."""
    message: str
    severity: str = "error"
    """error: the record is skipped. warning: the record is kept, but look at it."""

    def describe(self) -> str:
        """'record 3 (line 5), output: is empty' - one line for logs and the CLI."""
        where = "file" if self.index is None else f"record {self.index}"
        if self.line is not None:
            where += f" (line {self.line})" if self.index is not None else f" line {self.line}"
        where += f", {self.field}" if self.field else ""
        return f"{where}: {self.message}" + (" [warning]" if self.severity == "warning" else "")

    def to_json(self) -> dict[str, Any]:
        """The CLI's problem object; index -1 for a note about the whole file, the line folded into the text."""
        head = f"line {self.line}: " if self.line is not None else ""
        head += "warning: " if self.severity == "warning" else ""
        return {"index": -1 if self.index is None else self.index, "field": self.field, "message": head + self.message}


@dataclass
class LoadResult:
    path: str
    format: str
    """alpaca | sharegpt | messages"""
    examples: Examples
    """The valid examples, in one compact copy; a list's len, indexing, slicing and iteration, plus find(index)."""
    records: int
    """Records in the source, broken ones included: records == len(examples) + skipped."""
    problems: list[Problem]
    skipped: int
    columns: dict[str, str]
    """Canonical field -> column in the file, as detected or given (e.g. {"instruction": "question", ...})."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


# ---- format detection ----------------------------------------------------------------------------------------
def detect_format(
    values: list[Any], format: str = "auto", columns: dict | None = None, where: str = ""
) -> tuple[str, dict[str, str]]:
    """(format, columns) from the first records; `columns` (canonical -> file column) overrides detection.

    >>> detect_format([{"question": "2+2?", "answer": "4"}])
    ('alpaca', {'instruction': 'question', 'output': 'answer'})
    """
    columns = dict(columns or {})
    if format not in DATA_FORMATS:
        raise DataError(f"{where}: format {format!r} is not one of {', '.join(DATA_FORMATS)}")
    sample = [v for v in values[:200] if isinstance(v, dict)]
    keys = Counter(k for v in sample for k in v)
    if format == "auto":
        format = _guess_format(sample, keys, columns, where)
    if format == "alpaca":
        return format, _alpaca_columns(keys, columns)
    return format, _conversation_columns(format, keys, columns)


def _guess_format(sample: list[dict], keys: Counter, columns: dict, where: str) -> str:
    if not sample:
        return "alpaca"  # nothing readable: every record is reported broken under the default format
    for fmt, names in CONVERSATION_KEYS.items():
        if columns.get("messages") in names or columns.get("conversations") in names:
            return fmt
    if "messages" in columns or "conversations" in columns:
        return "sharegpt"
    for fmt, names in CONVERSATION_KEYS.items():
        if any(keys[n] * 2 >= len(sample) for n in names):
            return fmt
    cols = _alpaca_columns(keys, columns, fill=False)
    if "instruction" in cols and "output" in cols:
        return "alpaca"
    found = ", ".join(list(keys)[:12]) or "none"
    raise DataError(
        f"{where}: cannot tell the record format; the records have the columns {found}. Say which column is which "
        "with data.columns, e.g. {instruction: <column>, output: <column>} (CLI: --column instruction=<column>), "
        "or use alpaca (instruction/input/output), sharegpt (conversations) or messages records"
    )


def _alpaca_columns(keys: Counter, columns: dict, fill: bool = True) -> dict[str, str]:
    """Given names first, then the first alias present; `fill` names instruction/output even when absent."""
    out = {}
    for name, aliases in ALIASES.items():
        found = columns.get(name) or next((a for a in aliases if a in keys), None)
        if found is not None:
            out[name] = found
    if fill:
        out.setdefault("instruction", "instruction")
        out.setdefault("output", "output")
    return out


def _conversation_columns(format: str, keys: Counter, columns: dict) -> dict[str, str]:
    names = CONVERSATION_KEYS[format]
    given = columns.get("messages") or columns.get("conversations")
    # Either kind's column name: sharegpt-style turns under "messages" (and the reverse) are common.
    every = names + tuple(n for v in CONVERSATION_KEYS.values() for n in v if n not in names)
    conv = given or next((n for n in every if n in keys), names[0])
    default_tags = ("role", "content") if format == "messages" else ("from", "value")
    out = {
        "messages": conv,
        "role": columns.get("role", default_tags[0]),
        "content": columns.get("content", default_tags[1]),
    }
    system = columns.get("system") or ("system" if "system" in keys else None)
    if system:
        out["system"] = system
    return out


# ---- one record -> one Example -------------------------------------------------------------------------------
class _Report:
    """Collects the problems of one record."""

    def __init__(self, index: int, line: int | None):
        self.index, self.line, self.problems, self.failed = index, line, [], False

    def error(self, field_: str | None, message: str) -> None:
        self.problems.append(Problem(self.index, self.line, field_, message, "error"))
        self.failed = True

    def warn(self, field_: str | None, message: str) -> None:
        self.problems.append(Problem(self.index, self.line, field_, message, "warning"))


def _text(value: dict, column: str | None, required: bool, report: _Report) -> str | None:
    """A text field: numbers are taken as text with a warning, null/absent optional fields are ''."""
    raw = value.get(column, MISSING) if column else MISSING
    if raw is MISSING or raw is None or (isinstance(raw, float) and raw != raw):  # NaN from pandas-made files
        if required:
            report.error(column, "missing" if raw is MISSING else "is null")
            return None
        return ""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        report.warn(column, f"is a number ({raw!r}); used as the text {str(raw)!r}")
        return str(raw)
    if not isinstance(raw, str):
        report.error(column, f"expected text, got {_kind(raw)}")
        return None
    if required and not raw.strip():
        report.error(column, "is empty")
        return None
    return raw


def _kind(raw: Any) -> str:
    names = {bool: "true/false", list: "a list", dict: "an object", int: "a number", float: "a number", str: "text"}
    return names.get(type(raw), type(raw).__name__) + (f" {raw!r}" if isinstance(raw, bool) else "")


def alpaca_example(value: dict, columns: dict[str, str], report: _Report) -> Example | None:
    """instruction (+ input) -> user, output -> assistant; optional system and history ([[user, assistant], ...])."""
    instruction = _text(value, columns["instruction"], True, report)
    given = _text(value, columns.get("input"), False, report)
    output = _text(value, columns["output"], True, report)
    system = _text(value, columns.get("system"), False, report)
    history = _history(value, columns.get("history"), report)
    if report.failed:
        return None
    user = f"{instruction}\n\n{given}" if given.strip() else instruction
    messages = ([{"role": "system", "content": system}] if system.strip() else []) + history
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Example(messages, report.index, {"instruction": instruction, "input": given if given.strip() else ""})


def _history(value: dict, column: str | None, report: _Report) -> list[dict]:
    raw = value.get(column) if column else None
    if raw is None:
        return []
    ok = isinstance(raw, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) and s.strip() for s in p) for p in raw
    )
    if not ok:
        report.error(column, "expected a list of [user, assistant] text pairs")
        return []
    return [{"role": r, "content": s} for pair in raw for r, s in zip(("user", "assistant"), pair, strict=True)]


def conversation_example(value: dict, columns: dict[str, str], report: _Report) -> Example | None:
    """A list of turns ({from, value} or {role, content}); user/assistant must alternate, ending with an answer."""
    column = columns["messages"]
    turns = value.get(column, MISSING)
    if turns is MISSING or turns is None:
        report.error(column, "missing")
        return None
    if not isinstance(turns, list) or not turns:
        report.error(column, "expected a non-empty list of turns")
        return None
    messages = [m for k, t in enumerate(turns) if (m := _turn(t, f"{column}[{k}]", columns, report))]
    system = _text(value, columns.get("system"), False, report)
    if report.failed:
        return None
    if system.strip() and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return _check_order(messages, column, report)


def _turn(turn: Any, where: str, columns: dict[str, str], report: _Report) -> dict | None:
    if not isinstance(turn, dict):
        report.error(where, f"expected an object with role and content, got {_kind(turn)}")
        return None
    role_key = next((k for k in (columns["role"], "role", "from") if k in turn), columns["role"])
    content_key = next((k for k in (columns["content"], "content", "value") if k in turn), columns["content"])
    raw_role = turn.get(role_key)
    role = ROLES.get(str(raw_role).lower()) if isinstance(raw_role, str) else None
    if role is None:
        known = "user/human, assistant/gpt, system"
        report.error(f"{where}.{role_key}", f"unknown role {raw_role!r}; use {known}")
        return None
    content = _text(turn, content_key, True, _Sub(report, where))
    return None if content is None else {"role": role, "content": content}


class _Sub(_Report):
    """Prefixes field names with the turn's place, e.g. conversations[2].value."""

    def __init__(self, parent: _Report, where: str):
        self.parent, self.where = parent, where

    def error(self, field_: str | None, message: str) -> None:
        self.parent.error(f"{self.where}.{field_}", message)

    def warn(self, field_: str | None, message: str) -> None:
        self.parent.warn(f"{self.where}.{field_}", message)


def _check_order(messages: list[dict], column: str, report: _Report) -> Example | None:
    head = [m for m in messages if m["role"] == "system"][:1]
    if any(m["role"] == "system" for m in messages[len(head) :]) or (head and messages[0]["role"] != "system"):
        report.error(column, "a system turn may only come first")
        return None
    turns = messages[len(head) :]
    while turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
        report.warn(column, "the last turn is from the user and has no answer; it is dropped")
    for k, m in enumerate(turns):
        if m["role"] != ("user" if k % 2 == 0 else "assistant"):
            report.error(
                column,
                f"turn {k + len(head)}: expected a {'user' if k % 2 == 0 else 'assistant'} "
                "turn; turns must alternate user, assistant starting with the user",
            )
            return None
    if not turns:
        report.error(column, "no assistant turn: nothing to train on")
        return None
    return Example(head + turns, report.index)


# ---- placeholders and duplicates -----------------------------------------------------------------------------
def fill_placeholders(value: Any, placeholders: dict[str, str]) -> Any:
    """Replace {{name}} in every string of a record.

    >>> fill_placeholders({"output": "I am {{name}}."}, {"name": "TuneBot"})
    {'output': 'I am TuneBot.'}
    """
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: str(placeholders.get(m.group(1), m.group(0))), value)
    if isinstance(value, dict):
        return {k: fill_placeholders(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, placeholders) for v in value]
    return value


def _unfilled(value: Any, report: _Report) -> None:
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if isinstance(item, str) and "{{" not in item:
            continue
        names = sorted(set(_placeholders_in(item)))
        if names:
            shown = ", ".join("{{" + n + "}}" for n in names)
            report.warn(
                key,
                f"placeholder {shown} has no value; set data.placeholders "
                f"(CLI: --placeholder {names[0]}=...) or it trains as written",
            )


def _placeholders_in(item: Any) -> list[str]:
    if isinstance(item, str):
        return PLACEHOLDER.findall(item) if "{{" in item else []  # the `in` test skips the regex on 99% of text
    if isinstance(item, dict):
        item = list(item.values())
    if isinstance(item, list):
        return [name for sub in item for name in _placeholders_in(sub)]
    return []


def _repeats(examples: Examples, keys: array) -> list[tuple[int, int]]:
    """(k, first) for each example k whose conversation repeats the earlier example `first`. Equal hashes are
    found by sorting 8 bytes per example (a dict of every conversation's text held it all a second time), then
    confirmed by comparing the text, so a hash collision is never called a duplicate."""
    import numpy as np

    if len(keys) < 2:
        return []
    hashes = np.frombuffer(keys, dtype=np.int64)
    order = np.argsort(hashes, kind="stable")  # equal hashes stay in file order
    ranked = hashes[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    sizes = np.diff(np.r_[starts, len(ranked)])
    out = []
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
        seen: dict[bytes, int] = {}
        for k in order[start : start + size].tolist():
            first = seen.setdefault(examples.messages_json(k), k)
            if first != k:
                out.append((k, first))
    return sorted(out)


class Loader:
    """Validates records one at a time into one compact Examples, gathering every problem."""

    def __init__(self, fmt: str, cols: dict[str, str], placeholders: dict[str, str]) -> None:
        self.fmt, self.cols, self.placeholders = fmt, cols, placeholders
        self.examples = Examples()
        self.problems: list[Problem] = []
        self.records = 0
        self.keys = array("q")  # hash of each example's conversation, for the duplicate check
        self.lines = array("q")  # line of each example, -1 where the source has no lines

    def add(self, record: RawRecord) -> None:
        self.records += 1
        try:
            example, found = _validate(record, self.fmt, self.cols, self.placeholders)
        except RecursionError:  # a record nested ~1000 deep that parsed, then overflowed a recursive check
            example, found = None, [Problem(record.index, record.line, None, f"the record is {TOO_DEEP}")]
        self.problems += found
        if example is not None:
            self.keys.append(hash(self.examples.append(example)))
            self.lines.append(-1 if record.line is None else record.line)

    def duplicates(self) -> list[Problem]:
        """Warn on each repeat of an earlier record. Kept: repeats may be deliberate weighting, and the train/val
        split keeps copies together so a repeat never leaks into the eval set."""
        out = []
        for k, first in _repeats(self.examples, self.keys):
            message = (
                f"duplicate of record {self.examples[first].index}; kept (it trains twice; remove it if unintended)"
            )
            line = self.lines[k] if self.lines[k] >= 0 else None
            out.append(Problem(self.examples[k].index, line, None, message, "warning"))
        return out

    def result(self, path: str, notes: list[Note]) -> LoadResult:
        problems = [Problem(index, line, None, message, "warning") for index, line, message in notes]
        problems += self.problems + self.duplicates()
        problems.sort(key=lambda p: -1 if p.index is None else p.index)
        skipped = self.records - len(self.examples)
        return LoadResult(path, self.fmt, self.examples, self.records, problems, skipped, self.cols)


def _validate(record: RawRecord, fmt: str, cols: dict, placeholders: dict) -> tuple[Example | None, list[Problem]]:
    report = _Report(record.index, record.line)
    if record.error is not None:
        report.error(None, record.error)
        return None, report.problems
    value = record.value
    if not isinstance(value, dict):
        what = "an object with instruction/output" if fmt == "alpaca" else f"an object with '{cols['messages']}'"
        report.error(None, f"expected {what}, got {_kind(value)}")
        return None, report.problems
    if placeholders:
        value = fill_placeholders(value, placeholders)
    _unfilled(value, report)
    make = alpaca_example if fmt == "alpaca" else conversation_example
    return make(value, cols, report), report.problems
