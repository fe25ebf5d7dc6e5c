"""`python -m app download model ID` / `python -m app download dataset ID`: the Model and Data tabs' Download,
from a terminal. Progress on one redrawn line (a line per 10% when the output is not a terminal), the local path
at the end; Ctrl-C stops the transfer and keeps what arrived for the next run to resume.

Also `fetch_model`: what `python -m app train` calls for a Hub id that is not downloaded yet.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from app import hub


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{model,dataset}")
    model = kinds.add_parser("model", help="a model repo: config, tokenizer and safetensors weights only")
    model.add_argument("repo_id", help="Hub id (owner/name) or a catalog name, e.g. HuggingFaceTB/SmolLM2-360M")
    model.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    model.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also fetch pytorch_model*.bin when the repo has no safetensors (pickle can run code: trust its author)",
    )
    data = kinds.add_parser("dataset", help="a dataset repo: the data files of one config")
    data.add_argument("repo_id", help="Hub dataset id (owner/name)")
    data.add_argument("--config", default=None, help="dataset config (subset) name; default: the first one")
    data.add_argument("--split", default=None, help="split to check and count, e.g. train (default: all)")
    data.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")


def progress_printer(stream: TextIO = sys.stderr) -> Callable[[hub.Progress], None]:
    """A progress callback: one redrawn line on a terminal, else a line at every further 10%."""
    tty = stream.isatty()
    last = [-1]

    def show(p: hub.Progress) -> None:
        if tty:
            stream.write(f"\r{p.line():<78}")
        else:
            tenth = int(p.fraction * 10) + (p.files_done == p.files_total)  # the last report always shows
            if tenth == last[0]:
                return
            last[0] = tenth
            stream.write(p.line() + "\n")
        stream.flush()

    return show


def _end_line(stream: TextIO) -> None:
    if stream.isatty():
        stream.write("\n")
        stream.flush()


def fetch_model(
    name: str,
    revision: str | None = None,
    allow_pickle: bool = False,
    stream: TextIO = sys.stderr,
    cancel: threading.Event | None = None,
) -> Path:
    """The cached snapshot of a Hub model (a catalog name maps to its Hub id), downloading what is missing first
    and saying so on `stream`. Raises hub.HubError."""
    from app import catalog

    facts = catalog.lookup(name)
    repo_id = facts.hub_id if facts else hub.require_id(name)
    ready = hub.cached_path(repo_id, revision=revision)
    if ready is not None:
        return ready
    plan = hub.plan_download(repo_id, revision=revision, allow_pickle=allow_pickle)
    skipped = f"; leaving {len(plan.skipped)} other files on the Hub" if plan.skipped else ""
    stream.write(
        f"downloading {plan.repo_id} ({hub.fmt_bytes(plan.total_bytes)} in {len(plan.files)} files{skipped})\n"
    )
    try:
        return hub.download(plan, progress_printer(stream), cancel)
    finally:
        _end_line(stream)


def main(args: argparse.Namespace) -> int:
    cancel = threading.Event()
    # Ctrl-C sets Cancel, which the transfer notices at its next chunk and stops at (a KeyboardInterrupt would
    # only reach this thread, while the download threads went on to finish their files).
    signal.signal(signal.SIGINT, lambda signum, frame: cancel.set())
    try:
        if args.kind == "model":
            path = fetch_model(args.repo_id, args.revision, args.allow_pickle, cancel=cancel)
        else:
            from app import hub_data

            got = hub_data.cached_dataset(args.repo_id, args.config, args.split, args.revision)  # no network
            if got is None:
                got = hub_data.download_dataset(
                    args.repo_id,
                    config=args.config,
                    split=args.split,
                    revision=args.revision,
                    on_progress=progress_printer(sys.stderr),
                    cancel=cancel,
                    on_start=lambda line: sys.stderr.write(f"downloading {line}\n"),
                )
                _end_line(sys.stderr)
            for split in got.files:
                print(got.describe(split), file=sys.stderr)
            path = Path(got.path)
    except hub.HubError as exc:
        _end_line(sys.stderr)
        print(f"python -m app download: {exc}", file=sys.stderr)
        return 130 if exc.kind == "cancelled" else 1
    print(path)
    return 0
