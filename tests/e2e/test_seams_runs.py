"""The seam between training and using a run, in a real browser: with the page open, a run that finishes (one
step of `python -m app train` into the app's runs folder, as from a second terminal) appears in the Chat, Evaluate
and Export choices without any Refresh click; Chat names its column by the run, not the folder's timestamp; the
Evaluate metrics table shows readable headers, none broken mid-word, and fits its pane; three chat columns each
keep the user's message in view.

Timing on a quiet 2-core machine: ~3 minutes (the app start, ~60 s of headless training, a model load in Chat and
an evaluation of 2 examples).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.pages import expect_, md, open_tab, options, poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SLOW = 240_000  # ms: model loads and evaluations on a shared 2-core machine
RUN_NAME = "seams-runs"
# One optimizer step of batch 1 on 64-token rows of the sample data: ~60 s with the imports on a 2-core CPU.
ONE_STEP = {
    "data": {"max_seq_len": 64, "max_samples": 16, "val_size": 0.25},
    "train": {"max_steps": 1, "batch_size": 1, "grad_accum": 1, "sample_every": 0},
}
STATE: dict[str, Any] = {}
"""What the first test made (the run) for the second."""


def pick(page, elem_id: str, name: str) -> None:
    """Choose `name` in a gr.Dropdown and leave it (a focused dropdown does not open its list again on a click)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.get_by_role("option", name=name, exact=True).click()
    page.keyboard.press("Escape")
    box.blur()


def need_run() -> Path:
    if "run" not in STATE:
        pytest.fail("the run of test_a_finished_run_appears_everywhere_without_refresh is missing; see its failure")
    return STATE["run"]


def train_one_step(runs_dir: Path, tmp_path: Path) -> Path:
    """A finished run in the app's runs folder, trained headless from another process."""
    config = tmp_path / "one-step.yaml"
    config.write_text(yaml.safe_dump(ONE_STEP), encoding="utf-8")
    env = {**os.environ, "TUNEDESK_RUNS": str(runs_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "app", "train", str(config), "--run-name", RUN_NAME],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = [p for p in runs_dir.glob(f"*-{RUN_NAME}") if (p / "adapter" / "adapter_config.json").is_file()]
    return run


def test_a_finished_run_appears_everywhere_without_refresh(page, app_server, tmp_path, shot):
    expect = expect_()
    runs_dir = Path(app_server[1])
    open_tab(page, "chat")  # the page is up (the tabs answer) before the run exists
    assert not [o for o in options(page, "chat-adapters") if RUN_NAME in o]

    run = train_one_step(runs_dir, tmp_path)
    adapter = f"{run.name} · adapter"
    for tab, elem_id in (("chat", "chat-adapters"), ("evaluate", "eval-adapters"), ("export", "export-adapters")):
        open_tab(page, tab)
        poll(lambda e=elem_id: options(page, e), lambda found: adapter in found, 60, f"{adapter} in #{elem_id}", 2)
    open_tab(page, "evaluate")
    page.get_by_role("button", name="Efficiency of a run").click()
    poll(lambda: options(page, "eval-run-pick"), lambda found: f"{run.name} (finished)" in found, 60, "run in Run")
    STATE["run"] = run

    open_tab(page, "chat")
    pick(page, "chat-adapters", adapter)
    page.locator("#chat-load").click()
    expect(md(page, "chat-status")).to_contain_text(f"Loaded on cpu: smollm2-135m-instruct (base), {RUN_NAME}",
                                                    timeout=SLOW)  # fmt: skip
    expect(page.locator("#chat-col-1 [data-testid=block-label]")).to_have_text(RUN_NAME)  # not the timestamp
    expect(page.locator("#chat-col-0 [data-testid=block-label]")).to_have_text("smollm2-135m-instruct (base)")


def test_three_columns_each_show_the_users_message(page, shot):
    """A long answer in three narrow columns once scrolled each column to its end, hiding the question above."""
    expect, run = expect_(), need_run()
    open_tab(page, "chat")
    for choice in (f"{run.name} · adapter", f"{run.name} · checkpoint-1"):
        poll(lambda: options(page, "chat-adapters"), lambda found, c=choice: c in found, 60, f"{choice} listed", 2)
        pick(page, "chat-adapters", choice)
    page.locator("#chat-load").click()
    expect(md(page, "chat-status")).to_contain_text(f"{RUN_NAME} · checkpoint-1", timeout=SLOW)
    page.get_by_role("button", name="Sampling (shared by all columns)").click()
    tokens = page.locator("#chat-max_new_tokens input[type=number]")
    tokens.fill("160")
    tokens.press("Enter")
    page.locator("#chat-prompt textarea").fill("Tell me a long story about a cat who learns to sail.")
    page.locator("#chat-send").click()
    seen: list[list[str]] = []

    def settled(answers: list[str]) -> bool:  # all answered and unchanged for 10 s: streaming ended
        seen.append(answers)
        return all(a.strip() for a in answers) and len(seen) >= 6 and all(s == answers for s in seen[-6:])

    poll(lambda: [page.locator(f"#chat-col-{i} [data-testid=bot]").last.inner_text() for i in range(3)],
         settled, 300, "three answers", 2)  # fmt: skip
    answers = seen[-1]
    assert all(len(a.split()) >= 60 for a in answers), answers  # taller than the 420 px the columns had
    for i in range(3):
        column = page.locator(f"#chat-col-{i}").bounding_box()
        asked = page.locator(f"#chat-col-{i} [data-testid=user]").last.bounding_box()
        assert asked["y"] >= column["y"] and asked["y"] + asked["height"] <= column["y"] + column["height"], (i, asked)
    shot(page, "seams-runs-chat-three-columns")


BROKEN_WORDS = """(table) => {
  // every header word (split at spaces and hyphens, where a line may break) lies on one line
  const broken = [];
  for (const th of table.querySelectorAll('thead th')) {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /[^\\s\\-]+/g;
      for (let m = re.exec(node.textContent); m; m = re.exec(node.textContent)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
  }
  return broken;
}"""


def test_evaluate_metric_headers_are_readable_and_fit(page, app_server, shot):
    expect, run = expect_(), need_run()
    open_tab(page, "evaluate")
    adapter = f"{run.name} · adapter"
    poll(lambda: options(page, "eval-adapters"), lambda found: adapter in found, 60, f"{adapter} listed", 2)
    pick(page, "eval-adapters", adapter)
    box = page.locator("#eval-max-examples input")
    box.fill("2")
    box.press("Enter")
    tokens = page.locator("#eval-max-new-tokens input[type=number]")
    tokens.fill("8")
    tokens.press("Enter")
    page.locator("#eval-run").click()
    expect(md(page, "eval-status")).to_contain_text("Evaluated 2 examples", timeout=SLOW)
    expect(md(page, "eval-status")).to_contain_text(f"validation split of run {run.name}")
    table = page.locator("#eval-metrics table").first
    heads = [h.strip() for h in page.locator("#eval-metrics thead th").all_inner_texts()]
    heads = [re.sub(r"\s+", " ", h) for h in heads]
    assert heads[:4] == ["Metric", "smollm2-135m-instruct (base)", RUN_NAME, f"Δ {RUN_NAME}"], heads
    expect(page.locator("#eval-metrics")).to_contain_text("Exact match ↑")
    assert table.evaluate(BROKEN_WORDS) == []
    pane = page.locator("#eval-metrics").bounding_box()
    right = max(b["x"] + b["width"] for b in page.locator("#eval-metrics thead th").evaluate_all(
        "ths => ths.map(t => { const r = t.getBoundingClientRect(); return {x: r.x, width: r.width} })"))  # fmt: skip
    assert right <= pane["x"] + pane["width"] + 1, (right, pane)  # the Δ column is not cut off
    examples = page.locator("#eval-examples thead th")
    last = examples.last.bounding_box()
    frame = page.locator("#eval-examples").bounding_box()
    assert last["x"] + last["width"] <= frame["x"] + frame["width"] + 1, (last, frame)  # no sideways scrolling
    page.locator("#eval-status").scroll_into_view_if_needed()
    shot(page, "seams-runs-evaluate")
