"""Architecture reading: the facts of a decoder-only model that decide training memory, from config.json or GGUF.

A catalog id, a hub id the catalog knows, a folder with config.json (weights not needed), a config.json file, a .gguf
file (metadata only) or a hub id already in the Hugging Face cache -> Architecture: the Linear layers of one block
with their shapes, the norms, the vocabulary and whether the embeddings are tied. No torch import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import catalog
from app.config import DEFAULT_MODEL


class EstimateError(ValueError):
    """The model or config cannot be estimated; the message says which input and what to do."""


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
        "Hugging Face cache. Pick a catalog id (e.g. llama-3.1-8b-instruct; the Model tab's Base model list "
        f"suggests all {len(catalog.ids())}), or give a local folder that holds the model's config.json (the "
        "weights are not needed for an estimate)."
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
    """config.json of a hub id in the Hugging Face cache (never downloads): a downloaded model, or just the
    config the Model tab's Hub search fetched to estimate it."""
    from app import hub

    return hub.cached_file(hub_id, "config.json")


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
