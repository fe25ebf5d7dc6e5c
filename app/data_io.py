"""Read raw records from a dataset source, keeping every broken record visible instead of crashing.

Sources: a JSON list, JSON Lines, CSV/TSV, Parquet, a `datasets.save_to_disk` folder, or a hub dataset id. The
file's content decides over its name: a JSON Lines file named .json or a Parquet file named .json is still read,
a PNG renamed .json is refused with a message saying what it is. Records come out as `RawRecord`s; a record that
cannot be parsed (a bad JSONL line, a ragged CSV row) carries its error and its line number instead of a value.

Used by app.data; no torch, no transformers, no gradio.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# First bytes of files people rename to .json by mistake, and what to tell them.
MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx/.docx is one too; export it as CSV or JSON)"),
    (b"\x1f\x8b", "gzip-compressed (decompress it first, e.g. `gunzip FILE`)"),
    (b"BZh", "bzip2-compressed (decompress it first)"),
    (b"\x7fELF", "a program binary"),
    (b"SQLite format 3", "an SQLite database"),
]
TEXT_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt"}
MAX_RECORD_CHARS = 1_000_000
"""Longest record read, in characters of its JSON text. A training example is at most a few thousand tokens
(8,192 tokens x ~4 characters = 33 KB), so 1,000,000 characters is 30x any sensible one. Without a cap, one 36 MB
record took 11 GB to tokenize and sent 69 MB to the browser; a longer record is listed as a problem instead."""
TOO_DEEP = (
    f"nested too deeply: more than ~{sys.getrecursionlimit()} levels of [ ] or {{ }}, the most Python's JSON "
    "reader follows. Records are objects of text fields a few levels deep; check how the file was written"
)
CSV_CELL_LIMIT = 4 * MAX_RECORD_CHARS
csv.field_size_limit(max(csv.field_size_limit(), CSV_CELL_LIMIT))
"""Python's default, 131,072 characters a cell, raised csv.Error (a bare traceback) on one long answer; a row
over MAX_RECORD_CHARS is now listed as a problem of its record, and only a cell over this stops the file."""
Note = tuple[int | None, int | None, str]
"""(record index or None, line or None, message): a warning about the file, or about one record's line."""
FORMAT_HINT = (
    "TuneDesk reads a JSON list, JSON Lines, CSV, Parquet, a datasets.save_to_disk folder or a hub dataset id"
)


class DataError(Exception):
    """The source cannot be read at all; the message names it and says what to do."""


@dataclass
class RawRecord:
    index: int
    """Position of the record in the source (0-based), broken records included."""
    line: int | None
    """1-based line where the record starts, where the source has lines."""
    value: Any = None
    error: str | None = None
    """Why the record could not be parsed (then value is None)."""


@dataclass
class RawSource:
    """What a reader found: the records, read as they are iterated (once), and notes about the file."""

    kind: str
    """json | jsonl | csv | parquet | disk | hub"""
    records: Iterable[RawRecord]
    """A list, or a generator that streams a JSON Lines file or a JSON list record by record."""
    notes: list[Note] = field(default_factory=list)
    """Warnings, e.g. a line that is not UTF-8; a streaming reader adds them as it goes, so read them after
    the records."""


# ---- finding out what a source is ----------------------------------------------------------------------------
def looks_like_hub_id(name: str) -> bool:
    """`owner/name` without a file suffix: 'tatsu-lab/alpaca' yes, 'data/train.json' no."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not Path(name).suffix


def sniff(path: Path) -> str:
    """The reader for `path`: json | jsonl | csv | parquet | disk | hub. Raises DataError when none fits."""
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "disk"
        raise DataError(
            f"{path} is a folder but not a datasets.save_to_disk folder (no dataset_info.json or "
            f"dataset_dict.json); point to a data file inside it. {FORMAT_HINT}."
        )
    if not path.exists():
        if looks_like_hub_id(str(path)):
            return "hub"
        raise DataError(
            f"{path}: file not found (looked in the working directory and the TuneDesk folder); check the path"
        )
    head = _head(path)
    if head.startswith(b"PAR1"):
        return "parquet"
    _refuse_binary(path, head)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".parquet":
        raise DataError(f"{path} is not a Parquet file (it does not start with PAR1); export it again")
    first = _first_char(head)
    if first in "[{" or suffix == ".json":
        return "json"  # a .json file may hold JSON Lines; read_json finds out
    raise DataError(f"{path}: cannot tell the format from the name or the content. {FORMAT_HINT}.")


def _head(path: Path, size: int = 8192) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _first_char(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return chr(text[0]) if text else ""


def _refuse_binary(path: Path, head: bytes) -> None:
    if not head.strip():
        raise DataError(
            f"{path} is empty; add records (e.g. a JSON list of "
            '{"instruction": ..., "input": ..., "output": ...} objects)'
        )
    for magic, what in MAGIC:
        if head.startswith(magic):
            raise DataError(f"{path} is {what}, not a dataset. {FORMAT_HINT}.")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return  # UTF-16 text has NUL bytes but is text; decode_text handles it
    if b"\x00" in head:
        raise DataError(f"{path} is a binary file (it contains NUL bytes), not a text dataset. {FORMAT_HINT}.")


NOT_UTF8_FILE = "{name} is not UTF-8; read it as GB18030/GBK. Re-save it as UTF-8 if the text looks wrong"
NOT_UTF8_LINE = "not UTF-8 (the rest of the file is); read as GB18030/GBK. Re-save the file as UTF-8"


# ---- decoding ------------------------------------------------------------------------------------------------
def decode_text(path: Path, data: bytes) -> tuple[str, list[tuple[int | None, str]]]:
    """Text of a file plus warnings. UTF-8 (a BOM is dropped), UTF-16 by BOM, else line by line with GB18030
    (a superset of GBK, the usual non-UTF-8 encoding of Chinese files) as the fallback.

    >>> decode_text(Path("x.json"), b'\\xef\\xbb\\xbf[1]')
    ('[1]', [])
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), []
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    out, bad = [], []
    for number, raw in enumerate(lines, 1):
        try:
            out.append(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            out.append(_decode_fallback(raw))
            bad.append(number)
    non_ascii = sum(1 for raw in lines if not raw.isascii())
    if len(bad) == non_ascii:
        return "\n".join(out), [(None, NOT_UTF8_FILE.format(name=path.name))]
    notes = [(n, NOT_UTF8_LINE) for n in bad]
    return "\n".join(out), notes


def _decode_fallback(raw: bytes) -> str:
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


# ---- readers -------------------------------------------------------------------------------------------------
def read_source(
    path: Path, kind: str, max_records: int | None = None, split: str = "", config: str = "", revision: str = ""
) -> RawSource:
    """Every record of the source (the first `max_records` when given). `split` picks a split of a save_to_disk
    DatasetDict or a Hub dataset; `config` and `revision` are a Hub dataset's (app.config.DataSource)."""
    if kind == "jsonl":
        return read_jsonl(path, max_records)
    if kind == "json":
        return read_json(path, max_records)
    if kind == "csv":
        return read_csv(path, max_records)
    if kind == "parquet":
        return read_parquet(path, max_records)
    if kind == "disk":
        return read_disk(path, max_records, split)
    return read_hub(str(path), max_records, config, split, revision)


def read_json(path: Path, max_records: int | None = None) -> RawSource:
    """A JSON list of records, streamed element by element from the text (one copy of the file, no second
    tree of every record); a top-level object is read whole, and one object per line is read as JSON Lines."""
    text, line_notes = decode_text(path, path.read_bytes())
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] == "[":
        records = _json_list(path, text, start + 1, max_records)
        return RawSource("json", records, _with_index(line_notes, []))
    try:
        data = json.loads(text)
    except RecursionError:
        raise DataError(f"{path} is {TOO_DEEP}") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _jsonl_from_text(path, text, line_notes, max_records)
        raise _not_json(path, text, exc) from None
    notes: list[Note] = []
    rows = _unwrap(path, data, notes)[:max_records]
    return RawSource("json", [RawRecord(i, None, value) for i, value in enumerate(rows)], notes)


def _not_json(path: Path, text: str, exc: json.JSONDecodeError) -> DataError:
    if text.lstrip()[:1] not in ("[", "{"):
        start = " ".join(text[:200].split())[:40]
        return DataError(f"{path} is not JSON: it starts with {start!r}. {FORMAT_HINT}.")
    return DataError(
        f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). Fix it there, "
        "or save one record per line as .jsonl so that a bad line skips only that record"
    )


def _json_list(path: Path, text: str, pos: int, max_records: int | None) -> Iterator[RawRecord]:
    """The elements of the list opening at text[pos - 1] as records; see _json_spans."""
    for index, line, start, end, value in _json_spans(path, text, pos):
        if max_records is not None and index >= max_records:
            return
        yield _capped(RawRecord(index, line, value), end - start)


def _json_spans(path: Path, text: str, pos: int) -> Iterator[tuple[int, int, int, int, Any]]:
    """(index, line, start, end, value) of each element of the list opening at text[pos - 1]; a syntax error
    anywhere stops the whole file (as json.loads would), naming its line and column."""
    decoder, index, line, counted = json.JSONDecoder(), 0, 1, 0
    pos = _skip_space(text, pos)
    if text[pos : pos + 1] == "]":
        _expect_end(path, text, pos + 1)
        raise DataError(f"{path} holds an empty list: no records to train on")
    while True:
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise _not_json(path, text, exc) from None
        except RecursionError:
            raise DataError(f"{path}, record {index} (line {line}), is {TOO_DEEP}") from None
        yield index, line, pos, end, value
        index, pos = index + 1, _skip_space(text, end)
        if text[pos : pos + 1] == "]":
            _expect_end(path, text, pos + 1)
            return
        if text[pos : pos + 1] != ",":
            raise _not_json(path, text, _syntax("Expecting ',' delimiter", text, pos))
        pos = _skip_space(text, pos + 1)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _expect_end(path: Path, text: str, pos: int) -> None:
    pos = _skip_space(text, pos)
    if pos < len(text):
        raise _not_json(path, text, _syntax("Extra data", text, pos))


def _syntax(msg: str, text: str, pos: int) -> json.JSONDecodeError:
    return json.JSONDecodeError(msg, text, pos)


def _capped(record: RawRecord, size: int, unit: str = "characters") -> RawRecord:
    """The record, or in its place the error that it is longer than MAX_RECORD_CHARS."""
    if size <= MAX_RECORD_CHARS:
        return record
    return RawRecord(
        record.index,
        record.line,
        error=f"the record is {size:,} {unit} long, over the limit of {MAX_RECORD_CHARS:,} characters per record "
        "(a training example is a few thousand tokens); split it into smaller records or shorten it",
    )


def _with_index(line_notes: list[tuple[int | None, str]], records: list[RawRecord]) -> list[Note]:
    """decode_text's (line, message) notes with the index of the record on that line, where there is one."""
    by_line = {r.line: r.index for r in records if r.line is not None} if any(n for n, _ in line_notes) else {}
    return [(by_line.get(line) if line else None, line, message) for line, message in line_notes]


def _unwrap(path: Path, data: Any, notes: list[Note]) -> list:
    if isinstance(data, list):
        if not data:
            raise DataError(f"{path} holds an empty list: no records to train on")
        return data
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) == 1:
            notes.append((None, None, f"records read from the '{lists[0]}' key of the top-level object"))
            return data[lists[0]]
        if data and all(isinstance(v, list) for v in data.values()) and len({len(v) for v in data.values()}) == 1:
            keys = list(data)
            notes.append((None, None, "the file holds columns (a mapping of lists); read them as rows"))
            return [dict(zip(keys, row, strict=True)) for row in zip(*data.values(), strict=True)]
    raise DataError(
        f"{path}: expected a JSON list of records, found a {type(data).__name__} at the top level; "
        "wrap the records in [ ... ]"
    )


def read_jsonl(path: Path, max_records: int | None = None) -> RawSource:
    """One JSON value per line, streamed from the file: a line that does not parse, is nested too deeply or is
    over MAX_RECORD_CHARS becomes a RawRecord with its error and line number, and the other lines still load."""
    if _head(path, 2) in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16: lines are not split at a b"\n" byte
        text, line_notes = decode_text(path, path.read_bytes())
        return _jsonl_from_text(path, text, line_notes, max_records)
    notes: list[Note] = []
    return RawSource("jsonl", _jsonl_stream(path, notes, max_records), notes)


def _jsonl_stream(path: Path, notes: list[Note], max_records: int | None) -> Iterator[RawRecord]:
    """Records of a JSON Lines file, one line in memory at a time. Lines that are not UTF-8 are read as
    GB18030 (see decode_text): one note when every non-ASCII line is, else one note per such line."""
    records: list[RawRecord] = []  # holds at most one record: _jsonl_line appends, we yield and clear
    bad: list[tuple[int, int]] = []
    non_ascii = index = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if max_records is not None and index >= max_records:
                break
            if len(raw) > 4 * MAX_RECORD_CHARS:  # over the cap in any encoding (UTF-8: <= 4 bytes a character)
                index += 1
                yield _capped(RawRecord(index - 1, number), len(raw), "bytes")
                continue
            non_ascii += not raw.isascii()
            line, ok = _decode_line(raw, number)
            if not ok:
                bad.append((index, number))
            if _jsonl_line(records, number, line, index):
                index += 1
                yield records.pop()
    if index == 0:
        raise DataError(f"{path} has only blank lines: no records to train on")
    notes += _encoding_notes(path, bad, non_ascii)


def _decode_line(raw: bytes, number: int) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8"), True
    except UnicodeDecodeError:
        return _decode_fallback(raw), False


def _encoding_notes(path: Path, bad: list[tuple[int, int]], non_ascii: int) -> list[Note]:
    if bad and len(bad) == non_ascii:
        return [(None, None, NOT_UTF8_FILE.format(name=path.name))]
    return [(index, number, NOT_UTF8_LINE) for index, number in bad]


def _jsonl_from_text(path: Path, text: str, line_notes: list, max_records: int | None) -> RawSource:
    records: list[RawRecord] = []
    pos, number = 0, 0
    while pos <= len(text) and (max_records is None or len(records) < max_records):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        number += 1
        _jsonl_line(records, number, text[pos:end], len(records))
        pos = end + 1
    if not records:
        raise DataError(f"{path} has only blank lines: no records to train on")
    return RawSource("jsonl", records, _with_index(line_notes, records))


def _jsonl_line(records: list[RawRecord], number: int, line: str, index: int | None = None) -> bool:
    """Append line `number` as a record (or as its error) unless it is blank; True when one was appended."""
    if not line.strip():
        return False
    index = len(records) if index is None else index
    if len(line) > MAX_RECORD_CHARS:
        records.append(_capped(RawRecord(index, number), len(line.strip())))
        return True
    try:
        records.append(RawRecord(index, number, json.loads(line)))
    except json.JSONDecodeError as exc:
        shown = line.strip()[:60]
        records.append(RawRecord(index, number, error=f"invalid JSON at column {exc.colno} ({exc.msg}): {shown}"))
    except RecursionError:
        records.append(RawRecord(index, number, error=f"the record is {TOO_DEEP}"))
    return True


def read_csv(path: Path, max_records: int | None = None) -> RawSource:
    """CSV/TSV with a header row; every cell is text. A row with too many or too few cells is reported."""
    text, line_notes = decode_text(path, path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path, text))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise DataError(
            f"{path} has no header row; the first line must name the columns (e.g. instruction,input,output)"
        )
    header = [h.strip() for h in header]
    records: list[RawRecord] = []
    start = reader.line_num + 1
    for row in _csv_rows(path, reader):
        if max_records is not None and len(records) >= max_records:
            break
        if not _blank(row):
            records.append(_csv_record(len(records), start, header, row))
        start = reader.line_num + 1
    if not records:
        raise DataError(f"{path} has a header but no rows: no records to train on")
    return RawSource("csv", records, _with_index(line_notes, records))


def _csv_rows(path: Path, reader: Any) -> Iterator[list[str]]:
    """The reader's rows; a cell over CSV_CELL_LIMIT (or a bad quote) stops the file with a DataError."""
    try:
        yield from reader
    except csv.Error as exc:
        raise DataError(
            f"{path}, line {reader.line_num}: {exc}. A record is at most {MAX_RECORD_CHARS:,} characters; "
            "check for an unclosed quote, or split the record"
        ) from None


def _csv_record(index: int, line: int, header: list[str], row: list[str]) -> RawRecord:
    if sum(map(len, row)) > MAX_RECORD_CHARS:
        return _capped(RawRecord(index, line), sum(map(len, row)))
    if len(row) > len(header):
        return RawRecord(
            index,
            line,
            error=f"{len(row)} cells but the header names {len(header)} columns "
            "(an unquoted comma in a cell? quote cells that contain commas)",
        )
    # Too few cells: the missing columns are absent, and validation reports each one it needs.
    return RawRecord(index, line, dict(zip(header[: len(row)], row, strict=True)))


def _delimiter(path: Path, text: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_parquet(path: Path, max_records: int | None = None) -> RawSource:
    table = _arrow_table(path)
    if max_records is not None:
        table = table.slice(0, max_records)
    named = path.suffix.lower() == ".parquet"
    notes: list[Note] = [] if named else [(None, None, f"{path.name} is a Parquet file; read it as one")]
    return _from_rows("parquet", table.to_pylist(), notes)


def _arrow_table(path: Path) -> Any:
    """The whole Parquet file as an Arrow table: columnar, ~8 MB for 100k Alpaca records, read in C."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise DataError(f"{path} is not a readable Parquet file ({exc}); export it again") from None


def _from_rows(kind: str, rows: list, notes: list[Note] | None = None) -> RawSource:
    if not rows:
        raise DataError(f"the {kind} dataset has no rows: no records to train on")
    records = [_capped(RawRecord(i, None, row), _chars(row)) for i, row in enumerate(rows)]
    return RawSource(kind, records, notes or [])


def _chars(row: Any) -> int:
    """Characters of a row's text, roughly: its strings, and other values as str() writes them."""
    values = row.values() if isinstance(row, dict) else [row]
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in values)


def read_disk(path: Path, max_records: int | None = None, split: str = "") -> RawSource:
    """A folder written by `Dataset.save_to_disk` (a DatasetDict uses `split`, else 'train', else the first)."""
    notes: list[Note] = []
    ds = _disk_dataset(path, notes, split)
    if max_records is not None:
        ds = ds.select(range(min(max_records, len(ds))))
    return _from_rows("disk", ds.to_list(), notes)


def _disk_dataset(path: Path, notes: list, split: str = "") -> Any:
    """The memory-mapped Dataset of a save_to_disk folder (nothing is read until rows are asked for)."""
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError/ArrowInvalid
        raise DataError(f"{path} could not be read as a datasets.save_to_disk folder ({exc})") from None
    if isinstance(ds, DatasetDict):
        if split and split not in ds:
            raise DataError(f"{path} has no split {split!r}; it has {', '.join(ds)}")
        split = split or ("train" if "train" in ds else next(iter(ds)))
        notes.append((None, None, f"using the '{split}' split of {len(ds)} ({', '.join(ds)})"))
        ds = ds[split]
    return ds


def read_hub(
    name: str, max_records: int | None = None, config: str = "", split: str = "", revision: str = ""
) -> RawSource:
    """A Hub dataset id: one split of one config (app.hub_data), read from the Hugging Face cache, or downloaded
    first when the Hub answers within 3 s. The commit is no problem note (a normal read would show a warning): the
    Data tab's Hub panel says it and the run's config.yaml records it (app.data.pinned)."""
    ds, _got = _hub_split(name, config, split, revision)
    if max_records is not None:
        ds = ds.select(range(min(max_records, len(ds))))
    return _from_rows("hub", ds.to_list())


def _hub_split(name: str, config: str, split: str, revision: str) -> tuple[Any, Any]:
    """(Dataset, hub_data.DatasetDownload) or a DataError saying why, with what to do without internet."""
    from app import hub, hub_data

    try:
        return hub_data.open_split(name, config, split, revision)
    except hub.HubError as exc:
        advice = ""
        if exc.kind == "unreachable":
            advice = (
                f" Without internet: on a connected machine run `python -m app download dataset {name}` and copy "
                f"the Hugging Face cache here, or save the records with `datasets.load_dataset('{name}', "
                "split='train').to_json('data.jsonl')`, copy data.jsonl here and give its path."
            )
        raise DataError(
            f"'{name}' is not a local file or folder, and the Hub dataset '{name}' could not be loaded: {exc}{advice}"
        ) from None


def count_lines(path: Path, limit: int = 2 << 30) -> int | None:
    """Non-blank lines of a text file (a JSONL record count) in ~0.05 s per 100 MB; None beyond `limit` bytes."""
    if os.path.getsize(path) > limit:
        return None
    total, blank, last = 0, 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            total += chunk.count(b"\n")
            blank += chunk.count(b"\n\n") + chunk.count(b"\n\r\n")
            if last == b"\n" and chunk[:1] in (b"\n", b"\r"):
                blank += 1  # a blank line straddling two chunks, or a blank first line
            last = chunk[-1:]
    return total - blank + (0 if last == b"\n" else 1)


def read_page(
    path: Path, kind: str, start: int, count: int, split: str = "", config: str = "", revision: str = ""
) -> tuple[list[RawRecord], int | None]:
    """Records start .. start+count and the total where it is cheap, reading as little as the format allows:
    JSONL up to the page (plus a newline count), Parquet and save_to_disk folders by slicing the Arrow table
    (no Python objects for the other rows), a JSON list from its text and where each element starts (indexed
    once and kept while the file is unchanged: the next pages are then instant); other JSON and CSV that is not
    UTF-8 are parsed whole, once, and kept the same way."""
    if kind == "jsonl":
        return list(iter_jsonl_page(path, start, count)), count_lines(path)
    if kind == "parquet":
        table = _arrow_table(path)
        return _numbered(table.slice(start, count).to_pylist(), start), table.num_rows
    if kind == "disk":
        ds = _disk_dataset(path, [], split)
        end = min(start + count, len(ds))
        return _numbered(ds.select(range(start, end)).to_list() if end > start else [], start), len(ds)
    if kind == "hub":
        ds = _hub_split(str(path), config, split, revision)[0]
        end = min(start + count, len(ds))
        return _numbered(ds.select(range(start, end)).to_list() if end > start else [], start), len(ds)
    if kind == "csv":
        try:
            return _csv_page(path, start, count)
        except UnicodeDecodeError:
            pass  # not UTF-8: the full reader decodes line by line with a fallback
    stat = path.stat()
    if kind == "json" and (spans := _json_index(str(path), stat.st_mtime_ns, stat.st_size)) is not None:
        return _json_page(*spans, start, count)
    records = _cached_records(str(path), kind, stat.st_mtime_ns, stat.st_size)
    return records[start : start + count], len(records)


@functools.lru_cache(maxsize=2)
def _json_index(path: str, mtime_ns: int, size: int) -> tuple[str, array] | None:
    """The text of a JSON list and (start, end, line) of each element: 24 bytes a record, where the parsed
    records took ~1 KB each. None for other JSON (a top-level object), which _cached_records reads whole."""
    text, _ = decode_text(Path(path), Path(path).read_bytes())
    pos = len(text) - len(text.lstrip())
    if text[pos : pos + 1] != "[":
        return None
    spans = array("q")
    for _, line, start, end, _value in _json_spans(Path(path), text, pos + 1):
        spans.extend((start, end, line))
    return text, spans


def _json_page(text: str, spans: array, start: int, count: int) -> tuple[list[RawRecord], int]:
    total = len(spans) // 3
    records = []
    for index in range(max(start, 0), min(start + count, total)):
        begin, end, line = spans[3 * index : 3 * index + 3]
        value = json.loads(text[begin:end]) if end - begin <= MAX_RECORD_CHARS else None
        records.append(_capped(RawRecord(index, line, value), end - begin))
    return records, total


@functools.lru_cache(maxsize=2)
def _cached_records(path: str, kind: str, mtime_ns: int, size: int) -> list[RawRecord]:
    return list(read_source(Path(path), kind).records)


def _csv_page(path: Path, start: int, count: int) -> tuple[list[RawRecord], int]:
    """One page of a UTF-8 CSV, streamed; the other rows are only counted (~3x faster than read_csv)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        delimiter = _delimiter(path, fh.read(4096))
        fh.seek(0)
        reader = csv.reader(fh, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        records: list[RawRecord] = []
        index, line = 0, reader.line_num + 1
        for row in _csv_rows(path, reader):
            if not _blank(row):
                if start <= index < start + count:
                    records.append(_csv_record(index, line, header, row))
                index += 1
            line = reader.line_num + 1
    return records, index


def _blank(row: list[str]) -> bool:
    return not any(cell.strip() for cell in row)


def _numbered(rows: list, start: int) -> list[RawRecord]:
    return [RawRecord(start + k, None, row) for k, row in enumerate(rows)]


def iter_jsonl_page(path: Path, start: int, count: int) -> Iterator[RawRecord]:
    """Records start .. start+count of a JSONL file, reading only up to them."""
    index = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if index >= start + count:
                return
            if index >= start:
                out: list[RawRecord] = []
                _jsonl_line(out, number, decode_text(path, raw)[0])
                record = out[0]
                record.index = index
                yield record
            index += 1
