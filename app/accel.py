"""The GPU path of a run: which attention kernel, Liger kernels, torch.compile and optimizer it trains with.

    plan(cfg, device) -> AccelPlan      what this machine can run of what the config asks, and why not the rest
    decide(cfg, device, facts)          the same decision from facts passed in (tests give it a GPU this CPU lacks)

Each option is used where it can run and otherwise falls back with a message the run shows, never a failure:

    model.attn_implementation flash_attention_2   CUDA, the flash_attn package, an Ampere+ GPU (compute capability
                                                  8.0+) and float16/bfloat16 weights; else sdpa
    train.liger_kernel                            CUDA and the liger-kernel package (its kernels are Triton); else off
    train.torch_compile                           anywhere (the CPU's inductor backend compiles C++ with the system
                                                  compiler)
    train.optimizer paged_adamw_8bit / _32bit     CUDA (the state pages through CUDA unified memory); on the CPU
                                                  adamw_8bit / adamw_torch, the same update without paging

And one CPU decision: a supervised micro-batch on the CPU runs in chunks of rows of at most CPU_CHUNK_TOKENS padded
tokens, each chunk's forward and backward before the next (`chunk_tokens`, `row_splits`). The gradient is the same
sum over label tokens; the activations held at once are one chunk's, not the whole batch's (a quarter at batch 4 x
512), and each chunk is padded only to its own longest row. app.trainer splits by it, app.memory estimates by it.

The one home of these decisions: app.modeling asks `attention()` for the kernel every model load uses (training,
chat, export), app.trainer builds TrainingArguments from the plan (transformers' own `use_liger_kernel`,
`torch_compile` and `optim`), app.train logs the plan's messages when the run starts. Pure: torch is imported only
inside the functions that probe the machine.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass, field

from app import devices
from app.config import RunConfig

FLASH = "flash_attention_2"
FALLBACK_ATTENTION = "sdpa"
FLASH_CAPABILITY = (8, 0)
"""FlashAttention-2 runs on Ampere and newer GPUs (A100, RTX 30xx, L4, H100: compute capability 8.0+)."""
UNPAGED = {"paged_adamw_8bit": "adamw_8bit", "paged_adamw_32bit": "adamw_torch"}
"""A paged optimizer -> the same update without paging, which the CPU runs."""
HALF = ("float16", "bfloat16")
CPU_CHUNK_TOKENS = 512
"""Padded tokens per forward of a chunked CPU micro-batch (at least one row). A 135M model's activations are
~1.3 MB a token: 0.6 GiB a chunk instead of 2.6 GiB for 4 rows of 512. The price is one forward and backward per
chunk: on the default benchmark, where length grouping leaves little padding, 8% of step speed (77 passes in the
epoch instead of 32); 1,024 tokens gave most of that back for 3.2 GiB of peak RAM instead of 2.1 (BENCHMARKS.md,
"CPU memory and speed, round two")."""


@dataclass(frozen=True)
class Facts:
    """What the machine offers, probed once per device by `probe()` (or given by a test)."""

    cuda: bool = False
    capability: tuple[int, int] | None = None
    """The CUDA GPU's compute capability (major, minor); None without CUDA."""
    has_flash: bool = False
    """The flash_attn package is installed."""
    has_liger: bool = False
    """The liger_kernel package is installed."""


@dataclass
class AccelPlan:
    """The options a run trains with, and a message for each one asked for that this machine cannot run."""

    attn_implementation: str
    liger_kernel: bool
    torch_compile: bool
    optimizer: str
    messages: list[str] = field(default_factory=list)

    def apply(self, cfg: RunConfig) -> RunConfig:
        """`cfg` with the planned values in place of the asked ones (what the session trains with)."""
        return cfg.replace(
            **{
                "model.attn_implementation": self.attn_implementation,
                "train.liger_kernel": self.liger_kernel,
                "train.torch_compile": self.torch_compile,
                "train.optimizer": self.optimizer,
            }
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan(cfg: RunConfig, device: str, dtype: str | None = None) -> AccelPlan:
    """What `cfg` trains with on `device` ("cpu", "cuda", "cuda:1"; auto resolved by the caller). `dtype`: the
    weights' dtype name ("float32", "bfloat16") where the caller knows it; FlashAttention-2 needs a half one."""
    return decide(cfg, device, probe(devices.kind(device)), dtype)


def decide(cfg: RunConfig, device: str, facts: Facts, dtype: str | None = None) -> AccelPlan:
    """plan() from `facts` passed in: the whole decision, with no probing of this machine."""
    messages: list[str] = []
    attn, note = attention_choice(cfg.model.attn_implementation, facts, dtype)
    messages += [note] if note else []
    liger, note = _liger(cfg.train.liger_kernel, facts)
    messages += [note] if note else []
    optimizer, note = _optimizer(cfg.train.optimizer, facts)
    messages += [note] if note else []
    return AccelPlan(attn, liger, cfg.train.torch_compile, optimizer, messages)


def chunk_tokens(device: str) -> int:
    """Padded tokens per forward when a supervised micro-batch trains on `device` in chunks; 0: the whole batch at
    once (CUDA, where a larger batch is faster and memory is the estimate's batch)."""
    return CPU_CHUNK_TOKENS if devices.kind(device) == devices.CPU else 0


def row_splits(rows: int, width: int, budget: int) -> list[int]:
    """Rows per chunk when a micro-batch of `rows` rows padded to `width` tokens runs in chunks of at most
    `budget` tokens: as few chunks as the budget allows (never fewer rows than one per chunk), rows spread evenly,
    larger chunks first. budget 0: one chunk.

    >>> row_splits(4, 512, 512), row_splits(4, 200, 512), row_splits(4, 100, 512), row_splits(4, 512, 0)
    ([1, 1, 1, 1], [2, 2], [4], [4])
    >>> row_splits(5, 300, 512), row_splits(1, 2048, 512)
    ([1, 1, 1, 1, 1], [1])
    """
    if rows <= 1 or budget <= 0 or rows * width <= budget:
        return [rows] if rows else []
    chunks = min(rows, -(-rows // max(budget // max(width, 1), 1)))
    base, extra = divmod(rows, chunks)
    return [base + (i < extra) for i in range(chunks)]


def attention(requested: str, device: str, dtype: str | None = None) -> tuple[str, str | None]:
    """The attention kernel a model loaded on `device` in `dtype` uses when `requested` is asked for, and the
    reason when that is not the one asked for (None when it is)."""
    return attention_choice(requested, probe(devices.kind(device)), dtype)


def attention_choice(requested: str, facts: Facts, dtype: str | None = None) -> tuple[str, str | None]:
    if requested != FLASH:
        return requested, None
    why = None
    if not facts.cuda:
        why = "it runs on CUDA GPUs only and this run is on the CPU"
    elif not facts.has_flash:
        why = "the flash_attn package is not installed (pip install flash-attn --no-build-isolation)"
    elif facts.capability is None or tuple(facts.capability) < FLASH_CAPABILITY:
        found = ".".join(map(str, facts.capability)) if facts.capability else "unknown"
        why = f"it needs an Ampere or newer GPU (compute capability 8.0+); this GPU's is {found}"
    elif dtype is not None and dtype not in HALF:
        why = f"it runs in float16/bfloat16 only and this model loads in {dtype} (set train.precision to bf16)"
    if why is None:
        return FLASH, None
    return FALLBACK_ATTENTION, f"model.attn_implementation: {FLASH} not used, {why}: using {FALLBACK_ATTENTION}"


def _liger(asked: bool, facts: Facts) -> tuple[bool, str | None]:
    if not asked:
        return False, None
    if not facts.cuda:
        return False, "train.liger_kernel: Liger's kernels are Triton kernels for CUDA GPUs; off on the CPU"
    if not facts.has_liger:
        return False, "train.liger_kernel: the liger-kernel package is not installed (pip install liger-kernel); off"
    return True, None


def _optimizer(asked: str, facts: Facts) -> tuple[str, str | None]:
    if asked not in UNPAGED or facts.cuda:
        return asked, None
    instead = UNPAGED[asked]
    return instead, (
        f"train.optimizer: {asked} not used: paged optimizers page state through CUDA unified memory; on the CPU "
        f"TuneDesk uses adamw_8bit/adamw_torch instead ({instead} here)"
    )


@functools.cache
def probe(kind: str) -> Facts:
    """This machine's facts for a device kind (devices.CPU or devices.CUDA): cached, the answer does not change
    while the process runs. Packages are looked up, not imported (flash_attn's import initialises CUDA)."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    has_liger = importlib.util.find_spec("liger_kernel") is not None
    if kind != devices.CUDA:
        return Facts(False, None, has_flash, has_liger)
    import torch

    if not torch.cuda.is_available():
        return Facts(False, None, has_flash, has_liger)
    return Facts(True, tuple(torch.cuda.get_device_capability()), has_flash, has_liger)
