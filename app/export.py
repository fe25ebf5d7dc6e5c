"""Merge an adapter into its base and save a complete Hugging Face folder; export a model to GGUF for llama.cpp
and Ollama.

    python -m app merge runs/X/adapter --out exports/X --dtype float16
    python -m app export gguf exports/X --out exports/X-gguf --quant q8_0

Defaults (dtype, quant, overwrite) are MergeConfig's and ExportConfig's (app.commands), the CLI's and the Export
tab's alike.

Merge loads the base WITHOUT quantization (a QLoRA adapter is merged into the 16/32-bit base, not into its 4-bit
weights), adds W += B @ A * scale in every adapted layer (PEFT merge_and_unload; 16-bit layers are merged in fp32
on the CPU), and writes safetensors shards, config, generation config, tokenizer with its chat template and a
model card. Everything is written to a temporary folder and renamed when complete. Merge runs on the CPU: it
never competes with a training run for the GPU.

GGUF export checks the output folder, merges an adapter first when given one, and hands the folder to the GGUF
writer (app.gguf: Llama-family models only, others refused with a pointer to llama.cpp's convert_hf_to_gguf.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import commands, gguf, methods
from app.adapters import (
    AdapterError,
    adapter_tokenizer,
    base_of,
    check_adapter_files,
    check_adapter_fits,
    describe,
    display_name,
    infer_base,
    read_adapter_config,
    resolve_source,
    run_dir_of,
    system_prompt_of,
)
from app.commands import DTYPES, ChatConfig, ExportConfig, MergeConfig
from app.config import ConfigError, ModelConfig

MERGE_INFO = "tunedesk_merge.json"
EXPORT_MARKER = "tunedesk_export.json"
"""Written into every folder merge and GGUF export write: Overwrite replaces only a folder that carries it (or a
merge record from before it existed), so a folder of the user's own is never emptied by mistake."""
MAX_SHARD = "2GB"
GGUF_MERGE_DTYPE = "float32"
"""An adapter given to GGUF export is merged in float32 first: the writer then rounds each weight once, to the
chosen quant, not twice (float16 merge, then q8_0)."""

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
    dtype: str = MergeConfig.dtype,
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
    except AdapterError as exc:
        raise ExportError(str(exc)) from None
    _say(progress, 0.05, f"loading base {base_name} ({dtype}, unquantized, CPU)")
    loaded = _load_base(base_name, dtype, allow_pickle)
    _say(progress, 0.4, f"merging {adapter}")
    merged = _merge_into(loaded.model, adapter, base_name, allow_pickle)
    tokenizer = adapter_tokenizer(adapter, loaded.tokenizer)
    _answer_as_trained(tokenizer, adapter)
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


def _answer_as_trained(tokenizer: Any, adapter: Path) -> None:
    """The merged model's chat template uses the run's system prompt where the base's had its own default
    (SmolLM2's "You are a helpful AI assistant named SmolLM..."), so transformers, llama.cpp (the GGUF keeps
    this template) and Ollama (the Modelfile is derived from it) prompt the model as training did."""
    from app.data_render import template_with_system

    template = template_with_system(tokenizer, system_prompt_of(adapter))
    if template is not None:
        tokenizer.chat_template = template


def _adapter_folder(path: str | Path) -> Path:
    try:
        kind, folder = resolve_source(path)
    except AdapterError as exc:
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
    except AdapterError as exc:
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

    The facts are app.history's (events a resume redid are left out); a checkpoint's card stops at its step.
    """
    from app import history, runs

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
    found = history.read(run)
    limit = history.checkpoint_step(adapter_dir)
    info.update(_run_facts(found if limit is None else found.until(limit)))
    return info


def _run_facts(found: Any) -> dict[str, Any]:
    """The card's numbers from a history.RunHistory: the last losses, the steps reached and how it ended."""
    logged = [p for p in found.logs if p.loss is not None]
    ended = [e for e in found.endings if not e.superseded]
    facts: dict[str, Any] = {}
    if logged:
        facts["train_loss"] = logged[-1].loss
    if found.evals:
        facts["eval_loss"] = found.evals[-1].eval_loss
    if ended:
        facts["status"] = ended[-1].kind
    steps = [p.step for p in logged[-1:]] + [e.step for e in ended if isinstance(e.step, int) and e.step > 0]
    if steps:
        facts["steps"] = max(steps)  # the stream's steps only grow once a resume's redone ones are dropped
    return facts


def hub_id(base_name: str) -> str | None:
    """A hub id for the card's base_model field: the default model's, or a name that looks like owner/model."""
    from app.modeling import DEFAULT_ALIASES, default_model_dir

    if base_name in DEFAULT_ALIASES or _same_folder(Path(base_name).expanduser(), default_model_dir()):
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
    parts = base_name.split("/")
    return base_name if len(parts) == 2 and all(parts) and not Path(base_name).exists() else None


def _same_folder(a: Path, b: Path) -> bool:
    """The same folder, also through a symlinked model cache (PEFT records the resolved path)."""
    try:
        return a == b or a.resolve() == b.resolve()
    except OSError:
        return False


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
        ("Final train loss", loss_text(run.get("train_loss"))),
        ("Final eval loss", loss_text(run.get("eval_loss"))),
        ("Adapter", f"`{adapter_dir}`"),
    ]
    hub = hub_id(base_name)
    lines = ["---", *([f"base_model: {hub}"] if hub else []), "library_name: transformers"]
    lines += [f"tags: [tunedesk, {method}, merged]", "---", "", f"# {display_name(adapter_dir)} (merged)", ""]
    lines += [f"A LoRA adapter merged into its base model with TuneDesk (`python -m app merge`), saved in {dtype}."]
    lines += ["", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in facts]]
    if method in methods.TABLE and methods.TABLE[method].quantized:
        lines += ["", "Trained as QLoRA on 4-bit base weights, merged into the unquantized base."]
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    lines += ['model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")']
    lines += ['tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```"]
    if run.get("config_yaml"):
        lines += ["", "## Training config (exact)", "", "```yaml", run["config_yaml"].rstrip(), "```"]
    else:
        lines += ["", "## Adapter config", "", "```json", json.dumps(acfg, indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def loss_text(value: Any) -> str:
    """A loss for a model card: 4 places, "unknown" when the run did not say (None, or not a number)."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "unknown"


# ---- GGUF ----------------------------------------------------------------------------------------------------
def export_gguf(
    src: str | Path,
    out_dir: str | Path,
    quant: str = ExportConfig.quant,
    progress: Progress | None = None,
    *,
    base: str | None = None,
    allow_pickle: bool = False,
    keep_f16: bool = ExportConfig.keep_f16,
    chat: ChatConfig | None = None,
) -> Path:
    """Write `model-<quant>.gguf` and an Ollama Modelfile into out_dir; returns the .gguf path. The Modelfile's
    sampling PARAMETERs are `chat`'s (the Chat tab's settings; ChatConfig's defaults when None).

    `src` is a merged/full model folder, or an adapter (then merged first, in float32, into a temporary folder).
    f16 / q8_0 / f32 are written by app.gguf; the K-quants and legacy quants (GGUF_TYPES[quant].writer
    "llama.cpp") are quantized by llama.cpp from an F16 file written first, kept as model-f16.gguf only with
    `keep_f16`. Without llama.cpp's bindings such a quant is refused before anything is written.
    out_dir must be new, empty or a TuneDesk export (check_out_dir); its files of the same name are replaced.
    """
    if quant not in commands.GGUF_QUANTS:
        raise ExportError(f"quant {quant!r} is not one of {', '.join(commands.GGUF_QUANTS)}")
    _require_llamacpp(quant)
    try:
        kind, folder = resolve_source(src)
    except AdapterError as exc:
        raise ExportError(str(exc)) from None
    out = check_out_dir(Path(out_dir), kind="gguf")
    if kind == "model":
        _check_gguf(folder)  # refused before the output folder is made
    out.mkdir(parents=True, exist_ok=True)
    mark_export(out, "gguf")
    if kind == "model":
        return _export_folder(folder, out, quant, progress, keep_f16, chat)
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out) as tmp:
        sub = (lambda f, m: _say(progress, 0.4 * f, m)) if progress else None
        merged = merge(folder, Path(tmp) / "merged", GGUF_MERGE_DTYPE, base, sub, allow_pickle=allow_pickle)
        return _export_folder(merged, out, quant, progress, keep_f16, chat)


def _require_llamacpp(quant: str) -> None:
    """ExportError saying what to install when `quant` needs llama.cpp's quantizer and its bindings are missing."""
    from app import llamacpp

    if gguf.GGUF_TYPES[quant].writer == "llama.cpp" and not llamacpp.available():
        raise ExportError(f"{quant} is made by llama.cpp's quantizer: {llamacpp.missing_message()}")


def _check_gguf(folder: Path) -> None:
    try:
        gguf.check(folder)
    except gguf.GGUFError as exc:
        raise ExportError(str(exc)) from None


def _export_folder(
    folder: Path, out: Path, quant: str, progress: Progress | None, keep_f16: bool, chat: ChatConfig | None = None
) -> Path:
    path, template = _write_model(folder, out, quant, progress, keep_f16, _meta(folder), "model")
    origin = _origin(folder)[0]
    system = system_prompt_of(origin) if origin is not None else ""
    gguf.write_modelfile(path, template, out, system=system, name=ollama_name(folder), chat=chat)
    _say(progress, 1.0, f"wrote {path} and {out / 'Modelfile'}")
    return path


def _write_model(
    folder: Path,
    out: Path,
    quant: str,
    progress: Progress | None,
    keep_f16: bool,
    meta: gguf.Meta,
    stem: str = "model",
) -> tuple[Path, str | None]:
    """(`<stem>-<quant>.gguf` in out, the chat template): written by app.gguf, or for a llama.cpp type as an F16
    file quantized by llama.cpp (the F16 kept as <stem>-f16.gguf with `keep_f16`, else a hidden file removed)."""
    from app import llamacpp

    out.mkdir(parents=True, exist_ok=True)
    path = out / gguf.file_name(quant, stem)
    by_llamacpp = gguf.GGUF_TYPES[quant].writer == "llama.cpp"
    source = out / (gguf.file_name("f16", stem) if keep_f16 else f".{stem}-f16-for-{quant}.gguf")
    first = source if by_llamacpp else path
    steps = "1/2: " if by_llamacpp else ""
    _say(progress, 0.45, f"{steps}writing {first.name} ({'f16' if by_llamacpp else quant}) from {folder}")
    try:
        template = gguf.write(folder, first, "f16" if by_llamacpp else quant, progress, meta=meta)
    except gguf.GGUFError as exc:
        raise ExportError(str(exc)) from None
    if not by_llamacpp:
        return path, template
    _say(progress, 0.95, f"2/2: quantizing {first.name} to {quant} with llama.cpp")
    try:
        llamacpp.quantize(source, path, gguf.GGUF_TYPES[quant].ftype)
    except llamacpp.LlamaCppError as exc:
        raise ExportError(str(exc)) from None
    finally:
        if not keep_f16:
            source.unlink(missing_ok=True)
    note = fallback_note(path, quant)
    if note:
        _say(progress, 0.98, note)
    return path, template


def fallback_note(path: Path, quant: str) -> str | None:
    """What llama.cpp did with tensors whose rows do not fit its K-quant blocks of 256 values (SmolLM2's 576-wide
    rows): it stores them in a fallback type, so the file is larger than the 7B figure. None when all fit."""
    from gguf import GGUFReader

    if "_k" not in quant:
        return None
    odd = [t for t in GGUFReader(path).tensors if len(t.shape) >= 2 and int(t.shape[0]) % 256]
    if not odd:
        return None
    types = sorted({t.tensor_type.name for t in odd})
    widths = " or ".join(str(w) for w in sorted({int(t.shape[0]) for t in odd}))
    return (
        f"{len(odd)} tensors have rows of {widths} values, not a multiple of the 256 of a K-quant "
        f"block: llama.cpp stored them as {', '.join(types)} instead; {path.name} is "
        f"{path.stat().st_size / 1e6:.0f} MB"
    )


def _origin(folder: Path) -> tuple[Path | None, str | None]:
    """(the adapter or run folder a model came from, its base model name): a merged folder's record names its
    adapter; a full/freeze run's model/ is its own; (None, None) for any other folder."""
    record = folder / MERGE_INFO
    if record.is_file():
        info = json.loads(record.read_text(encoding="utf-8"))
        if info.get("adapter"):
            return Path(info["adapter"]), info.get("base_name")
    if run_dir_of(folder) is not None:
        return folder, base_of(folder)
    return None, None


def _meta(folder: Path) -> gguf.Meta:
    """general.* of a model folder's GGUF: a fine-tune names its run and base; any other folder its own Hub id."""
    origin, base_name = _origin(folder)
    sources = list(_provenance(folder))
    if origin is None:
        return gguf.Meta(name=folder.name, base_hub_id=hub_id(str(folder)), sources=sources)
    tags = ("tunedesk", _method(origin))
    name = display_name(origin)
    return gguf.Meta(name=name, finetune=name, base_hub_id=hub_id(base_name or ""), tags=tags, sources=sources)


def _method(folder: Path) -> str:
    """The run's method (lora, qlora, full ...), else what the adapter config says."""
    try:
        return describe(folder).method
    except AdapterError:  # a full model folder in a run, or an adapter deleted since the merge
        cfg = (read_run(folder).get("config") or {}).get("method") or {}
        return str(cfg.get("name") or "full") if isinstance(cfg, dict) else "full"


def _provenance(folder: Path) -> Iterator[dict]:
    """The conversion record of a folder, then of the base it was merged from."""
    from app.modeling import SOURCE_FILE

    for path in (folder / SOURCE_FILE, folder / MERGE_INFO):
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            yield record
            if record.get("base"):
                yield from _provenance(Path(record["base"]))


def _model_name(folder: Path) -> str:
    """The run or adapter name for a merged folder (its merge record says which adapter), else the folder name."""
    origin = _origin(folder)[0]
    return display_name(origin) if origin is not None else folder.name


# ---- a LoRA adapter as GGUF ------------------------------------------------------------------------------------
LORA_BASE_QUANT = "f16"
"""The base GGUF beside a LoRA GGUF: f16 by default, so the adapter applies to the weights it was trained on."""


def export_lora_gguf(
    adapter: str | Path,
    out_dir: str | Path,
    base_quant: str = LORA_BASE_QUANT,
    progress: Progress | None = None,
    base: str | None = None,
    *,
    allow_pickle: bool = False,
    keep_f16: bool = ExportConfig.keep_f16,
    chat: ChatConfig | None = None,
) -> Path:
    """Write a LoRA adapter as `adapter-f16.gguf` (f32 when base_quant is f32), its unmerged base as
    `base-<base_quant>.gguf` and a Modelfile (FROM the base, ADAPTER the LoRA) into out_dir; returns the adapter's
    .gguf path. For `llama-cli -m base-f16.gguf --lora adapter-f16.gguf` and Ollama's ADAPTER.

    The base is `base` or the one the adapter names (infer_base). DoRA, other PEFT types and targets llama.cpp has
    no tensor for are refused before anything is written.
    """
    if base_quant not in commands.GGUF_QUANTS:
        raise ExportError(f"base quant {base_quant!r} is not one of {', '.join(commands.GGUF_QUANTS)}")
    _require_llamacpp(base_quant)
    folder = _adapter_folder(adapter)
    out = check_out_dir(Path(out_dir), kind="gguf")
    try:
        weights = check_adapter_files(folder, allow_pickle)
        problems = gguf.lora_problems(read_adapter_config(folder))
        base_name = base or infer_base(folder)
    except AdapterError as exc:
        raise ExportError(str(exc)) from None
    if problems:
        raise ExportError(f"{folder}: cannot be written as a LoRA GGUF for llama.cpp: {'; '.join(problems)}")
    base_folder = _base_folder(base_name)
    _check_gguf(base_folder)
    try:  # every tensor mapped and fitting the base, before the output folder is made
        gguf.check_lora(folder, weights, base_folder)
    except gguf.GGUFError as exc:
        raise ExportError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    mark_export(out, "gguf")
    lora_quant = "f32" if base_quant == "f32" else "f16"
    path = out / gguf.file_name(lora_quant, "adapter")
    name, hub = display_name(folder), hub_id(base_name)
    meta = gguf.Meta(name=name, finetune=name, base_hub_id=hub, tags=("tunedesk", _method(folder)))
    _say(progress, 0.05, f"writing {path.name} from {folder}")
    try:
        count = gguf.write_lora(folder, weights, base_folder, path, lora_quant, meta)
    except gguf.GGUFError as exc:
        raise ExportError(str(exc)) from None
    _say(progress, 0.1, f"{path.name}: {count} adapted weights; writing the base {base_name}")
    base_meta = gguf.Meta(name=hub.split("/")[-1] if hub else base_folder.name, base_hub_id=hub,
                          sources=list(_provenance(base_folder)))  # fmt: skip
    base_path, template = _write_model(base_folder, out, base_quant, progress, keep_f16, base_meta, stem="base")
    template = _adapter_template(folder) or template
    gguf.write_modelfile(
        base_path,
        template,
        out,
        system=system_prompt_of(folder),
        name=gguf.ollama_safe(name),
        adapter=path,
        chat=chat,
    )
    _say(progress, 1.0, f"wrote {path}, {base_path} and {out / 'Modelfile'}")
    return path


def _base_folder(name: str) -> Path:
    """The local folder of a base model (the default model, a folder, a converted .gguf or a cached Hub id)."""
    from app.modeling import ModelError, resolve_model

    try:
        return Path(resolve_model(name))
    except ModelError as exc:
        raise ExportError(f"base model of the LoRA GGUF: {exc}") from None


def _adapter_template(adapter: Path) -> str | None:
    """The chat template an adapter folder ships (a trainer may save one there), else None."""
    config = adapter / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    jinja = adapter / "chat_template.jinja"
    return jinja.read_text(encoding="utf-8") if jinja.is_file() else None


# ---- Ollama ------------------------------------------------------------------------------------------------------
OLLAMA_TIMEOUT_S = 900
"""`ollama create` copies and hashes the GGUF (a few seconds per GB); 15 minutes covers a 70B q4 file."""
_OLLAMA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?(:[A-Za-z0-9._-]+)?$")


def ollama_name(folder: str | Path) -> str:
    """The suggested Ollama model name for an export folder (the name its Modelfile suggests) or for a model,
    adapter or run folder (the run's name, lower-cased and made Ollama-safe)."""
    folder = Path(folder)
    modelfile = folder / "Modelfile"
    if modelfile.is_file():
        found = re.search(r"ollama create (\S+) -f Modelfile", modelfile.read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    try:
        kind, resolved = resolve_source(folder)
    except AdapterError:
        return gguf.ollama_safe(folder.name)
    return gguf.ollama_safe(display_name(resolved) if kind == "adapter" else _model_name(resolved))


def ollama_available() -> bool:
    """True when the `ollama` command is on PATH."""
    return shutil.which("ollama") is not None


def ollama_create(folder: str | Path, name: str, timeout: float = OLLAMA_TIMEOUT_S) -> str:
    """Run `ollama create NAME -f Modelfile` in an export folder; returns what ollama printed.

    ExportError with ollama's output when it fails, and with what to do when ollama is absent or the folder has no
    Modelfile."""
    folder = Path(folder).expanduser()
    if not (folder / "Modelfile").is_file():
        raise ExportError(f"{folder} has no Modelfile: export a GGUF there first (python -m app export gguf ...)")
    if not _OLLAMA_NAME.match(name):
        raise ExportError(f"{name!r} is not an Ollama model name: letters, digits, '.', '_', '-' (e.g. my-model)")
    exe = shutil.which("ollama")
    if exe is None:
        raise ExportError(
            "ollama is not installed here (no `ollama` command on PATH): install it from https://ollama.com/download, "
            f"then run: cd {shlex.quote(str(folder))} && ollama create {name} -f Modelfile"
        )
    try:
        proc = subprocess.run([exe, "create", name, "-f", "Modelfile"], cwd=folder, capture_output=True, text=True,
                              errors="replace", timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"ollama create {name} did not finish in {timeout:.0f} s (is the ollama server running?)"
        ) from None
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise ExportError(f"ollama create {name} failed (exit {proc.returncode}) in {folder}: {output[-2000:]}")
    return output


# ---- what an export folder holds ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """One thing an export wrote, with the exact command that uses it."""

    kind: str
    """merged | gguf | lora-gguf | modelfile"""
    path: Path
    size: int
    """Bytes (a merged folder: all its files)."""
    command: str


def artifacts(folder: str | Path) -> list[Artifact]:
    """What an export folder holds (a merged model, GGUF models, LoRA GGUFs, a Modelfile) and how to use each."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    found: list[Artifact] = []
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        found.append(Artifact("merged", folder, size, f'AutoModelForCausalLM.from_pretrained("{folder}")'))
    ggufs = sorted(p for p in folder.glob("*.gguf") if not p.name.startswith("."))
    types = {p: _gguf_type(p) for p in ggufs}
    models = [p for p in ggufs if types[p] != "adapter"]
    for p in ggufs:
        if types[p] == "adapter":
            base = _modelfile_from(folder) or (models[0] if models else Path("BASE.gguf"))
            command = f"llama-cli -m {shlex.quote(str(base))} --lora {shlex.quote(str(p))} -cnv"
            found.append(Artifact("lora-gguf", p, p.stat().st_size, command))
        else:
            found.append(Artifact("gguf", p, p.stat().st_size, f"llama-cli -m {shlex.quote(str(p))} -cnv"))
    modelfile = folder / "Modelfile"
    if modelfile.is_file():
        name = ollama_name(folder)
        command = f"cd {shlex.quote(str(folder))} && ollama create {name} -f Modelfile && ollama run {name}"
        found.append(Artifact("modelfile", modelfile, modelfile.stat().st_size, command))
    return found


def _gguf_type(path: Path) -> str:
    """general.type of a GGUF file ("model" when unsaid, as llama.cpp reads it)."""
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("general.type")
    return str(field.contents()) if field is not None else "model"


def _modelfile_from(folder: Path) -> Path | None:
    """The model file a folder's Modelfile names in FROM (the base a LoRA GGUF goes over)."""
    modelfile = folder / "Modelfile"
    if modelfile.is_file():
        found = re.search(r"^FROM \./(\S+)$", modelfile.read_text(encoding="utf-8"), re.MULTILINE)
        if found and (folder / found.group(1)).is_file():
            return folder / found.group(1)
    return None


# ---- CLI: python -m app merge | export ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, name: str = "merge") -> None:
    if name == "merge":
        parser.add_argument("adapter", help="adapter folder, checkpoint-N folder or run folder")
        parser.add_argument("--out", required=True, help="folder for the merged model (must be empty or new)")
        commands.add_options(parser, MergeConfig)
        parser.add_argument("--base", help="base model (default: the one named in adapter_config.json)")
        return
    from app import gguf_check

    formats = parser.add_subparsers(dest="format", required=True, metavar="{gguf,lora,check}")
    model = formats.add_parser("gguf", help="a merged or full model (or an adapter, merged first) as one GGUF file")
    model.add_argument("src", help="merged or full model folder, or an adapter (merged first)")
    model.add_argument(
        "--out", required=True, help="folder for model-<quant>.gguf and the Modelfile (new, empty or an export)"
    )
    commands.add_options(model, ExportConfig)
    model.add_argument("--base", help="base model of an adapter (default: the one named in adapter_config.json)")
    lora = formats.add_parser("lora", help="a LoRA adapter as a GGUF adapter over its base GGUF (llama-cli --lora)")
    lora.add_argument("adapter", help="adapter folder, checkpoint-N folder or run folder")
    lora.add_argument("--out", required=True, help="folder for adapter-f16.gguf, base-<quant>.gguf and the Modelfile")
    lora.add_argument("--base-quant", default=LORA_BASE_QUANT, choices=commands.GGUF_QUANTS,
                      help=f"file type of the base GGUF (default: {LORA_BASE_QUANT})")  # fmt: skip
    lora.add_argument("--base", help="base model (default: the one named in adapter_config.json)")
    lora.add_argument("--keep-f16", action="store_true", help=commands.field_docs(ExportConfig)["keep_f16"])
    lora.add_argument("--allow-pickle", action="store_true", help=commands.field_docs(ExportConfig)["allow_pickle"])
    check = formats.add_parser("check", help="compare a GGUF with its source model in llama.cpp (parity check)")
    gguf_check.add_arguments(check)  # the GGUF file, --base and the check's options
    # `python -m app export --help` shows each format's options (and their defaults) too
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(p.format_help() for p in (model, lora, check))


def main(args: argparse.Namespace) -> int:
    try:
        if args.command == "merge":
            m = commands.from_args(MergeConfig, args)
            out = merge(args.adapter, args.out, m.dtype, args.base, allow_pickle=m.allow_pickle, overwrite=m.overwrite)
        elif args.format == "check":
            from app import gguf_check

            return gguf_check.run_check(args)
        elif args.format == "lora":
            out = export_lora_gguf(args.adapter, args.out, args.base_quant, base=args.base,
                                   allow_pickle=args.allow_pickle, keep_f16=args.keep_f16)  # fmt: skip
        else:
            e = commands.from_args(ExportConfig, args)
            out = export_gguf(args.src, args.out, e.quant, base=args.base, allow_pickle=e.allow_pickle,
                              keep_f16=e.keep_f16)  # fmt: skip
    except (ExportError, AdapterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
