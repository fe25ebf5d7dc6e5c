"""Training data: load, detect the format, validate every record, render prompts, tokenize with labels.

The most common silent failure in fine-tuning is data that is not what the user thinks. So every record is
checked and every problem is reported by record index (and line), field and reason; valid records are kept and
the skipped count is always shown. What the Data tab previews is what trains: both go through
`render_segments` and `tokenize_segments` (app/data_render.py).

    load = load_examples("data.jsonl")                    # LoadResult: examples, problems, skipped
    prepared = prepare(cfg.data, tokenizer)               # train/val lists of Encoded, DataStats
    python -m app data inspect data.jsonl --json          # the same from the command line

No gradio; transformers is only touched through the tokenizer object passed in.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import paths
from app.config import DATA_FORMATS, DEFAULT_MODEL, TEMPLATES, DataConfig
from app.data_io import (
    TOO_DEEP,
    DataError,
    Note,
    RawRecord,
    looks_like_hub_id,
    read_page,
    read_source,
    sniff,
)
from app.data_render import (
    IGNORE,
    Encoded,
    Example,
    Examples,
    RenderError,
    mask_view,
    render_segments,
    resolve_template,
    to_encoded,
    tokenize_segments,
)

__all__ = [
    "DataError",
    "Problem",
    "Example",
    "Examples",
    "LoadResult",
    "Encoded",
    "DataStats",
    "Prepared",
    "load_examples",
    "load_from_config",
    "preview",
    "resolve_template",
    "render_segments",
    "encode_example",
    "mask_view",
    "prepare",
    "prepare_loaded",
    "prepare_preview",
    "length_histogram",
    "IGNORE",
    "RenderError",
    "add_arguments",
    "main",
]

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[float, str], None]

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
TOKEN_SAMPLE = 20_000
"""Most examples the Data tab tokenizes for its statistics: ~6 s with the chat template on a 2-core machine
(~0.3 ms each). All 1,000,000 records of a 55 MB file took ~5 minutes and kept ~3 GB of token lists; beyond
this, that many evenly spaced examples stand for the rest (training still tokenizes every one)."""
PREVIEW_CHARS = 2_000
"""Characters of one cell the Records table shows: a page of 20 records near MAX_RECORD_CHARS would send 20 MB
to the browser; the record view shows a whole record."""
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


@dataclass
class DataStats:
    """Token lengths are counted before truncation; tokens_per_epoch counts what the model sees after it."""

    records: int
    valid: int
    skipped: int
    total_tokens: int
    mean_tokens: float
    max_tokens: int
    truncated: int
    """Examples longer than max_seq_len (their end is cut)."""
    truncated_share: float
    train_count: int
    val_count: int
    tokens_per_epoch: int
    lengths: list[int]
    max_seq_len: int = 0

    def to_json(self) -> dict[str, Any]:
        """The CLI's "tokens" block."""
        return {
            "total": self.total_tokens,
            "mean": round(self.mean_tokens, 2),
            "max": self.max_tokens,
            "truncated": self.truncated,
        }


@dataclass
class Prepared:
    train: list[Encoded]
    val: list[Encoded]
    """Empty when val_size leaves no record for eval: then there is no eval."""
    stats: DataStats
    load: LoadResult
    template: str = "alpaca"
    """The template that was used: alpaca | chat."""
    sampled: int | None = None
    """When train/val/stats come from TOKEN_SAMPLE evenly spaced examples (prepare_preview): how many examples
    they stand for. None: every example was tokenized (what training always does)."""


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


class _Loader:
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


# ---- loading -------------------------------------------------------------------------------------------------
def load_examples(
    path: str,
    format: str = "auto",
    columns: dict | None = None,
    placeholders: dict | None = None,
    max_records: int | None = None,
) -> LoadResult:
    """Read and validate every record (the first `max_records` when given); nothing is dropped silently.

    Records stream from the reader one at a time (JSON Lines and JSON lists) and the valid ones are kept once,
    compactly (Examples): a 55 MB, 1,000,000-line JSONL loads with a peak of a few times its size.

    >>> res = load_examples("assets/sample_data.json")
    >>> res.format, res.records, len(res.examples), res.skipped
    ('alpaca', 300, 300, 0)
    """
    source_path = Path(path).expanduser()
    source = read_source(source_path, sniff(source_path), max_records)
    records = iter(source.records)
    head = _head(records)
    fmt, cols = detect_format([r.value for r in head if r.error is None], format, columns, where=str(path))
    loader = _Loader(fmt, cols, placeholders or {})
    for record in itertools.chain(head, records):
        loader.add(record)
    return loader.result(str(path), source.notes)


def _head(records: Iterator[RawRecord], valid: int = 200) -> list[RawRecord]:
    """The first records, up to `valid` readable ones: what detect_format looks at."""
    head: list[RawRecord] = []
    found = 0
    for record in records:
        head.append(record)
        found += record.error is None
        if found >= valid:
            break
    return head


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


def load_from_config(data_cfg: DataConfig) -> LoadResult:
    """load_examples with the config's format, columns and placeholders; a relative path is found in the working
    directory or the TuneDesk folder (app.paths.resolve_data_path)."""
    return load_examples(_source(data_cfg.path), data_cfg.format, data_cfg.columns, data_cfg.placeholders)


def _source(path: str) -> str:
    if not path.strip():
        raise DataError("data.path is empty: choose a dataset file (e.g. assets/sample_data.json)")
    resolved = paths.resolve_data_path(path)
    return path if not resolved.exists() and looks_like_hub_id(path) else str(resolved)


# ---- preview (raw rows, lazy) --------------------------------------------------------------------------------
def preview(
    path: str, page: int = 0, page_size: int = 20, format: str = "auto", columns: dict | None = None
) -> tuple[pd.DataFrame, int | None]:
    """(raw rows of one page as a DataFrame, total rows or None), read lazily (app.data_io.read_page): a 100k
    record JSONL shows page one in ~0.1 s. Column '#' is the record index; a broken row shows '_error'.

    `format` and `columns` put the mapped columns first (instruction, input, output or the conversation).
    """
    import pandas as pd

    source_path = Path(_source(path))
    records, total = read_page(source_path, sniff(source_path), max(page, 0) * page_size, page_size)
    rows = [_row(r) for r in records]
    frame = pd.DataFrame(rows)
    return frame[_column_order(frame, rows, format, columns)] if rows else frame, total


def _row(record: RawRecord) -> dict[str, Any]:
    if record.error is not None:
        return {"#": record.index, "_error": (f"line {record.line}: " if record.line else "") + record.error}
    value = record.value if isinstance(record.value, dict) else {"value": record.value}
    cells = {
        k: _cell(v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v, ensure_ascii=False))
        for k, v in value.items()
    }
    return {"#": record.index, **cells}


def _cell(value: Any) -> Any:
    """A table cell as sent to the browser: text past PREVIEW_CHARS is cut, saying how long it is.

    >>> _cell("x" * 5000)[-30:]
    'xxx… (5,000 characters in all)'
    """
    if not isinstance(value, str) or len(value) <= PREVIEW_CHARS:
        return value
    return value[:PREVIEW_CHARS] + f"… ({len(value):,} characters in all)"


def _column_order(frame, rows: list[dict], format: str, columns: dict | None) -> list[str]:
    try:
        _, cols = detect_format([r for r in rows if "_error" not in r], format, columns)
    except DataError:
        cols = {}
    mapped = [c for key, c in cols.items() if key not in ("role", "content") and c in frame.columns]
    rest = [c for c in frame.columns if c != "#" and c not in mapped]
    return ["#", *dict.fromkeys(mapped), *rest]


# ---- encoding ------------------------------------------------------------------------------------------------
def encode_example(example: Example, tokenizer: Any, data_cfg: DataConfig) -> Encoded:
    """One example through the training path: render, tokenize, cut at max_seq_len, label.

    For mask_view's cut tokens, encode again with a large max_seq_len: replace(data_cfg, max_seq_len=10**9).
    """
    segments = render_segments(example, tokenizer, data_cfg.template, data_cfg.system_prompt)
    ((ids, flags),) = tokenize_segments([segments], tokenizer)
    return to_encoded(ids, flags, example.index, data_cfg.max_seq_len, data_cfg.train_on_prompt)


def prepare(data_cfg: DataConfig, tokenizer: Any, progress: Progress | None = None, seed: int = 42) -> Prepared:
    """Load, validate, render and tokenize every record; split train/val deterministically by `seed`."""
    return prepare_loaded(load_from_config(data_cfg), data_cfg, tokenizer, progress, seed)


def prepare_loaded(
    load: LoadResult,
    data_cfg: DataConfig,
    tokenizer: Any,
    progress: Progress | None = None,
    seed: int = 42,
    batch: int = 256,
) -> Prepared:
    """prepare() for an already loaded LoadResult; records lost in encoding are added to its problems."""
    template = resolve_template(data_cfg.template, tokenizer)
    cfg = replace(data_cfg, template=template)
    examples = load.examples[: data_cfg.max_samples] if data_cfg.max_samples else load.examples
    encoded: list[Encoded] = []
    lost: set[int] = set()
    for start in range(0, len(examples), batch):
        chunk = examples[start : start + batch]
        encoded += _encode_chunk(chunk, tokenizer, cfg, load, lost)
        if progress is not None:
            progress(min(1.0, (start + len(chunk)) / max(len(examples), 1)), f"tokenized {start + len(chunk)} records")
    if lost:
        load.examples = Examples(e for e in load.examples if e.index not in lost)
        load.skipped += len(lost)
        load.problems.sort(key=lambda p: -1 if p.index is None else p.index)
    train, val = split_train_val(encoded, data_cfg.val_size, seed)
    return Prepared(train, val, compute_stats(load, train, val, data_cfg.max_seq_len), load, template)


def prepare_preview(
    load: LoadResult, data_cfg: DataConfig, tokenizer: Any, progress: Progress | None = None, seed: int = 42
) -> Prepared:
    """prepare_loaded for the Data tab: every example up to TOKEN_SAMPLE, else TOKEN_SAMPLE evenly spaced ones
    (Prepared.sampled says how many they stand for). Prepared.load is the whole `load` either way."""
    count = min(len(load.examples), data_cfg.max_samples or len(load.examples))
    if count <= TOKEN_SAMPLE:
        return prepare_loaded(load, data_cfg, tokenizer, progress, seed)
    sample = Examples(load.examples[k * count // TOKEN_SAMPLE] for k in range(TOKEN_SAMPLE))
    part = replace(load, examples=sample)  # shares the problems list: a record lost in encoding is listed
    prepared = prepare_loaded(part, replace(data_cfg, max_samples=0), tokenizer, progress, seed)
    return replace(prepared, load=load, sampled=count)


def _encode_chunk(chunk: list[Example], tokenizer: Any, cfg: DataConfig, load: LoadResult, lost: set[int]):
    rendered = []
    for ex in chunk:
        try:
            rendered.append((ex, render_segments(ex, tokenizer, cfg.template, cfg.system_prompt)))
        except RenderError as exc:
            _lose(load, lost, ex.index, str(exc))
    out = []
    for (ex, _), (ids, flags) in zip(rendered, tokenize_segments([s for _, s in rendered], tokenizer), strict=True):
        if not any(flags[: cfg.max_seq_len]):
            _lose(
                load,
                lost,
                ex.index,
                f"response cut off entirely by max_seq_len={cfg.max_seq_len} (the prompt "
                f"alone is {flags.index(True) if True in flags else len(ids)} tokens); "
                "raise max_seq_len or shorten the prompt",
            )
            continue
        out.append(to_encoded(ids, flags, ex.index, cfg.max_seq_len, cfg.train_on_prompt))
    return out


def _lose(load: LoadResult, lost: set[int], index: int, message: str) -> None:
    lost.add(index)
    load.problems.append(Problem(index, None, None, message, "error"))


def split_train_val(items: list[Encoded], val_size: float, seed: int = 42) -> tuple[list[Encoded], list[Encoded]]:
    """Hold out int(n x val_size) examples (0 = no eval), chosen by a seeded shuffle; identical examples stay on
    the same side so a duplicate never scores eval loss on something it trained on.

    >>> [len(part) for part in split_train_val([Encoded([i], [i], 1, False, i) for i in range(10)], 0.2)]
    [8, 2]
    """
    n_val = int(len(items) * val_size)
    if n_val == 0:
        return list(items), []
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, item in enumerate(items):
        groups.setdefault(tuple(item.input_ids), []).append(k)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    chosen: set[int] = set()
    for members in order:
        if len(chosen) >= n_val:
            break
        chosen.update(members)
    if len(chosen) >= len(items):
        return list(items), []
    return [x for k, x in enumerate(items) if k not in chosen], [x for k, x in enumerate(items) if k in chosen]


def compute_stats(load: LoadResult, train: list[Encoded], val: list[Encoded], max_seq_len: int) -> DataStats:
    kept = sorted(train + val, key=lambda e: e.index)
    lengths = [e.full_length for e in kept]
    truncated = sum(e.truncated for e in kept)
    return DataStats(
        records=load.records,
        valid=load.records - load.skipped,
        skipped=load.skipped,
        total_tokens=sum(lengths),
        mean_tokens=sum(lengths) / len(lengths) if lengths else 0.0,
        max_tokens=max(lengths, default=0),
        truncated=truncated,
        truncated_share=truncated / len(kept) if kept else 0.0,
        train_count=len(train),
        val_count=len(val),
        tokens_per_epoch=sum(len(e.input_ids) for e in train),
        lengths=lengths,
        max_seq_len=max_seq_len,
    )


def length_histogram(lengths: list[int], max_seq_len: int):
    """Token-length histogram with the max_seq_len cut line and the share of examples that are cut."""
    import plotly.graph_objects as go

    cut = sum(n > max_seq_len for n in lengths)
    share = cut / len(lengths) if lengths else 0.0
    fig = go.Figure(
        go.Histogram(x=lengths, nbinsx=min(60, max(10, len(set(lengths)))), name="examples", marker_color="#4C78A8")
    )
    fig.add_vline(
        x=max_seq_len,
        line_dash="dash",
        line_color="#E45756",
        annotation_text=f"max_seq_len {max_seq_len}: {cut} cut ({share:.1%})",
        annotation_position="top",
    )
    fig.update_layout(
        title=f"Tokens per example ({len(lengths)} examples)",
        xaxis_title="tokens",
        yaxis_title="examples",
        bargap=0.05,
        showlegend=False,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
    )
    return fig


# ---- CLI: python -m app data inspect FILE --------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["inspect"], help="inspect: load, validate and tokenize a dataset file")
    parser.add_argument("file", help="JSON/JSONL/CSV/Parquet file, save_to_disk folder or hub dataset id")
    parser.add_argument("--format", default="auto", choices=DATA_FORMATS, help="record format (default: detect)")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model whose tokenizer counts tokens (default: {DEFAULT_MODEL}; only the tokenizer loads)",
    )
    parser.add_argument("--max-seq-len", type=int, default=DataConfig.max_seq_len, help="tokens per example")
    parser.add_argument("--template", default="auto", choices=TEMPLATES, help="prompt template (default: auto)")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="column mapping, e.g. --column instruction=question --column output=answer",
    )
    parser.add_argument(
        "--placeholder",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace {{KEY}} in every record, e.g. --placeholder name=TuneBot",
    )
    parser.add_argument("--system-prompt", default="", help="system message before every example (chat template)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def main(args) -> int:
    try:
        cfg = DataConfig(
            path=args.file,
            format=args.format,
            template=args.template,
            max_seq_len=args.max_seq_len,
            columns=_pairs(args.column, "--column"),
            placeholders=_pairs(args.placeholder, "--placeholder"),
            system_prompt=args.system_prompt,
        )
        load = load_from_config(cfg)
        tokenizer = _tokenizer(args.model)
        prepared = prepare_loaded(load, cfg, tokenizer)
    except (DataError, RenderError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    stats = prepared.stats
    if args.json:
        print(
            json.dumps(
                {
                    "format": load.format,
                    "records": stats.records,
                    "valid": stats.valid,
                    "skipped": stats.skipped,
                    "problems": [p.to_json() for p in load.problems],
                    "tokens": stats.to_json(),
                },
                ensure_ascii=False,
            )
        )
    else:
        _print_summary(prepared, cfg, args.model)
    return 0 if stats.valid > 0 else 1


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _tokenizer(model: str) -> Any:
    from app.modeling import ModelError, load_tokenizer, resolve_model

    try:
        return load_tokenizer(resolve_model(model))
    except (ModelError, OSError, ValueError) as exc:
        raise DataError(f"cannot load the tokenizer of {model}: {_one_line(exc)}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _print_summary(prepared: Prepared, cfg: DataConfig, model: str, limit: int = 40) -> None:
    load, s = prepared.load, prepared.stats
    cols = ", ".join(f"{k}={v}" for k, v in load.columns.items())
    print(f"{load.path}: {load.format}, {s.records} records, {s.valid} valid, {s.skipped} skipped ({cols})")
    print(f"template {prepared.template} (tokenizer of {model}), max_seq_len {cfg.max_seq_len}")
    print(
        f"tokens: total {s.total_tokens:,}, mean {s.mean_tokens:.1f}, max {s.max_tokens:,}; {s.truncated} cut "
        f"({s.truncated_share:.1%}); train {s.train_count} / val {s.val_count}; {s.tokens_per_epoch:,} per epoch"
    )
    if load.problems:
        errors = len(load.errors)
        print(f"problems: {errors} errors (records skipped), {len(load.problems) - errors} warnings (records kept)")
        for p in load.problems[:limit]:
            print(f"  {p.describe()}")
        if len(load.problems) > limit:
            print(f"  ... and {len(load.problems) - limit} more (--json lists all)")
