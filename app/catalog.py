"""Architecture facts of well-known models: the config.json numbers that decide memory, so a user can estimate a
70B run before downloading anything.

Each entry is a catalog id (what the UI and presets use), the Hugging Face hub id, and the config.json keys that
matter for memory (model_type, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
num_key_value_heads, head_dim, vocab_size, tie_word_embeddings, ...). Base and -instruct variants share numbers.
Values are copied from the published config.json files (the calibration configs in shared/memory/configs where
they exist); `app.memory.architecture_from()` turns them into parameter counts and per-layer shapes.

    >>> lookup("Llama-3.1-8B-Instruct").hub_id
    'meta-llama/Llama-3.1-8B-Instruct'
    >>> lookup("meta-llama/llama-3.1-8b-instruct").id
    'llama-3.1-8b-instruct'

Pure Python and tiny: `app.modeling` imports it to turn a catalog id into a hub id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ModelFacts:
    id: str
    """Catalog id, lower case, e.g. llama-3.1-8b-instruct."""
    hub_id: str
    """Hugging Face repository id, e.g. meta-llama/Llama-3.1-8B-Instruct."""
    config: MappingProxyType
    """config.json numbers (read-only mapping) that architecture_from() understands."""
    params_b: float
    """Published size in billions of parameters, for labels (the estimator counts exactly from config)."""
    aliases: tuple[str, ...] = field(default=())
    """Other names that find this entry (case-insensitive)."""


def _llama(h: int, i: int, layers: int, heads: int, kv: int, vocab: int, tied: bool, **extra: Any) -> dict:
    """config.json keys of a Llama-style decoder (llama, mistral, qwen2, gemma, ...)."""
    cfg = {
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": i,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
    }
    cfg.update(extra)
    return cfg


def _qwen2(h: int, i: int, layers: int, heads: int, kv: int, vocab: int, tied: bool) -> dict:
    return _llama(h, i, layers, heads, kv, vocab, tied, model_type="qwen2")  # q/k/v carry a bias (qwen2 rule)


def _gemma(kind: str, h: int, i: int, layers: int, heads: int, kv: int, head_dim: int, vocab: int, **extra: Any):
    return _llama(h, i, layers, heads, kv, vocab, True, model_type=kind, head_dim=head_dim, **extra)


# Sizes of the SigLIP vision tower + projector that Gemma 3 4B/12B/27B checkpoints carry (loaded with the model,
# never trained here): 417M vision params + 2560..5376 x 1152 projector; counted as extra frozen weights.
_GEMMA3_VISION = 419_000_000

_LLAMA2_7B = _llama(4096, 11008, 32, 32, 32, 32000, False)
_LLAMA2_13B = _llama(5120, 13824, 40, 40, 40, 32000, False)
_LLAMA2_70B = _llama(8192, 28672, 80, 64, 8, 32000, False)
_LLAMA32_1B = _llama(2048, 8192, 16, 32, 8, 128256, True)
_LLAMA32_3B = _llama(3072, 8192, 28, 24, 8, 128256, True)
_LLAMA31_8B = _llama(4096, 14336, 32, 32, 8, 128256, False)
_LLAMA31_70B = _llama(8192, 28672, 80, 64, 8, 128256, False)
_SMOL_135M = _llama(576, 1536, 30, 9, 3, 49152, True)
_SMOL_360M = _llama(960, 2560, 32, 15, 5, 49152, True)
_SMOL_1_7B = _llama(2048, 8192, 24, 32, 32, 49152, True)
_TINYLLAMA = _llama(2048, 5632, 22, 32, 4, 32000, False)
_MISTRAL_V01 = _llama(4096, 14336, 32, 32, 8, 32000, False, model_type="mistral")
_MISTRAL_V03 = _llama(4096, 14336, 32, 32, 8, 32768, False, model_type="mistral")
_PHI3_MINI = _llama(3072, 8192, 32, 32, 32, 32064, False, model_type="phi3")
_PHI2 = _llama(2560, 10240, 32, 32, 32, 51200, False, model_type="phi", partial_rotary_factor=0.4)
_PHI15 = _llama(2048, 8192, 24, 32, 32, 51200, False, model_type="phi", partial_rotary_factor=0.5)

# (id, hub id, published size in B, config, aliases)
_ENTRIES: list[tuple[str, str, float, dict, tuple[str, ...]]] = [
    ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", 0.135, _SMOL_135M, ()),
    ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M", 0.135, _SMOL_135M, ()),
    ("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", 0.36, _SMOL_360M, ()),
    ("smollm2-360m", "HuggingFaceTB/SmolLM2-360M", 0.36, _SMOL_360M, ()),
    ("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.7, _SMOL_1_7B, ()),
    ("smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B", 1.7, _SMOL_1_7B, ()),
    ("tinyllama-1.1b", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1.1, _TINYLLAMA, ("tinyllama-1.1b-chat",)),
    ("llama-2-7b", "meta-llama/Llama-2-7b-hf", 7, _LLAMA2_7B, ()),
    ("llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", 7, _LLAMA2_7B, ()),
    ("llama-2-13b", "meta-llama/Llama-2-13b-hf", 13, _LLAMA2_13B, ()),
    ("llama-2-13b-chat", "meta-llama/Llama-2-13b-chat-hf", 13, _LLAMA2_13B, ()),
    ("llama-2-70b", "meta-llama/Llama-2-70b-hf", 70, _LLAMA2_70B, ()),
    ("llama-2-70b-chat", "meta-llama/Llama-2-70b-chat-hf", 70, _LLAMA2_70B, ()),
    ("llama-3.2-1b", "meta-llama/Llama-3.2-1B", 1.24, _LLAMA32_1B, ()),
    ("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", 1.24, _LLAMA32_1B, ()),
    ("llama-3.2-3b", "meta-llama/Llama-3.2-3B", 3.21, _LLAMA32_3B, ()),
    ("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", 3.21, _LLAMA32_3B, ()),
    ("llama-3.1-8b", "meta-llama/Llama-3.1-8B", 8.03, _LLAMA31_8B, ("meta-llama/Meta-Llama-3.1-8B",)),
    ("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", 8.03, _LLAMA31_8B, ()),
    ("llama-3.1-70b", "meta-llama/Llama-3.1-70B", 70.6, _LLAMA31_70B, ()),
    ("llama-3.1-70b-instruct", "meta-llama/Llama-3.1-70B-Instruct", 70.6, _LLAMA31_70B, ()),
    ("llama-3.3-70b-instruct", "meta-llama/Llama-3.3-70B-Instruct", 70.6, _LLAMA31_70B, ()),
    ("mistral-7b", "mistralai/Mistral-7B-v0.1", 7.24, _MISTRAL_V01, ()),
    ("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", 7.25, _MISTRAL_V03, ()),
    ("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", 0.49, _qwen2(896, 4864, 24, 14, 2, 151936, True), ()),
    ("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", 1.54, _qwen2(1536, 8960, 28, 12, 2, 151936, True), ()),
    ("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct", 3.09, _qwen2(2048, 11008, 36, 16, 2, 151936, True), ()),
    ("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", 7.62, _qwen2(3584, 18944, 28, 28, 4, 152064, False), ()),
    ("qwen2.5-14b-instruct", "Qwen/Qwen2.5-14B-Instruct", 14.8, _qwen2(5120, 13824, 48, 40, 8, 152064, False), ()),
    ("qwen2.5-32b-instruct", "Qwen/Qwen2.5-32B-Instruct", 32.8, _qwen2(5120, 27648, 64, 40, 8, 152064, False), ()),
    ("qwen2.5-72b-instruct", "Qwen/Qwen2.5-72B-Instruct", 72.7, _qwen2(8192, 29568, 80, 64, 8, 152064, False), ()),
    ("gemma-2-2b", "google/gemma-2-2b", 2.61, _gemma("gemma2", 2304, 9216, 26, 8, 4, 256, 256000), ()),
    ("gemma-2-2b-it", "google/gemma-2-2b-it", 2.61, _gemma("gemma2", 2304, 9216, 26, 8, 4, 256, 256000), ()),
    ("gemma-2-9b", "google/gemma-2-9b", 9.24, _gemma("gemma2", 3584, 14336, 42, 16, 8, 256, 256000), ()),
    ("gemma-2-9b-it", "google/gemma-2-9b-it", 9.24, _gemma("gemma2", 3584, 14336, 42, 16, 8, 256, 256000), ()),
    ("gemma-2-27b", "google/gemma-2-27b", 27.2, _gemma("gemma2", 4608, 36864, 46, 32, 16, 128, 256000), ()),
    ("gemma-3-1b", "google/gemma-3-1b-pt", 1.0, _gemma("gemma3_text", 1152, 6912, 26, 4, 1, 256, 262144), ()),
    ("gemma-3-1b-it", "google/gemma-3-1b-it", 1.0, _gemma("gemma3_text", 1152, 6912, 26, 4, 1, 256, 262144), ()),
    (
        "gemma-3-4b-it",
        "google/gemma-3-4b-it",
        4.3,
        _gemma("gemma3_text", 2560, 10240, 34, 8, 4, 256, 262208, extra_params=_GEMMA3_VISION),
        ("gemma-3-4b",),
    ),
    (
        "gemma-3-12b-it",
        "google/gemma-3-12b-it",
        12.2,
        _gemma("gemma3_text", 3840, 15360, 48, 16, 8, 256, 262208, extra_params=_GEMMA3_VISION),
        ("gemma-3-12b",),
    ),
    (
        "gemma-3-27b-it",
        "google/gemma-3-27b-it",
        27.4,
        _gemma("gemma3_text", 5376, 21504, 62, 32, 16, 128, 262208, extra_params=_GEMMA3_VISION),
        ("gemma-3-27b",),
    ),
    ("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct", 3.82, _PHI3_MINI, ("phi-3-mini-4k-instruct",)),
    ("phi-3.5-mini", "microsoft/Phi-3.5-mini-instruct", 3.82, _PHI3_MINI, ("phi-3.5-mini-instruct",)),
    ("phi-2", "microsoft/phi-2", 2.78, _PHI2, ()),
    ("phi-1.5", "microsoft/phi-1_5", 1.42, _PHI15, ("phi-1_5",)),
]


def _build() -> dict[str, ModelFacts]:
    table: dict[str, ModelFacts] = {}
    for cid, hub_id, size, cfg, aliases in _ENTRIES:
        table[cid] = ModelFacts(cid, hub_id, MappingProxyType(dict(cfg)), size, aliases)
    return table


CATALOG: dict[str, ModelFacts] = _build()
_INDEX: dict[str, ModelFacts] = {}
for _facts in CATALOG.values():
    for _key in (_facts.id, _facts.hub_id, *_facts.aliases):
        _INDEX.setdefault(_key.lower(), _facts)


def lookup(name: str) -> ModelFacts | None:
    """The entry whose id, hub id or alias is `name` (case-insensitive, surrounding spaces and a trailing slash
    ignored); None when the catalog does not know it."""
    return _INDEX.get(name.strip().rstrip("/").lower()) if name else None


def ids() -> list[str]:
    """Every catalog id, in catalog order (small models first within each family)."""
    return list(CATALOG)
