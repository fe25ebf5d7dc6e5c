"""`python -m app train CONFIG.yaml`: the headless front of app.train, writing the same run folder as the UI.

    python -m app train CONFIG.yaml [--max-steps N] [--run-name NAME] [--trust-remote-code]
    python -m app train --resume runs/X            continue a run from its last checkpoint
    torchrun --nproc_per_node 2 -m app train CONFIG.yaml     data-parallel (accelerate launch on GPUs)

Every check runs before the run folder is made; the first Ctrl-C (or SIGTERM) stops at the next step and saves, a
second aborts. Torch-free at import: app.train is imported when a run starts, so --help stays fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import consent, history, runs
from app.config import ConfigError, RunConfig

if TYPE_CHECKING:
    from app.train import Dist


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="run config YAML: a preset, or a run's config.yaml")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides train.max_steps)")
    parser.add_argument("--run-name", help="name appended to the run folder")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="you have read the model folder's .py files and let them run (needed when the config has "
        "model.trust_remote_code: true; the config alone does not run a model's code)",
    )


def _load_cli_config(args: argparse.Namespace) -> RunConfig:
    if args.resume:
        cfg = runs.load_config(args.resume)
    elif args.config:
        cfg = RunConfig.from_yaml(args.config)
    else:
        raise ConfigError(["give a config YAML, or --resume RUN_DIR"])
    changes: dict[str, Any] = {}
    if args.max_steps is not None:
        changes["train.max_steps"] = args.max_steps
    if args.run_name:
        changes["train.run_name"] = args.run_name
    return cfg.replace(**changes) if changes else cfg


def _download_model_first(cfg: RunConfig) -> RunConfig:
    """A Hub id (or catalog name) that is not downloaded yet is fetched now, with progress, before the checks. An
    id the Hub knows under another name (renamed, other case) continues as the name the Hub gave it."""
    from app import hub, modeling

    hub_id = modeling.hub_id_of(cfg.model.name_or_path)
    if hub_id is None or hub.cached_path(hub_id) is not None:
        return cfg
    from app import hub_cli

    try:
        path = hub_cli.fetch_model(hub_id, allow_pickle=cfg.model.allow_pickle)
    except hub.HubError as exc:
        raise ConfigError([f"model.name_or_path: {exc}"]) from None
    if hub.cached_path(hub_id) is None:
        return cfg.replace(**{"model.name_or_path": hub.folder_repo_id(path)})
    return cfg


def _download_data_first(cfg: RunConfig) -> None:
    """Hub datasets whose split is not in the cache are fetched now, with progress, before the checks."""
    from app import data, hub_cli

    try:
        data.fetch(cfg.data, hub_cli.progress_printer())
    except data.DataError as exc:
        raise ConfigError([f"data: {exc}"]) from None


def _consent_from_cli(cfg: RunConfig, args: argparse.Namespace) -> None:
    """--trust-remote-code is the user's consent (app.consent) to the config's model code, for this process."""
    if getattr(args, "trust_remote_code", False) and cfg.model.trust_remote_code:
        from app import modeling

        try:
            consent.grant(modeling.resolve_model(cfg.model.name_or_path))
        except modeling.ModelError:
            pass  # preflight names the missing model


def _shared_run_dir(cfg: RunConfig, args: argparse.Namespace, dist: Dist) -> Path:
    """Rank 0 creates the run folder; under torchrun every rank receives its path."""
    import torch

    run_dir = Path(args.resume) if args.resume else None
    if run_dir is None and dist.main:
        run_dir = runs.create_run(cfg, args.run_name)
    if dist.world > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # joins the process group (gloo on CPU, nccl on CUDA)
        box = [str(run_dir) if run_dir else None]
        torch.distributed.broadcast_object_list(box, src=0)
        run_dir = Path(box[0])
    return run_dir


def main(args: argparse.Namespace) -> int:
    """Every check before the run folder is made (or, for --resume, before anything is written into it): a
    refusal prints one message and leaves runs/ as it was."""
    from app import train  # torch, transformers: loaded for a run, not for --help

    logging.basicConfig(level=logging.INFO, format="[tunedesk] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per Hub request
    try:
        cfg = _load_cli_config(args)
        problems = cfg.validate()  # a config error is said before a download of many gigabytes, not after
        if problems:
            raise ConfigError(problems, args.config or args.resume)
        cfg = _download_model_first(cfg)
        _download_data_first(cfg)
        _consent_from_cli(cfg, args)
        problems = train.preflight(cfg)  # validate() and what needs the machine: device, model, data, output folder
        if problems:
            raise ConfigError(problems, args.config or args.resume)
    except ConfigError as exc:
        print(f"python -m app train: {exc}", file=sys.stderr)
        return 2
    dist = train.dist_info()
    if dist.main and not args.resume:
        _print_learn_warnings(cfg, dist)
    claim = None
    if args.resume and dist.main:
        try:
            claim = runs.claim(args.resume, resume=True)
        except runs.RunBusy as exc:
            print(f"python -m app train: {exc}", file=sys.stderr)
            return 1
    run_dir = _shared_run_dir(cfg, args, dist)
    if args.resume and args.max_steps is not None and dist.main:
        cfg.save(run_dir / runs.CONFIG)
    stop = threading.Event()
    _install_stop_signals(stop)
    if dist.main:
        print(f"[tunedesk] run folder: {run_dir}", file=sys.stderr, flush=True)
    status = train.run(cfg, run_dir, stop, resume=bool(args.resume), progress=True, claim=claim)
    if dist.main:
        _print_outcome(run_dir, status)
    return 0 if status in ("finished", "stopped") else 1


def _print_learn_warnings(cfg: RunConfig, dist: Dist) -> None:
    """The "will it learn?" warnings (app.learn_checks), each with its fix, before a new run starts; they never
    stop it (a resumed run was warned when it started)."""
    from app import learn_checks

    text = learn_checks.format_warnings(learn_checks.checks(cfg, world=dist.world))
    if text:
        print(f"[tunedesk] {text}", file=sys.stderr, flush=True)


def _install_stop_signals(stop: threading.Event) -> None:
    """First Ctrl-C / SIGTERM: stop at the next step and save; a second Ctrl-C aborts (the run is resumable)."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            "\n[tunedesk] stopping after this step (saving a checkpoint); Ctrl-C again to abort",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _print_outcome(run_dir: Path, status: str) -> None:
    end = history.read(run_dir).ending or history.Ending(status, 0.0)
    if status == "failed":
        print(f"[tunedesk] failed: {end.message}", file=sys.stderr)
    else:
        print(f"[tunedesk] {status} at step {end.step}, loss {end.loss}; saved {end.artifact}", file=sys.stderr)
