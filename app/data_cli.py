"""`python -m app data inspect SOURCE...`: load, validate and tokenize a dataset (or a mix of several) and print
what training would see.

    python -m app data inspect data.jsonl [--format auto] [--model NAME] [--column instruction=question] [--json]
    python -m app data inspect tatsu-lab/alpaca --split train                      # a Hub dataset (downloaded once)
    python -m app data inspect a.json owner/ds --limit 500 --limit 0 --share 0 --share 0.3    # a mix of two
    python -m app data inspect runs/X/config.yaml                                   # a run's data section, mix and all

The summary (or one JSON object with --json) gives the format, the record counts, every problem by record and the
token statistics; it exits 2 when the data cannot be read, 1 when no record is valid.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from app.config import DATA_FORMATS, DEFAULT_MODEL, TEMPLATES, ConfigError, DataConfig, DataSource, RunConfig
from app.data import Prepared, describe, load_from_config, prepare_loaded
from app.data_io import DataError
from app.data_render import RenderError


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["inspect"], help="inspect: load, validate and tokenize a dataset")
    parser.add_argument(
        "file",
        nargs="+",
        help="JSON/JSONL/CSV/Parquet file, save_to_disk folder or Hub dataset id; several are mixed into one; a "
        "run's config.yaml inspects its data section",
    )
    parser.add_argument("--format", default="auto", choices=DATA_FORMATS, help="record format (default: detect)")
    parser.add_argument(
        "--model",
        default=None,
        help=f"model whose tokenizer counts tokens (default: a config.yaml's model, else {DEFAULT_MODEL}; only the "
        "tokenizer loads)",
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
    parser.add_argument("--config", default="", help="config (subset) of the Hub datasets given (default: the first)")
    parser.add_argument("--split", default="", help="split of the Hub datasets given (default: train)")
    parser.add_argument("--revision", default="", help="branch, tag or commit of the Hub datasets (default: main)")
    parser.add_argument(
        "--limit",
        action="append",
        type=int,
        default=[],
        metavar="N",
        help="read only the first N records: once for every dataset, in order (0: all of it)",
    )
    parser.add_argument(
        "--share",
        action="append",
        type=float,
        default=[],
        metavar="X",
        help="part of the mix from each dataset, e.g. 0.3: once for every dataset, in order (0: all its records)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def main(args) -> int:
    from app import preference_data

    try:
        cfg, model = _data_config(args)
        kind = preference_data.detect_source(cfg)
        if kind is not None:  # pairs or labelled answers: their own loader says what DPO/ORPO/SimPO/KTO would see
            return _inspect_preference(cfg, kind, model, args.json)
        load = load_from_config(cfg)
        tokenizer = _tokenizer(model)
        prepared = prepare_loaded(load, cfg, tokenizer)
    except (DataError, RenderError, ConfigError) as exc:
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
        _print_summary(prepared, cfg, model)
    return 0 if stats.valid > 0 else 1


def _inspect_preference(cfg: DataConfig, kind: str, model: str, as_json: bool, limit: int = 40) -> int:
    """The summary of preference data (app.preference_data): its layout, counts, every problem by record and the
    tokens per sequence (prompt + one answer) as TRL's trainers tokenize them."""
    from app import preference_data

    got = preference_data.load(cfg, kind)
    facts = preference_data.prepare_loaded(got, RunConfig(data=cfg), _tokenizer(model)).facts
    if as_json:
        problems = [p.to_json() for p in got.problems]
        print(json.dumps({**facts, "problems": problems}, ensure_ascii=False, default=str))
        return 0 if facts["valid"] > 0 else 1
    layouts = ", ".join(facts["layouts"])
    print(f"{facts['path']}: preference data ({kind}: {layouts}), {facts['records']} records, {facts['valid']} valid")
    print(
        f"{facts['format']} rows, template {facts['template']} (tokenizer of {model}), max_seq_len {cfg.max_seq_len}"
    )
    print(
        f"tokens per sequence (prompt + one answer): mean {facts['tokens_mean']:.1f}, max {facts['tokens_max']:,}; "
        f"{facts['cut']} cut; train {facts['train']} / val {facts['val']}"
    )
    for p in got.problems[:limit]:
        print(f"  {p.describe()}")
    if len(got.problems) > limit:
        print(f"  ... and {len(got.problems) - limit} more (--json lists all)")
    return 0 if facts["valid"] > 0 else 1


def _data_config(args) -> tuple[DataConfig, str]:
    """(the DataConfig the options describe, the model whose tokenizer counts): a config.yaml's data section as it
    is, else the datasets given, mixed when there are several. Raises ConfigError naming every problem."""
    if len(args.file) == 1 and Path(args.file[0]).suffix.lower() in (".yaml", ".yml"):
        run = RunConfig.from_yaml(args.file[0])
        run.check(args.file[0])
        return run.data, args.model or run.model.name_or_path
    sources = [_source(args, k, path) for k, path in enumerate(args.file)]
    plain = len(sources) == 1 and sources[0] == DataSource(path=sources[0].path)
    run = RunConfig(
        data=DataConfig(
            path=args.file[0],
            sources=[] if plain else sources,
            format=args.format,
            template=args.template,
            max_seq_len=args.max_seq_len,
            columns=_pairs(args.column, "--column"),
            placeholders=_pairs(args.placeholder, "--placeholder"),
            system_prompt=args.system_prompt,
        )
    )
    problems = [p for p in run.validate() if p.startswith("data.")]
    if problems:
        raise ConfigError(problems)
    return run.data, args.model or DEFAULT_MODEL


def _source(args, k: int, path: str) -> DataSource:
    """The k-th dataset named on the command line, with its --limit and --share (given once for each dataset)."""
    for flag, given in (("--limit", args.limit), ("--share", args.share)):
        if given and len(given) != len(args.file):
            raise ConfigError([f"{flag}: given {len(given)} times for {len(args.file)} datasets; give it once each"])
    limit = args.limit[k] if args.limit and args.limit[k] else None
    share = args.share[k] if args.share and args.share[k] else None
    return DataSource(path, args.config, args.split, args.revision, limit, share)


def inspect_args(data_cfg: DataConfig) -> str:
    """The datasets of a config as `python -m app data inspect` takes them, shell-quoted: a path, a Hub id with its
    config, split and revision, or the datasets of a mix with their limits and shares."""
    sources = data_cfg.datasets()
    words = [s.path for s in sources]
    one = sources[0]
    if len(sources) == 1:
        words += [w for flag, v in (("--config", one.config), ("--split", one.split), ("--revision", one.revision))
                  for w in ((flag, v) if v else ())]  # fmt: skip
    for flag, key in (("--limit", "limit"), ("--share", "share")):
        if len(sources) > 1 and any(getattr(s, key) for s in sources):
            words += [w for s in sources for w in (flag, f"{getattr(s, key) or 0:g}")]
    return " ".join(shlex.quote(str(w)) for w in words)


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
    name = load.path if len(cfg.datasets()) == 1 else describe(cfg)
    print(f"{name}: {load.format}, {s.records} records, {s.valid} valid, {s.skipped} skipped ({cols})")
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
