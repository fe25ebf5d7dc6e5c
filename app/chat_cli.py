"""python -m app chat: the terminal front of chat (a REPL over every column, or a prompt set saved as CSV)."""

from __future__ import annotations

import argparse
import sys

from app import commands
from app.chat import MAX_ADAPTERS, ChatError, ChatSession
from app.commands import ChatConfig
from app.config import ConfigError
from app.devices import DeviceBusy
from app.modelset import GenSettings
from app.prompt_sets import load_prompt_set, save_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapters", nargs="*", help=f"up to {MAX_ADAPTERS} adapter, checkpoint, run or model folders")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        dest="more_adapters",
        metavar="FOLDER",
        help="an adapter folder, like the positional ones (repeatable; the same option as `evaluate --adapter`)",
    )
    parser.add_argument("--base", help="base model (catalog id, folder or .gguf); default: the first adapter's base")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--allow-pickle", action="store_true", help="allow adapter_model.bin (pickle) adapters")
    parser.add_argument("--prompts", help="run a prompt set (.txt one per line, .json list) instead of chatting")
    parser.add_argument("--csv", help="with --prompts: save the answer table here")
    commands.add_options(parser, ChatConfig)  # --max-new-tokens, --temperature, ..., --system


def main(args: argparse.Namespace) -> int:
    try:
        settings = commands.from_args(ChatConfig, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        session = ChatSession(
            args.base,
            [*args.adapters, *args.more_adapters],
            args.device,
            args.allow_pickle,
            progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr),
        )
        for warning in session.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.prompts:
            df = session.run_prompt_set(load_prompt_set(args.prompts), settings)
            print(df.to_string(max_colwidth=60))
            print(f"tokens/s: {df.attrs['tokens_per_s']}")
            if args.csv:
                print(f"saved {save_table(df, args.csv)}")
            return 0
        _repl(session, settings)
    except (ChatError, DeviceBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _repl(session: ChatSession, settings: GenSettings) -> None:
    histories: dict[str, list[dict]] = {c: [] for c in session.columns}
    print(f"columns: {', '.join(session.columns)}. Type a message; /reset clears the history, /quit ends.")
    while True:
        try:
            prompt = input(">>> ").strip()
        except EOFError:
            return
        if prompt in ("/quit", "/exit"):
            return
        if prompt == "/reset":
            histories = {c: [] for c in session.columns}
            continue
        for column, (answer, tps) in session.answer_all(prompt, settings, histories).items():
            print(f"--- {column} ({tps:.1f} tok/s)\n{answer}")
            histories[column] += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
