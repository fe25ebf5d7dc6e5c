"""`python -m app data inspect FILE`: load, validate and tokenize a dataset file and print what training would see.

    python -m app data inspect data.jsonl [--format auto] [--model NAME] [--column instruction=question] [--json]

The summary (or one JSON object with --json) gives the format, the record counts, every problem by record and the
token statistics; it exits 2 when the file cannot be read, 1 when no record is valid.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from app.config import DATA_FORMATS, DEFAULT_MODEL, TEMPLATES, DataConfig
from app.data import Prepared, load_from_config, prepare_loaded
from app.data_io import DataError
from app.data_render import RenderError


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
