"""python -m app evaluate: the terminal front of evaluate (options, Ctrl-C to stop, the table or metrics.json)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from app import commands
from app.commands import EvaluateConfig
from app.config import ConfigError
from app.eval_data import EvalError, file_config
from app.eval_report import format_table
from app.evaluate import evaluate, run_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="base model: catalog id, folder, .gguf or merged folder (default: the run's or the adapter's base)",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="A",
        help="adapter folder, checkpoint-N, run folder or model folder; repeat to compare several",
    )
    parser.add_argument("--data", help="data file to evaluate on (default: the run's validation split)")
    parser.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="run folder: its data settings, validation split and base model; the evaluation is saved in it",
    )
    commands.add_options(parser, EvaluateConfig)  # --max-examples, --max-new-tokens, --batch-size
    parser.add_argument(
        "--placeholder",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fill {{KEY}} in the data (e.g. name=TuneBot); repeatable",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-save", action="store_true", help="do not save the evaluation in the run folder")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the table")


def main(args: argparse.Namespace) -> int:
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())  # Ctrl-C: stop and print what is done
    try:
        settings = commands.from_args(EvaluateConfig, args)
        report = evaluate(
            args.model,
            args.adapter,
            _cli_data(args),
            args.run,
            settings.max_examples or None,
            settings.max_new_tokens,
            args.device,
            _print_progress,
            cancel,
            not args.no_save,
            settings.batch_size,
        )
    except (EvalError, ConfigError) as exc:
        print(f"python -m app evaluate: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps({**report.to_json(), "saved_to": report.saved_to}, ensure_ascii=False, indent=2, default=str))
    else:
        print(format_table(report))
    return 130 if report.cancelled else 0


def _cli_data(args: argparse.Namespace) -> Any:
    if not args.placeholder:
        return args.data
    if not args.data:
        raise SystemExit("python -m app evaluate: --placeholder needs --data FILE")
    pairs = {}
    for item in args.placeholder:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"python -m app evaluate: --placeholder {item!r}: write KEY=VALUE, e.g. name=TuneBot")
        pairs[key] = value
    run_cfg = run_config(Path(args.run)) if args.run else None
    return replace(file_config(run_cfg, args.data), placeholders=pairs)


def _print_progress(frac: float, msg: str) -> None:
    print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)
