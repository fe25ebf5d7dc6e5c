"""Training data from a file to train/val token lists: load and validate, preview the raw rows, tokenize and split.

The most common silent failure in fine-tuning is data that is not what the user thinks. So every record is
checked (app/data_records.py: the format, each record, placeholders, duplicates) and every problem is reported by
record index (and line), field and reason; valid records are kept and the skipped count is always shown. What the
Data tab previews is what trains: both go through `render_segments` and `tokenize_segments` (app/data_render.py).

    load = load_examples("data.jsonl")                    # LoadResult: examples, problems, skipped
    load = load_from_config(cfg.data)                     # every dataset of data.sources, mixed (MixedLoad)
    prepared = prepare(cfg.data, tokenizer)               # train/val lists of Encoded, DataStats
    python -m app data inspect data.jsonl --json          # the same from the command line (app/data_cli.py)

Several datasets (data.sources: files, folders, Hub splits read through app.hub_data) are mixed here, once, for
training, the Data tab, the CLI and the estimate alike: each gives its first records, as many as its limit or
share takes (mix_counts), numbered one after another, and each problem names its dataset and its record there.

No gradio; transformers is only touched through the tokenizer object passed in.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import paths
from app.config import DataConfig, DataSource
from app.data_io import (
    DataError,
    RawRecord,
    looks_like_hub_id,
    read_page,
    read_source,
    sniff,
)
from app.data_records import Loader, LoadResult, Problem, detect_format
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
    "Example",
    "Examples",
    "Encoded",
    "DataStats",
    "Prepared",
    "load_examples",
    "load_from_config",
    "load_source",
    "mix",
    "mix_counts",
    "MixedLoad",
    "describe",
    "fingerprint",
    "source_problems",
    "pinned",
    "fetch",
    "missing_hub",
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
]

if TYPE_CHECKING:
    import pandas as pd

Progress = Callable[[float, str], None]

TOKEN_SAMPLE = 20_000
"""Most examples the Data tab tokenizes for its statistics: ~6 s with the chat template on a 2-core machine
(~0.3 ms each). All 1,000,000 records of a 55 MB file took ~5 minutes and kept ~3 GB of token lists; beyond
this, that many evenly spaced examples stand for the rest (training still tokenizes every one)."""
PREVIEW_CHARS = 2_000
"""Characters of one cell the Records table shows: a page of 20 records near MAX_RECORD_CHARS would send 20 MB
to the browser; the record view shows a whole record."""


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
    return load_source(DataSource(path=path, limit=max_records), format, columns, placeholders, resolve=False)


def load_source(
    src: DataSource,
    format: str = "auto",
    columns: dict | None = None,
    placeholders: dict | None = None,
    resolve: bool = True,
) -> LoadResult:
    """load_examples for one dataset of a config: a file or folder (a relative path found as
    app.paths.resolve_data_path finds it, unless `resolve` is off), or a Hub dataset's split (app.hub_data), its
    first `src.limit` records."""
    name = _source(src.path) if resolve else src.path
    where = Path(name).expanduser()
    source = read_source(where, sniff(where), src.limit, src.split, src.config, src.revision)
    records = iter(source.records)
    head = _head(records)
    fmt, cols = detect_format([r.value for r in head if r.error is None], format, columns, where=str(name))
    loader = Loader(fmt, cols, placeholders or {})
    for record in itertools.chain(head, records):
        loader.add(record)
    return loader.result(str(name), source.notes)


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


def load_from_config(data_cfg: DataConfig) -> LoadResult:
    """Every dataset of the config (DataConfig.datasets) loaded with its format, columns and placeholders; several
    are mixed into one (mix). A relative path is found in the working directory or the TuneDesk folder
    (app.paths.resolve_data_path)."""
    sources = data_cfg.datasets()
    if len(sources) == 1:
        return load_source(sources[0], data_cfg.format, data_cfg.columns, data_cfg.placeholders)
    loads = [load_source(s, data_cfg.format, data_cfg.columns, data_cfg.placeholders) for s in sources]
    return mix(loads, sources, data_cfg.max_samples)


def _source(path: str) -> str:
    if not path.strip():
        raise DataError("data.path is empty: choose a dataset file (e.g. assets/sample_data.json)")
    resolved = paths.resolve_data_path(path)
    return path if not resolved.exists() and looks_like_hub_id(path) else str(resolved)


# ---- several datasets in one run ----------------------------------------------------------------------------
@dataclass
class Part:
    """Where one dataset sits in a mix: its records are numbered offset .. offset + records - 1."""

    source: DataSource
    label: str
    offset: int
    records: int
    """Records of this dataset in the mix: its first ones, as many as its limit or share takes."""


@dataclass
class MixedLoad(LoadResult):
    """A LoadResult of several datasets: records numbered one after another, each problem naming its dataset and
    its own record number there (`parts` says which numbers are whose)."""

    parts: list[Part] = field(default_factory=list)


def mix_counts(valid: list[int], shares: list[float | None], cap: int | None = None) -> list[int]:
    """Examples taken from each dataset: all of a dataset without a share; a dataset with a share gets that part of
    the total, the total set by the datasets without one (every dataset with a share: the most the shares allow);
    `cap` (data.max_samples) scales every count down alike.

    >>> mix_counts([100, 300], [None, 0.5])      # 100 fixed records are half the mix: 100 from the second
    [100, 100]
    >>> mix_counts([100, 300], [0.25, 0.75])     # both have shares: 100 and 300 meet them exactly
    [100, 300]
    >>> mix_counts([100, 300], [None, None], cap=200)
    [50, 150]
    """
    fixed = sum(n for n, s in zip(valid, shares, strict=True) if s is None)
    share_sum = sum(s for s in shares if s is not None)
    if all(s is None for s in shares):
        counts = list(valid)
    else:
        if fixed or share_sum < 1:
            total = fixed / (1 - share_sum) if share_sum < 1 else 0.0
        else:
            total = min(n / s for n, s in zip(valid, shares, strict=True) if s)
        counts = [n if s is None else min(n, int(s * total + 0.5)) for n, s in zip(valid, shares, strict=True)]
    if cap and sum(counts) > cap:
        scale = cap / sum(counts)
        counts = [int(n * scale) for n in counts]
        for k in sorted(range(len(counts)), key=lambda k: -valid[k])[: cap - sum(counts)]:
            counts[k] += 1  # whole examples: the rounding remainder goes to the biggest datasets
    return counts


def mix(loads: list[LoadResult], sources: list[DataSource], cap: int | None = None) -> MixedLoad:
    """One LoadResult of several, each cut to the first records that give its count of examples (mix_counts):
    record numbers run on from one dataset to the next, and every problem says which dataset it is in and under
    which record number there, e.g. "output: is empty (in b.jsonl, record 5)"."""
    counts = mix_counts([len(load.examples) for load in loads], [s.share for s in sources], cap)
    examples, problems, parts, offset = Examples(), [], [], 0
    for load, src, count in zip(loads, sources, counts, strict=True):
        used = _records_for(load, count)
        label = source_label(src)
        for example in load.examples[:count]:
            examples.append(replace(example, index=offset + example.index))
        problems += [_moved(p, offset, label) for p in load.problems if p.index is None or p.index < used]
        problems += _mix_notes(src, label, count, len(load.examples), sum(counts), cap)
        parts.append(Part(src, label, offset, used))
        offset += used
    problems.sort(key=lambda p: -1 if p.index is None else p.index)
    records = offset
    formats = " + ".join(dict.fromkeys(load.format for load in loads))
    path = " + ".join(part.label for part in parts)
    return MixedLoad(path, formats, examples, records, problems, records - len(examples), loads[0].columns, parts)


def _mix_notes(src: DataSource, label: str, count: int, valid: int, total: int, cap: int | None) -> list[Problem]:
    """Warnings (about the whole dataset) when a mix takes fewer of its valid records than it has, or when its share
    cannot be met because it has too few."""
    notes = []
    if count < valid:
        why = f"share {src.share:g}" if src.share is not None else f"max samples {cap:,}"
        notes.append(f"{count:,} of its {valid:,} valid records are used ({why})")
    if src.share is not None and total and abs(count / total - src.share) > 0.01 and count == valid:
        notes.append(
            f"share {src.share:g} asked for, {count / total:.2f} reached: it has only {valid:,} valid records "
            "(lower the other datasets' limits, or its share)"
        )
    return [Problem(None, None, None, f"{note} (in {label})", "warning") for note in notes]


def _records_for(load: LoadResult, count: int) -> int:
    """How many of a dataset's first records hold its first `count` valid examples (all of them when it gives
    them all: broken records at its end still count, and show)."""
    if count >= len(load.examples):
        return load.records
    return load.examples[count].index if count else 0


def _moved(problem: Problem, offset: int, label: str) -> Problem:
    where = "" if problem.index is None else f", record {problem.index}"
    return replace(
        problem,
        index=None if problem.index is None else problem.index + offset,
        message=f"{problem.message} (in {label}{where})",
    )


def source_label(src: DataSource) -> str:
    """A dataset as a person names it: a file's name, or a Hub id with the config and split it was given.

    >>> source_label(DataSource("data/train.jsonl")), source_label(DataSource("org/ds", "en", "test"))
    ('train.jsonl', 'org/ds (en, test)')
    """
    if _is_hub(src.path):
        picked = ", ".join(x for x in (src.config, src.split) if x)
        return src.path.strip() + (f" ({picked})" if picked else "")
    return Path(src.path.strip()).name or src.path


def describe(data_cfg: DataConfig) -> str:
    """The datasets of a config in a few words: 'sample_data.json', 'org/ds (en, train) + mine.jsonl'."""
    return " + ".join(source_label(s) for s in data_cfg.datasets())


def _is_hub(path: str) -> bool:
    return bool(path.strip()) and looks_like_hub_id(path.strip()) and not paths.resolve_data_path(path).exists()


def fingerprint(data_cfg: DataConfig) -> tuple | None:
    """What the records of a config depend on, cheaply (a stat per file, a look into the Hugging Face cache per Hub
    dataset, no network): equal fingerprints, equal records. None when a dataset is not here (a file not found, a
    Hub split not downloaded): then nothing can be measured without reading the Hub."""
    from app import hub_data

    out: list[tuple] = []
    for src in data_cfg.datasets():
        if _is_hub(src.path):
            sha = hub_data.cached_sha(src.path.strip(), src.config, src.split, src.revision)
            if sha is None:
                return None
            out.append((src.path.strip(), src.config, src.split, sha, src.limit, src.share))
            continue
        found = paths.resolve_data_path(src.path.strip()) if src.path.strip() else None
        if found is None or not found.exists():
            return None
        stat = found.stat()
        out.append((str(found.resolve()), stat.st_mtime_ns, stat.st_size, src.split, src.limit, src.share))
    return tuple(out)


def missing_hub(data_cfg: DataConfig) -> list[DataSource]:
    """The Hub datasets of a config whose split is not (wholly) in the Hugging Face cache. No network."""
    from app import hub_data

    return [
        s
        for s in data_cfg.datasets()
        if _is_hub(s.path) and hub_data.cached_download(s.path.strip(), s.config, s.split, s.revision) is None
    ]


def fetch(data_cfg: DataConfig, on_progress: Callable[[Any], None] | None = None, cancel: Any = None) -> list[Any]:
    """Download the Hub datasets of a config whose split is not in the cache yet (app.hub_data: progress, cancel,
    resume, disk check), so that loading it reads no network; their DatasetDownloads. Raises DataError with the
    Hub's one-line message."""
    from app import hub, hub_data

    got = []
    for src in missing_hub(data_cfg):
        name = src.path.strip()
        try:
            got.append(
                hub_data.download_dataset(
                    name, src.config or None, src.split or None, src.revision or None, on_progress, cancel
                )
            )
        except hub.HubError as exc:
            raise DataError(f"{source_label(src)}: {exc}") from None
    return got


def pinned(data_cfg: DataConfig) -> DataConfig:
    """The config with each Hub dataset's config, split and revision spelled out as the cache resolves them (the
    default config, train or the first split, the commit its files come from; no network), so a run's
    config.yaml reads the same records again elsewhere; a Hub id given as data.path alone becomes one entry of
    data.sources. Local files, and Hub datasets not in the cache, stay as they are.

    >>> pinned(DataConfig(path="assets/sample_data.json")).sources
    []
    """
    from app import hub_data

    sources, changed = [], False
    for src in data_cfg.datasets():
        found = None
        if not (src.config and src.split and src.revision) and _is_hub(src.path):
            found = hub_data.cached_download(src.path.strip(), src.config, src.split, src.revision)
        if found is not None:
            got, split = found
            src = replace(src, config=got.config, split=split, revision=src.revision or got.sha)
            changed = True
        sources.append(src)
    return replace(data_cfg, sources=sources) if changed else data_cfg


def source_problems(data_cfg: DataConfig) -> list[str]:
    """Datasets of a config that are neither a file or folder here nor a Hub dataset id, each naming its key."""
    out = []
    for k, src in enumerate(data_cfg.datasets()):
        key = "data.path" if k == 0 else f"data.sources[{k}].path"
        path = src.path.strip()
        if path and not paths.resolve_data_path(path).exists() and not looks_like_hub_id(path):
            out.append(f"{key}: {path}: file not found (looked in the working directory and {paths.ROOT}); check it")
    return out


# ---- preview (raw rows, lazy) --------------------------------------------------------------------------------
def preview(
    source: str | DataConfig,
    page: int = 0,
    page_size: int = 20,
    format: str = "auto",
    columns: dict | None = None,
    load: LoadResult | None = None,
) -> tuple[pd.DataFrame, int | None]:
    """(raw rows of one page as a DataFrame, total rows or None), read lazily (app.data_io.read_page): a 100k
    record JSONL shows page one in ~0.1 s. Column '#' is the record index; a broken row shows '_error'.

    `source` is a path, or a DataConfig: its Hub split, its limit, and for a mix the records of every dataset one
    after another (numbered as the mix numbers them, with a 'dataset' column), as `load` (its MixedLoad, loaded
    when not given) says. `format` and `columns` put the mapped columns first (instruction, input, output or the
    conversation).
    """
    import pandas as pd

    start = max(page, 0) * page_size
    if isinstance(source, str):
        records, total = _page(DataSource(source), start, page_size)
    elif len(source.datasets()) == 1:
        records, total = _page(source.datasets()[0], start, page_size)
    else:
        mixed = load if isinstance(load, MixedLoad) else load_from_config(source)
        records, total = _mixed_page(mixed, start, page_size)
    rows = [_row(r) for r in records]
    frame = pd.DataFrame(rows)
    return frame[_column_order(frame, rows, format, columns)] if rows else frame, total


def _page(src: DataSource, start: int, count: int) -> tuple[list[RawRecord], int | None]:
    """read_page for one dataset, within its limit."""
    where = Path(_source(src.path))
    if src.limit is not None:
        count = max(0, min(count, src.limit - start))
    records, total = read_page(where, sniff(where), start, count, src.split, src.config, src.revision)
    return records, total if src.limit is None or total is None else min(total, src.limit)


def _mixed_page(mixed: MixedLoad, start: int, count: int) -> tuple[list[RawRecord], int]:
    out: list[RawRecord] = []
    for part in mixed.parts:
        first, last = max(start, part.offset), min(start + count, part.offset + part.records)
        if first >= last:
            continue
        records, _ = _page(part.source, first - part.offset, last - first)
        for record in records:
            value = {"dataset": part.label, **record.value} if isinstance(record.value, dict) else record.value
            out.append(replace(record, index=record.index + part.offset, value=value))
    return out, sum(part.records for part in mixed.parts)


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
    lead = ["dataset"] if "dataset" in frame.columns else []  # a mix: which dataset the row is from
    rest = [c for c in frame.columns if c not in ("#", *lead) and c not in mapped]
    return ["#", *lead, *dict.fromkeys(mapped), *rest]


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


def split_train_val(
    items: list[Any], val_size: float, seed: int = 42, key: Callable[[Any], Hashable] | None = None
) -> tuple[list[Any], list[Any]]:
    """Hold out int(n x val_size) items (0 = no eval), chosen by a seeded shuffle of groups: items with the same
    `key` (default: identical tokens) stay on the same side, so eval never scores something it trained on.
    app.preference_data groups by prompt.

    >>> [len(part) for part in split_train_val([Encoded([i], [i], 1, False, i) for i in range(10)], 0.2)]
    [8, 2]
    """
    key = key or (lambda item: tuple(item.input_ids))
    n_val = int(len(items) * val_size)
    if n_val == 0:
        return list(items), []
    groups: dict[Hashable, list[int]] = {}
    for k, item in enumerate(items):
        groups.setdefault(key(item), []).append(k)
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
