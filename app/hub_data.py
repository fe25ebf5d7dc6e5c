"""Datasets from the Hugging Face Hub: their configs and splits, the download of one config's data files, and
reading a downloaded split (also with no network).

`datasets` decides which files make up a config's splits (the README's `configs:` yaml, else its file-name
rules) and reads them; `app.hub` downloads exactly those files into the Hugging Face cache (progress, cancel,
resume, disk check) and says what went wrong in one line. What a download fetched is noted in TuneDesk's folder
(`paths.home()/hub_datasets/`), so a split reads as ready only when every one of its files is in the cache: a
cancelled download of a many-file split never passes for a smaller dataset.

    configs, splits = dataset_choices("tatsu-lab/alpaca")          # (["default"], {"default": ["train"]})
    got = download_dataset("tatsu-lab/alpaca", split="train")        # DatasetDownload: sha, files, records
    got = cached_dataset("tatsu-lab/alpaca", split="train")          # the same, from the cache alone (or None)
    ds, got = open_split("tatsu-lab/alpaca", split="train")          # a datasets.Dataset, cached or fetched first

No gradio, no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import hub, paths

SHA = re.compile(r"[0-9a-f]{40}")
DEFAULT_SPLIT = "train"
MANIFESTS = "hub_datasets"
"""Folder under paths.home() with one JSON file per downloaded commit: {"default": config, "configs": {config:
{module, kwargs, names: every split of the config, splits: {downloaded split: its files}}}}."""


@dataclass(frozen=True)
class DatasetDownload:
    """One downloaded config of a Hub dataset (or one split of it) and where its files are."""

    repo_id: str
    config: str
    split: str | None
    """The split asked for; None: every split of the config."""
    sha: str
    """The commit the files come from: put it in data.sources[].revision to read the same records again."""
    path: Path
    """The snapshot folder in the Hugging Face cache."""
    files: dict[str, tuple[Path, ...]]
    """Split -> its data files in the snapshot."""
    module: str
    """The `datasets` builder that reads the files: json, csv, parquet, text, arrow."""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Reader options the dataset card sets for this config (e.g. a CSV separator)."""
    records: dict[str, int] = dataclasses.field(default_factory=dict)
    """Split -> rows, for the splits read so far."""

    def describe(self, split: str | None = None) -> str:
        """'owner/name at commit 1a2b3c4d5e6f (config en, split train, 6 records)'."""
        split = split or self.split
        bits = [f"config {self.config}"] + ([f"split {split}"] if split else [])
        if split in self.records:
            bits.append(f"{self.records[split]:,} records")
        return f"{self.repo_id} at commit {self.sha[:12]} ({', '.join(bits)})"


# ---- what the Hub has --------------------------------------------------------------------------------------------
def dataset_choices(repo_id: str, revision: str | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """(config names, split names by config) of a Hub dataset, the default config first. Raises hub.HubError
    (unreachable within 3 s, not found, gated...)."""
    repo_id = _clean(repo_id)
    hub.require_reachable()
    configs, default = _configs(repo_id, revision)[1:]
    names = sorted(configs, key=lambda name: name != default)
    splits = {name: configs[name] or _resolved(repo_id, name, revision)[1].keys() for name in names}
    return names, {name: [str(s) for s in found] for name, found in splits.items()}


def _clean(repo_id: str) -> str:
    """A dataset id: owner/name that huggingface_hub accepts and that does not read as a file name (data.json)."""
    found = hub.valid_id(repo_id) if (repo_id or "").strip().strip("/").count("/") == 1 else None
    if found is None or Path(found).suffix:
        shown = (repo_id or "").strip()
        raise hub.HubError("not_found", f"{shown!r} is not a Hub dataset id: use owner/name, e.g. tatsu-lab/alpaca")
    return found


def _configs(repo_id: str, revision: str | None) -> tuple[str, dict[str, list[str]], str]:
    """(commit sha, {config: split names from the card, empty when only resolving tells}, default config)."""
    from datasets.load import dataset_module_factory

    try:
        module = dataset_module_factory(repo_id, revision=revision)
    except Exception as exc:
        raise _hub_error(exc, repo_id) from None
    params = module.builder_configs_parameters
    found = {c.name: [str(s) for s in (c.data_files or {})] for c in params.builder_configs or []}
    if not found:
        found = {"default": []}
    return module.hash, found, params.default_config_name or next(iter(found))


def _resolved(repo_id: str, config: str, revision: str | None) -> tuple[Any, dict[str, list[str]]]:
    """(the config's builder, split -> the repo paths of its data files) as `datasets` resolves them."""
    from datasets import load_dataset_builder

    try:
        builder = load_dataset_builder(repo_id, config, revision=revision)
    except Exception as exc:
        raise _hub_error(exc, repo_id) from None
    found = builder.config.data_files or {}
    return builder, {str(split): [_repo_path(url) for url in urls] for split, urls in found.items()}


def _repo_path(url: str) -> str:
    """'hf://datasets/owner/name@<sha>/en/train.json' -> 'en/train.json'."""
    return url.split("@", 1)[1].split("/", 1)[1] if url.startswith("hf://") else url


def _hub_error(exc: BaseException, repo_id: str) -> hub.HubError:
    """datasets wraps huggingface_hub's errors (DatasetNotFoundError from RepositoryNotFoundError...): the one-line
    message comes from app.hub for the innermost Hub error, else names the dataset and the reason."""
    from huggingface_hub import errors

    for cause in reversed(hub.chain(exc)):
        if isinstance(cause, (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, errors.HFValidationError)):
            return hub.as_hub_error(cause, repo_id, "dataset")
    if type(exc).__name__ == "DatasetNotFoundError":  # datasets drops the Hub error it came from ("from None")
        if "gated" in str(exc):
            return hub.gated_error(repo_id, "dataset")
        return hub.not_found_error(repo_id, "dataset")
    err = hub.as_hub_error(exc, repo_id, "dataset")
    if err.kind == "failed":
        return hub.HubError("failed", f"dataset {repo_id} cannot be read: {hub.first_line(exc)}")
    return err


# ---- download ---------------------------------------------------------------------------------------------------
def download_dataset(
    repo_id: str,
    config: str | None = None,
    split: str | None = None,
    revision: str | None = None,
    on_progress: Callable[[hub.Progress], None] | None = None,
    cancel: threading.Event | None = None,
    on_start: Callable[[str], None] | None = None,
) -> DatasetDownload:
    """Fetch the data files of one config (of one split, when given) into the Hugging Face cache, check that
    `datasets` reads them, and count the records. `on_start` hears what is about to be fetched before any byte
    moves ('owner/name (config en, split train: 1.2 MB in 2 files)'). Raises hub.HubError; Cancel leaves it not
    ready (open_split and cached_download do not find it) and a second call resumes."""
    repo_id = _clean(repo_id)
    hub.require_reachable()
    sha, configs, default = _configs(repo_id, revision or None)
    config = config or default
    if config not in configs:
        raise hub.HubError("not_found", f"dataset {repo_id} has no config {config!r}; it has {', '.join(configs)}")
    builder, files = _resolved(repo_id, config, sha)
    if split and split not in files:
        raise hub.HubError(
            "not_found", f"config {config} of {repo_id} has no split {split!r}; it has {', '.join(files)}"
        )
    chosen = {s: paths_ for s, paths_ in files.items() if not split or s == split}
    wanted = [p for found in chosen.values() for p in found] + ["README.md"]
    plan = hub.plan_download(repo_id, "dataset", revision=revision or None, patterns=wanted)
    if on_start is not None:
        which = f"split {split}" if split else f"splits {', '.join(chosen)}"
        size = f"{hub.fmt_bytes(plan.total_bytes)} in {len(plan.files)} files"
        on_start(f"{repo_id} (config {config}, {which}: {size})")
    folder = hub.download(plan, on_progress, cancel)
    got = DatasetDownload(
        repo_id,
        config,
        split or None,
        plan.sha,
        folder,
        {s: tuple(folder / p for p in found) for s, found in chosen.items()},
        builder.name,
        _reader_options(builder.config),
    )
    _remember(got, default, list(files))
    counted = {s: len(_read(got, s)) for s in got.files}
    return dataclasses.replace(got, records=counted)


def _reader_options(config: Any) -> dict[str, Any]:
    """The card's reader options for the config (fields of the builder config that differ from their defaults and
    are plain values), so a second read with no network reads the files the same way."""
    out = {}
    for f in dataclasses.fields(config):
        if f.name in ("name", "version", "data_dir", "data_files", "description", "features"):
            continue
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value != default and isinstance(value, (str, int, float, bool, type(None))):
            out[f.name] = value
    return out


# ---- what is here -----------------------------------------------------------------------------------------------
def _manifest(repo_id: str, sha: str) -> Path:
    return paths.home() / MANIFESTS / repo_id.replace("/", "--") / f"{sha}.json"


def _remember(got: DatasetDownload, default: str, names: list[str]) -> None:
    """Note which files make up each split just downloaded (merged with earlier notes for this commit) and every
    split the config has (`names`), so an empty split resolves to the same one with or without the network."""
    path = _manifest(got.repo_id, got.sha)
    known = _read_manifest(path)
    entry = known.setdefault("configs", {}).setdefault(got.config, {"splits": {}})
    entry.update(module=got.module, kwargs=got.kwargs, names=names)
    for split, files in got.files.items():
        entry["splits"][split] = [f.relative_to(got.path).as_posix() for f in files]
    known["default"] = default
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
    tmp.replace(path)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cached(repo_id: str, config: str, revision: str) -> tuple[Path, str, dict[str, Any]] | None:
    """(the snapshot folder, the config, its manifest entry) of what a download noted for this config, or None.
    An empty config is the default one. No network."""
    try:
        repo_id = _clean(repo_id)
    except hub.HubError:
        return None
    snapshot = hub.cached_path(repo_id, "dataset", revision or None)
    if snapshot is None:
        return None
    known = _read_manifest(_manifest(repo_id, snapshot.name))
    config = config or known.get("default", "")
    entry = known.get("configs", {}).get(config)
    if not entry or not entry.get("splits") or not entry.get("names"):
        return None
    return snapshot, config, entry


def _files_here(snapshot: Path, entry: dict[str, Any], split: str) -> tuple[Path, ...] | None:
    """The files of a downloaded split when every one is in the snapshot, else None."""
    files = tuple(snapshot / f for f in entry["splits"].get(split, []))
    return files if files and all(f.is_file() for f in files) else None


def _default(splits: Iterable[str]) -> str:
    """The split an empty one means: train when the config has it, else its first."""
    splits = list(splits)
    return DEFAULT_SPLIT if DEFAULT_SPLIT in splits else splits[0]


def cached_download(
    repo_id: str, config: str = "", split: str = "", revision: str = ""
) -> tuple[DatasetDownload, str] | None:
    """(the download that holds this split, the split) when every file of it is in the Hugging Face cache, else
    None. No network. An empty config is the default one; an empty split is the config's train split when it has
    one, else its first split (whatever else was downloaded: a test split downloaded alone never stands in)."""
    found = _cached(repo_id, config, revision)
    if found is None:
        return None
    snapshot, config, entry = found
    split = split or _default(entry["names"])
    files = _files_here(snapshot, entry, split)
    if files is None:
        return None
    got = DatasetDownload(
        repo_id.strip().strip("/"),
        config,
        split,
        snapshot.name,
        snapshot,
        {split: files},
        entry["module"],
        entry.get("kwargs", {}),
    )
    return got, split


def cached_dataset(
    repo_id: str, config: str | None = None, split: str | None = None, revision: str | None = None
) -> DatasetDownload | None:
    """What download_dataset would return, from the cache alone: every split of the config (`split` alone, when
    given) with its record count, when all their files are here; else None. No network. Raises hub.HubError
    only when a cached file cannot be read."""
    found = _cached(repo_id, config or "", revision or "")
    if found is None:
        return None
    snapshot, config, entry = found
    files = {}
    for name in [split] if split else entry["names"]:
        here = _files_here(snapshot, entry, name)
        if here is None:
            return None
        files[name] = here
    got = DatasetDownload(
        repo_id.strip().strip("/"),
        config,
        split or None,
        snapshot.name,
        snapshot,
        files,
        entry["module"],
        entry.get("kwargs", {}),
    )
    return dataclasses.replace(got, records={s: len(_read(got, s)) for s in files})


def open_split(
    repo_id: str, config: str = "", split: str = "", revision: str = "", fetch: bool = True
) -> tuple[Any, DatasetDownload]:
    """(the split as a datasets.Dataset, its DatasetDownload with the record count). A split in the cache reads
    with no network; else it is downloaded first (`fetch`), after checking within 3 s that the Hub answers.
    Raises hub.HubError."""
    found = cached_download(repo_id, config, split, revision)
    if found is None:
        if not fetch:
            raise hub.HubError("absent", f"{repo_id} is not downloaded yet")
        got = download_dataset(repo_id, config or None, split or None, revision or None)
        found = cached_download(repo_id, got.config, split, got.sha) or (got, split or _default(got.files))
    got, split = found
    ds = _read(got, split)
    return ds, dataclasses.replace(got, split=split, records={split: len(ds)})


def cached_sha(repo_id: str, config: str = "", split: str = "", revision: str = "") -> str | None:
    """The commit a split in the cache comes from (None when it is not fully here): what a data cache keys on."""
    found = cached_download(repo_id, config, split, revision)
    return found[0].sha if found else None


def _read(got: DatasetDownload, split: str) -> Any:
    files = tuple(str(f) for f in got.files[split])
    try:
        return _load(got.module, files, json.dumps(got.kwargs, sort_keys=True))
    except Exception as exc:  # datasets raises DatasetGenerationError, ArrowInvalid, ValueError...
        raise hub.HubError("failed", f"{got.describe(split)} cannot be read: {hub.first_line(exc)}") from None


@functools.lru_cache(maxsize=4)
def _load(module: str, files: tuple[str, ...], options: str) -> Any:
    """The files as one memory-mapped Dataset, through the `datasets` builder `module` (its Arrow copy is kept in
    the datasets cache, so the next read is quick). Keyed by file paths: a snapshot's files never change."""
    import importlib

    from datasets import load_dataset

    bars = importlib.import_module("datasets.utils.tqdm")  # the module: datasets.utils.tqdm is also a class there

    shown = not bars.are_progress_bars_disabled()
    bars.disable_progress_bars()  # "Generating train split" bars would cut into the CLI's own progress line
    try:
        return load_dataset(module, data_files={"train": list(files)}, split="train", **json.loads(options))
    finally:
        if shown:
            bars.enable_progress_bars()
