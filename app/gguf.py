"""The GGUF writer: a merged or full Llama-family model folder as one .gguf file for llama.cpp, and an Ollama
Modelfile beside it.

    path = gguf.write(folder, out / gguf.file_name("q8_0"), "q8_0", name="my-run")
    gguf.write_modelfile(path, chat_template, out)

Written with the `gguf` package (no llama.cpp checkout needed) for SUPPORTED_GGUF_ARCHITECTURES only, with a
byte-level BPE tokenizer (tokenizer.json), plain or linear RoPE and no biases; anything else raises GGUFError
pointing to llama.cpp's convert_hf_to_gguf.py. Tensors go through one at a time (header first, then each tensor
converted and written), so memory holds one tensor, not the model. Merging and choosing output folders are
app.export's; this module only turns a folder of safetensors into GGUF.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from app.commands import GGUF_QUANTS

SUPPORTED_GGUF_ARCHITECTURES: tuple[str, ...] = ("LlamaForCausalLM", "MistralForCausalLM")

Progress = Callable[[float, str], None]


class GGUFError(RuntimeError):
    """A folder cannot be written as GGUF here; the message names it and says what to use instead."""


def file_name(quant: str) -> str:
    """The .gguf file name for a tensor type: model-q8_0.gguf."""
    return f"model-{quant}.gguf"


def write(
    folder: Path,
    path: Path,
    quant: str,
    progress: Progress | None = None,
    *,
    name: str | None = None,
    sources: Iterable[dict] = (),
) -> str | None:
    """Write `folder` (config.json, tokenizer.json, *.safetensors) as the GGUF file `path`; returns the tokenizer's
    chat template (for the Modelfile).

    `name` is the model's general.name (default: the folder's name); `sources` are the records of where the folder
    came from (conversion and merge records), searched for the original GGUF's pre-tokenizer name. The file is
    written beside `path` and renamed when complete. Progress goes to `progress` per tensor, else to a tqdm bar.
    """
    if quant not in GGUF_QUANTS:
        raise GGUFError(f"quant {quant!r} is not one of {', '.join(GGUF_QUANTS)}")
    config = _gguf_config(folder)
    tokenizer = _gguf_tokenizer(folder, config)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_gguf(folder, tmp, config, tokenizer, quant, progress, name or folder.name, list(sources))
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
    splitting is "gpt2", and anything else "default".
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
        return "gpt2"  # GPT-2's own regex
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
    name: str,
    sources: list[dict],
) -> None:
    """Two passes: tensor shapes and types into the header, then each tensor converted and written in turn,
    so memory holds one tensor at a time rather than the whole model (a 7B fp16 model would be 14 GB)."""
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _write_metadata(writer, name, config, quant)
    _write_vocab(writer, folder, config, tokenizer, pre_tokenizer_name(folder, sources))
    plan = list(_tensor_plan(folder, config, quant))
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


def _write_metadata(writer: Any, name: str, config: dict, quant: str) -> None:
    import gguf

    heads, kv_heads, hidden = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = _rope(config)
    writer.add_name(name)
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
    ftype = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_file_type(ftype[quant])
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
            types.append(gguf.TokenType.USER_DEFINED)
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


def write_modelfile(gguf_path: str | Path, chat_template: str | None, out_dir: str | Path) -> Path:
    """An Ollama Modelfile beside the GGUF: `ollama create NAME -f Modelfile` in that folder."""
    gguf_path, out = Path(gguf_path), Path(out_dir)
    template, stops, system = ollama_template(chat_template)
    lines = [f"# Ollama: cd {out} && ollama create my-model -f Modelfile", f"FROM ./{gguf_path.name}", ""]
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
    path = out / "Modelfile"
    tmp = out / ".Modelfile.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
