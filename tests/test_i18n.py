"""Every UI string exists in English and Chinese, and the language switch relabels every bound component."""

from __future__ import annotations

import importlib

import gradio as gr
import pytest

from app.ui import app as ui_app
from app.ui import i18n


def _import_tabs() -> list[str]:
    found = []
    for _, name in ui_app.TABS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        found.append(name)
    return found


def test_every_key_has_english_and_chinese():
    assert "app.ui.train_tab" in _import_tabs()
    assert i18n.missing_keys() == []
    assert len(i18n.STRINGS) > 100


def test_a_key_registered_twice_with_other_text_is_refused():
    i18n.add({"test.twice": ("Same", "相同")})
    i18n.add({"test.twice": ("Same", "相同")})  # identical: fine (modules may be imported twice)
    with pytest.raises(ValueError, match="test.twice"):
        i18n.add({"test.twice": ("Other", "不同")})


@pytest.fixture(scope="module")
def built():
    return ui_app.build_blocks("en")


def test_switching_to_chinese_relabels_every_bound_component(built):
    _, ctx = built
    updates = ui_app._switch(ctx.tr, "zh")
    try:
        assert set(updates) == set(ctx.tr.components())
        changed = 0
        for binding in ctx.tr.bindings:
            update = updates[binding.component]
            for attr in ("label", "info", "value", "placeholder"):
                key = getattr(binding, attr)
                if key is None:
                    continue
                sent = i18n._LABEL_IS_TEXT.get((type(binding.component).__name__, attr), attr)
                assert update[sent] == i18n.t(key, "zh"), f"{key} ({attr})"
                shown = getattr(binding.component, sent, None)
                if i18n.t(key, "en") != i18n.t(key, "zh"):
                    assert update[sent] != shown, f"{key} ({attr}) did not change"
                    changed += 1
        assert changed > 100
    finally:
        ui_app._switch(ctx.tr, "en")


def test_every_switch_update_is_accepted_by_its_component(built):
    """Gradio postprocesses an update's value with the component's own postprocess; one that raises (a caption
    sent as an UploadButton's file) fails the whole switch, so nothing changes language in the browser."""
    _, ctx = built
    updates = ui_app._switch(ctx.tr, "zh")
    try:
        for component, update in updates.items():
            if "value" in update:
                component.postprocess(update["value"])
    finally:
        ui_app._switch(ctx.tr, "en")


def _walk(block):
    yield block
    for child in getattr(block, "children", []) or []:
        yield from _walk(child)


def _tab(demo: gr.Blocks, tab_id: str):
    return next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.id == tab_id)


@pytest.mark.parametrize("tab_id", ["model", "train"])
def test_every_labelled_control_of_my_tabs_is_bound(built, tab_id):
    """A label or info text that the switch would not touch stays English in the Chinese UI."""
    demo, ctx = built
    bound = {id(b.component): b for b in ctx.tr.bindings}
    try:
        tab = _tab(demo, tab_id)
    except StopIteration:
        pytest.skip(f"the {tab_id} tab is not built yet")
    for block in _walk(tab):
        if not isinstance(block, gr.components.Component):
            continue
        for attr in ("label", "info"):
            text = getattr(block, attr, None)
            if isinstance(text, str) and text.strip():
                binding = bound.get(id(block))
                assert binding is not None and getattr(binding, attr), f"{type(block).__name__} {attr}={text!r}"


@pytest.mark.parametrize("tab_id", ["model", "train"])
def test_every_control_of_my_tabs_has_an_info_line(built, tab_id):
    demo, _ = built
    try:
        tab = _tab(demo, tab_id)
    except StopIteration:
        pytest.skip(f"the {tab_id} tab is not built yet")
    inputs = (gr.Number, gr.Slider, gr.Dropdown, gr.Checkbox, gr.CheckboxGroup, gr.Textbox, gr.Radio)
    for block in _walk(tab):
        if isinstance(block, inputs) and block.interactive is not False:
            assert block.info, f"{type(block).__name__} {block.label!r} has no info text"


def test_a_status_line_follows_the_language_while_idle_and_keeps_a_result():
    importlib.import_module("app.ui.chat_tab")  # registers chat.idle
    switch = i18n.keep_result("chat.idle")
    assert switch("zh", i18n.t("chat.idle", "en")) == i18n.t("chat.idle", "zh")
    assert switch("en", i18n.t("chat.idle", "zh")) == i18n.t("chat.idle", "en")
    assert switch("zh", None) == i18n.t("chat.idle", "zh")
    kept = switch("zh", "✅ Loaded on cpu: base, my-run.")
    assert kept is not None and not isinstance(kept, str)  # gr.skip(): the result stays as shown
