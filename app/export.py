"""Merge an adapter into its base and save a complete Hugging Face folder; export a model to GGUF for llama.cpp
and Ollama.

    python -m app merge runs/X/adapter --out exports/X --dtype float16
    python -m app export gguf exports/X --out exports/X-gguf --quant q8_0

Merge loads the base WITHOUT quantization (a QLoRA adapter is merged into the 16/32-bit base, not into its 4-bit
weights), adds W += B @ A * scale in every adapted layer (PEFT merge_and_unload; 16-bit layers are merged in fp32
on the CPU), and writes safetensors shards, config, generation config, tokenizer with its chat template and a
model card. Everything is written to a temporary folder and renamed when complete. Merge runs on the CPU: it
never competes with a training run for the GPU.

GGUF export is written here with the `gguf` package (no llama.cpp checkout needed) for Llama-family models only:
SUPPORTED_GGUF_ARCHITECTURES, with a byte-level BPE tokenizer (tokenizer.json), plain or linear RoPE and no
biases. Other architectures are refused with a message pointing to llama.cpp's convert_hf_to_gguf.py.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.chat import (
    ChatError,
    adapter_tokenizer,
    check_adapter_files,
    check_adapter_fits,
    column_name,
    infer_base,
    read_adapter_config,
    resolve_source,
    run_dir_of,
)
from app.config import ModelConfig

SUPPORTED_GGUF_ARCHITECTURES: tuple[str, ...] = ("LlamaForCausalLM", "MistralForCausalLM")
GGUF_QUANTS: tuple[str, ...] = ("f16", "q8_0", "f32")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
MERGE_INFO = "tunedesk_merge.json"
EXPORT_MARKER = "tunedesk_export.json"
"""Written into every folder merge and GGUF export write: Overwrite replaces only a folder that carries it (or a
merge record from before it existed), so a folder of the user's own is never emptied by mistake."""
MAX_SHARD = "2GB"

Progress = Callable[[float, str], None]


class ExportError(RuntimeError):
    """A merge or export cannot be done; the message names the folder and says what to do."""


def _say(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)
    else:
        print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)


# ---- merge ---------------------------------------------------------------------------------------------------
def merge(
    adapter_dir: str | Path,
    out_dir: str | Path,
    dtype: str = "float32",
    base: str | None = None,
    progress: Progress | None = None,
    *,
    allow_pickle: bool = False,
    overwrite: bool = False,
) -> Path:
    """Merge a LoRA adapter (adapter folder, checkpoint-N or run folder) into its base; returns out_dir."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    adapter = _adapter_folder(adapter_dir)
    out = check_out_dir(Path(out_dir), overwrite)
    try:
        check_adapter_files(adapter, allow_pickle)
        base_name = base or infer_base(adapter)
    except ChatError as exc:
        raise ExportError(str(exc)) from None
    _say(progress, 0.05, f"loading base {base_name} ({dtype}, unquantized, CPU)")
    loaded = _load_base(base_name, dtype, allow_pickle)
    _say(progress, 0.4, f"merging {adapter}")
    merged = _merge_into(loaded.model, adapter, base_name, allow_pickle)
    tokenizer = adapter_tokenizer(adapter, loaded.tokenizer)
    _say(progress, 0.6, f"saving to {out}")
    info = {"base": loaded.path, "base_name": base_name, "adapter": str(adapter.resolve()), "dtype": dtype}
    with _staging(out, overwrite) as tmp:
        mark_export(tmp, "merge")
        merged.save_pretrained(tmp, max_shard_size=MAX_SHARD)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(adapter, base_name, dtype), encoding="utf-8")
        (tmp / MERGE_INFO).write_text(json.dumps(info | {"merged": time.time()}, indent=2), encoding="utf-8")
    _say(progress, 1.0, f"merged model saved in {out}")
    return out


def _adapter_folder(path: str | Path) -> Path:
    try:
        kind, folder = resolve_source(path)
    except ChatError as exc:
        raise ExportError(str(exc)) from None
    if kind != "adapter":
        raise ExportError(
            f"{folder} is a full model folder (a full/freeze run saves the whole model): there is no adapter to "
            "merge. Use it as it is, or export it: python -m app export gguf " + str(folder)
        )
    return folder


# ---- output folders: only TuneDesk's own are replaced ---------------------------------------------------------
def mark_export(folder: Path, kind: str) -> None:
    """Mark `folder` as written by TuneDesk's `kind` (merge | gguf) export; an existing mark is kept."""
    marker = folder / EXPORT_MARKER
    if not marker.is_file():
        record = {"written_by": "TuneDesk", "kind": kind, "time": time.time()}
        marker.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def is_export(folder: Path) -> bool:
    """A folder TuneDesk's merge or GGUF export wrote: it carries the marker (or a merge record, written before
    the marker was)."""
    return (folder / EXPORT_MARKER).is_file() or (folder / MERGE_INFO).is_file()


def check_out_dir(out: Path, overwrite: bool = False, kind: str = "merge") -> Path:
    """`out`, when an export may write there: new, empty, or a TuneDesk export (merge: only with `overwrite`).

    A non-empty folder without the marker is refused whatever `overwrite` says, and left untouched."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} is a file; choose a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not is_export(out):
        raise ExportError(
            f"output folder {out} is not empty and was not written by a TuneDesk export (it has no "
            f"{EXPORT_MARKER}), so TuneDesk will not replace or add to it: its files are untouched. "
            "Choose an empty or new folder."
        )
    if kind == "merge" and not overwrite:
        raise ExportError(
            f"output folder {out} is not empty (it holds an earlier TuneDesk export); choose another folder or allow "
            "overwriting (--overwrite, or Overwrite in the Export tab)"
        )
    return out


def _load_base(name: str, dtype: str, allow_pickle: bool) -> Any:
    from app.config import QuantConfig
    from app.modeling import ModelError, load_model

    precision = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    try:  # QuantConfig() = no bitsandbytes: QLoRA adapters are merged into the dequantized base
        return load_model(ModelConfig(name_or_path=name, allow_pickle=allow_pickle), QuantConfig(), "cpu", precision)
    except ModelError as exc:
        raise ExportError(f"base model of the merge: {exc}") from None


def _merge_into(model: Any, adapter: Path, base_name: str, allow_pickle: bool) -> Any:
    from peft import PeftModel

    try:
        check_adapter_fits(adapter, model, base_name, allow_pickle)
        peft_model = PeftModel.from_pretrained(model, str(adapter))
        # safe_merge checks every merged weight for NaN/inf before replacing it
        merged = peft_model.merge_and_unload(safe_merge=True)
    except ChatError as exc:
        raise ExportError(str(exc)) from None
    except ValueError as exc:  # PEFT reports NaN weights and unloadable adapters as ValueError
        raise ExportError(f"merging {adapter} into {base_name} failed: {exc}") from None
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    return merged


@contextmanager
def _staging(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """`with _staging(out) as tmp:` write into tmp beside out; it replaces out only when the block completes, and
    only when out may still be replaced (checked again: the merge took minutes, and the folder may have changed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        check_out_dir(out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{int(time.time())}")
    if out.exists():
        out.replace(old)
    tmp.replace(out)
    shutil.rmtree(old, ignore_errors=True)


# ---- the model card ------------------------------------------------------------------------------------------
def read_run(adapter_dir: Path) -> dict[str, Any]:
    """What a run folder says about an adapter: config (YAML text and dict), steps, last losses; {} when absent.

    Events superseded by a resume are dropped (app.runs.effective_events); a checkpoint's card stops at its step.
    """
    from app import runs

    run = run_dir_of(adapter_dir)
    if run is None:
        return {}
    info: dict[str, Any] = {"run_dir": str(run)}
    if (run / runs.CONFIG).is_file():
        import yaml

        info["config_yaml"] = (run / runs.CONFIG).read_text(encoding="utf-8")
        try:
            info["config"] = yaml.safe_load(info["config_yaml"]) or {}
        except yaml.YAMLError:
            info["config"] = {}
    limit = _checkpoint_step(adapter_dir)
    for event in runs.effective_events(runs.load_events(run)):
        step = event.get("step")
        if limit is None or not isinstance(step, int) or step <= limit:
            _take_event(info, event)
    return info


def _checkpoint_step(adapter_dir: Path) -> int | None:
    m = re.fullmatch(r"checkpoint-(\d+)", adapter_dir.name)
    return int(m.group(1)) if m else None


def _take_event(info: dict[str, Any], event: dict) -> None:
    kind = event.get("type")
    if kind == "log" and event.get("loss") is not None:
        info["train_loss"] = event["loss"]
        info["steps"] = event.get("step", info.get("steps"))
    elif kind == "eval" and event.get("eval_loss") is not None:
        info["eval_loss"] = event["eval_loss"]
    elif kind in ("finished", "stopped", "failed"):
        info["status"] = kind
        if isinstance(event.get("step"), int) and event["step"] > 0:
            info["steps"] = event["step"]


def _hub_id(base_name: str) -> str | None:
    """A hub id for the card's base_model field: the default model's, or a name that looks like owner/model."""
    from app.modeling import DEFAULT_ALIASES, default_model_dir

    if base_name in DEFAULT_ALIASES or Path(base_name).expanduser() == default_model_dir():
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    parts = base_name.split("/")
    return base_name if len(parts) == 2 and all(parts) and not Path(base_name).exists() else None


def model_card(adapter_dir: Path, base_name: str, dtype: str) -> str:
    """README.md for a merged folder: base, method, data, steps, final losses and the exact run config."""
    acfg = read_adapter_config(adapter_dir)
    run = read_run(adapter_dir)
    cfg = run.get("config") or {}
    method = cfg.get("method") or ("dora" if acfg.get("use_dora") else "lora")
    targets = acfg.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
    facts = [
        ("Base model", f"`{base_name}`"),
        ("Method", f"{method} (r={acfg.get('r')}, alpha={acfg.get('lora_alpha')}, targets: {targets})"),
        ("Data", f"`{(cfg.get('data') or {}).get('path', 'unknown (not trained by TuneDesk)')}`"),
        ("Steps", run.get("steps", "unknown")),
        ("Final train loss", _num(run.get("train_loss"))),
        ("Final eval loss", _num(run.get("eval_loss"))),
        ("Adapter", f"`{adapter_dir}`"),
    ]
    hub = _hub_id(base_name)
    lines = ["---", *([f"base_model: {hub}"] if hub else []), "library_name: transformers"]
    lines += [f"tags: [tunedesk, {method}, merged]", "---", "", f"# {column_name(adapter_dir)} (merged)", ""]
    lines += [f"A LoRA adapter merged into its base model with TuneDesk (`python -m app merge`), saved in {dtype}."]
    lines += ["", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in facts]]
    if method == "qlora":
        lines += ["", "Trained as QLoRA on 4-bit base weights, merged into the unquantized base."]
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    lines += ['model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")']
    lines += ['tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```"]
    if run.get("config_yaml"):
        lines += ["", "## Training config (exact)", "", "```yaml", run["config_yaml"].rstrip(), "```"]
    else:
        lines += ["", "## Adapter config", "", "```json", json.dumps(acfg, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "unknown"


# ---- GGUF ----------------------------------------------------------------------------------------------------
def export_gguf(
    src: str | Path,
    out_dir: str | Path,
    quant: str = "f16",
    progress: Progress | None = None,
    *,
    base: str | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Write `model-<quant>.gguf` and an Ollama Modelfile into out_dir; returns the .gguf path.

    `src` is a merged/full model folder, or an adapter (then merged first, in float32, into a temporary folder).
    out_dir must be new, empty or a TuneDesk export (check_out_dir); its files of the same name are replaced.
    """
    if quant not in GGUF_QUANTS:
        raise ExportError(f"quant {quant!r} is not one of {', '.join(GGUF_QUANTS)}")
    try:
        kind, folder = resolve_source(src)
    except ChatError as exc:
        raise ExportError(str(exc)) from None
    out = check_out_dir(Path(out_dir), kind="gguf")
    out.mkdir(parents=True, exist_ok=True)
    mark_export(out, "gguf")
    if kind == "model":
        return _export_folder(folder, out, quant, progress)
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out) as tmp:
        sub = (lambda f, m: _say(progress, 0.4 * f, m)) if progress else None
        merged = merge(folder, Path(tmp) / "merged", "float32", base, sub, allow_pickle=allow_pickle)
        return _export_folder(merged, out, quant, progress)


def _export_folder(folder: Path, out: Path, quant: str, progress: Progress | None) -> Path:
    config = _gguf_config(folder)
    tokenizer = _gguf_tokenizer(folder, config)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"model-{quant}.gguf"
    tmp = out / f".{path.name}.tmp"
    _say(progress, 0.45, f"writing {path.name} ({quant}) from {folder}")
    try:
        _write_gguf(folder, tmp, config, tokenizer, quant, progress)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    write_modelfile(path, tokenizer.chat_template, out)
    _say(progress, 1.0, f"wrote {path} and {out / 'Modelfile'}")
    return path


def _gguf_config(folder: Path) -> dict[str, Any]:
    """config.json, checked for what this writer handles; every problem is reported at once."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["unknown"])[0]
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ExportError(
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
        raise ExportError(
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
        raise ExportError(
            f"{folder}: the tokenizer is not a byte-level BPE tokenizer.json (found {model_type or 'none'}); this "
            "exporter writes GPT-2 style BPE vocabularies only. Use llama.cpp's convert_hf_to_gguf.py."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if len(tokenizer) > config["vocab_size"]:
        raise ExportError(f"{folder}: tokenizer has {len(tokenizer)} tokens but the model only {config['vocab_size']}")
    return tokenizer


def _byte_level(tok_json: Path) -> bool:
    return '"ByteLevel"' in tok_json.read_text(encoding="utf-8").replace(" ", "")


def pre_tokenizer_name(folder: Path) -> str:
    """llama.cpp's name for the text splitting before BPE (tokenizer.ggml.pre).

    A model converted from GGUF (the default model) keeps the name its original GGUF had, found through the merge
    and conversion records; otherwise plain byte-level splitting is "gpt2", and anything else "default".
    """
    for record in _provenance(folder):
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


def _provenance(folder: Path) -> Iterator[dict]:
    """The conversion record of a folder, then of the base it was merged from."""
    from app.modeling import SOURCE_FILE

    for path in (folder / SOURCE_FILE, folder / MERGE_INFO):
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            yield record
            if record.get("base"):
                yield from _provenance(Path(record["base"]))


def _write_gguf(folder: Path, path: Path, config: dict, tokenizer: Any, quant: str, progress: Progress | None) -> None:
    """Two passes: tensor shapes and types into the header, then each tensor converted and written in turn,
    so memory holds one tensor at a time rather than the whole model (a 7B fp16 model would be 14 GB)."""
    import gguf

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _write_metadata(writer, folder, config, quant)
    _write_vocab(writer, folder, config, tokenizer)
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


def _write_metadata(writer: Any, folder: Path, config: dict, quant: str) -> None:
    import gguf

    heads, kv_heads, hidden = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // heads
    rope = _rope(config)
    writer.add_name(_model_name(folder))
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


def _model_name(folder: Path) -> str:
    """The run or adapter name for a merged folder (its merge record says which adapter), else the folder name."""
    record = folder / MERGE_INFO
    if record.is_file():
        adapter = json.loads(record.read_text(encoding="utf-8")).get("adapter")
        if adapter:
            return column_name(Path(adapter))
    return folder.name


def _write_vocab(writer: Any, folder: Path, config: dict, tokenizer: Any) -> None:
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
    writer.add_tokenizer_pre(pre_tokenizer_name(folder))
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
            raise ExportError(f"{folder}: tensor {hf_name} has no GGUF name for the llama architecture")
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
        raise ExportError(f"{folder}: no .safetensors weights to export")
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
        system = re.search(r"<\|im_start\|>system\s*\n(.+?)<\|im_end\|>", chat_template, re.DOTALL)
        default = system.group(1).strip() if system and not re.search(r"[{}]|message", system.group(1)) else None
        return CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"], default
    if "<|start_header_id|>" in chat_template:
        return LLAMA3_TEMPLATE, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], None
    return None, [], None


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


# ---- CLI: python -m app merge | export ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, name: str = "merge") -> None:
    if name == "merge":
        parser.add_argument("adapter", help="adapter folder, checkpoint-N folder or run folder")
        parser.add_argument("--out", required=True, help="folder for the merged model (must be empty or new)")
        parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype of the merged model")
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an output folder an earlier TuneDesk export wrote"
        )
    else:
        parser.add_argument("format", choices=["gguf"], help="export format")
        parser.add_argument("src", help="merged or full model folder, or an adapter (merged first)")
        parser.add_argument(
            "--out", required=True, help="folder for model-<quant>.gguf and the Modelfile (new, empty or an export)"
        )
        parser.add_argument("--quant", default="f16", choices=GGUF_QUANTS, help="tensor type of the weights")
    parser.add_argument("--base", help="base model (default: the one named in adapter_config.json)")
    parser.add_argument("--allow-pickle", action="store_true", help="allow an adapter_model.bin (pickle) adapter")


def main(args: argparse.Namespace) -> int:
    try:
        if args.command == "merge":
            out = merge(args.adapter, args.out, args.dtype, args.base, allow_pickle=args.allow_pickle,
                        overwrite=args.overwrite)  # fmt: skip
        else:
            out = export_gguf(args.src, args.out, args.quant, base=args.base, allow_pickle=args.allow_pickle)
    except (ExportError, ChatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
