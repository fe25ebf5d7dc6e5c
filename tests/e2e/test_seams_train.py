"""The form's state in a real browser (issue 14, items 3 and 4): settings changed on several tabs survive a page
refresh, a run trained from the command line appears in the Train tab's run list without pressing Refresh, and
Open on it puts its settings back on every tab.

The finished run is a real one: `python -m app train` on the default model, 1 step, started when the module begins
so it trains while the browser checks the refresh (~1-2 minutes on a busy 2-core machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.pages import (
    expect_,
    last_form_file,
    md,
    number_box,
    open_accordion,
    open_tab,
    placeholders,
    poll,
    set_number,
    set_placeholder,
    set_text,
    text_box,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SLOW = 240_000  # ms
OPENED = {  # the CLI run's settings, all different from the defaults and from what the refresh test types
    "data": {
        "path": "assets/sample_data.json",
        "placeholders": {"name": "Opal", "author": "Open Test"},
        "max_seq_len": 64,
        "max_samples": 4,
        "val_size": 0.0,
    },
    "lora": {"rank": 4},
    "train": {
        "max_steps": 1,
        "batch_size": 1,
        "grad_accum": 3,
        "save_steps": 0,
        "gradient_checkpointing": False,
        "run_name": "e2e-opened",
        "sample_prompts": ["Who made you?"],
    },
}


@pytest.fixture(scope="module")
def cli_run(app_server, tmp_path_factory) -> Any:
    """`python -m app train` of OPENED into the app's runs folder, started now; yields the process."""
    config = tmp_path_factory.mktemp("cli") / "opened.yaml"
    config.write_text(yaml.safe_dump(OPENED), encoding="utf-8")
    env = {**os.environ, "TUNEDESK_RUNS": str(app_server[1]), "HF_HUB_OFFLINE": "1"}
    log = open(config.with_suffix(".log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "train", str(config)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    yield proc, config.with_suffix(".log")
    if proc.poll() is None:
        proc.terminate()
        proc.wait(30)
    log.close()


# ---- page helpers (as in test_journey) --------------------------------------------------------------------------


def data_loaded(page) -> None:
    """The Data tab's page-load preview has finished (its status names the dataset file)."""
    expect_()(md(page, "data-status")).to_contain_text(".json", timeout=SLOW)


def saved_form(runs_dir: Path) -> dict:
    """The app's last form (app.last_form, in the shared e2e app's own home)."""
    path = last_form_file(runs_dir)
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


LOGGING = "Logging, checkpoints and samples"
PROMPTS = "Who are you?\nWho made you?"


def test_a_refresh_keeps_every_field_on_every_tab(page, app_server, cli_run, shot):
    expect, runs_dir = expect_(), Path(app_server[1])
    open_tab(page, "data")
    data_loaded(page)  # the page-load preview redraws the placeholder table: edit it after that, not before
    set_text(page, "f-data-path", "assets/identity.json")
    open_accordion(page, "Placeholders")
    set_placeholder(page, "name", "Ada")
    set_placeholder(page, "author", "Lovelace Labs")
    open_tab(page, "train")
    set_number(page, "f-train-max_steps", 30)
    set_number(page, "f-train-grad_accum", 2)
    open_accordion(page, LOGGING)
    set_text(page, "f-train-run_name", "kept-over-refresh")
    set_text(page, "f-train-sample_prompts", PROMPTS)

    def stored(form: dict) -> bool:
        data, train = form.get("data") or {}, form.get("train") or {}
        return (
            data.get("path") == "assets/identity.json"
            and data.get("placeholders") == {"name": "Ada", "author": "Lovelace Labs"}
            and (train.get("max_steps"), train.get("grad_accum"), train.get("run_name"))
            == (30, 2, "kept-over-refresh")
            and train.get("sample_prompts") == PROMPTS.splitlines()
        )

    poll(lambda: saved_form(runs_dir), stored, 60, "the form saved after the last change")

    page.reload()
    open_tab(page, "data")
    data_loaded(page)
    expect(text_box(page, "f-data-path")).to_have_value("assets/identity.json")
    open_accordion(page, "Placeholders")
    expect(page.locator("#data-placeholders [data-testid=cell-0-0]")).to_be_visible()
    assert placeholders(page) == {"name": "Ada", "author": "Lovelace Labs"}
    open_tab(page, "train")
    expect(number_box(page, "f-train-max_steps")).to_have_value("30")
    expect(number_box(page, "f-train-grad_accum")).to_have_value("2")
    open_accordion(page, LOGGING)
    expect(text_box(page, "f-train-run_name")).to_have_value("kept-over-refresh")
    expect(text_box(page, "f-train-sample_prompts")).to_have_value(PROMPTS)
    shot(page, "seams-train-refresh")


def test_a_cli_run_appears_by_itself_and_open_restores_its_settings(page, app_server, cli_run, shot):
    expect, runs_dir = expect_(), Path(app_server[1])
    proc, log = cli_run
    try:
        code = proc.wait(600)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m app train did not finish in 600 s; its log:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]
    [run] = [p.name for p in runs_dir.iterdir() if p.is_dir() and p.name.endswith("e2e-opened")]

    open_tab(page, "train")
    table = page.locator("#run-table")
    expect(table).to_contain_text(run, timeout=30_000)  # the timer redraws the list: no Refresh pressed
    page.locator("#run-pick input").click()
    page.get_by_role("option", name=run, exact=True).click()
    page.keyboard.press("Escape")
    page.locator("#tab-train").get_by_role("button", name="Open", exact=True).click()
    expect(md(page, "train-status")).to_contain_text(f"Opened {run}", timeout=60_000)

    expect(number_box(page, "f-train-max_steps")).to_have_value("1")
    expect(number_box(page, "f-train-grad_accum")).to_have_value("3")
    expect(number_box(page, "f-train-batch_size")).to_have_value("1")
    open_accordion(page, LOGGING)
    expect(text_box(page, "f-train-run_name")).to_have_value("e2e-opened")
    expect(text_box(page, "f-train-sample_prompts")).to_have_value("Who made you?")
    open_tab(page, "model")
    expect(number_box(page, "f-lora-rank")).to_have_value("4")
    open_tab(page, "data")
    expect(text_box(page, "f-data-path")).to_have_value("assets/sample_data.json")
    expect(number_box(page, "f-data-max_seq_len")).to_have_value("64")
    open_accordion(page, "Placeholders")
    expect(page.locator("#data-placeholders [data-testid=cell-0-0]")).to_be_visible()
    poll(lambda: placeholders(page), lambda p: p == OPENED["data"]["placeholders"], 30, "the run's placeholders")
    shot(page, "seams-train-opened")


def test_reset_all_settings_is_the_way_back_to_the_defaults(page, app_server):
    """The last form outlives refreshes and restarts; Reset puts every tab back (and leaves the shared app clean
    for the tests after this one)."""
    expect, runs_dir = expect_(), Path(app_server[1])
    open_tab(page, "train")
    page.locator("#train-reset-form").click()
    expect(md(page, "train-status")).to_contain_text("back to its default", timeout=60_000)
    # every widget's change saves the form as it stands: wait for the save with all of them back, not the first
    from app.config import RunConfig

    defaults = RunConfig().to_dict()["train"]
    poll(lambda: saved_form(runs_dir).get("train") or {}, lambda t: t == defaults, 60, "the defaults saved")
    page.reload()
    open_tab(page, "train")
    expect(number_box(page, "f-train-grad_accum")).to_have_value("4")
    open_accordion(page, LOGGING)
    expect(text_box(page, "f-train-run_name")).to_have_value("")
