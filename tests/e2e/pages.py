"""Page helpers every browser test uses: one home for how a test opens a tab, types into a gr.Number, picks a
dropdown option, edits the placeholder table or waits for a value (the e2e files once carried five copies)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def app_home(runs_dir: Path) -> Path:
    """The shared e2e app's own $TUNEDESK_HOME (conftest.app_server): its last form, recent files and uploads."""
    return Path(runs_dir).parent / f"{Path(runs_dir).name}-home"


def last_form_file(runs_dir: Path) -> Path:
    """Where the shared e2e app saves the form it last showed (app.last_form)."""
    return app_home(runs_dir) / "last-form.yaml"


def expect_():
    from playwright.sync_api import expect

    return expect


def md(page, elem_id: str):
    """The rendered text of a gr.Markdown (without the queue/progress text of its status tracker)."""
    return page.locator(f"#{elem_id} [data-testid=markdown]")


def open_tab(page, key: str) -> None:
    page.locator(f"#tab-{key}-button").click()
    expect_()(page.locator(f"#tab-{key}")).to_be_visible()


def open_accordion(page, title: str) -> None:
    page.get_by_role("button", name=title).click()  # its name also holds the open/closed arrow


def number_box(page, elem_id: str):
    return page.locator(f"#{elem_id} input[type=number]")


def text_box(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first


def set_number(page, elem_id: str, value: int) -> None:
    """Type into a gr.Number, or the number box of a gr.Slider, and commit it (Enter)."""
    box = number_box(page, elem_id)
    expect_()(box).to_be_visible()
    # A slider just revealed by opening its accordion can still be mounting: its first value may overwrite what
    # was typed a moment earlier (seen on a quiet machine, where the test types fast). Type until it holds.
    for _ in range(10):
        box.fill(str(value))
        box.press("Enter")
        time.sleep(0.3)
        if box.input_value() == str(value):
            break
    expect_()(box).to_have_value(str(value))


def set_text(page, elem_id: str, value: str) -> None:
    box = text_box(page, elem_id)
    box.fill(value)
    box.blur()
    expect_()(box).to_have_value(value)


def pick_option(page, elem_id: str, name: str) -> None:
    """Choose `name` in a gr.Dropdown (single or multiselect) and close its list."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.keyboard.press("Escape")


def options(page, elem_id: str) -> list[str]:
    """The choices a gr.Dropdown offers right now: open its list, read it, close it (no Refresh pressed)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    names = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    box.blur()  # a focused dropdown ignores new choices (Gradio 6): let the page's timer redraw it
    return [n.strip() for n in names]


def placeholders(page) -> dict[str, str]:
    """The Data tab's placeholder table as {key: text} (open its accordion first)."""
    grid = page.locator("#data-placeholders")
    rows = grid.locator("[role=row][data-index]").count()
    cell = lambda r, c: grid.locator(f"[data-testid=cell-{r}-{c}]").inner_text().strip()  # noqa: E731
    return {cell(r, 0): cell(r, 1) for r in range(rows)}


def set_placeholder(page, key: str, text: str) -> None:
    grid = page.locator("#data-placeholders")
    rows = grid.locator("[role=row][data-index]")
    expect_()(rows.first).to_be_visible()
    keys = [grid.locator(f"[data-testid=cell-{r}-0]").inner_text().strip() for r in range(rows.count())]
    assert key in keys, f"no placeholder row {key!r}: {keys}"
    cell = grid.locator(f"[data-testid=cell-{keys.index(key)}-1]")
    cell.dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    expect_()(cell).to_contain_text(text)


def scroll_to(page, selector: str) -> None:
    """Put `selector` at the top of the view (README shots are viewport-sized)."""
    page.locator(selector).first.evaluate("e => e.scrollIntoView({block: 'start'})")


def top(page) -> None:
    page.evaluate("window.scrollTo(0, 0)")


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float, what: str, every_s: float = 1.0):
    """Read until done(value) or fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached in {timeout_s:.0f} s; last value {value!r}")
        time.sleep(every_s)
        value = read()
    return value


def last_answer(page, column: int) -> str:
    """The newest answer in the Chat tab's column `column` ("" before any)."""
    bots = page.locator(f"#chat-col-{column} [data-testid=bot]")
    return bots.last.inner_text() if bots.count() else ""


def settled_answers(page, columns: list[int], timeout_s: float) -> list[str]:
    """Every column's answer once all are non-empty and unchanged over two reads (streaming ended)."""
    seen: list[list[str]] = []

    def settled(value: list[str]) -> bool:
        seen.append(value)
        return all(v.strip() for v in value) and len(seen) >= 2 and seen[-2] == value

    return poll(lambda: [last_answer(page, c) for c in columns], settled, timeout_s, "settled answers", every_s=1.5)
