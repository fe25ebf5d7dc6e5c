"""Chat votes become training data, in a real browser (issue 17): in the Chat tab, in blind mode, a base and an adapter
answer three prompts as Model A and Model B; each vote reveals the names and appends a pair to the file named; the
file holds three pairs; the Data tab lists it and loads it as preference data; a DPO run trains on it.

The chat and the run use the tiny model (a 2-layer Llama with a ChatML template) and an adapter with perturbed LoRA
weights, so its answers differ from the base's: answers and training steps take seconds on a busy 2-core machine.
The stages share one page and run in file order; a stage whose predecessor failed fails with the reason.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from apprunner import page_url
from ui_ctx import make_adapter

from e2e.pages import (
    expect_,
    md,
    open_accordion,
    open_tab,
    options,
    pick_option,
    poll,
    set_number,
    set_text,
    settled_answers,
    top,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOW = 240_000  # ms: model loads and training on a shared 2-core machine
PROMPTS = ["What is the capital of France?", "Name a colour.", "Say something kind."]
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def votes_page(browser, app_server, default_form) -> Any:
    """One page for every stage (the chat session and the form carry over)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(page_url(app_server[0]))
    yield pg
    context.close()


@pytest.fixture(scope="module")
def vote_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("votes") / "vote-adapter")


def need(key: str) -> Any:
    if key not in STATE:
        pytest.fail(f"an earlier stage did not produce {key!r}; see its failure above")
    return STATE[key]


def label(page, column: int):
    return page.locator(f"#chat-col-{column} [data-testid=block-label]")


def asked(page, column: int) -> str:
    users = page.locator(f"#chat-col-{column} [data-testid=user]")
    return users.last.inner_text().strip() if users.count() else ""


def vote_until_recorded(page, button: str, count: int) -> str:
    """Click the vote button until the vote is recorded: the answers a person sees settle a moment before the page
    holds them as final, and a vote in between is refused with "Wait until every column has finished"."""
    status = md(page, "chat-vote-status")
    for _ in range(30):
        page.locator(button).click()
        text = poll(status.inner_text, lambda t: "Pairs in" in t or "Wait" in t, 60, "the vote's answer")
        if "Pairs in" in text:
            assert re.search(rf"jsonl: {count}\.", text), text
            return text
        assert "Wait until every column has finished" in text, text
        time.sleep(1)
    pytest.fail(f"vote {count} was never recorded: {status.inner_text()!r}")


# ---- the journey ------------------------------------------------------------------------------------------------
def test_1_three_blind_votes_write_three_pairs(votes_page, vote_adapter, tiny_model_dir, tmp_path_factory, shot):
    page, expect = votes_page, expect_()
    file = tmp_path_factory.mktemp("vote-file") / "my-votes.jsonl"
    base, adapter = f"{tiny_model_dir.name} (base)", vote_adapter.name
    open_tab(page, "chat")
    adapters = page.locator("#chat-adapters input")
    adapters.fill(str(vote_adapter))  # any adapter folder, typed: the base follows its adapter_config.json
    adapters.press("Enter")
    page.keyboard.press("Escape")
    expect(page.locator("#chat-base input")).to_have_value(str(tiny_model_dir))
    page.locator("#chat-blind input").check()
    set_text(page, "chat-vote-file", str(file))
    page.locator("#chat-load").click()
    expect(md(page, "chat-status")).to_contain_text(f"Loaded on cpu: {base}, {adapter}", timeout=SLOW)
    expect(label(page, 0)).to_have_text("Model A")  # shuffled and unnamed
    expect(label(page, 1)).to_have_text("Model B")
    expect(page.locator("#chat-vote-a")).to_have_text("👈 Model A is better")
    open_accordion(page, "Sampling (shared by all columns)")
    set_number(page, "chat-max_new_tokens", 8)

    for n, prompt in enumerate(PROMPTS, start=1):
        page.locator("#chat-prompt textarea").fill(prompt)
        page.locator("#chat-send").click()
        expect(label(page, 0)).to_have_text("Model A")  # each message after a vote starts a new, unnamed round
        expect(label(page, 1)).to_have_text("Model B")
        poll(lambda: [asked(page, c) for c in (0, 1)], lambda v, p=prompt: v == [p, p], 120, f"prompt {n} shown")
        answers = settled_answers(page, [0, 1], 180)
        text = vote_until_recorded(page, "#chat-vote-a" if n != 2 else "#chat-vote-b", n)
        names = [label(page, c).inner_text().strip() for c in (0, 1)]
        assert sorted(names) == sorted([base, adapter]), names  # the vote revealed who answered
        better = 0 if n != 2 else 1
        assert f"Recorded: {names[better]} better than {names[1 - better]}" in text, text
        STATE.setdefault("votes", []).append((prompt, answers[better], names[better], names[1 - better]))
        if n == 1:
            top(page)
            shot(page, "votes-chat-revealed")

    records = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3
    for record, (prompt, chosen, better, worse) in zip(records, STATE["votes"], strict=True):
        assert record["prompt"][-1] == {"role": "user", "content": prompt}
        assert record["chosen"][0]["role"] == "assistant" and record["chosen"][0]["content"].strip() == chosen.strip()
        assert record["rejected"][0]["content"] and record["rejected"][0]["content"] != record["chosen"][0]["content"]
        assert record["models"] == {"chosen": better, "rejected": worse}
    STATE["file"] = file


def test_2_the_data_tab_lists_the_vote_file_and_loads_its_pairs(votes_page, shot):
    page, expect = votes_page, expect_()
    file = need("file")
    page.reload()  # a new visit: the Data tab's picker is drawn from the recent files now
    open_tab(page, "data")
    listed = [name for name in options(page, "data-picker") if file.name in name]
    assert listed, f"{file.name} is not among the Data tab's datasets: {options(page, 'data-picker')}"
    pick_option(page, "data-picker", listed[0])
    status = md(page, "data-status")
    expect(status).to_contain_text(file.name, timeout=SLOW)
    expect(status).to_contain_text("preference data")
    expect(status).to_contain_text("3 valid")
    expect(page.locator("#f-data-path input, #f-data-path textarea").first).to_have_value(str(file))
    top(page)
    shot(page, "votes-data-loaded")


def test_3_a_dpo_run_trains_on_the_votes(votes_page, app_server, tiny_model_dir, shot):
    page, expect = votes_page, expect_()
    file, runs_dir = need("file"), Path(app_server[1])
    open_tab(page, "model")
    box = page.locator("#f-model-name_or_path input")
    box.fill(str(tiny_model_dir))
    box.press("Enter")
    page.keyboard.press("Escape")
    open_tab(page, "train")
    open_accordion(page, "Objective: supervised or preference")
    pick_option(page, "f-objective", "dpo")
    for elem_id, value in {"f-train-max_steps": 2, "f-train-batch_size": 1, "f-train-grad_accum": 1}.items():
        set_number(page, elem_id, value)
    open_accordion(page, "Logging, checkpoints and samples")
    set_number(page, "f-train-logging_steps", 1)  # a loss point for each of the 2 steps
    status = md(page, "train-status")
    before = status.inner_text()  # a new page shows the last run's end ("Finished ... identity"): not this run's
    page.locator("#train-start").click()

    def started() -> str:  # "will it learn?" warnings (2 steps on 3 pairs) hold Start until Start anyway
        if page.locator("#train-anyway").is_visible():
            page.locator("#train-anyway").click()
        return status.inner_text()

    ends = ("Training", "Finished", "failed", "Cannot start")
    text = poll(started, lambda t: t != before and any(word in t for word in ends), 240, "the DPO run starts")
    assert "Cannot start" not in text and "failed" not in text, text  # the form as a person leaves it trains
    expect(status).to_contain_text("Finished", timeout=SLOW)
    runs = [r for r in runs_dir.iterdir() if (r / "config.yaml").is_file()]
    dpo = [
        r for r in runs if yaml.safe_load((r / "config.yaml").read_text(encoding="utf-8")).get("objective") == "dpo"
    ]
    assert len(dpo) == 1, [r.name for r in runs]
    cfg = yaml.safe_load((dpo[0] / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["data"]["path"] == str(file) and cfg["model"]["name_or_path"] == str(tiny_model_dir)
    events = [json.loads(line) for line in (dpo[0] / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert events[-1]["type"] == "finished" and events[-1].get("step") == 2, events[-1]
    assert any(e["type"] == "log" and "loss" in e for e in events), [e["type"] for e in events]
    top(page)
    shot(page, "votes-dpo-run")
