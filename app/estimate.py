"""The estimate service: a run config and the device facts -> the memory estimate, the verdict, the fixes and the
method comparison; what the Model tab shows and `python -m app estimate` prints, so the two agree.

    answer = service(cfg)                    # the device cfg.train.device names on this machine (app.devices)
    answer.verdict                           # fits | tight | no | unknown
    answer.fixes[0].changes                  # {"train.gradient_checkpointing": True}: cfg.replace(**changes)
    answer.to_json()                         # the `estimate` endpoint's and `--json`'s object

The numbers come from app.memory (the estimator); this module decides what they mean for a person.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import devices, methods, objective_table, parallel
from app.config import ConfigError, RunConfig
from app.memory import (
    GIB,
    LABELS,
    Architecture,
    EstimateError,
    MemoryEstimate,
    architecture_from,
    estimate,
)

TIGHT_SHARE = 0.85
"""Above this share of the device the run is "tight": allocator fragmentation and the CUDA context typically take
the last 5-15%."""


def verdict(total_bytes: int, capacity_bytes: int | None, tight_share: float = TIGHT_SHARE) -> str:
    """fits | tight | no | unknown (no capacity to compare with).

    >>> verdict(7 * GIB, 8 * GIB), verdict(9 * GIB, 8 * GIB), verdict(1, None)
    ('tight', 'no', 'unknown')
    """
    if not capacity_bytes:
        return "unknown"
    if total_bytes > capacity_bytes:
        return "no"
    return "tight" if total_bytes > tight_share * capacity_bytes else "fits"


# ---- sized for the data -------------------------------------------------------------------------------------
ALL_EXAMPLES = 5_000
"""Datasets up to this many examples are tokenized whole (~2 s with a chat template on a busy 2-core machine);
larger ones by their LONGEST_SAMPLE longest examples in characters, which hold the widest batch."""
LONGEST_SAMPLE = 256


@dataclass(frozen=True)
class DataLengths:
    """Token lengths of a run's examples (rendered with its template and system prompt, before the max_seq_len
    cut), longest first: what the trainer's batches are built from.

    >>> DataLengths((258, 40, 12), True, 3, "identity.json").batch(RunConfig())  # batch 4, max_seq_len 512
    (3, 258)
    """

    lengths: tuple[int, ...]
    complete: bool
    """Every example was tokenized; else only the longest ones by characters (enough for the widest batch)."""
    examples: int
    name: str
    """The dataset's file name, as the Model tab says it."""

    def batch(self, cfg: RunConfig) -> tuple[int, int]:
        """(rows, tokens per row) of the largest micro-batch the trainer builds (app.batching.longest_batch)."""
        t, seq = cfg.train, cfg.data.max_seq_len
        if not self.complete:  # a large dataset fills every micro-batch (and every packed row)
            return t.batch_size, seq if t.packing else min(self.lengths[0], seq)
        rows, width = _longest_batch(self.lengths, t.batch_size, seq, t.packing)
        return (rows, width) if rows else (t.batch_size, seq)

    def longer_than(self, seq: int) -> int | None:
        """Examples that a max_seq_len of `seq` cuts; None when not every example was tokenized."""
        return sum(1 for n in self.lengths if n > seq) if self.complete else None


@functools.lru_cache(maxsize=64)
def _longest_batch(lengths: tuple[int, ...], batch_size: int, max_len: int, packing: bool) -> tuple[int, int]:
    """app.batching.longest_batch, cached: the panel asks it for every method and fix on every slider move, and
    packing 5,000 examples takes ~10 ms."""
    from app.batching import longest_batch  # torch: already imported by the tokenizer that made these lengths

    return longest_batch(lengths, batch_size, max_len, packing)


def sized_estimate(
    arch: Architecture, cfg: RunConfig, device: str, capacity: int | None, data: DataLengths | None = None
) -> MemoryEstimate:
    """memory.estimate for the largest micro-batch the trainer builds from `data`; for batch_size x max_seq_len
    tokens when there is no data to size for."""
    return estimate(arch, sized_config(cfg, data), device, capacity)


def sized_config(cfg: RunConfig, data: DataLengths | None) -> RunConfig:
    """cfg with batch_size x max_seq_len set to the largest micro-batch built from `data` (cfg itself without)."""
    if data is None:
        return cfg
    rows, width = data.batch(cfg)
    return cfg.replace(**{"train.batch_size": rows, "data.max_seq_len": width})


_LENGTHS: OrderedDict[tuple, DataLengths | None] = OrderedDict()
_LENGTHS_LOCK = threading.Lock()


def data_lengths(cfg: RunConfig) -> DataLengths | None:
    """The token lengths of cfg's datasets (all of a mix) with its base model's tokenizer, or None when a dataset
    is not here (a file not found, a Hub split not downloaded) or the tokenizer is not on this machine (the
    estimate then sizes for batch_size x max_seq_len). Imports the tokenizer (torch) on first use.

    Cached by the datasets' fingerprint (each file's path, mtime and size; each Hub split's commit), model,
    format, columns, placeholders, template, system prompt and max_samples, so the estimate stays live while
    sliders move: batch size, max_seq_len and packing apply to the cached lengths. The last 8 datasets are kept."""
    key = _lengths_key(cfg)
    if key is None:
        return None
    with _LENGTHS_LOCK:  # one tokenization per dataset: a second estimate waits for it, then reads the cache
        if key not in _LENGTHS:
            model = tokenizer_source(cfg)
            _LENGTHS[key] = None if model is None else _tokenize_lengths(model, cfg)
            while len(_LENGTHS) > 8:
                _LENGTHS.popitem(last=False)
        _LENGTHS.move_to_end(key)
        return _LENGTHS[key]


def lengths_known(cfg: RunConfig) -> bool:
    """data_lengths(cfg) answers at once: there is no local dataset to measure, or it was measured (cheap: a stat
    of the file, no tokenizer, no torch), so a UI can draw the estimate now and size it for the data after."""
    key = _lengths_key(cfg)
    return key is None or key in _LENGTHS


def _lengths_key(cfg: RunConfig) -> tuple | None:
    """What the measured lengths depend on: the datasets' fingerprint (app.data: a stat per file, the cached
    commit per Hub dataset; None when one is not here) and the settings that change the tokens."""
    from app import data

    found, d = data.fingerprint(cfg.data), cfg.data
    if found is None:
        return None
    return (
        found,
        cfg.objective if cfg.objective != "sft" else None,  # preference records are measured as pairs / answers
        cfg.model.name_or_path.strip(),
        cfg.model.trust_remote_code,
        d.format,
        json.dumps([d.columns, d.placeholders], sort_keys=True),
        d.template,
        d.system_prompt,
        d.max_samples,
    )


def tokenizer_source(cfg: RunConfig) -> str | None:
    """The local folder of the base model's tokenizer; None when that would need a download or a GGUF
    conversion (a load, not an estimate), or where the training libraries are not installed."""
    name = cfg.model.name_or_path.strip()
    if not name or name.lower().endswith(".gguf") or not _maybe_local(name):
        return None  # a 70B that was never downloaded: no torch import to find that out
    try:
        from app import modeling
    except ImportError:
        return None
    if name in modeling.DEFAULT_ALIASES and not (modeling.default_model_dir() / "config.json").is_file():
        return None
    try:
        path = modeling.resolve_model(name)
        if cfg.model.trust_remote_code:
            modeling.require_consent(path, True)
    except modeling.ModelError:
        return None
    return path


def _maybe_local(name: str) -> bool:
    """A cheap, torch-free first look: a folder with config.json, or a catalog or hub id whose files are in the
    Hugging Face cache (complete) or TuneDesk's model folder. modeling.resolve_model decides for real."""
    from app import catalog, paths
    from app.config import DEFAULT_MODEL

    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return True
    facts = catalog.lookup(DEFAULT_MODEL if name == "default" else name)
    if facts is not None and facts.id == DEFAULT_MODEL and any(paths.models_dir().glob("*/config.json")):
        return True
    hub_id = facts.hub_id if facts is not None else name
    if hub_id.count("/") != 1:
        return False
    from app import hub

    return hub.cached_path(hub_id) is not None


def _tokenize_lengths(model: str, cfg: RunConfig) -> DataLengths | None:
    from app import data, modeling
    from app.data_render import render_segments, resolve_template, tokenize_segments

    try:
        tokenizer = cached_tokenizer(model, cfg.model.trust_remote_code)
        if cfg.objective != "sft":
            return _preference_lengths(tokenizer, cfg)
        examples = data.load_from_config(cfg.data).examples
    except (modeling.ModelError, data.DataError, OSError, ValueError):
        return None  # the Data tab says what is wrong with the file; the estimate falls back to max_seq_len
    count = min(len(examples), cfg.data.max_samples or len(examples))
    picked: list[int] = list(range(count))
    if count > ALL_EXAMPLES:  # the longest in characters hold the longest in tokens
        picked = sorted(picked, key=lambda k: -len(examples.messages_json(k)))[:LONGEST_SAMPLE]
    template = resolve_template(cfg.data.template, tokenizer)
    lengths: list[int] = []
    for start in range(0, len(picked), 256):
        segments = []
        for k in picked[start : start + 256]:
            try:
                segments.append(render_segments(examples[k], tokenizer, template, cfg.data.system_prompt))
            except ValueError:  # RenderError: this record is reported by the Data tab and skipped in training
                continue
        lengths += [len(ids) for ids, _ in tokenize_segments(segments, tokenizer)]
    if not lengths:
        return None
    return DataLengths(tuple(sorted(lengths, reverse=True)), count <= ALL_EXAMPLES, count, data.describe(cfg.data))


def _preference_lengths(tokenizer: Any, cfg: RunConfig) -> DataLengths | None:
    """Token lengths of a preference run's examples as TRL tokenizes them (app.preference_data): for a pair the
    longer of prompt + chosen and prompt + rejected (both sides of a batch are padded to one width; memory counts
    the two sequences), for KTO each answer. The first data.max_samples records; the longest LONGEST_SAMPLE in
    characters of a larger set."""
    from app import data, preference_data

    records = preference_data.load(cfg.data, preference_data.kind_of(cfg.objective)).records
    if cfg.data.max_samples:
        records = [r for r in records if r.index < cfg.data.max_samples]
    count = len(records)
    if count > ALL_EXAMPLES:
        records = sorted(records, key=lambda r: -len(json.dumps(vars(r), ensure_ascii=False)))[:LONGEST_SAMPLE]
    encoded = preference_data.encode_many(records, tokenizer, cfg.data)
    lengths = [max(a.full_length for a in e.answers.values()) for e in encoded if e.answers]
    if not lengths:
        return None
    return DataLengths(tuple(sorted(lengths, reverse=True)), count <= ALL_EXAMPLES, count, data.describe(cfg.data))


_TOKENIZERS: dict[tuple[str, bool], Any] = {}


def cached_tokenizer(path: str, trust_remote_code: bool) -> Any:
    from app import modeling

    if (path, trust_remote_code) not in _TOKENIZERS:
        _TOKENIZERS.clear()  # one tokenizer at a time: the base model named now
        _TOKENIZERS[(path, trust_remote_code)] = modeling.load_tokenizer(path, trust_remote_code)
    return _TOKENIZERS[(path, trust_remote_code)]


# ---- what to change when it does not fit ---------------------------------------------------------------------
@dataclass
class Fix:
    key: str
    """Stable id: gradient_checkpointing, micro_batch, optimizer_8bit, quantize_4bit, shorter_seq, combined."""
    label: str
    """What to change, in words a person can act on."""
    changes: dict[str, Any]
    """Dotted RunConfig paths -> new values, usable as cfg.replace(**changes)."""
    estimate: MemoryEstimate
    params: dict[str, Any] = field(default_factory=dict)
    """The numbers in the label ({"batch": 2, "accum": 8}), so a UI can say it in its own language; a combined
    fix lists its parts as {"parts": [[key, params], ...]}."""

    @property
    def description(self) -> str:
        return f"{self.label} ({self.estimate.total_gib:.1f} GiB)"


def suggest_fixes(
    arch: Architecture | RunConfig,
    cfg: RunConfig | None = None,
    device: str = "cuda",
    capacity_bytes: int | None = None,
    data: DataLengths | None = None,
) -> list[Fix]:
    """Changes that lower the estimate, cheapest in quality first: gradient checkpointing, the largest micro-batch
    that fits with more accumulation (same effective batch), an 8-bit optimizer, a 4-bit base (QLoRA), the
    largest sequence length that fits.

    Only changes that apply and reduce memory are listed, each with its own estimate. When a capacity is given and
    no single change fits, a last "combined" fix applies them in order until the run fits. `suggest_fixes(cfg)`
    alone reads the architecture from cfg.model.name_or_path. With `data` (the dataset's token lengths) every
    estimate is sized for the batches the trainer builds from it (see DataLengths.batch).
    """
    if isinstance(arch, RunConfig):
        cfg, arch = arch, architecture_from(arch.model.name_or_path)
        device = devices.kind(cfg.train.device)
    assert cfg is not None
    base = sized_estimate(arch, cfg, device, capacity_bytes, data)
    fixes = []
    for key, label, changes, params in _candidates(arch, cfg, device, capacity_bytes, data):
        est = sized_estimate(arch, cfg.replace(**changes), device, capacity_bytes, data)
        if est.total_bytes < base.total_bytes:
            fixes.append(Fix(key, label, changes, est, params))
    if capacity_bytes and fixes and not any(f.estimate.fits for f in fixes):
        fixes.append(_combined(arch, cfg, device, capacity_bytes, fixes, data))
    return fixes


def _candidates(arch: Architecture, cfg: RunConfig, device: str, capacity: int | None, data: DataLengths | None):
    t = cfg.train
    out: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
    if not t.gradient_checkpointing:
        out.append(
            (
                "gradient_checkpointing",
                "Turn on gradient checkpointing (~30% slower, same result)",
                {"train.gradient_checkpointing": True},
                {},
            )
        )
    if t.batch_size > 1:
        batch, fits = _largest(arch, cfg, device, capacity, _divisors(t.batch_size), "train.batch_size", data)
        accum = t.grad_accum * t.batch_size // batch
        out.append(
            (
                "micro_batch",
                f"Micro-batch {batch} x {accum} accumulation steps (same effective batch)"
                + (", the largest that fits" if fits else ""),
                {"train.batch_size": batch, "train.grad_accum": accum},
                {"batch": batch, "accum": accum},
            )
        )
    if t.optimizer in ("adamw_torch", "paged_adamw_32bit") and device == "cuda":
        new = "paged_adamw_8bit" if t.optimizer.startswith("paged") else "adamw_8bit"
        out.append(("optimizer_8bit", f"8-bit AdamW states ({new})", {"train.optimizer": new}, {"optimizer": new}))
    if not methods.of(cfg).quantized or cfg.quant.bits != 4:
        out.append(
            (
                "quantize_4bit",
                "QLoRA: 4-bit NF4 base weights with LoRA adapters",
                {"method": "qlora", "quant.bits": 4, "quant.type": "nf4"},
                {},
            )
        )
    lengths = list(range(cfg.data.max_seq_len - SEQ_STEP, 0, -SEQ_STEP))
    if lengths:
        seq, fits = _largest(arch, cfg, device, capacity, lengths, "data.max_seq_len", data)
        cut = data.longer_than(seq) if data else None
        words = f"{cut} of your examples are cut" if cut is not None else "longer examples are cut"
        out.append(
            (
                "shorter_seq",
                f"{'Largest sequence length that fits' if fits else 'Cut examples to'}: {seq} tokens ({words})",
                {"data.max_seq_len": seq},
                {"seq": seq, "cut": cut},
            )
        )
    return out


SEQ_STEP = 16
"""Sequence lengths a fix offers are multiples of 16 (the Max sequence length slider's step)."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(n - 1, 0, -1) if n % d == 0]


def _largest(
    arch: Architecture,
    cfg: RunConfig,
    device: str,
    capacity: int | None,
    options: list[int],
    key: str,
    data: DataLengths | None,
) -> tuple[int, bool]:
    """(the largest option that fits the capacity, True), options in falling order; (the smallest, False) when none
    does. Memory grows with both batch size and sequence length, so a binary search finds it in ~log2(n) estimates."""

    def fits(value: int) -> bool:
        return bool(capacity) and bool(sized_estimate(arch, cfg.replace(**{key: value}), device, capacity, data).fits)

    lo, hi = 0, len(options) - 1  # options[hi] is the smallest
    if not fits(options[hi]):
        return options[hi], False
    while lo < hi:  # invariant: options[hi] fits
        mid = (lo + hi) // 2
        if fits(options[mid]):
            hi = mid
        else:
            lo = mid + 1
    return options[hi], True


def _combined(
    arch: Architecture, cfg: RunConfig, device: str, capacity: int, fixes: list[Fix], data: DataLengths | None
) -> Fix:
    """Changes applied one after another, each time the first (cheapest in quality) that still lowers memory
    for the config as changed so far, until the run fits or nothing lowers it: after QLoRA, gradient
    checkpointing can matter where it did not beside full fine-tuning's optimizer step."""
    current, changes, used = cfg, {}, []
    est = sized_estimate(arch, cfg, device, capacity, data)
    for _ in range(10):  # each step lowers memory; 10 is more steps than there are kinds of change
        for key, label, change, params in _candidates(arch, current, device, capacity, data):
            after = sized_estimate(arch, current.replace(**change), device, capacity, data)
            if after.total_bytes < est.total_bytes:
                current, est = current.replace(**change), after
                changes.update(change)
                used.append(Fix(key, label, change, after, params))
                break
        else:
            break
        if est.fits:
            break
    label = "All of: " + "; ".join(f.label for f in used)
    return Fix("combined", label, changes, est, {"parts": [[f.key, f.params] for f in used]})


# ---- methods side by side ----------------------------------------------------------------------------------------
def compare_methods(
    arch: Architecture,
    cfg: RunConfig,
    device: str = "cuda",
    device_memory_bytes: int | None = None,
    data: DataLengths | None = None,
) -> list[dict[str, Any]]:
    """Every method of the table (full / freeze / lora / qlora) on this model with this batch and sequence length:
    estimate, trainable params, relative speed and a quality note, one dict per method."""
    rows = []
    for method in methods.TABLE.values():
        bits = (cfg.quant.bits or 4) if method.quantized else None
        changes: dict[str, Any] = {"method": method.name, "quant.bits": bits}
        if method.trains == methods.LAST_LAYERS:
            changes["freeze.trainable_layers"] = min(cfg.freeze.trainable_layers, arch.layers)
        est = sized_estimate(arch, cfg.replace(**changes), device, device_memory_bytes, data)
        speed, note = method.speed, method.note
        rows.append(
            {
                "method": method.name,
                "estimate": est,
                "total_bytes": est.total_bytes,
                "total_gib": round(est.total_gib, 2),
                "trainable_params": est.trainable_params,
                "fits": est.fits,
                "speed": speed,
                "notes": note,
            }
        )
    return rows


# ---- the service -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The device facts an estimate is judged against."""

    kind: str
    """cuda or cpu."""
    capacity_bytes: int | None
    """Total GPU memory (RAM for cpu); None when this machine lacks the device and none was given."""
    label: str
    """The device's name as the verdict says it (the GPU's name, CPU RAM)."""

    @classmethod
    def of(cls, device: str = "auto", capacity_bytes: int | None = None) -> Target:
        """The device `device` names on this machine (app.devices); `capacity_bytes` overrides its memory."""
        kind, found, label = devices.capacity(device)
        if capacity_bytes is not None:
            return cls(kind, capacity_bytes, "CPU RAM" if kind == devices.CPU else "GPU")  # as given, not found
        return cls(kind, found, label)


@dataclass
class Answer:
    """Everything the estimate says about one config on one device."""

    estimate: MemoryEstimate
    verdict: str
    """fits | tight | no | unknown"""
    label: str
    fixes: list[Fix]
    """Only when the run does not fit a known capacity, and only changes that make it fit; best first."""
    methods: list[dict[str, Any]]
    plan: parallel.GpuPlan | None = None
    """Several GPUs (distributed.num_processes > 1, or more than one GPU here): the planner's strategy and the memory
    of each GPU; the verdict is then per GPU."""
    sized: dict[str, Any] = field(default_factory=dict)
    """What the activations are sized for: {"by": "data", "rows", "tokens", "dataset", "examples", "complete"} (the
    largest micro-batch built from the dataset) or {"by": "config", "rows", "tokens"} (batch_size x max_seq_len)."""

    def to_json(self) -> dict[str, Any]:
        """The `estimate` endpoint's object and `python -m app estimate --json`'s: the estimate, the verdict, the
        fixes and the method comparison."""
        return {
            **self.estimate.to_json(),
            "verdict": self.verdict,
            "device_label": self.label,
            "sized_for": self.sized,
            "fixes": [
                {
                    "key": f.key,
                    "label": f.label,
                    "changes": f.changes,
                    "params": f.params,
                    "total_gib": round(f.estimate.total_gib, 3),
                }
                for f in self.fixes
            ],
            "methods": [{k: v for k, v in row.items() if k != "estimate"} for row in self.methods],
            **({} if self.plan is None else {"plan": self.plan.to_json()}),  # several GPUs only
        }


def service(
    cfg: RunConfig,
    target: Target | None = None,
    arch: Architecture | None = None,
    data: bool = True,
    host_memory_bytes: int | None = None,
) -> Answer:
    """Estimate `cfg` on `target` (default: the device cfg.train.device names here), judge it, and when it does not
    fit list the fixes that make it fit; compare the methods either way. With `data` (the default) and a readable
    dataset whose tokenizer is here, activations are sized for the largest micro-batch the trainer builds from
    the data (data_lengths); else for batch_size x max_seq_len. `arch` saves reading the model again (the Model
    tab caches it). `host_memory_bytes`: each machine's RAM, for the shards a multi-GPU plan offloads (default: this
    machine's). Raises EstimateError."""
    target = target or Target.of(cfg.train.device)
    arch = arch or architecture_from(cfg.model.name_or_path.strip())
    lengths = data_lengths(cfg) if data else None
    capacity = target.capacity_bytes
    est = sized_estimate(arch, cfg, target.kind, capacity, lengths)
    methods = compare_methods(arch, cfg, target.kind, capacity, lengths)
    gpus = gpus_planned(cfg, target.kind)
    if gpus > 1:  # the verdict is per GPU, for the planner's strategy; its why line says what would make it fit
        machines = cfg.distributed.num_machines
        plan = parallel.plan(
            arch,
            sized_config(cfg, lengths),
            gpus,
            capacity,
            machines,
            device=target.kind,
            host_memory_bytes=host_memory_bytes or parallel.host_ram(target.kind),
        )
        judged = "no" if plan.fits is False else verdict(plan.per_gpu_bytes, plan.device_memory_bytes)  # RAM too
        return Answer(est, judged, target.label, [], methods, plan, _sized(cfg, lengths))
    fixes: list[Fix] = []
    if est.fits is False and capacity:  # a fix that saves 0.3 GiB of 160 GiB is not a fix: only those that fit
        fixes = [f for f in suggest_fixes(arch, cfg, target.kind, capacity, lengths) if f.estimate.fits]
    return Answer(est, verdict(est.total_bytes, capacity), target.label, fixes, methods, None, _sized(cfg, lengths))


def gpus_planned(cfg: RunConfig, kind: str) -> int:
    """The GPUs (processes) an estimate plans for: distributed.num_processes when above 1, else every GPU this
    machine has when it trains on CUDA (one: a single-device estimate)."""
    if cfg.distributed.num_processes > 1:
        return cfg.distributed.num_processes
    return gpus_here() if kind == devices.CUDA else 1


@functools.lru_cache(maxsize=1)
def gpus_here() -> int:
    """CUDA GPUs PyTorch sees on this machine (0 without one); asks app.devices, which imports torch only where a
    GPU may exist."""
    if devices.detect().kind != devices.CUDA:
        return 0
    count = 1
    while devices.info(f"cuda:{count}") is not None:
        count += 1
    return count


def _sized(cfg: RunConfig, data: DataLengths | None) -> dict[str, Any]:
    if data is None:
        return {"by": "config", "rows": cfg.train.batch_size, "tokens": cfg.data.max_seq_len}
    rows, tokens = data.batch(cfg)
    return {
        "by": "data",
        "rows": rows,
        "tokens": tokens,
        "dataset": data.name,
        "examples": data.examples,
        "complete": data.complete,
    }


# ---- command line ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config or partial preset YAML (e.g. presets/llama-3.1-8b-qlora-24gb.yaml)")
    parser.add_argument(
        "--device",
        default=None,
        help="where the run trains (auto, cpu, cuda, cuda:N); default: the config's train.device, where auto is "
        "cuda if PyTorch sees a GPU, else cpu",
    )
    parser.add_argument(
        "--device-memory-gib",
        type=float,
        default=None,
        metavar="N",
        help="GPU memory (or RAM for cpu) in GiB; default: what this machine has of that device",
    )
    parser.add_argument(
        "--host-memory-gib",
        type=float,
        default=None,
        metavar="N",
        help="several GPUs: each machine's RAM in GiB, which CPU-offloaded shards must fit; default: this machine's",
    )
    parser.add_argument(
        "--no-data",
        action="store_true",
        help="size activations for train.batch_size x data.max_seq_len instead of the largest batch built from the "
        "dataset's real token lengths (no tokenizer, no torch: faster)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    try:
        cfg = RunConfig.from_preset(args.config)
        capacity = None if args.device_memory_gib is None else int(args.device_memory_gib * GIB)
        host = None if args.host_memory_gib is None else int(args.host_memory_gib * GIB)
        target = Target.of(args.device or cfg.train.device, capacity)
        answer = service(cfg, target, data=not args.no_data, host_memory_bytes=host)
    except (ConfigError, EstimateError, devices.DeviceError) as exc:
        print(f"estimate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer.to_json()) if args.json else format_table(answer, cfg))
    return 0


REFERENCE_WORDS = {
    objective_table.ADAPTER_OFF: "reference = the base with the adapter off",
    objective_table.COPY: "reference = a frozen copy",
    objective_table.PRECOMPUTE: "reference log-probs precomputed",
}


def _objective_words(cfg: RunConfig) -> str:
    """ " + dpo (2 sequences per example, reference = a frozen copy)" for a preference objective; "" for sft."""
    if cfg.objective == "sft":
        return ""
    words = ["2 sequences per example"] if objective_table.sequences_per_example(cfg) > 1 else []
    reference = objective_table.reference_of(cfg)
    words += [REFERENCE_WORDS[reference]] if reference in REFERENCE_WORDS else []
    return f" + {cfg.objective}" + (f" ({', '.join(words)})" if words else "")


def format_table(answer: Answer, cfg: RunConfig) -> str:
    """A readable breakdown: one line per part, the total, the verdict when a capacity is known, and the fixes."""
    est = answer.estimate
    head = (
        f"{cfg.model.name_or_path} | {cfg.method}{_objective_words(cfg)} | batch {cfg.train.batch_size} x seq "
        f"{cfg.data.max_seq_len} | gradient checkpointing {'on' if cfg.train.gradient_checkpointing else 'off'}"
        f" | {est.device}"
    )
    lines = [head, "-" * len(head)]
    sized = answer.sized
    if sized.get("by") == "data":
        lines.append(
            f"  sized for your data ({sized['dataset']}): longest batch {sized['rows']} x {sized['tokens']} tokens"
        )
    for key, size in est.breakdown.items():
        if key in ("reference", "pairs") and not size:  # terms of preference objectives only
            continue
        label = "process baseline" if key == "runtime" and est.device == "cpu" else LABELS[key]
        lines.append(f"  {label:<32} {size / GIB:9.2f} GiB")
    lines.append(f"  {'total':<32} {est.total_gib:9.2f} GiB")
    share = 100 * est.trainable_params / max(1, est.total_params)
    lines.append(f"  trainable params {est.trainable_params:,} of {est.total_params:,} ({share:.2f}%)")
    if answer.plan is not None:
        return "\n".join(lines + _plan_lines(answer))
    if est.device_memory_bytes is not None:
        words = {"fits": "fits", "tight": "fits, tightly,", "no": "does NOT fit"}[answer.verdict]
        lines.append(f"  {words} in {est.device_memory_bytes / GIB:.1f} GiB ({answer.label})")
    lines += [f"  fix: {fix.description}" for fix in answer.fixes]
    if answer.verdict == "no" and not answer.fixes:
        lines.append("  no change offered here makes it fit: pick a smaller model or another device")
    return "\n".join(lines)


def _plan_lines(answer: Answer) -> list[str]:
    """The per-GPU part of the table: the plan's breakdown of one GPU, its total, the verdict and the plan line."""
    plan = answer.plan
    assert plan is not None
    each = "process" if plan.device == devices.CPU else "GPU"
    lines = [f"  each {each} ({plan.label}, {plan.gpus} {each}s):"]
    for key, size in plan.breakdown.items():
        if key in ("reference", "pairs") and not size:
            continue
        label = "process baseline" if key == "runtime" and plan.device == devices.CPU else parallel.LABELS[key]
        lines.append(f"    {label:<30} {size / GIB:9.2f} GiB")
    lines.append(f"    {'total per ' + each:<30} {plan.per_gpu_gib:9.2f} GiB")
    if plan.cpu_bytes:
        lines.append(f"    {'CPU RAM per machine':<30} {plan.cpu_bytes / GIB:9.2f} GiB")
    if plan.device_memory_bytes is not None:
        words = {"fits": "fits", "tight": "fits, tightly,", "no": "does NOT fit"}[answer.verdict]
        lines.append(f"  {words} in {plan.device_memory_bytes / GIB:.1f} GiB per {each} ({answer.label})")
    lines.append(f"  plan: {plan.why}")
    return lines
