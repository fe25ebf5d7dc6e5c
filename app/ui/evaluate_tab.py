"""Evaluate tab: is the adapter better than the base model, by how much, and at what cost?

Pick a base and up to 4 adapters (the same picker as Chat) and a dataset: empty = the validation split of the
chosen adapter's run (the trainer's own seeded split), or any data file. Run (`evaluate.evaluate`, with progress;
Cancel sets a threading.Event the core checks between batches and returns the examples finished so far) shows:
the metrics table (loss, perplexity, ROUGE-1/2/L, BLEU, exact match per model and the difference from the base),
a bar chart of them, and the per-example table (prompt, reference, each model's answer and score), sortable, with
CSV downloads. The efficiency report of a run (time, tokens/s, peak memory vs estimate, trainable share, sizes)
comes from `app.efficiency.efficiency_report`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import eval_report, evaluate, runs
from app.adapters import run_dir_of
from app.commands import EvaluateConfig
from app.efficiency import efficiency_report
from app.ui import i18n, pickers

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "eval.section.data": ("Data", "数据"),
    "eval.data": ("Data file", "数据文件"),
    "eval.data.info": (
        "Empty = the validation split of the chosen adapter's run (what training held out).",
        "留空 = 所选适配器所属训练的验证集（训练时留出的部分）。",
    ),
    "eval.use_data_tab": ("Use the Data tab's file", "使用“数据”页的文件"),
    "eval.max_examples": ("Max examples", "最多样本数"),
    "eval.max_examples.info": (
        "Evaluate the first N examples (0 = all). Each needs a generated answer per model.",
        "只评估前 N 个样本（0 = 全部）。每个模型要为每个样本生成一次回答。",
    ),
    "eval.max_new_tokens": ("Max new tokens", "最大生成 token 数"),
    "eval.max_new_tokens.info": (
        "Longest generated answer compared with the reference.",
        "与参考答案比较的生成回答的最大长度。",
    ),
    "eval.run": ("Run evaluation", "开始评估"),
    "eval.cancel": ("Cancel", "取消"),
    "eval.idle": ("Pick the models and data, then press **Run evaluation**.", "选择模型和数据后点击“**开始评估**”。"),
    "eval.busy": ("An evaluation is already running; cancel it or wait.", "已有评估在进行；请取消或等待。"),
    "eval.cancelling": ("Cancelling after the current batch...", "当前批次完成后取消……"),
    "eval.not_running": ("No evaluation is running.", "没有正在进行的评估。"),
    "eval.error": ("Cannot evaluate: {msg}", "无法评估：{msg}"),
    "eval.done": (
        "Evaluated **{n}** examples in {secs:.0f} s on {device} ({split}).",
        "已在 {device} 上评估 **{n}** 个样本，用时 {secs:.0f} 秒（{split}）。",
    ),
    "eval.cancelled": (
        "Cancelled: the table holds the {n} examples finished before Cancel.",
        "已取消：表格只包含取消前完成的 {n} 个样本。",
    ),
    "eval.saved": ("Saved in `{path}`.", "已保存到 `{path}`。"),
    "eval.metrics": ("Metrics (Δ = model − base)", "指标（Δ = 模型 − 基础模型）"),
    "eval.metrics.help": (
        "Loss and perplexity: lower is better (↓). ROUGE, BLEU and exact match: 0-100, higher is better (↑).",
        "损失和困惑度越低越好（↓）；ROUGE、BLEU 和精确匹配为 0-100，越高越好（↑）。",
    ),
    "eval.metrics.preference": (
        "Preference run: the held-out pairs, the other metrics on their chosen answers. Reward accuracy: the share "
        "of pairs whose reward prefers the chosen answer ({reward}). Log-prob margin: the mean of log p(chosen) − "
        "log p(rejected), summed over each answer's tokens (nats).",
        "偏好训练：留出的配对，其他指标针对优选回答。奖励准确率：奖励偏向优选回答的配对所占比例（{reward}）。"
        "对数概率差：log p(优选) − log p(劣选) 的平均值，按回答的 token 求和（nats）。",
    ),
    "eval.reward.referenced": (
        "DPO: its log-prob margin above the base's; the base, its own reference, has none",
        "DPO：其对数概率差高于基础模型；基础模型是自身的参考，没有该值",
    ),
    "eval.reward.own": (
        "ORPO, SimPO: the model's own per-token log-prob margin is above 0",
        "ORPO、SimPO：模型自身每 token 的对数概率差大于 0",
    ),
    "eval.split.run": ("validation split of run {run}", "训练 {run} 的验证集"),
    "eval.split.file": ("file {path}", "文件 {path}"),
    "eval.col.metric": ("Metric", "指标"),
    "eval.col.delta": ("Δ {name}", "Δ {name}"),
    "eval.col.index": ("#", "#"),
    "eval.col.prompt": ("Prompt", "提示"),
    "eval.col.reference": ("Reference", "参考答案"),
    "eval.col.answer": ("{name}: answer", "{name}：回答"),
    "eval.col.rougeL": ("ROUGE-L", "ROUGE-L"),
    "eval.metric.loss": ("Loss ↓", "损失 ↓"),
    "eval.metric.perplexity": ("Perplexity ↓", "困惑度 ↓"),
    "eval.metric.rouge1": ("ROUGE-1 ↑", "ROUGE-1 ↑"),
    "eval.metric.rouge2": ("ROUGE-2 ↑", "ROUGE-2 ↑"),
    "eval.metric.rougeL": ("ROUGE-L ↑", "ROUGE-L ↑"),
    "eval.metric.bleu": ("BLEU ↑", "BLEU ↑"),
    "eval.metric.exact_match": ("Exact match ↑", "精确匹配 ↑"),
    "eval.metric.reward_accuracy": ("Reward accuracy (% of pairs) ↑", "奖励准确率（配对的 %）↑"),
    "eval.metric.mean_margin": ("Log-prob margin, chosen − rejected ↑", "对数概率差：优选 − 劣选 ↑"),
    "eval.plot.text": (
        "ROUGE, BLEU, exact match (0-100, higher is better)",
        "ROUGE、BLEU、精确匹配（0-100，越高越好）",
    ),
    "eval.plot.loss": ("Loss (nats/token, lower is better)", "损失（nats/token，越低越好）"),
    "eval.plot.title": ("{n} examples", "{n} 个样本"),
    "eval.plot.cancelled": ("{n} examples (cancelled: partial results)", "{n} 个样本（已取消：部分结果）"),
    "eval.plot.loss_bar": ("loss", "损失"),
    "eval.examples": ("Per example (click a column header to sort)", "逐样本结果（点击列标题排序）"),
    "eval.files": ("CSV downloads", "CSV 下载"),
    "eval.section.efficiency": ("Efficiency of a run", "训练效率"),
    "eval.run_pick": ("Run", "训练记录"),
    "eval.run_pick.info": (
        "A training run: its time, speed, memory and size.",
        "一次训练：其用时、速度、显存和大小。",
    ),
    "eval.show_efficiency": ("Show efficiency", "显示效率"),
    "eval.no_run": ("Pick a run first.", "请先选择一条训练记录。"),
    "eval.eff.training_s": ("Training time", "训练用时"),
    "eval.eff.wall_s": ("Wall time", "总耗时"),
    "eval.eff.steps": ("Optimizer steps", "优化步数"),
    "eval.eff.tokens_per_s": ("Tokens/s (median)", "tokens/秒（中位数）"),
    "eval.eff.label_tokens_per_s": ("Trained tokens/s", "训练 token/秒"),
    "eval.eff.peak_memory_bytes": ("Peak memory (measured)", "峰值内存（实测）"),
    "eval.eff.estimated_memory_bytes": ("Memory estimate", "内存估算"),
    "eval.eff.memory_vs_estimate": ("Measured / estimate", "实测 / 估算"),
    "eval.eff.trainable_params": ("Trainable parameters", "可训练参数"),
    "eval.eff.trainable_share": ("Trainable share", "可训练比例"),
    "eval.eff.artifact_bytes": ("Adapter/model files", "适配器/模型文件"),
    "eval.eff.model_bytes": ("Base model files", "基础模型文件"),
    "eval.eff.size_share": ("Size vs base", "相对基础模型大小"),
}
i18n.add(STRINGS)

ROUND = {"loss": 4, "perplexity": 3, "reward_accuracy": 1, "mean_margin": 3}  # text metrics (0-100): 2
BYTES = ("peak_memory_bytes", "estimated_memory_bytes", "artifact_bytes", "model_bytes")


@dataclass
class EvaluateHandles:
    picker: pickers.ModelPicker
    data_path: gr.Textbox
    use_data_tab: gr.Button
    max_examples: gr.Number
    max_new_tokens: gr.Slider
    run: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    metrics: gr.Dataframe
    plot: gr.Plot
    examples: gr.Dataframe
    files: gr.File
    run_pick: gr.Dropdown
    show_efficiency: gr.Button
    efficiency: gr.Markdown


class _Running:
    """One evaluation at a time in this app (it loads models); Cancel sets the event the core checks."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.lock = threading.Lock()


RUNNING = _Running()


# ---- build ------------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> EvaluateHandles:
    tr = ctx.tr
    picker = pickers.build(tr, ctx.defaults.model.name_or_path, "eval")
    settings = _build_settings(tr)
    with gr.Row():
        run = tr.text(gr.Button, "eval.run", variant="primary", elem_id="eval-run")
        cancel = tr.text(gr.Button, "eval.cancel", variant="stop", elem_id="eval-cancel")
    # not bound to a key: a language switch must not reset a result to the idle text (see _wire)
    status = gr.Markdown(tr("eval.idle"), elem_classes="td-status", elem_id="eval-status")
    results = _build_results(tr)
    efficiency = _build_efficiency(tr)
    h = EvaluateHandles(picker=picker, **settings, run=run, cancel=cancel, status=status, **results, **efficiency)
    _wire(ctx, h)
    return h


def _build_settings(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            data_path = tr.labelled(gr.Textbox, "eval.data", info=True, value="", elem_id="eval-data")
            use = tr.text(gr.Button, "eval.use_data_tab", size="sm", elem_id="eval-use-data")
        max_examples = tr.labelled(
            gr.Number,
            "eval.max_examples",
            info=True,
            value=EvaluateConfig.max_examples,
            minimum=0,
            precision=0,
            scale=1,
            elem_id="eval-max-examples",
        )
        max_new = tr.labelled(
            gr.Slider,
            "eval.max_new_tokens",
            info=True,
            minimum=1,
            maximum=1024,
            step=1,
            value=EvaluateConfig.max_new_tokens,
            scale=1,
            elem_id="eval-max-new-tokens",
        )
    return {"data_path": data_path, "use_data_tab": use, "max_examples": max_examples, "max_new_tokens": max_new}


def _build_results(tr: i18n.Translator) -> dict[str, Any]:
    tr.text(gr.Markdown, "eval.metrics", elem_classes="td-section-title")
    tr.text(gr.Markdown, "eval.metrics.help", elem_classes="td-info")
    # the tables and the chart are hidden until there are results: an empty Dataframe shows a bare "1 | 2 | 3"
    metrics = gr.Dataframe(interactive=False, wrap=True, visible=False, elem_id="eval-metrics")
    plot = gr.Plot(show_label=False, visible=False, elem_id="eval-plot")
    examples = tr.labelled(
        gr.Dataframe,
        "eval.examples",
        interactive=False,
        wrap=True,
        max_height=480,
        visible=False,
        elem_id="eval-examples",
    )
    files = tr.labelled(gr.File, "eval.files", file_count="multiple", interactive=False, elem_id="eval-files")
    return {"metrics": metrics, "plot": plot, "examples": examples, "files": files}


def _build_efficiency(tr: i18n.Translator) -> dict[str, Any]:
    with tr.labelled(gr.Accordion, "eval.section.efficiency", open=False):
        with gr.Row(equal_height=True):
            run_pick = tr.labelled(
                gr.Dropdown,
                "eval.run_pick",
                info=True,
                choices=run_choices(),
                value=None,
                scale=3,
                elem_id="eval-run-pick",
            )
            show = tr.text(gr.Button, "eval.show_efficiency", scale=1, elem_id="eval-show-efficiency")
        efficiency = gr.Markdown("", elem_classes="td-info", elem_id="eval-efficiency")
    return {"run_pick": run_pick, "show_efficiency": show, "efficiency": efficiency}


def _wire(ctx: AppContext, h: EvaluateHandles) -> None:
    p = h.picker
    lang = {ctx.lang_selector} if ctx.lang_selector is not None else set()
    i18n.keep_result_on_switch(ctx.lang_selector, h.status, "eval.idle")

    def run_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return run_evaluation(ctx, values, progress)

    inputs = {p.base, p.adapters, p.device, h.data_path, h.max_examples, h.max_new_tokens, *lang}
    h.run.click(
        run_event,
        inputs=inputs,
        outputs=[h.status, h.metrics, h.plot, h.examples, h.files, h.run_pick],
        api_name="evaluate_run",
        concurrency_id="eval",
        concurrency_limit=1,
    )
    # Cancel must not wait in the queue behind the run it cancels.
    h.cancel.click(
        lambda values=None: cancel(ctx, values),
        inputs=lang or None,
        outputs=h.status,
        concurrency_limit=None,
        api_name="evaluate_cancel",
    )
    h.show_efficiency.click(
        lambda values: efficiency(ctx, values),
        inputs={h.run_pick, *lang},
        outputs=h.efficiency,
        api_name="evaluate_efficiency",
    )
    pickers.follow_runs(p, "eval", ctx.lang_selector, also={h.run_pick: run_choices})
    p.adapters.change(
        lambda values: follow_run(ctx, values),
        inputs={p.adapters, *lang},
        outputs=h.run_pick,
        show_progress="hidden",
        api_name="evaluate_follow_run",
        api_visibility="private",
    )
    if "data" in ctx.handles:  # a tab-only build (tests) has no Data tab: then the default path
        h.use_data_tab.click(lambda path: path, inputs=ctx.data.fields["data.path"], outputs=h.data_path)
    else:
        h.use_data_tab.click(lambda: ctx.defaults.data.path, outputs=h.data_path)


# ---- handlers -------------------------------------------------------------------------------------------------------
def run_choices(lang: str = "en") -> list[tuple[str, str]]:
    """(label, run folder) of every run, newest first, with its status in `lang`."""
    return [(f"{r.id} ({pickers.status_text(r.status, lang)})", str(r.path)) for r in runs.list_runs()]


def run_evaluation(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Run: the base and each adapter on the same examples. Never raises: problems show in the status line."""
    h = ctx.evaluate
    lang = ctx.lang(values)
    device = values.get(h.picker.device) or "auto"
    blocked, note = pickers.busy_note(device, lang)
    if blocked:
        return {h.status: "⏳ " + note}
    if not RUNNING.lock.acquire(blocking=False):
        return {h.status: "⏳ " + i18n.t("eval.busy", lang)}
    try:
        RUNNING.cancel.clear()
        report = _evaluate(h, values, device, progress)
    except (RuntimeError, OSError, ValueError) as exc:  # EvalError, ModelError, torch OOM
        return {h.status: "❌ " + i18n.t("eval.error", lang, msg=_one_line(exc))}
    finally:
        RUNNING.lock.release()
    return _report_views(h, report, lang, note)


def _evaluate(h: EvaluateHandles, values: dict[Any, Any], device: str, progress: Any) -> eval_report.EvalReport:
    base = str(values.get(h.picker.base) or "").strip() or None
    data_path = str(values.get(h.data_path) or "").strip() or None
    max_examples = values.get(h.max_examples)
    report = (lambda frac, msg: progress(frac, desc=msg)) if progress is not None else None
    return evaluate.evaluate(
        base,
        pickers.selected(values.get(h.picker.adapters)),
        data=data_path,
        max_examples=int(max_examples) if max_examples else None,
        max_new_tokens=int(values.get(h.max_new_tokens) or EvaluateConfig.max_new_tokens),
        device=device,
        progress=report,
        cancel=RUNNING.cancel,
    )


def cancel(ctx: AppContext, values: dict[Any, Any] | None = None) -> dict[Any, Any]:
    h = ctx.evaluate
    lang = ctx.lang(values) if values is not None else ctx.tr.lang
    if not RUNNING.lock.locked():
        return {h.status: i18n.t("eval.not_running", lang)}
    RUNNING.cancel.set()
    return {h.status: "⏳ " + i18n.t("eval.cancelling", lang)}


def _report_views(h: EvaluateHandles, report: eval_report.EvalReport, lang: str, note: str = "") -> dict[Any, Any]:
    info = report.info
    lines = [
        i18n.t(
            "eval.done",
            lang,
            n=report.n_examples,
            secs=info.get("elapsed_s") or 0,
            device=info.get("device", "?"),
            split=_split_text(info, lang),
        )
    ]
    if report.cancelled:
        lines.append("⚠️ " + i18n.t("eval.cancelled", lang, n=report.n_examples))
    if "reward_accuracy" in report.table.columns:  # a preference run: say what its two extra rows mean
        reward = i18n.t("eval.reward.referenced" if info.get("reward_reference") else "eval.reward.own", lang)
        lines.append(i18n.t("eval.metrics.preference", lang, reward=reward))
    lines += [f"⚠️ {w}" for w in info.get("warnings") or []] + ([note] if note else [])
    if report.saved_to:
        lines.append(i18n.t("eval.saved", lang, path=report.saved_to))
    names = model_labels(report, lang)
    examples = examples_table(report, names, lang)
    return {
        h.status: ("⚠️ " if report.cancelled else "✅ ") + "\n\n".join(lines),
        h.metrics: gr.update(value=metrics_table(report, lang), visible=True),
        h.plot: gr.update(value=figure(report, names, lang), visible=True),
        h.examples: gr.update(value=examples, column_widths=_example_widths(examples), visible=True),
        h.files: _csv_files(report),
        h.run_pick: gr.update(choices=run_choices(lang)),
    }


def _split_text(info: dict[str, Any], lang: str) -> str:
    """What the examples were: a run's validation split or a file, in `lang` (eval_data's split is English)."""
    split = str(info.get("split") or "")
    run = split.removeprefix("validation split of run ")
    if run != split:
        return i18n.t("eval.split.run", lang, run=run)
    if split == "file" and info.get("data"):
        return i18n.t("eval.split.file", lang, path=Path(str(info["data"])).name)
    return split


def model_labels(report: eval_report.EvalReport, lang: str = "en") -> dict[str, str]:
    """{the report's model column: the name a person reads}: the base by its model's name, an adapter by its
    run's name (as the Chat tab labels its columns)."""
    rows = report.table.to_dict("records")
    names, folders = [], []
    for i, row in enumerate(rows):
        if i == 0:  # the base comes first (eval_report.build_table)
            base = report.info.get("base") or row.get("path")
            names.append(i18n.t("pick.base_column", lang, name=pickers.model_name(base)))
            folders.append("")
        else:
            path = str(row.get("path") or "")
            names.append(pickers.folder_name(path) if path else str(row["model"]))
            folders.append(path)
    return dict(zip((str(r["model"]) for r in rows), pickers.unique_names(names, folders), strict=True))


def metrics_table(report: eval_report.EvalReport, lang: str = "en") -> pd.DataFrame:
    """One row per metric (readable, translated, with ↓/↑ for which way is better), one column per model, and
    each adapter's difference from the base beside it: at most 10 columns for 5 models, so the table fits its
    pane where a column per metric and per delta (16) did not. Loss 4 decimals, perplexity 3, text metrics 2."""
    names = model_labels(report, lang)
    rows = report.table.to_dict("records")
    columns: dict[str, list[str]] = {i18n.t("eval.col.metric", lang): []}
    for i, row in enumerate(rows):
        columns[names[str(row["model"])]] = []
        if i > 0:
            columns[i18n.t("eval.col.delta", lang, name=names[str(row["model"])])] = []
    for metric in eval_report.metrics_of(report.table):
        cells = [i18n.t(f"eval.metric.{metric}", lang)]
        for i, row in enumerate(rows):
            cells.append(_number(row.get(metric), metric))
            if i > 0:
                cells.append(_number(row.get(f"delta_{metric}"), metric, signed=True))
        for column, cell in zip(columns.values(), cells, strict=True):
            column.append(cell)
    return pd.DataFrame(columns)


def _number(value: Any, metric: str, signed: bool = False) -> str:
    """A metric's value as text: its own decimals, a sign on differences, "–" where there is none."""
    number = pd.to_numeric(value, errors="coerce")
    if pd.isna(number) or not math.isfinite(number):
        return "–"
    digits = ROUND.get(metric, 2)
    if signed and round(number, digits) == 0:
        number, signed = 0.0, False  # no difference reads "0.00", not "+0.00" or "-0.00"
    text = f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"
    return text.replace("-", "−")  # the minus sign, not a hyphen: reads as a number in every font


def examples_table(report: eval_report.EvalReport, names: dict[str, str], lang: str = "en") -> pd.DataFrame:
    """The per-example frame as shown: #, Prompt, Reference, then per model "<name>: answer" and its "ROUGE-L"
    beside it (eval_report's "<model> answer", "<model> rougeL"; a score header that names the model too broke
    mid-word in its narrow column). Each answer's loss stays in examples.csv: two columns per model already make
    13 for 5 models, the most a pane can show with readable text."""
    shown = {
        "index": i18n.t("eval.col.index", lang),
        "prompt": i18n.t("eval.col.prompt", lang),
        "reference": i18n.t("eval.col.reference", lang),
    }
    for i, (model, name) in enumerate(names.items()):
        shown[f"{model} answer"] = i18n.t("eval.col.answer", lang, name=name)
        # every model's score reads "ROUGE-L"; i zero-width spaces keep the column names unique for pandas
        shown[f"{model} rougeL"] = i18n.t("eval.col.rougeL", lang) + "\u200b" * i
    frame = report.examples
    return frame[[c for c in shown if c in frame.columns]].rename(columns=shown)


def _example_widths(table: pd.DataFrame) -> list[str]:
    """Widths as shares of the pane, so the table fits it: 4% for #, 7% per score, the rest shared by the texts
    (prompt, reference, answers), which wrap."""
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    texts = max(1, numeric.count(False))
    text_share = (100 - 4 - 7 * (numeric.count(True) - 1)) / texts
    return ["4%" if i == 0 else "7%" if num else f"{text_share:.1f}%" for i, num in enumerate(numeric)]


def figure(report: eval_report.EvalReport, names: dict[str, str], lang: str = "en") -> Any:
    """The report's chart with the models' names and every text on it in `lang`."""
    fig = report.figure()
    axis = {label: i18n.t(f"eval.metric.{m}", lang).rstrip(" ↑") for m, label in eval_report.METRIC_LABELS.items()}
    axis["loss"] = i18n.t("eval.plot.loss_bar", lang)
    for trace in fig.data:
        trace.name = names.get(trace.name, trace.name)
        trace.legendgroup = trace.name
        trace.x = [axis.get(x, x) for x in trace.x]
    titles = [i18n.t("eval.plot.text", lang), i18n.t("eval.plot.loss", lang)]
    for annotation, text in zip(fig.layout.annotations, titles, strict=False):
        annotation.text = text
    key = "eval.plot.cancelled" if report.cancelled else "eval.plot.title"
    fig.update_layout(title=i18n.t(key, lang, n=report.n_examples))
    return fig


def _csv_files(report: eval_report.EvalReport) -> list[str]:
    """summary.csv and examples.csv (UTF-8 with BOM: spreadsheet apps then read Chinese correctly)."""
    folder = pickers.fresh_dir()
    out = []
    for name, frame in (("summary.csv", report.table), ("examples.csv", report.examples)):
        tmp = folder / (name + ".tmp")
        frame.to_csv(tmp, index=False, encoding="utf-8-sig")
        tmp.replace(folder / name)
        out.append(str(folder / name))
    return out


# ---- efficiency ---------------------------------------------------------------------------------------------------
def efficiency(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.evaluate
    lang = ctx.lang(values)
    run = values.get(h.run_pick)
    if not run:
        return {h.efficiency: i18n.t("eval.no_run", lang)}
    try:
        facts = efficiency_report(run)
    except (RuntimeError, OSError, ValueError) as exc:
        return {h.efficiency: "❌ " + i18n.t("eval.error", lang, msg=_one_line(exc))}
    return {h.efficiency: efficiency_markdown(facts, lang)}


def efficiency_markdown(facts: dict[str, Any], lang: str = "en") -> str:
    """Two columns: what the run cost; facts the run did not record are left out."""
    status = pickers.status_text(str(facts.get("status")), lang)
    head = f"**{facts.get('run')}** · {status} · {facts.get('method') or '?'} · {facts.get('device') or '?'}"
    rows = ["| | |", "|---|---|"]
    for key in (
        "training_s",
        "wall_s",
        "steps",
        "tokens_per_s",
        "label_tokens_per_s",
        "peak_memory_bytes",
        "estimated_memory_bytes",
        "memory_vs_estimate",
        "trainable_params",
        "trainable_share",
        "artifact_bytes",
        "model_bytes",
        "size_share",
    ):
        value = facts.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            rows.append(f"| {i18n.t(f'eval.eff.{key}', lang)} | {_fmt(key, value)} |")
    return head + "\n\n" + "\n".join(rows)


def _fmt(key: str, value: Any) -> str:
    if key in BYTES:
        return f"{value / 2**20:,.1f} MiB" if value < 2**30 else f"{value / 2**30:,.2f} GiB"
    if key.endswith("_s") and key != "tokens_per_s" and not key.endswith("tokens_per_s"):
        return f"{value:,.1f} s" if value < 120 else f"{value / 60:,.1f} min"
    if key in ("trainable_share", "size_share"):
        return f"{value:.3%}"
    if key == "memory_vs_estimate":
        return f"{value:.2f}×"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def follow_run(ctx: AppContext, values: dict[Any, Any]) -> Any:
    """The efficiency picker follows the first chosen adapter's run."""
    for folder in pickers.selected(values.get(ctx.evaluate.picker.adapters)):
        run = run_dir_of(folder)
        if run is not None:
            return gr.update(choices=run_choices(ctx.lang(values)), value=str(run))
    return gr.update()
