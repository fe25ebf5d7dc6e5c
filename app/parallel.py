"""Memory per GPU past one GPU, and the planner that picks a strategy: (architecture, RunConfig, GPUs) -> GpuPlan.

Pure and fast like app.memory (no torch import): every term is app.memory's, split the way each engine lays it out.

* ddp: a whole copy of the run on every GPU, plus DDP's gradient buckets (the Reducer packs every trainable
  gradient into flat buckets of the same dtype: a second copy of the gradients, gradient_as_bucket_view=False).
* deepspeed_zero2: weights whole; gradients and optimizer states (fp32 master weights and Adam states) sharded 1/N;
  its fixed reduce/all-gather buckets stay whole.
* fsdp, deepspeed_zero3: weights, gradients and optimizer states sharded 1/N, plus the unsharded copy of what is
  gathered at once ("gathered"): the decoder layer in use and the next one, prefetched (forward prefetch, and
  BACKWARD_PRE in backward), with the layer's unsharded gradients before the reduce-scatter. Accelerate's
  TRANSFORMER_BASED_WRAP wraps each decoder layer; the embeddings, final norm and lm_head stay in the root unit,
  which FSDP does not reshard between forward and backward, so they are whole for the whole step. DeepSpeed ZeRO-3
  (and torchtune, which shards tok_embeddings and output as their own units) gathers the embedding or lm_head only
  while it runs: `outer_units=True`.
* cpu_offload: the sharded weights, gradients and optimizer states live in host RAM (cpu_bytes, per machine); the
  GPU keeps the activations, logits, backward buffers and the gathered units.
* QLoRA under FSDP/ZeRO-3: bnb_4bit_quant_storage is the compute dtype so the packed 4-bit weights shard like any
  bf16 tensor (same bytes: 4 weights per bf16 element), and prepare_model_for_kbit_training's fp32 upcast of the
  non-quantized params is skipped (TRL and the PEFT FSDP-QLoRA guide do), so embeddings and lm_head stay 16-bit.
  The quantization scales (absmax) are attributes of each Linear4bit, not parameters: FSDP neither shards nor
  offloads them, so every GPU keeps all of them.

Activations and logits are per micro-batch per GPU and do not change with sharding.

    plan_config(cfg, 24 * GIB).why   # 'FSDP + QLoRA with CPU offload over 2 GPUs: ...'
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from app import devices, memory, methods
from app.calibration import GIB, Stack
from app.config import RunConfig

STRATEGY_LABELS: dict[str, str] = {
    "ddp": "DDP",
    "fsdp": "FSDP",
    "deepspeed_zero3": "DeepSpeed ZeRO-3",
    "deepspeed_zero2": "DeepSpeed ZeRO-2",
}
SHARDED = ("fsdp", "deepspeed_zero3")
METHOD_LABELS = {"full": "full fine-tuning", "freeze": "last-layers fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
LABELS: dict[str, str] = {**memory.LABELS, "gathered": "gathered layers (unsharded)"}
"""memory.LABELS plus the sharded run's "gathered" part."""
ZERO2_BUCKETS = int(2 * 2e8 * 2)
"""DeepSpeed ZeRO-2's reduce and all-gather buckets (2e8 elements each in bf16, accelerate's default config)."""
FIXES = "use more GPUs, QLoRA (method qlora), or a shorter data.max_seq_len"


@dataclass(frozen=True)
class GpuPlan:
    """The memory of each GPU of a run on several GPUs, and the strategy that gives it."""

    strategy: str
    """ddp | fsdp | deepspeed_zero3 | deepspeed_zero2 (never auto: resolved)."""
    cpu_offload: bool
    gpus: int
    """Processes in all (RunConfig.distributed.num_processes)."""
    machines: int
    per_gpu_bytes: int
    """Peak memory of each GPU."""
    breakdown: dict[str, int]
    """Per GPU: memory.BREAKDOWN_KEYS, plus "gathered" for a sharded run's unsharded units."""
    cpu_bytes: int
    """Host RAM each machine needs for the offloaded shards (0 without offload)."""
    device_memory_bytes: int | None
    fits: bool | None
    why: str
    """The plan in one line: strategy, GPUs, the per-GPU figure against the capacity, why not the cheaper one."""
    shortfall_bytes: int = 0
    """> 0 when it does not fit: how much each GPU lacks."""
    device: str = "cuda"
    """cuda, or cpu for processes on CPUs (gloo): each process's share of the machine's RAM is its capacity."""
    alternatives: dict[str, int] = field(default_factory=dict)
    """Per-GPU bytes of the options the planner weighed, by label (e.g. {"DDP": ..., "FSDP": ...})."""

    @property
    def per_gpu_gib(self) -> float:
        return self.per_gpu_bytes / GIB

    @property
    def label(self) -> str:
        """e.g. "FSDP with CPU offload"."""
        return STRATEGY_LABELS[self.strategy] + (" with CPU offload" if self.cpu_offload else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "cpu_offload": self.cpu_offload,
            "gpus": self.gpus,
            "machines": self.machines,
            "device": self.device,
            "per_gpu_gib": round(self.per_gpu_gib, 3),
            "breakdown_gib": {k: round(v / GIB, 3) for k, v in self.breakdown.items()},
            "cpu_gib": round(self.cpu_bytes / GIB, 3),
            "device_memory_gib": None
            if self.device_memory_bytes is None
            else round(self.device_memory_bytes / GIB, 3),
            "fits": self.fits,
            "shortfall_gib": round(self.shortfall_bytes / GIB, 3),
            "why": self.why,
        }


def deepspeed_stack(stack: Stack | None = None) -> Stack:
    """How a DeepSpeed engine keeps a bf16 run: it casts the module to bf16 and runs it without autocast (adapters
    in bf16, no k-bit upcast), with fp32 master weights, fp32 gradient partitions and fp32 Adam states (8 B)."""
    s = stack or Stack()
    return replace(s, autocast=False, adapter_bytes=2, kbit_upcast=False, master_weights=True, state_bytes=8)


def _stack_for(cfg: RunConfig, strategy: str, stack: Stack | None) -> Stack:
    if stack is None and strategy.startswith("deepspeed"):
        stack = deepspeed_stack()
        if strategy == "deepspeed_zero2":
            stack = replace(stack, extra_bytes=ZERO2_BUCKETS)
    stack = stack or Stack()
    if strategy in SHARDED and methods.of(cfg).quantized:
        stack = replace(stack, kbit_upcast=False)  # sharded QLoRA skips prepare_model_for_kbit_training's upcast
    return stack


# ---- memory of each GPU ----------------------------------------------------------------------------------------
def per_gpu(
    arch: memory.Architecture,
    cfg: RunConfig,
    strategy: str,
    gpus: int,
    cpu_offload: bool = False,
    device_memory_bytes: int | None = None,
    stack: Stack | None = None,
    *,
    machines: int = 1,
    device: str = "cuda",
    outer_units: bool | None = None,
) -> GpuPlan:
    """Peak memory of each of `gpus` GPUs training `cfg` with `strategy` (ddp, fsdp, deepspeed_zero3,
    deepspeed_zero2). `outer_units`: the embeddings and lm_head are FSDP units of their own, gathered only while
    they run (default: True for DeepSpeed ZeRO-3, False for FSDP through accelerate, whose root unit keeps them).
    `device` cpu: processes on CPUs (gloo), where the memory is each process's RAM. Raises EstimateError."""
    if strategy not in STRATEGY_LABELS:
        raise memory.EstimateError(f"strategy {strategy!r}: use one of {', '.join(STRATEGY_LABELS)}")
    if cpu_offload and strategy not in SHARDED:
        raise memory.EstimateError(f"cpu_offload needs fsdp or deepspeed_zero3, not {strategy}")
    n = max(1, int(gpus))
    stack = _stack_for(cfg, strategy, stack)
    est = memory.estimate(arch, cfg, device, stack=stack)
    b: dict[str, float] = {k: float(v) for k, v in est.breakdown.items()}
    cpu = 0.0
    if strategy == "ddp":
        b["gradients"] += _bucket_bytes(est, stack) if n > 1 else 0.0
    elif strategy == "deepspeed_zero2":
        b["gradients"] /= n
        b["optimizer"] = (b["optimizer"] - stack.extra_bytes) / n + stack.extra_bytes
    else:
        own = strategy == "deepspeed_zero3" if outer_units is None else outer_units
        cpu = _shard(arch, cfg, est, b, n, stack, device, own, cpu_offload)
    breakdown = {k: int(round(v)) for k, v in b.items()}
    total = sum(breakdown.values())
    fits = None if device_memory_bytes is None else total <= device_memory_bytes
    short = max(0, total - device_memory_bytes) if device_memory_bytes else 0
    per_machine = cpu * n / max(1, machines)
    plan = GpuPlan(strategy, cpu_offload, n, machines, total, breakdown, int(per_machine), device_memory_bytes, fits,
                   "", short, device)  # fmt: skip
    return replace(plan, why=_named_why(plan, cfg))


def _bucket_bytes(est: memory.MemoryEstimate, stack: Stack) -> float:
    """DDP's buckets: one more copy of every trainable gradient, in the gradient's dtype (fp32 master gradients
    excluded: DDP reduces the model's own .grad)."""
    return float(est.breakdown["gradients"]) / (2 if stack.master_weights else 1)


def _shard(
    arch: memory.Architecture,
    cfg: RunConfig,
    est: memory.MemoryEstimate,
    b: dict[str, float],
    n: int,
    stack: Stack,
    device: str,
    outer_units: bool,
    offload: bool,
) -> float:
    """Split b (a whole run's breakdown) into one GPU's share under FSDP / ZeRO-3, add "gathered", and return the
    bytes each GPU's offloaded shards take in host RAM (0 without offload)."""
    t = memory.sharding_terms(arch, cfg, device, stack)
    grad_width = b["gradients"] / est.trainable_params if est.trainable_params else 0.0
    adapter_width = b["adapter"] / est.trainable_params if est.trainable_params else 0.0
    unit = t["layer"] - t["scales"] / arch.layers + t["layer_trainable"] * adapter_width
    unit_grads = t["layer_trainable"] * grad_width
    outer = t["outer"] + t["outer_trainable"] * (adapter_width or 0.0)
    outer_grads = t["outer_trainable"] * grad_width
    if outer_units:  # embedding / lm_head gathered while they run, one of them at a time, with the next layer
        biggest = outer / (1 if arch.tied else 2) + outer_grads / (1 if arch.tied else 2)
        gathered = max(2 * unit + unit_grads, biggest + unit)
    else:  # the root unit (embeddings, final norm, lm_head) stays whole from forward to the end of backward
        gathered = outer + outer_grads + 2 * unit + unit_grads
    shards = {
        "weights": (b["weights"] - t["scales"]) / n,
        "adapter": b["adapter"] / n,
        "gradients": b["gradients"] / n,
        "optimizer": (b["optimizer"] - stack.extra_bytes) / n,
    }
    b["weights"] = t["scales"] + (0.0 if offload else shards["weights"])
    for key in ("adapter", "gradients"):
        b[key] = 0.0 if offload else shards[key]
    b["optimizer"] = stack.extra_bytes + (0.0 if offload else shards["optimizer"])
    share = stack.allocator_share if device == devices.CUDA else stack.cpu_allocator_share
    # with offload the optimizer steps the shards where they live, in host RAM: its temporary is there too
    step = t["step"] / n
    dynamic = max(b["activations"] + t["backward"], 0.0 if offload else step)
    b["workspace"] = dynamic - b["activations"] - b["logits"]
    b["allocator"] = share * (dynamic + gathered)
    b["gathered"] = gathered
    return sum(shards.values()) + step if offload else 0.0


# ---- the planner -----------------------------------------------------------------------------------------------
def plan(
    arch: memory.Architecture,
    cfg: RunConfig,
    gpus: int,
    device_memory_bytes: int | None,
    machines: int = 1,
    stack: Stack | None = None,
    *,
    device: str = "cuda",
    host_memory_bytes: int | None = None,
) -> GpuPlan:
    """The strategy for `cfg` on `gpus` GPUs of `device_memory_bytes` each. cfg.distributed.strategy auto: the
    cheapest that fits (DDP when each GPU holds the whole run, then FSDP, then FSDP with CPU offload); a named
    strategy is estimated as named (fits may be False). When nothing fits: fits False, the cheapest option's
    figure, and why says the shortfall and the usual fixes. On CPUs (`device` cpu) `device_memory_bytes` is each
    machine's RAM, shared by its processes. `host_memory_bytes`: each machine's RAM, which the offloaded shards
    (and the optimizer step on them) must fit as well (None: not checked)."""
    d = cfg.distributed
    capacity = _capacity_each(device_memory_bytes, gpus, machines, device)
    kw = {"machines": machines, "device": device}
    if d.strategy != "auto":
        return _host_checked(per_gpu(arch, cfg, d.strategy, gpus, d.cpu_offload, capacity, stack, **kw), cfg,
                             host_memory_bytes)  # fmt: skip
    options = [("ddp", False)] + ([("fsdp", False), ("fsdp", True)] if gpus > 1 else [])
    tried = [
        _host_checked(per_gpu(arch, cfg, s, gpus, off, capacity, stack, **kw), cfg, host_memory_bytes)
        for s, off in options
    ]
    figures = {p.label: p.per_gpu_bytes for p in tried}
    chosen = next((p for p in tried if p.fits), None)
    if capacity is None:
        chosen = tried[0]
    if chosen is None:
        cheapest = min(tried, key=lambda p: p.per_gpu_bytes)
        if not cheapest.shortfall_bytes:  # each GPU would hold it; the machine's RAM cannot hold the shards
            return replace(cheapest, why=f"Nothing fits: {cheapest.why}; {FIXES}", alternatives=figures)
        return replace(cheapest, why=_refusal(cheapest, cfg), alternatives=figures)
    return replace(chosen, why=_auto_why(chosen, tried, cfg), alternatives=figures)


def _host_checked(p: GpuPlan, cfg: RunConfig, host_memory_bytes: int | None) -> GpuPlan:
    """An offloading plan whose shards do not fit the machine's RAM does not fit, whatever each GPU holds."""
    if not p.cpu_bytes or host_memory_bytes is None or p.cpu_bytes <= host_memory_bytes or p.fits is False:
        return p
    why = (
        f"{_head(p, cfg)}: {_figure(p)}; does NOT fit: the offloaded shards need {_gib(p.cpu_bytes)} of CPU RAM per "
        f"machine and a machine has {_gib(host_memory_bytes)}"
    )
    return replace(p, fits=False, why=why)


def _capacity_each(total: int | None, gpus: int, machines: int, device: str) -> int | None:
    """Memory of each process: a GPU's, or on CPUs the machine's RAM split between its processes."""
    if total is None or device == devices.CUDA:
        return total
    return total // max(1, gpus // max(1, machines))


def plan_config(
    cfg: RunConfig,
    device_memory_bytes: int | None = None,
    host_memory_bytes: int | None = None,
    device: str | None = None,
) -> GpuPlan:
    """plan() for a RunConfig alone: the architecture from cfg.model.name_or_path, gpus and machines from
    cfg.distributed, the device kind from cfg.train.device, and the memory given or this machine's (a GPU's
    memory, or the RAM for CPU processes); offloaded shards are checked against this machine's RAM (the machines
    that run a launch are taken to be like this one). `device` cuda: plan for GPUs even where this machine has
    none (their memory is then the one given, or unknown). Raises EstimateError."""
    arch = memory.architecture_from(cfg.model.name_or_path.strip())
    kind, found, _ = devices.capacity(cfg.train.device)
    if device is not None and device != kind:  # planning for machines other than this one
        kind, found = device, None
    if device_memory_bytes is None:
        device_memory_bytes = found
    d = cfg.distributed
    host = host_memory_bytes or host_ram(kind)
    return plan(arch, cfg, d.num_processes, device_memory_bytes, d.num_machines, device=kind, host_memory_bytes=host)


def host_ram(device: str) -> int | None:
    """The RAM offloaded shards are checked against when planning GPUs: this machine's (the machines that run a
    launch are taken to be like this one); None for CPU processes, whose RAM is their device memory already."""
    return devices.cpu_device().total_bytes if device == devices.CUDA else None


# ---- the one-line why ------------------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _head(p: GpuPlan, cfg: RunConfig) -> str:
    method = METHOD_LABELS.get(cfg.method, cfg.method)
    units = "CPU processes" if p.device == devices.CPU else "GPUs"
    where = f" on {p.machines} machines" if p.machines > 1 else ""
    return f"{p.label.replace(' with', f' + {method} with', 1) if p.cpu_offload else f'{p.label} + {method}'}" + (
        f" over {p.gpus} {units}{where}"
    )


def _figure(p: GpuPlan) -> str:
    each = "per process" if p.device == devices.CPU else "per GPU"
    text = f"{_gib(p.per_gpu_bytes)} {each}"
    if p.device_memory_bytes:
        text += f" of {_gib(p.device_memory_bytes)}"
    if p.cpu_bytes:
        text += f" (+ {_gib(p.cpu_bytes)} of CPU RAM per machine for the offloaded shards)"
    return text


def _named_why(p: GpuPlan, cfg: RunConfig) -> str:
    line = f"{_head(p, cfg)}: {_figure(p)}"
    if p.fits is False:
        line += f"; does NOT fit ({_gib(p.shortfall_bytes)} short per GPU): {FIXES}"
    return line


def _auto_why(chosen: GpuPlan, tried: list[GpuPlan], cfg: RunConfig) -> str:
    line = f"{_head(chosen, cfg)}: {_figure(chosen)}"
    if chosen.gpus == 1:
        return line
    if chosen.strategy == "ddp":
        return line + "; each GPU holds the whole run, so nothing needs sharding"
    whole = tried[0]
    reason = f"; a whole copy ({_gib(whole.per_gpu_bytes)}) does not fit one GPU"
    if chosen.cpu_offload:
        reason += f", nor FSDP without offload ({_gib(tried[1].per_gpu_bytes)} per GPU)"
    return line + reason


def _refusal(p: GpuPlan, cfg: RunConfig) -> str:
    units = "CPU processes" if p.device == devices.CPU else "GPUs"
    cap = _gib(p.device_memory_bytes or 0)
    fixes = FIXES.replace("QLoRA (method qlora), ", "") if methods.of(cfg).quantized else FIXES
    return (
        f"Nothing fits {p.gpus} {units} of {cap}: the cheapest, {p.label} ({METHOD_LABELS.get(cfg.method, cfg.method)}"
        f"), needs {_gib(p.per_gpu_bytes)} per GPU, {_gib(p.shortfall_bytes)} short; {fixes}"
    )


# ---- the README table ------------------------------------------------------------------------------------------
README_GPUS = (1, 2, 4, 8)
README_CARDS = (("24 GB", 23.6), ("48 GB", 47.5), ("80 GB", 79.2))
"""GPU sizes and the memory PyTorch sees on each (RTX 3090/4090, RTX A6000, A100 80GB), GiB."""
README_RUNS = (
    ("llama-3.1-8b", "lora"),
    ("llama-3.1-8b", "qlora"),
    ("llama-3.1-8b", "full"),
    ("qwen2.5-32b-instruct", "lora"),
    ("qwen2.5-32b-instruct", "qlora"),
    ("llama-3.1-70b", "lora"),
    ("llama-3.1-70b", "qlora"),
    ("qwen2.5-72b-instruct", "qlora"),
)
README_SETTINGS = {
    "data.max_seq_len": 2048,
    "train.batch_size": 1,
    "train.gradient_checkpointing": True,
    "train.precision": "bf16",
    "train.device": "cuda",
    "lora.target_modules": "all-linear",
    "lora.rank": 16,
}
"""The run each cell plans: 2048 tokens, micro-batch 1, gradient checkpointing, bf16, LoRA r16 on every linear."""
_SHORT = {"DDP": "DDP", "FSDP": "FSDP", "FSDP with CPU offload": "FSDP+offload"}


def readme_table() -> str:
    """The README's "Several GPUs: which strategy fits" tables, from plan(): one per GPU size, a row per model and
    method, a column per GPU count; each cell is the planner's strategy and GiB per GPU (with offload, the GiB of
    CPU RAM the machine needs), or "no" with the cheapest option's figure. tests/test_parallel.py checks that the
    README holds exactly this text."""
    blocks = []
    for card, gib in README_CARDS:
        head = f"| {card} GPUs | " + " | ".join(f"{n} GPU{'s' if n > 1 else ''}" for n in README_GPUS) + " |"
        lines = [head, "|" + "---|" * (len(README_GPUS) + 1)]
        for model, method in README_RUNS:
            cfg = RunConfig().replace(**{**README_SETTINGS, "model.name_or_path": model, "method": method})
            if methods.get(method).quantized:
                cfg = cfg.replace(**{"quant.bits": 4})
            arch = memory.architecture_from(model)
            cells = [_cell(plan(arch, cfg, n, int(gib * GIB))) for n in README_GPUS]
            lines.append(f"| {model} {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _cell(p: GpuPlan) -> str:
    figure = f"{p.per_gpu_gib:.1f}"
    if not p.fits:
        return f"no ({figure})"
    ram = f" (RAM {p.cpu_bytes / GIB:.0f})" if p.cpu_bytes else ""
    return f"{'fits' if p.gpus == 1 else _SHORT[p.label]} {figure}{ram}"
