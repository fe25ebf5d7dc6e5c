"""The whole journey in a real browser, in order, on one app and one page: open, load the default model and watch
the estimate follow the LoRA rank, preview the sample data with its label mask, train a few steps and Stop, chat
with the base and the new adapter side by side, evaluate both, merge the adapter, switch to Chinese.

Each stage saves a screenshot in test-artifacts/e2e/; with TUNEDESK_README_SHOTS=1 the stages that the README
shows also write docs/screenshots/<tab>.png. The tests share state (the run, its adapter) and run in file order;
a stage whose predecessor failed fails with the reason instead of guessing.

Timing on a quiet 2-core machine: ~3 minutes, most of it the app start, 5-6 training steps (2-6 s each) and the
Stop (the step in progress, an eval at save_steps 5 and the adapter save). Waits poll the page with generous
limits: the machine is shared with other test runs and every step can take several times longer there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from apprunner import page_url

from e2e.pages import (
    expect_,
    last_answer,
    md,
    open_accordion,
    open_tab,
    pick_option,
    poll,
    scroll_to,
    set_number,
    top,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TABS = ["Model", "Data", "Train", "Chat", "Evaluate", "Export"]
TAB_BUTTONS = "#tabs button[role=tab][id^='tab-']"  # the six top tabs, not the Data tab's inner ones
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Small enough to train on a busy CPU in seconds per step (the journey stops the run after a few of them).
TRAIN_FORM = {"f-train-max_steps": 20, "f-train-batch_size": 2, "f-train-grad_accum": 1}
LOGGING_FORM = {"f-train-logging_steps": 1, "f-train-save_steps": 5}
SLOW = 240_000  # ms: model loads, training steps, merges on a shared 2-core machine


@pytest.fixture(scope="module")
def journey(browser, app_server, default_form) -> Any:
    """One browser page for every stage (the session's state, e.g. the loaded chat models, carries over)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(page_url(app_server[0]))
    yield pg
    context.close()


STATE: dict[str, Any] = {}


def need(key: str) -> Any:
    if key not in STATE:
        pytest.fail(f"an earlier stage did not produce {key!r}; see its failure above")
    return STATE[key]


# ---- page helpers (the shared ones are in e2e/pages.py) -------------------------------------------------
def plotted_loss_points(page) -> int:
    """Points of the raw train-loss trace of the Train tab's plotly figure (0 while there is no figure)."""
    return page.evaluate(
        """() => { const g = document.querySelector('#train-plot .js-plotly-plot');
                   return g && g.data && g.data.length ? g.data[0].x.length : 0 }"""
    )


def progress_step(page) -> int:
    text = page.locator("#train-progress .td-progress-text").inner_text()
    found = re.match(r"\s*(\d+)\s*/", text)
    return int(found.group(1)) if found else 0


def numbers(text: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d|\d", text)]


# ---- the journey ------------------------------------------------------------------------------------------------
def test_1_open_shows_the_six_tabs(journey, shot):
    page = journey
    expect_()(page.locator(TAB_BUTTONS)).to_have_text(TABS, timeout=SLOW)
    # the estimate is drawn on page load: the app is fully up, not just serving HTML
    expect_()(md(page, "estimate-trainable")).to_contain_text("Trainable parameters", timeout=SLOW)
    shot(page, "01-open")


def test_2_model_load_modules_and_estimate_follows_rank(journey, shot):
    page, expect = journey, expect_()
    open_tab(page, "model")
    page.locator("#tab-model").get_by_role("button", name="Load", exact=True).click()
    expect(page.locator("#tab-model .td-status").first).to_contain_text("Loaded smollm2-135m-instruct", timeout=SLOW)
    boxes = page.locator("#f-lora-target_modules input[type=checkbox]")
    expect(boxes).to_have_count(len(LINEAR) + 1)  # the model's Linear names + all-linear
    assert boxes.evaluate_all("bs => bs.map(b => b.name)") == [*LINEAR, "all-linear"]
    expect(page.locator("#f-lora-target_modules input[name=q_proj]")).to_be_checked()
    expect(md(page, "estimate-verdict")).to_contain_text("GiB")
    expect(page.locator("#estimate-plot .js-plotly-plot")).to_be_visible()

    trainable = md(page, "estimate-trainable")
    verdict = md(page, "estimate-verdict")
    before, verdict_before = trainable.inner_text(), verdict.inner_text()
    assert page.locator("#f-lora-rank input[type=number]").input_value() == "8"
    set_number(page, "f-lora-rank", 64)
    expect(trainable).not_to_have_text(before, timeout=60_000)
    after, verdict_after = trainable.inner_text(), verdict.inner_text()
    # LoRA adds r x (in + out) per targeted Linear: rank 8 -> 64 is exactly 8x the trainable count
    assert numbers(after)[0] == 8 * numbers(before)[0], (before, after)
    gib = [float(re.search(r"([\d.]+) GiB", v).group(1)) for v in (verdict_before, verdict_after)]
    assert gib[1] > gib[0], (verdict_before, verdict_after)
    top(page)
    shot(page, "model", readme=True)


def test_3_data_sample_table_prompt_and_mask(journey, shot):
    page, expect = journey, expect_()
    open_tab(page, "data")
    set_number(page, "f-data-max_seq_len", 128)  # short rows: quick training steps in stage 4
    page.locator("#data-load").click()
    expect(md(page, "data-status")).to_contain_text("sample_data.json", timeout=SLOW)
    expect(md(page, "data-status")).to_contain_text("300 valid")
    expect(page.locator("#data-table [role=row]").nth(10)).to_be_attached()  # header + a page of 20 records
    header = page.locator("#data-table [role=row]").first.inner_text()
    assert all(col in header for col in ("instruction", "input", "output")), header

    page.locator("#tab-data button[role=tab]", has_text="Example as trained").click()
    expect(md(page, "data-record-info")).to_contain_text("tokens")
    rendered = page.locator("#data-rendered")
    expect(rendered).to_contain_text("<|im_start|>assistant")  # the model's ChatML template
    mask = page.locator("#data-mask .token")
    expect(mask.first).to_be_visible()
    assert mask.count() > 10
    legend = page.locator("#data-mask [data-testid='highlighted-text:category-legend']")
    if legend.count():  # when shown, the legend names the states in the page's language only
        assert "训练" not in legend.inner_text(), legend.inner_text()
    scroll_to(page, "#tabs")
    shot(page, "data", readme=True)


def test_4_train_plot_grows_then_stop_saves_the_adapter(journey, shot, app_server):
    page, expect = journey, expect_()
    runs_dir = Path(app_server[1])
    open_tab(page, "train")
    for elem_id, value in TRAIN_FORM.items():
        set_number(page, elem_id, value)
    open_accordion(page, "Logging, checkpoints and samples")
    for elem_id, value in LOGGING_FORM.items():
        set_number(page, elem_id, value)
    page.locator("#train-start").click()
    status = md(page, "train-status")
    expect(status).to_contain_text("lora-smollm2-135m-instruct", timeout=60_000)
    run = re.search(r"\d{8}-\d{6}-\S*lora-smollm2-135m-instruct", status.inner_text()).group(0)
    STATE["run"] = run

    first = poll(lambda: plotted_loss_points(page), lambda n: n >= 1, 300, "first loss point on the plot")
    more = poll(lambda: plotted_loss_points(page), lambda n: n > first, 180, f"more than {first} plotted points")
    assert progress_step(page) >= more >= 2
    expect(status).to_contain_text("Training")
    shot(page, "04-train-running")

    page.locator("#train-stop").click()
    expect(status).to_contain_text(f"Stopped {run}", timeout=SLOW)
    expect(page.locator("#train-progress .td-stopped")).to_be_visible()
    adapter = Path(status.locator("code").inner_text())
    assert adapter == runs_dir / run / "adapter", adapter
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 64  # the Model tab's rank
    cfg = yaml.safe_load((runs_dir / run / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] == 20 and cfg["train"]["batch_size"] == 2 and cfg["train"]["save_steps"] == 5
    assert cfg["data"]["max_seq_len"] == 128
    events = [json.loads(line) for line in (runs_dir / run / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "stopped" and 2 <= events[-1].get("step", 0) < 20
    STATE["adapter"] = adapter
    top(page)
    shot(page, "train", readme=True)


def test_5_chat_base_and_adapter_side_by_side(journey, shot):
    page, expect = journey, expect_()
    run = need("run")
    open_tab(page, "chat")
    pick_option(page, "chat-adapters", f"{run} · adapter")
    page.locator("#chat-load").click()
    name = run.split("-", 2)[2]  # the run's name: its folder name without the creation time
    loaded = f"Loaded on cpu: smollm2-135m-instruct (base), {name}"
    expect(md(page, "chat-status")).to_contain_text(loaded, timeout=SLOW)
    open_accordion(page, "Sampling (shared by all columns)")
    set_number(page, "chat-max_new_tokens", 24)  # two columns on a busy CPU: a few tokens/s each
    page.locator("#chat-prompt textarea").fill("What is the capital of France?")
    page.locator("#chat-send").click()

    def answers() -> list[str]:
        return [last_answer(page, column) for column in (0, 1)]

    last: list[list[str]] = []

    def settled(value: list[str]) -> bool:  # both answered and unchanged over two reads: streaming ended
        last.append(value)
        return all(v.strip() for v in value) and len(last) >= 2 and last[-2] == value

    got = poll(answers, settled, 180, "two non-empty answers", every_s=1.5)
    assert all(a.strip() for a in got), got
    expect(page.locator("#chat-col-1 [data-testid=block-label]")).to_have_text(name)  # a name, not a timestamp
    top(page)
    shot(page, "chat", readme=True)


def test_6_evaluate_base_against_adapter(journey, shot):
    page, expect = journey, expect_()
    run = need("run")
    open_tab(page, "evaluate")
    pick_option(page, "eval-adapters", f"{run} · adapter")
    box = page.locator("#eval-max-examples input")
    box.fill("3")
    box.press("Enter")
    set_number(page, "eval-max-new-tokens", 16)
    page.locator("#eval-run").click()
    status = md(page, "eval-status")
    expect(status).to_contain_text("Evaluated 3 examples", timeout=SLOW)  # the run's own validation split
    metrics = page.locator("#eval-metrics")
    expect(metrics).to_contain_text("ROUGE-L")
    expect(metrics).to_contain_text(run.split("-", 2)[2])
    expect(page.locator("#eval-plot .js-plotly-plot")).to_be_visible()
    scroll_to(page, "#eval-status")
    shot(page, "evaluate", readme=True)


def test_7_export_merges_the_adapter(journey, shot):
    page, expect = journey, expect_()
    run, adapter = need("run"), need("adapter")
    open_tab(page, "export")
    pick_option(page, "export-adapters", f"{run} · adapter")
    out = page.locator("#export-out textarea, #export-out input").first
    # a server round trip on a page that has drawn a training run and an evaluation: seconds on a busy 2-core box
    expect(out).to_have_value(str(adapter.parent / "export" / "merged-float16"), timeout=30_000)
    page.locator("#export-merge").click()
    status = md(page, "export-status")
    expect(status).to_contain_text("Merged into", timeout=SLOW)
    merged = Path(status.locator("code").inner_text())
    assert merged == adapter.parent / "export" / "merged-float16"
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    expect(page.locator("#export-files")).to_contain_text("config.json")
    artifacts = page.locator("#export-artifacts")
    expect(artifacts).to_contain_text("AutoModelForCausalLM.from_pretrained")
    STATE["merged"] = merged
    top(page)
    shot(page, "export", readme=True)
    # GGUF from the merged folder (filled in by the merge), the types' sizes for this model shown before export
    expect(page.locator("#export-types")).to_contain_text("q4_k_m")
    expect(page.locator("#export-types")).to_contain_text("MiB")
    page.locator("#export-gguf").click()
    expect(md(page, "export-gguf-status")).to_contain_text("model-q8_0.gguf", timeout=SLOW)
    assert (merged.with_name(merged.name + "-gguf") / "model-q8_0.gguf").is_file()
    expect(artifacts).to_contain_text("llama-cli -m")
    expect(artifacts).to_contain_text("ollama create")
    expect(page.locator("#export-modelfile")).to_contain_text("FROM ./model-q8_0.gguf")


def test_8_chinese_relabels_and_keeps_results(journey, shot):
    page, expect = journey, expect_()
    merged = need("merged")
    page.locator("#lang").get_by_text("中文").click()
    # one event relabels every component of the six tabs: seconds on a busy 2-core machine
    expect(page.locator(TAB_BUTTONS)).to_have_text(["模型", "数据", "训练", "对话", "评估", "导出"], timeout=60_000)
    expect(page.locator("#export-merge")).to_have_text("合并")
    expect(page.locator("#lang")).to_contain_text("语言")
    # a language switch relabels; it must not wipe the result of what was just done
    expect(md(page, "export-status")).to_contain_text(str(merged))
    open_tab(page, "train")
    expect(page.locator("#train-start")).to_have_text("开始训练")
    expect(md(page, "train-status")).to_contain_text("已停止")
    top(page)
    shot(page, "chinese", readme=True)
    english = {}
    for key in ("model", "data", "train", "chat", "evaluate", "export"):
        open_tab(page, key)
        left = [t for t in page.locator(f"#tab-{key}").evaluate(VISIBLE_LABELS) if _english(t)]
        if left:
            english[key] = left
    assert not english, f"labels still in English after switching to 中文: {english}"
    # Status lines keep the result they reported (in the language of that moment); the Data tab redraws its
    # views on a switch, so its summary and pager speak Chinese now.
    assert not _english(md(page, "data-status").inner_text()), md(page, "data-status").inner_text()


VISIBLE_LABELS = """(root) => {
  const out = [];
  const sel = 'label, button, [data-testid=block-info], [data-testid=block-label], #data-page-info p';
  for (const el of root.querySelectorAll(sel)) {
    if (!el.offsetParent) continue;  // hidden: another sub-tab or a closed accordion
    const own = Array.from(el.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent.trim()).join(' ');
    if (own.trim()) out.push(own.trim());
  }
  return out;
}"""
NAMES = {"LoRA", "QLoRA", "DoRA", "rsLoRA", "alpha", "dropout", "Top", "base", "Modelfile", "GGUF", "Ollama", "GiB"}
"""Names that stay as they are in Chinese technical writing (LoRA alpha, Top-p, the base column, Modelfile)."""
RUN_NAME = re.compile(r"\d{8}-\d{6}-[\w.-]+")


def _english(text: str) -> bool:
    """A label with an English word (3+ letters, not a name in NAMES) and no Chinese character."""
    if re.search(r"[\u4e00-\u9fff]", text):
        return False
    text = RUN_NAME.sub("", text)  # a run's folder name is a name
    text = re.sub(r"[\w.]+-[\w.-]+", "", text)  # so are model and run names (smollm2-135m-instruct, lora-smollm2-...)
    return any(word not in NAMES for word in re.findall(r"[A-Za-z]{3,}", text))
