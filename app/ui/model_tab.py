"""Model tab: pick a preset or a base model, load or inspect it, choose the method, and watch the memory estimate.

The estimate panel redraws on every change of a control that moves memory, across tabs (data and train fields
are built later), so its listener is registered in `wire()` once every tab exists. It is also the named API
endpoint `estimate`.
"""

from __future__ import annotations

import functools
import gc
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
import yaml
from gradio.components.plot import PlotData

from app import devices, estimate, memory, methods, paths
from app.config import ConfigError, RunConfig, deep_merge
from app.ui import hub_panel, i18n, plots
from app.ui.form import ALL_LINEAR, BY_PATH, explain, from_widget, get_path, to_widget

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "model.preset": ("Preset", "预设"),
    "model.preset.info": (
        "A tested starting point for a model size, method and GPU; Apply fills the form.",
        "针对某个模型规模、方法和显卡的已验证起点；点击“应用”填入表单。",
    ),
    "model.apply_preset": ("Apply preset", "应用预设"),
    "model.load": ("Load", "加载"),
    "model.inspect": ("Inspect (no weights)", "查看结构（不加载权重）"),
    "model.section.model": ("Base model", "基础模型"),
    "model.section.method": ("Method", "微调方法"),
    "model.section.quant": ("Quantization", "量化"),
    "model.section.lora": ("LoRA", "LoRA"),
    "model.section.freeze": ("Freeze", "冻结"),
    "model.section.memory": ("Memory estimate", "显存估算"),
    "model.section.compare": ("Methods compared for this model", "该模型各方法对比"),
    "model.section.advanced": ("Advanced model options", "高级模型选项"),
    "model.fits_yes": ("yes", "能"),
    "model.fits_no": ("no", "不能"),
    "model.info_empty": (
        "Load or inspect a model to see its architecture and layers.",
        "加载或查看模型以显示其结构和层。",
    ),
    "model.loading": ("Loading {name}...", "正在加载 {name}..."),
    "model.loaded": ("Loaded **{name}** in {secs:.1f} s.", "已加载 **{name}**，用时 {secs:.1f} 秒。"),
    "model.inspected": ("Inspected **{name}** without loading weights.", "已查看 **{name}** 的结构（未加载权重）。"),
    "model.not_local": (
        "{name} is not on this machine, so only its structure is shown (no weights loaded). Press Download to get "
        "it from the Hugging Face Hub, then Load.",
        "{name} 不在本机，只显示其结构（未加载权重）。点击“下载”从 Hugging Face Hub 获取，然后“加载”。",
    ),
    "model.device_busy": (
        "A training run is using {device}; showing the structure only (no weights loaded).",
        "训练任务正在使用 {device}；只显示结构（未加载权重）。",
    ),
    "model.error": ("Could not open the model: {msg}", "无法打开模型：{msg}"),
    "model.not_loaded": (
        "**{name}** is not loaded: Load or Inspect shows its architecture and layers.",
        "**{name}** 尚未加载：点击“加载”或“查看结构”显示其结构和层。",
    ),
    "model.config_error": ("Fix these settings first:\n{msg}", "请先修正这些设置：\n{msg}"),
    "model.row.architecture": ("Architecture", "架构"),
    "model.row.parameters": ("Parameters", "参数量"),
    "model.row.layers": ("Layers", "层数"),
    "model.row.hidden": ("Hidden size", "隐藏维度"),
    "model.row.vocab": ("Vocabulary", "词表大小"),
    "model.row.dtype": ("Dtype", "数据类型"),
    "model.row.device": ("Device", "设备"),
    "model.row.load_time": ("Load time", "加载时间"),
    "model.row.chat_template": ("Chat template", "聊天模板"),
    "model.row.linear": ("Linear modules (LoRA targets)", "线性层（LoRA 目标）"),
    "model.yes": ("yes", "有"),
    "model.no": ("no", "无"),
    "model.verdict.fits": (
        "Fits: {total:.2f} GiB of {cap:.1f} GiB ({device}).",
        "可以装下：{total:.2f} GiB / {cap:.1f} GiB（{device}）。",
    ),
    "model.verdict.tight": (
        "Tight: {total:.2f} GiB of {cap:.1f} GiB ({device}); little margin for fragmentation.",
        "很紧：{total:.2f} GiB / {cap:.1f} GiB（{device}）；几乎没有余量。",
    ),
    "model.verdict.no": (
        "Does not fit: {total:.2f} GiB needed, {cap:.1f} GiB on {device}. Try a fix below.",
        "装不下：需要 {total:.2f} GiB，{device} 只有 {cap:.1f} GiB。试试下面的修复方案。",
    ),
    "model.verdict.no_fix": (
        "Does not fit: {total:.2f} GiB needed, {cap:.1f} GiB on {device}, and no change offered here is enough: "
        "pick a smaller model or another device.",
        "装不下：需要 {total:.2f} GiB，{device} 只有 {cap:.1f} GiB，这里的修改都不够：请换更小的模型或其他设备。",
    ),
    "model.verdict.unknown": (
        "Needs {total:.2f} GiB; no {device} device detected to compare with.",
        "需要 {total:.2f} GiB；未检测到可比较的 {device} 设备。",
    ),
    "model.trainable": (
        "Trainable parameters: **{trainable:,}** of {total:,} ({share:.3f}%)",
        "可训练参数：**{trainable:,}** / {total:,}（{share:.3f}%）",
    ),
    "model.estimate_error": ("Cannot estimate: {msg}", "无法估算：{msg}"),
    "model.fix": ("{label} → {total:.2f} GiB", "{label} → {total:.2f} GiB"),
    # the fixes (app.estimate.Fix.key), their numbers from Fix.params
    "model.fix.gradient_checkpointing": (
        "Turn on gradient checkpointing (~30% slower, same result)",
        "开启梯度检查点（约慢 30%，结果相同）",
    ),
    "model.fix.micro_batch": (
        "Largest micro-batch that fits: {batch} × {accum} accumulation steps (same effective batch)",
        "能装下的最大微批：{batch} × 累积 {accum} 步（有效批量不变）",
    ),
    "model.fix.optimizer_8bit": ("8-bit AdamW states ({optimizer})", "8 位 AdamW 优化器状态（{optimizer}）"),
    "model.fix.quantize_4bit": (
        "QLoRA: 4-bit NF4 base weights with LoRA adapters",
        "QLoRA：4 位 NF4 底座权重 + LoRA 适配器",
    ),
    "model.fix.shorter_seq": (
        "Largest sequence length that fits: {seq} tokens (longer examples are cut)",
        "能装下的最大序列长度：{seq} 个 token（更长的样本会被截断）",
    ),
    "model.fix.shorter_seq.cut": (
        "Largest sequence length that fits: {seq} tokens ({cut} of your examples are cut)",
        "能装下的最大序列长度：{seq} 个 token（你的样本中有 {cut} 条会被截断）",
    ),
    "model.fix.combined": ("All of: {parts}", "全部应用：{parts}"),
    "model.sized.data": (
        "Sized for your data ({dataset}): the longest batch is {rows} × {tokens} tokens.",
        "按你的数据估算（{dataset}）：最长的批次为 {rows} × {tokens} 个 token。",
    ),
    "model.sized.config": (
        "Sized for Micro-batch size × Max sequence length: {rows} × {tokens} tokens (no dataset measured).",
        "按 微批大小 × 最大序列长度 估算：{rows} × {tokens} 个 token（未测量数据集）。",
    ),
    "model.sized.pending": (
        "Measuring the token lengths of {dataset}...; sized for {rows} × {tokens} tokens meanwhile.",
        "正在测量 {dataset} 的 token 长度...；暂按 {rows} × {tokens} 个 token 估算。",
    ),
    "model.device.cpu": ("CPU RAM", "内存"),
    "model.fix_applied": ("Applied: {label}", "已应用：{label}"),
    "model.fix_stale": (
        "That suggestion no longer applies; the estimate has been redrawn.",
        "该建议已失效，估算已刷新。",
    ),
    "model.details": ("Estimate details (JSON)", "估算明细（JSON）"),
    "model.fixes_title": (
        "One click applies a fix to the form (best first):",
        "点击即可把修复方案应用到表单（最优在前）：",
    ),
    "model.preset_applied": ("Applied preset {name}.", "已应用预设 {name}。"),
    "model.preset_error": ("Preset {name} could not be applied: {msg}", "无法应用预设 {name}：{msg}"),
    "model.no_preset": ("Pick a preset first.", "请先选择一个预设。"),
    "model.col.method": ("method", "方法"),
    "model.col.memory": ("memory (GiB)", "显存 (GiB)"),
    "model.col.trainable": ("trainable params", "可训练参数"),
    "model.col.fits": ("fits", "能否装下"),
    "model.col.speed": ("speed vs LoRA", "相对 LoRA 速度"),
    "model.col.notes": ("notes", "说明"),
    # the memory bar's parts (memory.BREAKDOWN_KEYS), English as memory.LABELS
    "model.part.weights": ("model weights", "模型权重"),
    "model.part.adapter": ("LoRA adapter", "LoRA 适配器"),
    "model.part.gradients": ("gradients", "梯度"),
    "model.part.optimizer": ("optimizer states", "优化器状态"),
    "model.part.reference": ("reference model", "参考模型"),
    "model.part.activations": ("activations", "激活值"),
    "model.part.logits": ("logits + loss", "logits + 损失"),
    "model.part.pairs": ("chosen + rejected (2nd sequence)", "优选 + 劣选（第二条序列）"),
    "model.part.workspace": ("backward / step buffers", "反向 / 更新步缓冲区"),
    "model.part.allocator": ("allocator cache", "分配器缓存"),
    "model.part.runtime": ("CUDA context", "CUDA 上下文"),
    "model.part.gathered": ("gathered layers (unsharded)", "聚合的层（未分片）"),
    "model.device.each": ("each of {gpus} GPUs: {label}", "{gpus} 块 GPU 中的每一块：{label}"),
    "model.device.each_cpu": ("each of {gpus} processes' share of CPU RAM", "{gpus} 个进程各自分得的内存"),
    "model.plan": ("Plan: {why}", "方案：{why}"),
    # the methods compared (app.methods.TABLE notes, English as there)
    "model.note.full": (
        "best fit to the data; most memory; can forget general skills",
        "最贴合数据；显存最多；可能遗忘通用能力",
    ),
    "model.note.freeze": (
        "trains only the last layers: fast, weaker on new formats",
        "只训练最后几层：快，但学新格式较弱",
    ),
    "model.note.lora": (
        "close to full fine-tuning on instruction data; small adapter files",
        "在指令数据上接近全参数微调；适配器文件小",
    ),
    "model.note.qlora": (
        "LoRA on a 4-bit base: ~1/3 the weight memory, slightly lower quality, slower steps",
        "在 4 位底座上做 LoRA：权重显存约 1/3，质量略低，步更慢",
    ),
    "model.trust_confirm": ("I have read this model's code and trust it", "我已阅读并信任该模型的代码"),
    "model.trust_warning": (
        "Trust remote code runs the Python files shipped with the model (modeling_*.py) with your account's rights: "
        "they can read your files and reach the network. It stays off until you tick this too.",
        "信任远程代码会以你的账户权限运行模型自带的 Python 文件（modeling_*.py）：它们可以读取你的文件并访问网络。"
        "只有同时勾选此项才会开启。",
    ),
}
i18n.add(STRINGS)

TRUST_UNCONFIRMED = (
    'model.trust_remote_code: on but not confirmed; remote code runs with your rights. Tick "I have read this '
    "model's code and trust it\" under it (Advanced model options), or turn it off"
)

BASE_FIELD = "model.name_or_path"  # under the presets, the catalog ids as suggestions
ADVANCED_FIELDS = ["model.attn_implementation", "model.trust_remote_code"]  # folded under Advanced
METHOD_FIELDS = ["method"]
QUANT_FIELDS = ["quant.bits", "quant.type", "quant.double_quant", "quant.compute_dtype"]
LORA_NUMBERS = ["lora.rank", "lora.alpha", "lora.dropout"]  # one row
LORA_TARGETS = ["lora.target_modules"]  # full width: the model's linear layers as choices
LORA_SWITCHES = ["lora.use_dora", "lora.use_rslora"]  # one row
FREEZE_FIELDS = ["freeze.trainable_layers", "freeze.train_norms"]
# Llama-family names: the picker's choices before a model is loaded or inspected (then replaced by the real ones).
DEFAULT_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_FIXES = 4
# Fields that change the dataset's token lengths (app.estimate.data_lengths): the estimate redraws on them too.
DATA_FIELDS = ["data.path", "data.format", "data.template", "data.system_prompt", "data.max_samples", "train.packing"]


@dataclass
class ModelHandles:
    fields: dict[str, Any]
    preset: gr.Dropdown
    apply_preset: gr.Button
    load: gr.Button
    inspect: gr.Button
    status: gr.Markdown
    info: gr.Markdown
    info_state: gr.State
    quant_group: gr.Group
    lora_group: gr.Group
    freeze_group: gr.Group
    plot: gr.Plot
    verdict: gr.Markdown
    sized: gr.Markdown
    pending: gr.State
    trainable: gr.Markdown
    fixes_title: gr.Markdown
    fix_buttons: list[gr.Button]
    fix_state: gr.State
    compare: gr.Dataframe
    details: gr.JSON
    trust_confirm: gr.Checkbox | None = None
    hub: hub_panel.HubHandles | None = None


# ---- the loaded model: one at a time in this process ---------------------------------------------------------
class ModelHolder:
    """Keeps the Model tab's loaded model; loading another (or starting training) releases the previous one."""

    def __init__(self) -> None:
        self.loaded: Any = None
        self.lock = threading.Lock()

    def load(self, cfg: RunConfig, progress: Any = None) -> Any:
        from app import modeling

        with self.lock:
            self._release()
            self.loaded = modeling.load_model(
                cfg.model,
                cfg.quant if methods.of(cfg).quantized else None,
                cfg.train.device,
                cfg.train.precision,
                progress,
            )
            return self.loaded

    def release(self) -> None:
        with self.lock:
            self._release()

    def _release(self) -> None:
        if self.loaded is not None:
            self.loaded = None
            gc.collect()  # drop the weights now, not at some later collection (a 7B fp16 model is 14 GB)


HOLDER = ModelHolder()
devices.on_claim(lambda device: HOLDER.release())  # a training run starts: its memory is worth more than this copy


# ---- build -----------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> ModelHandles:
    tr = ctx.tr
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            fields, widgets = _build_model_column(ctx)
            groups = _build_method_column(ctx, fields)
        with gr.Column(scale=2, min_width=360):
            panel = _build_memory_panel(tr)
    h = ModelHandles(fields=fields, **widgets, **groups, **panel, compare=_build_compare(tr))
    fields["method"].change(
        lambda m: _method_visibility(h, m),
        inputs=fields["method"],
        outputs=[h.quant_group, h.lora_group, h.freeze_group],
        show_progress="hidden",
        api_visibility="private",
    )
    _wire_choices(ctx, h)
    return h


def _wire_choices(ctx: AppContext, h: ModelHandles) -> None:
    """Choices that imply others: a method its quantization, all-linear or single targets, the model's layers."""
    f = h.fields
    hidden = {"show_progress": "hidden", "api_visibility": "undocumented"}
    f["method"].input(
        functools.partial(method_quantization, ctx),
        inputs={f["method"], f["quant.bits"], f["quant.type"]},
        outputs=[f["quant.bits"], f["quant.type"]],
        api_name="method_quantization",
        **hidden,
    )
    f["lora.target_modules"].select(
        exclusive_targets,
        inputs=f["lora.target_modules"],
        outputs=f["lora.target_modules"],
        api_name="exclusive_targets",
        **hidden,
    )
    f["model.name_or_path"].change(
        functools.partial(forget_model, ctx),
        inputs={f["model.name_or_path"], f["freeze.trainable_layers"], ctx.lang_selector} - {None},
        outputs=[h.status, h.info, h.info_state, f["freeze.trainable_layers"]],
        api_name="forget_model",
        **hidden,
    )


def _section(tr: i18n.Translator, key: str) -> None:
    tr.text(gr.Markdown, key, elem_classes="td-section-title")


def _build_model_column(ctx: AppContext) -> tuple[dict[str, Any], dict[str, Any]]:
    tr = ctx.tr
    _section(tr, "model.section.model")
    with gr.Row():
        preset = tr.labelled(gr.Dropdown, "model.preset", info=True, choices=preset_choices(), value=None, scale=4)
        apply_preset = tr.text(gr.Button, "model.apply_preset", scale=1, min_width=120)
    fields = ctx.form.build([BASE_FIELD], choices={BASE_FIELD: hub_panel.base_choices()})
    with gr.Row():
        load = tr.text(gr.Button, "model.load", variant="primary", min_width=100)
        inspect = tr.text(gr.Button, "model.inspect", min_width=100)
    status = gr.Markdown("", elem_classes="td-status")
    hub = hub_panel.build(ctx)  # Download (the model named above), Hub search, token
    # not bound to a key: it shows the loaded model; a language switch re-renders it from info_state (see wire)
    info = gr.Markdown(tr("model.info_empty"), elem_classes="td-info")
    with tr.labelled(gr.Accordion, "model.section.advanced", open=False):
        fields.update(ctx.form.build(ADVANCED_FIELDS))
        trust_confirm = _build_trust_confirm(ctx, fields["model.trust_remote_code"])
    return fields, {
        "preset": preset,
        "apply_preset": apply_preset,
        "load": load,
        "inspect": inspect,
        "status": status,
        "info": info,
        "info_state": gr.State(None),
        "trust_confirm": trust_confirm,
        "hub": hub,
    }


def _build_trust_confirm(ctx: AppContext, trust: gr.Checkbox) -> gr.Checkbox:
    """The second tick remote code needs: shown with its warning when Trust remote code is ticked, cleared each time
    it is ticked again or a config is loaded into the form. Until it is ticked, reading the form raises ConfigError
    (TRUST_UNCONFIRMED), so Start, Load, Inspect and the Data tab refuse with that message."""
    tr = ctx.tr
    confirm = gr.Checkbox(
        value=False,
        label=tr("model.trust_confirm"),
        info=tr("model.trust_warning"),
        visible=ctx.defaults.model.trust_remote_code,
        elem_id="trust-confirm",
    )
    tr.bind(confirm, label="model.trust_confirm", info="model.trust_warning")
    trust.change(
        lambda on: gr.update(visible=bool(on), value=False),
        inputs=trust,
        outputs=confirm,
        show_progress="hidden",
        api_visibility="private",
    )
    name = ctx.form.components["model.name_or_path"]
    confirm.input(record_consent, inputs=[name, confirm], outputs=confirm, api_visibility="private")
    name.change(withdraw_consent, outputs=confirm, show_progress="hidden", api_visibility="private")
    ctx.form.add_extra(
        [confirm],
        functools.partial(require_trust_confirmation, confirm),
        lambda cfg: {confirm: gr.update(visible=cfg.model.trust_remote_code, value=False)},
    )
    return confirm


def record_consent(name: str, ticked: bool) -> Any:
    """The user's tick is the consent (app.consent) to run the named model's code, in this app process; the untick
    withdraws it. A name that does not resolve to a model leaves the box unticked (nothing to consent to)."""
    from app import consent, modeling

    try:
        path = modeling.resolve_model(name or "")
    except modeling.ModelError:
        return gr.update(value=False)
    (consent.grant if ticked else consent.revoke)(path)
    return gr.update(value=bool(ticked))


def withdraw_consent() -> Any:
    """Another model named: the tick (and the consent it gave) does not carry over to it."""
    from app import consent

    consent.revoke()
    return gr.update(value=False)


def require_trust_confirmation(confirm: Any, data: dict[str, Any], values: dict[Any, Any]) -> None:
    """Form extra: trust_remote_code only together with its confirmation box."""
    if data["model"].get("trust_remote_code") and not values.get(confirm):
        raise ConfigError([TRUST_UNCONFIRMED], "form")


def _build_method_column(ctx: AppContext, fields: dict[str, Any]) -> dict[str, Any]:
    tr, form = ctx.tr, ctx.form
    shown = _sections_shown(ctx.defaults.method)
    _section(tr, "model.section.method")
    fields.update(form.build(METHOD_FIELDS))
    with gr.Group(visible=shown["quant"]) as quant_group:
        _section(tr, "model.section.quant")
        with gr.Row():
            fields.update(form.build(QUANT_FIELDS))
    with gr.Group(visible=shown["lora"]) as lora_group:
        _section(tr, "model.section.lora")
        with gr.Row():
            fields.update(form.build(LORA_NUMBERS))
        fields.update(form.build(LORA_TARGETS, module_choices=DEFAULT_LINEAR))
        with gr.Row():
            fields.update(form.build(LORA_SWITCHES))
    with gr.Group(visible=shown["freeze"]) as freeze_group:
        _section(tr, "model.section.freeze")
        with gr.Row():
            fields.update(form.build(FREEZE_FIELDS))
    return {"quant_group": quant_group, "lora_group": lora_group, "freeze_group": freeze_group}


def _build_memory_panel(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Column(elem_classes="td-panel"):
        _section(tr, "model.section.memory")
        verdict = gr.Markdown("", elem_classes="td-verdict", elem_id="estimate-verdict")
        sized = gr.Markdown("", elem_id="estimate-sized")
        plot = gr.Plot(show_label=False, elem_id="estimate-plot")
        trainable = gr.Markdown("", elem_id="estimate-trainable")
        fixes_title = tr.text(gr.Markdown, "model.fixes_title", visible=False)
        fix_buttons = [
            gr.Button("", visible=False, size="sm", elem_classes="td-fix", elem_id=f"fix-{i}")
            for i in range(MAX_FIXES)
        ]
        fix_state = gr.State([])
        with tr.labelled(gr.Accordion, "model.details", open=False):
            details = gr.JSON(show_label=False)
    return {
        "plot": plot,
        "verdict": verdict,
        "sized": sized,
        "pending": gr.State(False),
        "trainable": trainable,
        "fixes_title": fixes_title,
        "fix_buttons": fix_buttons,
        "fix_state": fix_state,
        "details": details,
    }


def _build_compare(tr: i18n.Translator) -> gr.Dataframe:
    """Full width under both columns: the notes column needs the room."""
    with tr.labelled(gr.Accordion, "model.section.compare", open=True):
        compare = gr.Dataframe(
            value=compare_table([], tr.lang),  # its headers, not gradio's "1 | 2 | 3", until the first estimate
            interactive=False,
            wrap=True,
            column_widths=["9%", "11%", "12%", "8%", "10%", "50%"],
            elem_id="method-compare",
        )
    return compare


def _sections_shown(method: str) -> dict[str, bool]:
    """Which settings sections a method reads (app.methods): quantization, LoRA, freeze."""
    m = methods.TABLE.get(method)  # None while the dropdown is cleared: no section
    return {
        "quant": bool(m and m.quantized),
        "lora": bool(m and m.adapter),
        "freeze": bool(m and m.trains == methods.LAST_LAYERS),
    }


def _method_visibility(h: ModelHandles, method: str) -> dict[Any, Any]:
    shown = _sections_shown(method)
    return {
        h.quant_group: gr.update(visible=shown["quant"]),
        h.lora_group: gr.update(visible=shown["lora"]),
        h.freeze_group: gr.update(visible=shown["freeze"]),
    }


# ---- wiring across tabs (called by app.build_blocks once every tab is built) ---------------------------------
def wire(ctx: AppContext) -> None:
    h = ctx.model
    inputs = ctx.form.inputs() | {ctx.lang_selector}
    form_outputs = list(ctx.form.inputs())  # every widget a preset or a fix may set, the Data tab's extras too
    panel = [h.plot, h.verdict, h.sized, h.pending, h.trainable, h.fixes_title, *h.fix_buttons, h.fix_state]
    panel += [h.compare, h.details]
    # the dataset's lengths move the estimate too: its file and how its examples are rendered
    data_fields = [ctx.form.components[p] for p in DATA_FIELDS if p in ctx.form.components]
    extras = [c for extra in ctx.form.extras for c in extra.components if c is not h.trust_confirm]
    live = {"show_progress": "hidden", "concurrency_limit": None, "concurrency_id": "estimate"}
    gr.on(
        [c.change for c in [*ctx.form.memory_inputs(), *data_fields, *extras]]
        + [ctx.demo.load, ctx.lang_selector.change],
        lambda values: estimate_now(ctx, values),
        inputs=inputs,
        outputs=panel,
        api_name="estimate_panel",
        api_visibility="undocumented",
        trigger_mode="always_last",
        **live,
    ).then(
        lambda values: estimate_with_data(ctx, values),
        inputs=inputs | {h.pending},
        outputs=panel,
        api_name="estimate_panel_data",
        api_visibility="undocumented",
        trigger_mode="always_last",
        **live,
    )
    ctx.demo.load(
        lambda name, layers: freeze_range(name, layers),
        inputs=[ctx.form.components["model.name_or_path"], h.fields["freeze.trainable_layers"]],
        outputs=h.fields["freeze.trainable_layers"],
        show_progress="hidden",
        api_visibility="private",
    )

    def estimate(config: dict | None = None) -> dict:
        """Peak-memory estimate of a partial run config (as in a preset) over the app's defaults, on the device
        this machine would train on: total and breakdown, verdict, trainable parameters, fixes, methods."""
        return estimate_api(ctx, config)

    gr.api(estimate, api_name="estimate", concurrency_limit=None, concurrency_id="estimate")
    hidden = {"api_visibility": "undocumented"}
    for i, button in enumerate(h.fix_buttons):
        button.click(
            functools.partial(_apply_fix_event, ctx, i),
            inputs=inputs | {h.fix_state},
            outputs=form_outputs + [h.status],
            show_progress="hidden",
            api_name=f"apply_fix_{i}",
            **hidden,
        )
    h.apply_preset.click(
        lambda values: apply_preset(ctx, values),
        inputs=inputs | {h.preset},
        outputs=form_outputs + [h.status],
        api_name="apply_preset",
        **hidden,
    )
    load_outputs = [h.status, h.info, h.info_state, ctx.form.components["lora.target_modules"]]
    load_outputs.append(h.fields["freeze.trainable_layers"])
    ctx.lang_selector.change(
        lambda lang, info: info_markdown(info, lang) if info else i18n.t("model.info_empty", lang),
        inputs=[ctx.lang_selector, h.info_state],
        outputs=h.info,
        show_progress="hidden",
        api_visibility="private",
    )
    once = {"concurrency_limit": 1, "concurrency_id": "model-load", **hidden}

    def _load(values: dict[Any, Any], progress: gr.Progress = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return load_or_inspect(ctx, values, False, progress)

    def _inspect(values: dict[Any, Any], progress: gr.Progress = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return load_or_inspect(ctx, values, True, progress)

    h.load.click(_load, inputs=inputs, outputs=load_outputs, api_name="load_model", **once)
    h.inspect.click(_inspect, inputs=inputs, outputs=load_outputs, api_name="inspect_model", **once)
    hub_panel.wire(ctx, h.hub)


# ---- presets -----------------------------------------------------------------------------------------------------
def preset_choices() -> list[tuple[str, str]]:
    return [(p.stem, str(p)) for p in sorted(paths.presets_dir().glob("*.yaml"))]


def apply_preset(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Preset over the defaults (a preset for another model should not leave the last preset's quantization
    behind). A preset that names data.path brings its whole data section (the dataset, its placeholders, system
    prompt, template); one without keeps the user's data, so picking a model size does not lose the dataset."""
    h = ctx.model
    lang, preset = ctx.lang(values), values.get(h.preset)
    if not preset:
        return {h.status: i18n.t("model.no_preset", lang)}
    name = Path(preset).stem
    try:
        current = ctx.form.to_config(values)
        base = ctx.defaults if _names_data(preset) else ctx.defaults.replace(data=current.to_dict()["data"])
        cfg = RunConfig.from_preset(preset, base=base)
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        msg = _problems(exc, lang) if isinstance(exc, ConfigError) else str(exc)
        return {h.status: i18n.t("model.preset_error", lang, name=name, msg=msg)}
    return {**changed_updates(ctx.form, current, cfg), h.status: i18n.t("model.preset_applied", lang, name=name)}


def _names_data(preset: str | Path) -> bool:
    """The preset file sets data.path (an identity preset with its dataset), not only model and method."""
    raw = yaml.safe_load(Path(preset).read_text(encoding="utf-8")) or {}
    return isinstance(raw, dict) and isinstance(raw.get("data"), dict) and "path" in raw["data"]


def changed_updates(form: Any, old: RunConfig, new: RunConfig) -> dict[Any, Any]:
    """gr.update only for widgets whose value differs, so one click fires one estimate, not forty; the same for
    the form's extra widgets (the Data tab's placeholders and column mapping) whose shown value differs."""
    out = {}
    for path, comp in form.components.items():
        f = BY_PATH[path]
        if to_widget(f, get_path(old, path)) != to_widget(f, get_path(new, path)):
            out[comp] = gr.update(value=to_widget(f, get_path(new, path)))
    for extra in form.extras:
        if extra.show is None:
            continue
        before, after = extra.show(old), extra.show(new)
        out.update({c: u for c, u in after.items() if before.get(c) != u})
    return out


def _problems(exc: ConfigError, lang: str = "en") -> str:
    """A ConfigError's problems as a list, each naming the label on screen (form.explain), not the config key."""
    return "\n".join(f"- {p}" for p in explain(exc.problems, lang)) if exc.problems else str(exc)


# ---- load / inspect -------------------------------------------------------------------------------------------
def load_or_inspect(
    ctx: AppContext, values: dict[Any, Any], inspect_only: bool, progress: Any = None
) -> dict[Any, Any]:
    from app import modeling  # torch and transformers: imported on first use, not at app start

    h = ctx.model
    lang = ctx.lang(values)
    # what the tab showed belonged to the last model opened: a failure must not leave it under the error
    cleared = {h.info: i18n.t("model.info_empty", lang), h.info_state: None}
    try:
        cfg = ctx.form.to_config(values)
    except ConfigError as exc:
        return {**cleared, h.status: i18n.t("model.config_error", lang, msg=_problems(exc, lang))}
    name = cfg.model.name_or_path
    report = _gradio_progress(progress)
    try:
        note, info = _open_model(cfg, inspect_only, lang, report)
    except (modeling.ModelError, ConfigError, OSError, ValueError) as exc:
        msg = _problems(exc, lang) if isinstance(exc, ConfigError) else str(exc)
        return {**cleared, h.status: "❌ " + i18n.t("model.error", lang, msg=msg)}
    modules = list(info.get("linear_modules") or [])
    target = ctx.form.components["lora.target_modules"]
    chosen = [m for m in (values.get(target) or []) if m in modules or m == ALL_LINEAR] or modules[:1]
    note = note or i18n.t("model.inspected", lang, name=name)
    layers = h.fields["freeze.trainable_layers"]
    return {
        h.status: note,
        h.info: info_markdown(info, lang),
        h.info_state: info,
        target: gr.update(choices=[*modules, ALL_LINEAR], value=chosen),
        layers: _layers_update(info.get("layers"), values.get(layers)),
    }


def _open_model(cfg: RunConfig, inspect_only: bool, lang: str, report: Any) -> tuple[str, dict[str, Any]]:
    """(status line, info dict): weights loaded when asked and possible, else the structure only."""
    name = cfg.model.name_or_path
    if not inspect_only:
        holder = devices.holder(cfg.train.device)
        if holder is not None:
            note = i18n.t("model.device_busy", lang, device=holder.device)
        elif not _is_local(name):
            note = i18n.t("model.not_local", lang, name=name)
        else:
            loaded = HOLDER.load(cfg, report)
            return i18n.t("model.loaded", lang, name=name, secs=loaded.load_s), dict(loaded.info)
        return note, structure(name, cfg.model.trust_remote_code)
    return "", structure(name, cfg.model.trust_remote_code)


def structure(name: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """The model built on the meta device (no weights) when its config is here; else the catalog's numbers, so a
    70B that was never downloaded can still be looked at."""
    from app import modeling

    try:
        return modeling.inspect_model(name, trust_remote_code=trust_remote_code)
    except modeling.ConsentNeeded:
        raise  # not a missing config: the catalog's numbers would hide the refusal
    except modeling.ModelError as exc:
        try:
            arch = memory.architecture_from(name)
        except memory.EstimateError:
            raise exc from None
    return {
        "architecture": f"{arch.model_type} ({arch.source})",
        "parameters": arch.total_params,
        "layers": arch.layers,
        "hidden_size": arch.hidden,
        "vocab_size": arch.vocab,
        "linear_modules": arch.linear_names(),
    }


def _is_local(name: str) -> bool:
    """Weights on this machine: a folder, a .gguf, the default model, or a hub id already in the HF cache."""
    from app import modeling

    try:
        modeling.resolve_model(name)
    except modeling.ModelError:
        return False
    return True


def _gradio_progress(progress: Any) -> Any:
    if progress is None:
        return None
    return lambda frac, msg: progress(frac, desc=msg)


def info_markdown(info: dict[str, Any], lang: str = "en") -> str:
    """A two-column table of what matters about the model, then its Linear module names."""
    t = functools.partial(i18n.t, lang=lang)
    params = info.get("parameters")
    rows = [
        ("architecture", info.get("architecture")),
        ("parameters", f"{plots.fmt_count(params)} ({params:,})" if params else None),
        ("layers", info.get("layers")),
        ("hidden", info.get("hidden_size")),
        ("vocab", f"{info['vocab_size']:,}" if info.get("vocab_size") else None),
        ("dtype", info.get("dtype")),
        ("device", info.get("device")),
        ("load_time", f"{info['load_s']:.1f} s" if info.get("load_s") is not None else None),
        (
            "chat_template",
            None if "chat_template" not in info else t("model.yes" if info["chat_template"] else "model.no"),
        ),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {t('model.row.' + k)} | {v} |" for k, v in rows if v is not None]
    modules = ", ".join(f"`{m}`" for m in info.get("linear_modules") or [])
    return "\n".join(lines) + f"\n\n**{t('model.row.linear')}:** {modules or '-'}"


# ---- choices that imply others --------------------------------------------------------------------------------
def method_quantization(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Picking a method sets the quantization its base loads in (app.methods): QLoRA a 4-bit NF4 base (unless 4 or
    8 bits are chosen already), a method that loads an unquantized base sets it back to none. So the estimate,
    the methods table and Start all read the same choice."""
    f = ctx.form.components
    method = methods.TABLE.get(values.get(f["method"]) or "")
    bits = from_widget(BY_PATH["quant.bits"], values.get(f["quant.bits"]))
    if method is not None and method.quantized and bits not in (4, 8):
        return {f["quant.bits"]: gr.update(value="4"), f["quant.type"]: gr.update(value="nf4")}
    if method is not None and not method.quantized and bits is not None:
        return {f["quant.bits"]: gr.update(value="none")}
    return {f["quant.bits"]: gr.skip()}  # already what the method needs (an empty dict is not an update)


def exclusive_targets(chosen: list[str] | None, evt: gr.SelectData) -> Any:
    """all-linear and single target modules exclude each other: ticking all-linear clears the single ones,
    ticking a single one clears all-linear. `evt` says which box was ticked or unticked."""
    ticked = evt.value
    now = [m for m in (chosen or []) if m != ticked]
    if not evt.selected:
        return gr.update(value=now)
    if ticked == ALL_LINEAR:
        return gr.update(value=[ALL_LINEAR])
    return gr.update(value=[m for m in now if m != ALL_LINEAR] + [ticked])


def forget_model(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Another model named: the status line and the details of the last one opened no longer apply; the Freeze
    slider stops at the new model's layer count (config.json or the catalog, no weights)."""
    h = ctx.model
    lang = ctx.lang(values)
    name = str(values.get(h.fields["model.name_or_path"]) or "").strip()
    layers = h.fields["freeze.trainable_layers"]
    info = i18n.t("model.not_loaded", lang, name=name) if name else i18n.t("model.info_empty", lang)
    return {
        h.status: "",
        h.info: info,
        h.info_state: None,
        layers: freeze_range(name, values.get(layers)),
    }


def freeze_range(name: str | None, value: Any) -> Any:
    """The Trainable layers slider's range: 1 to the model's decoder layers (its widest when the model is not known
    yet), the value pulled down to fit."""
    try:
        layers = _architecture(str(name or "").strip()).layers
    except (memory.EstimateError, OSError, ValueError):
        layers = None
    return _layers_update(layers, value)


def _layers_update(layers: int | None, value: Any) -> Any:
    if not layers:
        return gr.update(maximum=BY_PATH["freeze.trainable_layers"].maximum)
    update = {"maximum": int(layers)}
    if isinstance(value, (int, float)) and value > layers:
        update["value"] = int(layers)
    return gr.update(**update)


# ---- memory estimate -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _architecture(name: str) -> Any:
    """config.json numbers of a model; cached because the estimate redraws on every slider move."""
    return memory.architecture_from(name)


def compute_estimate(cfg: RunConfig, data: bool = True) -> estimate.Answer:
    """The estimate service's answer for `cfg` on the device it would train on, sized for its dataset when `data`
    (app.estimate.data_lengths: tokenizes it the first time, seconds) and it is readable. Raises EstimateError."""
    return estimate.service(cfg, arch=_architecture(cfg.model.name_or_path.strip()), data=data)


def estimate_panel(ctx: AppContext, values: dict[Any, Any], data: bool = True) -> dict[Any, Any]:
    """Redraw the memory panel from the form; never raises (a bad value shows as a message in the panel)."""
    h = ctx.model
    lang = ctx.lang(values)
    try:
        result = compute_estimate(ctx.form.to_config(values), data)
    except (ConfigError, memory.EstimateError, ValueError) as exc:
        msg = _problems(exc, lang) if isinstance(exc, ConfigError) else explain([str(exc)], lang)[0]
        return _empty_panel(h, i18n.t("model.estimate_error", lang, msg=msg), lang)
    return _panel_updates(h, result, lang)


def estimate_now(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """The panel at once, on every change: sized for the dataset when its lengths are known, else for
    batch x max_seq_len with a note, and `pending` set so estimate_with_data (chained after it) measures them."""
    h = ctx.model
    try:
        cfg = ctx.form.to_config(values)
    except ConfigError:
        return {**estimate_panel(ctx, values), h.pending: False}
    pending = not estimate.lengths_known(cfg)
    out = estimate_panel(ctx, values, data=not pending)
    out[h.pending] = pending
    if pending and h.sized in out:
        sized = {"rows": cfg.train.batch_size, "tokens": cfg.data.max_seq_len, "dataset": Path(cfg.data.path).name}
        out[h.sized] = i18n.t("model.sized.pending", ctx.lang(values), **sized)
    return out


def estimate_with_data(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """After estimate_now: when it could not size for the dataset yet, tokenize it (once per dataset, cached)
    and redraw; otherwise nothing to do."""
    h = ctx.model
    if not values.get(h.pending):
        return {h.pending: gr.skip()}  # an empty dict would read as one value for thirteen outputs
    return {**estimate_panel(ctx, values), h.pending: False}


def estimate_api(ctx: AppContext, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `estimate` endpoint: `config` is a partial RunConfig (as in a preset) over the app's defaults.

    Returns the estimate as JSON with the verdict, the fixes and the method comparison, or {"error": message}.
    Same code path as the panel, so its latency is the panel's (measured while training runs)."""
    try:
        cfg = RunConfig.from_dict(deep_merge(ctx.defaults.to_dict(), config or {}), source="estimate request")
        result = compute_estimate(cfg)
    except (ConfigError, memory.EstimateError, ValueError) as exc:
        return {"error": "\n".join(exc.problems) if isinstance(exc, ConfigError) and exc.problems else str(exc)}
    return result.to_json()


def _panel_updates(h: ModelHandles, result: estimate.Answer, lang: str) -> dict[Any, Any]:
    est, fixes, plan = result.estimate, result.fixes, result.plan
    label = i18n.t("model.device.cpu", lang) if est.device == devices.CPU else result.label
    capacity, total, breakdown = est.device_memory_bytes, est.total_bytes, est.breakdown
    if plan is not None:  # several GPUs: the verdict, the chart and the figure are each GPU's, from the planner
        capacity, total, breakdown = plan.device_memory_bytes, plan.per_gpu_bytes, plan.breakdown
        each = "model.device.each_cpu" if plan.device == devices.CPU else "model.device.each"
        label = i18n.t(each, lang, gpus=plan.gpus, label=label)
    verdict_key = "no_fix" if result.verdict == "no" and not fixes and plan is None else result.verdict
    text = i18n.t(
        f"model.verdict.{verdict_key}",
        lang,
        total=total / plots.GIB,
        cap=(capacity or 0) / plots.GIB,
        device=label,
    )
    if plan is not None:
        text += "<br>" + i18n.t("model.plan", lang, why=plan.why)
    share = 100.0 * est.trainable_params / est.total_params if est.total_params else 0.0
    # on a CPU there is no CUDA context: the runtime part is the process baseline, left out of the chart
    shown = {k: v for k, v in breakdown.items() if v > 0 and not (k == "runtime" and est.device == devices.CPU)}
    names = {k: i18n.t(f"model.part.{k}", lang) for k in shown}
    spec = plots.memory_bar_spec(shown, capacity, label, names=names, total_bytes=total)
    fix_labels = [fix_label(f.key, f.params, lang) for f in fixes[:MAX_FIXES]]
    out: dict[Any, Any] = {
        h.plot: _plot_data(spec),
        h.verdict: f'<span class="td-{result.verdict}">{text}</span>',
        h.sized: sized_line(result.sized, lang),
        h.trainable: i18n.t(
            "model.trainable", lang, trainable=est.trainable_params, total=est.total_params, share=share
        ),
        h.fixes_title: gr.update(visible=bool(fixes)),
        h.fix_state: [{"label": lab, "changes": dict(f.changes)} for lab, f in zip(fix_labels, fixes, strict=False)],
        h.compare: compare_table(result.methods, lang),
        h.details: {**est.to_json(), "sized_for": result.sized, "plan": plan.to_json() if plan else None},
    }
    for i, button in enumerate(h.fix_buttons):
        fix = fixes[i] if i < len(fix_labels) else None
        text_i = i18n.t("model.fix", lang, label=fix_labels[i], total=fix.estimate.total_gib) if fix else ""
        out[button] = gr.update(visible=fix is not None, value=text_i)
    return out


def fix_label(key: str, params: dict[str, Any], lang: str = "en") -> str:
    """A fix (app.estimate.Fix key and params) in words of the page's language."""
    if key == "combined":
        parts = "; ".join(fix_label(k, p, lang) for k, p in params.get("parts", []))
        return i18n.t("model.fix.combined", lang, parts=parts)
    if key == "shorter_seq" and params.get("cut") is not None:
        return i18n.t("model.fix.shorter_seq.cut", lang, **params)
    return i18n.t(f"model.fix.{key}", lang, **params)


def sized_line(sized: dict[str, Any], lang: str = "en") -> str:
    """What the activations were sized for: the longest batch built from the dataset, or batch x max_seq_len."""
    if not sized:
        return ""
    key = "model.sized.data" if sized.get("by") == "data" else "model.sized.config"
    return i18n.t(key, lang, rows=sized["rows"], tokens=sized["tokens"], dataset=sized.get("dataset", ""))


def _plot_data(spec: dict[str, Any]) -> PlotData:
    """A plotly figure dict as gr.Plot sends it to the browser (what its postprocess makes of a go.Figure), without
    building and validating a go.Figure: ~30 ms less per redraw of the panel (see plots.memory_bar_spec)."""
    return PlotData(type="plotly", plot=json.dumps(spec))


def _empty_panel(h: ModelHandles, message: str, lang: str = "en") -> dict[Any, Any]:
    out: dict[Any, Any] = {
        h.verdict: f'<span class="td-unknown">{message}</span>',
        h.plot: None,
        h.sized: "",
        h.trainable: "",
        h.fixes_title: gr.update(visible=False),
        h.fix_state: [],
        h.compare: compare_table([], lang),  # its headers stay: never gradio's bare "1 | 2 | 3"
        h.details: None,
    }
    out.update({b: gr.update(visible=False) for b in h.fix_buttons})
    return out


COMPARE_COLUMNS = ("method", "memory", "trainable", "fits", "speed", "notes")


def compare_table(rows: list[dict[str, Any]], lang: str = "en") -> pd.DataFrame:
    """estimate.compare_methods rows as a small table: method, GiB, trainable parameters, fits, relative speed,
    notes (in the page's language). No rows: the headers alone."""
    t = functools.partial(i18n.t, lang=lang)
    columns = [t(f"model.col.{c}") for c in COMPARE_COLUMNS]
    records = [
        [
            row["method"],
            round(row["total_bytes"] / plots.GIB, 2),
            plots.fmt_count(row["trainable_params"]),
            {True: t("model.fits_yes"), False: t("model.fits_no")}.get(row.get("fits"), "?"),
            f"{row['speed']:.1f}x" if row.get("speed") else "",
            t(f"model.note.{row['method']}") if f"model.note.{row['method']}" in i18n.STRINGS else row.get("notes"),
        ]
        for row in rows
    ]
    return pd.DataFrame(records, columns=columns)


def apply_fix(ctx: AppContext, values: dict[Any, Any], index: int) -> dict[Any, Any]:
    """Apply suggestion `index` of the last estimate (`cfg.replace(**fix.changes)`) to the form."""
    h = ctx.model
    lang = ctx.lang(values)
    fixes = values.get(h.fix_state) or []
    if index >= len(fixes):
        return {h.status: i18n.t("model.fix_stale", lang)}
    try:
        current = ctx.form.to_config(values)
        new = current.replace(**fixes[index]["changes"])
    except (ConfigError, KeyError) as exc:
        return {h.status: i18n.t("model.estimate_error", lang, msg=str(exc))}
    return {
        **changed_updates(ctx.form, current, new),
        h.status: i18n.t("model.fix_applied", lang, label=fixes[index]["label"]),
    }


def _apply_fix_event(ctx: AppContext, index: int, values: dict[Any, Any]) -> dict[Any, Any]:
    return apply_fix(ctx, values, index)
