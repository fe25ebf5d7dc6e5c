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
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app import commands, gguf, methods
from app.adapters import (
    AdapterError,
    adapter_tokenizer,
    check_adapter_files,
    check_adapter_fits,
    display_name,
    infer_base,
    read_adapter_config,
    resolve_source,
    run_dir_of,
    system_prompt_of,
)
from app.commands import DTYPES, ExportConfig, MergeConfig
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


def _hub_id(base_name: str) -> str | None:
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
        ("Final train loss", _num(run.get("train_loss"))),
        ("Final eval loss", _num(run.get("eval_loss"))),
        ("Adapter", f"`{adapter_dir}`"),
    ]
    hub = _hub_id(base_name)
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


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "unknown"


# ---- GGUF ----------------------------------------------------------------------------------------------------
def export_gguf(
    src: str | Path,
    out_dir: str | Path,
    quant: str = ExportConfig.quant,
    progress: Progress | None = None,
    *,
    base: str | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Write `model-<quant>.gguf` and an Ollama Modelfile into out_dir; returns the .gguf path.

    `src` is a merged/full model folder, or an adapter (then merged first, in float32, into a temporary folder).
    out_dir must be new, empty or a TuneDesk export (check_out_dir); its files of the same name are replaced.
    """
    if quant not in commands.GGUF_QUANTS:
        raise ExportError(f"quant {quant!r} is not one of {', '.join(commands.GGUF_QUANTS)}")
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
        return _export_folder(folder, out, quant, progress)
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out) as tmp:
        sub = (lambda f, m: _say(progress, 0.4 * f, m)) if progress else None
        merged = merge(folder, Path(tmp) / "merged", GGUF_MERGE_DTYPE, base, sub, allow_pickle=allow_pickle)
        return _export_folder(merged, out, quant, progress)


def _check_gguf(folder: Path) -> None:
    try:
        gguf.check(folder)
    except gguf.GGUFError as exc:
        raise ExportError(str(exc)) from None


def _export_folder(folder: Path, out: Path, quant: str, progress: Progress | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / gguf.file_name(quant)
    _say(progress, 0.45, f"writing {path.name} ({quant}) from {folder}")
    try:
        template = gguf.write(folder, path, quant, progress, name=_model_name(folder), sources=_provenance(folder))
    except gguf.GGUFError as exc:
        raise ExportError(str(exc)) from None
    gguf.write_modelfile(path, template, out)
    _say(progress, 1.0, f"wrote {path} and {out / 'Modelfile'}")
    return path


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
    record = folder / MERGE_INFO
    if record.is_file():
        adapter = json.loads(record.read_text(encoding="utf-8")).get("adapter")
        if adapter:
            return display_name(Path(adapter))
    return folder.name


# ---- CLI: python -m app merge | export ---------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, name: str = "merge") -> None:
    if name == "merge":
        parser.add_argument("adapter", help="adapter folder, checkpoint-N folder or run folder")
        parser.add_argument("--out", required=True, help="folder for the merged model (must be empty or new)")
        commands.add_options(parser, MergeConfig)
    else:
        parser.add_argument("format", choices=["gguf"], help="export format")
        parser.add_argument("src", help="merged or full model folder, or an adapter (merged first)")
        parser.add_argument(
            "--out", required=True, help="folder for model-<quant>.gguf and the Modelfile (new, empty or an export)"
        )
        commands.add_options(parser, ExportConfig)
    parser.add_argument("--base", help="base model (default: the one named in adapter_config.json)")


def main(args: argparse.Namespace) -> int:
    try:
        if args.command == "merge":
            m = commands.from_args(MergeConfig, args)
            out = merge(args.adapter, args.out, m.dtype, args.base, allow_pickle=m.allow_pickle, overwrite=m.overwrite)
        else:
            e = commands.from_args(ExportConfig, args)
            out = export_gguf(args.src, args.out, e.quant, base=args.base, allow_pickle=e.allow_pickle)
    except (ExportError, AdapterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0
