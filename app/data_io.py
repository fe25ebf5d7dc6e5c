"""Read raw records from a dataset source, keeping every broken record visible instead of crashing.

Sources: a JSON list, JSON Lines, CSV/TSV, Parquet, a `datasets.save_to_disk` folder, or a hub dataset id. The
file's content decides over its name: a JSON Lines file named .json or a Parquet file named .json is still read,
a PNG renamed .json is refused with a message saying what it is. Records come out as `RawRecord`s; a record that
cannot be parsed (a bad JSONL line, a ragged CSV row) carries its error and its line number instead of a value.

Used by app.data; no torch, no transformers, no gradio.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import socket
import urllib.parse
from collections.abc import Iterator
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
    """What a reader found: the records and notes about the file as a whole."""

    kind: str
    """json | jsonl | csv | parquet | disk | hub"""
    records: list[RawRecord]
    notes: list[tuple[int | None, str]] = field(default_factory=list)
    """(line or None, message) warnings about the file, e.g. a line that is not UTF-8."""
    json_text: str | None = None
    """The text of a JSON list, kept to find a record's line only when one has a problem."""
    _lines: dict[int, int] | None = None

    def line(self, index: int) -> int | None:
        """1-based line where record `index` starts (None where the source has no lines)."""
        if self.json_text is not None:
            if self._lines is None:
                self._lines = json_list_lines(self.json_text)
            return self._lines.get(index)
        record = self.records[index] if 0 <= index < len(self.records) else None
        return record.line if record else None


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
        note = f"{path.name} is not UTF-8; read it as GB18030/GBK. Re-save it as UTF-8 if the text looks wrong"
        return "\n".join(out), [(None, note)]
    notes = [(n, "not UTF-8 (the rest of the file is); read as GB18030/GBK. Re-save the file as UTF-8") for n in bad]
    return "\n".join(out), notes


def _decode_fallback(raw: bytes) -> str:
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


# ---- readers -------------------------------------------------------------------------------------------------
def read_source(path: Path, kind: str, max_records: int | None = None) -> RawSource:
    """Every record of the source (the first `max_records` when given)."""
    if kind == "jsonl":
        return read_jsonl(path, max_records)
    if kind == "json":
        return read_json(path, max_records)
    if kind == "csv":
        return read_csv(path, max_records)
    if kind == "parquet":
        return read_parquet(path, max_records)
    if kind == "disk":
        return read_disk(path, max_records)
    return read_hub(str(path), max_records)


def read_json(path: Path, max_records: int | None = None) -> RawSource:
    """A JSON list of records; falls back to JSON Lines when the file holds one object per line."""
    text, notes = decode_text(path, path.read_bytes())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _jsonl_from_text(text, notes, max_records)
        if text.lstrip()[:1] not in ("[", "{"):
            start = " ".join(text.split())[:40]
            raise DataError(f"{path} is not JSON: it starts with {start!r}. {FORMAT_HINT}.") from None
        raise DataError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). Fix it there, "
            "or save one record per line as .jsonl so that a bad line skips only that record"
        ) from None
    data = _unwrap(path, data, notes)
    if max_records is not None:
        data = data[:max_records]
    records = [RawRecord(i, None, value) for i, value in enumerate(data)]
    return RawSource("json", records, notes, json_text=text)


def _unwrap(path: Path, data: Any, notes: list) -> list:
    if isinstance(data, list):
        if not data:
            raise DataError(f"{path} holds an empty list: no records to train on")
        return data
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if len(lists) == 1:
            notes.append((None, f"records read from the '{lists[0]}' key of the top-level object"))
            return data[lists[0]]
        if data and all(isinstance(v, list) for v in data.values()) and len({len(v) for v in data.values()}) == 1:
            keys = list(data)
            notes.append((None, "the file holds columns (a mapping of lists); read them as rows"))
            return [dict(zip(keys, row, strict=True)) for row in zip(*data.values(), strict=True)]
    raise DataError(
        f"{path}: expected a JSON list of records, found a {type(data).__name__} at the top level; "
        "wrap the records in [ ... ]"
    )


def json_list_lines(text: str) -> dict[int, int]:
    """1-based line where each element of a top-level JSON list starts.

    >>> json_list_lines('[\\n {"a": 1},\\n {"a": 2}\\n]')
    {0: 2, 1: 3}
    """
    decoder = json.JSONDecoder()
    pos, out, index = text.index("[") + 1, {}, 0
    line, counted = 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return out
        line += text.count("\n", counted, pos)
        counted = pos
        out[index] = line
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return out
        index += 1


def read_jsonl(path: Path, max_records: int | None = None) -> RawSource:
    """One JSON value per line; a line that does not parse becomes a RawRecord with its error and line number."""
    if max_records is None:
        text, notes = decode_text(path, path.read_bytes())
        return _jsonl_from_text(text, notes, None)
    records: list[RawRecord] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if len(records) >= max_records:
                break
            text, _ = decode_text(path, raw)
            _jsonl_line(records, number, text)
    return RawSource("jsonl", records)


def _jsonl_from_text(text: str, notes: list, max_records: int | None) -> RawSource:
    records: list[RawRecord] = []
    for number, line in enumerate(text.split("\n"), 1):
        if max_records is not None and len(records) >= max_records:
            break
        _jsonl_line(records, number, line)
    if not records:
        raise DataError("the file has only blank lines: no records to train on")
    return RawSource("jsonl", records, notes)


def _jsonl_line(records: list[RawRecord], number: int, line: str) -> None:
    if not line.strip():
        return
    try:
        records.append(RawRecord(len(records), number, json.loads(line)))
    except json.JSONDecodeError as exc:
        shown = line.strip()[:60]
        records.append(
            RawRecord(len(records), number, error=f"invalid JSON at column {exc.colno} ({exc.msg}): {shown}")
        )


def read_csv(path: Path, max_records: int | None = None) -> RawSource:
    """CSV/TSV with a header row; every cell is text. A row with too many or too few cells is reported."""
    text, notes = decode_text(path, path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(path, text))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise DataError(
            f"{path} has no header row; the first line must name the columns (e.g. instruction,input,output)"
        )
    header = [h.strip() for h in header]
    records: list[RawRecord] = []
    start = reader.line_num + 1
    for row in reader:
        if max_records is not None and len(records) >= max_records:
            break
        if not _blank(row):
            records.append(_csv_record(len(records), start, header, row))
        start = reader.line_num + 1
    if not records:
        raise DataError(f"{path} has a header but no rows: no records to train on")
    return RawSource("csv", records, notes)


def _csv_record(index: int, line: int, header: list[str], row: list[str]) -> RawRecord:
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
    notes = [] if path.suffix.lower() == ".parquet" else [(None, f"{path.name} is a Parquet file; read it as one")]
    return _from_rows("parquet", table.to_pylist(), notes)


def _arrow_table(path: Path) -> Any:
    """The whole Parquet file as an Arrow table: columnar, ~8 MB for 100k Alpaca records, read in C."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for damaged files
        raise DataError(f"{path} is not a readable Parquet file ({exc}); export it again") from None


def _from_rows(kind: str, rows: list, notes: list | None = None) -> RawSource:
    if not rows:
        raise DataError(f"the {kind} dataset has no rows: no records to train on")
    return RawSource(kind, [RawRecord(i, None, row) for i, row in enumerate(rows)], notes or [])


def read_disk(path: Path, max_records: int | None = None) -> RawSource:
    """A folder written by `Dataset.save_to_disk` (a DatasetDict uses its 'train' split, else the first)."""
    notes: list[tuple[int | None, str]] = []
    ds = _disk_dataset(path, notes)
    if max_records is not None:
        ds = ds.select(range(min(max_records, len(ds))))
    return _from_rows("disk", ds.to_list(), notes)


def _disk_dataset(path: Path, notes: list) -> Any:
    """The memory-mapped Dataset of a save_to_disk folder (nothing is read until rows are asked for)."""
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError/ValueError/ArrowInvalid
        raise DataError(f"{path} could not be read as a datasets.save_to_disk folder ({exc})") from None
    if isinstance(ds, DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        notes.append((None, f"using the '{split}' split of {len(ds)} ({', '.join(ds)})"))
        ds = ds[split]
    return ds


def read_hub(name: str, max_records: int | None = None) -> RawSource:
    """A hub dataset id. When the hub cannot be reached (checked in <= 3 s), only the local datasets cache is
    tried: without that check `datasets` retries for ~25 s before failing."""
    try:
        from datasets import load_dataset

        split = "train" if max_records is None else f"train[:{max_records}]"
        with _offline_unless_reachable():
            ds = load_dataset(name, split=split)
    except Exception as exc:  # offline: ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError, ...
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"'{name}' is not a local file or folder, and the hub dataset '{name}' could not be loaded ({reason}). "
            f"Without internet: on a connected machine run `datasets.load_dataset('{name}', split='train')"
            ".to_json('data.jsonl')`, copy data.jsonl here and give its path (or a save_to_disk folder)."
        ) from None
    return _from_rows("hub", ds.to_list())


@contextlib.contextmanager
def _offline_unless_reachable(timeout: float = 3.0) -> Iterator[None]:
    import datasets.config
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _reachable(constants.ENDPOINT, timeout):
        yield
        return
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _reachable(url: str, timeout: float) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "huggingface.co", parts.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


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


def read_page(path: Path, kind: str, start: int, count: int) -> tuple[list[RawRecord], int | None]:
    """Records start .. start+count and the total where it is cheap, reading as little as the format allows:
    JSONL up to the page (plus a newline count), Parquet and save_to_disk folders by slicing the Arrow table
    (no Python objects for the other rows). A JSON list or CSV is parsed whole, once, and kept while the file
    is unchanged (the next pages are then instant)."""
    if kind == "jsonl":
        return list(iter_jsonl_page(path, start, count)), count_lines(path)
    if kind == "parquet":
        table = _arrow_table(path)
        return _numbered(table.slice(start, count).to_pylist(), start), table.num_rows
    if kind == "disk":
        ds = _disk_dataset(path, [])
        end = min(start + count, len(ds))
        return _numbered(ds.select(range(start, end)).to_list() if end > start else [], start), len(ds)
    if kind == "hub":
        return read_hub(str(path), start + count).records[start:], None
    if kind == "csv":
        try:
            return _csv_page(path, start, count)
        except UnicodeDecodeError:
            pass  # not UTF-8: the full reader decodes line by line with a fallback
    stat = path.stat()
    records = _cached_records(str(path), kind, stat.st_mtime_ns, stat.st_size)
    return records[start : start + count], len(records)


@functools.lru_cache(maxsize=2)
def _cached_records(path: str, kind: str, mtime_ns: int, size: int) -> list[RawRecord]:
    return read_source(Path(path), kind).records


def _csv_page(path: Path, start: int, count: int) -> tuple[list[RawRecord], int]:
    """One page of a UTF-8 CSV, streamed; the other rows are only counted (~3x faster than read_csv)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        delimiter = _delimiter(path, fh.read(4096))
        fh.seek(0)
        reader = csv.reader(fh, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        records: list[RawRecord] = []
        index, line = 0, reader.line_num + 1
        for row in reader:
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
