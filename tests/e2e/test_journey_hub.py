"""The Hub journey in a real browser (issue 15): on the Model tab, search the Hub for the tiny model, pick its row,
Download it (the bar ends full), and Load it; on the Data tab, get one config of a Hub dataset and see it validated;
both from an app pointed at the stand-in Hub (conftest.hub_app).

~20 s after the app is up on a quiet 2-core machine (the load imports torch in the app the first time)."""

from __future__ import annotations

import pytest
from apprunner import page_url
from hubstub import TINY_MODEL

from app import memory
from e2e.pages import expect_, md, open_accordion, open_tab, pick_option, text_box

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOW = 240_000  # ms: the first search and load wait for the app's imports on a busy 2-core machine


@pytest.fixture()
def page(browser, hub_app):
    """A page of the app pointed at the stand-in Hub, in a context of its own (closed after the test)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(page_url(hub_app[0]))
    yield pg
    context.close()
    context.close()


def test_search_download_and_load_the_tiny_model_from_the_hub(page, hub_app, tiny_model_dir, shot):
    expect = expect_()
    params = memory.architecture_from(str(tiny_model_dir)).total_params
    stub = hub_app[1]
    open_tab(page, "model")
    # the first estimate (sized for the sample data) drawn: a slower redraw of the default model would otherwise
    # land after the picked model's
    expect(md(page, "estimate-sized")).to_contain_text("Sized for your data (", timeout=SLOW)
    open_accordion(page, "Find a model on the Hugging Face Hub")
    query = text_box(page, "hub-query")
    query.fill("tiny-llama")
    query.press("Enter")
    results = page.locator("#hub-results")
    expect(results).to_contain_text(TINY_MODEL, timeout=SLOW)
    expect(md(page, "hub-status")).to_contain_text("models found")
    results.get_by_text(TINY_MODEL, exact=True).click()
    expect(page.locator("#f-model-name_or_path input")).to_have_value(TINY_MODEL)
    # before any weight is downloaded, the estimate is the picked model's (its config.json, fetched by the search)
    expect(md(page, "estimate-trainable")).to_contain_text(f"of {params:,}", timeout=SLOW)
    results.scroll_into_view_if_needed()
    shot(page, "hub-search", readme=True)
    page.locator("#hub-download").click()
    expect(md(page, "hub-status")).to_contain_text("Downloaded", timeout=SLOW)
    expect(page.locator("#hub-progress .td-finished")).to_be_visible()
    shot(page, "journey-hub-downloaded")
    page.locator("#tab-model").get_by_role("button", name="Load", exact=True).click()
    status = page.locator("#tab-model .td-status").first
    expect(status).to_contain_text(f"Loaded {TINY_MODEL}", timeout=SLOW)
    shot(page, "journey-hub-loaded")
    assert stub.requested("model.safetensors") and not stub.requested("pytorch_model.bin")


def test_a_hub_dataset_shows_its_configs_downloads_and_validates_in_the_data_tab(page, hub_app, shot):
    """Data tab: a Hub dataset id, its configs, Download and use, and the records validated and previewed."""
    from hubstub import CONFIGS_DATASET

    expect = expect_()
    stub = hub_app[1]
    open_tab(page, "data")
    open_accordion(page, "Hugging Face Hub")
    text_box(page, "data-hub-repo").fill(CONFIGS_DATASET)
    page.locator("#data-hub-show").click()
    expect(md(page, "data-hub-status")).to_contain_text("2 config(s)", timeout=SLOW)
    pick_option(page, "data-hub-config", "zh")
    page.locator("#data-hub-get").click()
    expect(md(page, "data-hub-status")).to_contain_text("Downloaded", timeout=SLOW)
    expect(md(page, "data-status")).to_contain_text("4 valid", timeout=SLOW)
    expect(page.locator("#data-table")).to_contain_text("计算 0 加 1。")
    shot(page, "journey-hub-dataset")
    assert stub.requested("zh/train.json") and not stub.requested("en/train.json")  # only the config asked for
