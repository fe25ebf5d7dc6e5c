"""Plotly figure builders for the UI: the memory breakdown bar and the training curves.

Pure plotly: no gradio, no torch, so they can be tested and reused (benchmarks, reports) without the app.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go

from app.estimate import verdict

GIB = 1024**3
# One colour per breakdown part, stable across redraws so the eye can follow a part when a control moves.
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D", "#BAB0AC")
FIT_COLORS = {"fits": "#2E7D32", "tight": "#E6A700", "no": "#C62828", "unknown": "#607D8B"}
# A light look written out instead of template="plotly_white" (validating a named template costs ~90 ms).
_AXIS = {"gridcolor": "#E5E7EB", "zerolinecolor": "#D1D5DB", "linecolor": "#D1D5DB"}
_PLAIN = {"paper_bgcolor": "white", "plot_bgcolor": "white", "font": {"size": 12}}


# One colour per memory part (app.memory.BREAKDOWN_KEYS), whatever parts a method has: weights stay blue from
# full fine-tuning to QLoRA, and a part that appears (the LoRA adapter) does not shift the colours of the others.
PART_COLORS = {
    "weights": "#4C78A8",
    "adapter": "#F58518",
    "gradients": "#54A24B",
    "optimizer": "#E45756",
    "activations": "#72B7B2",
    "logits": "#B279A2",
    "workspace": "#EECA3B",
    "allocator": "#9D755D",
    "runtime": "#BAB0AC",
}


def memory_bar(
    breakdown: dict[str, int],
    capacity_bytes: int | None = None,
    device_label: str = "",
    title: str = "",
    names: dict[str, str] | None = None,
) -> go.Figure:
    """One horizontal stacked bar of the estimate's parts (GiB), with the device capacity as a dashed line."""
    return go.Figure(memory_bar_spec(breakdown, capacity_bytes, device_label, title, names))


def memory_bar_spec(
    breakdown: dict[str, int],
    capacity_bytes: int | None = None,
    device_label: str = "",
    title: str = "",
    names: dict[str, str] | None = None,
    total_bytes: int | None = None,
) -> dict:
    """memory_bar as the plain plotly.js figure dict ({"data": [...], "layout": {...}}), for the estimate panel.

    `breakdown` is keyed by part (memory.BREAKDOWN_KEYS: each keeps its PART_COLORS colour); `names` gives the
    legend's words for them (the page's language), the key itself otherwise. `total_bytes` is the estimate's total
    when the bar leaves a part out (the process baseline on a CPU): the capacity line's colour is its verdict.

    The panel redraws on every slider move: go.Figure validates every property (~20 ms for this bar on a busy
    2-core machine) and to_json adds ~8 ms, while json.dumps of this dict takes ~0.1 ms. No named template
    either ("plotly_white" plus add_vline cost ~140 ms): the light look is written out in _PLAIN and _AXIS."""
    names = names or {}
    bars = []
    for i, (part, size) in enumerate(breakdown.items()):
        name = names.get(part, part)
        bars.append(
            {
                "type": "bar",
                "y": [""],
                "x": [size / GIB],
                "name": name,
                "orientation": "h",
                "marker": {"color": PART_COLORS.get(part, PALETTE[i % len(PALETTE)])},
                "hovertemplate": f"{html.escape(name)}: %{{x:.2f}} GiB<extra></extra>",
            }
        )
    total = sum(breakdown.values()) if total_bytes is None else total_bytes
    upper = max(total, capacity_bytes or 0) / GIB * 1.08 or 1.0
    shapes, notes = [], []
    if capacity_bytes:
        cap, colour = capacity_bytes / GIB, FIT_COLORS[verdict(total, capacity_bytes)]
        shapes.append(
            {
                "type": "line",
                "x0": cap,
                "x1": cap,
                "y0": 0,
                "y1": 1,
                "yref": "paper",
                "line": {"color": colour, "width": 3, "dash": "dash"},
            }
        )
        notes.append(
            {
                "x": cap,
                "y": 1,
                "yref": "paper",
                "yanchor": "bottom",
                "xanchor": "right" if cap > upper / 2 else "left",  # keep the label inside the plot
                "showarrow": False,
                "text": f"{device_label} {cap:.1f} GiB".strip(),
            }
        )
    layout = {
        **_PLAIN,
        "barmode": "stack",
        # ~100 px of bar above the legend; its entries keep their natural width and wrap into rows (a fixed
        # half-width column clipped "LoRA adapter" to "LoRA adapte" in a narrow panel)
        "height": 290,
        "margin": {"l": 10, "r": 10, "t": 30, "b": 150},
        "legend": {"orientation": "h", "y": -0.2, "yanchor": "top", "x": 0, "traceorder": "normal"},
        "shapes": shapes,
        "annotations": notes,
        "xaxis": {**_AXIS, "ticksuffix": " GiB", "range": [0, upper]},
        "yaxis": _AXIS,
    }
    if title:
        layout["title"] = {"text": title}
    return {"data": bars, "layout": layout}


def ema(values: Sequence[float], smoothing: float = 0.9) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing): the first points are not pulled to 0.

    >>> [round(v, 3) for v in ema([1.0, 1.0, 4.0], 0.5)]
    [1.0, 1.0, 2.714]
    """
    out, acc = [], 0.0
    for i, v in enumerate(values, start=1):
        acc = smoothing * acc + (1 - smoothing) * v
        out.append(acc / (1 - smoothing**i))
    return out


TRAINING_LABELS: dict[str, str] = {
    "loss": "train loss",
    "smooth": "train loss (EMA)",
    "eval": "eval loss",
    "lr": "learning rate",
    "step": "step",
    "loss_axis": "loss",
    "lr_axis": "lr",
    "rougeL": "eval ROUGE-L",
    "exact_match": "eval exact match",
    "score_axis": "score %",
}
"""Every word training_figure shows, in English; the Train tab passes each in the page's language (train.plot.*)."""


def training_figure(
    steps: Sequence[int],
    losses: Sequence[float],
    eval_steps: Sequence[int] = (),
    eval_losses: Sequence[float] = (),
    lrs: Sequence[float] = (),
    labels: dict[str, str] | None = None,
    scores: dict[str, tuple[Sequence[int], Sequence[float]]] | None = None,
) -> go.Figure:
    """Loss (raw, smoothed, eval) on top, learning rate in a small panel below, sharing the step axis; `scores`
    (name -> (eval steps, percentages), e.g. rougeL, exact_match) as dotted lines on a 0-100 axis at the right."""
    lb = {**TRAINING_LABELS, **(labels or {})}
    traces = [
        go.Scatter(
            x=list(steps),
            y=list(losses),
            name=lb["loss"],
            mode="lines",
            opacity=0.35,
            line={"color": PALETTE[0], "width": 1},
        )
    ]
    if len(losses) > 1:
        traces.append(
            go.Scatter(
                x=list(steps), y=ema(losses), name=lb["smooth"], mode="lines", line={"color": PALETTE[0], "width": 2.5}
            )
        )
    if eval_steps:
        traces.append(
            go.Scatter(
                x=list(eval_steps),
                y=list(eval_losses),
                name=lb["eval"],
                mode="lines+markers",
                line={"color": PALETTE[1], "width": 2},
                marker={"size": 7},
            )
        )
    if lrs:
        traces.append(
            go.Scatter(
                x=list(steps),
                y=list(lrs),
                name=lb["lr"],
                mode="lines",
                showlegend=False,
                line={"color": PALETTE[2], "width": 1.5},
                xaxis="x",
                yaxis="y2",
            )
        )
    shown = {name: points for name, points in (scores or {}).items() if points[0]}
    for i, (name, (at, values)) in enumerate(shown.items()):
        traces.append(
            go.Scatter(
                x=list(at),
                y=list(values),
                name=lb.get(name, name),
                mode="lines+markers",
                line={"color": PALETTE[3 + i % (len(PALETTE) - 3)], "width": 1.5, "dash": "dot"},
                marker={"size": 6},
                yaxis="y3",
            )
        )
    last = max([*steps, *eval_steps], default=1)
    # Two stacked y axes on one shared x axis: loss on the top 75%, learning rate on the bottom 20%.
    layout = {
        **_PLAIN,
        "height": 420,
        "hovermode": "x unified",
        "margin": {"l": 10, "r": 10, "t": 20, "b": 30},
        "legend": {"orientation": "h", "y": 1.06, "x": 0},
        # whole steps only: at most ~10 ticks, never 1.5
        "xaxis": {**_AXIS, "title": {"text": lb["step"]}, "anchor": "y2", "dtick": max(1, math.ceil(last / 10))},
        "yaxis": {**_AXIS, "title": {"text": lb["loss_axis"]}, "domain": [0.3, 1.0]},
        "yaxis2": {**_AXIS, "title": {"text": lb["lr_axis"]}, "domain": [0.0, 0.2], "exponentformat": "e"},
    }
    if shown:  # generation scores are percentages: their own axis over the loss panel, at the right
        layout["yaxis3"] = {
            **_AXIS,
            "title": {"text": lb["score_axis"]},
            "overlaying": "y",
            "side": "right",
            "range": [0, 100],
            "showgrid": False,
        }
    return go.Figure(data=traces, layout=layout)


REWARD_LABELS: dict[str, str] = {
    "reward_chosen": "chosen reward",
    "reward_rejected": "rejected reward",
    "reward_margin": "reward margin",
    "eval_reward_margin": "eval reward margin",
    "reward_accuracy": "reward accuracy",
    "eval_reward_accuracy": "eval reward accuracy",
    "step": "step",
    "reward_axis": "reward",
    "accuracy_axis": "accuracy",
}
"""Every word rewards_figure shows, in English; the Train tab passes each in the page's language (train.plot.*)."""
_REWARD_LINES = {  # name -> (colour index, dash, right-hand accuracy axis)
    "reward_chosen": (2, "solid", False),
    "reward_rejected": (3, "solid", False),
    "reward_margin": (0, "solid", False),
    "eval_reward_margin": (0, "dot", False),
    "reward_accuracy": (5, "solid", True),
    "eval_reward_accuracy": (5, "dot", True),
}


REWARD_SERIES = tuple(_REWARD_LINES)
"""The RunHistory.series names rewards_figure draws."""


def rewards_figure(series: dict[str, tuple[Sequence[int], Sequence[float]]], labels: dict[str, str] | None = None):
    """What a preference run is watched by: the chosen and rejected answers' rewards and their margin (train, and
    eval dotted) on the left axis, the share of pairs whose chosen answer wins (reward accuracy, 0-1) on the right.
    None when `series` (name -> (steps, values), RunHistory.series) holds none of them (a supervised run)."""
    lb = {**REWARD_LABELS, **(labels or {})}
    traces = []
    for name, (color, dash, right) in _REWARD_LINES.items():
        at, values = series.get(name, ((), ()))
        if not at:
            continue
        traces.append(
            go.Scatter(
                x=list(at),
                y=list(values),
                name=lb[name],
                mode="lines+markers" if name.startswith("eval_") else "lines",
                line={"color": PALETTE[color], "width": 2, "dash": dash},
                yaxis="y2" if right else "y",
            )
        )
    if not traces:
        return None
    layout = {
        **_PLAIN,
        "height": 300,
        "hovermode": "x unified",
        "margin": {"l": 10, "r": 10, "t": 20, "b": 30},
        "legend": {"orientation": "h", "y": 1.12, "x": 0},
        "xaxis": {**_AXIS, "title": {"text": lb["step"]}},
        "yaxis": {**_AXIS, "title": {"text": lb["reward_axis"]}},
        "yaxis2": {**_AXIS, "title": {"text": lb["accuracy_axis"]}, "overlaying": "y", "side": "right",
                   "range": [0, 1], "showgrid": False},
    }  # fmt: skip
    return go.Figure(data=traces, layout=layout)


def progress_html(
    step: int,
    total: int | None,
    elapsed_s: float | None = None,
    eta_s: float | None = None,
    tokens_per_s: float | None = None,
    status: str = "",
    labels: dict[str, str] | None = None,
) -> str:
    """A progress bar with step/total, elapsed, ETA and tokens/s, as a small HTML block (styled in style.css)."""
    lb = {"elapsed": "elapsed", "eta": "ETA", "tok": "tokens/s", **(labels or {})}
    share = min(1.0, step / total) if total else 0.0
    parts = [f"<b>{step}</b> / {total if total else '?'}"]
    if elapsed_s is not None:
        parts.append(f"{lb['elapsed']} {fmt_duration(elapsed_s)}")
    if eta_s is not None and status == "running":
        parts.append(f"{lb['eta']} {fmt_duration(eta_s)}")
    if tokens_per_s:
        parts.append(f"{tokens_per_s:,.0f} {lb['tok']}")
    text = " · ".join(parts)
    return (
        f'<div class="td-progress td-{html.escape(status or "idle")}"><div class="td-bar" '
        f'style="width:{share * 100:.1f}%"></div><div class="td-progress-text">{text}</div></div>'
    )


def fmt_duration(seconds: float) -> str:
    """'1:02:03' / '4:05' for a number of seconds.

    >>> fmt_duration(3723), fmt_duration(245.4)
    ('1:02:03', '4:05')
    """
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_count(n: int | float | None) -> str:
    """Parameter counts as people say them: 134.5M, 70.55B, 1,024.

    >>> fmt_count(134_515_008), fmt_count(70_553_706_496), fmt_count(1024)
    ('134.5M', '70.55B', '1,024')
    """
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{int(n):,}"
