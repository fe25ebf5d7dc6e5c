"""`python -m app setup`: make sure the embedded default model is in the cache (fetch + convert once)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def main(args: argparse.Namespace) -> int:
    from app.modeling import ModelError, default_model_dir, ensure_default_model

    try:
        folder = ensure_default_model()
    except ModelError as exc:
        print(f"setup: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"default model ready: {folder}")
    return 0 if folder == default_model_dir() else 1
