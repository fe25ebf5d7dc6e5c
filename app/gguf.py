"""The GGUF writer: a merged or full Llama-family model folder as one .gguf file for llama.cpp, a PEFT LoRA adapter
as a GGUF adapter (`llama-cli --lora`, Ollama's ADAPTER), and an Ollama Modelfile beside them.

    path = gguf.write(folder, out / gguf.file_name("q8_0"), "q8_0", meta=gguf.Meta(name="my-run"))
    gguf.write_lora(adapter, base_folder, out / "adapter-f16.gguf", "f16")
    gguf.write_modelfile(path, chat_template, out, system="You are TuneBot.", name="my-run")

The file types (GGUF_TYPES: which writer, llama_ftype, size, quality) are one table here; f16 / q8_0 / f32 are
written by this module, the K-quants and legacy quants by llama.cpp's quantizer from an F16 file (app.export).

Written with the `gguf` package (no llama.cpp checkout needed) for SUPPORTED_GGUF_ARCHITECTURES only, with a
byte-level BPE tokenizer (tokenizer.json), plain or linear RoPE and no biases; anything else raises GGUFError
pointing to llama.cpp's convert_hf_to_gguf.py. Tensors go through one at a time (header first, then each tensor
converted and written), so memory holds one tensor, not the model. Merging and choosing output folders are
app.export's; this module only turns a folder of safetensors into GGUF.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.commands import GGUF_QUANTS, ChatConfig

SUPPORTED_GGUF_ARCHITECTURES: tuple[str, ...] = ("LlamaForCausalLM", "MistralForCausalLM")

Progress = Callable[[float, str], None]


class GGUFError(RuntimeError):
    """A folder cannot be written as GGUF here; the message names it and says what to use instead."""


# ---- the file types ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GGUFType:
    """One GGUF file type an export can write."""

    name: str
    """As in commands.GGUF_QUANTS and the file name: model-<name>.gguf."""
    writer: str
    """"tunedesk": written by this module; "llama.cpp": quantized by llama.cpp from an F16 file (app.llamacpp)."""
    ftype: int
    """llama.cpp's llama_ftype (general.file_type; what llama_model_quantize takes)."""
    bits_per_weight: float
    """Average bits per weight of a whole 7B/8B model file (mixed tensor types included)."""
    note: str
    """One line on size and quality."""


# bits/weight: llama.cpp tools/quantize/README.md, Llama-3.1-8B table (Q4_K_M 4.8944, Q5_K_M 5.7036, Q6_K 6.5633,
# Q8_0 8.5008, F16 16.0005); Q4_0 / Q5_0 are not in that table: their 4.5 / 5.5-bit blocks (18 / 22 bytes per 32
# weights) plus the 6-bit output tensor llama.cpp keeps give 4.55 / 5.54. Perplexity deltas: the QUANT_OPTIONS
# table of tools/quantize/quantize.cpp (Llama-3-8B).
GGUF_TYPES: dict[str, GGUFType] = {
    t.name: t
    for t in (
        GGUFType("q4_k_m", "llama.cpp", 15, 4.89, "the usual choice: small, little quality loss (+0.18 ppl, 8B)"),
        GGUFType("q5_k_m", "llama.cpp", 17, 5.69, "a little larger than q4_k_m, less loss (+0.06 ppl, 8B)"),
        GGUFType("q6_k", "llama.cpp", 18, 6.56, "near-lossless (+0.02 ppl, 8B)"),
        GGUFType("q8_0", "tunedesk", 7, 8.50, "practically lossless (+0.003 ppl), twice the size of q4_k_m"),
        GGUFType("f16", "tunedesk", 1, 16.0, "lossless for fp16/bf16 weights; the source the quants are made from"),
        GGUFType("q4_0", "llama.cpp", 2, 4.55, "legacy, lower quality than q4_k_m at a similar size (+0.47 ppl)"),
        GGUFType("q5_0", "llama.cpp", 8, 5.54, "legacy, lower quality than q5_k_m at a similar size (+0.13 ppl)"),
        GGUFType("f32", "tunedesk", 0, 32.0, "every bit of a float32 model; twice the size of f16, for checks"),
    )
}
"""Every GGUF file type by name; the names are commands.GGUF_QUANTS (a test checks the two agree)."""


def expected_size(n_params: int, quant: str) -> int:
    """Bytes of a GGUF file of `n_params` weights at `quant` (the 7B/8B average: a small model whose rows do not
    fit the 256-value K-quant blocks comes out larger, see app.export).

    >>> expected_size(8_000_000_000, "q4_k_m") // 10**9
    4
    """
    return math.ceil(n_params * GGUF_TYPES[quant].bits_per_weight / 8)


def type_rows(n_params: int | None) -> list[tuple[str, int | None, str]]:
    """(name, expected bytes or None when the size of the model is unknown, note) per type, in the CLI's order:
    the table the Export tab shows next to its Quantization choice."""
    return [(q, None if not n_params else expected_size(n_params, q), GGUF_TYPES[q].note) for q in GGUF_QUANTS]


def count_params(folder: Path) -> int:
    """Weights in a model folder's safetensors (its header shapes; nothing is loaded)."""
    return sum(math.prod(shape) for _, _, shape in _tensor_shapes(folder))


def file_name(quant: str, stem: str = "model") -> str:
    """The .gguf file name for a tensor type: model-q8_0.gguf (base-f16.gguf for the base of a LoRA GGUF)."""
    return f"{stem}-{quant}.gguf"


@dataclass
class Meta:
    """What the general.* keys say about a model, as llama.cpp's convert_hf_to_gguf.py writes them."""

    name: str
    """general.name: the run or adapter name for a fine-tune, else the folder's name."""
    finetune: str | None = None
    """general.finetune: the run's name for a merged fine-tune; None for a base model."""
    base_hub_id: str | None = None
    """The Hub id (owner/model) of the base model: general.basename, size label and general.base_model.0.*."""
    tags: tuple[str, ...] = ("tunedesk",)
    """general.tags."""
    sources: list[dict] = field(default_factory=list)
    """Records of where the folder came from (conversion and merge), searched for the original pre-tokenizer."""


def write(
    folder: Path,
    path: Path,
    quant: str,
    progress: Progress | None = None,
    *,
    meta: Meta | None = None,
) -> str | None:
    """Write `folder` (config.json, tokenizer.json, *.safetensors) as the GGUF file `path`; returns the tokenizer's
    chat template (for the Modelfile).

    Only the types this module writes (GGUF_TYPES[quant].writer "tunedesk": f16, q8_0, f32); llama.cpp makes the
    others from the F16 file (app.export.export_gguf). `meta` fills general.* (default: the folder's name). The
    file is written beside `path` and renamed when complete. Progress goes to `progress` per tensor, else to a tqdm
    bar.
    """
    if quant not in GGUF_QUANTS:
        raise GGUFError(f"quant {quant!r} is not one of {', '.join(GGUF_QUANTS)}")
    if GGUF_TYPES[quant].writer != "tunedesk":
        raise GGUFError(
            f"{quant} is quantized by llama.cpp from an F16 file, not written here: use app.export.export_gguf "
            f"(python -m app export gguf ... --quant {quant})"
        )
    config = _gguf_config(folder)
    tokenizer = _gguf_tokenizer(folder, config)
    meta = meta or Meta(name=folder.name)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_gguf(folder, tmp, config, tokenizer, quant, progress, meta)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return tokenizer.chat_template


def check(folder: Path) -> None:
    """Raise GGUFError naming every reason `folder` cannot be written here (architecture, biases, RoPE)."""
    _gguf_config(folder)


def _gguf_config(folder: Path) -> dict[str, Any]:
    """config.json, checked for what this writer handles; every problem is reported at once."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["unknown"])[0]
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise GGUFError(
            f"{folder}: architecture {arch} cannot be exported to GGUF here; supported: "
            f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)} (Llama family, incl. the default SmolLM2). For other models "
            "use llama.cpp's convert_hf_to_gguf.py on the merged folder."
        )
    problems = []
    if config.get("attention_bias") or config.get("mlp_bias"):
        problems.append("attention/MLP biases are not written by this exporter")
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type not in ("default", "linear"):
        problems.append(f"RoPE scaling {rope_type!r} (only plain and linear RoPE are written)")
    if problems:
        raise GGUFError(
            f"{folder}: cannot export to GGUF: {'; '.join(problems)}. Use llama.cpp's convert_hf_to_gguf.py."
        )
    return config


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from transformers 5 `rope_parameters` or 4.x `rope_theta` + `rope_scaling`."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope.setdefault("rope_type", rope.get("type", "default"))
    return rope


def _gguf_tokenizer(folder: Path, config: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    tok_json = folder / "tokenizer.json"
    model_type = json.loads(tok_json.read_text(encoding="utf-8"))["model"].get("type") if tok_json.is_file() else None
    if model_type != "BPE" or not _byte_level(tok_json):
        raise GGUFError(
            f"{folder}: the tokenizer is not a byte-level BPE tokenizer.json (found {model_type or 'none'}); this "
            "exporter writes GPT-2 style BPE vocabularies only. Use llama.cpp's convert_hf_to_gguf.py."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if len(tokenizer) > config["vocab_size"]:
        raise GGUFError(f"{folder}: tokenizer has {len(tokenizer)} tokens but the model only {config['vocab_size']}")
    return tokenizer


def _byte_level(tok_json: Path) -> bool:
    return '"ByteLevel"' in tok_json.read_text(encoding="utf-8").replace(" ", "")


def pre_tokenizer_name(folder: Path, sources: Iterable[dict] = ()) -> str:
    """llama.cpp's name for the text splitting before BPE (tokenizer.ggml.pre).

    A model converted from GGUF (the default model) keeps the name its original GGUF had, found through the merge
    and conversion records (`sources`, each a record that may name its "gguf" file); otherwise plain byte-level
    splitting is "gpt-2", and anything else "default".
    """
    for record in sources:
        gguf_file = record.get("gguf")
        if gguf_file and Path(gguf_file).is_file():
            from gguf import GGUFReader

            field = GGUFReader(gguf_file).fields.get("tokenizer.ggml.pre")
            if field is not None:
                return str(field.contents())
    pre = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's own regex (llama.cpp spells it "gpt-2"; "gpt2" fails to load there)
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # one digit per token, then GPT-2's regex (SmolLM, StarCoder)
    if kinds[:1] == ["Split"] and r"\p{N}{1,3}" in (steps[0].get("pattern") or {}).get("Regex", ""):
        return "llama-bpe"  # Llama 3's regex: up to 3 digits per token
    return "default"


def _write_gguf(
    folder: Path,
    path: Path,
    config: dict,
    tokenizer: Any,
    quant: str,
    progress: Progress | None,
    meta: Meta,
) -> None:
    """Two passes: tensor shapes and types into the header, then each tensor converted and written in turn,
    so memory holds one tensor at a time rather than the whole model (a 7B fp16 model would be 14 GB)."""
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    plan = list(_tensor_plan(folder, config, quant))
    _write_general(writer, meta, sum(math.prod(p[3]) for p in plan), "model")
    _write_metadata(writer, config, quant)
    _write_vocab(writer, folder, config, tokenizer, pre_tokenizer_name(folder, meta.sources))
    for name, _, _, shape, qtype in plan:
        writer.add_tensor_info(name, *_stored_layout(shape, qtype), raw_dtype=qtype)
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (name, file, hf_name, _, qtype) in enumerate(_progress_iter(plan, progress)):
            writer.write_tensor_data(_convert(file, hf_name, name, config, qtype))
            if progress is not None and i % 20 == 0:
                progress(0.45 + 0.5 * i / len(plan), f"tensor {i + 1}/{len(plan)}: {name}")
    finally:
        writer.close()


def _progress_iter(plan: list, progress: Progress | None) -> Any:
    if progress is not None:
        return plan
    from tqdm import tqdm

    return tqdm(plan, desc="GGUF tensors", unit="tensor", file=sys.stderr)


def _stored_layout(shape: list[int], qtype: Any) -> tuple[list[int], Any, int]:
    """(shape as stored, numpy dtype, bytes): Q8_0 is stored as bytes, 34 per block of 32 values."""
    import gguf
    import numpy as np

    if qtype == gguf.GGMLQuantizationType.Q8_0:
        byte_shape = list(gguf.quant_shape_to_byte_shape(shape, qtype))
        return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))
    dtype = np.dtype(np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16)
    return shape, dtype, int(np.prod(shape)) * dtype.itemsize


def _write_general(writer: Any, meta: Meta, n_params: int, kind: str) -> None:
    """general.* as llama.cpp's converter writes them (gguf.metadata's reading of a Hub id): for a SmolLM2 fine-tune
    basename "SmolLM2", size_label "135M", finetune = the run, base_model.0 = SmolLM2 135M Instruct by
    HuggingFaceTB with its URL; `kind` is general.type, "model" or "adapter"."""
    from gguf.metadata import Metadata
    from gguf.utility import size_label

    writer.add_type(kind)
    writer.add_name(meta.name)
    # the Hub id's size ("135M") is used when it is near the weights counted here (negative: an adapter's, which
    # may be far smaller), as the converter decides; else the count's own label
    counted = -n_params if kind == "adapter" else n_params
    full, org, basename, _fine, version, label = Metadata.get_model_id_components(meta.base_hub_id, counted)
    writer.add_basename(basename or meta.name)
    if meta.finetune:
        writer.add_finetune(meta.finetune)
    if kind == "model":
        writer.add_size_label(label or size_label(n_params, 0, 0, 0))
    if meta.base_hub_id and full:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, Metadata.id_to_title(full))
        if org:
            writer.add_base_model_organization(0, Metadata.id_to_title(org))
            writer.add_base_model_repo_url(0, f"https://huggingface.co/{org}/{full}")
        if version:
            writer.add_base_model_version(0, version)
    writer.add_tags(list(meta.tags))


def _write_metadata(writer: Any, config: dict, quant: str) -> None:
    import gguf

    heads, kv_heads, hidden = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = _rope(config)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(GGUF_TYPES[quant].ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_vocab(writer: Any, folder: Path, config: dict, tokenizer: Any, pre: str) -> None:
    """Tokens by id in their byte-level spelling, their types, merges, special ids and the chat template."""
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(config["vocab_size"]):
        if i not in by_id:  # embedding rows beyond the tokenizer (vocab padded to a multiple of 64, say)
            tokens.append(f"[PAD{i}]")
            # UNUSED, as llama.cpp's converter marks them: USER_DEFINED would make llama.cpp match "[PAD32001]"
            # typed in a user's text as that token
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            special = i in added and added[i].special
            types.append(gguf.TokenType.CONTROL if special else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)  # fmt: skip
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=config["vocab_size"])
    # say whether to add BOS/EOS as the Hugging Face tokenizer does; left unsaid, llama.cpp guesses per vocab type
    probe = tokenizer("a").input_ids
    special.add_special_token.setdefault(
        "bos", tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id
    )
    special.add_special_token.setdefault(
        "eos", tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id
    )
    special.add_to_gguf(writer, quiet=True)  # merges, bos/eos/unk/pad ids, add_bos/add_eos, chat template
    if not special.chat_template and tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


# Hugging Face -> GGUF tensor names come from gguf's own table (gguf.get_tensor_name_map), as llama.cpp's
# converter does; this keeps the names right without copying them here.
def _tensor_plan(folder: Path, config: dict, quant: str) -> Iterator[tuple[str, Path, str, list[int], Any]]:
    """(gguf name, safetensors file, hf name, shape, ggml type) for every tensor, in file order."""
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    tied = config.get("tie_word_embeddings", False)
    for file, hf_name, shape in _tensor_shapes(folder):
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the same tensor as token_embd
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GGUFError(f"{folder}: tensor {hf_name} has no GGUF name for the llama architecture")
        yield name, file, hf_name, shape, _ggml_type(shape, quant)


def _ggml_type(shape: list[int], quant: str) -> Any:
    """Norms (1-D) stay F32 as in llama.cpp; Q8_0 needs rows that are a multiple of its 32-value block."""
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) == 1 or quant == "f32":
        return T.F32
    if quant == "q8_0" and shape[-1] % 32 == 0:
        return T.Q8_0
    return T.F16


def _tensor_shapes(folder: Path) -> Iterator[tuple[Path, str, list[int]]]:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GGUFError(f"{folder}: no .safetensors weights to export")
    for file in files:
        with safe_open(str(file), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118
                yield file, key, list(fh.get_slice(key).get_shape())


def _convert(file: Path, hf_name: str, name: str, config: dict, qtype: Any) -> Any:
    import gguf
    import numpy as np
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        data = fh.get_tensor(hf_name).float().numpy()  # bf16 has no numpy type: go through fp32
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    if name.endswith("attn_q.weight"):
        data = permute_qk(data, heads)
    elif name.endswith("attn_k.weight"):
        data = permute_qk(data, kv_heads)
    if qtype == gguf.GGMLQuantizationType.Q8_0:
        return gguf.quants.quantize(data, qtype)
    return data.astype(np.float16 if qtype == gguf.GGMLQuantizationType.F16 else np.float32)


def permute_qk(weight: Any, n_heads: int) -> Any:
    """Reorder the rows of a Llama q/k projection from Hugging Face's rotary layout to llama.cpp's.

    Hugging Face rotates the two halves of each head ([x0..x31 | x32..x63] for head_dim 64); llama.cpp's RoPE
    rotates neighbouring pairs (x0,x1), (x2,x3)... So per head the rows [h0, h1] (halves) become interleaved
    [h0[0], h1[0], h0[1], h1[1], ...]. k uses the number of KV heads. transformers' GGUF loader undoes exactly this.
    """
    rows = weight.shape[0]
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


# ---- LoRA adapters as GGUF (llama-cli --lora, Ollama ADAPTER) -------------------------------------------------
LORA_TYPES: tuple[str, ...] = ("f16", "f32")
"""Tensor types of a LoRA GGUF (llama.cpp's convert_lora_to_gguf.py also offers bf16 and q8_0: adapters are small)."""


def write_lora(adapter: Path, weights: Path, base_folder: Path, path: Path, quant: str, meta: Meta) -> int:
    """Write the PEFT LoRA `adapter` (its `weights` file) as the GGUF adapter `path` over the base in `base_folder`,
    as llama.cpp's convert_lora_to_gguf.py does; returns the number of adapted weights.

    general.type "adapter", adapter.type "lora", adapter.lora.alpha; tensors "<gguf name>.lora_a" (PEFT's A, r x in)
    and ".lora_b" (B, out x r; q and k rows permuted as the base's are). llama.cpp scales B @ A by alpha / r, where
    r is each pair's own rank; PEFT's scale (alpha / r, alpha / sqrt(r) with rsLoRA, per-module rank and alpha
    patterns) is matched by folding any difference into B. Raises GGUFError naming every part llama.cpp cannot
    apply (DoRA, other PEFT types, modules_to_save, biases, targets with no llama.cpp name).
    """
    import gguf
    import numpy as np

    if quant not in LORA_TYPES:
        raise GGUFError(f"a LoRA GGUF is written as {' or '.join(LORA_TYPES)}, not {quant!r}")
    config, acfg, pairs = _lora_plan(adapter, weights, base_folder)
    alpha = lora_alpha(acfg)
    dtype = np.float16 if quant == "f16" else np.float32
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    tmp = path.with_name(f".{path.name}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        _write_general(writer, meta, sum(a.size + b.size for a, b, _ in pairs.values()), "adapter")
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_file_type(GGUF_TYPES[quant].ftype)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for name, (a, b, module) in pairs.items():
            factor = lora_scale(acfg, module, a.shape[0]) / (alpha / a.shape[0])
            b = b * factor if abs(factor - 1) > 1e-6 else b
            kind = name.split(".")[-2]
            if kind in heads:  # the base's q/k rows are permuted for llama.cpp's RoPE: B's rows are those rows
                b = permute_qk(b, heads[kind])
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=dtype))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(pairs)


def check_lora(adapter: Path, weights: Path, base_folder: Path) -> None:
    """Raise GGUFError naming everything that keeps `adapter` from being a LoRA GGUF over `base_folder` (before an
    export writes anything)."""
    _lora_plan(adapter, weights, base_folder)


def _lora_plan(adapter: Path, weights: Path, base_folder: Path) -> tuple[dict, dict, dict[str, tuple[Any, Any, str]]]:
    """(base config, adapter config, {gguf weight name: (A, B, module)}), every problem raised together."""
    config = _gguf_config(base_folder)
    acfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    shapes = {hf_name: shape for _, hf_name, shape in _tensor_shapes(base_folder)}
    return config, acfg, _lora_pairs(adapter, _lora_state(weights), config, acfg, shapes)


def lora_alpha(acfg: dict[str, Any]) -> float:
    """adapter.lora.alpha for llama.cpp, which scales by alpha / r: lora_alpha, or lora_alpha * sqrt(r) for rsLoRA
    (PEFT's alpha / sqrt(r) = (alpha * sqrt(r)) / r)."""
    alpha = float(acfg.get("lora_alpha") or acfg["r"])
    return alpha * math.sqrt(acfg["r"]) if acfg.get("use_rslora") else alpha


def lora_scale(acfg: dict[str, Any], module: str, rank: int) -> float:
    """PEFT's scale for one adapted module (rank_pattern / alpha_pattern matched as PEFT matches them)."""
    alpha = float(acfg.get("lora_alpha") or acfg["r"])
    for pattern, value in (acfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = float(value)
            break
    return alpha / math.sqrt(rank) if acfg.get("use_rslora") else alpha / rank


def lora_problems(acfg: dict[str, Any]) -> list[str]:
    """What in an adapter_config.json llama.cpp cannot apply as a LoRA; empty when it can."""
    problems = []
    if acfg.get("peft_type", "LORA") != "LORA":
        problems.append(f"it is a {acfg.get('peft_type')} adapter, not LoRA")
    if acfg.get("use_dora"):
        problems.append("it is DoRA (llama.cpp applies plain LoRA only; merge it and export the merged model)")
    if acfg.get("modules_to_save"):
        saved = ", ".join(acfg["modules_to_save"])
        problems.append(f"it saves whole modules ({saved}), which a LoRA GGUF cannot carry")
    if acfg.get("bias", "none") != "none":
        problems.append(f"it trains biases (bias={acfg['bias']!r})")
    if acfg.get("trainable_token_indices"):
        problems.append("it trains token embeddings (trainable_token_indices)")
    return problems


def _lora_state(weights: Path) -> dict[str, Any]:
    """The adapter's tensors as float32 numpy arrays (safetensors, or a .bin app.adapters found plain)."""
    import torch

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights), device="cpu")
    else:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}


def _lora_pairs(
    adapter: Path, state: dict[str, Any], config: dict, acfg: dict, shapes: dict[str, list[int]]
) -> dict[str, tuple[Any, Any, str]]:
    """{gguf weight name: (A, B, module name)}; GGUFError listing every tensor llama.cpp cannot apply or that does
    not fit the base's weight of that name (`shapes`: the base's tensor shapes by Hugging Face name)."""
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    problems = lora_problems(acfg)
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        module, part = _lora_key(key)
        if part == "embedding":
            problems.append(f"{module} is an embedding: it has no LoRA-able llama.cpp tensor (target the projections)")
            continue
        if part is None:
            problems.append(f"tensor {key} is not a LoRA A/B weight (whole weights cannot go in a LoRA GGUF)")
            continue
        if module.endswith("lm_head") and config.get("tie_word_embeddings"):
            problems.append(f"{module} is adapted, but this base ties it to the token embeddings (no own tensor)")
            continue
        name = tmap.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None or "token_embd" in name:
            problems.append(f"{module} has no LoRA-able llama.cpp tensor")
            continue
        base_shape = shapes.get(module + ".weight")
        if base_shape is None:
            problems.append(f"{key}: the base has no {module}.weight (was the adapter trained on another base?)")
            continue
        if base_shape[1 if part == "A" else 0] != value.shape[1 if part == "A" else 0]:
            problems.append(f"{key} has shape {list(value.shape)} but the base's {module}.weight is {base_shape} "
                            "(was the adapter trained on another base model?)")  # fmt: skip
            continue
        pairs.setdefault(name, {"module": module})[part] = value
    if problems:
        said = "; ".join(dict.fromkeys(problems))  # once each (an embedding has an A and a B)
        raise GGUFError(f"{adapter}: cannot be written as a LoRA GGUF for llama.cpp: {said}")
    return {name: (p["A"], p["B"], p["module"]) for name, p in pairs.items()}


def _lora_key(key: str) -> tuple[str, str | None]:
    """(module, "A" | "B" | "embedding" | None) of a PEFT tensor name.

    >>> _lora_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    ('model.layers.0.self_attn.q_proj', 'A')
    """
    key = key.removeprefix("base_model.model.")
    for part in ("A", "B"):
        suffix = f".lora_{part}.weight"
        if key.endswith(suffix):
            return key.removesuffix(suffix), part
        if key.endswith(f".lora_embedding_{part}"):
            return key.removesuffix(f".lora_embedding_{part}"), "embedding"
    if key.endswith(".base_layer.weight"):  # PEFT saves the embedding it adapts too
        return key.removesuffix(".base_layer.weight"), "embedding"
    return key, None


# ---- Ollama -------------------------------------------------------------------------------------------------
CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
# ChatML for a model whose template writes a system block when a conversation has none (SmolLM2, Qwen): the same
# block here, empty unless the Modelfile's SYSTEM (the run's system prompt) gives one, as training rendered it.
CHATML_SYSTEM_TEMPLATE = (
    """{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}<|im_start|>system
<|im_end|>
{{ end }}"""
    + CHATML_TEMPLATE
)
LLAMA3_TEMPLATE = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""


def ollama_template(chat_template: str | None) -> tuple[str | None, list[str], str | None]:
    """(Go TEMPLATE, stop strings, default SYSTEM) for a Jinja chat template; TEMPLATE None when not recognised.

    >>> ollama_template("{{'<|im_start|>' + m['role'] + '<|im_end|>'}}")[1]
    ['<|im_start|>', '<|im_end|>']
    """
    if not chat_template:
        return None, [], None
    if "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        system = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", chat_template, re.DOTALL)
        default = _literal(system.group(1)) if system and not re.search(r"[{}]|message", system.group(1)) else None
        if default is None:
            return CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"], None
        return CHATML_SYSTEM_TEMPLATE, ["<|im_start|>", "<|im_end|>"], default.strip()
    if "<|start_header_id|>" in chat_template:
        return LLAMA3_TEMPLATE, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], None
    return None, [], None


def _literal(text: str) -> str:
    """Text from inside a Jinja string literal, its backslash escapes undone (a system prompt with quotes)."""
    return re.sub(r"\\(.)", r"\1", text) if "\\" in text else text


def ollama_safe(text: str) -> str:
    """A model name Ollama accepts, from a run name: lower case, letters, digits, '.', '_', '-'.

    >>> ollama_safe("20260101-120000 LoRA/checkpoint-40")
    '20260101-120000-lora-checkpoint-40'
    """
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return name[:80].rstrip("-._") or "my-model"


def write_modelfile(
    gguf_path: str | Path,
    chat_template: str | None,
    out_dir: str | Path,
    *,
    system: str = "",
    chat: ChatConfig | None = None,
    name: str = "my-model",
    adapter: str | Path | None = None,
) -> Path:
    """An Ollama Modelfile beside the GGUF: `ollama create NAME -f Modelfile` in that folder.

    `system` is the run's own system prompt (SYSTEM; none when empty, never the base template's built-in default);
    `chat` gives the sampling PARAMETERs (ChatConfig's defaults when None); `adapter` adds an ADAPTER line for a
    LoRA GGUF over the FROM model; `name` is the suggested model name in the first comment line.
    """
    gguf_path, out = Path(gguf_path), Path(out_dir)
    # a template with a built-in system block (SmolLM2's) comes back as CHATML_SYSTEM_TEMPLATE: the block stays
    # empty unless SYSTEM gives the run's prompt; its built-in default (third value) is never used
    template, stops, _default = ollama_template(chat_template)
    lines = [f"# Ollama: cd {out} && ollama create {name} -f Modelfile && ollama run {name}"]
    lines.append(f"FROM ./{gguf_path.name}")
    if adapter is not None:
        lines.append(f"ADAPTER ./{Path(adapter).name}")
    lines.append("")
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    else:
        lines.append(
            "# The chat template is not ChatML or Llama 3: Ollama reads tokenizer.chat_template from the GGUF"
        )
        lines.append(
            "# when it knows it; otherwise add a TEMPLATE (https://github.com/ollama/ollama/blob/main/docs/template.md)"
        )
    if system:
        lines.append(f'SYSTEM """{system.replace(chr(34) * 3, chr(34))}"""')
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER {key} {value}" for key, value in ollama_parameters(chat or ChatConfig())]
    path = out / "Modelfile"
    tmp = out / ".Modelfile.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def ollama_parameters(chat: ChatConfig) -> list[tuple[str, Any]]:
    """Ollama's PARAMETER names for a ChatConfig's generation settings (temperature 0 = greedy in both)."""
    return [
        ("temperature", chat.temperature),
        ("top_p", chat.top_p),
        ("top_k", chat.top_k),
        ("repeat_penalty", chat.repetition_penalty),
        ("num_predict", chat.max_new_tokens),
    ]
