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
import json
import sys
from dataclasses import dataclass
from typing import Any

from app import devices, methods
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

    @property
    def description(self) -> str:
        return f"{self.label} ({self.estimate.total_gib:.1f} GiB)"


def suggest_fixes(
    arch: Architecture | RunConfig,
    cfg: RunConfig | None = None,
    device: str = "cuda",
    capacity_bytes: int | None = None,
) -> list[Fix]:
    """Changes that lower the estimate, cheapest in quality first: gradient checkpointing, a smaller micro-batch
    with more accumulation (same effective batch), an 8-bit optimizer, a 4-bit base (QLoRA), shorter sequences.

    Only changes that apply and reduce memory are listed, each with its own estimate. When a capacity is given and
    no single change fits, a last "combined" fix applies them in order until the run fits. `suggest_fixes(cfg)`
    alone reads the architecture from cfg.model.name_or_path.
    """
    if isinstance(arch, RunConfig):
        cfg, arch = arch, architecture_from(arch.model.name_or_path)
        device = devices.kind(cfg.train.device)
    assert cfg is not None
    base = estimate(arch, cfg, device, capacity_bytes)
    fixes = []
    for key, label, changes in _candidates(arch, cfg, device, capacity_bytes):
        est = estimate(arch, cfg.replace(**changes), device, capacity_bytes)
        if est.total_bytes < base.total_bytes:
            fixes.append(Fix(key, label, changes, est))
    if capacity_bytes and fixes and not any(f.estimate.fits for f in fixes):
        fixes.append(_combined(arch, cfg, device, capacity_bytes, fixes))
    return fixes


def _candidates(arch: Architecture, cfg: RunConfig, device: str, capacity: int | None) -> list[tuple]:
    t = cfg.train
    out: list[tuple[str, str, dict[str, Any]]] = []
    if not t.gradient_checkpointing:
        out.append(
            (
                "gradient_checkpointing",
                "Turn on gradient checkpointing (~30% slower, same result)",
                {"train.gradient_checkpointing": True},
            )
        )
    if t.batch_size > 1:
        batch = _pick(arch, cfg, device, capacity, _divisors(t.batch_size), "train.batch_size")
        accum = t.grad_accum * t.batch_size // batch
        out.append(
            (
                "micro_batch",
                f"Micro-batch {batch} x {accum} accumulation steps (same effective batch)",
                {"train.batch_size": batch, "train.grad_accum": accum},
            )
        )
    if t.optimizer in ("adamw_torch", "paged_adamw_32bit") and device == "cuda":
        new = "paged_adamw_8bit" if t.optimizer.startswith("paged") else "adamw_8bit"
        out.append(("optimizer_8bit", f"8-bit AdamW states ({new})", {"train.optimizer": new}))
    if not methods.of(cfg).quantized or cfg.quant.bits != 4:
        out.append(
            ("quantize_4bit", "QLoRA: 4-bit NF4 base weights with LoRA adapters", {"method": "qlora", "quant.bits": 4})
        )
    lengths = [n for n in (2048, 1024, 512, 256, 128) if n < cfg.data.max_seq_len]
    if lengths:
        seq = _pick(arch, cfg, device, capacity, lengths, "data.max_seq_len")
        out.append(
            ("shorter_seq", f"Cut examples to {seq} tokens (longer ones are truncated)", {"data.max_seq_len": seq})
        )
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(n - 1, 0, -1) if n % d == 0]


def _pick(arch: Architecture, cfg: RunConfig, device: str, capacity: int | None, options: list[int], key: str) -> int:
    """The largest option that fits the capacity (options in falling order); the smallest when none does."""
    for value in options:
        if capacity and estimate(arch, cfg.replace(**{key: value}), device, capacity).fits:
            return value
    return options[-1]


def _combined(arch: Architecture, cfg: RunConfig, device: str, capacity: int, fixes: list[Fix]) -> Fix:
    changes: dict[str, Any] = {}
    for fix in fixes:
        changes.update(fix.changes)
        est = estimate(arch, cfg.replace(**changes), device, capacity)
        if est.fits:
            break
    label = "All of: " + "; ".join(f.label for f in fixes if set(f.changes) <= set(changes))
    return Fix("combined", label, changes, est)


# ---- methods side by side ----------------------------------------------------------------------------------------
def compare_methods(
    arch: Architecture, cfg: RunConfig, device: str = "cuda", device_memory_bytes: int | None = None
) -> list[dict[str, Any]]:
    """Every method of the table (full / freeze / lora / qlora) on this model with this batch and sequence length:
    estimate, trainable params, relative speed and a quality note, one dict per method."""
    rows = []
    for method in methods.TABLE.values():
        bits = (cfg.quant.bits or 4) if method.quantized else None
        changes: dict[str, Any] = {"method": method.name, "quant.bits": bits}
        if method.trains == methods.LAST_LAYERS:
            changes["freeze.trainable_layers"] = min(cfg.freeze.trainable_layers, arch.layers)
        est = estimate(arch, cfg.replace(**changes), device, device_memory_bytes)
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
    """Only when the run does not fit a known capacity; best first."""
    methods: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The `estimate` endpoint's object and `python -m app estimate --json`'s: the estimate, the verdict, the
        fixes and the method comparison."""
        return {
            **self.estimate.to_json(),
            "verdict": self.verdict,
            "device_label": self.label,
            "fixes": [
                {"key": f.key, "label": f.label, "changes": f.changes, "total_gib": round(f.estimate.total_gib, 3)}
                for f in self.fixes
            ],
            "methods": [{k: v for k, v in row.items() if k != "estimate"} for row in self.methods],
        }


def service(cfg: RunConfig, target: Target | None = None, arch: Architecture | None = None) -> Answer:
    """Estimate `cfg` on `target` (default: the device cfg.train.device names here), judge it, and when it does not
    fit list the fixes; compare the methods either way. `arch` saves reading the model again (the Model tab caches
    it). Raises EstimateError."""
    target = target or Target.of(cfg.train.device)
    arch = arch or architecture_from(cfg.model.name_or_path.strip())
    est = estimate(arch, cfg, target.kind, target.capacity_bytes)
    capacity = target.capacity_bytes
    fixes = suggest_fixes(arch, cfg, target.kind, capacity) if est.fits is False and capacity else []
    methods = compare_methods(arch, cfg, target.kind, capacity)
    return Answer(est, verdict(est.total_bytes, capacity), target.label, fixes, methods)


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
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    try:
        cfg = RunConfig.from_preset(args.config)
        capacity = None if args.device_memory_gib is None else int(args.device_memory_gib * GIB)
        answer = service(cfg, Target.of(args.device or cfg.train.device, capacity))
    except (ConfigError, EstimateError, devices.DeviceError) as exc:
        print(f"estimate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer.to_json()) if args.json else format_table(answer, cfg))
    return 0


def format_table(answer: Answer, cfg: RunConfig) -> str:
    """A readable breakdown: one line per part, the total, the verdict when a capacity is known, and the fixes."""
    est = answer.estimate
    head = (
        f"{cfg.model.name_or_path} | {cfg.method} | batch {cfg.train.batch_size} x seq {cfg.data.max_seq_len}"
        f" | gradient checkpointing {'on' if cfg.train.gradient_checkpointing else 'off'} | {est.device}"
    )
    lines = [head, "-" * len(head)]
    for key, size in est.breakdown.items():
        label = "process baseline" if key == "runtime" and est.device == "cpu" else LABELS[key]
        lines.append(f"  {label:<32} {size / GIB:9.2f} GiB")
    lines.append(f"  {'total':<32} {est.total_gib:9.2f} GiB")
    share = 100 * est.trainable_params / max(1, est.total_params)
    lines.append(f"  trainable params {est.trainable_params:,} of {est.total_params:,} ({share:.2f}%)")
    if est.device_memory_bytes is not None:
        words = {"fits": "fits", "tight": "fits, tightly,", "no": "does NOT fit"}[answer.verdict]
        lines.append(f"  {words} in {est.device_memory_bytes / GIB:.1f} GiB ({answer.label})")
    lines += [f"  fix: {fix.description}" for fix in answer.fixes]
    return "\n".join(lines)
