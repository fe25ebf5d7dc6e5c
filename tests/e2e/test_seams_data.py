"""The Data tab's seams in a real browser (issue 14, item 9): the Records and Problems tables fit their pane, an
upload shows its own name, and the picker offers the bundled sample, the identity demo and recent files.

The app runs with a home of its own ($TUNEDESK_HOME, the default model linked in), so the uploads and the
recent-files list these tests make never reach the user's ~/.cache/tunedesk. ~1.5 minutes on a quiet 2-core
machine, most of it the app start.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from apprunner import page_url, running_app

from app import paths
from e2e.pages import expect_

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOADED = re.compile(r"\.json: \w+, \d+ records")  # a summary line: some dataset is loaded
SLOW = 240_000  # ms: the first load tokenizes the sample on a shared 2-core machine
PROBLEMS = [
    {"instruction": "", "output": "x"},  # an error: empty instruction
    {"instruction": "Hi {{name}}", "output": "Hello."},  # a warning with a long reason
    {"instruction": "What is 2+2?", "output": "4"},
]


@pytest.fixture(scope="module")
def data_app(browser, tmp_path_factory):
    """(url, home): the app with its own runs folder and home; the converted default model is linked in."""
    home = tmp_path_factory.mktemp("e2e-data-home")
    models = paths.models_dir()
    if models.is_dir():
        os.symlink(models, home / "models")
    env = {"TUNEDESK_RUNS": str(tmp_path_factory.mktemp("e2e-data-runs")), "TUNEDESK_HOME": str(home)}
    log = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e" / "app-data.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with running_app(env=env, log_path=log, timeout=240) as (url, _proc):
        yield url, home


@pytest.fixture()
def data_page(browser, data_app):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(page_url(data_app[0]))
    pg.locator("#tab-data-button").click()
    yield pg
    context.close()


def status(page):
    return page.locator("#data-status [data-testid=markdown]")


def rows(page, table: str):
    """The table's body rows as drawn (Gradio's virtual body; its hidden sizing table is not what one sees)."""
    return page.locator(f"{table} .virtual-body [role=row]")


def box(locator) -> tuple[float, float]:
    b = locator.bounding_box()
    assert b is not None, locator
    return b["x"], b["x"] + b["width"]


def assert_fits(page, table: str, column: str) -> None:
    """`column`'s header and first cell lie inside the table's pane, and nothing in it scrolls sideways."""
    pane = page.locator(table)
    left, right = box(pane)
    headers = pane.get_by_role("columnheader")
    expect_()(headers.first).to_be_visible()
    names = [n.strip() for n in headers.all_inner_texts()]
    assert column in names, names
    header = headers.nth(names.index(column))
    cell = rows(page, table).first.get_by_role("gridcell").nth(names.index(column))
    for part in (header, cell):
        start, end = box(part)
        assert left - 1 <= start and end <= right + 1, (column, (start, end), (left, right))
    sideways = pane.evaluate(
        """t => [...t.querySelectorAll('.table-wrap, .virtual-table-viewport, .virtual-body')]
               .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 2).length"""
    )
    assert sideways == 0, f"{table} scrolls sideways"


def test_records_and_problems_tables_fit_their_pane(data_page, tmp_path, shot):
    page, expect = data_page, expect_()
    expect(status(page)).to_contain_text("sample_data.json", timeout=SLOW)  # shown on page load
    expect(rows(page, "#data-table").nth(5)).to_be_visible()
    assert_fits(page, "#data-table", "output")  # ~1,900 px wide in a 720 px pane before: output off-screen
    assert_fits(page, "#data-table", "instruction")
    shot(page, "seams-data-records")

    bad = tmp_path / "problems.json"
    bad.write_text(json.dumps(PROBLEMS), encoding="utf-8")
    page.locator("#f-data-path textarea").fill(str(bad))
    page.locator("#data-load").click()
    expect(status(page)).to_contain_text("problems.json", timeout=SLOW)
    page.locator("#tab-data button[role=tab]", has_text="Problems").click()
    expect(rows(page, "#data-problem-table").nth(1)).to_be_visible()
    assert_fits(page, "#data-problem-table", "reason")
    reason = rows(page, "#data-problem-table").nth(1).get_by_role("gridcell").last
    expect(reason).to_contain_text("{{name}}")  # the whole reason is there, wrapped, not cut
    assert reason.evaluate("td => td.scrollWidth <= td.clientWidth + 2 && td.scrollHeight <= td.clientHeight + 2")
    shot(page, "seams-data-problems")


def test_upload_shows_its_own_name_and_the_picker_offers_it_with_the_bundled_data(data_page, tmp_path, shot):
    page, expect = data_page, expect_()
    expect(status(page)).to_contain_text(LOADED, timeout=SLOW)  # the saved form's dataset, whichever it is
    mine = tmp_path / "my_data.json"
    mine.write_text(json.dumps([{"instruction": "Who are you?", "output": "I am Ada."}] * 3), encoding="utf-8")
    with page.expect_file_chooser() as chooser:
        page.locator("#data-upload").click()
    chooser.value.set_files(str(mine))
    expect(status(page)).to_contain_text("my_data.json", timeout=SLOW)
    expect(status(page)).to_contain_text("3 valid", timeout=SLOW)
    picker = page.locator("#data-picker input")
    expect(picker).to_have_value("my_data.json (uploaded)")
    for text in (status(page).inner_text(), picker.input_value()):
        assert "tunedesk-" not in text and "/tmp" not in text and "uploads/" not in text, text

    typed = tmp_path / "typed.json"  # a file loaded by its path is a recent file too
    typed.write_text(json.dumps([{"instruction": "Hi", "output": "Hello."}]), encoding="utf-8")
    page.locator("#f-data-path textarea").fill(str(typed))
    page.locator("#data-load").click()
    expect(status(page)).to_contain_text("typed.json", timeout=SLOW)

    page.reload()  # remembered: a fresh page (and a restarted app: the list is a file) offers it again
    page.locator("#tab-data-button").click()
    expect(status(page)).to_contain_text(LOADED, timeout=SLOW)
    page.locator("#data-picker input").click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    names = [n.replace("✓", "").strip() for n in options.all_inner_texts()]  # ✓ marks the chosen one
    assert names[:2] == [
        "sample_data.json (bundled sample)",
        "identity.json (identity demo: teaches the model its name)",
    ], names
    assert "my_data.json (uploaded)" in names, names
    assert f"typed.json (in {typed.parent})" in names, names
    shot(page, "seams-data-picker")
    page.get_by_role("option", name="identity.json (identity demo: teaches the model its name)").click()
    expect(status(page)).to_contain_text("identity.json", timeout=SLOW)
    expect(page.locator("#f-data-path textarea")).to_have_value("assets/identity.json")  # what Start will read
