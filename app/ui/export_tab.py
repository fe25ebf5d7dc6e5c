"""Export tab: merge an adapter into its base (a complete Hugging Face folder), and write a GGUF + Ollama Modelfile.

Merge (`export.merge`) always runs on the CPU and unquantized (a QLoRA adapter merges into the 16/32-bit base);
the result lists its files. GGUF (`export.export_gguf`, f16 / q8_0 / f32) takes the merged folder, or the adapter
(merged in float32 first) when no merged folder is given, and shows the .gguf path and the Modelfile. GGUF is
written for Llama-family architectures only (SUPPORTED_GGUF_ARCHITECTURES); others are refused with a pointer to
llama.cpp.

Device guard: merging loads the whole base model into RAM. While a training run of this app uses the CPU, Merge
waits for the user's explicit choice to share it (a run on the GPU is not touched).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import adapters, commands, devices, export, gguf, history, paths
from app.commands import ExportConfig, MergeConfig
from app.ui import i18n, pickers

if TYPE_CHECKING:
    from app.ui.app import AppContext

_ARCHS = ", ".join(gguf.SUPPORTED_GGUF_ARCHITECTURES)
STRINGS = {
    "export.section.merge": ("Merge adapter into the base model", "把适配器合并进基础模型"),
    "export.dtype": ("Dtype", "精度"),
    "export.dtype.info": (
        "Weights of the merged model: float16/bfloat16 halve the size; float32 keeps every bit.",
        "合并后模型的权重精度：float16/bfloat16 体积减半；float32 完全无损。",
    ),
    "export.out": ("Output folder", "输出文件夹"),
    "export.out.info": (
        "A new or empty folder; filled in from the adapter's name.",
        "新的或空的文件夹；会根据适配器名称自动填写。",
    ),
    "export.overwrite": ("Overwrite", "覆盖"),
    "export.overwrite.info": (
        "Replace a folder an earlier TuneDesk export wrote; any other non-empty folder is refused and left as it is.",
        "替换 TuneDesk 之前导出的文件夹；其他非空文件夹会被拒绝，保持原样。",
    ),
    "export.share_cpu": ("Share the CPU with training", "与训练共用 CPU"),
    "export.share_cpu.info": (
        "Merge even while a training run uses the CPU (both run slower; RAM must hold both).",
        "训练占用 CPU 时仍然合并（两者都会变慢，内存需同时容纳两者）。",
    ),
    "export.merge": ("Merge", "合并"),
    "export.idle": (
        "Pick an adapter (a run's adapter or checkpoint, or any adapter folder).",
        "选择一个适配器（训练得到的适配器或检查点，或任意适配器文件夹）。",
    ),
    "export.no_adapter": ("Pick an adapter first.", "请先选择适配器。"),
    "export.no_out": ("Give an output folder.", "请填写输出文件夹。"),
    "export.busy": (
        "Another merge or export is running; wait for it to finish.",
        "已有合并或导出在进行，请等待其完成。",
    ),
    "export.cpu_busy": (
        "A training run ({run}) is using the CPU. Wait for it, or tick **Share the CPU with "
        "training** and press again.",
        "训练任务（{run}）正在使用 CPU。请等待，或勾选“**与训练共用 CPU**”后再点一次。",
    ),
    "export.merged": ("Merged into `{path}` ({size}).", "已合并到 `{path}`（{size}）。"),
    "export.error": ("Could not export: {msg}", "无法导出：{msg}"),
    "export.files": ("Files", "文件"),
    "export.section.gguf": ("GGUF for llama.cpp and Ollama", "GGUF（用于 llama.cpp 和 Ollama）"),
    "export.gguf_note": (
        f"GGUF is written for {_ARCHS} models with a byte-level BPE tokenizer; for other "
        "architectures use llama.cpp's convert_hf_to_gguf.py on the merged folder.",
        f"GGUF 导出支持使用字节级 BPE 分词器的 {_ARCHS} 模型；其他架构请对合并后的文件夹使用 "
        "llama.cpp 的 convert_hf_to_gguf.py。",
    ),
    "export.gguf_src": ("Model folder", "模型文件夹"),
    "export.gguf_src.info": (
        "A merged or full model folder; empty = the adapter above (merged in float32 first).",
        "合并后的或完整的模型文件夹；留空 = 上面的适配器（先以 float32 合并）。",
    ),
    "export.quant": ("Quantization", "量化"),
    "export.quant.info": (
        "f16: half precision (2 bytes/weight); q8_0: 8-bit (~1.06 bytes/weight); f32: full.",
        "f16：半精度（每权重 2 字节）；q8_0：8 位（约 1.06 字节/权重）；f32：全精度。",
    ),
    "export.gguf_out": ("GGUF folder", "GGUF 文件夹"),
    "export.gguf_out.info": (
        "Where model-<quant>.gguf and the Modelfile go.",
        "model-<quant>.gguf 和 Modelfile 的保存位置。",
    ),
    "export.export_gguf": ("Export GGUF", "导出 GGUF"),
    "export.gguf_done": (
        "Wrote `{path}` ({size}). Ollama: `cd {folder} && ollama create my-model -f Modelfile`",
        "已写入 `{path}`（{size}）。Ollama：`cd {folder} && ollama create my-model -f Modelfile`",
    ),
    "export.modelfile": ("Modelfile", "Modelfile"),
    "export.col.file": ("file", "文件"),
    "export.col.size": ("size", "大小"),
}
i18n.add(STRINGS)


@dataclass
class ExportHandles:
    picker: pickers.ModelPicker
    dtype: gr.Dropdown
    out_dir: gr.Textbox
    overwrite: gr.Checkbox
    share_cpu: gr.Checkbox
    merge: gr.Button
    status: gr.Markdown
    files: gr.Dataframe
    gguf_src: gr.Textbox
    quant: gr.Dropdown
    gguf_out: gr.Textbox
    export_gguf: gr.Button
    gguf_status: gr.Markdown
    modelfile: gr.Code


_WORKING = threading.Lock()  # one merge/export at a time: each holds a whole model in RAM


# ---- build ------------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> ExportHandles:
    tr = ctx.tr
    tr.text(gr.Markdown, "export.section.merge", elem_classes="td-section-title")
    picker = pickers.build(tr, "", "export", single=True, with_device=False)
    h = ExportHandles(picker=picker, **_build_merge(tr), **_build_gguf(tr))
    _wire(ctx, h)
    return h


def _build_merge(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Row(equal_height=False):
        dtype = tr.labelled(gr.Dropdown, "export.dtype", info=True, choices=list(commands.DTYPES),
                            value=MergeConfig.dtype, scale=1, elem_id="export-dtype")  # fmt: skip
        out_dir = tr.labelled(gr.Textbox, "export.out", info=True, value="", scale=3, elem_id="export-out")
        with gr.Column(scale=1, min_width=180):
            overwrite = tr.labelled(gr.Checkbox, "export.overwrite", info=True, value=MergeConfig.overwrite,
                                    elem_id="export-overwrite")  # fmt: skip
            share = tr.labelled(gr.Checkbox, "export.share_cpu", info=True, value=False, elem_id="export-share-cpu")
    merge = tr.text(gr.Button, "export.merge", variant="primary", elem_id="export-merge")
    # not bound to a key: a language switch must not reset a result to the idle text (see _wire)
    status = gr.Markdown(tr("export.idle"), elem_classes="td-status", elem_id="export-status")
    # hidden until a merge lists its files: an empty Dataframe shows a bare "1 | 2 | 3" header
    files = tr.labelled(
        gr.Dataframe, "export.files", interactive=False, max_height=300, visible=False, elem_id="export-files"
    )
    return {
        "dtype": dtype,
        "out_dir": out_dir,
        "overwrite": overwrite,
        "share_cpu": share,
        "merge": merge,
        "status": status,
        "files": files,
    }


def _build_gguf(tr: i18n.Translator) -> dict[str, Any]:
    tr.text(gr.Markdown, "export.section.gguf", elem_classes="td-section-title")
    tr.text(gr.Markdown, "export.gguf_note", elem_classes="td-info", elem_id="export-gguf-note")
    with gr.Row(equal_height=False):
        src = tr.labelled(gr.Textbox, "export.gguf_src", info=True, value="", scale=3, elem_id="export-gguf-src")
        quant = tr.labelled(gr.Dropdown, "export.quant", info=True, choices=list(commands.GGUF_QUANTS),
                            value=ExportConfig.quant, scale=1, elem_id="export-quant")  # fmt: skip
        gguf_out = tr.labelled(gr.Textbox, "export.gguf_out", info=True, value="", scale=3, elem_id="export-gguf-out")
    button = tr.text(gr.Button, "export.export_gguf", variant="primary", elem_id="export-gguf")
    gguf_status = gr.Markdown("", elem_classes="td-status", elem_id="export-gguf-status")
    modelfile = tr.labelled(gr.Code, "export.modelfile", value="", interactive=False, elem_id="export-modelfile")
    return {
        "gguf_src": src,
        "quant": quant,
        "gguf_out": gguf_out,
        "export_gguf": button,
        "gguf_status": gguf_status,
        "modelfile": modelfile,
    }


def _wire(ctx: AppContext, h: ExportHandles) -> None:
    lang = {ctx.lang_selector} if ctx.lang_selector is not None else set()

    def merge_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return merge_adapter(ctx, values, progress)

    def gguf_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return export_gguf(ctx, values, progress)

    p = h.picker
    i18n.keep_result_on_switch(ctx.lang_selector, h.status, "export.idle")
    pickers.follow_runs(p, "export", ctx.lang_selector)
    p.adapters.change(
        suggest_out, inputs=[p.adapters, h.dtype], outputs=[h.out_dir, h.gguf_out], show_progress="hidden"
    )
    h.dtype.change(suggest_out, inputs=[p.adapters, h.dtype], outputs=[h.out_dir, h.gguf_out], show_progress="hidden")
    h.merge.click(
        merge_event,
        inputs={p.base, p.adapters, h.dtype, h.out_dir, h.overwrite, h.share_cpu, *lang},
        outputs=[h.status, h.files, h.gguf_src, h.gguf_out],
        api_name="export_merge",
        concurrency_id="export",
        concurrency_limit=1,
    )
    h.export_gguf.click(
        gguf_event,
        inputs={p.base, p.adapters, h.gguf_src, h.quant, h.gguf_out, h.share_cpu, *lang},
        outputs=[h.gguf_status, h.modelfile],
        api_name="export_gguf",
        concurrency_id="export",
        concurrency_limit=1,
    )


# ---- handlers -------------------------------------------------------------------------------------------------------
def suggest_out(adapter: Any, dtype: str) -> tuple[Any, Any]:
    """Output folders for an adapter: inside its run (`<run>/export/merged-<dtype>`, `<run>/export/gguf`: runs/ is
    not versioned and deleting the run removes them too), else under the TuneDesk home (~/.cache/tunedesk/exports)."""
    chosen = pickers.selected(adapter)
    if not chosen:
        return gr.update(), gr.update()
    folder = Path(chosen[0])
    run = adapters.run_dir_of(folder)
    step = f"-{folder.name}" if history.checkpoint_step(folder) is not None else ""
    if run is not None:
        return str(run / "export" / f"merged{step}-{dtype}"), str(run / "export" / f"gguf{step}")
    name = adapters.display_name(folder).replace("/", "-")
    root = paths.home() / "exports"
    return str(root / f"{name}-{dtype}"), str(root / f"{name}-gguf")


def _guard(h: ExportHandles, values: dict[Any, Any], lang: str) -> str | None:
    """Why not to start now, or None: merging holds a whole model in RAM, so a training run on the CPU is only
    shared when the user says so."""
    holder = devices.holder("cpu")
    if values.get(h.share_cpu) or holder is None:
        return None
    return i18n.t("export.cpu_busy", lang, run=holder.run)


def _not_ready(h: ExportHandles, values: dict[Any, Any], lang: str, src: Any, out: str) -> str | None:
    """The status line when an export cannot start (no source, no output folder, the CPU busy), else None."""
    if not src or not out:
        return "❌ " + i18n.t("export.no_adapter" if not src else "export.no_out", lang)
    busy = _guard(h, values, lang)
    return "⏳ " + busy if busy else None


def merge_adapter(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Merge: the adapter into its base, saved in the output folder; lists the folder's files. Never raises."""
    h = ctx.export
    lang = ctx.lang(values)
    adapter = next(iter(pickers.selected(values.get(h.picker.adapters))), None)
    out = str(values.get(h.out_dir) or "").strip()
    refused = _not_ready(h, values, lang, adapter, out)
    if refused:
        return {h.status: refused}
    base = str(values.get(h.picker.base) or "").strip() or None
    try:
        with _exclusive(lang):
            path = export.merge(
                adapter,
                out,
                values.get(h.dtype) or MergeConfig.dtype,
                base,
                _progress(progress),
                overwrite=bool(values.get(h.overwrite)),
            )
    except (RuntimeError, OSError, ValueError) as exc:  # ExportError, AdapterError, ModelError, torch errors
        return {h.status: "❌ " + i18n.t("export.error", lang, msg=_one_line(exc))}
    table = files_table(path, lang)
    size = _size(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    return {
        h.status: "✅ " + i18n.t("export.merged", lang, path=path, size=size),
        h.files: gr.update(value=table, visible=True),
        h.gguf_src: str(path),
        h.gguf_out: str(path.with_name(path.name + "-gguf")),
    }


def export_gguf(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Export GGUF: the model folder (or the adapter, merged first) as model-<quant>.gguf + Modelfile."""
    h = ctx.export
    lang = ctx.lang(values)
    src = str(values.get(h.gguf_src) or "").strip() or next(iter(pickers.selected(values.get(h.picker.adapters))), "")
    out = str(values.get(h.gguf_out) or "").strip()
    refused = _not_ready(h, values, lang, src, out)
    if refused:
        return {h.gguf_status: refused}
    base = str(values.get(h.picker.base) or "").strip() or None
    try:
        with _exclusive(lang):
            quant = values.get(h.quant) or ExportConfig.quant
            path = export.export_gguf(src, out, quant, _progress(progress), base=base)
        modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    except (RuntimeError, OSError, ValueError) as exc:
        return {h.gguf_status: "❌ " + i18n.t("export.error", lang, msg=_one_line(exc)), h.modelfile: ""}
    text = i18n.t("export.gguf_done", lang, path=path, size=_size(path.stat().st_size), folder=path.parent)
    return {h.gguf_status: "✅ " + text, h.modelfile: modelfile}


@contextmanager
def _exclusive(lang: str) -> Iterator[None]:
    """Hold the one-merge-or-export-at-a-time lock, or raise RuntimeError with the translated 'busy' message."""
    if not _WORKING.acquire(blocking=False):
        raise RuntimeError(i18n.t("export.busy", lang))
    try:
        yield
    finally:
        _WORKING.release()


def files_table(folder: Path, lang: str = "en") -> pd.DataFrame:
    """The exported folder's files and sizes, largest first."""
    files = sorted((f for f in folder.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size, reverse=True)
    return pd.DataFrame(
        {
            i18n.t("export.col.file", lang): [str(f.relative_to(folder)) for f in files],
            i18n.t("export.col.size", lang): [_size(f.stat().st_size) for f in files],
        }
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _progress(progress: Any) -> Any:
    return (lambda frac, msg: progress(frac, desc=msg)) if progress is not None else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
