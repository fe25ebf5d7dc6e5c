"""Peak memory of a training run, before it starts: (architecture, RunConfig) -> MemoryEstimate with a breakdown.

Pure and fast (no torch import, well under 50 ms a call). Every term is a count of tensors the training step
really keeps, written from the shapes in config.json, not a fitted curve:

* weights: 2 B/param in bf16 (4 B on a CPU, where training runs fp32); LLM.int8 1 B per decoder Linear param;
  NF4/FP4 0.5 B + block scales (0.5 bit/param, 0.127 bit with double quantization) for decoder Linear layers only.
  Embeddings, lm_head, norms and biases stay 16-bit, or fp32 where `prepare_model_for_kbit_training` upcasts them
  (QLoRA).
* trainable params (LoRA A/B from the real Linear shapes, DoRA magnitudes, the last N layers, or all), their
  gradients, and optimizer states (AdamW: 2 states in the param dtype; bnb 8-bit: ~2 B/param; 32-bit: 8 B/param).
* activations autograd keeps per token per decoder layer: fp32 norm inputs, q/k/v/out for SDPA (plus the
  heads x seq probabilities for eager attention), gate/up/act for the MLP, LoRA inputs and dropout masks, the
  inputs of trainable Linear layers. With gradient checkpointing only each layer's input is kept, plus one layer
  recomputed during backward.
* logits and loss: batch x seq x vocab, upcast to fp32 for the loss: 12 B per logit at the loss peak
  (saved log-softmax, its gradient and the nll gradient). Often the largest term for a small model with a big vocab.
* CUDA context and allocator cache (on CPU, the baseline RSS of Python + torch + libraries, and glibc's retained
  heap instead).

The constants that no config can tell (CUDA context, allocator slack) were checked against 86 published
measurements in tests/test_memory_calibration.py (median error 7%) and, on CPU, against real runs in
bench/memory_cpu.py; the `Stack` knobs describe how other training code lays out memory, so the same formulas
can be compared with measurements from LitGPT, DeepSpeed or plain PEFT scripts.

The trainer computes logits only at label positions; the estimate keeps full batch x seq x vocab logits (an upper
bound: the peak micro-batch may be all response tokens, e.g. with data.train_on_prompt).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import catalog, devices
from app.config import DEFAULT_MODEL, ConfigError, RunConfig

GIB = 1 << 30
BREAKDOWN_KEYS: tuple[str, ...] = (
    "weights",
    "adapter",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "workspace",
    "allocator",
    "runtime",
)
LABELS: dict[str, str] = {
    "weights": "model weights",
    "adapter": "LoRA adapter",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "activations": "activations",
    "logits": "logits + loss",
    "workspace": "backward / step buffers",
    "allocator": "allocator cache",
    "runtime": "CUDA context / process baseline",
}
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit states for tensors with fewer elements (min_8bit_size)


class EstimateError(ValueError):
    """The model or config cannot be estimated; the message says which input and what to do."""


# ---- architecture ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Linear:
    """One nn.Linear of a decoder block: leaf name (what LoRA target_modules match), shape and bias."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features

    @property
    def params(self) -> int:
        return self.weight_params + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class Architecture:
    """The facts of a decoder-only model that decide training memory, read from config.json or GGUF metadata."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    linears: tuple[Linear, ...]
    """The Linear layers of one decoder block, in module order."""
    block_norms: tuple[int, ...]
    """Sizes of the norm weight/bias tensors of one block (q/k norms included)."""
    outer: tuple[tuple[str, int], ...] = ()
    """Tensors outside the blocks and the embeddings: ("norm", n) final norms, ("other", n) lm_head bias,
    position embeddings, a vision tower."""
    norms_per_block: int = 2
    """Hidden-sized norms per block whose input autograd keeps (2 for Llama, 4 for Gemma 2/3, 1 for Phi)."""
    gated_mlp: bool = True
    qk_norm: bool = False
    logit_softcap: bool = False
    source: str = ""

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def block_params(self) -> int:
        return sum(lin.params for lin in self.linears) + sum(self.block_norms)

    @property
    def linear_weight_params(self) -> int:
        """Weight elements of the decoder Linear layers (what bitsandbytes quantizes), all blocks."""
        return self.layers * sum(lin.weight_params for lin in self.linears)

    @property
    def total_params(self) -> int:
        outer = sum(n for _, n in self.outer)
        return self.embed_params + self.head_params + self.layers * self.block_params + outer

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_names(self) -> list[str]:
        names: list[str] = []
        for lin in self.linears:
            if lin.name not in names:
                names.append(lin.name)
        return names


def _get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


# model_type -> (block layout, tied by default). Families not listed are read as Llama-style blocks.
FAMILIES: dict[str, tuple[str, bool]] = {
    "llama": ("llama", False),
    "mistral": ("llama", False),
    "qwen2": ("llama", False),
    "qwen3": ("llama", False),
    "gemma": ("llama", True),
    "gemma2": ("llama", True),
    "gemma3_text": ("llama", True),
    "gemma3": ("llama", True),
    "olmo2": ("llama", False),
    "granite": ("llama", True),
    "phi3": ("phi3", False),
    "phi": ("phi", False),
    "gpt_neox": ("neox", False),
    "bloom": ("neox", True),
    "qwen": ("qwen", False),
    "gpt_bigcode": ("bigcode", True),
}


def architecture_from_config(cfg: dict[str, Any], name: str = "", source: str = "") -> Architecture:
    """An Architecture from config.json keys (normalised across families: hidden_size/n_embd, n_layer, ...)."""
    cfg = dict(cfg.get("text_config") or {}, **{k: v for k, v in cfg.items() if k != "text_config"})
    model_type = str(cfg.get("model_type") or "llama")
    layout, tied_default = FAMILIES.get(model_type, ("llama", False))
    hidden = _get(cfg, "hidden_size", "n_embd", "d_model")
    layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get(cfg, "num_attention_heads", "n_head")
    vocab = _get(cfg, "vocab_size")
    missing = [k for k, v in (("hidden_size", hidden), ("num_hidden_layers", layers), ("vocab_size", vocab)) if not v]
    if missing or not heads:
        raise EstimateError(
            f"{source or name}: config has no {', '.join(missing or ['num_attention_heads'])}; it does not "
            "describe a decoder-only language model this estimator knows"
        )
    multi_query = bool(cfg.get("multi_query"))
    kv = 1 if multi_query else int(_get(cfg, "num_key_value_heads", "n_head_kv", default=heads))
    head_dim = int(_get(cfg, "head_dim", "kv_channels", default=hidden // heads))
    inter = int(_get(cfg, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden))
    if model_type == "qwen" and "original_config_intermediate_size" not in cfg:
        inter //= 2  # Qwen(1) config.json stores twice the width of w1/w2
    dims = _Dims(hidden, heads * head_dim, kv * head_dim, inter)
    linears, norms, outer, n_norms = _LAYOUTS[layout](dims, cfg, model_type)
    extra = int(cfg.get("extra_params") or 0)
    if extra:
        outer = (*outer, ("other", extra))
    return Architecture(
        name=name,
        model_type=model_type,
        hidden=int(hidden),
        layers=int(layers),
        heads=int(heads),
        kv_heads=kv,
        head_dim=head_dim,
        intermediate=inter,
        vocab=int(vocab),
        tied=bool(cfg.get("tie_word_embeddings", tied_default)),
        linears=linears,
        block_norms=norms,
        outer=outer,
        norms_per_block=n_norms,
        gated_mlp=layout in ("llama", "phi3", "qwen"),
        qk_norm=model_type in ("qwen3", "gemma3_text", "gemma3", "olmo2"),
        logit_softcap=bool(cfg.get("final_logit_softcapping")),
        source=source,
    )


@dataclass(frozen=True)
class _Dims:
    h: int
    a: int  # query heads x head_dim
    kv: int  # key/value heads x head_dim
    i: int


def _llama_block(d: _Dims, cfg: dict[str, Any], model_type: str):
    qkv_bias = bool(cfg.get("attention_bias", model_type == "qwen2"))
    o_bias = bool(cfg.get("attention_bias", False)) and model_type != "qwen2"
    mlp_bias = bool(cfg.get("mlp_bias", False))
    linears = (
        Linear("q_proj", d.h, d.a, qkv_bias),
        Linear("k_proj", d.h, d.kv, qkv_bias),
        Linear("v_proj", d.h, d.kv, qkv_bias),
        Linear("o_proj", d.a, d.h, o_bias),
        Linear("gate_proj", d.h, d.i, mlp_bias),
        Linear("up_proj", d.h, d.i, mlp_bias),
        Linear("down_proj", d.i, d.h, mlp_bias),
    )
    n_norms = 4 if model_type in ("gemma2", "gemma3_text", "gemma3") else 2
    head_dim = d.a // max(1, int(_get(cfg, "num_attention_heads", default=1)))
    qk = (head_dim, head_dim) if model_type in ("qwen3", "gemma3_text", "gemma3") else ()
    if model_type == "olmo2":
        qk = (d.a, d.kv)
    return linears, (d.h,) * n_norms + qk, (("norm", d.h),), n_norms


def _phi3_block(d: _Dims, cfg: dict[str, Any], model_type: str):
    linears = (
        Linear("qkv_proj", d.h, d.a + 2 * d.kv),
        Linear("o_proj", d.a, d.h),
        Linear("gate_up_proj", d.h, 2 * d.i),
        Linear("down_proj", d.i, d.h),
    )
    return linears, (d.h, d.h), (("norm", d.h),), 2


def _phi_block(d: _Dims, cfg: dict[str, Any], model_type: str):
    linears = (
        Linear("q_proj", d.h, d.a, True),
        Linear("k_proj", d.h, d.kv, True),
        Linear("v_proj", d.h, d.kv, True),
        Linear("dense", d.a, d.h, True),
        Linear("fc1", d.h, d.i, True),
        Linear("fc2", d.i, d.h, True),
    )
    vocab = int(cfg["vocab_size"])
    return linears, (d.h, d.h), (("norm", d.h), ("norm", d.h), ("other", vocab)), 1  # one shared LayerNorm


def _neox_block(d: _Dims, cfg: dict[str, Any], model_type: str):
    linears = (
        Linear("query_key_value", d.h, d.a + 2 * d.kv, True),
        Linear("dense", d.a, d.h, True),
        Linear("dense_h_to_4h", d.h, d.i, True),
        Linear("dense_4h_to_h", d.i, d.h, True),
    )
    outer: tuple[tuple[str, int], ...] = (("norm", d.h), ("norm", d.h))
    if model_type == "bloom":  # word_embeddings_layernorm as well as ln_f
        outer = outer * 2
    return linears, (d.h,) * 4, outer, 2


def _qwen_block(d: _Dims, cfg: dict[str, Any], model_type: str):
    linears = (
        Linear("c_attn", d.h, 3 * d.a, True),
        Linear("c_proj", d.a, d.h),
        Linear("w1", d.h, d.i),
        Linear("w2", d.h, d.i),
        Linear("c_proj", d.i, d.h),
    )
    return linears, (d.h, d.h), (("norm", d.h),), 2


def _bigcode_block(d: _Dims, cfg: dict[str, Any], model_type: str):
    linears = (
        Linear("c_attn", d.h, d.a + 2 * d.kv, True),
        Linear("c_proj", d.a, d.h, True),
        Linear("c_fc", d.h, d.i, True),
        Linear("c_proj", d.i, d.h, True),
    )
    positions = int(_get(cfg, "n_positions", "max_position_embeddings", default=2048))
    return linears, (d.h,) * 4, (("norm", d.h), ("norm", d.h), ("other", positions * d.h)), 2


_LAYOUTS = {
    "llama": _llama_block,
    "phi3": _phi3_block,
    "phi": _phi_block,
    "neox": _neox_block,
    "qwen": _qwen_block,
    "bigcode": _bigcode_block,
}


# ---- reading an architecture from a name -------------------------------------------------------------------
def architecture_from(name_or_path: str) -> Architecture:
    """Architecture of a catalog id, a hub id the catalog knows, a folder holding config.json (weights not
    needed), a config.json file, a .gguf file (metadata only), or a hub id already in the Hugging Face cache.

    Raises EstimateError saying what was tried and what to pass instead.
    """
    name = (name_or_path or "").strip()
    if not name:
        raise EstimateError(
            "model.name_or_path is empty; name a catalog id (e.g. smollm2-135m-instruct), a folder "
            "with config.json or a .gguf file"
        )
    facts = catalog.lookup(DEFAULT_MODEL if name == "default" else name)
    if facts is not None:
        return architecture_from_config(dict(facts.config), facts.id, f"catalog:{facts.id}")
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        return _from_gguf(path)
    if path.is_dir() or path.name == "config.json":
        return _from_config_file(path / "config.json" if path.is_dir() else path, path.name)
    cached = _hub_cache_config(name)
    if cached is not None:
        return _from_config_file(cached, name)
    raise EstimateError(
        f"model {name!r} is not a catalog id, not a folder with config.json, not a .gguf file and not in the "
        "Hugging Face cache. Pick a catalog id (e.g. llama-3.1-8b-instruct; `catalog.ids()` lists them), or give "
        "a local folder that holds the model's config.json (the weights are not needed for an estimate)."
    )


def _from_config_file(path: Path, name: str) -> Architecture:
    if not path.is_file():
        raise EstimateError(f"{path.parent}: no config.json in this folder; pick the folder that holds config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EstimateError(f"{path}: not readable JSON ({exc}); restore the model's config.json") from None
    if not isinstance(cfg, dict):
        raise EstimateError(f"{path}: expected a JSON object of config keys")
    return architecture_from_config(cfg, name, str(path))


def _hub_cache_config(hub_id: str) -> Path | None:
    """config.json of a hub id already downloaded into the Hugging Face cache (never downloads)."""
    if hub_id.count("/") != 1 or hub_id.startswith((".", "/", "~")):
        return None
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub"))
    snapshots = hub / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
    return found[-1] if found else None


GGUF_TYPES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi3": "phi3",
    "phi2": "phi",
    "gptneox": "gpt_neox",
    "bloom": "bloom",
    "qwen": "qwen",
    "starcoder": "gpt_bigcode",
}


def _from_gguf(path: Path) -> Architecture:
    """Read the architecture keys from GGUF metadata (the tensors are memory-mapped, never read)."""
    if not path.is_file():
        raise EstimateError(f"GGUF file not found: {path}")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError/IndexError/struct errors on damaged files
        raise EstimateError(f"{path}: not a readable GGUF file ({exc})") from None
    meta = {key: _gguf_value(f) for key, f in reader.fields.items() if not key.startswith("tokenizer.ggml.")}
    arch = str(meta.get("general.architecture", ""))
    if arch not in GGUF_TYPES:
        raise EstimateError(f"{path}: GGUF architecture {arch!r} is not supported by the estimator")
    vocab = meta.get(f"{arch}.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    cfg = {
        "model_type": GGUF_TYPES[arch],
        "hidden_size": meta.get(f"{arch}.embedding_length"),
        "intermediate_size": meta.get(f"{arch}.feed_forward_length"),
        "num_hidden_layers": meta.get(f"{arch}.block_count"),
        "num_attention_heads": meta.get(f"{arch}.attention.head_count"),
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv"),
        "head_dim": meta.get(f"{arch}.attention.key_length"),
        "vocab_size": vocab,
        "tie_word_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        "max_position_embeddings": meta.get(f"{arch}.context_length"),
    }
    return architecture_from_config({k: v for k, v in cfg.items() if v is not None}, path.name, str(path))


def _gguf_value(field_: Any) -> Any:
    try:
        value = field_.contents()
    except Exception:  # an odd field type should not stop the estimate
        return None
    return int(value) if hasattr(value, "__index__") and not isinstance(value, bool) else value


# ---- how the training code lays out memory -----------------------------------------------------------------
@dataclass(frozen=True)
class Stack:
    """How a training stack keeps tensors. The defaults describe this app's trainer (transformers Trainer + PEFT +
    bitsandbytes; bf16 autocast on CUDA, fp32 on CPU). The calibration test sets them to compare with other
    stacks (LitGPT, DeepSpeed, plain PEFT scripts); users never need to."""

    norm_fp32: bool = True
    """HF RMSNorm/LayerNorm keep an fp32 copy of their input for backward (LitGPT's bf16 norm keeps the input)."""
    autocast: bool | None = None
    """Mixed-precision autocast; None = on whenever the model runs in 16-bit."""
    adapter_bytes: int = 4
    """Width of LoRA weights: PEFT's autocast_adapter_dtype keeps them fp32 on a bf16 base (LitGPT bf16-true: 2)."""
    kbit_upcast: bool = True
    """prepare_model_for_kbit_training casts every non-quantized param (embeddings, lm_head, norms) to fp32."""
    kbit_saves_input: bool = False
    """bitsandbytes < 0.44 kept each 4-bit Linear's input for backward (MatMul4Bit saved A); 0.44+ does not."""
    quantize_head: bool = False
    """Quantize lm_head too (LitGPT's bnb plugin does; transformers keeps it 16-bit)."""
    quant_scheme: str = "bnb"
    """bnb (NF4/FP4 blocks of 64, LLM.int8) or gptq (int4, groups of 128 with fp16 scales and zeros)."""
    logits_bytes: float = 12.0
    """Bytes per batch x seq x vocab element at the loss peak. 12 = fp32 upcast, saved log-softmax, its gradient
    and the nll gradient (transformers). ~6 for a loss computed on bf16 logits or in chunks (LitGPT, Qwen-1)."""
    repeat_kv: bool = True
    """SDPA/eager with a padding mask repeat K/V to every query head (transformers' repeat_kv); FA2 does not."""
    fused_qkv_view: bool = False
    """LitGPT: v is a view of the fused qkv output, so the whole q+k+v tensor stays alive for backward."""
    master_weights: bool = False
    """fp32 master copy and fp32 gradients of the trainable params (DeepSpeed ZeRO-2 bf16, or AMP on a 16-bit
    model)."""
    state_bytes: float | None = None
    """Force the bytes per param of torch AdamW's two states (None: 2 x the trainable param width)."""
    extra_bytes: int = 0
    """Fixed framework buffers (e.g. DeepSpeed ZeRO-2 gradient buckets)."""
    extra_trainable: int = 0
    """Params of trainable full copies in the model width (PEFT modules_to_save, e.g. embeddings + lm_head)."""
    cuda_context: int = int(0.6 * GIB)
    """CUDA context + cuBLAS/bitsandbytes kernels: ~0.3-0.7 GB with lazy loading (CUDA 12), ~1-1.3 GB on old
    stacks."""
    allocator_share: float = 0.07
    """CUDA: reserved-but-free share of the step's transient memory in the caching allocator (typically 5-15%)."""
    cpu_allocator_share: float = 0.40
    """CPU: share of the step's transient memory that glibc's heap keeps resident beyond what torch holds (freed
    chunks under its dynamic mmap threshold, up to 32 MiB, stay in the heap and fragment it). Measured with this
    app's trainer on the default model (bench/memory_cpu.py, BENCHMARKS.md): peak RSS with glibc's default heap
    minus peak RSS with MALLOC_MMAP_THRESHOLD_=131072 (tensors then unmapped on free) is 0.28-0.30 of the
    transient without checkpointing (batch 1-4, 1 or 2 threads; ~0.25 at batch 8) and 0.47-0.68 with it (1 / 2
    threads): the retained heap follows the tokens per micro-batch more than the transient size. 0.40 has the
    smallest worst error over those runs: -12% (checkpointing, 2 threads) to +11% (batch 8)."""
    process_baseline: int = int(0.45 * GIB)
    """CPU: RSS of Python + torch + transformers + peft before the model loads: 0.38 GiB for those imports alone,
    0.46 GiB once app.train (Trainer, accelerate) is imported; the UI process adds gradio."""


@dataclass(frozen=True)
class _Plan:
    """Widths and switches resolved from the config and device."""

    device: str
    w: int  # bytes per 16/32-bit weight element (2 or 4)
    act: int  # bytes per activation element
    mask: int  # bytes per dropout mask element (bool on CUDA, float on CPU)
    autocast: bool
    quant_bits: int | None
    double_quant: bool
    kbit_upcast: bool
    trainable_bytes: int  # width of a trainable param
    seq: int
    batch: int
    stack: Stack


def _plan(cfg: RunConfig, device: str, stack: Stack) -> _Plan:
    t = cfg.train
    fp32 = t.precision == "fp32" or (t.precision == "auto" and device == "cpu")
    w = 4 if fp32 else 2
    autocast = (not fp32) if stack.autocast is None else stack.autocast
    lora = cfg.method in ("lora", "qlora")
    bits = cfg.quant.bits if lora else None  # full/freeze cannot train quantized weights
    return _Plan(
        device=device,
        w=w,
        act=w,
        mask=1 if device != "cpu" else w,
        autocast=autocast,
        quant_bits=bits,
        double_quant=cfg.quant.double_quant,
        kbit_upcast=bits is not None and cfg.method == "qlora" and stack.kbit_upcast,
        trainable_bytes=(stack.adapter_bytes if w == 2 else 4) if lora else w,
        seq=cfg.data.max_seq_len,
        batch=t.batch_size,
        stack=stack,
    )


# ---- trainable parameters ------------------------------------------------------------------------------------
def lora_targets(arch: Architecture, targets: list[str] | str) -> list[Linear]:
    """The block Linear layers PEFT adapts: a list of leaf names, or every block Linear for "all-linear"."""
    if isinstance(targets, str):
        return list(arch.linears) if targets == "all-linear" else [x for x in arch.linears if x.name == targets]
    return [lin for lin in arch.linears if lin.name in set(targets)]


def trainable_tensors(arch: Architecture, cfg: RunConfig) -> list[int]:
    """Element counts of every trainable tensor, as PEFT / freeze_all_but_last / full training create them."""
    if cfg.method in ("lora", "qlora"):
        return _lora_tensors(arch, cfg)
    if cfg.method == "freeze":
        return _freeze_tensors(arch, cfg.freeze.trainable_layers, cfg.freeze.train_norms)
    return _all_tensors(arch)


def _lora_tensors(arch: Architecture, cfg: RunConfig) -> list[int]:
    lo = cfg.lora
    mods = lora_targets(arch, lo.target_modules)
    head = isinstance(lo.target_modules, list) and "lm_head" in lo.target_modules
    if not mods and not head:
        wanted = lo.target_modules if isinstance(lo.target_modules, str) else ", ".join(lo.target_modules)
        raise EstimateError(
            f"lora.target_modules: none of [{wanted}] is a Linear layer of {arch.name or arch.model_type}; "
            f"its Linear layers are {', '.join(arch.linear_names())} (or use all-linear)"
        )
    one_block = [lin for lin in mods]
    if head:
        one_block = one_block + [Linear("lm_head", arch.hidden, arch.vocab)]
    tensors: list[int] = []
    for index, lin in enumerate(one_block):
        times = 1 if lin.name == "lm_head" and index >= len(mods) else arch.layers
        sizes = [lo.rank * lin.in_features, lin.out_features * lo.rank] + ([lin.out_features] if lo.use_dora else [])
        tensors += sizes * times
    return tensors


def _block_tensors(arch: Architecture) -> list[int]:
    sizes = []
    for lin in arch.linears:
        sizes += [lin.weight_params] + ([lin.out_features] if lin.bias else [])
    return sizes + list(arch.block_norms)


def _freeze_tensors(arch: Architecture, layers: int, train_norms: bool) -> list[int]:
    if layers > arch.layers:
        raise EstimateError(
            f"freeze.trainable_layers is {layers} but {arch.name or 'the model'} has only {arch.layers} decoder "
            f"layers; use at most {arch.layers} (or method full)"
        )
    sizes = _block_tensors(arch) * layers
    if train_norms:
        sizes += list(arch.block_norms) * (arch.layers - layers) + [n for kind, n in arch.outer if kind == "norm"]
    return sizes


def _all_tensors(arch: Architecture) -> list[int]:
    head = [] if arch.tied else [arch.head_params]
    return [arch.embed_params, *head, *(_block_tensors(arch) * arch.layers), *(n for _, n in arch.outer)]


# ---- the terms -----------------------------------------------------------------------------------------------
def weight_bytes(arch: Architecture, p: _Plan) -> float:
    """Base weights: 16/32-bit, or decoder Linear weights in 8/4 bits with the rest 16-bit (fp32 after k-bit prep)."""
    total = arch.total_params
    if p.quant_bits is None:
        return total * p.w
    quantized = arch.linear_weight_params + (arch.head_params if p.stack.quantize_head else 0)
    rest = total - quantized
    return quantized * _quant_bytes_per_param(p, arch) + rest * (4 if p.kbit_upcast else p.w)


def _quant_bytes_per_param(p: _Plan, arch: Architecture) -> float:
    if p.quant_bits == 8:
        return 1.0 + 4.0 / arch.hidden  # int8 + one fp32 scale per output row
    if p.stack.quant_scheme == "gptq":
        return 0.5 + (2 + 0.5) / 128  # int4 + fp16 scale and 4-bit zero per group of 128 inputs
    # NF4/FP4: 4 bits + one fp32 absmax per 64 weights (0.5 bit), or 8-bit absmax + fp32 per 256 blocks (0.127 bit)
    return 0.5 + (0.127 if p.double_quant else 0.5) / 8


def optimizer_bytes(tensors: list[int], optimizer: str, p: _Plan, embedding: int = 0) -> float:
    """AdamW keeps two states per param: torch in the param dtype, bnb 8-bit ~2 B (32-bit below 4096 elements, and
    for the embedding, which the transformers Trainer registers for 32-bit states), bnb 32-bit 8 B.

    `embedding` is the element count of a trainable embedding matrix among `tensors` (0 when frozen).
    """
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        # 2 x 1 B + an fp32 absmax per 2048-element block for each state
        eight = sum(n * (2 + 8 / 2048) if n >= BNB_MIN_8BIT_SIZE else n * 8 for n in tensors)
        return eight + embedding * (8 - 2 - 8 / 2048)
    if optimizer == "paged_adamw_32bit":
        return sum(tensors) * 8.0
    per = p.stack.state_bytes if p.stack.state_bytes is not None else 2 * p.trainable_bytes
    return sum(tensors) * per


def _layer_bytes(arch: Architecture, cfg: RunConfig, p: _Plan, trainable: bool, adapted: bool) -> float:
    """Bytes autograd keeps per token for one decoder block that is part of the backward graph."""
    a, h, i = p.act, arch.hidden, arch.intermediate
    norm = 4 if (p.stack.norm_fp32 or p.autocast) else a  # fp32 copy of the norm input (bf16 input for LitGPT)
    total = arch.norms_per_block * h * norm + (arch.attn_dim + arch.kv_dim) * norm * arch.qk_norm
    total += _attention_bytes(arch, cfg, p) + (3 if arch.gated_mlp else 1) * i * a
    keeps_input = p.quant_bits == 8 or (p.quant_bits == 4 and p.stack.kbit_saves_input)
    if trainable or keeps_input:  # weight grads (and LLM.int8's backward, old 4-bit bnb) need the layer inputs
        total += _distinct_inputs(arch) * a
    if trainable and cfg.method == "full" and a < 4:  # trainable norm weight: the 16-bit normed input as well
        total += arch.norms_per_block * h * a
    if adapted:
        total += _lora_layer_bytes(arch, cfg, p)
    return total


def _distinct_inputs(arch: Architecture) -> int:
    """Elements of the distinct Linear inputs in a block (q/k/v share one, gate/up share one)."""
    seen: dict[tuple[str, int], int] = {}
    for lin in arch.linears:
        group = "attn_in" if lin.name in ("q_proj", "k_proj", "v_proj", "query_key_value", "c_attn") else lin.name
        group = "mlp_in" if lin.name in ("gate_proj", "up_proj", "w1", "w2") else group
        seen[(group, lin.in_features)] = lin.in_features
    return sum(seen.values())


def _attention_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> float:
    impl = cfg.model.attn_implementation
    a = p.act
    kv = arch.attn_dim if (p.stack.repeat_kv and impl != "flash_attention_2") else arch.kv_dim
    mha = arch.kv_heads == arch.heads  # with GQA LitGPT copies q/k/v out of the fused output; with MHA v is a view
    fused = (arch.attn_dim + arch.kv_dim) * a if p.stack.fused_qkv_view and mha else 0
    if impl == "eager":  # q, k^T and v for the matmuls, fp32 softmax probs (+ their 16-bit copy), heads x seq each
        probs = arch.heads * p.seq * (4 + (a if a < 4 else 0))
        return (arch.attn_dim + 2 * kv) * a + probs + fused
    return (2 * arch.attn_dim + 2 * kv) * a + 4 * arch.heads + fused  # q, k, v, out + fp32 logsumexp


def _lora_layer_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> float:
    """LoRA keeps the input of each lora_A (16-bit under autocast, fp32 otherwise) and the dropout mask; DoRA also
    keeps the base output and the LoRA output for the magnitude gradient."""
    lo = cfg.lora
    width = p.act if p.autocast else p.trainable_bytes
    total = 0.0
    for lin in lora_targets(arch, lo.target_modules):
        total += lin.in_features * (width + (p.mask if lo.dropout > 0 else 0))
        if lo.use_dora:
            total += lin.out_features * (p.act + width)
    return total


def _graph_layers(arch: Architecture, cfg: RunConfig) -> tuple[int, int]:
    """(layers in the backward graph, of which have trainable weights)."""
    if cfg.method == "full":
        return arch.layers, arch.layers
    if cfg.method == "freeze":
        n = min(cfg.freeze.trainable_layers, arch.layers)
        return (arch.layers if cfg.freeze.train_norms else n), n
    return arch.layers, 0


def activation_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> tuple[float, float]:
    """(activations kept for backward, backward working set) for one micro-batch, in bytes.

    The working set is what backward adds while it runs: the gradients of one MLP, and under gradient checkpointing
    the recomputed activations of one layer. It is added on top of the logits buffers: the caching allocator cannot
    always reuse the freed logits blocks for it, and a sum errs on the safe side (calibration: median error 7.6%
    summed vs 9.4% with max(), which under-predicts checkpointed long-sequence runs by 15%).
    """
    tokens = p.batch * p.seq
    graph, trainable = _graph_layers(arch, cfg)
    adapted = cfg.method in ("lora", "qlora")
    full_layer = _layer_bytes(arch, cfg, p, trainable > 0, adapted)
    frozen_layer = _layer_bytes(arch, cfg, p, False, adapted)
    working = (3 * arch.intermediate + 4 * arch.hidden) * p.act  # grads of one MLP and the residual in backward
    if cfg.train.gradient_checkpointing:  # keep each layer's input; recompute one layer at a time in backward
        kept = graph * arch.hidden * p.act
        working += full_layer
    else:
        kept = trainable * full_layer + (graph - trainable) * frozen_layer
    kept += arch.hidden * (4 if p.stack.norm_fp32 or p.autocast else p.act)  # final norm
    if cfg.method == "full":
        kept += arch.hidden * p.act  # trainable lm_head keeps its input
    return kept * tokens, working * tokens


def logits_bytes(arch: Architecture, p: _Plan) -> float:
    """batch x seq x vocab logits at the loss: bf16 logits, fp32 upcast, log-softmax and its grads ~12 B each."""
    per = p.stack.logits_bytes + (2 * p.act if arch.logit_softcap else 0)  # tanh soft-capping copies
    return p.batch * p.seq * arch.vocab * per


def _dequant_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> float:
    """Largest weight materialised at once: a dequantized k-bit Linear, or DoRA's fp32 weight for its norm."""
    largest = max(lin.weight_params for lin in arch.linears)
    out = largest * p.act if p.quant_bits else 0.0
    if cfg.method in ("lora", "qlora") and cfg.lora.use_dora:
        out += largest * 4
    return out


def _step_bytes(tensors: list[int], cfg: RunConfig, p: _Plan) -> float:
    """torch AdamW's foreach step makes one temporary the size of all trainable params (sqrt of exp_avg_sq)."""
    if cfg.train.optimizer != "adamw_torch" or p.device == "cpu":
        return max(tensors, default=0) * 4.0
    return sum(tensors) * p.trainable_bytes


# ---- the estimate --------------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    total_bytes: int
    breakdown: dict[str, int]
    """Bytes per part, in BREAKDOWN_KEYS order (LABELS has a human label for each)."""
    trainable_params: int
    total_params: int
    device: str
    device_memory_bytes: int | None = None
    fits: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def allocated_bytes(self) -> int:
        """What torch.cuda.max_memory_allocated would report: the total less allocator cache and runtime."""
        return self.total_bytes - self.breakdown["allocator"] - self.breakdown["runtime"]

    @property
    def reserved_bytes(self) -> int:
        """What torch.cuda.max_memory_reserved would report: allocated + the allocator cache."""
        return self.total_bytes - self.breakdown["runtime"]

    def to_json(self) -> dict[str, Any]:
        return {
            "total_gib": round(self.total_gib, 3),
            "breakdown_gib": {k: round(v / GIB, 3) for k, v in self.breakdown.items()},
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "device": self.device,
            "device_memory_gib": None
            if self.device_memory_bytes is None
            else round(self.device_memory_bytes / GIB, 3),
            "fits": self.fits,
        }

    to_dict = to_json


def estimate(
    arch: Architecture,
    cfg: RunConfig,
    device: str = "cuda",
    device_memory_bytes: int | None = None,
    stack: Stack | None = None,
) -> MemoryEstimate:
    """Peak memory of training `cfg` on `arch` on a CUDA GPU ("cuda") or in RAM ("cpu"), with a breakdown.

    `fits` is None without a capacity. `stack` describes another training stack (see Stack); leave it None for
    this app's trainer.
    """
    if device not in ("cuda", "cpu"):
        raise EstimateError(f"device {device!r}: use cuda or cpu")
    p = _plan(cfg, device, stack or Stack())
    tensors = trainable_tensors(arch, cfg)
    trainable = sum(tensors) + p.stack.extra_trainable
    parts = _static_parts(arch, cfg, p, tensors)
    acts, working = activation_bytes(arch, cfg, p)
    logits = logits_bytes(arch, p)
    backward = logits + working + _dequant_bytes(arch, cfg, p)
    dynamic = max(acts + backward, _step_bytes(tensors, cfg, p))
    parts.update(activations=acts, logits=logits, workspace=dynamic - acts - logits)
    share = p.stack.allocator_share if device == "cuda" else p.stack.cpu_allocator_share
    parts["allocator"] = share * dynamic
    parts["runtime"] = p.stack.cuda_context if device == "cuda" else p.stack.process_baseline
    breakdown = {k: int(round(parts[k])) for k in BREAKDOWN_KEYS}
    total = sum(breakdown.values())
    fits = None if device_memory_bytes is None else total <= device_memory_bytes
    return MemoryEstimate(total, breakdown, trainable, arch.total_params, device, device_memory_bytes, fits)


def _static_parts(arch: Architecture, cfg: RunConfig, p: _Plan, tensors: list[int]) -> dict[str, float]:
    trainable = sum(tensors)
    lora = cfg.method in ("lora", "qlora")
    grads = trainable * (p.trainable_bytes + (4 if p.stack.master_weights else 0))
    embedding = arch.embed_params if cfg.method == "full" else 0
    optim = optimizer_bytes(tensors, cfg.train.optimizer, p, embedding)
    optim += trainable * 4 if p.stack.master_weights else 0
    copies = p.stack.extra_trainable  # modules_to_save: copy, grad and torch AdamW states in the model width
    return {
        "weights": weight_bytes(arch, p),
        "adapter": (trainable * p.trainable_bytes if lora else 0) + copies * p.w,
        "gradients": grads + copies * p.w,
        "optimizer": optim + p.stack.extra_bytes + copies * 2 * p.w,
    }


def estimate_config(cfg: RunConfig, device: str | None = None, device_memory_bytes: int | None = None):
    """estimate() for a RunConfig alone: the architecture from cfg.model.name_or_path, the device from
    cfg.train.device (devices.kind: auto is this machine's GPU, else its CPU)."""
    arch = architecture_from(cfg.model.name_or_path)
    return estimate(arch, cfg, device or devices.kind(cfg.train.device), device_memory_bytes)


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
    if cfg.method != "qlora" or cfg.quant.bits != 4:
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
METHOD_NOTES: dict[str, tuple[float, str]] = {
    # relative step speed (LoRA = 1.0) and a one-line quality note; rough, for a comparison table
    "full": (0.7, "best fit to the data; most memory; can forget general skills"),
    "freeze": (1.4, "trains only the last layers: fast, weaker on new formats"),
    "lora": (1.0, "close to full fine-tuning on instruction data; small adapter files"),
    "qlora": (0.7, "LoRA on a 4-bit base: ~1/3 the weight memory, slightly lower quality, slower steps"),
}


def compare_methods(
    arch: Architecture, cfg: RunConfig, device: str = "cuda", device_memory_bytes: int | None = None
) -> list[dict[str, Any]]:
    """full / freeze / lora / qlora on this model with this batch and sequence length: estimate, trainable
    params, relative speed and a quality note, one dict per method."""
    rows = []
    for method in ("full", "freeze", "lora", "qlora"):
        bits = (cfg.quant.bits or 4) if method == "qlora" else None
        changes: dict[str, Any] = {"method": method, "quant.bits": bits}
        if method == "freeze":
            changes["freeze.trainable_layers"] = min(cfg.freeze.trainable_layers, arch.layers)
        est = estimate(arch, cfg.replace(**changes), device, device_memory_bytes)
        speed, note = METHOD_NOTES[method]
        rows.append(
            {
                "method": method,
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


# ---- command line ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config or partial preset YAML (e.g. presets/llama-3.1-8b-qlora-24gb.yaml)")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="where the run trains; default: the config's train.device (auto: cuda if PyTorch sees a GPU, else cpu)",
    )
    parser.add_argument(
        "--device-memory-gib",
        type=float,
        default=None,
        metavar="N",
        help="GPU memory (or RAM for cpu) in GiB; the answer then says whether the run fits",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def main(args: argparse.Namespace) -> int:
    try:
        cfg = RunConfig.from_preset(args.config)
        device = args.device or devices.kind(cfg.train.device)
        capacity = None if args.device_memory_gib is None else int(args.device_memory_gib * GIB)
        est = estimate(architecture_from(cfg.model.name_or_path), cfg, device, capacity)
    except (ConfigError, EstimateError) as exc:
        print(f"estimate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(est.to_json()) if args.json else format_table(est, cfg))
    return 0


def format_table(est: MemoryEstimate, cfg: RunConfig) -> str:
    """A readable breakdown: one line per part, the total, and the verdict when a capacity is known."""
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
        verdict = "fits" if est.fits else "does NOT fit"
        lines.append(f"  {verdict} in {est.device_memory_bytes / GIB:.1f} GiB")
    return "\n".join(lines)
