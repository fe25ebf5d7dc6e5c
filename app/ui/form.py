"""The one table that maps RunConfig fields to widgets: build them, apply presets, read values back.

Each row names a dotted RunConfig path, the widget kind and its range; choices and lower bounds that validate()
enforces come from app/config.py (METHODS, QUANT_BITS, MINIMUMS, ...), English info text from the field's docstring
there, Chinese from this table. Tabs build the rows they show with `Form.build(paths)`; the
estimate, the presets and Start all go through `Form.to_config` / `Form.updates_from`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app import config as C
from app.config import ConfigError, RunConfig, field_doc
from app.ui import i18n


@dataclass(frozen=True)
class Field:
    path: str
    kind: str  # number | int | slider | dropdown | checkbox | text | combo (dropdown + free text) | modules | textlist
    # | choices (several of `choices`, a checkbox group)
    en: str
    zh: str
    zh_info: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    moves_memory: bool = False

    def __post_init__(self) -> None:
        # The lower bound validate() enforces is the widget's too, written once in app/config.py (MINIMUMS); a
        # row names a minimum only where the config has none to give (an exclusive bound, a UI-only range).
        if self.path in C.MINIMUMS:
            if self.minimum is not None:
                raise ValueError(f"{self.path}: the minimum comes from config.MINIMUMS; do not repeat it in FIELDS")
            object.__setattr__(self, "minimum", C.MINIMUMS[self.path])


@dataclass
class Extra:
    """Widgets that feed config fields FIELDS has no row for (dict fields); see Form.add_extra."""

    components: list[Any]
    apply: Callable[[dict[str, Any], dict[Any, Any]], None]
    show: Callable[[RunConfig], dict[Any, Any]] | None = None


F = Field
FIELDS: tuple[Field, ...] = (
    F(
        "model.name_or_path",
        "combo",
        "Base model",
        "基础模型",
        "目录 ID、Hugging Face 模型 ID、本地文件夹或 .gguf 文件。",
        moves_memory=True,
    ),
    F(
        "model.attn_implementation",
        "dropdown",
        "Attention kernel",
        "注意力实现",
        "sdpa：PyTorch 融合内核（默认）；eager：参考实现；flash_attention_2：CUDA（算力 8.0+、已安装 flash-attn），"
        "其他情况改用 sdpa。",
        C.ATTN_IMPLS,
        moves_memory=True,
    ),
    F(
        "model.trust_remote_code",
        "checkbox",
        "Trust remote code",
        "信任远程代码",
        "运行模型自带的 Python 代码。默认关闭：仅对信任的模型开启。",
    ),
    F(
        "method",
        "dropdown",
        "Method",
        "微调方法",
        "full：全参数；freeze：只训练最后 N 层；lora：低秩适配器；qlora：在 4/8 位量化底座上训练适配器。",
        C.METHODS,
        moves_memory=True,
    ),
    F(
        "objective",
        "dropdown",
        "Objective",
        "训练目标",
        "sft：监督微调（学会答案）；dpo / orpo / simpo：在“较好/较差”回答对上做偏好训练；kto：单条回答标注好或坏。",
        C.OBJECTIVES,
        moves_memory=True,
    ),
    F(
        "preference.beta",
        "number",
        "Preference strength (beta)",
        "偏好强度（beta）",
        "留空 = 该目标的常用值：DPO、KTO、ORPO 为 0.1，SimPO 为 2.0。",
    ),
    F(
        "preference.loss_type",
        "dropdown",
        "DPO loss",
        "DPO 损失",
        "sigmoid（论文原版）、ipo、hinge、robust（标注有噪声时）。",
        C.PREFERENCE_LOSSES,
    ),
    F(
        "preference.reference",
        "dropdown",
        "Reference model",
        "参考模型",
        "auto：LoRA/QLoRA 关闭适配器即为参考（不占第二份显存），全参/冻结用冻结副本；copy：总是冻结副本；"
        "precompute：训练前一次算好参考模型的对数概率。",
        C.REFERENCES,
        moves_memory=True,
    ),
    F(
        "preference.simpo_gamma",
        "number",
        "SimPO margin (gamma)",
        "SimPO 间隔（gamma）",
        "SimPO 的目标奖励间隔，按 beta 的比例。",
    ),
    F(
        "preference.desirable_weight",
        "number",
        "KTO desirable weight",
        "KTO 正例权重",
        "KTO：标注为好（true）的样本损失权重；正例较少时调高。",
    ),
    F(
        "preference.undesirable_weight",
        "number",
        "KTO undesirable weight",
        "KTO 负例权重",
        "KTO：标注为坏（false）的样本损失权重。",
    ),
    F(
        "quant.bits",
        "dropdown",
        "Quantization bits",
        "量化位数",
        "底座权重的存储位宽：无（16/32 位）、8（LLM.int8）或 4（NF4/FP4）。QLoRA 需要 4 或 8。",
        C.QUANT_BITS,
        moves_memory=True,
    ),
    F("quant.type", "dropdown", "4-bit type", "4 位类型", "nf4（正态浮点，更适合权重）或 fp4。", C.QUANT_TYPES),
    F(
        "quant.double_quant",
        "checkbox",
        "Double quantization",
        "双重量化",
        "对 4 位的块缩放因子再量化：每参数省约 0.37 位（7B 模型约 0.4 GB）。",
        moves_memory=True,
    ),
    F(
        "quant.compute_dtype",
        "dropdown",
        "Compute dtype",
        "计算精度",
        "反量化后权重的计算精度：auto（CPU 上 fp32，CUDA 上 bf16/fp16）。",
        C.COMPUTE_DTYPES,
    ),
    F(
        "lora.rank",
        "slider",
        "LoRA rank",
        "LoRA 秩",
        "越高 = 容量和显存越大；8-16 是不错的起点。",
        maximum=256,
        step=1,
        moves_memory=True,
    ),
    F(
        "lora.alpha",
        "number",
        "LoRA alpha",
        "LoRA alpha",
        "缩放分子：更新按 alpha/r 缩放（rsLoRA 为 alpha/sqrt(r)）。通常取 2 倍秩。",
        minimum=0.1,
    ),
    F(
        "lora.dropout",
        "slider",
        "LoRA dropout",
        "LoRA dropout",
        "训练时 LoRA 输入的 dropout；0-0.1。",
        minimum=0.0,
        maximum=0.5,
        step=0.01,
    ),
    F(
        "lora.target_modules",
        "modules",
        "LoRA target modules",
        "LoRA 目标模块",
        "挂适配器的线性层；越多 = 可训练参数和显存越多，效果通常更好。",
        moves_memory=True,
    ),
    F(
        "lora.use_dora",
        "checkbox",
        "DoRA",
        "DoRA",
        "额外学习每个输出通道的幅度；质量略好，约慢 1.3 倍。",
        moves_memory=True,
    ),
    F("lora.use_rslora", "checkbox", "rsLoRA", "rsLoRA", "秩稳定缩放 alpha/sqrt(r)：高秩时学习速度保持一致。"),
    F(
        "freeze.trainable_layers",
        "slider",
        "Trainable layers",
        "可训练层数",
        "freeze 方法：只训练最后 N 个解码层。",
        maximum=128,
        step=1,
        moves_memory=True,
    ),
    F("freeze.train_norms", "checkbox", "Train norms", "训练归一化层", "同时训练所有归一化层（几千个参数）。"),
    F(
        "data.path",
        "text",
        "Dataset",
        "数据集",
        "训练数据：JSON/JSONL/CSV/Parquet 文件、save_to_disk 文件夹或 Hub 数据集 ID。",
    ),
    F(
        "data.format",
        "dropdown",
        "Format",
        "格式",
        "记录格式：auto（自动检测）、alpaca、sharegpt、messages。",
        C.DATA_FORMATS,
    ),
    F(
        "data.template",
        "dropdown",
        "Prompt template",
        "提示模板",
        "auto（模型自带聊天模板优先，否则 alpaca）、alpaca、chat。",
        C.TEMPLATES,
    ),
    F(
        "data.system_prompt",
        "text",
        "System prompt",
        "系统提示词",
        "放在每个样本前的系统消息（仅聊天模板）；留空则无。",
    ),
    F(
        "data.max_seq_len",
        "slider",
        "Max sequence length",
        "最大序列长度",
        "每个样本的 token 数；更长的会被截断。激活和 logits 显存随之线性增长。",
        maximum=8192,
        step=16,
        moves_memory=True,
    ),
    F(
        "data.max_samples",
        "number",
        "Max samples",
        "最大样本数",
        "只使用前 N 条有效记录；留空（或 0）表示使用全部记录。",
    ),
    F(
        "data.val_size",
        "slider",
        "Validation share",
        "验证集比例",
        "留作评估损失的记录比例，范围 [0, 1)。",
        minimum=0.0,
        maximum=0.5,
        step=0.01,
    ),
    F(
        "data.train_on_prompt",
        "checkbox",
        "Train on prompt",
        "在提示上计算损失",
        "提示部分也计算损失（默认只在回答上计算）。",
    ),
    F("train.epochs", "number", "Epochs", "训练轮数", "遍历训练数据的次数（设置了最大步数时忽略）。", minimum=0.01),
    F(
        "train.max_steps",
        "number",
        "Max steps",
        "最大步数",
        "训练这么多个优化步后停止；留空（或 0）则按训练轮数训练。",
    ),
    F(
        "train.batch_size",
        "slider",
        "Micro-batch size",
        "微批大小",
        "每个微批的样本数：激活显存随之线性增长。",
        maximum=128,
        step=1,
        moves_memory=True,
    ),
    F(
        "train.grad_accum",
        "slider",
        "Gradient accumulation",
        "梯度累积",
        "每个优化步的微批数：有效批量 = 微批 × 累积，不增加显存。",
        maximum=128,
        step=1,
    ),
    F(
        "train.learning_rate",
        "number",
        "Learning rate",
        "学习率",
        "峰值学习率：LoRA 用 1e-4 到 3e-4，全参数用 1e-5 到 5e-5。",
        minimum=1e-7,
        maximum=0.99,
    ),
    F(
        "train.lr_scheduler",
        "dropdown",
        "LR schedule",
        "学习率调度",
        "预热后的学习率曲线：cosine、linear 或 constant。",
        C.SCHEDULERS,
    ),
    F(
        "train.warmup_ratio",
        "slider",
        "Warm-up share",
        "预热比例",
        "学习率从 0 爬升所占的步数比例。",
        minimum=0.0,
        maximum=0.5,
        step=0.01,
    ),
    F("train.weight_decay", "number", "Weight decay", "权重衰减", "AdamW 权重衰减。"),
    F("train.max_grad_norm", "number", "Max grad norm", "梯度裁剪", "把梯度范数裁剪到此值（0 = 关闭）。"),
    F(
        "train.optimizer",
        "dropdown",
        "Optimizer",
        "优化器",
        "adamw_torch（每参数 8 B 状态）、adamw_8bit（约 2 B）、paged_*（CUDA；CPU 上改用 adamw_8bit / adamw_torch）。",
        C.OPTIMIZERS,
        moves_memory=True,
    ),
    F(
        "train.gradient_checkpointing",
        "checkbox",
        "Gradient checkpointing",
        "梯度检查点",
        "反向传播时重算激活：显存大幅减少，约慢 30%。",
        moves_memory=True,
    ),
    F(
        "train.precision",
        "dropdown",
        "Precision",
        "精度",
        "auto（CPU 上 fp32，CUDA 上支持则 bf16 否则 fp16）、fp32、bf16、fp16。",
        C.PRECISIONS,
        moves_memory=True,
    ),
    F(
        "distributed.strategy",
        "dropdown",
        "Multi-GPU strategy",
        "多卡策略",
        "auto：由规划器选择（每张卡放得下整个模型时用 DDP，否则 FSDP，再不行 FSDP + CPU 卸载）；"
        "ddp：每张卡一份完整模型；fsdp：权重、梯度和优化器状态分片到各卡；"
        "deepspeed_zero3：用 DeepSpeed 做同样的分片（需已安装）。",
        C.STRATEGIES,
        moves_memory=True,
    ),
    F(
        "distributed.cpu_offload",
        "checkbox",
        "Offload to CPU RAM",
        "卸载到内存",
        "FSDP / ZeRO-3：分片的权重和优化器状态放在内存里，用时再搬上显卡；能放下更大的模型，但训练更慢。",
        moves_memory=True,
    ),
    F(
        "distributed.num_processes",
        "number",
        "GPUs in all",
        "显卡总数",
        "所有机器上的显卡总数（每张卡一个进程）；1 表示单卡训练。",
        moves_memory=True,
    ),
    F(
        "distributed.num_machines",
        "number",
        "Machines",
        "机器数",
        "显卡分布在几台机器上；每台运行同一条命令，机器编号不同。",
    ),
    F(
        "distributed.machine_rank",
        "number",
        "This machine's rank",
        "本机编号",
        "本机的编号，主机（主地址所在的机器）为 0。",
    ),
    F(
        "distributed.main_process_ip",
        "text",
        "Main machine address",
        "主机地址",
        "其他机器能访问到的 0 号机器地址（多机时填写）。",
    ),
    F(
        "distributed.main_process_port",
        "number",
        "Main machine port",
        "主机端口",
        "0 号机器上供各进程会合的端口；需在机器之间放行。",
    ),
    F(
        "train.device",
        "dropdown",
        "Device",
        "设备",
        "auto（有 CUDA 就用）、cpu 或 cuda。",
        C.DEVICES,
        moves_memory=True,
    ),
    F(
        "train.group_by_length",
        "checkbox",
        "Group by length",
        "按长度分组",
        "把长度相近的样本放进同一批：填充更少，步更快。",
    ),
    F("train.packing", "checkbox", "Packing", "样本打包", "把多个样本拼进一条序列（各样本注意力保持隔离）。"),
    F(
        "train.liger_kernel",
        "checkbox",
        "Liger kernels",
        "Liger 内核",
        "Liger 的融合 Triton 内核（RMSNorm、SwiGLU、RoPE、融合线性交叉熵），仅 CUDA：显存更少、步更快；"
        "需要 pip install liger-kernel；CPU 上忽略并给出提示。",
    ),
    F(
        "train.torch_compile",
        "checkbox",
        "torch.compile",
        "torch.compile 编译",
        "用 torch.compile 编译模型：先编译几十秒，之后每步更快；CPU 上也可用。",
    ),
    F("train.logging_steps", "number", "Logging steps", "日志间隔", "每 N 个优化步记录一个损失点。"),
    F(
        "train.save_steps",
        "number",
        "Save steps",
        "保存间隔",
        "每 N 个优化步保存一个可恢复的检查点（0 = 只在结束时）。",
    ),
    F(
        "train.eval_steps",
        "number",
        "Eval steps",
        "评估间隔",
        "每 N 步计算验证损失；留空（或 0）则在每次保存检查点时和结束时计算。",
    ),
    F(
        "train.sample_every",
        "number",
        "Sample every",
        "采样间隔",
        "每 N 步对示例提示生成回答并记录（0 = 关闭）。",
    ),
    F("train.sample_prompts", "textlist", "Sample prompts", "示例提示", "训练中回答的提示，每行一个，最多 3 个。"),
    F(
        "train.report_to",
        "choices",
        "Track with",
        "实验跟踪",
        "记录本次运行的实验跟踪工具：tensorboard（写入运行文件夹）、wandb、mlflow、trackio；都不选 = 不跟踪。",
        choices=C.TRACKERS,
    ),
    F(
        "train.early_stopping_patience",
        "number",
        "Early stopping patience",
        "早停耐心",
        "连续这么多次评估的验证损失都没有变好就停止（0 = 关闭；需要验证集）。",
    ),
    F(
        "train.load_best_at_end",
        "checkbox",
        "Keep the best checkpoint",
        "保留最佳检查点",
        "以验证损失最低的检查点作为运行结果（每次评估都保存检查点；需要验证集）。",
    ),
    F(
        "train.eval_generations",
        "number",
        "Scored answers per eval",
        "每次评估打分的回答数",
        "每次评估时回答这么多条验证提示，并与参考答案比较（ROUGE-L、完全匹配）；0 = 只算验证损失。",
    ),
    F(
        "train.learn_check",
        "number",
        "Did-it-learn examples",
        "学习效果检查样本数",
        "训练结束后在这么多条训练样本上对比基座模型和微调后模型（回答和参考答案上的损失）；0 = 关闭。",
    ),
    F("train.seed", "number", "Seed", "随机种子", "数据顺序和适配器初始化的随机种子。"),
    F("train.run_name", "text", "Run name", "运行名称", "附加在运行文件夹名后；留空 = 方法和模型。"),
)
BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}
ALL_LINEAR = "all-linear"


@functools.cache
def _unset_by_zero(f: Field) -> bool:
    """Optional numbers that 0 cannot be (counts whose smallest valid value is 1: train.max_steps,
    train.eval_steps, data.max_samples; preference.beta, which must be > 0): the browser shows and sends an empty
    gr.Number as 0, so 0 reads back as None ("not set"), never as an invalid 0 that would block Start."""
    import typing

    cls = _section_class(f.path)
    if cls is None or f.kind != "number" or not ((f.minimum or 0) >= 1 or f.path in C.OPTIONAL_POSITIVE):
        return False
    return type(None) in typing.get_args(typing.get_type_hints(cls)[f.path.rpartition(".")[2]])


def _section_class(path: str) -> type | None:
    """The config dataclass a dotted field path's section is (train -> TrainConfig, ...); None for top-level keys."""
    section = path.rpartition(".")[0]
    classes = {"train": C.TrainConfig, "data": C.DataConfig, "lora": C.LoraConfig, "freeze": C.FreezeConfig}
    return {**classes, "preference": C.PreferenceConfig, "distributed": C.DistributedConfig}.get(section)


def _register_strings() -> None:
    strings: dict[str, tuple[str, str]] = {}
    for f in FIELDS:
        section, _, name = f.path.rpartition(".")
        strings[f"field.{f.path}"] = (f.en, f.zh)
        en_info, zh_info = field_doc(section or None, name) or f.en, f.zh_info
        strings[f"field.{f.path}.info"] = (en_info, zh_info)
    strings["form.all_linear"] = ("all linear layers", "所有线性层")
    strings["form.none"] = ("none", "无")
    strings["form.empty"] = ("empty", "留空")
    strings.update({f"field.{path}": labels for path, labels in HIDDEN_LABELS.items()})
    i18n.add(strings)


HIDDEN_LABELS: dict[str, tuple[str, str]] = {
    "data.columns": ("Column mapping", "列映射"),
    "data.placeholders": ("Placeholders", "占位符"),
    "train.save_total_limit": ("Checkpoints kept", "保留的检查点数"),
    "train.output_dir": ("Runs folder", "运行文件夹"),
    "model.allow_pickle": ("Allow pickle weights", "允许 pickle 权重"),
}
"""On-screen names of config fields without a FIELDS row (config.HIDDEN), for messages that name them."""


_register_strings()


_DOTTED = sorted((p for p in {*BY_PATH, *C.HIDDEN} if "." in p), key=len, reverse=True)  # longest first
_KEY = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, _DOTTED)) + r")(?![\w.])")


def explain(problems: Sequence[str], lang: str = "en") -> list[str]:
    """validate()'s problems as a person reads them: every config key becomes the label on screen, in `lang`.

    >>> explain(["quant.bits: method qlora needs quantized base weights; set quant.bits to 4 or 8"])
    ['Quantization bits: method qlora needs quantized base weights; set Quantization bits to 4 or 8']
    >>> explain(["train.max_steps: 0 must be >= 1 or null"])
    ['Max steps: 0 must be >= 1 or empty']
    """
    return [_explain_one(problem, lang) for problem in problems]


def _explain_one(problem: str, lang: str) -> str:
    key, sep, rest = problem.partition(": ")
    # null is the YAML word; the quantization dropdown shows "none", an optional number is left empty
    empty = i18n.t("form.none" if "quant.bits" in problem else "form.empty", lang)
    rest = re.sub(r"\bnull\b", empty, rest)
    if not sep:
        return problem
    if key.startswith(("data.columns.", "data.placeholders.")):
        parent, _, name = key.rpartition(".")
        key = f"{label_of(parent, lang)} ({name})"
    # the key first (top-level ones like `method` too); in the text only dotted keys, not the plain word "method"
    return f"{label_of(key, lang)}: " + _KEY.sub(lambda m: label_of(m.group(1), lang), rest)


def plain(text: str, lang: str = "en") -> str:
    """Any message (a run's failure, a refusal) with each dotted config key in it replaced by its on-screen label.

    >>> plain("CUDA out of memory: lower train.batch_size or turn on train.gradient_checkpointing")
    'CUDA out of memory: lower Micro-batch size or turn on Gradient checkpointing'
    """
    return _KEY.sub(lambda m: label_of(m.group(1), lang), text)


def label_of(path: str, lang: str = "en") -> str:
    """The on-screen label of a config field (its FIELDS row, else HIDDEN_LABELS); the path itself otherwise."""
    key = f"field.{path}"
    return i18n.t(key, lang) if key in i18n.STRINGS else path


def get_path(cfg: RunConfig, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def to_widget(f: Field, value: Any) -> Any:
    """Config value -> widget value."""
    if f.kind == "modules":
        return [ALL_LINEAR] if value == ALL_LINEAR else list(value)
    if f.kind == "textlist":
        return "\n".join(value)
    if f.kind == "choices":
        return list(value)
    if f.path == "quant.bits":
        return "none" if value is None else str(value)
    if f.kind in ("text", "combo") and value is None:
        return ""
    return value


def from_widget(f: Field, value: Any) -> Any:
    """Widget value -> config value (numbers stay numbers; empty optional numbers become None)."""
    if f.kind == "modules":
        items = list(value or [])
        return ALL_LINEAR if ALL_LINEAR in items else items
    if f.kind == "textlist":
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]
    if f.kind == "choices":
        return [c for c in f.choices if c in (value or [])]  # the table's order, each once
    if f.path == "quant.bits":
        return None if value in (None, "none", "") else int(value)
    if f.kind == "combo":
        return str(value or "").strip()
    # A slider of a float field (dropout, val_size, warmup_ratio) must stay float: only int-typed fields round.
    if _unset_by_zero(f) and value in (None, "", 0):
        return None
    if f.kind == "int" or (f.kind in ("slider", "number") and _is_int_field(f.path)):
        return None if value is None or value == "" else int(round(float(value)))
    if f.kind in ("slider", "number"):
        return None if value is None or value == "" else float(value)
    return value


@functools.cache  # get_type_hints evals every annotation: ~0.5 ms a call, per field, per form read
def _is_int_field(path: str) -> bool:
    import typing

    cls = _section_class(path)
    if cls is None:
        return False
    hint = typing.get_type_hints(cls)[path.rpartition(".")[2]]
    return hint is int or int in typing.get_args(hint) and float not in typing.get_args(hint)


class Form:
    """Builds the widgets of FIELDS (each tab its own rows) and maps them to and from a RunConfig."""

    def __init__(self, tr: i18n.Translator, defaults: RunConfig | None = None):
        self.tr = tr
        self.defaults = defaults or RunConfig()
        self.components: dict[str, Any] = {}
        self.extras: list[Extra] = []

    def add_extra(
        self,
        components: list[Any],
        apply: Callable[[dict[str, Any], dict[Any, Any]], None],
        show: Callable[[RunConfig], dict[Any, Any]] | None = None,
    ) -> None:
        """Widgets outside FIELDS that still feed the config (the Data tab's column dropdowns -> data.columns,
        its placeholder table -> data.placeholders): `apply(config_dict, values)` writes their values into the
        config dict before strict loading; `show(cfg)` gives their updates for a preset or a reopened run."""
        self.extras.append(Extra(list(components), apply, show))

    def build(
        self, paths: list[str], module_choices: list[str] | None = None, choices: dict[str, list[Any]] | None = None
    ) -> dict[str, Any]:
        """Create the widgets for `paths` in the current Blocks context; returns {path: component}.

        `choices` gives the suggestions of "combo" fields (e.g. catalog ids for model.name_or_path)."""
        out = {p: self._widget(BY_PATH[p], module_choices, (choices or {}).get(p)) for p in paths}
        self.components.update(out)
        return out

    def _widget(self, f: Field, module_choices: list[str] | None, suggestions: list[Any] | None = None) -> Any:
        label, info = self.tr(f"field.{f.path}"), self.tr(f"field.{f.path}.info")
        value = to_widget(f, get_path(self.defaults, f.path))
        common = {"label": label, "info": info, "value": value, "elem_id": "f-" + f.path.replace(".", "-")}
        if f.kind == "checkbox":
            comp = gr.Checkbox(**common)
        elif f.kind == "slider":
            comp = gr.Slider(minimum=f.minimum, maximum=f.maximum, step=f.step, **common)
        elif f.kind == "dropdown":
            choices = ["none" if c is None else str(c) if f.path == "quant.bits" else c for c in f.choices]
            comp = gr.Dropdown(choices=choices, **common)
        elif f.kind == "modules":
            choices = [*(module_choices or []), ALL_LINEAR]
            for v in value:
                if v not in choices:
                    choices.insert(0, v)
            comp = gr.CheckboxGroup(choices=choices, **common)
        elif f.kind == "choices":
            comp = gr.CheckboxGroup(choices=list(f.choices), **common)
        elif f.kind == "combo":
            options = list(suggestions or [])
            if value and value not in options:
                options.insert(0, value)
            comp = gr.Dropdown(choices=options, allow_custom_value=True, filterable=True, **common)
        elif f.kind == "textlist":
            comp = gr.Textbox(lines=3, **common)
        elif f.kind == "text":
            comp = gr.Textbox(**common)
        else:
            # 0 is how the browser shows "not set" for the optional counts: let it through as a valid value
            minimum = 0 if _unset_by_zero(f) else f.minimum
            comp = gr.Number(minimum=minimum, maximum=f.maximum, **common)
        return self.tr.bind(comp, label=f"field.{f.path}", info=f"field.{f.path}.info")

    def build_rows(self, rows: Sequence[Sequence[str]]) -> dict[str, Any]:
        """build() a layout row by row: the paths of a row side by side in a gr.Row, a row of one at full width."""
        out: dict[str, Any] = {}
        for row in rows:
            if len(row) == 1:
                out.update(self.build(list(row)))
                continue
            with gr.Row():
                out.update(self.build(list(row)))
        return out

    def memory_inputs(self) -> list[Any]:
        """Widgets whose change can move the memory estimate (the estimate redraws on each)."""
        return [c for p, c in self.components.items() if BY_PATH[p].moves_memory]

    def inputs(self) -> set[Any]:
        return set(self.components.values()) | {c for extra in self.extras for c in extra.components}

    def to_config(self, values: dict[Any, Any], base: RunConfig | None = None, lenient: bool = False) -> RunConfig:
        """Read widget values (a {component: value} dict, as Gradio passes a set of inputs) into a RunConfig.

        Raises ConfigError naming each field whose value does not fit its type. `lenient` (saving the form as it
        stands, not starting a run): an extra that refuses its values (the remote-code confirmation) is left out."""
        data = (base or self.defaults).to_dict()
        for path, comp in self.components.items():
            if comp in values:
                node = data
                *parents, leaf = path.split(".")
                for key in parents:
                    node = node[key]
                node[leaf] = from_widget(BY_PATH[path], values[comp])
        for extra in self.extras:
            if all(c in values for c in extra.components):
                try:
                    extra.apply(data, values)
                except ConfigError:
                    if not lenient:
                        raise
        return RunConfig.from_dict(data, source="form")

    def updates_from(self, cfg: RunConfig) -> dict[Any, Any]:
        """gr.update for every built widget, to show `cfg` (applying a preset or reopening a run)."""
        out = {c: gr.update(value=to_widget(BY_PATH[p], get_path(cfg, p))) for p, c in self.components.items()}
        for extra in self.extras:
            out.update(extra.show(cfg) if extra.show else {})
        return out
