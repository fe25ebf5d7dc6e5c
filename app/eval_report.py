"""The evaluation report: its table and per-example frame, the figure, and its saved folders (save, list, load).

report.table     DataFrame, one row per model: model, path, loss, perplexity, rouge1, rouge2, rougeL, bleu,
                 exact_match, n_examples, then delta_<metric> = row - base row for each metric
report.examples  DataFrame, one row per example: index, prompt, reference, then per model
                 "<model> answer", "<model> rougeL", "<model> loss"
                 a preference run's table adds reward_accuracy and mean_margin (preference_scores) and its
                 examples "<model> margin"
save_report(report, run_dir) / list_evaluations(run_dir) / load_evaluation(folder) / format_table(report)
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from app import metrics
from app.eval_data import EvalError, Item
from app.metrics import TEXT_METRICS, score

METRICS = ("loss", "perplexity", *TEXT_METRICS)
"""Table columns, in order; lower is better for loss/perplexity, higher for the text metrics (0-100)."""
PREFERENCE_METRICS = ("reward_accuracy", "mean_margin")
"""A preference run's columns (higher is better): the share of held-out pairs (0-100) whose reward margin is > 0,
and the mean log-prob margin, chosen minus rejected (nats, summed over the answer tokens)."""
TABLE_COLUMNS = ("model", "path", *METRICS, "n_examples")
METRIC_LABELS = {
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bleu": "BLEU",
    "exact_match": "Exact match",
}
EVAL_DIR = "eval"
METRICS_FILE, SUMMARY_FILE, EXAMPLES_FILE = "metrics.json", "summary.csv", "examples.csv"
COLORS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")


@dataclass
class PairScore:
    """One model's log-probabilities of a pair's two answers: sums over each answer's tokens, in nats."""

    chosen: float
    rejected: float
    chosen_tokens: int
    rejected_tokens: int

    @property
    def margin(self) -> float:
        return self.chosen - self.rejected

    @property
    def mean_margin(self) -> float:
        """Per-token log-prob margin: the reward of the reference-free objectives (ORPO, SimPO average log-probs)."""
        return self.chosen / max(self.chosen_tokens, 1) - self.rejected / max(self.rejected_tokens, 1)


@dataclass
class Result:
    """One model's outcome on one example."""

    answer: str
    nll: float
    """Summed negative log-likelihood of the answer tokens, nats."""
    tokens: int
    pair: PairScore | None = None
    """A preference run's example: the model's log-probs of the chosen (the answer above) and rejected answers."""


@dataclass
class EvalReport:
    table: pd.DataFrame
    """One row per model (base first): model, path, loss, perplexity, rouge1..exact_match, n_examples, delta_*."""
    examples: pd.DataFrame
    """One row per example: index, prompt, reference, "<model> answer", "<model> rougeL", "<model> loss"."""
    cancelled: bool
    n_examples: int
    saved_to: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """models ([{model, kind, path}]), base, data, split, device, max_new_tokens, elapsed_s, created (epoch s),
    bleu_tokenize, skipped (records that could not be evaluated, with why)."""

    def figure(self):
        """plotly Figure: text metrics (0-100) as grouped bars, one colour per model, and the loss beside them."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.78, 0.22],
            horizontal_spacing=0.08,
            subplot_titles=(
                "ROUGE, BLEU, exact match (0-100, higher is better)",
                "Loss (nats/token, lower is better)",
            ),
        )
        for i, row in enumerate(self.table.to_dict("records")):
            color = COLORS[i % len(COLORS)]
            values = [_finite(row[m]) for m in TEXT_METRICS]
            fig.add_trace(
                go.Bar(
                    name=row["model"],
                    x=[METRIC_LABELS[m] for m in TEXT_METRICS],
                    y=values,
                    marker_color=color,
                    legendgroup=row["model"],
                    texttemplate="%{y:.1f}",
                ),
                1,
                1,
            )
            fig.add_trace(
                go.Bar(
                    name=row["model"],
                    x=["loss"],
                    y=[_finite(row["loss"])],
                    marker_color=color,
                    legendgroup=row["model"],
                    showlegend=False,
                    texttemplate="%{y:.3f}",
                ),
                1,
                2,
            )
        title = f"{self.n_examples} examples" + (" (cancelled: partial results)" if self.cancelled else "")
        fig.update_layout(
            barmode="group",
            title=title,
            height=420,
            margin={"t": 70, "l": 40, "r": 20, "b": 40},
            legend={"orientation": "h", "y": -0.12},
        )
        fig.update_yaxes(range=[0, 100], row=1, col=1)
        return fig

    def to_json(self) -> dict:
        """What metrics.json holds: info, cancelled, n_examples and the table rows (NaN written as null)."""
        return _clean(
            {
                **self.info,
                "cancelled": self.cancelled,
                "n_examples": self.n_examples,
                "table": self.table.to_dict("records"),
            }
        )

    def examples_csv(self) -> str:
        """The per-example frame as CSV text (UTF-8), for a download button."""
        return self.examples.to_csv(index=False)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python numbers, Paths -> strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy/pandas scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- tables ---------------------------------------------------------------------------------------------------
def preference_scores(results: dict[str, list[Result]], referenced: bool) -> dict[str, dict[str, float]]:
    """{model: {reward_accuracy, mean_margin}} for a preference run, base first in `results`.

    reward_accuracy: the share (0-100) of pairs whose reward margin is > 0; with a reference (DPO) the reward is
    the log-prob relative to the base's, so the margin is (chosen - rejected) - the base's (chosen - rejected) and
    the base, its own reference, has none (NaN); without (ORPO, SimPO) it is the model's own per-token margin.
    mean_margin: the mean summed log-prob margin, chosen - rejected, comparable across models (nats)."""
    base = next(iter(results.values()), [])
    out = {}
    for k, (label, res) in enumerate(results.items()):
        scores = [r.pair for r in res if r.pair is not None]
        if referenced:
            rewards = [s.margin - b.pair.margin for s, b in zip(scores, base, strict=False) if b.pair is not None]
        else:
            rewards = [s.mean_margin for s in scores]
        undefined = (referenced and k == 0) or not rewards
        out[label] = {
            "reward_accuracy": math.nan if undefined else 100 * sum(m > 0 for m in rewards) / len(rewards),
            "mean_margin": sum(s.margin for s in scores) / len(scores) if scores else math.nan,
        }
    return out


def build_table(
    models: list[tuple[str, str]],
    results: dict[str, list[Result]],
    references: list[str],
    referenced: bool | None = None,
) -> pd.DataFrame:
    """One row per model (label, path), base first: loss, perplexity, text metrics, n_examples, delta_*; for a
    preference run (`referenced` not None: whether its rewards are relative to the base) reward_accuracy and
    mean_margin too."""
    prefs = preference_scores(results, referenced) if referenced is not None else {}
    columns = list(TABLE_COLUMNS) + (list(PREFERENCE_METRICS) if prefs else [])
    rows = []
    for label, path in models:
        res = results[label]
        loss, ppl = metrics.perplexity(sum(r.nll for r in res), sum(r.tokens for r in res))
        scores = score([r.answer for r in res], references[: len(res)])
        rows.append(
            {
                "model": label,
                "path": path,
                "loss": loss,
                "perplexity": ppl,
                **{m: scores[m] for m in TEXT_METRICS},
                "n_examples": len(res),
                **prefs.get(label, {}),
            }
        )
    return with_deltas(pd.DataFrame(rows, columns=columns))


def metrics_of(table: pd.DataFrame) -> list[str]:
    """The metric columns a table has: METRICS, and PREFERENCE_METRICS for a preference run."""
    return list(METRICS) + [m for m in PREFERENCE_METRICS if m in table.columns]


def with_deltas(table: pd.DataFrame) -> pd.DataFrame:
    """delta_<metric> = row - first (base) row; negative is better for loss and perplexity."""
    table = table.copy()
    for m in metrics_of(table):
        values = pd.to_numeric(table[m], errors="coerce")
        table[m] = values
        table[f"delta_{m}"] = values - values.iloc[0] if len(table) else values
    return table


def build_examples(models: list[tuple[str, str]], results: dict[str, list[Result]], items: list[Item]) -> pd.DataFrame:
    """One row per example: index, prompt, reference, then "<model> answer", "<model> rougeL", "<model> loss"."""
    n = len(results[models[0][0]]) if models else 0
    frame = pd.DataFrame(
        {
            "index": [it.example.index for it in items[:n]],
            "prompt": [it.prompt for it in items[:n]],
            "reference": [it.reference for it in items[:n]],
        }
    )
    for label, _ in models:
        res = results[label]
        frame[f"{label} answer"] = [r.answer for r in res]
        frame[f"{label} rougeL"] = [
            metrics.rouge_scores(r.answer, it.reference)["rougeL"] for r, it in zip(res, items, strict=False)
        ]
        frame[f"{label} loss"] = [r.nll / r.tokens if r.tokens else None for r in res]
        if any(r.pair is not None for r in res):
            frame[f"{label} margin"] = [r.pair.margin if r.pair is not None else None for r in res]
    return frame


# ---- saving and listing -------------------------------------------------------------------------------------
def save_report(report: EvalReport, run_dir: str | Path) -> Path:
    """Write `<run>/eval/<YYYYmmdd-HHMMSS>/` (metrics.json, summary.csv, examples.csv): the files go into a
    hidden temp folder that is renamed into place when complete, so a reader never sees half an evaluation."""
    root = Path(run_dir) / EVAL_DIR
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(report.info.get("created", time.time())))
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        (tmp / METRICS_FILE).write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2), "utf-8")
        report.table.to_csv(tmp / SUMMARY_FILE, index=False, encoding="utf-8-sig")  # BOM: Excel reads UTF-8
        report.examples.to_csv(tmp / EXAMPLES_FILE, index=False, encoding="utf-8-sig")
        for n in range(1, 1000):
            target = root / (stamp if n == 1 else f"{stamp}-{n}")
            if not target.exists():
                tmp.rename(target)
                return target
        raise EvalError(f"{root}: evaluation folders {stamp}-* are all taken")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_evaluations(run_dir: str | Path) -> list[dict]:
    """Saved evaluations of a run, newest first: id, path, created, models, n_examples, cancelled, data, split,
    table (list of row dicts). Folders whose metrics.json cannot be read are left out."""
    root = Path(run_dir) / EVAL_DIR
    found = []
    for folder in sorted(root.glob("[!.]*"), key=lambda p: p.name, reverse=True) if root.is_dir() else []:
        meta = _read_metrics(folder)
        if meta is not None:
            found.append(
                {
                    "id": folder.name,
                    "path": folder,
                    "created": meta.get("created"),
                    "models": [m.get("model") for m in meta.get("models", [])],
                    "n_examples": meta.get("n_examples"),
                    "cancelled": meta.get("cancelled"),
                    "data": meta.get("data"),
                    "split": meta.get("split"),
                    "table": meta.get("table", []),
                }
            )
    return found


def _read_metrics(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def load_evaluation(folder: str | Path) -> EvalReport:
    """A saved evaluation (metrics.json + examples.csv) as an EvalReport."""
    folder = Path(folder)
    meta = _read_metrics(folder)
    if meta is None:
        raise EvalError(f"{folder}: no readable {METRICS_FILE}; it is not a saved evaluation")
    rows = meta.pop("table", [])
    found = [m for m in PREFERENCE_METRICS if any(m in row for row in rows)]
    table = with_deltas(pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *found]))
    try:
        examples = pd.read_csv(folder / EXAMPLES_FILE, encoding="utf-8-sig", keep_default_na=False)
    except (OSError, ValueError):
        examples = pd.DataFrame()
    cancelled, n = bool(meta.pop("cancelled", False)), int(meta.pop("n_examples", 0) or 0)
    return EvalReport(table, examples, cancelled, n, folder, meta)


def format_table(report: EvalReport) -> str:
    """The table as text: metrics, then deltas vs base (signed), then where it was saved."""
    table = report.table.drop(columns=["path"]).set_index("model")
    head = f"{report.n_examples} examples from {report.info.get('data')} ({report.info.get('split')})" + (
        ", CANCELLED: partial results" if report.cancelled else ""
    )
    shown = metrics_of(table)
    body = table[shown + ["n_examples"]].to_string(float_format=lambda v: f"{v:.3f}")
    deltas = table[[f"delta_{m}" for m in shown]].rename(columns=lambda c: c.removeprefix("delta_"))
    delta_text = deltas.to_string(float_format=lambda v: f"{v:+.3f}")
    saved = f"\nsaved to {report.saved_to}" if report.saved_to else ""
    return f"{head}\n{body}\n\nchange vs base:\n{delta_text}{saved}"
