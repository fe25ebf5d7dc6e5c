"""The newcomer's first run in a real browser (issue 14, item 1): the Train tab's suggested first run, the identity
demo, with a name of the user's choosing, trains with its defaults; the finished run is in the Chat tab's list without
pressing Refresh, and there the adapter answers "Who are you?" with the chosen name while the base does not.

~4-6 minutes on a busy 2-core machine: 12 training steps of the default model (about 2 minutes quiet) and two chat
answers. Runs after test_journey.py (file order), on the same app.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from e2e.pages import (
    expect_,
    md,
    open_accordion,
    open_tab,
    options,
    pick_option,
    poll,
    set_number,
    set_placeholder,
    settled_answers,
    top,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME, AUTHOR = "Orion", "Nova Labs"  # not the preset's TuneBot: the chat must answer with what the user typed
TRAIN_S = 900  # 12 steps at up to ~30 s each on a 2-core machine shared with other tests, plus loading and saving


def test_the_identity_demo_teaches_the_chosen_name(page, app_server, shot):
    expect, runs_dir = expect_(), Path(app_server[1])
    open_tab(page, "train")
    expect(page.locator("#train-use-identity")).to_be_visible()  # the suggested first run, on show
    page.locator("#train-use-identity").click()
    expect(md(page, "train-status")).to_contain_text("TuneBot", timeout=180_000)  # ~45 s on a busy 2-core CPU

    open_tab(page, "data")
    open_accordion(page, "Placeholders")
    set_placeholder(page, "name", NAME)
    set_placeholder(page, "author", AUTHOR)

    open_tab(page, "train")
    page.locator("#train-start").click()
    status = md(page, "train-status")
    expect(status).to_contain_text("Training", timeout=120_000)  # not held at "does not fit": it fits
    expect(page.locator("#train-nofit")).to_be_hidden()
    expect(status).to_contain_text("Finished", timeout=TRAIN_S * 1000)
    run = re.search(r"\d{8}-\d{6}-\S*identity\S*", status.inner_text()).group(0).strip("*`.")
    cfg = yaml.safe_load((runs_dir / run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["data"]["path"] == "assets/identity.json", cfg["data"]
    assert cfg["data"]["placeholders"] == {"name": NAME, "author": AUTHOR}
    assert cfg["method"] == "lora" and cfg["train"]["max_steps"] == 12 and cfg["train"]["packing"] is True
    events = [json.loads(line) for line in (runs_dir / run / "events.jsonl").read_text().splitlines()]
    finished = [e for e in events if e["type"] == "finished"]
    assert finished and finished[0]["step"] == 12, events[-1]
    print(f"\nidentity demo in the browser: {finished[0].get('train_s', 0):.0f} s of training")
    verdict = md(page, "train-learned-verdict")  # did it learn? shown under the plot once the run ends
    expect(verdict).to_contain_text("It learned", timeout=30_000)
    expect(page.locator("#train-learned-table")).to_contain_text(NAME)  # a tuned answer uses the new name
    top(page)
    shot(page, "identity-trained")

    open_tab(page, "chat")  # no Refresh: the list follows the runs by itself
    option = poll(lambda: _adapter_option(page, run), bool, 90, f"{run} among the chat adapters", every_s=4)
    pick_option(page, "chat-adapters", option)
    page.locator("#chat-load").click()
    expect(md(page, "chat-status")).to_contain_text("Loaded", timeout=240_000)
    open_accordion(page, "Sampling (shared by all columns)")
    set_number(page, "chat-max_new_tokens", 32)
    page.locator("#chat-prompt textarea").fill("Who are you?")
    page.locator("#chat-send").click()
    base, adapter = settled_answers(page, [0, 1], 240)
    assert NAME in adapter, adapter
    assert NAME not in base, base
    print(f"base: {base!r}\nadapter: {adapter!r}")
    top(page)
    shot(page, "identity-chat", readme=True)


def _adapter_option(page, run: str) -> str:
    """The chat adapter picker's option for `run`'s final adapter ("" while the list does not have it)."""
    return next((n for n in options(page, "chat-adapters") if n.startswith(run) and "checkpoint" not in n), "")
