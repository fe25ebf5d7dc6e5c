"""Export tab: merge an adapter into its base (a complete Hugging Face folder), write GGUF files + an Ollama
Modelfile, check a GGUF against the model in llama.cpp, create it in Ollama, and push an export to the Hub.

Merge (`export.merge`) always runs on the CPU and unquantized (a QLoRA adapter merges into the 16/32-bit base);
the result lists its files. GGUF (`export.export_gguf`) takes the merged folder, or the adapter (merged in float32
first) when no merged folder is given; each type's expected size and quality note are shown before export (the
K-quants come from llama.cpp's own quantizer, the optional extra this tab offers to install). The adapter can also
be written as a LoRA GGUF over a base GGUF (`export.export_lora_gguf`). **Check** runs the prompts through the GGUF
in llama.cpp and the model in transformers (`gguf_check.check`). **Push** uploads the merged model, the adapter or
the GGUF folder with its model card (`publish.push`, the token huggingface_hub saved). Every artifact is listed
with its path, size and the command that uses it (`export.artifacts`). GGUF is written for Llama-family
architectures only (SUPPORTED_GGUF_ARCHITECTURES); others are refused with a pointer to llama.cpp.

Device guard: merging loads the whole base model into RAM. While a training run of this app uses the CPU, Merge
waits for the user's explicit choice to share it (a run on the GPU is not touched).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import adapters, commands, devices, export, gguf, gguf_check, history, hub, llamacpp, paths, publish
from app.commands import ChatConfig, ExportConfig, MergeConfig, PushConfig
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
        "q4_k_m is what most llama.cpp and Ollama users run; the table below gives each type's size and quality.",
        "q4_k_m 是大多数 llama.cpp 和 Ollama 用户使用的类型；下表列出每种类型的大小和质量。",
    ),
    "export.keep_f16": ("Keep the F16 file", "保留 F16 文件"),
    "export.keep_f16.info": (
        "q4_k_m, q5_k_m, q6_k, q4_0 and q5_0 are made from an F16 file, removed afterwards unless ticked.",
        "q4_k_m、q5_k_m、q6_k、q4_0、q5_0 由 F16 文件量化得到；不勾选时量化后删除 F16 文件。",
    ),
    "export.types.head": (
        "| Type | Size{of} | Made by | Quality |\n|---|---|---|---|",
        "| 类型 | 大小{of} | 生成方式 | 质量 |\n|---|---|---|---|",
    ),
    "export.types.of": (" for {params} parameters", "（{params} 参数）"),
    "export.types.by.tunedesk": ("TuneDesk", "TuneDesk"),
    "export.types.by.llama.cpp": ("llama.cpp's quantizer", "llama.cpp 量化器"),
    "export.llama_missing": (
        "**llama.cpp is not installed.** q4_k_m, q5_k_m, q6_k, q4_0 and q5_0, the LoRA GGUF check and the parity "
        "check need it (the optional extra `tunedesk[gguf]`). **Install llama.cpp** builds it from source: about "
        "7-15 minutes on 2 CPU cores, a few on a larger machine. f16, q8_0 and f32 work without it.",
        "**未安装 llama.cpp。** q4_k_m、q5_k_m、q6_k、q4_0、q5_0 以及一致性检查需要它（可选依赖 `tunedesk[gguf]`）。"
        "**安装 llama.cpp** 会从源码编译：2 核 CPU 约 7-15 分钟，更大的机器几分钟。f16、q8_0、f32 无需它。",
    ),
    "export.llama_ready": ("llama.cpp {version} is installed.", "已安装 llama.cpp {version}。"),
    "export.install": ("Install llama.cpp", "安装 llama.cpp"),
    "export.install_log": ("Install log", "安装日志"),
    "export.installing": ("⏳ Building llama.cpp ({elapsed} s)…", "⏳ 正在编译 llama.cpp（{elapsed} 秒）…"),
    "export.installed": (
        "✅ llama.cpp is installed: restart TuneDesk if the K-quants still say it is missing.",
        "✅ 已安装 llama.cpp：若 K 量化仍提示缺失，请重启 TuneDesk。",
    ),
    "export.export_lora": ("Export the adapter as a LoRA GGUF", "将适配器导出为 LoRA GGUF"),
    "export.lora_done": (
        "Wrote the LoRA GGUF `{path}` ({size}) and its base `{base}`; the Modelfile uses `ADAPTER`.",
        "已写入 LoRA GGUF `{path}`（{size}）及其基础模型 `{base}`；Modelfile 使用 `ADAPTER`。",
    ),
    "export.section.check": ("Check the GGUF against the model", "检查 GGUF 与原模型是否一致"),
    "export.check_note": (
        "Runs the run's sample prompts (or 5 built-in ones) through the GGUF in llama.cpp and through the model in "
        "transformers, greedy, and compares the answers, the prompt's tokens, the chat template and the EOS token.",
        "用训练的示例提示（或 5 个内置提示）分别在 llama.cpp（GGUF）和 transformers（原模型）中贪心生成，比较回答、"
        "提示的分词、聊天模板和结束符。",
    ),
    "export.check": ("Check", "检查"),
    "export.no_gguf": ("Export a GGUF first (no {file} in {folder}).", "请先导出 GGUF（{folder} 中没有 {file}）。"),
    "export.check_table": ("Answers side by side", "回答对比"),
    "export.col.prompt": ("prompt", "提示"),
    "export.col.hf": ("transformers", "transformers"),
    "export.col.gguf": ("llama.cpp", "llama.cpp"),
    "export.col.agree": ("agree", "一致"),
    "export.section.ollama": ("Ollama", "Ollama"),
    "export.ollama_name": ("Ollama model name", "Ollama 模型名"),
    "export.ollama_name.info": ("Defaults to the run's name.", "默认使用训练任务的名称。"),
    "export.ollama_create": ("Create in Ollama", "在 Ollama 中创建"),
    "export.ollama_missing": (
        "The `ollama` command is not on this machine: install Ollama, then run the command in the table below.",
        "本机没有 `ollama` 命令：安装 Ollama 后运行下表中的命令。",
    ),
    "export.ollama_done": ("✅ Created `{name}`: `ollama run {name}`", "✅ 已创建 `{name}`：`ollama run {name}`"),
    "export.section.push": ("Push to the Hugging Face Hub", "推送到 Hugging Face Hub"),
    "export.repo_id": ("Repo", "仓库"),
    "export.repo_id.info": (
        "owner/name; created when it does not exist. Uses the token saved in the Model tab (needs write access).",
        "owner/name；不存在时自动创建。使用模型页保存的令牌（需要写权限）。",
    ),
    "export.what": ("What", "内容"),
    "export.what.info": (
        "merged: the merged folder above; adapter: the adapter picked; gguf: the GGUF folder.",
        "merged：上面合并后的文件夹；adapter：所选适配器；gguf：GGUF 文件夹。",
    ),
    "export.private": ("Private", "私有"),
    "export.private.info": (
        "A new repo is created private (only you can see it).",
        "新仓库创建为私有（仅自己可见）。",
    ),
    "export.push": ("Push", "推送"),
    "export.no_repo": ("Give the repo as owner/name.", "请以 owner/name 填写仓库。"),
    "export.no_folder": (
        "Nothing to push: the {what} folder `{folder}` does not exist yet; export it first.",
        "没有可推送的内容：{what} 文件夹 `{folder}` 尚不存在，请先导出。",
    ),
    "export.pushed": ("✅ Pushed {n} files to [{repo}]({url}).", "✅ 已推送 {n} 个文件到 [{repo}]({url})。"),
    "export.artifacts": ("Exported files and how to use them", "导出的文件及用法"),
    "export.col.kind": ("kind", "类型"),
    "export.col.path": ("path", "路径"),
    "export.col.command": ("command", "命令"),
    "export.gguf_out": ("GGUF folder", "GGUF 文件夹"),
    "export.gguf_out.info": (
        "Where model-<quant>.gguf and the Modelfile go.",
        "model-<quant>.gguf 和 Modelfile 的保存位置。",
    ),
    "export.export_gguf": ("Export GGUF", "导出 GGUF"),
    "export.gguf_done": ("Wrote `{path}` ({size}).", "已写入 `{path}`（{size}）。"),
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
    keep_f16: gr.Checkbox
    types: gr.Markdown
    llama: gr.Markdown
    install: gr.Button
    install_log: gr.Textbox
    export_gguf: gr.Button
    export_lora: gr.Button
    gguf_status: gr.Markdown
    modelfile: gr.Code
    check: gr.Button
    check_status: gr.Markdown
    check_table: gr.Dataframe
    ollama_name: gr.Textbox
    ollama_create: gr.Button
    ollama_status: gr.Markdown
    repo_id: gr.Textbox
    what: gr.Dropdown
    private: gr.Checkbox
    push: gr.Button
    push_status: gr.Markdown
    artifacts: gr.Dataframe


_WORKING = threading.Lock()  # one merge/export at a time: each holds a whole model in RAM


# ---- build ------------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> ExportHandles:
    tr = ctx.tr
    tr.text(gr.Markdown, "export.section.merge", elem_classes="td-section-title")
    picker = pickers.build(tr, "", "export", single=True, with_device=False)
    parts = _build_merge(tr) | _build_gguf(tr) | _build_check(tr) | _build_ollama(tr) | _build_push(tr)
    artifacts = tr.labelled(
        gr.Dataframe, "export.artifacts", interactive=False, wrap=True, visible=False, elem_id="export-artifacts"
    )
    h = ExportHandles(picker=picker, artifacts=artifacts, **parts)
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
        keep = tr.labelled(gr.Checkbox, "export.keep_f16", info=True, value=ExportConfig.keep_f16, scale=1,
                           elem_id="export-keep-f16")  # fmt: skip
    types = gr.Markdown(types_table(None, tr.lang), elem_id="export-types")
    ready = llamacpp.available()
    llama = gr.Markdown(llama_note(tr.lang), elem_classes="td-info", elem_id="export-llama")
    install = tr.text(gr.Button, "export.install", visible=not ready, size="sm", elem_id="export-install")
    log = tr.labelled(gr.Textbox, "export.install_log", lines=6, max_lines=12, interactive=False, visible=False,
                      elem_id="export-install-log")  # fmt: skip
    with gr.Row():
        button = tr.text(gr.Button, "export.export_gguf", variant="primary", elem_id="export-gguf")
        lora = tr.text(gr.Button, "export.export_lora", elem_id="export-lora")
    gguf_status = gr.Markdown("", elem_classes="td-status", elem_id="export-gguf-status")
    modelfile = tr.labelled(gr.Code, "export.modelfile", value="", interactive=False, elem_id="export-modelfile")
    return {
        "gguf_src": src,
        "quant": quant,
        "gguf_out": gguf_out,
        "keep_f16": keep,
        "types": types,
        "llama": llama,
        "install": install,
        "install_log": log,
        "export_gguf": button,
        "export_lora": lora,
        "gguf_status": gguf_status,
        "modelfile": modelfile,
    }


def _build_check(tr: i18n.Translator) -> dict[str, Any]:
    tr.text(gr.Markdown, "export.section.check", elem_classes="td-section-title")
    tr.text(gr.Markdown, "export.check_note", elem_classes="td-info")
    check = tr.text(gr.Button, "export.check", elem_id="export-check")
    status = gr.Markdown("", elem_classes="td-status", elem_id="export-check-status")
    table = tr.labelled(gr.Dataframe, "export.check_table", interactive=False, wrap=True, visible=False,
                        elem_id="export-check-table")  # fmt: skip
    return {"check": check, "check_status": status, "check_table": table}


def _build_ollama(tr: i18n.Translator) -> dict[str, Any]:
    tr.text(gr.Markdown, "export.section.ollama", elem_classes="td-section-title")
    found = export.ollama_available()
    with gr.Row(equal_height=False):
        name = tr.labelled(gr.Textbox, "export.ollama_name", info=True, value="", scale=3,
                           elem_id="export-ollama-name")  # fmt: skip
        create = tr.text(gr.Button, "export.ollama_create", interactive=found, scale=1, elem_id="export-ollama-create")
    status = gr.Markdown("" if found else tr("export.ollama_missing"), elem_classes="td-status",
                         elem_id="export-ollama-status")  # fmt: skip
    return {"ollama_name": name, "ollama_create": create, "ollama_status": status}


def _build_push(tr: i18n.Translator) -> dict[str, Any]:
    tr.text(gr.Markdown, "export.section.push", elem_classes="td-section-title")
    with gr.Row(equal_height=False):
        repo = tr.labelled(gr.Textbox, "export.repo_id", info=True, value=PushConfig.repo_id, scale=3,
                           elem_id="export-repo")  # fmt: skip
        what = tr.labelled(gr.Dropdown, "export.what", info=True, choices=list(commands.PUSH_WHAT),
                           value=PushConfig.what, scale=1, elem_id="export-what")  # fmt: skip
        private = tr.labelled(gr.Checkbox, "export.private", info=True, value=PushConfig.private, scale=1,
                              elem_id="export-private")  # fmt: skip
    push = tr.text(gr.Button, "export.push", elem_id="export-push")
    status = gr.Markdown("", elem_classes="td-status", elem_id="export-push-status")
    return {"repo_id": repo, "what": what, "private": private, "push": push, "push_status": status}


def _wire(ctx: AppContext, h: ExportHandles) -> None:
    lang = {ctx.lang_selector} if ctx.lang_selector is not None else set()

    def merge_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return merge_adapter(ctx, values, progress)

    def gguf_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return export_gguf(ctx, values, progress)

    def lora_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return export_lora(ctx, values, progress)

    def check_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return check_gguf(ctx, values, progress)

    def push_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return push_export(ctx, values, progress)

    p = h.picker
    i18n.keep_result_on_switch(ctx.lang_selector, h.status, "export.idle")
    if not export.ollama_available():  # the status line starts with how to get Ollama
        i18n.keep_result_on_switch(ctx.lang_selector, h.ollama_status, "export.ollama_missing")
    pickers.follow_runs(p, "export", ctx.lang_selector)
    outs = [h.out_dir, h.gguf_out]
    p.adapters.change(suggest_out, inputs=[p.adapters, h.dtype], outputs=outs, show_progress="hidden")
    h.dtype.change(suggest_out, inputs=[p.adapters, h.dtype], outputs=outs, show_progress="hidden")
    sizes = {"inputs": [p.adapters, h.gguf_src, *lang], "outputs": h.types, "show_progress": "hidden"}
    for source in (p.adapters, h.gguf_src, *lang):
        source.change(types_for, **sizes, api_visibility="private")
    for selector in lang:
        selector.change(llama_note, inputs=selector, outputs=h.llama, show_progress="hidden", api_visibility="private")
    one = {"concurrency_id": "export", "concurrency_limit": 1}
    chat = set(chat_widgets(ctx).values())  # the Modelfile's PARAMETERs are the Chat tab's settings
    gguf_inputs = {p.base, p.adapters, h.gguf_src, h.quant, h.gguf_out, h.keep_f16, h.share_cpu, *chat, *lang}
    gguf_outputs = [h.gguf_status, h.modelfile, h.ollama_name, h.artifacts]
    merge_inputs = {p.base, p.adapters, h.dtype, h.out_dir, h.overwrite, h.share_cpu, *lang}
    merge_outputs = [h.status, h.files, h.gguf_src, h.gguf_out, h.artifacts]
    h.merge.click(merge_event, inputs=merge_inputs, outputs=merge_outputs, api_name="export_merge", **one)
    h.export_gguf.click(gguf_event, inputs=gguf_inputs, outputs=gguf_outputs, api_name="export_gguf", **one)
    h.export_lora.click(lora_event, inputs=gguf_inputs, outputs=gguf_outputs, api_name="export_lora", **one)
    h.check.click(check_event, inputs={p.base, p.adapters, h.gguf_src, h.quant, h.gguf_out, h.share_cpu, *lang},
                  outputs=[h.check_status, h.check_table], api_name="export_check", **one)  # fmt: skip
    h.install.click(lambda *v: install_llamacpp(ctx, *v), inputs=list(lang), api_visibility="private",
                    outputs=[h.llama, h.install, h.install_log, h.types], concurrency_limit=1)  # fmt: skip
    h.ollama_create.click(lambda values: create_in_ollama(ctx, values), inputs={h.gguf_out, h.ollama_name, *lang},
                          outputs=h.ollama_status, api_name="export_ollama")  # fmt: skip
    push_inputs = {p.adapters, h.out_dir, h.gguf_src, h.gguf_out, h.repo_id, h.what, h.private, *lang}
    h.push.click(push_event, inputs=push_inputs, outputs=h.push_status, api_name="export_push")


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


def _adapter(h: ExportHandles, values: dict[Any, Any]) -> str | None:
    """The adapter picked (one: the Export tab's picker is single-choice), or None."""
    return next(iter(pickers.selected(values.get(h.picker.adapters))), None)


def _base(h: ExportHandles, values: dict[Any, Any]) -> str | None:
    """The base model field, None when empty (the adapter's own base is used)."""
    return str(values.get(h.picker.base) or "").strip() or None


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
    adapter = _adapter(h, values)
    out = str(values.get(h.out_dir) or "").strip()
    refused = _not_ready(h, values, lang, adapter, out)
    if refused:
        return {h.status: refused}
    base = _base(h, values)
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
        h.artifacts: gr.update(value=artifacts_table([path], lang), visible=True),
    }


def export_gguf(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Export GGUF: the model folder (or the adapter, merged first) as model-<quant>.gguf + Modelfile; lists what
    the folder now holds and suggests the Ollama name."""
    h = ctx.export
    lang = ctx.lang(values)
    src = _gguf_source(h, values)
    out = str(values.get(h.gguf_out) or "").strip()
    refused = _not_ready(h, values, lang, src, out)
    if refused:
        return {h.gguf_status: refused}
    base = _base(h, values)
    quant = values.get(h.quant) or ExportConfig.quant
    try:
        with _exclusive(lang):
            keep, chat = bool(values.get(h.keep_f16)), chat_settings(ctx, values)
            path = export.export_gguf(src, out, quant, _progress(progress), base=base, keep_f16=keep, chat=chat)
        modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    except (RuntimeError, OSError, ValueError) as exc:
        return {h.gguf_status: "❌ " + i18n.t("export.error", lang, msg=_one_line(exc)), h.modelfile: ""}
    text = i18n.t("export.gguf_done", lang, path=path, size=_size(path.stat().st_size))
    return _gguf_written(h, values, lang, path, text, modelfile)


def export_lora(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Export the adapter as a LoRA GGUF with its base GGUF and an ADAPTER Modelfile, in `<GGUF folder>-lora`."""
    h = ctx.export
    lang = ctx.lang(values)
    adapter = _adapter(h, values)
    out = str(values.get(h.gguf_out) or "").strip()
    refused = _not_ready(h, values, lang, adapter, out)
    if refused:
        return {h.gguf_status: refused}
    base = _base(h, values)
    try:
        with _exclusive(lang):
            path = export.export_lora_gguf(adapter, lora_folder(out), progress=_progress(progress), base=base,
                                           chat=chat_settings(ctx, values))  # fmt: skip
        modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    except (RuntimeError, OSError, ValueError) as exc:
        return {h.gguf_status: "❌ " + i18n.t("export.error", lang, msg=_one_line(exc)), h.modelfile: ""}
    bases = sorted(p.name for p in path.parent.glob("base-*.gguf"))
    text = i18n.t("export.lora_done", lang, path=path, size=_size(path.stat().st_size), base=", ".join(bases))
    return _gguf_written(h, values, lang, path, text, modelfile)


def _gguf_written(
    h: ExportHandles, values: dict[Any, Any], lang: str, path: Path, text: str, modelfile: str
) -> dict[Any, Any]:
    """What a GGUF or LoRA GGUF export shows once written: its status line, the folder's Modelfile, the Ollama name
    that folder suggests, and every artifact of the form's folders."""
    return {
        h.gguf_status: "✅ " + text,
        h.modelfile: modelfile,
        h.ollama_name: export.ollama_name(path.parent),
        h.artifacts: artifacts_update(values, h, lang),
    }


def chat_widgets(ctx: AppContext) -> dict[str, Any]:
    """The Chat tab's sampling widgets by ChatConfig field ({} where no Chat tab is built); its system prompt box is
    left out: the Modelfile's SYSTEM is the run's own prompt, as training rendered it."""
    chat = ctx.handles.get("chat")
    return {k: w for k, w in (chat.settings if chat is not None else {}).items() if k != "system_prompt"}


def chat_settings(ctx: AppContext, values: dict[Any, Any]) -> ChatConfig | None:
    """ChatConfig from the Chat tab's settings as the export received them; None (ChatConfig's defaults) without a
    Chat tab or when they do not validate (the Chat tab says what is wrong with them)."""
    fields = {f.name: f.default for f in dataclasses.fields(ChatConfig)}
    given = {k: values[w] for k, w in chat_widgets(ctx).items() if w in values and values[w] not in (None, "")}
    try:
        cfg = ChatConfig(**{k: type(fields[k])(v) for k, v in given.items()})
    except (TypeError, ValueError):
        return None
    return None if not given or cfg.validate() else cfg


def lora_folder(gguf_out: str | Path) -> Path:
    """Where the LoRA GGUF goes: beside the GGUF folder (`<run>/export/gguf-lora`), its Modelfile apart."""
    out = Path(gguf_out).expanduser()
    return out.with_name(out.name + "-lora")


def check_gguf(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Check: the exported GGUF of the chosen type against the model folder (or the adapter), side by side."""
    h = ctx.export
    lang = ctx.lang(values)
    src = _gguf_source(h, values)
    out = str(values.get(h.gguf_out) or "").strip()
    refused = _not_ready(h, values, lang, src, out)
    if refused:
        return {h.check_status: refused}
    path = Path(out).expanduser() / gguf.file_name(values.get(h.quant) or ExportConfig.quant)
    if not path.is_file():
        return {h.check_status: "❌ " + i18n.t("export.no_gguf", lang, file=path.name, folder=path.parent)}
    base = _base(h, values)
    try:
        with _exclusive(lang):
            if progress is not None:
                progress(0.1, desc=f"llama.cpp and transformers: {path.name}")
            report = gguf_check.check(path, src, base=base)
    except (RuntimeError, OSError, ValueError) as exc:
        return {h.check_status: "❌ " + i18n.t("export.error", lang, msg=_one_line(exc))}
    return {h.check_status: _check_summary(report), h.check_table: gr.update(value=check_rows(report, lang),
                                                                            visible=True)}  # fmt: skip


def _check_summary(report: Any) -> str:
    """The report's figure line, then each problem and note: what `python -m app export check` prints first."""
    lines = [("✅ " if not report.problems else "⚠️ ") + report.figure()]
    lines += [f"- ❌ {p}" for p in report.problems] + [f"- {n}" for n in report.notes]
    return "\n".join(lines)


def check_rows(report: Any, lang: str = "en") -> pd.DataFrame:
    """One row per prompt: the prompt, both answers and whether their first tokens agree (a near-tie says so)."""
    col = {k: i18n.t(f"export.col.{k}", lang) for k in ("prompt", "hf", "gguf", "agree")}
    mark = ["✅" if r.agree else ("≈ near-tie" if r.near_tie else "❌") for r in report.rows]
    return pd.DataFrame({
        col["prompt"]: [r.prompt for r in report.rows],
        col["hf"]: [r.hf_answer for r in report.rows],
        col["gguf"]: [r.gguf_answer for r in report.rows],
        col["agree"]: mark,
    })  # fmt: skip


def _gguf_source(h: ExportHandles, values: dict[Any, Any]) -> str:
    """The model folder field, else the adapter picked (merged first)."""
    chosen = _adapter(h, values) or ""
    return str(values.get(h.gguf_src) or "").strip() or chosen


def create_in_ollama(ctx: AppContext, values: dict[Any, Any]) -> str:
    """`ollama create NAME -f Modelfile` in the GGUF folder (or its -lora sibling when only that was written)."""
    h = ctx.export
    lang = ctx.lang(values)
    out = str(values.get(h.gguf_out) or "").strip()
    folders = [f for f in (Path(out).expanduser(), lora_folder(out)) if out and (f / "Modelfile").is_file()]
    if not folders:
        return "❌ " + i18n.t("export.no_gguf", lang, file="Modelfile", folder=out or "?")
    name = str(values.get(h.ollama_name) or "").strip() or export.ollama_name(folders[0])
    try:
        export.ollama_create(folders[0], name)
    except (RuntimeError, OSError) as exc:
        return "❌ " + i18n.t("export.error", lang, msg=_one_line(exc))
    return i18n.t("export.ollama_done", lang, name=name)


def push_export(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> str:
    """Push: the merged folder, the adapter or the GGUF folder to the Hub repo (private unless unticked)."""
    h = ctx.export
    lang = ctx.lang(values)
    what = values.get(h.what) or PushConfig.what
    cfg = PushConfig(repo_id=str(values.get(h.repo_id) or "").strip(), what=what, private=bool(values.get(h.private)))
    if not cfg.repo_id or cfg.validate():
        return "❌ " + i18n.t("export.no_repo", lang) + "".join(f" {p}" for p in cfg.validate())
    folder = _push_folder(h, values, what)
    if not folder or not Path(folder).expanduser().exists():
        return "❌ " + i18n.t("export.no_folder", lang, what=what, folder=folder or "?")
    try:
        # a GGUF folder's card takes the run's facts from the model or adapter it was exported from
        source = _gguf_source(h, values) if what == "gguf" else None
        result = publish.push(Path(folder).expanduser(), cfg, _progress(progress), source=source or None)
    except (hub.HubError, RuntimeError, OSError, ValueError) as exc:
        return "❌ " + i18n.t("export.error", lang, msg=_one_line(exc))
    return i18n.t("export.pushed", lang, n=len(result.files), repo=result.repo_id, url=result.url)


def _push_folder(h: ExportHandles, values: dict[Any, Any], what: str) -> str:
    if what == "adapter":
        return _adapter(h, values) or ""
    if what == "gguf":
        return str(values.get(h.gguf_out) or "").strip()
    return str(values.get(h.gguf_src) or values.get(h.out_dir) or "").strip()


def artifacts_update(values: dict[Any, Any], h: ExportHandles, lang: str) -> Any:
    """The artifacts table (every export folder of this form that exists), shown once it has a row."""
    folders = [str(values.get(k) or "").strip() for k in (h.out_dir, h.gguf_src, h.gguf_out)]
    folders.append(str(lora_folder(folders[-1])) if folders[-1] else "")
    table = artifacts_table([Path(f).expanduser() for f in dict.fromkeys(folders) if f], lang)
    return gr.update(value=table, visible=not table.empty)


def artifacts_table(folders: list[Path], lang: str = "en") -> pd.DataFrame:
    """kind, path, size and the exact command to use each exported file (export.artifacts of each folder)."""
    rows = [a for f in folders if f.is_dir() for a in export.artifacts(f)]
    col = {k: i18n.t(f"export.col.{k}", lang) for k in ("kind", "path", "size", "command")}
    return pd.DataFrame({
        col["kind"]: [a.kind for a in rows],
        col["path"]: [str(a.path) for a in rows],
        col["size"]: [_size(a.size) for a in rows],
        col["command"]: [a.command for a in rows],
    })  # fmt: skip


# ---- GGUF types and llama.cpp -----------------------------------------------------------------------------------
def types_for(adapter: Any, src: str, lang: str = "en") -> str:
    """types_table for the model folder field, else the adapter picked (its base's size)."""
    chosen = next(iter(pickers.selected(adapter)), None)
    return types_table((src or "").strip() or chosen, lang)


def types_table(source: str | None, lang: str = "en") -> str:
    """Markdown: each GGUF type, its expected size for `source` (a model folder or an adapter: its base) when
    that is known, who makes it and a quality note."""
    params = _param_count(source)
    of = i18n.t("export.types.of", lang, params=_count(params)) if params else ""
    lines = [i18n.t("export.types.head", lang, of=of)]
    for name in commands.GGUF_QUANTS:
        kind = gguf.GGUF_TYPES[name]
        size = _size(gguf.expected_size(params, name)) if params else f"{kind.bits_per_weight:g} bits/weight"
        lines.append(f"| `{name}` | {size} | {i18n.t('export.types.by.' + kind.writer, lang)} | {kind.note} |")
    return "\n".join(lines)


def _param_count(source: str | None) -> int | None:
    """Parameters of a model folder, or of an adapter's base; None when neither can be read (no error shown)."""
    from app.architecture import EstimateError, architecture_from

    if not source:
        return None
    try:
        kind, folder = adapters.resolve_source(source)
        return architecture_from(adapters.infer_base(folder) if kind == "adapter" else str(folder)).total_params
    except (EstimateError, adapters.AdapterError, OSError, ValueError):
        return None


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def llama_note(lang: str = "en") -> str:
    if llamacpp.available():
        from importlib.metadata import PackageNotFoundError, version

        try:
            return i18n.t("export.llama_ready", lang, version=version("llama-cpp-python"))
        except PackageNotFoundError:  # importable from elsewhere (a source checkout)
            return i18n.t("export.llama_ready", lang, version="")
    return i18n.t("export.llama_missing", lang)


def install_llamacpp(ctx: AppContext, lang: str | None = None) -> Iterator[dict[Any, Any]]:
    """Install llama.cpp (the gguf extra) with pip, streaming its log; the button hides once it is there."""
    h = ctx.export
    lang = lang or ctx.tr.lang
    lines: list[str] = []
    done: list[BaseException | None] = []
    worker = threading.Thread(target=_install, args=(lines, done), daemon=True)
    started = time.monotonic()
    worker.start()
    while worker.is_alive():
        elapsed = int(time.monotonic() - started)
        yield {h.llama: i18n.t("export.installing", lang, elapsed=elapsed), h.install: gr.update(interactive=False),
               h.install_log: gr.update(value="\n".join(lines[-40:]), visible=True)}  # fmt: skip
        worker.join(timeout=2.0)
    failed = done[0] if done else None
    note = "❌ " + i18n.t("export.error", lang, msg=_one_line(failed)) if failed else i18n.t("export.installed", lang)
    yield {
        h.llama: note,
        h.install: gr.update(interactive=True, visible=bool(failed)),
        h.install_log: gr.update(value="\n".join(lines[-40:]), visible=True),
        h.types: types_table(None, lang),
    }


def _install(lines: list[str], done: list[BaseException | None]) -> None:
    try:
        llamacpp.install(lines.append)
        done.append(None)
    except (RuntimeError, OSError) as exc:
        done.append(exc)


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
