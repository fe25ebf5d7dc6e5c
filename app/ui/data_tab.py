"""Data tab: pick or upload a dataset, validate it, and see exactly what trains.

Shows a paged table of the raw records (lazy `data.preview`), the validation summary with every problem by record,
line, field and reason, one record rendered as trained (`render_segments`) with its label mask (`mask_view`:
trained tokens highlighted, prompt greyed, tokens beyond max_seq_len marked cut), the token statistics and the
length histogram with the max_seq_len line. Tokens are counted with the selected base model's tokenizer (the Model
tab's `model.name_or_path`), loaded without weights and cached.

The column mapping and the placeholders are dict fields of DataConfig that FIELDS has no widget for: a dropdown per
canonical field (instruction, input, output, system, conversation), filled with the file's columns, and a small
key/text table; `Form.add_extra` writes them into `data.columns` / `data.placeholders` whenever the form is read,
so Start trains with the same mapping the preview shows.
"""

from __future__ import annotations

import functools
import re
import shlex
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import data, data_cli, files, paths, preference_data, recent
from app.config import ConfigError, RunConfig
from app.ui import data_hub, hub_panel, i18n
from app.ui.form import explain, plain

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "data.section.source": ("Dataset", "数据集"),
    "data.section.render": ("Prompt and settings", "提示与设置"),
    "data.upload": ("Upload a file", "上传文件"),
    "data.pick": ("Choose a dataset", "选择数据集"),
    "data.pick.info": (
        "The bundled sample, the identity demo, your recent files and uploads; or browse, upload, or type a path.",
        "内置示例、身份示例、最近用过的文件和上传的文件；也可以浏览、上传，或在下方输入路径。",
    ),
    "data.pick.sample": ("{name} (bundled sample)", "{name}（内置示例）"),
    "data.pick.identity": ("{name} (identity demo: teaches the model its name)", "{name}（身份示例：教模型记住名字）"),
    "data.pick.upload": ("{name} (uploaded)", "{name}（已上传）"),
    "data.pick.file": ("{name} (in {folder})", "{name}（位于 {folder}）"),
    "data.browse": ("Browse your files", "浏览文件"),
    "data.browse.info": (
        "Your home folder; click a file to use it (hidden folders are not listed).",
        "你的主目录；点击文件即可使用（不列出隐藏文件夹）。",
    ),
    "data.load": ("Load / validate", "加载并校验"),
    "data.load.info": (
        "Reads every record, checks it and counts tokens with the base model's tokenizer.",
        "读取并检查每条记录，用基础模型的分词器统计 token 数。",
    ),
    "data.columns": ("Column mapping", "列映射"),
    "data.columns.help": (
        "Which column of the file holds each part; auto finds common names (question, answer, conversations...).",
        "文件中每个部分对应哪一列；auto 会识别常见列名（question、answer、conversations 等）。",
    ),
    "data.col.instruction": ("Instruction column", "指令列"),
    "data.col.instruction.info": ("The task or question.", "任务或问题。"),
    "data.col.input": ("Input column", "输入列"),
    "data.col.input.info": ("Optional context appended to the instruction.", "可选，附加在指令后的上下文。"),
    "data.col.output": ("Output column", "输出列"),
    "data.col.output.info": ("The answer the model learns to give.", "模型要学会给出的回答。"),
    "data.col.system": ("System column", "系统提示列"),
    "data.col.system.info": ("Optional per-record system message.", "可选，每条记录自己的系统消息。"),
    "data.col.messages": ("Conversation column", "对话列"),
    "data.col.messages.info": (
        "A list of turns (sharegpt or messages records).",
        "轮次列表（sharegpt 或 messages 格式）。",
    ),
    "data.placeholders": ("Placeholders", "占位符"),
    "data.placeholders.info": (
        "Text put in place of {{key}} in every record, e.g. name and author for identity data.",
        "替换每条记录中 {{key}} 的文本，例如身份数据里的 name 和 author。",
    ),
    "data.ph.key": ("placeholder", "占位符"),
    "data.ph.text": ("text", "文本"),
    "data.status.empty": ("Press **Load / validate** to read the dataset.", "点击“**加载并校验**”读取数据集。"),
    "data.summary": (
        "**{path}**: {format}, {records} records, **{valid} valid**, {skipped} skipped, {warnings} warnings.",
        "**{path}**：{format} 格式，{records} 条记录，**{valid} 条有效**，跳过 {skipped} 条，{warnings} 条警告。",
    ),
    "data.error": ("Cannot read the dataset: {msg}", "无法读取数据集：{msg}"),
    "data.config_error": ("Fix these settings first:\n{msg}", "请先修正这些设置：\n{msg}"),
    "data.no_tokenizer": ("Records checked, but tokens were not counted: {msg}", "记录已检查，但未统计 token：{msg}"),
    "data.uploaded": ("Uploaded **{name}**.", "已上传 **{name}**。"),
    "data.tab.records": ("Records", "记录"),
    "data.tab.problems": ("Problems", "问题"),
    "data.tab.example": ("Example as trained", "训练样本预览"),
    "data.tab.stats": ("Statistics", "统计"),
    "data.page": ("Page", "页码"),
    "data.page.info": ("Pages of 20 raw records, as stored in the file.", "每页 20 条原始记录（文件中的原样）。"),
    "data.prev": ("◀ Previous", "◀ 上一页"),
    "data.next": ("Next ▶", "下一页 ▶"),
    "data.page_of": ("Page {page} of {pages} ({total} rows).", "第 {page} 页，共 {pages} 页（{total} 行）。"),
    "data.page_open": ("Page {page} (total not counted).", "第 {page} 页（总数未统计）。"),
    "data.no_problems": ("No problems: every record is valid.", "没有问题：所有记录都有效。"),
    "data.pcol.index": ("record", "记录"),
    "data.pcol.line": ("line", "行"),
    "data.pcol.field": ("field", "字段"),
    "data.pcol.severity": ("severity", "级别"),
    "data.pcol.reason": ("reason", "原因"),
    "data.sev.error": ("error", "错误"),
    "data.sev.warning": ("warning", "警告"),
    "data.record": ("Record #", "记录编号"),
    "data.record.info": (
        "The # of a record in the table (or click a row there).",
        "表格中记录的编号（或直接点击表格中的行）。",
    ),
    "data.rendered": ("Rendered prompt", "渲染后的提示"),
    "data.mask": ("Label mask (tokens)", "标签掩码（按 token）"),
    "data.mask.help": (
        "Green: trained (loss counted). Grey: prompt (no loss). Red: cut off by Max sequence length.",
        "绿色：参与训练（计算损失）。灰色：提示（不计损失）。红色：超出最大序列长度被截断。",
    ),
    "data.record_head": (
        "Record **{index}**: {tokens} tokens ({trained} trained){cut}; template {template}.",
        "记录 **{index}**：{tokens} 个 token（{trained} 个参与训练）{cut}；模板 {template}。",
    ),
    "data.record_cut": (", {cut} cut", "，截断 {cut} 个"),
    "data.record_skipped": ("Record {index} is skipped:\n{problems}", "记录 {index} 被跳过：\n{problems}"),
    "data.record_missing": (
        "No record {index}: the file has records 0 to {last}.",
        "没有记录 {index}：文件中的记录编号为 0 到 {last}。",
    ),
    "data.record_none": ("Load a dataset to see a record.", "加载数据集后可查看记录。"),
    "data.stats_table": (
        "| | |\n|---|---|\n| Records (valid / skipped) | {valid} / {skipped} |\n"
        "| Tokens total | {total:,} |\n| Tokens mean / max | {mean:.1f} / {max:,} |\n"
        "| Cut by Max sequence length {msl} | {cut} ({share:.1%}) |\n| Train / validation | {train} / {val} |\n"
        "| Tokens per epoch | {epoch:,} |",
        "| | |\n|---|---|\n| 记录（有效 / 跳过） | {valid} / {skipped} |\n| token 总数 | {total:,} |\n"
        "| 平均 / 最长 token 数 | {mean:.1f} / {max:,} |\n| 超过最大序列长度 {msl} 被截断 | {cut}（{share:.1%}） |\n"
        "| 训练 / 验证 | {train} / {val} |\n| 每轮 token 数 | {epoch:,} |",
    ),
    "data.stats_sampled": (
        "Token statistics from {sample:,} evenly spaced examples of {total:,}; training tokenizes every one.",
        "token 统计基于 {total:,} 条样本中均匀抽取的 {sample:,} 条；训练时会处理全部样本。",
    ),
    "data.problems_more": (
        "… and {more:,} more: `{command}` lists every problem.",
        "……还有 {more:,} 个：`{command}` 会列出全部问题。",
    ),
    "data.hist.title": ("Tokens per example ({n} examples)", "每条样本的 token 数（{n} 条）"),
    "data.hist.x": ("tokens", "token 数"),
    "data.hist.y": ("examples", "样本数"),
    "data.hist.cut": (
        "Max sequence length {msl}: {cut} cut ({share:.1%})",
        "最大序列长度 {msl}：截断 {cut} 条（{share:.1%}）",
    ),
    "data.seg.response": ("response (trained)", "回答（训练）"),
    "data.state.trained": ("trained", "训练"),
    "data.state.prompt": ("prompt", "提示"),
    "data.state.cut": ("cut", "截断"),
    "data.pref.summary": (
        "**{path}**: preference data, {what} ({layouts}); {records} records, **{valid} valid**, {skipped} skipped, "
        "{warnings} warnings.",
        "**{path}**：偏好数据，{what}（{layouts}）；{records} 条记录，**{valid} 条有效**，跳过 {skipped} 条，"
        "{warnings} 条警告。",
    ),
    "data.pref.kind.pairs": ("pairs of a chosen and a rejected answer", "每条含一个选中回答和一个拒绝回答"),
    "data.pref.kind.unpaired": (
        "answers labelled desirable or undesirable",
        "标注为好或不好的回答",
    ),
    "data.pref.train_with.pairs": (
        "Train it with DPO, ORPO or SimPO (Objective, in the Train tab).",
        "请用 DPO、ORPO 或 SimPO 训练（训练页的“训练目标”）。",
    ),
    "data.pref.train_with.unpaired": (
        "Train it with KTO (Objective, in the Train tab).",
        "请用 KTO 训练（训练页的“训练目标”）。",
    ),
    "data.pref.trains": ("Objective {objective} trains on it.", "训练目标 {objective} 使用这些数据。"),
    "data.pref.sft": (
        "Supervised fine-tuning cannot train on preference data: choose DPO, ORPO, SimPO or KTO under Objective "
        "in the Train tab.",
        "监督微调不能使用偏好数据：请在训练页的“训练目标”中选择 DPO、ORPO、SimPO 或 KTO。",
    ),
    "data.pref.kto_pairs": (
        "KTO reads each pair as a desirable (chosen) and an undesirable (rejected) answer.",
        "KTO 把每对数据读作一个好回答（选中）和一个不好的回答（拒绝）。",
    ),
    "data.pref.prompt": ("Prompt (shared by both answers)", "提示（两个回答共用）"),
    "data.pref.chosen": ("Chosen (KTO: desirable) answer: label mask", "选中（KTO：好）回答：标签掩码"),
    "data.pref.rejected": ("Rejected (KTO: undesirable) answer: label mask", "拒绝（KTO：不好）回答：标签掩码"),
    "data.pref.mask_help": (
        "Each answer trains after the same prompt, shown once. Grey: prompt (no loss). Green: the answer's "
        "trained tokens. Red: cut off by Max sequence length.",
        "两个回答都接在同一个提示之后训练，提示只显示一次。灰色：提示（不计损失）。绿色：回答中参与训练的 token。"
        "红色：超出最大序列长度被截断。",
    ),
    "data.pref.record_head": (
        "Record **{index}**: prompt {prompt} tokens; {sides}; {format} format, template {template}.",
        "记录 **{index}**：提示 {prompt} 个 token；{sides}；{format} 格式，模板 {template}。",
    ),
    "data.pref.side": ("{side} {trained} trained", "{side} {trained} 个参与训练"),
    "data.pref.side.chosen": ("chosen", "选中"),
    "data.pref.side.rejected": ("rejected", "拒绝"),
    "data.pref.side.desirable": ("desirable", "好回答"),
    "data.pref.side.undesirable": ("undesirable", "不好的回答"),
    "data.pref.stats_table": (
        "| | |\n|---|---|\n| Records (valid / skipped) | {valid} / {skipped} |\n"
        "| Train / validation | {train} / {val} {unit} |\n| Sequences (prompt + one answer) | {sequences:,} |\n"
        "| Tokens per sequence mean / max | {mean:.1f} / {max:,} |\n| Prompt tokens mean | {prompt:.1f} |\n"
        "| Cut by Max sequence length {msl} | {cut} ({share:.1%}) |",
        "| | |\n|---|---|\n| 记录（有效 / 跳过） | {valid} / {skipped} |\n| 训练 / 验证 | {train} / {val} {unit} |\n"
        "| 序列数（提示 + 一个回答） | {sequences:,} |\n| 每条序列平均 / 最长 token 数 | {mean:.1f} / {max:,} |\n"
        "| 提示平均 token 数 | {prompt:.1f} |\n| 超过最大序列长度 {msl} 被截断 | {cut}（{share:.1%}） |",
    ),
    "data.pref.unit.pairs": ("pairs", "对"),
    "data.pref.unit.unpaired": ("answers", "个回答"),
}
i18n.add(STRINGS)

SOURCE_FIELDS = ["data.path"]  # above Upload and Load
FORMAT_FIELDS = ["data.format"]  # below them, above the column mapping
RENDER_FIELDS = ["data.template"]
PROMPT_FIELDS = ["data.system_prompt"]  # beside the rendered prompt it changes (Example as trained)
LENGTH_ROW = ["data.max_seq_len", "data.val_size"]
SAMPLE_ROW = ["data.max_samples", "data.train_on_prompt"]
DATA_FIELDS = [*SOURCE_FIELDS, *FORMAT_FIELDS, *RENDER_FIELDS, *PROMPT_FIELDS, *LENGTH_ROW, *SAMPLE_ROW]
BUNDLED = {"sample": "assets/sample_data.json", "identity": "assets/identity.json"}
"""The datasets that ship with TuneDesk, first in the picker, as a config names them (relative to the checkout)."""
COLUMN_KEYS = ("instruction", "input", "output", "system", "messages")
AUTO = "auto"
PAGE_SIZE = 20
UPLOAD_TYPES = [".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt", ".parquet"]
STATE_COLORS = {"trained": "#54A24B", "prompt": "#BAB0AC", "cut": "#E45756"}
PANE_PX = 720  # the Data tab's right pane in a 1440 px window: the header floors of record_widths are sized for it
PROBLEM_WIDTHS = [
    "10%",
    "8%",
    "17%",
    "13%",
    "52%",
]  # record, line, field, severity, reason: headers whole, reason wraps
PROBLEM_ROWS = 1000  # a file of 1,000,000 broken lines has 1,000,000 problems: the browser gets the first 1000
SLOT_1, SLOT_2 = ("chosen", "desirable"), ("rejected", "undesirable")
"""The answers the record view shows on the left and on the right."""
MAX_MASK_TOKENS = 4096  # a 32k-token record as 32k highlighted spans freezes the browser; the rest is summarised


@dataclass
class DataHandles:
    fields: dict[str, Any]
    picker: gr.Dropdown
    browse: gr.FileExplorer
    upload: gr.UploadButton
    load: gr.Button
    columns: dict[str, gr.Dropdown]
    placeholders: gr.Dataframe
    hub: data_hub.HubHandles
    """The Hugging Face Hub panel and the table of datasets to mix (app/ui/data_hub.py)."""
    status: gr.Markdown
    table: gr.Dataframe
    page: gr.Number
    prev: gr.Button
    next: gr.Button
    page_info: gr.Markdown
    problems: gr.Dataframe
    record: gr.Number
    record_info: gr.Markdown
    rendered: gr.HighlightedText
    mask: gr.HighlightedText
    sft_box: gr.Column
    """The rendered prompt and label mask of a supervised record; hidden for preference data."""
    pair_box: gr.Column
    """A preference record: the prompt once, then each answer's label mask side by side."""
    pair_prompt: gr.HighlightedText
    chosen_box: gr.Column
    chosen_mask: gr.HighlightedText
    """The chosen answer, or a desirable KTO answer (a KTO record shows in one of the two columns)."""
    rejected_box: gr.Column
    rejected_mask: gr.HighlightedText
    stats: gr.Markdown
    histogram: gr.Plot


# ---- build -----------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> DataHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=380):
            left = _build_source(ctx)
        with gr.Column(scale=3, min_width=480):
            right = _build_views(ctx)
    right["fields"] = {**left.pop("fields"), **right.pop("fields")}
    h = DataHandles(**left, **right)
    ctx.form.add_extra([*h.columns.values(), h.placeholders], _apply_extras(h), _show_extras(h))
    _wire(ctx, h)
    return h


def _section(tr: i18n.Translator, key: str) -> None:
    tr.text(gr.Markdown, key, elem_classes="td-section-title")


def _build_source(ctx: AppContext) -> dict[str, Any]:
    """The picker (friendly names) above the form's path field (what the config holds), kept in sync by _wire."""
    tr, form = ctx.tr, ctx.form
    _section(tr, "data.section.source")
    state = _picker_state(ctx.defaults.data.path, tr.lang)
    picker = tr.labelled(gr.Dropdown, "data.pick", info=True, **state, elem_id="data-picker")
    fields = form.build(SOURCE_FIELDS)
    with gr.Row():
        upload = tr.text(gr.UploadButton, "data.upload", file_types=UPLOAD_TYPES, size="sm", elem_id="data-upload")
        load = tr.text(gr.Button, "data.load", variant="primary", size="sm", elem_id="data-load")
    tr.text(gr.Markdown, "data.load.info", elem_classes="td-info")
    with tr.labelled(gr.Accordion, "data.browse", open=False, elem_id="data-browse-box"):
        tr.text(gr.Markdown, "data.browse.info", elem_classes="td-info")
        # rooted at the user's home, listed a folder at a time (Gradio's ls); dot-folders (.cache, .ssh) left out
        browse = gr.FileExplorer(
            root_dir=Path.home(),
            glob="*",
            ignore_glob="*/.*",
            file_count="single",
            show_label=False,
            max_height=300,
            elem_id="data-browse",
        )
    hub = data_hub.build(ctx)
    fields.update(form.build(FORMAT_FIELDS))
    columns, placeholders = _build_mapping(ctx)
    _section(tr, "data.section.render")
    fields.update(form.build(RENDER_FIELDS))
    with gr.Row():
        fields.update(form.build(LENGTH_ROW))
    with gr.Row():
        fields.update(form.build(SAMPLE_ROW))
    return {
        "fields": fields,
        "picker": picker,
        "browse": browse,
        "upload": upload,
        "load": load,
        "columns": columns,
        "placeholders": placeholders,
        "hub": hub,
    }


def _build_mapping(ctx: AppContext) -> tuple[dict[str, gr.Dropdown], gr.Dataframe]:
    tr, d = ctx.tr, ctx.defaults.data
    with tr.labelled(gr.Accordion, "data.columns", open=bool(d.columns)):
        tr.text(gr.Markdown, "data.columns.help", elem_classes="td-info")
        columns = {}
        with gr.Row():
            for key in COLUMN_KEYS:
                value = d.columns.get(key) or AUTO
                columns[key] = tr.labelled(
                    gr.Dropdown,
                    f"data.col.{key}",
                    info=True,
                    choices=_unique([AUTO, value]),
                    value=value,
                    allow_custom_value=True,
                    min_width=140,
                    elem_id=f"data-col-{key}",
                )
    with tr.labelled(gr.Accordion, "data.placeholders", open=bool(d.placeholders)):
        tr.text(gr.Markdown, "data.placeholders.info", elem_classes="td-info")
        placeholders = gr.Dataframe(
            value=_placeholder_rows(d.placeholders),
            headers=_placeholder_headers(tr.lang),
            column_count=2,
            interactive=True,
            show_label=False,
            elem_id="data-placeholders",
        )
    return columns, placeholders


def _build_views(ctx: AppContext) -> dict[str, Any]:
    tr = ctx.tr
    # not bound to a key: the language switch redraws it with the loaded summary (see _wire), not the idle text
    status = gr.Markdown(tr("data.status.empty"), elem_classes="td-status", elem_id="data-status")
    with gr.Tabs():
        with tr.labelled(gr.Tab, "data.tab.records", id="data-records"):
            table = gr.Dataframe(
                interactive=False, wrap=True, max_height=420, elem_id="data-table", elem_classes="td-fit"
            )
            with gr.Row(elem_id="data-pager"):  # buttons at their own height, on the page box's baseline (style.css)
                prev = tr.text(gr.Button, "data.prev", size="sm", min_width=90)
                page = tr.labelled(
                    gr.Number,
                    "data.page",
                    info=True,
                    value=1,
                    minimum=1,
                    precision=0,
                    min_width=120,
                    elem_id="data-page",
                )
                nxt = tr.text(gr.Button, "data.next", size="sm", min_width=90)
            page_info = gr.Markdown("", elem_id="data-page-info")
        with tr.labelled(gr.Tab, "data.tab.problems", id="data-problems"):
            problems = gr.Dataframe(
                interactive=False,
                wrap=True,
                max_height=420,
                column_widths=PROBLEM_WIDTHS,
                elem_id="data-problem-table",
                elem_classes="td-fit",
            )
        with tr.labelled(gr.Tab, "data.tab.example", id="data-example"):
            example = _build_example(ctx)
        with tr.labelled(gr.Tab, "data.tab.stats", id="data-stats"):
            stats = gr.Markdown("", elem_classes="td-info", elem_id="data-stats-table")
            histogram = gr.Plot(show_label=False, elem_id="data-histogram")
    return {
        "status": status,
        "table": table,
        "page": page,
        "prev": prev,
        "next": nxt,
        "page_info": page_info,
        "problems": problems,
        "stats": stats,
        "histogram": histogram,
        **example,
    }


def _build_example(ctx: AppContext) -> dict[str, Any]:
    tr = ctx.tr
    prompt_fields = ctx.form.build(PROMPT_FIELDS)  # the system prompt beside what it changes; edits re-render
    record = tr.labelled(gr.Number, "data.record", info=True, value=0, minimum=0, precision=0, elem_id="data-record")
    record_info = gr.Markdown("", elem_id="data-record-info")
    with gr.Column(elem_id="data-sft-example") as sft_box:
        rendered, mask = _build_masks(ctx)
    pair = _build_pair(ctx)
    return {
        "record": record,
        "record_info": record_info,
        "rendered": rendered,
        "mask": mask,
        "sft_box": sft_box,
        **pair,
        "fields": prompt_fields,
    }


def _state_colors() -> dict[str, str]:
    """Each mask state's color under its name in every language (the names are the categories shown)."""
    return {i18n.t(f"data.state.{s}", lang): c for s, c in STATE_COLORS.items() for lang in i18n.LANGS}


def _build_masks(ctx: AppContext) -> tuple[gr.HighlightedText, gr.HighlightedText]:
    tr = ctx.tr
    colors = {i18n.t("data.seg.response", lang): STATE_COLORS["trained"] for lang in i18n.LANGS}
    rendered = tr.labelled(
        gr.HighlightedText,
        "data.rendered",
        color_map=colors,
        show_legend=False,  # its legend lists every color_map key, both languages; data.mask.help explains
        show_inline_category=False,
        elem_id="data-rendered",
    )
    tr.text(gr.Markdown, "data.mask.help", elem_classes="td-info")
    mask = tr.labelled(
        gr.HighlightedText,
        "data.mask",
        color_map=_state_colors(),
        show_legend=False,  # as above: the help line above names the colors in the page's language
        show_inline_category=False,
        elem_id="data-mask",
    )
    return rendered, mask


def _build_pair(ctx: AppContext) -> dict[str, Any]:
    """A preference record: the shared prompt once, then the two answers' label masks side by side: chosen (or a
    desirable KTO answer) on the left, rejected (or an undesirable one) on the right."""
    tr = ctx.tr
    masks = {"color_map": _state_colors(), "show_legend": False, "show_inline_category": False}
    with gr.Column(visible=False, elem_id="data-pair-example") as pair_box:
        tr.text(gr.Markdown, "data.pref.mask_help", elem_classes="td-info")
        prompt = tr.labelled(gr.HighlightedText, "data.pref.prompt", elem_id="data-pair-prompt", **masks)
        with gr.Row(equal_height=False):
            with gr.Column(min_width=200) as chosen_box:
                chosen = tr.labelled(gr.HighlightedText, "data.pref.chosen", elem_id="data-pair-chosen", **masks)
            with gr.Column(min_width=200) as rejected_box:
                rejected = tr.labelled(gr.HighlightedText, "data.pref.rejected", elem_id="data-pair-rejected", **masks)
    return {
        "pair_box": pair_box,
        "pair_prompt": prompt,
        "chosen_box": chosen_box,
        "chosen_mask": chosen,
        "rejected_box": rejected_box,
        "rejected_mask": rejected,
    }


def _inputs(ctx: AppContext, h: DataHandles) -> set[Any]:
    """What the tab's handlers read: its fields, column mapping, placeholders, datasets, the model, the language."""
    model_fields = {c for p, c in ctx.form.components.items() if p.startswith("model.")}
    inputs = {*h.fields.values(), *h.columns.values(), h.placeholders, h.hub.sources, *model_fields}
    if ctx.lang_selector is not None:
        inputs.add(ctx.lang_selector)
    return inputs


def _example_views(h: DataHandles) -> list[Any]:
    """The record view's parts beyond the record line and the supervised prompt and mask: which view shows, and
    a preference record's prompt and answers."""
    return [h.sft_box, h.pair_box, h.pair_prompt, h.chosen_box, h.chosen_mask, h.rejected_box, h.rejected_mask]


def _views(h: DataHandles) -> list[Any]:
    """What Load / validate redraws."""
    return [
        h.status,
        h.table,
        h.page,
        h.page_info,
        h.problems,
        h.stats,
        h.histogram,
        h.record,
        h.record_info,
        h.rendered,
        h.mask,
        *h.columns.values(),
        h.placeholders,
        h.picker,
        *_example_views(h),
    ]


def _wire(ctx: AppContext, h: DataHandles) -> None:
    inputs = _inputs(ctx, h)
    views = _views(h)

    def load_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return load_data(ctx, values, progress, remember=True)  # a dataset the user chose: a recent file

    h.load.click(
        load_event, inputs=inputs, outputs=views, api_name="data_load", concurrency_id="data-load", concurrency_limit=2
    )
    h.upload.upload(
        functools.partial(upload, ctx), inputs={h.upload, *inputs}, outputs=[h.fields["data.path"], h.status]
    ).success(load_event, inputs=inputs, outputs=views, concurrency_id="data-load")
    _wire_picker(ctx, h, inputs, views, load_event)
    data_hub.wire(ctx, h.hub, h.fields["data.path"], inputs, views, load_data)
    render_views = [h.stats, h.histogram, h.record_info, h.rendered, h.mask, *_example_views(h)]
    rendering = {"inputs": inputs | {h.record}, "outputs": render_views, "concurrency_id": "data-load"}
    prompt = h.fields["data.system_prompt"]
    prompt.blur(lambda v: rerender(ctx, v), **rendering, api_name="data_rerender")
    prompt.submit(lambda v: rerender(ctx, v), **rendering)
    h.fields["data.template"].input(lambda v: rerender(ctx, v), **rendering)
    h.fields["data.train_on_prompt"].input(lambda v: rerender(ctx, v), **rendering)
    h.fields["data.max_seq_len"].release(lambda v: rerender(ctx, v), **rendering)
    page_views = [h.table, h.page, h.page_info]
    h.page.submit(lambda v: show_page(ctx, v), inputs=inputs | {h.page}, outputs=page_views, api_name="data_page")
    h.prev.click(lambda v: show_page(ctx, v, -1), inputs=inputs | {h.page}, outputs=page_views)
    h.next.click(lambda v: show_page(ctx, v, +1), inputs=inputs | {h.page}, outputs=page_views)
    record_views = [h.record_info, h.rendered, h.mask, *_example_views(h)]
    h.record.submit(
        lambda v: show_record(ctx, v), inputs=inputs | {h.record}, outputs=record_views, api_name="data_record"
    )
    h.table.select(pick_row, inputs=h.table, outputs=h.record).then(
        lambda v: show_record(ctx, v), inputs=inputs | {h.record}, outputs=record_views
    )
    if ctx.lang_selector is not None:  # every view speaks the new language: redraw them (as on first open)
        ctx.lang_selector.change(
            lambda values: load_data(ctx, values, fetch=False),
            inputs=inputs,
            outputs=views,
            concurrency_id="data-load",
            show_progress="hidden",
            api_visibility="private",
        )
    if ctx.demo is not None:  # the default dataset shows on first open
        ctx.demo.load(
            lambda values: load_data(ctx, values, fetch=False),
            inputs=inputs,
            outputs=views,
            concurrency_id="data-load",
            show_progress="hidden",
            api_visibility="undocumented",
        )


def wire(ctx: AppContext) -> None:
    """Across tabs (app.build_blocks calls it once every tab is built): choosing an objective in the Train tab
    loads the data again as that objective reads it (pairs for DPO, ORPO, SimPO; labelled answers for KTO), and
    says when the two do not fit."""
    h = ctx.data
    objective = ctx.form.components["objective"]
    objective.change(
        lambda values: load_data(ctx, values, fetch=False),
        inputs=_inputs(ctx, h) | {objective},
        outputs=_views(h),
        api_name="data_objective",
        concurrency_id="data-load",
        show_progress="hidden",
        api_visibility="private",
    )


# ---- the dataset picker ------------------------------------------------------------------------------------------
def _same_file_key(path: str) -> str:
    """What two spellings of one file share (assets/x.json and /home/me/tunedesk/assets/x.json); a Hub id as is."""
    found = paths.resolve_data_path(path)
    return str(found.resolve()) if found.exists() else path.strip()


def dataset_label(path: str, lang: str = "en") -> str:
    """The picker's name for a data path: "sample_data.json (bundled sample)", "my_data.json (uploaded)",
    "train.json (in ~/data)"; a Hub dataset id or a path that names no file as written."""
    key = _same_file_key(path)
    for kind, bundled in BUNDLED.items():
        if key == _same_file_key(bundled):
            return i18n.t(f"data.pick.{kind}", lang, name=Path(bundled).name)
    name = files.upload_name(key) if Path(key).is_absolute() else None
    if name:
        return i18n.t("data.pick.upload", lang, name=name)
    if not Path(key).is_absolute():
        return path
    folder, home = Path(key).parent, Path.home()
    shown = "~/" + str(folder.relative_to(home)) if folder.is_relative_to(home) and folder != home else str(folder)
    return i18n.t("data.pick.file", lang, name=Path(key).name, folder="~" if folder == home else shown)


def dataset_choices(current: str, lang: str = "en") -> list[tuple[str, str]]:
    """(name, path) for the picker: the bundled datasets, the recent files (app.recent), and `current` (what the
    path field names now) when it is none of those, so the picker always shows the dataset the run will use."""
    entries = [p for p in BUNDLED.values() if (paths.ROOT / p).exists()]
    seen = {_same_file_key(p) for p in entries}
    for path in [*recent.recent(), current or ""]:
        if path.strip() and _same_file_key(path) not in seen:
            entries.append(path)
            seen.add(_same_file_key(path))
    return [(dataset_label(p, lang), p) for p in entries]


def _picker_state(current: str, lang: str) -> dict[str, Any]:
    """choices and the value among them that names the same file as `current`."""
    choices = dataset_choices(current, lang)
    key = _same_file_key(current or "")
    value = next((p for _, p in choices if _same_file_key(p) == key), None)
    return {"choices": choices, "value": value}


def picker_update(current: str, lang: str = "en") -> Any:
    return gr.update(**_picker_state(str(current or ""), lang))


def _wire_picker(ctx: AppContext, h: DataHandles, inputs: set[Any], views: list[Any], load_event: Any) -> None:
    """Picker, file browser and path field name one dataset: picking or browsing writes the path field and loads
    it; any change of the path field (typing, upload, a preset, a reopened run, a restored form) redraws the
    picker's choice. The path field is what the form reads into data.path."""
    path = h.fields["data.path"]
    lang_in = [ctx.lang_selector] if ctx.lang_selector is not None else []
    path.change(
        lambda p, *lang: picker_update(p, *lang),
        inputs=[path, *lang_in],
        outputs=h.picker,
        show_progress="hidden",
        trigger_mode="always_last",
        api_visibility="private",
    )

    def picked(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return use_dataset(ctx, values, values.get(h.picker), progress)

    def browsed(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return use_dataset(ctx, values, browsed_file(values.get(h.browse)), progress)

    out = [path, *views]
    h.picker.input(picked, inputs=inputs | {h.picker}, outputs=out, api_name="data_pick", concurrency_id="data-load")
    h.browse.change(
        browsed, inputs=inputs | {h.browse}, outputs=out, api_name="data_browse", concurrency_id="data-load"
    )


def browsed_file(selected: Any) -> str | None:
    """The file picked in the browser (an absolute path); a folder or nothing picked is no dataset choice."""
    selected = selected[0] if isinstance(selected, list) and selected else selected
    return str(selected) if selected and Path(str(selected)).is_file() else None


def use_dataset(ctx: AppContext, values: dict[Any, Any], chosen: Any, progress: Any = None) -> dict[Any, Any]:
    """Picked or browsed: the path field names `chosen`, then Load / validate runs on it (and remembers it)."""
    path = ctx.data.fields["data.path"]
    if not chosen:  # the browser reports "nothing picked" when it opens; a dict of no updates is not one to Gradio
        return {path: gr.skip()}
    out = load_data(ctx, {**values, path: str(chosen)}, progress, remember=True)
    out[path] = str(chosen)
    return out


# ---- config extras: column mapping and placeholders -----------------------------------------------------------
def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _placeholder_headers(lang: str) -> list[str]:
    return [i18n.t("data.ph.key", lang), i18n.t("data.ph.text", lang)]


def _placeholder_rows(mapping: dict[str, str], keys: list[str] | None = None) -> list[list[str]]:
    """Rows of the placeholder table: the configured ones, then `keys` found in the data, else name/author."""
    rows = [[k, v] for k, v in mapping.items()]
    for key in keys or ([] if rows else ["name", "author"]):
        if key not in mapping:
            rows.append([key, ""])
    return rows


def table_pairs(value: Any) -> dict[str, str]:
    """{key: text} from the placeholder table (a DataFrame from the browser, a list of rows from a test); rows
    without a key or without text are left out (an unset placeholder trains as written, with a warning)."""
    if isinstance(value, pd.DataFrame):
        rows = value.values.tolist()
    else:
        rows = list((value.get("data") if isinstance(value, dict) else value) or [])
    out = {}
    for row in rows:
        key, text = (list(row) + ["", ""])[:2]
        key, text = str(key or "").strip().strip("{}").strip(), "" if text is None else str(text)
        if key and text.strip() and text.lower() != "nan":
            out[key] = text
    return out


def column_mapping(h: DataHandles, values: dict[Any, Any]) -> dict[str, str]:
    return {k: str(values[c]).strip() for k, c in h.columns.items() if values.get(c) and values[c] != AUTO}


def _apply_extras(h: DataHandles) -> Any:
    def apply(cfg: dict[str, Any], values: dict[Any, Any]) -> None:
        cfg["data"]["columns"] = column_mapping(h, values)
        cfg["data"]["placeholders"] = table_pairs(values.get(h.placeholders))

    return apply


def _show_extras(h: DataHandles) -> Any:
    def show(cfg: RunConfig) -> dict[Any, Any]:
        out = {c: gr.update(value=cfg.data.columns.get(k) or AUTO) for k, c in h.columns.items()}
        out[h.placeholders] = gr.update(value=_placeholder_rows(cfg.data.placeholders))
        return out

    return show


# ---- tokenizer and prepared data, cached ----------------------------------------------------------------------
def tokenizer_for(name: str, trust_remote_code: bool = False) -> Any:
    """The base model's tokenizer only (no weights): ~0.3 s for SmolLM2 the first time, then cached. Consent to
    run the model's code is asked on every call: the cache must not outlive a withdrawn consent."""
    from app import modeling  # brings torch: imported when tokens are first counted, not with the UI

    if trust_remote_code:
        modeling.require_consent(modeling.resolve_model(name), True)
    return _cached_tokenizer(name, trust_remote_code)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(name: str, trust_remote_code: bool) -> Any:
    from app import modeling

    return modeling.load_tokenizer(modeling.resolve_model(name), trust_remote_code)


def _tokenizer(name: str, trust_remote_code: bool, fetch: bool) -> tuple[Any, str | None]:
    """(tokenizer, None) or (None, why not). fetch=False (opening the page) never starts the one-time download
    of the default model (93 MB)."""
    from app import modeling

    if not fetch and name in modeling.DEFAULT_ALIASES and not (modeling.default_model_dir() / "config.json").is_file():
        return None, f"the default model {name} is not in the cache yet"
    try:
        return tokenizer_for(name, trust_remote_code), None
    except (modeling.ModelError, OSError, ValueError) as exc:
        return None, _one_line(exc)


class _Prepared:
    """The last two prepared datasets, keyed by data config, model and file time, so picking a record after
    Load re-tokenizes one record instead of the whole file."""

    def __init__(self, size: int = 2) -> None:
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.size = size
        self.lock = threading.Lock()

    @staticmethod
    def key(cfg: RunConfig, kind: str | None) -> tuple:
        """`kind`: the preference kind the objective asks for (None: as the file says)."""
        return repr(cfg.data), cfg.model.name_or_path, cfg.model.trust_remote_code, data.fingerprint(cfg.data), kind

    def get(self, cfg: RunConfig, kind: str | None = None) -> Any:
        with self.lock:
            return self.items.get(self.key(cfg, kind))

    def put(self, cfg: RunConfig, prepared: Any, kind: str | None = None) -> None:
        with self.lock:
            self.items[self.key(cfg, kind)] = prepared
            while len(self.items) > self.size:
                self.items.popitem(last=False)


PREPARED = _Prepared()


def _prepare(
    cfg: RunConfig, progress: Any = None, fetch: bool = True, lang: str = "en", kind: str | None = None
) -> tuple[Any, Any, str | None]:
    """(LoadResult, Prepared or None, why tokens were not counted); for preference data (`kind`, what the
    objective asks for, else what the file's first records are) a PreferenceLoad and PreferencePrepared. Raises
    DataError when the data is unreadable. `fetch`: a Hub dataset not downloaded yet is downloaded first, with its
    progress; opening the page (fetch=False) downloads nothing."""
    tok, why = _tokenizer(cfg.model.name_or_path.strip(), cfg.model.trust_remote_code, fetch)
    if data.missing_hub(cfg.data):  # a Hub split that is not in the cache yet
        if not fetch:
            raise data.DataError(i18n.t("data.not_fetched", lang, what=data.describe(cfg.data)))
        report = None
        if progress is not None:
            report = lambda p: progress(p.fraction, desc=hub_panel.progress_line(p, lang))  # noqa: E731
        data.fetch(cfg.data, report)
    found = kind or preference_data.detect_source(cfg.data)
    if found is not None:
        return _prepare_pairs(cfg, found, tok, why, kind)
    load = data.load_from_config(cfg.data)
    if tok is None:
        return load, None, why
    report = (lambda f, m: progress(f, desc=m)) if progress is not None else None
    try:
        prepared = data.prepare_preview(load, cfg.data, tok, report)
    except data.RenderError as exc:
        return load, None, _one_line(exc)
    PREPARED.put(cfg, prepared)
    return prepared.load, prepared, None


def _prepare_pairs(cfg: RunConfig, kind: str, tok: Any, why: str | None, asked: str | None) -> tuple:
    """_prepare for preference data: every record checked, tokens counted on up to data.TOKEN_SAMPLE of them."""
    got = preference_data.load(cfg.data, kind)
    if tok is None:
        return got, None, why
    step = -(-len(got.records) // data.TOKEN_SAMPLE)
    part = replace(got, records=got.records[::step]) if step > 1 else got  # shares the problems list
    try:
        prepared = preference_data.prepare_loaded(part, cfg, tok)
    except (data.DataError, data.RenderError) as exc:
        return got, None, _one_line(exc)
    if step > 1:  # statistics from evenly spaced records: say how many they stand for
        prepared = replace(prepared, load=got, facts={**prepared.facts, "sampled": got.valid})
    PREPARED.put(cfg, prepared, asked)
    return got, prepared, None


def _objective_kind(ctx: AppContext, cfg: RunConfig, values: dict[Any, Any]) -> str | None:
    """The preference kind the run's objective asks for, when the objective is among the handler's inputs (the
    Train tab's objective event); None: the file's own records say (Load and the record view cannot see it)."""
    known = ctx.form.components.get("objective") in values
    return preference_data.kind_of(cfg.objective) if known else None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---- handlers ---------------------------------------------------------------------------------------------------
def _read_config(ctx: AppContext, values: dict[Any, Any]) -> RunConfig:
    return ctx.form.to_config(values)


def load_data(
    ctx: AppContext, values: dict[Any, Any], progress: Any = None, fetch: bool = True, remember: bool = False
) -> dict[Any, Any]:
    """Load / validate: table page 1, problems, summary, statistics, histogram and the first valid record; the
    picker names the dataset. `remember`: the user chose this file (Load, pick, browse), so the picker offers it
    among the recent files from now on (app.recent); opening the page or switching language remembers nothing.

    Never raises: an unreadable file or a bad setting shows as the status line."""
    h = ctx.data
    lang = ctx.lang(values)
    shown_path = str(values.get(h.fields["data.path"]) or "")
    try:
        cfg = _read_config(ctx, values)
        load, prepared, no_tokens = _prepare(cfg, progress, fetch, lang, _objective_kind(ctx, cfg, values))
        frame, total = _preview(cfg, 0, load)
    except ConfigError as exc:
        return {h.status: "❌ " + i18n.t("data.config_error", lang, msg=_problems(exc, lang))}
    except (data.DataError, OSError, ValueError) as exc:
        error = "❌ " + i18n.t("data.error", lang, msg=_one_line(exc))
        return {h.status: error, **_cleared(h), h.picker: picker_update(shown_path, lang)}
    if remember:
        recent.remember(cfg.data.path)
    if isinstance(load, preference_data.PreferenceLoad):
        return _pair_loaded(ctx, cfg, values, (load, prepared, no_tokens), (frame, total))
    out = {
        h.status: _summary(load, lang, no_tokens, data.describe(cfg.data)),
        h.problems: problem_table(load.problems, lang, data_cli.inspect_args(cfg.data)),
        **_page_updates(h, frame, total, 1, lang),
        **_column_updates(h, frame, load, values),
        h.placeholders: gr.update(
            value=pd.DataFrame(
                _placeholder_rows(cfg.data.placeholders, unfilled_keys(load)), columns=_placeholder_headers(lang)
            )
        ),
        h.picker: picker_update(cfg.data.path, lang),
    }
    out.update(_stats_updates(h, prepared, lang))
    first = load.examples[0].index if load.examples else 0
    out[h.record] = first
    out.update(_record_updates(h, cfg, load, prepared, first, lang))
    return out


def _problems(exc: ConfigError, lang: str = "en") -> str:
    """A ConfigError's problems as a list, each naming the label on screen (form.explain), not the config key."""
    return "\n".join(f"- {p}" for p in explain(exc.problems, lang)) if exc.problems else str(exc)


def _cleared(h: DataHandles) -> dict[Any, Any]:
    return {
        h.table: None,
        h.page_info: "",
        h.problems: None,
        h.stats: "",
        h.histogram: None,
        h.record_info: "",
        h.rendered: None,
        h.mask: None,
        h.pair_prompt: None,
        h.chosen_mask: None,
        h.rejected_mask: None,
    }


def _summary(load: Any, lang: str, no_tokens: str | None, name: str | None = None) -> str:
    warnings = len(load.problems) - len(load.errors)
    text = i18n.t(
        "data.summary",
        lang,
        path=name or Path(load.path).name,
        format=load.format,
        records=load.records,
        valid=load.records - load.skipped,
        skipped=load.skipped,
        warnings=warnings,
    )
    if no_tokens:
        text += "\n\n⚠️ " + i18n.t("data.no_tokenizer", lang, msg=no_tokens)
    return ("✅ " if not load.problems and load.examples else "⚠️ ") + text


def problem_table(problems: list[Any], lang: str = "en", path: str = "FILE") -> pd.DataFrame:
    """One row per problem: record index, line, field, severity, reason (a note about the whole file has no index);
    the first PROBLEM_ROWS, then a row saying how many more there are and the command that lists them all (`path`:
    what follows `data inspect` there, app.data_cli.inspect_args)."""
    t = functools.partial(i18n.t, lang=lang)
    cols = [
        t("data.pcol.index"),
        t("data.pcol.line"),
        t("data.pcol.field"),
        t("data.pcol.severity"),
        t("data.pcol.reason"),
    ]
    if not problems:
        return pd.DataFrame({cols[-1]: [t("data.no_problems")]})
    rows = [
        [
            "" if p.index is None else p.index,
            "" if p.line is None else p.line,
            p.field or "",
            _severity(p.severity, lang),
            plain(p.message, lang),  # "set Placeholders", not "set data.placeholders"
        ]
        for p in problems[:PROBLEM_ROWS]
    ]
    if len(problems) > PROBLEM_ROWS:
        command = f"{_python()} -m app data inspect {path} --json"
        rows.append(["", "", "", "", t("data.problems_more", more=len(problems) - PROBLEM_ROWS, command=command)])
    return pd.DataFrame(rows, columns=cols)


def _severity(name: str, lang: str) -> str:
    key = f"data.sev.{name}"
    return i18n.t(key, lang) if key in STRINGS else name


def _python() -> str:
    """The interpreter as a fresh shell in the checkout reaches it (.venv/bin/python), else its full path: a
    command shown on screen works as printed (a bare `python` has no TuneDesk outside the venv)."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(paths.ROOT))
    except ValueError:
        return shlex.quote(str(exe))


def unfilled_keys(load: Any) -> list[str]:
    """Placeholder names the data uses without a value (from the loader's warnings), for the placeholder table."""
    found = []
    for p in load.problems:
        if "placeholder" in p.message:
            found += re.findall(r"\{\{(\w+)\}\}", p.message)
    return list(dict.fromkeys(found))


def _column_updates(h: DataHandles, frame: pd.DataFrame, load: Any, values: dict[Any, Any]) -> dict[Any, Any]:
    """Offer the file's columns in every mapping dropdown (the current choice stays, auto stays first)."""
    names = [str(c) for c in frame.columns if c not in ("#", "_error")] + list(load.columns.values())
    return {c: gr.update(choices=_unique([AUTO, *names, str(values.get(c) or AUTO)])) for c in h.columns.values()}


def _page_updates(h: DataHandles, frame: pd.DataFrame, total: int | None, page: int, lang: str) -> dict[Any, Any]:
    if total is None:
        info = i18n.t("data.page_open", lang, page=page)
    else:
        info = i18n.t("data.page_of", lang, page=page, pages=max(1, -(-total // PAGE_SIZE)), total=total)
    return {h.table: gr.update(value=frame, column_widths=record_widths(frame)), h.page: page, h.page_info: info}


def record_widths(frame: pd.DataFrame) -> list[str]:
    """Column widths (% of the pane) so the whole record fits and every cell wraps: without them a text column
    takes up to the pane's width (instruction, input, output: ~1,900 px in a 720 px pane, the output off-screen).

    Each column first gets room for its header word (and "#" for its numbers), so no header breaks letter by
    letter; the rest is shared by mean text length on this page, 8 to 120 characters (a long answer gets more room
    than a one-word input)."""
    floors = {c: _floor_pct(max([str(c), *(frame[c].astype(str) if c == "#" else [])], key=len)) for c in frame}
    weights = {c: 0.0 if c == "#" else _mean_len(frame[c]) for c in frame}
    scale = min(1.0, 100 / (sum(floors.values()) or 1))  # a pane too narrow for every header: shrink them alike
    rest = 100 - scale * sum(floors.values())
    total = sum(weights.values()) or 1
    return [f"{int((scale * floors[c] + rest * weights[c] / total) * 10) / 10}%" for c in frame]


def _floor_pct(text: str) -> float:
    """The share of a PANE_PX pane that `text` needs in the table's font: 9.5 px a character + 24 px padding."""
    return (len(text) * 9.5 + 24) / PANE_PX * 100


def _mean_len(column: pd.Series) -> float:
    return float(min(max(column.astype(str).str.len().mean() if len(column) else 8, 8), 120))


def show_page(ctx: AppContext, values: dict[Any, Any], step: int = 0) -> dict[Any, Any]:
    """The table page in the page box (+ step for Previous / Next), clamped to the pages there are."""
    h = ctx.data
    lang = ctx.lang(values)
    try:
        cfg = _read_config(ctx, values)
        page = max(1, int(values.get(h.page) or 1) + step)
        prepared = PREPARED.get(cfg)
        load = prepared.load if prepared is not None else None  # a mix numbers its records as its last Load did
        frame, total = _preview(cfg, page - 1, load)
        if total is not None and page > 1 and (page - 1) * PAGE_SIZE >= total:
            page = max(1, -(-total // PAGE_SIZE))
            frame, total = _preview(cfg, page - 1, load)
    except (ConfigError, data.DataError, OSError, ValueError) as exc:
        return {h.page_info: "❌ " + i18n.t("data.error", lang, msg=_one_line(exc))}
    return _page_updates(h, frame, total, page, lang)


def _preview(cfg: RunConfig, page: int, load: Any) -> tuple[pd.DataFrame, int | None]:
    """data.preview of one page. Preference data is not numbered as a supervised mix: of several datasets, the
    first one's records show."""
    if isinstance(load, preference_data.PreferenceLoad) and len(cfg.data.datasets()) > 1:
        first = cfg.data.datasets()[0]
        return data.preview(replace(cfg.data, path=first.path, sources=[first]), page, PAGE_SIZE)
    return data.preview(cfg.data, page, PAGE_SIZE, cfg.data.format, cfg.data.columns, load)


def pick_row(table: Any, evt: gr.SelectData) -> Any:
    """Clicking a table row picks its record (the '#' column) for the example view."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    try:
        return int(table.iloc[row]["#"]) if isinstance(table, pd.DataFrame) else int(table[row][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return gr.update()


# ---- statistics ------------------------------------------------------------------------------------------------
def _stats_updates(h: DataHandles, prepared: Any, lang: str) -> dict[Any, Any]:
    if prepared is None:
        return {h.stats: "", h.histogram: None}
    if isinstance(prepared, preference_data.PreferencePrepared):
        return _pair_stats(h, prepared, lang)
    s = prepared.stats
    text = i18n.t(
        "data.stats_table",
        lang,
        valid=s.valid,
        skipped=s.skipped,
        total=s.total_tokens,
        mean=s.mean_tokens,
        max=s.max_tokens,
        msl=s.max_seq_len,
        cut=s.truncated,
        share=s.truncated_share,
        train=s.train_count,
        val=s.val_count,
        epoch=s.tokens_per_epoch,
    )
    if prepared.sampled:
        text = i18n.t("data.stats_sampled", lang, sample=len(s.lengths), total=prepared.sampled) + "\n\n" + text
    return {h.stats: text, h.histogram: _histogram(s.lengths, s.max_seq_len, lang)}


def _histogram(lengths: list[int], max_seq_len: int, lang: str) -> Any:
    """data.length_histogram with its title, axes and cut line in the page's language."""
    fig = data.length_histogram(lengths, max_seq_len)
    cut = sum(n > max_seq_len for n in lengths)
    share = cut / len(lengths) if lengths else 0.0
    fig.update_layout(
        title=i18n.t("data.hist.title", lang, n=len(lengths)),
        xaxis_title=i18n.t("data.hist.x", lang),
        yaxis_title=i18n.t("data.hist.y", lang),
    )
    for note in fig.layout.annotations[:1]:  # the max_seq_len line's label
        note.text = i18n.t("data.hist.cut", lang, msl=max_seq_len, cut=cut, share=share)
    return fig


# ---- one record as trained ------------------------------------------------------------------------------------
def show_record(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """The record in the record box, rendered and masked exactly as the trainer sees it."""
    h = ctx.data
    lang = ctx.lang(values)
    try:
        cfg = _read_config(ctx, values)
        load, prepared = _loaded(ctx, cfg, values)
    except (ConfigError, data.DataError, OSError, ValueError) as exc:
        return {h.record_info: "❌ " + i18n.t("data.error", lang, msg=_one_line(exc))}
    index = int(values.get(h.record) or 0)
    return _record_updates(h, cfg, load, prepared, index, lang)


def rerender(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """A render setting changed (system prompt, template, train on prompt, max sequence length): the statistics
    and the record on screen again, as training will now see them (the token counts move with the prompt)."""
    h = ctx.data
    lang = ctx.lang(values)
    try:
        cfg = _read_config(ctx, values)
        load, prepared = _loaded(ctx, cfg, values)
    except ConfigError as exc:
        return {h.record_info: "❌ " + i18n.t("data.config_error", lang, msg=_problems(exc, lang))}
    except (data.DataError, OSError, ValueError) as exc:
        return {h.record_info: "❌ " + i18n.t("data.error", lang, msg=_one_line(exc))}
    out = _stats_updates(h, prepared, lang)
    out.update(_record_updates(h, cfg, load, prepared, int(values.get(h.record) or 0), lang))
    return out


def _loaded(ctx: AppContext, cfg: RunConfig, values: dict[Any, Any]) -> tuple[Any, Any]:
    """(load, prepared) as the last Load left them for this config, else loaded and prepared again."""
    kind = _objective_kind(ctx, cfg, values)
    prepared = PREPARED.get(cfg, kind)
    if prepared is not None:
        return prepared.load, prepared
    load, prepared, _ = _prepare(cfg, kind=kind)
    return load, prepared


def _record_updates(h: DataHandles, cfg: RunConfig, load: Any, prepared: Any, index: int, lang: str) -> dict[Any, Any]:
    """The record view: a supervised example's rendered prompt and mask, or a preference record's prompt and
    answers (the other view hidden)."""
    pairs = isinstance(load, preference_data.PreferenceLoad)
    shown = {h.sft_box: gr.update(visible=not pairs), h.pair_box: gr.update(visible=pairs)}
    if pairs:
        return {**shown, **_pair_record(h, cfg, load, prepared, index, lang)}
    return {**shown, **_example_record(h, cfg, load, prepared, index, lang)}


def _example_record(h: DataHandles, cfg: RunConfig, load: Any, prepared: Any, index: int, lang: str) -> dict:
    example = load.examples.find(index)
    if example is None:
        return {h.record_info: _why_missing(load.problems, load.records, index, lang), h.rendered: None, h.mask: None}
    if prepared is None:  # no tokenizer: the record is valid but cannot be rendered
        return {h.record_info: "", h.rendered: None, h.mask: None}
    tok = tokenizer_for(cfg.model.name_or_path.strip(), cfg.model.trust_remote_code)
    try:
        return _render(h, cfg, example, tok, prepared.template, lang)
    except data.RenderError as exc:
        return {h.record_info: "❌ " + _one_line(exc), h.rendered: None, h.mask: None}


def _why_missing(problems: list[Any], records: int, index: int, lang: str) -> str:
    """Why record `index` has no view: its errors, or that there is no such record (`records` in the file)."""
    found = [p for p in problems if p.index == index and p.severity == "error"]
    if found:
        return i18n.t(
            "data.record_skipped",
            lang,
            index=index,
            problems="\n".join(f"- {p.field or '-'}: {p.message}" for p in found),
        )
    if records == 0:
        return i18n.t("data.record_none", lang)
    return i18n.t("data.record_missing", lang, index=index, last=records - 1)


def _render(h: DataHandles, cfg: RunConfig, example: Any, tok: Any, template: str, lang: str) -> dict[Any, Any]:
    dcfg = replace(cfg.data, template=template)
    segments = data.render_segments(example, tok, template, dcfg.system_prompt)
    response = i18n.t("data.seg.response", lang)
    rendered = [(text, response if is_response else None) for text, is_response in segments]
    encoded = data.encode_example(example, tok, dcfg)
    full = data.encode_example(example, tok, replace(dcfg, max_seq_len=10**9)) if encoded.truncated else None
    view = data.mask_view(encoded, tok, full.input_ids[:MAX_MASK_TOKENS] if full else None)
    names = {s: i18n.t(f"data.state.{s}", lang) for s in STATE_COLORS}
    mask = [(text, names[state]) for text, state in view[:MAX_MASK_TOKENS]]
    trained = sum(label != data.IGNORE for label in encoded.labels)
    cut = encoded.full_length - len(encoded.input_ids)
    info = i18n.t(
        "data.record_head",
        lang,
        index=example.index,
        tokens=encoded.full_length,
        trained=trained,
        cut=i18n.t("data.record_cut", lang, cut=cut) if cut else "",
        template=template,
    )
    return {h.record_info: info, h.rendered: rendered, h.mask: mask}


# ---- preference data: pairs and labelled answers ----------------------------------------------------------------
def _pair_loaded(ctx: AppContext, cfg: RunConfig, values: dict[Any, Any], loaded: tuple, page: tuple) -> dict:
    """load_data for preference data: what it is and what trains on it, its problems, its statistics and the
    first valid record's prompt and answers."""
    h = ctx.data
    lang = ctx.lang(values)
    (got, prepared, no_tokens), (frame, total) = loaded, page
    objective = cfg.objective if ctx.form.components.get("objective") in values else None
    rows = _placeholder_rows(cfg.data.placeholders, unfilled_keys(got))
    out = {
        h.status: _pair_summary(got, lang, no_tokens, data.describe(cfg.data), objective),
        h.problems: problem_table(got.problems, lang, data_cli.inspect_args(cfg.data)),
        **_page_updates(h, frame, total, 1, lang),
        h.placeholders: gr.update(value=pd.DataFrame(rows, columns=_placeholder_headers(lang))),
        h.picker: picker_update(cfg.data.path, lang),
        **_stats_updates(h, prepared, lang),
    }
    first = got.records[0].index if got.records else 0
    out[h.record] = first
    out.update(_record_updates(h, cfg, got, prepared, first, lang))
    return out


def _pair_summary(got: Any, lang: str, no_tokens: str | None, name: str, objective: str | None) -> str:
    """What the data is (pairs or labelled answers, in which layouts, how many valid) and which objective trains
    on it; `objective` None when this handler cannot see the Train tab's choice."""
    t = functools.partial(i18n.t, lang=lang)
    text = t(
        "data.pref.summary",
        path=name,
        what=t(f"data.pref.kind.{got.kind}"),
        layouts=", ".join(preference_data.LAYOUTS[x] for x in got.layouts),
        records=got.read,
        valid=got.valid,
        skipped=got.skipped,
        warnings=len(got.problems) - len(got.errors),
    )
    if objective is None:
        text += " " + t(f"data.pref.train_with.{got.kind}")
    elif objective == "sft":
        text += "\n\n⚠️ " + t("data.pref.sft")
    else:
        text += " " + t("data.pref.trains", objective=objective.upper())
    if got.kind == preference_data.UNPAIRED and {"trl", "ranking"} & set(got.layouts):
        text += " " + t("data.pref.kto_pairs")
    if no_tokens:
        text += "\n\n⚠️ " + t("data.no_tokenizer", msg=no_tokens)
    return ("✅ " if not got.problems and got.records and objective != "sft" else "⚠️ ") + text


def _pair_stats(h: DataHandles, prepared: Any, lang: str) -> dict[Any, Any]:
    """Records, the split, tokens per sequence (prompt + one answer) and how many are cut, with their histogram."""
    f, got, lengths = prepared.facts, prepared.load, prepared.lengths
    text = i18n.t(
        "data.pref.stats_table",
        lang,
        valid=got.valid,
        skipped=got.skipped,
        train=f["train"],
        val=f["val"],
        unit=i18n.t(f"data.pref.unit.{got.kind}", lang),
        sequences=len(lengths),
        mean=f["tokens_mean"],
        max=f["tokens_max"],
        prompt=f["prompt_tokens_mean"],
        msl=f["max_length"],
        cut=f["cut"],
        share=f["cut"] / len(lengths) if lengths else 0.0,
    )
    if f.get("sampled"):
        text = i18n.t("data.stats_sampled", lang, sample=f["valid"], total=f["sampled"]) + "\n\n" + text
    return {h.stats: text, h.histogram: _histogram(lengths, f["max_length"], lang)}


def _pair_record(h: DataHandles, cfg: RunConfig, got: Any, prepared: Any, index: int, lang: str) -> dict:
    """A preference record as it trains: the prompt once, then each answer's label mask (the second hidden for a
    single KTO answer), or why the record is not trained."""
    records = [r for r in got.records if r.index == index]
    empty = {h.pair_prompt: None, h.chosen_mask: None, h.rejected_mask: None}
    if not records:
        return {**empty, h.record_info: _why_missing(got.problems, got.read, index, lang)}
    if prepared is None:  # no tokenizer: the record is valid but cannot be tokenized
        return {**empty, h.record_info: ""}
    tok = tokenizer_for(cfg.model.name_or_path.strip(), cfg.model.trust_remote_code)
    try:
        return _render_pair(h, cfg.data, records, tok, lang)
    except data.RenderError as exc:
        return {**empty, h.record_info: "❌ " + _one_line(exc)}


def _render_pair(h: DataHandles, dcfg: Any, records: list[Any], tok: Any, lang: str) -> dict[Any, Any]:
    t = functools.partial(i18n.t, lang=lang)
    msl = dcfg.max_seq_len
    sides, prompt_ids = _pair_sides(records, tok, dcfg)
    kept = max(0, msl - len(prompt_ids))
    heads = []
    for side, ids in sides.items():
        cut = t("data.record_cut", cut=len(ids) - kept) if len(ids) > kept else ""
        heads.append(t("data.pref.side", side=t(f"data.pref.side.{side}"), trained=min(kept, len(ids))) + cut)
    info = t(
        "data.pref.record_head",
        index=records[0].index,
        prompt=len(prompt_ids),
        sides=", ".join(heads),
        format="conversational" if preference_data.conversational(dcfg, tok) else "standard",
        template=data.resolve_template(dcfg.template, tok),
    )
    columns = {}
    for box, mask, names in ((h.chosen_box, h.chosen_mask, SLOT_1), (h.rejected_box, h.rejected_mask, SLOT_2)):
        ids = next((ids for side, ids in sides.items() if side in names), None)
        columns[box] = gr.update(visible=ids is not None)
        columns[mask] = None if ids is None else _token_view(ids, kept, "trained", tok, lang)
    return {h.record_info: info, h.pair_prompt: _token_view(prompt_ids, msl, "prompt", tok, lang), **columns}


def _pair_sides(records: list[Any], tok: Any, dcfg: Any) -> tuple[dict[str, list[int]], list[int]]:
    """({side: answer token ids before the cut}, prompt ids): chosen and rejected of a pair, or each labelled
    answer (a pair read for KTO gives two), tokenized as TRL tokenizes them (preference_data.encode)."""
    sides, prompt_ids = {}, []
    for record in records:
        encoding = preference_data.encode(record, tok, replace(dcfg, max_seq_len=10**9))
        if encoding.error:
            raise data.RenderError(encoding.error)
        for name, encoded in encoding.answers.items():
            side = name if name != "completion" else "desirable" if record.label else "undesirable"
            prompt_ids = encoded.input_ids[: encoding.prompt_tokens]
            sides[side] = encoded.input_ids[encoding.prompt_tokens :]
    return sides, prompt_ids


def _token_view(ids: list[int], kept: int, state: str, tok: Any, lang: str) -> list[tuple[str, str]]:
    """mask_view of one part (the prompt, or an answer): its first `kept` tokens in `state`, the rest cut."""
    shown = ids[:MAX_MASK_TOKENS]
    labels = [data.IGNORE if state == "prompt" else t for t in shown[:kept]]
    encoded = data.Encoded(shown[:kept], labels, len(ids), len(ids) > kept, 0)
    view = data.mask_view(encoded, tok, shown if len(shown) > kept else None)
    names = {s: i18n.t(f"data.state.{s}", lang) for s in STATE_COLORS}
    return [(text, names[s]) for text, s in view]


# ---- upload -------------------------------------------------------------------------------------------------------
def upload(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Keep the browser upload in TuneDesk's uploads folder (app.files.keep_upload: moved out of Gradio's cache,
    stored once by content) and point data.path at it: a run's config.yaml names that file, and Resume after a
    restart must still find it."""
    h = ctx.data
    lang = ctx.lang(values)
    src = values.get(h.upload)
    src = src[0] if isinstance(src, list) else src
    if not src:
        return {h.status: i18n.t("data.status.empty", lang)}
    try:
        target = files.keep_upload(str(src))
    except OSError as exc:
        return {h.status: "❌ " + i18n.t("data.error", lang, msg=_one_line(exc))}
    recent.remember(target)  # the picker offers it as "my_data.json (uploaded)" from now on
    return {h.fields["data.path"]: str(target), h.status: i18n.t("data.uploaded", lang, name=target.name)}
