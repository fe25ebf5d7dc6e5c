"""Evaluate tab handlers on real Gradio components: the tiny model and a perturbed adapter on 3 examples (metrics
table with deltas, chart, per-example table, CSV files), a run's validation split by default, Cancel, the
efficiency report, and messages instead of exceptions."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import pytest
from ui_ctx import make_adapter, make_run, tab_context, values_of, wired

from app import history
from app.ui import evaluate_tab, pickers

RECORDS = [
    {"instruction": "What is the capital of France?", "output": "Paris."},
    {"instruction": "Give three tips for staying healthy.", "output": "Eat well, sleep, and exercise."},
    {"instruction": "Who are you?", "output": "I am a helpful assistant."},
    {"instruction": "Say hi.", "output": "Hi!"},
]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("eval") / "adapter-e")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-data") / "qa.json"
    path.write_text(json.dumps(RECORDS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def eval_ctx(tiny_model_dir):
    demo, ctx = tab_context(["data", "evaluate"], str(tiny_model_dir))
    return ctx


def _values(ctx, **changes):
    h = ctx.handles["evaluate"]
    values = values_of(ctx, h.picker.base, h.picker.adapters, h.picker.device, h.data_path, h.max_examples,
                       h.max_new_tokens, h.run_pick)  # fmt: skip
    values[h.max_new_tokens] = 4
    for key, value in changes.items():
        values[getattr(h.picker, key, None) or getattr(h, key)] = value
    return values


METRIC_ROWS = ["Loss ↓", "Perplexity ↓", "ROUGE-1 ↑", "ROUGE-2 ↑", "ROUGE-L ↑", "BLEU ↑", "Exact match ↑"]


def test_three_examples_give_metrics_chart_examples_and_csv(eval_ctx, adapter_dir, data_file, tiny_model_dir):
    h = eval_ctx.handles["evaluate"]
    values = _values(eval_ctx, adapters=[str(adapter_dir)], data_path=str(data_file), max_examples=3)
    out = evaluate_tab.run_evaluation(eval_ctx, values)
    assert out[h.status].startswith("✅") and "**3** examples" in out[h.status], out[h.status]
    assert "(file qa.json)" in out[h.status]
    assert all(out[view]["visible"] for view in (h.metrics, h.plot, h.examples))  # hidden until there are results
    table = out[h.metrics]["value"]
    base = f"{tiny_model_dir.name} (base)"
    # a row per metric, readable; a column per model (base first) with the adapter's difference beside it
    assert list(table.columns) == ["Metric", base, "adapter-e", "Δ adapter-e"]
    assert list(table["Metric"]) == METRIC_ROWS
    loss = table.set_index("Metric").loc["Loss ↓"]
    assert loss[base] != loss["adapter-e"] and loss["Δ adapter-e"][0] in "+−"  # the adapter counts, signed
    assert float(loss["adapter-e"]) - float(loss[base]) == pytest.approx(float(loss["Δ adapter-e"].replace("−", "-")))
    figure = out[h.plot]["value"]
    assert isinstance(figure, go.Figure) and len(figure.data) == 4  # 2 models x (text metrics, loss)
    assert {trace.name for trace in figure.data} == {base, "adapter-e"}
    examples = out[h.examples]["value"]
    assert list(examples.columns) == ["#", "Prompt", "Reference", f"{base}: answer", "ROUGE-L", "adapter-e: answer",
                                      "ROUGE-L\u200b"]  # fmt: skip
    assert list(examples["Reference"]) == [r["output"] for r in RECORDS[:3]]
    widths = out[h.examples]["column_widths"]  # shares of the pane: the table fits it, its text columns wrap
    assert len(widths) == len(examples.columns) and sum(float(w.rstrip("%")) for w in widths) == pytest.approx(
        100, 0.01
    )
    summary, per_example = out[h.files]
    assert pd.read_csv(per_example, encoding="utf-8-sig").shape[0] == 3
    assert pd.read_csv(summary, encoding="utf-8-sig").shape[0] == 2


def test_results_read_in_chinese(eval_ctx, adapter_dir, data_file, tiny_model_dir):
    h = eval_ctx.handles["evaluate"]
    values = _values(eval_ctx, adapters=[str(adapter_dir)], data_path=str(data_file), max_examples=2)
    values[eval_ctx.lang_selector] = "zh"
    out = evaluate_tab.run_evaluation(eval_ctx, values)
    assert out[h.status].startswith("✅") and "（文件 qa.json）" in out[h.status], out[h.status]
    table = out[h.metrics]["value"]
    assert list(table.columns) == ["指标", f"{tiny_model_dir.name}（基础模型）", "adapter-e", "Δ adapter-e"]
    assert list(table["指标"]) == ["损失 ↓", "困惑度 ↓", "ROUGE-1 ↑", "ROUGE-2 ↑", "ROUGE-L ↑", "BLEU ↑", "精确匹配 ↑"]
    assert list(out[h.examples]["value"].columns[:3]) == ["#", "提示", "参考答案"]
    figure = out[h.plot]["value"]
    assert "精确匹配" in figure.data[0].x and figure.data[1].x == ("损失",)
    assert [a.text for a in figure.layout.annotations][1].startswith("损失")
    assert figure.layout.title.text == "2 个样本"


def test_a_runs_validation_split_is_the_default(eval_ctx, runs_tmp, tiny_model_dir):
    h = eval_ctx.handles["evaluate"]
    run = make_run(tiny_model_dir)  # trained on the default dataset, val_size 0.05
    values = _values(eval_ctx, adapters=[str(run / "adapter")], data_path="", max_examples=2)
    out = evaluate_tab.run_evaluation(eval_ctx, values)
    assert out[h.status].startswith("✅"), out[h.status]
    assert f"validation split of run {run.name}" in out[h.status]
    assert "Saved in" in out[h.status] and (run / "eval").is_dir()
    follow, chosen = wired(eval_ctx, "evaluate_follow_run")
    chosen[h.picker.adapters] = [str(run / "adapter")]
    assert follow(chosen)["value"] == str(run)


def test_cancel_returns_partial_results(eval_ctx, adapter_dir, data_file):
    h = eval_ctx.handles["evaluate"]
    assert "No evaluation is running" in evaluate_tab.cancel(eval_ctx)[h.status]

    def progress(frac, desc=""):
        if frac > 0.1:  # the models are loaded and the first batch is under way: press Cancel
            evaluate_tab.RUNNING.cancel.set()

    values = _values(eval_ctx, adapters=[str(adapter_dir)], data_path=str(data_file), max_examples=3)
    out = evaluate_tab.run_evaluation(eval_ctx, values, progress)
    assert out[h.status].startswith("⚠️") and "Cancelled" in out[h.status], out[h.status]
    assert not evaluate_tab.RUNNING.lock.locked()


def test_problems_are_messages(eval_ctx, tmp_path, data_file):
    h = eval_ctx.handles["evaluate"]
    no_data = evaluate_tab.run_evaluation(eval_ctx, _values(eval_ctx, adapters=[], data_path=""))
    assert no_data[h.status].startswith("❌") and "no data to evaluate on" in no_data[h.status]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("[{", encoding="utf-8")
    bad = evaluate_tab.run_evaluation(eval_ctx, _values(eval_ctx, data_path=str(bad_file)))
    assert bad[h.status].startswith("❌") and "bad.json" in bad[h.status]
    missing = evaluate_tab.run_evaluation(
        eval_ctx, _values(eval_ctx, adapters=[str(tmp_path / "nope")], data_path=str(data_file))
    )
    assert missing[h.status].startswith("❌") and "nope" in missing[h.status]


def test_efficiency_report_of_a_run(eval_ctx, runs_tmp, tiny_model_dir):
    h = eval_ctx.handles["evaluate"]
    run = make_run(tiny_model_dir)
    history.append_event(run, "log", step=1, loss=2.0, tokens_per_s=1234.5)
    assert "Pick a run first" in evaluate_tab.efficiency(eval_ctx, _values(eval_ctx, run_pick=None))[h.efficiency]
    text = evaluate_tab.efficiency(eval_ctx, _values(eval_ctx, run_pick=str(run)))[h.efficiency]
    assert run.name in text and "Tokens/s (median)" in text and "1,234.5" in text
    assert "Adapter/model files" in text
    assert (f"{run.name} (finished)", str(run)) in evaluate_tab.run_choices()
    assert (f"{run.name} (已完成)", str(run)) in evaluate_tab.run_choices("zh")
    in_chinese = _values(eval_ctx, run_pick=str(run))
    in_chinese[eval_ctx.lang_selector] = "zh"
    assert f"**{run.name}** · 已完成 · lora" in evaluate_tab.efficiency(eval_ctx, in_chinese)[h.efficiency]


def test_run_and_adapter_choices_follow_the_history(eval_ctx, runs_tmp, tiny_model_dir):
    h = eval_ctx.handles["evaluate"]
    fn, values = wired(eval_ctx, "eval_follow_runs")
    assert list(values) == [h.picker.seen, eval_ctx.lang_selector]
    empty = pickers.drawn("en", ())
    values[h.picker.seen] = f"{empty}/0"  # what the page last drew: an empty runs folder
    assert fn(*values.values()) == (gr.skip(), gr.skip(), f"{empty}/1")
    run = make_run(tiny_model_dir)  # a run finishes
    adapters, runs, seen = fn(*values.values())
    assert (f"{run.name} · adapter", str(run / "adapter")) in adapters["choices"]
    assert runs["choices"] == [(f"{run.name} (finished)", str(run))] and "value" not in runs
    values[h.picker.seen] = seen
    assert fn(*values.values())[:2] == (gr.skip(), gr.skip())


def test_a_preference_run_shows_reward_accuracy_and_margin_beside_the_metrics(eval_ctx, tmp_path, tiny_model_dir):
    from test_evaluate import preference_run

    h = eval_ctx.handles["evaluate"]
    run = preference_run(tiny_model_dir, tmp_path, "dpo")
    values = _values(eval_ctx, adapters=[str(run / "adapter")], data_path="", max_examples=2)
    out = evaluate_tab.run_evaluation(eval_ctx, values)
    assert out[h.status].startswith("✅"), out[h.status]
    assert "Preference run: the held-out pairs" in out[h.status] and "DPO: its log-prob margin" in out[h.status]
    table = out[h.metrics]["value"].set_index("Metric")
    accuracy, margin = "Reward accuracy (% of pairs) ↑", "Log-prob margin, chosen − rejected ↑"
    assert list(table.index) == [*METRIC_ROWS, accuracy, margin]
    base, tuned, delta = table.columns  # a column per model, the adapter's difference beside it
    assert base == f"{tiny_model_dir.name} (base)" and delta == f"Δ {tuned}"
    assert table.loc[accuracy, base] == "–" and table.loc[accuracy, tuned] != "–"  # the base is DPO's reference
    assert table.loc[margin, base] != table.loc[margin, tuned] and table.loc[margin, delta][0] in "+−"
