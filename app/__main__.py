"""TuneDesk command line: `python -m app COMMAND ...`.

Each command lives in the module that does the work and exposes `add_arguments(parser)` and `main(args) -> int`;
only the chosen command's module is imported, so `--help` and `estimate` stay fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "ui": ("app.ui.app", "start the web app (what launch.py ends in)"),
    "download": ("app.hub_cli", "download a model or dataset from the Hugging Face Hub (progress, resume)"),
    "setup": ("app.setup", "fetch and convert the embedded default model into the model cache"),
    "train": ("app.train_cli", "train from a config YAML, headless, writing the same run folder as the UI"),
    "estimate": ("app.estimate", "estimate peak memory of a run config, say whether it fits and how to make it fit"),
    "launch-command": ("app.launch", "plan a run on several GPUs or machines: the accelerate config and command"),
    "data": ("app.data_cli", "inspect and validate a dataset file"),
    "chat": ("app.chat_cli", "chat with a base model and adapters from the terminal"),
    "merge": ("app.export", "merge an adapter into its base model and save a Hugging Face folder"),
    "export": ("app.export", "export a merged model or adapter to GGUF with an Ollama Modelfile"),
    "push": (
        "app.publish",
        "upload a merged model, an adapter or GGUF files to the Hugging Face Hub (private by default)",
    ),
    "evaluate": ("app.evaluate_cli", "score base and adapters on a dataset (loss, perplexity, ROUGE, BLEU, EM)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="python -m app",
        description="TuneDesk: point-and-click fine-tuning of causal language models.",
        epilog=f"commands:\n{lines}\n\nRun `python -m app COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        parser.add_argument("command", choices=list(COMMANDS))
        parser.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module, parser = command_parser(name)
    args = parser.parse_args(rest)
    args.command = name
    return int(module.main(args) or 0)


def command_parser(name: str) -> tuple[object, argparse.ArgumentParser]:
    """(the command's module, its argument parser): what `python -m app NAME ...` parses with."""
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m app {name}", description=help_)
    module.add_arguments(parser, name) if _takes_name(module.add_arguments) else module.add_arguments(parser)
    return module, parser


def _takes_name(fn) -> bool:
    import inspect

    return len(inspect.signature(fn).parameters) >= 2


if __name__ == "__main__":
    sys.exit(main())
