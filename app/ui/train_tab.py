"""Train tab: training settings, Start/Stop, the live loss plot, and the list of runs.

Training runs in a background thread (`app.jobs.manager`); these handlers return at once. A 1 s `gr.Timer` reads
what is new in `runs/<id>/events.jsonl` (`history.read_events(run_dir, offset)`), folds it into the view's
`history.RunHistory` and redraws: the file is the one channel, so a page refresh, an app restart or a run started
from the CLI all show the same history.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import history, jobs, paths, runs
from app.config import ConfigError, RunConfig
from app.launch import LaunchError
from app.ui import i18n, plots
from app.ui.form import explain, label_of, plain

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "train.section.objective": ("Objective: supervised or preference", "训练目标：监督或偏好"),
    "train.section.schedule": ("Schedule", "训练计划"),
    "train.section.speed": ("Memory and speed", "显存与速度"),
    "train.section.logging": ("Logging, checkpoints and samples", "日志、检查点与采样"),
    "train.section.distributed": ("Several GPUs or machines", "多卡与多机"),
    "train.start": ("Start training", "开始训练"),
    "train.stop": ("Stop", "停止"),
    "train.idle": (
        "No run yet. Set up the model and data, then press Start.",
        "还没有训练。设置好模型和数据后点击“开始训练”。",
    ),
    "train.invalid": ("Cannot start; fix these settings first:\n{msg}", "无法开始，请先修正这些设置：\n{msg}"),
    "train.busy": (
        "A run is already active ({run}). Stop it or wait for it to finish before starting another.",
        "已有训练在进行（{run}）。请先停止或等待其结束，再开始新的训练。",
    ),
    "train.started": ("Started run **{run}**.", "已开始训练 **{run}**。"),
    "train.start_failed": ("Could not start: {msg}", "无法开始：{msg}"),
    "train.refused": ("Not started: {msg}", "未开始：{msg}"),
    "train.stopping": (
        "Stopping... the adapter is saved after the current step.",
        "正在停止……当前步结束后会保存适配器。",
    ),
    "train.not_running": ("No run is active.", "没有正在进行的训练。"),
    "train.status.starting": (
        "Starting **{run}**: loading the model and data...",
        "**{run}** 启动中：正在加载模型和数据……",
    ),
    "train.status.running": ("Training **{run}**.", "正在训练 **{run}**。"),
    "train.status.finished": ("Finished **{run}**. Saved to `{artifact}`.", "**{run}** 已完成，保存在 `{artifact}`。"),
    "train.status.stopped": ("Stopped **{run}**. Saved to `{artifact}`.", "**{run}** 已停止，保存在 `{artifact}`。"),
    "train.status.failed": ("Run **{run}** failed: {message}", "训练 **{run}** 失败：{message}"),
    "train.status.interrupted": (
        "Run **{run}** was interrupted (the process ended without a final event); "
        "Resume continues from its last checkpoint.",
        "训练 **{run}** 被中断（进程结束但没有结束事件）；“恢复”会从最后一个检查点继续。",
    ),
    "train.status.viewing": ("Viewing **{run}** ({status}).", "正在查看 **{run}**（{status}）。"),
    "train.plot.loss": ("train loss", "训练损失"),
    "train.plot.smooth": ("train loss (EMA)", "训练损失（平滑）"),
    "train.plot.eval": ("eval loss", "验证损失"),
    "train.plot.lr": ("learning rate", "学习率"),
    "train.plot.step": ("step", "步数"),
    "train.plot.loss_axis": ("loss", "损失"),
    "train.plot.lr_axis": ("lr", "学习率"),
    "train.plot.rougeL": ("eval ROUGE-L", "验证 ROUGE-L"),
    "train.plot.exact_match": ("eval exact match", "验证完全匹配"),
    "train.plot.score_axis": ("score %", "得分 %"),
    "train.plot.reward_chosen": ("chosen reward", "较好回答的奖励"),
    "train.plot.reward_rejected": ("rejected reward", "较差回答的奖励"),
    "train.plot.reward_margin": ("reward margin", "奖励间隔"),
    "train.plot.eval_reward_margin": ("eval reward margin", "验证奖励间隔"),
    "train.plot.reward_accuracy": ("reward accuracy", "奖励准确率"),
    "train.plot.eval_reward_accuracy": ("eval reward accuracy", "验证奖励准确率"),
    "train.plot.reward_axis": ("reward", "奖励"),
    "train.plot.accuracy_axis": ("accuracy", "准确率"),
    "train.tensorboard": ("Open in TensorBoard", "在 TensorBoard 中打开"),
    "train.tb.link": (
        "TensorBoard shows every run's curves, config and samples: [{url}]({url})",
        "TensorBoard 显示每次运行的曲线、配置和示例：[{url}]({url})",
    ),
    "train.tb.failed": ("TensorBoard could not start: {msg}", "TensorBoard 无法启动：{msg}"),
    "train.learned": ("Did it learn?", "学会了吗？"),
    "train.learned.flagged": ("**It may not have learned:** {verdict}", "**可能没有学会：** {verdict}"),
    "train.stop_reason": ("Ended early: {reason}", "提前结束：{reason}"),
    "train.best_weights": (
        "The saved weights are the best checkpoint's (step {step}, eval loss {loss:.4f}).",
        "保存的权重来自最佳检查点（第 {step} 步，验证损失 {loss:.4f}）。",
    ),
    "train.col.best_step": ("best step", "最佳步数"),
    "train.elapsed": ("elapsed", "已用时"),
    "train.eta": ("ETA", "预计剩余"),
    "train.tokens": ("tokens/s", "tokens/秒"),
    "train.log": ("Log", "日志"),
    "train.log.info": ("The run's events, newest first.", "训练事件，最新的在最上面。"),
    "train.samples": ("Sample generations", "示例生成"),
    "train.col.step": ("step", "步数"),
    "train.col.record": ("record", "记录"),
    "train.col.example": ("example", "样本"),
    "train.col.reference": ("reference", "参考答案"),
    "train.col.base_answer": ("base answer", "基座回答"),
    "train.col.tuned_answer": ("tuned answer", "微调后回答"),
    "train.col.base_loss": ("base loss", "基座损失"),
    "train.col.tuned_loss": ("tuned loss", "微调后损失"),
    "train.col.change": ("change", "变化"),
    "train.col.prompt": ("prompt", "提示"),
    "train.col.answer": ("answer", "回答"),
    "train.section.runs": ("Runs", "训练记录"),
    "train.run_pick": ("Run", "训练记录"),
    "train.run_pick.info": (
        "Pick a run (or click a row above) to open, resume or delete it.",
        "选择一条记录（或点击上方表格中的行）以打开、恢复或删除。",
    ),
    "train.refresh": ("Refresh", "刷新"),
    "train.open": ("Open", "打开"),
    "train.resume": ("Resume", "恢复训练"),
    "train.delete": ("Delete", "删除"),
    "train.confirm_delete": (
        "Delete run **{run}** with its checkpoints and adapter? This cannot be undone.",
        "删除训练 **{run}** 及其检查点和适配器？此操作无法撤销。",
    ),
    "train.confirm_yes": ("Yes, delete", "确认删除"),
    "train.confirm_no": ("Cancel", "取消"),
    "train.deleted": ("Deleted {run}.", "已删除 {run}。"),
    "train.delete_failed": ("Not deleted: {msg}", "未删除：{msg}"),
    "train.delete_active": ("{run} is training now; stop it before deleting.", "{run} 正在训练，请先停止再删除。"),
    "train.pick_first": ("Pick a run first.", "请先选择一条训练记录。"),
    "train.missing_run": ("Run {run} no longer exists; refresh the list.", "训练 {run} 已不存在，请刷新列表。"),
    "train.opened": ("Opened **{run}**; its settings are now in the form.", "已打开 **{run}**，其设置已填入表单。"),
    "train.resumed": ("Resuming **{run}** from its last checkpoint.", "正在从最后一个检查点恢复 **{run}**。"),
    "train.col.run": ("run", "记录"),
    "train.col.status": ("status", "状态"),
    "train.col.method": ("method", "方法"),
    "train.col.model": ("model", "模型"),
    "train.col.steps": ("steps", "步数"),
    "train.col.best_eval": ("best eval loss", "最佳验证损失"),
    "train.col.started": ("started", "开始时间"),
    "train.section.commands": ("Run it headless", "命令行运行"),
    "train.commands.info": (
        "Save writes the current settings to a YAML file; the commands below train it without the UI "
        "(the same run folder and events), on one device or on several GPUs with accelerate. With more than one "
        "GPU in *Several GPUs or machines*, it also writes the accelerate config file and shows the plan (which "
        "strategy, the memory each GPU needs) and each machine's command.",
        "“保存”把当前设置写入 YAML 文件；下面的命令无需界面即可训练（相同的运行文件夹和事件），"
        "可在单设备上运行，也可用 accelerate 在多张 GPU 上运行。在“多卡与多机”中设置多于一张显卡时，"
        "还会写出 accelerate 配置文件，并显示规划（用哪种策略、每张卡需要多少显存）和每台机器的命令。",
    ),
    "train.save_config": ("Save config and show commands", "保存配置并显示命令"),
    "train.commands": ("Commands", "命令"),
    "train.saved_config": ("Saved {path}.", "已保存 {path}。"),
    "train.several": (
        '**Start trains in this app on one device**, and "Several GPUs or machines" asks for {gpus} GPUs on '
        '{machines} machine(s). Open "Run it headless" and press **Save config and show commands** for the '
        'accelerate command (the run appears in this list), or set "GPUs in all" to 1 to train here.',
        "**“开始”在本应用中只用一个设备训练**，而“多卡与多机”设置了 {machines} 台机器上的 {gpus} 张显卡。"
        "请打开“命令行运行”并点击“保存配置并显示命令”获取 accelerate 命令（运行会出现在此列表中），"
        "或把“显卡总数”设为 1 在这里训练。",
    ),
    "train.saved_no_launch": (
        "Saved {path}, but no launch command could be made for it: {msg}",
        "已保存 {path}，但无法为它生成启动命令：{msg}",
    ),
    # ---- Start asks the estimate first
    "train.nofit": (
        "**This run is estimated not to fit:** it needs about {need:.1f} GiB, and {device} has {have:.1f} GiB. "
        "It would most likely stop with an out-of-memory error.",
        "**预计这次训练放不下：** 约需 {need:.1f} GiB，而 {device} 只有 {have:.1f} GiB，很可能因内存不足而中止。",
    ),
    "train.nofit.fix": ("Best fix: {fix} ({total:.1f} GiB).", "最佳修正：{fix}（{total:.1f} GiB）。"),
    "train.nofit.nofix": (
        "No single change makes it fit: try a smaller model or QLoRA on the Model tab.",
        "没有单项修改能让它放下：请在“模型”页换更小的模型或使用 QLoRA。",
    ),
    "train.nofit.ask": (
        "Press **Start anyway** to start it as it is.",
        "点击“仍然开始”将按当前设置开始。",
    ),
    "train.learn.head": (
        "**Will it learn?** These settings may waste the run:",
        "**能学会吗？** 这些设置可能让这次训练白费：",
    ),
    "train.learn.fix": ("Fix", "修正"),
    "train.learn.ask": (
        "Press **Start anyway** to train as it is, or **Cancel** and change the settings.",
        "点击“仍然开始”按当前设置训练，或点击“取消”修改设置。",
    ),
    "train.learn.waiting": (
        "Not started yet: see the warnings above.",
        "尚未开始：请看上方的提醒。",
    ),
    "train.nofit.waiting": (
        "Not started yet: this run is estimated not to fit (see above).",
        "尚未开始：预计这次训练放不下（见上方）。",
    ),
    "train.start_anyway": ("Start anyway", "仍然开始"),
    "train.apply_fix": ("Apply the fix", "应用修正"),
    "train.fix_applied": (
        "Applied: {fix} (about {total:.1f} GiB). Press Start.",
        "已应用：{fix}（约 {total:.1f} GiB）。请点击“开始训练”。",
    ),
    "train.fix_gone": ("This run now fits; press Start.", "现在可以放下了，请点击“开始训练”。"),
    # ---- presets from and to a file
    "train.save_preset": ("Save settings as preset", "将设置保存为预设"),
    "train.load_preset": ("Load preset file", "加载预设文件"),
    "train.preset_file": ("Preset file", "预设文件"),
    "train.reset_form": ("Reset all settings", "重置所有设置"),
    "train.reset_done": (
        "Every setting on every tab is back to its default.",
        "所有页面的设置都已恢复默认。",
    ),
    "train.preset_saved": (
        "Saved the settings as **{name}**: download it above; **Load preset file** reads it back.",
        "已将设置保存为 **{name}**：可在上方下载；“加载预设文件”可读回。",
    ),
    "train.preset_loaded": (
        "Loaded **{name}**: its settings are now in the form.",
        "已加载 **{name}**，其设置已填入表单。",
    ),
    "train.preset_bad": ("Could not load **{name}**:\n{msg}", "无法加载 **{name}**：\n{msg}"),
    # ---- the suggested first run
    "train.first_run": (
        "**New here?** Teach the model its own name in about 3 minutes on a CPU: the identity demo sets the model, "
        "the data and settings that work. Choose the name on the Data tab and press Start.",
        "**第一次使用？** 在 CPU 上约 3 分钟就能教会模型它自己的名字：身份演示会设置好模型、数据和可用的参数。"
        "在“数据”页选好名字，点击“开始训练”。",
    ),
    "train.use_identity": ("Use the identity demo", "使用身份演示"),
    "train.identity_set": (
        "Identity demo set: the model learns to answer as **{name}**, made by **{author}**. Change them under "
        "Placeholders on the Data tab if you like, then press Start.",
        "身份演示已设置：模型将学会自称 **{name}**，由 **{author}** 打造。可在“数据”页的占位符中修改，"
        "然后点击“开始训练”。",
    ),
    # ---- run states, event kinds and the words of a log line
    "train.state.idle": ("idle", "空闲"),
    "train.state.created": ("created", "已创建"),
    "train.state.starting": ("starting", "启动中"),
    "train.state.running": ("running", "训练中"),
    "train.state.finished": ("finished", "已完成"),
    "train.state.stopped": ("stopped", "已停止"),
    "train.state.failed": ("failed", "失败"),
    "train.state.interrupted": ("interrupted", "已中断"),
    "train.event.started": ("started", "开始"),
    "train.event.resumed": ("resumed", "恢复"),
    "train.event.log": ("log", "日志"),
    "train.event.eval": ("eval", "验证"),
    "train.event.checkpoint": ("checkpoint", "检查点"),
    "train.event.sample": ("sample", "采样"),
    "train.event.finished": ("finished", "完成"),
    "train.event.stopped": ("stopped", "已停止"),
    "train.event.failed": ("failed", "失败"),
    "train.word.step": ("step", "步"),
    "train.word.loss": ("loss", "损失"),
    "train.word.eval_loss": ("eval loss", "验证损失"),
    "train.word.learning_rate": ("lr", "学习率"),
    "train.word.grad_norm": ("grad norm", "梯度范数"),
    "train.word.tokens_per_s": ("tok/s", "tokens/秒"),
    "train.word.message": ("message", "消息"),
    "train.word.adapter": ("adapter", "适配器"),
    "train.word.path": ("path", "路径"),
}
i18n.add(STRINGS)

# The form's sections, row by row (Form.build_rows): the fields of a row side by side, a row of one at full width.
OBJECTIVE_ROWS = (
    ("objective",),
    ("preference.beta", "preference.loss_type", "preference.reference"),
    ("preference.simpo_gamma", "preference.desirable_weight", "preference.undesirable_weight"),
)
SCHEDULE_ROWS = (
    ("train.epochs", "train.max_steps"),
    ("train.batch_size", "train.grad_accum"),
    ("train.learning_rate", "train.lr_scheduler"),
    ("train.warmup_ratio",),
    ("train.weight_decay", "train.max_grad_norm"),
)
SPEED_ROWS = (
    ("train.optimizer", "train.precision", "train.device"),
    ("train.gradient_checkpointing", "train.group_by_length", "train.packing"),
    ("train.liger_kernel", "train.torch_compile"),
)
LOGGING_ROWS = (
    ("train.logging_steps", "train.save_steps", "train.eval_steps"),
    ("train.sample_every", "train.seed", "train.run_name"),
    ("train.sample_prompts",),
    ("train.report_to",),
    ("train.early_stopping_patience", "train.load_best_at_end"),
    ("train.eval_generations", "train.learn_check"),
)
DISTRIBUTED_ROWS = (
    ("distributed.strategy", "distributed.cpu_offload"),
    ("distributed.num_processes", "distributed.num_machines"),
    ("distributed.machine_rank", "distributed.main_process_ip", "distributed.main_process_port"),
)
LIVE = ("starting", "running")
LEARNED_COLUMNS = (
    "record",
    "example",
    "reference",
    "base_answer",
    "tuned_answer",
    "base_loss",
    "tuned_loss",
    "change",
)
"""app.learned.COLUMNS, each a train.col.* word of the page's language."""
LOG_LINES = 200
# The timer looks for a run started elsewhere (the CLI, another tab) every 5th tick: list_runs reads every run
# folder's config, which is cheap but need not happen each second.
DISCOVER_EVERY = 5


# ---- per-session view of one run, folded from its events --------------------------------------------------------
@dataclass
class RunView:
    """What the page shows of one run; kept in gr.State and extended by each timer tick. The run's facts are
    app.history's (folded from byte `offset` on); status, log lines and stopping are the page's own."""

    run_dir: str | None = None
    offset: int = 0
    status: str = "idle"
    facts: history.RunHistory = field(default_factory=history.RunHistory)
    log: list[dict[str, Any]] = field(default_factory=list)
    """The newest LOG_LINES events, oldest first; drawn as lines in the page's language (event_line)."""
    stopping: bool = False
    quiet_ticks: int = 0

    @property
    def name(self) -> str:
        return Path(self.run_dir).name if self.run_dir else ""

    @property
    def message(self) -> str:
        ending = self.facts.ending
        return str(ending.message or "") if ending else ""

    @property
    def artifact(self) -> str:
        ending = self.facts.ending
        return str(ending.artifact or "") if ending else ""


def fold(view: RunView, events: list[dict[str, Any]]) -> None:
    """Apply events in order: app.history folds the facts (a `resumed` event drops the points its session logs
    again); the page's status follows the events that set the run's phase; each event adds a log line."""
    for ev in events:
        if view.facts.add(ev):
            view.status = view.facts.phase
            view.stopping = view.stopping and view.status not in history.TERMINAL
    view.log = (view.log + list(events))[-LOG_LINES:]


def event_line(ev: dict[str, Any], lang: str = "en") -> str:
    """One log line per event, its words in `lang` (numbers, paths and messages as written):
    `12:03:04  log  step 10/100  loss 1.2345  lr 2.0e-04  812 tok/s`."""
    import time

    t = functools.partial(i18n.t, lang=lang)
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", 0)))
    kind = str(ev.get("type", "?"))
    parts = [stamp, t(f"train.event.{kind}") if f"train.event.{kind}" in i18n.STRINGS else kind]
    if "step" in ev:
        parts.append(
            f"{t('train.word.step')} {ev['step']}" + (f"/{ev['total_steps']}" if ev.get("total_steps") else "")
        )
    for key, fmt in (
        ("loss", "{:.4f}"),
        ("eval_loss", "{:.4f}"),
        ("learning_rate", "{:.1e}"),
        ("grad_norm", "{:.3f}"),
    ):
        if isinstance(ev.get(key), (int, float)):
            parts.append(f"{t('train.word.' + key)} {fmt.format(ev[key])}")
    if isinstance(ev.get("tokens_per_s"), (int, float)):
        parts.append(f"{ev['tokens_per_s']:,.0f} {t('train.word.tokens_per_s')}")
    for key in ("message", "adapter", "path"):
        if ev.get(key):
            parts.append(f"{t('train.word.' + key)}: {ev[key]}")
    return "  ".join(parts)


def state_word(status: str, lang: str) -> str:
    """A run's status (runs.status / the view's phase) in `lang`."""
    key = f"train.state.{status}"
    return i18n.t(key, lang) if key in i18n.STRINGS else status


def load_history(run_dir: str | Path, just_started: bool = False) -> RunView:
    """A fresh view of `run_dir` with everything its events file holds so far."""
    view = RunView(run_dir=str(run_dir))
    advance(view)
    actual = "running" if just_started else runs.run_status(run_dir)
    if actual == "running" and view.status not in LIVE:
        view.status = "starting"  # a resumed run's file ends with the last session's `stopped` until `resumed`
    elif actual in ("interrupted", "created") or view.status == "idle":
        view.status = actual  # events alone look "running" when the writer died without a final event
    return view


def advance(view: RunView) -> bool:
    """Read what is new in the events file; True when something changed."""
    if not view.run_dir:
        return False
    events, view.offset = history.read_events(view.run_dir, view.offset)
    fold(view, events)
    if events:
        view.quiet_ticks = 0
        return True
    view.quiet_ticks += 1
    # No final event and no news for 10 s: ask runs whether the writer is gone (crash, killed CLI run).
    if view.status in LIVE and view.quiet_ticks % 10 == 0 and runs.run_status(view.run_dir) == "interrupted":
        view.status = "interrupted"
        return True
    return False


@dataclass
class TrainHandles:
    fields: dict[str, Any]
    start: gr.Button
    stop: gr.Button
    status: gr.Markdown
    progress: gr.HTML
    plot: gr.Plot
    rewards: gr.Plot
    samples: gr.Dataframe
    learned_box: gr.Accordion
    learned_text: gr.Markdown
    learned: gr.Dataframe
    tensorboard: gr.Button
    tb_link: gr.Markdown
    log: gr.Textbox
    timer: gr.Timer
    view: gr.State
    ticks: gr.State
    run_table: gr.Dataframe
    run_pick: gr.Dropdown
    refresh: gr.Button
    open: gr.Button
    resume: gr.Button
    delete: gr.Button
    confirm_box: gr.Group
    confirm_text: gr.Markdown
    confirm_yes: gr.Button
    confirm_no: gr.Button
    save_config: gr.Button
    commands: gr.Code
    first_run: gr.Group
    use_identity: gr.Button
    nofit_box: gr.Group
    nofit_text: gr.Markdown
    start_anyway: gr.Button
    apply_fix: gr.Button
    nofit_cancel: gr.Button
    save_preset: gr.Button
    load_preset: gr.UploadButton
    reset_form: gr.Button
    preset_file: gr.File
    listed: gr.State


# ---- build ------------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> TrainHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=380):
            fields = _build_fields(ctx)
            preset_part = _build_presets(ctx.tr)
        with gr.Column(scale=3, min_width=480):
            first = _build_first_run(ctx.tr)
            live = _build_live(ctx.tr)
    runs_part = _build_runs(ctx.tr)
    commands = _build_commands(ctx.tr)
    return TrainHandles(fields=fields, **first, **live, **preset_part, **runs_part, **commands)


IDENTITY_PRESET = paths.presets_dir() / "smollm2-135m-identity-cpu.yaml"
"""The suggested first run: the identity data with name/author placeholders, settings that teach the name on a CPU."""


def _build_first_run(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Group(elem_classes="td-first-run", elem_id="train-first-run") as first_run:
        tr.text(gr.Markdown, "train.first_run")
        use_identity = tr.text(gr.Button, "train.use_identity", size="sm", elem_id="train-use-identity")
    return {"first_run": first_run, "use_identity": use_identity}


def _build_presets(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Row(equal_height=True):
        save_preset = tr.text(gr.Button, "train.save_preset", size="sm", elem_id="train-save-preset")
        load_preset = tr.text(
            gr.UploadButton, "train.load_preset", file_types=[".yaml", ".yml"], size="sm", elem_id="train-load-preset"
        )
        # the form is kept over refreshes and restarts (app.last_form): this is the way back to the defaults
        reset_form = tr.text(gr.Button, "train.reset_form", size="sm", elem_id="train-reset-form")
    preset_file = tr.labelled(gr.File, "train.preset_file", visible=False, interactive=False, elem_id="train-preset")
    return {
        "save_preset": save_preset,
        "load_preset": load_preset,
        "reset_form": reset_form,
        "preset_file": preset_file,
    }


def _build_fields(ctx: AppContext) -> dict[str, Any]:
    tr, form = ctx.tr, ctx.form
    fields: dict[str, Any] = {}
    with tr.labelled(gr.Accordion, "train.section.objective", open=False):
        fields.update(form.build_rows(OBJECTIVE_ROWS))
    with tr.labelled(gr.Accordion, "train.section.schedule", open=True):
        fields.update(form.build_rows(SCHEDULE_ROWS))
    with tr.labelled(gr.Accordion, "train.section.speed", open=True):
        fields.update(form.build_rows(SPEED_ROWS))
    with tr.labelled(gr.Accordion, "train.section.logging", open=False):
        fields.update(form.build_rows(LOGGING_ROWS))
    with tr.labelled(gr.Accordion, "train.section.distributed", open=False, elem_id="train-distributed"):
        fields.update(form.build_rows(DISTRIBUTED_ROWS))
    return fields


def _build_live(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Row():
        start = tr.text(gr.Button, "train.start", variant="primary", elem_id="train-start")
        stop = tr.text(gr.Button, "train.stop", variant="stop", elem_id="train-stop")
        tensorboard = tr.text(gr.Button, "train.tensorboard", size="sm", elem_id="train-tensorboard")
    tb_link = gr.Markdown("", elem_id="train-tb-link")
    with gr.Group(visible=False, elem_classes="td-confirm", elem_id="train-nofit") as nofit_box:
        nofit_text = gr.Markdown("")
        with gr.Row():
            start_anyway = tr.text(gr.Button, "train.start_anyway", variant="stop", size="sm", elem_id="train-anyway")
            apply_fix = tr.text(gr.Button, "train.apply_fix", variant="primary", size="sm", elem_id="train-apply-fix")
            nofit_cancel = tr.text(gr.Button, "train.confirm_no", size="sm")
    # not bound to a key: it shows the run's state; a language switch re-renders it (see wire)
    status = gr.Markdown(tr("train.idle"), elem_classes="td-status", elem_id="train-status")
    progress = gr.HTML(plots.progress_html(0, None), elem_id="train-progress")
    plot = gr.Plot(show_label=False, elem_id="train-plot")
    rewards = gr.Plot(show_label=False, visible=False, elem_id="train-rewards")  # preference runs only
    samples = tr.labelled(
        gr.Dataframe,
        "train.samples",
        headers=[tr("train.col.step"), tr("train.col.prompt"), tr("train.col.answer")],
        interactive=False,
        wrap=True,
        max_height=260,
        elem_id="train-samples",
    )
    with tr.labelled(gr.Accordion, "train.learned", open=True, visible=False, elem_id="train-learned") as learned_box:
        learned_text = gr.Markdown("", elem_id="train-learned-verdict")
        learned = gr.Dataframe(
            headers=[tr(f"train.col.{c}") for c in LEARNED_COLUMNS],
            interactive=False,
            wrap=True,
            max_height=320,
            elem_id="train-learned-table",
        )
    log = tr.labelled(
        gr.Textbox,
        "train.log",
        info=True,
        lines=8,
        max_lines=8,
        interactive=False,
        autoscroll=False,  # the newest line is the first
        elem_classes="td-mono",
        elem_id="train-log",
    )
    return {
        "start": start,
        "stop": stop,
        "status": status,
        "progress": progress,
        "plot": plot,
        "rewards": rewards,
        "samples": samples,
        "learned_box": learned_box,
        "learned_text": learned_text,
        "learned": learned,
        "tensorboard": tensorboard,
        "tb_link": tb_link,
        "log": log,
        "timer": gr.Timer(1.0),
        "view": gr.State(RunView()),
        "ticks": gr.State(0),
        "nofit_box": nofit_box,
        "nofit_text": nofit_text,
        "start_anyway": start_anyway,
        "apply_fix": apply_fix,
        "nofit_cancel": nofit_cancel,
    }


def _build_runs(tr: i18n.Translator) -> dict[str, Any]:
    with tr.labelled(gr.Accordion, "train.section.runs", open=True):
        table, ids = run_table(tr.lang)  # filled at build too: the page-load refresh may queue behind others
        run_table_ = gr.Dataframe(table, interactive=False, wrap=True, max_height=300, elem_id="run-table")
        with gr.Row(equal_height=False, elem_classes="td-run-actions"):
            run_pick = tr.labelled(gr.Dropdown, "train.run_pick", info=True, choices=ids, scale=4, elem_id="run-pick")
            refresh = tr.text(gr.Button, "train.refresh", size="sm", scale=1)
            open_ = tr.text(gr.Button, "train.open", size="sm", scale=1)
            resume = tr.text(gr.Button, "train.resume", size="sm", scale=1)
            delete = tr.text(gr.Button, "train.delete", size="sm", scale=1, elem_classes="td-danger")
        with gr.Group(visible=False, elem_classes="td-confirm") as confirm_box:
            confirm_text = gr.Markdown("")
            with gr.Row():
                confirm_yes = tr.text(gr.Button, "train.confirm_yes", variant="stop", size="sm")
                confirm_no = tr.text(gr.Button, "train.confirm_no", size="sm")
    return {
        "listed": gr.State(_signature(table)),
        "run_table": run_table_,
        "run_pick": run_pick,
        "refresh": refresh,
        "open": open_,
        "resume": resume,
        "delete": delete,
        "confirm_box": confirm_box,
        "confirm_text": confirm_text,
        "confirm_yes": confirm_yes,
        "confirm_no": confirm_no,
    }


def _build_commands(tr: i18n.Translator) -> dict[str, Any]:
    with tr.labelled(gr.Accordion, "train.section.commands", open=False):
        tr.text(gr.Markdown, "train.commands.info")
        save_config = tr.text(gr.Button, "train.save_config", size="sm")
        commands = tr.labelled(
            gr.Code, "train.commands", language="shell", interactive=False, elem_id="train-commands"
        )
    return {"save_config": save_config, "commands": commands}


# ---- wiring (after every tab is built: Start reads every form field) --------------------------------------------
def wire(ctx: AppContext) -> None:
    h = ctx.train
    lang = ctx.lang_selector
    form_in = ctx.form.inputs() | {lang, h.view}
    form_out = list(ctx.form.inputs())  # every widget of every tab, the Data tab's columns and placeholders too
    live = [
        h.view,
        h.status,
        h.progress,
        h.plot,
        h.rewards,
        h.samples,
        h.learned_box,
        h.learned_text,
        h.learned,
        h.log,
    ]
    listing = [h.run_table, h.run_pick, h.listed]
    api = {"api_visibility": "undocumented"}
    private = {"api_visibility": "private"}
    h.start.click(
        lambda v: start_run(ctx, v),
        inputs=form_in,
        outputs=live + listing + [h.nofit_box, h.nofit_text, h.apply_fix],
        api_name="start_training",
        **api,
    )
    h.start_anyway.click(
        lambda v: start_run(ctx, v, confirmed=True),
        inputs=form_in,
        outputs=live + listing + [h.nofit_box, h.nofit_text],
        api_name="start_anyway",
        **api,
    )
    h.apply_fix.click(
        lambda v: apply_best_fix(ctx, v),
        inputs=form_in,
        outputs=form_out + [h.status, h.nofit_box],
        api_name="apply_fit_fix",
        **private,
    )
    h.nofit_cancel.click(lambda: gr.update(visible=False), outputs=h.nofit_box, **private)
    h.stop.click(lambda v: stop_run(ctx, v), inputs={lang, h.view}, outputs=live, api_name="stop_training", **api)
    h.tensorboard.click(
        lambda v: open_tensorboard(ctx, v), inputs={lang}, outputs=[h.tb_link], api_name="open_tensorboard", **private
    )
    h.timer.tick(
        lambda v: tick(ctx, v),
        inputs={lang, h.view, h.ticks, h.run_pick, h.listed},
        outputs=live + [h.ticks] + listing,
        show_progress="hidden",
        concurrency_limit=None,
        concurrency_id="train-tick",
        api_name="train_tick",
        **private,
    )
    ctx.demo.load(lambda v: attach(ctx, v), inputs={lang, h.view}, outputs=live + listing, **private)
    lang.change(
        lambda v: {**render(ctx, v[h.view], _lang(ctx, v)), **_listing(ctx, _lang(ctx, v), v.get(h.run_pick))},
        inputs={lang, h.view, h.run_pick},
        outputs=live + listing,
        show_progress="hidden",
        **private,
    )
    _wire_runs(ctx, live, listing, form_out)
    _wire_files(ctx, form_out)
    _wire_first_run(ctx)


def _wire_runs(ctx: AppContext, live: list[Any], listing: list[Any], form_out: list[Any]) -> None:
    """The run list: Refresh, pick by row, Open (into every tab), Resume, Delete with its confirmation."""
    h, lang = ctx.train, ctx.lang_selector
    api = {"api_visibility": "undocumented"}
    private = {"api_visibility": "private"}
    h.refresh.click(
        lambda v: refresh_runs(ctx, v), inputs={lang, h.run_pick}, outputs=listing, api_name="list_runs", **api
    )
    h.run_table.select(pick_from_table, inputs=None, outputs=h.run_pick, **private)
    h.open.click(
        lambda v: open_run(ctx, v),
        inputs={lang, h.run_pick, h.view},
        outputs=live + form_out + [h.commands],
        api_name="open_run",
        **api,
    )
    h.resume.click(
        lambda v: resume_run(ctx, v),
        inputs={lang, h.run_pick, h.view},
        outputs=live + listing,
        api_name="resume_run",
        **api,
    )
    h.delete.click(
        lambda v: ask_delete(ctx, v),
        inputs={lang, h.run_pick},
        outputs=[h.confirm_box, h.confirm_text, h.status],
        **private,
    )
    h.confirm_no.click(lambda: gr.update(visible=False), outputs=h.confirm_box, **private)
    h.confirm_yes.click(
        lambda v: delete_run(ctx, v),
        inputs={lang, h.run_pick, h.view},
        outputs=live + listing + [h.confirm_box],
        api_name="delete_run",
        **api,
    )


def _wire_files(ctx: AppContext, form_out: list[Any]) -> None:
    """Settings to and from files: Save config (with the headless commands), Save / Load preset file."""
    h, lang = ctx.train, ctx.lang_selector
    api = {"api_visibility": "undocumented"}
    h.save_config.click(
        lambda v: save_config(ctx, v),
        inputs=ctx.form.inputs() | {lang},
        outputs=[h.commands, h.status],
        api_name="save_config",
        **api,
    )
    h.save_preset.click(
        lambda v: save_preset(ctx, v),
        inputs=ctx.form.inputs() | {lang},
        outputs=[h.preset_file, h.status],
        api_name="save_preset",
        **api,
    )
    h.load_preset.upload(
        lambda v: load_preset(ctx, v),
        inputs=ctx.form.inputs() | {lang, h.load_preset},
        outputs=form_out + [h.status],
        api_name="load_preset",
        **api,
    )
    h.reset_form.click(
        lambda v: reset_form(ctx, v), inputs={lang}, outputs=form_out + [h.status], api_name="reset_form", **api
    )


def _wire_first_run(ctx: AppContext) -> None:
    """ "Use the identity demo": select its preset on the Model tab, then apply it with the Model tab's own event
    (its inputs and outputs as registered there), then say what is left to do."""
    from app.ui import model_tab

    h, model = ctx.train, ctx.model
    [applied] = [d for d in ctx.demo.fns.values() if d.api_name == "apply_preset"]
    h.use_identity.click(
        lambda: gr.update(choices=model_tab.preset_choices(), value=str(IDENTITY_PRESET)),
        outputs=model.preset,
        api_name="use_identity_demo",
        api_visibility="private",
    ).then(
        lambda v: use_identity(ctx, v),
        inputs=set(applied.inputs) | {ctx.lang_selector},
        # the preset may set any widget of the form, the Data tab's placeholders too (it brings its data along)
        outputs=list(dict.fromkeys([*applied.outputs, *ctx.form.inputs(), h.status])),
        api_name="use_identity_apply",
        api_visibility="private",
    )


def use_identity(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Apply the identity preset the Model tab's preset picker now holds (model_tab.apply_preset: over the defaults,
    bringing its data along) and say on the Train tab what is left: the name and author placeholders."""
    from app.ui import model_tab

    lang = _lang(ctx, values)
    out = model_tab.apply_preset(ctx, values)
    try:
        names = RunConfig.from_preset(IDENTITY_PRESET).data.placeholders
    except ConfigError as exc:  # the Model tab's status says the same; say it where the button was pressed
        msg = _bullets(exc, lang)
        return {**out, ctx.train.status: i18n.t("train.preset_bad", lang, name=IDENTITY_PRESET.name, msg=msg)}
    name, author = names.get("name", "{{name}}"), names.get("author", "{{author}}")
    return {**out, ctx.train.status: i18n.t("train.identity_set", lang, name=name, author=author)}


def _lang(ctx: AppContext, values: dict[Any, Any]) -> str:
    return ctx.lang(values)


# ---- rendering --------------------------------------------------------------------------------------------------
def render(ctx: AppContext, view: RunView, lang: str, status_text: str | None = None) -> dict[Any, Any]:
    """Every live output for `view`: status line, progress bar, plot, samples and log tail."""
    h = ctx.train
    t = functools.partial(i18n.t, lang=lang)
    facts, progress = view.facts, view.facts.progress
    labels = {key: t(f"train.plot.{key}") for key in plots.TRAINING_LABELS}
    step = int(progress.step or (facts.steps[-1] if facts.steps else 0))
    bar = plots.progress_html(
        step,
        progress.total_steps,
        progress.elapsed_s,
        progress.eta_s,
        progress.tokens_per_s,
        view.status,
        {"elapsed": t("train.elapsed"), "eta": t("train.eta"), "tok": t("train.tokens")},
    )
    samples = pd.DataFrame(
        [tuple(s) for s in reversed(facts.samples)],
        columns=[t("train.col.step"), t("train.col.prompt"), t("train.col.answer")],
    )
    scores = {name: facts.eval_series(name) for name in history.GENERATION_METRICS}
    figure = (
        plots.training_figure(
            facts.steps, facts.losses, facts.eval_steps, facts.eval_losses, facts.lrs, labels, scores
        )
        if facts.steps or facts.eval_steps
        else None
    )
    reward_labels = {key: t(f"train.plot.{key}") for key in plots.REWARD_LABELS}
    rewards = plots.rewards_figure({name: facts.series(name) for name in plots.REWARD_SERIES}, reward_labels)
    return {
        h.view: view,
        h.rewards: gr.update(value=rewards, visible=rewards is not None),
        h.status: status_text or status_line(view, lang),
        h.progress: bar,
        h.plot: figure,
        h.samples: samples,
        **learned_outputs(h, view, lang),
        h.log: "\n".join(event_line(ev, lang) for ev in reversed(view.log)),  # newest first: no scrolling to it
    }


def learned_outputs(h: TrainHandles, view: RunView, lang: str) -> dict[Any, Any]:
    """The "did it learn?" panel: shown once the run's last session wrote its table (app.learned), with the
    verdict (flagged in bold when the run may not have learned) and the base and tuned answers side by side."""
    from app import learned

    ended = bool(view.run_dir) and view.status in history.TERMINAL
    found = learned.load(view.run_dir) if ended else None
    session = view.facts.sessions[-1] if view.facts.sessions else None
    why_not = learned.not_for(session.objective or "sft") if ended and session else None
    if why_not:  # a preference run: say why there is no table, and where to look instead
        return {h.learned_box: gr.update(visible=True), h.learned_text: why_not.capitalize(), h.learned: None}
    if found is None:
        return {h.learned_box: gr.update(visible=False)}
    verdict = found.verdict if found.learned else i18n.t("train.learned.flagged", lang, verdict=found.verdict)
    columns = [i18n.t(f"train.col.{c}", lang) for c in LEARNED_COLUMNS]
    return {
        h.learned_box: gr.update(visible=True),
        h.learned_text: verdict,
        h.learned: pd.DataFrame(found.table(), columns=columns),
    }


def open_tensorboard(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Start TensorBoard on the runs folder (once; 127.0.0.1 only) and link to it."""
    from app import tracking

    h, lang = ctx.train, _lang(ctx, values)
    try:
        url = tracking.tensorboard_url(paths.runs_dir(ctx.form.defaults.train.output_dir))
    except tracking.TrackingError as exc:
        return {h.tb_link: i18n.t("train.tb.failed", lang, msg=str(exc))}
    return {h.tb_link: i18n.t("train.tb.link", lang, url=url)}


def status_line(view: RunView, lang: str) -> str:
    if not view.run_dir:
        return i18n.t("train.idle", lang)
    if view.stopping and view.status in LIVE:
        return i18n.t("train.stopping", lang)
    key = f"train.status.{view.status}"
    if key not in i18n.STRINGS:
        return i18n.t("train.status.viewing", lang, run=view.name, status=state_word(view.status, lang))
    message = plain(view.message, lang)  # "lower train.batch_size" -> "lower Micro-batch size"
    line = i18n.t(key, lang, run=view.name, artifact=view.artifact or view.run_dir, message=message)
    return " ".join([line, *_ending_notes(view, lang)])


def _ending_notes(view: RunView, lang: str) -> list[str]:
    """Why a run ended early (early stopping) and, with load_best_at_end, which step its saved weights are from."""
    ending, facts = view.facts.ending, view.facts
    if view.status not in ("finished", "stopped") or ending is None:
        return []
    notes = [i18n.t("train.stop_reason", lang, reason=facts.stop_reason)] if facts.stop_reason else []
    best = ending.artifact_step
    if best is not None and best != ending.step and ending.best_eval_loss is not None:
        notes.append(i18n.t("train.best_weights", lang, step=best, loss=ending.best_eval_loss))
    return notes


def run_table(lang: str) -> tuple[pd.DataFrame, list[str]]:
    """runs.list_runs() as a table (newest first) and the ids for the picker."""
    t = functools.partial(i18n.t, lang=lang)
    rows = runs.list_runs()
    records = [
        {
            t("train.col.run"): r.id,
            t("train.col.status"): state_word(r.status, lang),
            t("train.col.method"): r.method,
            t("train.col.model"): r.model,
            t("train.col.steps"): _steps(r.step, r.total_steps),
            t("train.col.best_eval"): round(r.best_eval_loss, 4) if r.best_eval_loss is not None else None,
            t("train.col.best_step"): str(r.best_step) if r.best_step is not None else "-",
            t("train.col.started"): _when(r.started or _created(r.path)),
        }
        for r in rows
    ]
    names = ("run", "status", "method", "model", "steps", "best_eval", "best_step", "started")
    columns = [t(f"train.col.{c}") for c in names]
    return pd.DataFrame.from_records(records, columns=columns), [r.id for r in rows]


def _steps(step: int | None, total: int | None) -> str:
    """`2/20`; `2` while the total is not known yet; `-` before the first step of a run that has no total yet."""
    if total:
        return f"{step or 0}/{total}"
    return str(step) if step else "-"


def _created(run_dir: Path) -> float | None:
    """When the run folder got its config.yaml: the start time to show before the trainer's `started` event."""
    try:
        return (Path(run_dir) / runs.CONFIG).stat().st_mtime
    except OSError:
        return None


def _when(started: Any) -> str:
    import time

    if isinstance(started, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    return str(started or "")


def _listing(ctx: AppContext, lang: str, pick: str | None = None) -> dict[Any, Any]:
    h = ctx.train
    table, ids = run_table(lang)
    return {
        h.run_table: table,
        h.run_pick: gr.update(choices=ids, value=pick if pick in ids else None),
        h.listed: _signature(table),
    }


def _signature(table: pd.DataFrame) -> str:
    """What the run list shows, as one string: the timer redraws the list only when this changes."""
    return table.to_json(orient="split")


def _listing_if_changed(ctx: AppContext, lang: str, pick: str | None, shown: str | None) -> dict[Any, Any]:
    """The run list's updates when the runs differ from what the page shows (a run started from the CLI or
    another page, a step or a status that moved), keeping the picked run; {} otherwise."""
    listing = _listing(ctx, lang, pick)
    return listing if listing[ctx.train.listed] != shown else {}


def _run_path(run_id: str | None) -> Path | None:
    if not run_id:
        return None
    for r in runs.list_runs():
        if r.id == run_id:
            return Path(r.path)
    return None


# ---- handlers -----------------------------------------------------------------------------------------------------
def start_run(ctx: AppContext, values: dict[Any, Any], confirmed: bool = False) -> dict[Any, Any]:
    """Validate the whole config (every problem listed); unless `confirmed` (Start anyway), ask the estimate and
    stop at a run estimated not to fit, showing why and the best fix; refuse when a run is active; else start in
    the background."""
    h = ctx.train
    lang = _lang(ctx, values)
    try:
        cfg = ctx.form.to_config(values).check(source="form")
    except ConfigError as exc:
        return {h.status: i18n.t("train.invalid", lang, msg=_bullets(exc, lang))}
    if not confirmed:  # what cannot start is said before what may be wasted
        waiting = _refusal(h, cfg, lang) or _waiting(ctx, cfg, lang)
        if waiting:
            return waiting
    hide = {h.nofit_box: gr.update(visible=False)}
    view, refusal = _launch(cfg, lang)
    if view is None:
        return {**_refused(h, refusal), **hide}
    return {**render(ctx, view, lang), **_listing(ctx, lang, view.name), **hide}


def _refusal(h: TrainHandles, cfg: RunConfig, lang: str) -> dict[Any, Any]:
    """Why `cfg` cannot start at all (a run is active, or train.preflight's problems), before Start asks about
    memory or learning; empty when it can. _launch asks again at the moment it starts."""
    active = jobs.manager.active()
    if active is not None:
        return _refused(h, i18n.t("train.busy", lang, run=Path(active.run_dir).name))
    d = cfg.distributed
    if d.num_processes > 1 or d.num_machines > 1:  # Start trains here, on one device: not what these settings ask
        return _refused(h, i18n.t("train.several", lang, gpus=d.num_processes, machines=d.num_machines))
    problems = jobs.preflight(cfg)
    if problems:
        return {h.status: i18n.t("train.invalid", lang, msg=_bullets(ConfigError(problems), lang))}
    return {}


def _waiting(ctx: AppContext, cfg: RunConfig, lang: str) -> dict[Any, Any]:
    """Why Start waits for Start anyway: the estimate says the run does not fit (with its best fix), and/or the
    "will it learn?" checks (app.learn_checks) found settings that waste the run. Empty when nothing is wrong."""
    h = ctx.train
    answer = _estimate(cfg)
    nofit = answer is not None and answer.verdict == "no"
    warnings = _learn_warnings(cfg)
    if not nofit and not warnings:
        return {}
    parts = ([nofit_text(answer, lang)] if nofit else []) + ([learn_text(warnings, lang)] if warnings else [])
    text = "\n\n".join(parts)
    gr.Warning(text.split("\n", 1)[0].replace("**", ""))
    waiting = i18n.t("train.nofit.waiting" if nofit else "train.learn.waiting", lang)
    fix = nofit and bool(answer.fixes)
    return {
        h.nofit_box: gr.update(visible=True),
        h.nofit_text: text,
        h.status: waiting,
        h.apply_fix: gr.update(visible=fix),
    }


def _learn_warnings(cfg: RunConfig) -> list[Any]:
    """app.learn_checks' warnings for `cfg` (~1 s: the base model's tokenizer and the data, never its weights)."""
    from app import learn_checks

    return learn_checks.checks(cfg)


def learn_text(warnings: list[Any], lang: str) -> str:
    """The "will it learn?" warnings as a list: the setting's on-screen label, what is wrong, the fix."""
    fix = i18n.t("train.learn.fix", lang)
    lines = [i18n.t("train.learn.head", lang)]
    lines += [
        f"- **{label_of(w.field, lang)}**: {plain(w.message, lang)}. {fix}: {plain(w.fix, lang)}." for w in warnings
    ]
    return "\n".join(lines) + "\n\n" + i18n.t("train.learn.ask", lang)


def _estimate(cfg: RunConfig) -> Any:
    """The estimate service's answer for `cfg` (app.estimate: the verdict the Model tab shows), or None when the
    model's size cannot be read here (an unknown hub id offline): then Start goes ahead as before."""
    from app import estimate

    try:
        return estimate.service(cfg)
    except (estimate.EstimateError, ConfigError, OSError, ValueError):
        return None


def nofit_text(answer: Any, lang: str) -> str:
    """Why Start waits: the estimate against the device, the best fix (the estimate's first) and what to press."""
    est = answer.estimate
    have = (est.device_memory_bytes or 0) / 2**30
    lines = [i18n.t("train.nofit", lang, need=est.total_gib, have=have, device=answer.label)]
    if answer.fixes:
        best = answer.fixes[0]
        from app.ui.model_tab import fix_label  # the Model tab's words for a fix, in the page's language

        fix = fix_label(best.key, best.params, lang)
        lines.append(i18n.t("train.nofit.fix", lang, fix=fix, total=best.estimate.total_gib))
    else:
        lines.append(i18n.t("train.nofit.nofix", lang))
    lines.append(i18n.t("train.nofit.ask", lang))
    return "\n\n".join(lines)


def apply_best_fix(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """ "Apply the fix": the estimate's best fix into the form (only the widgets it changes); Start is then the
    user's next press."""
    from app.ui.model_tab import changed_updates

    h = ctx.train
    lang = _lang(ctx, values)
    hide = {h.nofit_box: gr.update(visible=False)}
    try:
        cfg = ctx.form.to_config(values).check(source="form")
    except ConfigError as exc:
        return {**hide, h.status: i18n.t("train.invalid", lang, msg=_bullets(exc, lang))}
    answer = _estimate(cfg)
    if answer is None or answer.verdict != "no" or not answer.fixes:
        return {
            **hide,
            h.status: i18n.t("train.fix_gone" if answer and answer.verdict != "no" else "train.nofit.nofix", lang),
        }
    best = answer.fixes[0]
    fixed = cfg.replace(**best.changes)
    status = i18n.t("train.fix_applied", lang, fix=best.label, total=best.estimate.total_gib)
    return {**changed_updates(ctx.form, cfg, fixed), **hide, h.status: status}


def _refused(h: TrainHandles, message: str) -> dict[Any, Any]:
    """A toast as well as the status line: while a run is live the next timer tick redraws the status."""
    gr.Warning(message.split("\n", 1)[0].replace("**", ""))
    return {h.status: message}


def _launch(cfg: RunConfig, lang: str, resume_dir: Path | None = None) -> tuple[RunView | None, str]:
    """(view of the new run, "") or (None, why not): one run at a time, and every problem named."""
    active = jobs.manager.active()  # app.jobs imports the trainer (torch) only when a run starts
    if active is not None:
        return None, i18n.t("train.busy", lang, run=Path(active.run_dir).name)
    try:
        run_dir = jobs.manager.start(cfg, resume_dir=resume_dir)
    except jobs.JobBusy as exc:
        return None, i18n.t("train.refused", lang, msg=plain(str(exc), lang))
    except ConfigError as exc:
        return None, i18n.t("train.invalid", lang, msg=_bullets(exc, lang))
    except (OSError, ValueError, RuntimeError) as exc:
        return None, i18n.t("train.start_failed", lang, msg=plain(str(exc), lang))
    return load_history(run_dir, just_started=True), ""


def _bullets(exc: ConfigError, lang: str) -> str:
    """Every problem on its own line, naming the label on screen (form.explain), not the config key."""
    return "\n".join(f"- {p}" for p in explain(exc.problems, lang)) if exc.problems else str(exc)


def stop_run(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.train
    lang, view = _lang(ctx, values), values[h.view]
    manager = jobs.manager
    if not manager.stop():
        return {h.status: i18n.t("train.not_running", lang)}
    active = manager.active()
    if active is not None and str(Path(active.run_dir)) != view.run_dir:
        view = load_history(active.run_dir)
    view.stopping = True
    return render(ctx, view, lang)


def tick(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Timer: redraw the run only when its events file grew; every 5th tick, look for a run started elsewhere and
    redraw the run list when it changed (new runs, steps, statuses: no Refresh press needed)."""
    h = ctx.train
    lang, view, ticks = _lang(ctx, values), values[h.view], (values.get(h.ticks) or 0) + 1
    pick, shown = values.get(h.run_pick), values.get(h.listed)
    out: dict[Any, Any] = {h.ticks: ticks, h.view: view}  # the view's byte offset moves even when nothing is drawn
    if view.status not in LIVE and ticks % DISCOVER_EVERY == 0:
        found = find_live_run()
        if found and str(found) != view.run_dir:
            return {**out, **render(ctx, load_history(found), lang), **_listing(ctx, lang, Path(found).name)}
    before = view.status
    if advance(view):
        out.update(render(ctx, view, lang))
    if ticks % DISCOVER_EVERY == 0 or view.status != before:
        out.update(_listing_if_changed(ctx, lang, pick, shown))
    return out


def active_job() -> Any:
    """This process's running job, or None."""
    return jobs.manager.active()


def find_live_run() -> Path | None:
    """The job of this app, else the newest run whose events say it is running (a CLI-started run)."""
    active = active_job()
    if active is not None:
        return Path(active.run_dir)
    for r in runs.list_runs():
        if r.status == "running":
            return Path(r.path)
    return None


def attach(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Page load: reattach to the active or latest running run, else show the newest run, with its full history;
    fill the run list."""
    h = ctx.train
    lang, view = _lang(ctx, values), values[h.view]
    found = find_live_run()
    if found is None and view.run_dir is None:
        newest = runs.list_runs()[:1]
        found = Path(newest[0].path) if newest else None
    if found is not None or view.run_dir:
        view = load_history(found or view.run_dir)
    return {**render(ctx, view, lang), **_listing(ctx, lang, view.name or None)}


def refresh_runs(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.train
    return _listing(ctx, _lang(ctx, values), values.get(h.run_pick))


def pick_from_table(evt: gr.SelectData) -> Any:
    row = evt.row_value or []
    return gr.update(value=row[0]) if row else gr.skip()


def open_run(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Redraw the run's history and load its config.yaml into the form."""
    h = ctx.train
    lang, run_id = _lang(ctx, values), values.get(h.run_pick)
    path = _run_path(run_id)
    if path is None:
        return {h.status: i18n.t("train.pick_first" if not run_id else "train.missing_run", lang, run=run_id)}
    view = load_history(path)
    out = render(ctx, view, lang, i18n.t("train.opened", lang, run=view.name))
    config_path = path / "config.yaml"
    try:
        cfg = RunConfig.from_yaml(config_path)
    except ConfigError as exc:
        out[h.status] = i18n.t("train.invalid", lang, msg=_bullets(exc, lang))
        return out
    out.update(ctx.form.updates_from(cfg))
    out[h.commands] = commands_text(config_path)
    return out


def resume_run(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Continue a stopped, failed or interrupted run from its last checkpoint, with its own config.yaml."""
    h = ctx.train
    lang, run_id = _lang(ctx, values), values.get(h.run_pick)
    path = _run_path(run_id)
    if path is None:
        return {h.status: i18n.t("train.pick_first" if not run_id else "train.missing_run", lang, run=run_id)}
    try:
        cfg = runs.load_config(path)
    except ConfigError as exc:
        return {h.status: i18n.t("train.invalid", lang, msg=_bullets(exc, lang))}
    view, refusal = _launch(cfg, lang, resume_dir=path)
    if view is None:
        return _refused(h, refusal)
    return {**render(ctx, view, lang, i18n.t("train.resumed", lang, run=view.name)), **_listing(ctx, lang, view.name)}


def ask_delete(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.train
    lang, run_id = _lang(ctx, values), values.get(h.run_pick)
    if not run_id:
        return {h.status: i18n.t("train.pick_first", lang), h.confirm_box: gr.update(visible=False)}
    return {h.confirm_box: gr.update(visible=True), h.confirm_text: i18n.t("train.confirm_delete", lang, run=run_id)}


def delete_run(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.train
    lang, run_id, view = _lang(ctx, values), values.get(h.run_pick), values[h.view]
    hide = {h.confirm_box: gr.update(visible=False)}
    path = _run_path(run_id)
    if path is None:
        return {**hide, h.status: i18n.t("train.pick_first" if not run_id else "train.missing_run", lang, run=run_id)}
    active = active_job()
    if (active is not None and Path(active.run_dir).resolve() == path.resolve()) or runs.run_status(path) == "running":
        return {**hide, h.status: i18n.t("train.delete_active", lang, run=run_id)}
    try:
        runs.delete_run(path)
    except (runs.RunError, OSError) as exc:
        return {**hide, h.status: i18n.t("train.delete_failed", lang, msg=str(exc))}
    if view.run_dir and Path(view.run_dir).resolve() == path.resolve():
        view = RunView()
    return {**render(ctx, view, lang, i18n.t("train.deleted", lang, run=run_id)), **_listing(ctx, lang), **hide}


# ---- headless commands --------------------------------------------------------------------------------------------
def config_file_for(cfg: RunConfig) -> Path:
    """Where Save puts the current settings: $TUNEDESK_HOME/configs/<run name or method-model>.yaml."""
    stem = cfg.train.run_name or f"{cfg.method}-{Path(cfg.model.name_or_path).name}"
    return paths.home() / "configs" / (re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") + ".yaml")


def commands_text(config_path: Path, cfg: RunConfig | None = None, device_memory_bytes: int | None = None) -> str:
    """Shell lines that train `config_path` without the UI; the first line makes them work as printed from a fresh
    shell (the checkout's .venv holds python, accelerate and torchrun).

    A config for one process (`distributed.num_processes` 1): one device, two GPUs data-parallel, two CPU
    processes. A config for several GPUs or machines: app.launch's plan for it, as `python -m app launch-command`
    prints it: the plan in one line, each machine's `accelerate launch` command and the config file it wrote next
    to `config_path`, and its notes. Raises ConfigError / LaunchError (the message says what to change)."""
    from app import launch

    head = ["# in a new terminal, first", activate_line()]
    d = cfg.distributed if cfg is not None else None
    if d is not None and (d.num_processes > 1 or d.num_machines > 1):
        planned = launch.plan_launch(cfg, config_path, device_memory_bytes)
        lines = [
            line if line.startswith(("#", "accelerate ", "torchrun ", "python ")) else f"# {line.strip()}"
            for line in launch.format_plan(planned).splitlines()
        ]
        return "\n".join([*head, *lines])
    return "\n".join(
        [
            *head,
            "# one device (the same run folder and events as the UI)",
            f"python -m app train {config_path}",
            "# two GPUs, data parallel",
            launch.data_parallel_command(config_path, 2, "cuda"),
            "# two CPU processes",
            launch.data_parallel_command(config_path, 2, "cpu"),
        ]
    )


def activate_line() -> str:
    """`cd <checkout> && . .venv/bin/activate`: after it, `python`, `accelerate` and `torchrun` are the ones of the
    environment this app runs in (the .venv launch.py made, or wherever TuneDesk was installed)."""
    import shlex
    import sys

    activate = Path(sys.prefix) / "bin" / "activate"
    shown = activate.relative_to(paths.ROOT) if activate.is_relative_to(paths.ROOT) else activate
    cd = f"cd {shlex.quote(str(paths.ROOT))}"
    return f"{cd} && . {shlex.quote(str(shown))}" if activate.is_file() else cd


def save_preset(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """ "Save settings as preset": every setting of every tab as one YAML file under $TUNEDESK_HOME/presets/, offered
    for download; `RunConfig.from_preset` (Load preset file, the Model tab's presets, the CLI) reads it back."""
    h = ctx.train
    lang = _lang(ctx, values)
    try:
        cfg = ctx.form.to_config(values)
    except ConfigError as exc:
        return {h.status: i18n.t("train.invalid", lang, msg=_bullets(exc, lang))}
    path = paths.home() / "presets" / config_file_for(cfg).name
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    return {
        h.preset_file: gr.update(value=str(path), visible=True),
        h.status: i18n.t("train.preset_saved", lang, name=path.name),
    }


def load_preset(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """ "Load preset file": an uploaded YAML preset over the defaults, keeping the current data section where the
    file names none (as the Model tab's presets do), into every tab; a bad file gets its name and its problems."""
    h = ctx.train
    lang, upload = _lang(ctx, values), values.get(h.load_preset)
    path = Path(getattr(upload, "name", None) or str(upload or ""))
    try:
        current = ctx.form.to_config(values, lenient=True)
        cfg = RunConfig.from_preset(path, base=ctx.defaults.replace(data=current.to_dict()["data"]))
    except ConfigError as exc:
        return {h.status: i18n.t("train.preset_bad", lang, name=path.name, msg=_bullets(exc, lang))}
    return {**ctx.form.updates_from(cfg), h.status: i18n.t("train.preset_loaded", lang, name=path.name)}


def reset_form(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """ "Reset all settings": every widget of every tab back to the app's defaults (saved as the last form by the
    change events that follow, like any other change)."""
    return {**ctx.form.updates_from(ctx.defaults), ctx.train.status: i18n.t("train.reset_done", _lang(ctx, values))}


def save_config(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.train
    lang = _lang(ctx, values)
    try:
        cfg = ctx.form.to_config(values).check(source="form")
    except ConfigError as exc:
        return {h.status: i18n.t("train.invalid", lang, msg=_bullets(exc, lang))}
    path = config_file_for(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(path)
    try:
        commands = commands_text(path, cfg)
    except (ConfigError, LaunchError) as exc:  # a plan that cannot be written: the config is saved, say why
        return {h.commands: "", h.status: i18n.t("train.saved_no_launch", lang, path=path, msg=str(exc))}
    return {h.commands: commands, h.status: i18n.t("train.saved_config", lang, path=path)}
