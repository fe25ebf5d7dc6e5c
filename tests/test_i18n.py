"""Every UI string exists in English and Chinese, and the language switch relabels every bound component."""

from __future__ import annotations

import importlib
import json
import re

import gradio as gr
import pytest

from app.ui import app as ui_app
from app.ui import i18n

TAB_IDS = [key for key, _ in ui_app.TABS]


def _import_tabs() -> list[str]:
    """Every tab module of TABS, imported (each registers its strings): a missing one fails here."""
    for _, name in ui_app.TABS:
        importlib.import_module(name)
    return [name for _, name in ui_app.TABS]


def test_every_key_has_english_and_chinese():
    assert len(_import_tabs()) == 6
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


# Labels that are names, not prose: a Chat column shows the model it answers for ("base", "#1" until loaded, then
# the adapter's name), the same in every language.
_NAMES = {("Chatbot", "label")}


def _components(demo: gr.Blocks, tab_id: str):
    return [b for b in _walk(_tab(demo, tab_id)) if isinstance(b, gr.components.Component)]


def _follows_language(ctx, component) -> bool:
    """The language selector's change event outputs `component` (i18n.keep_result_on_switch: a status line that
    later shows a result keeps it; a tab that redraws its panels in the new language), not the relabelling of bound
    components, which sends a text only for the keys bound."""
    switch, relabel = (ctx.lang_selector._id, "change"), ctx.tr.components()
    return any(
        switch in fn.targets and component in fn.outputs and fn.outputs != relabel for fn in ctx.demo.fns.values()
    )


def test_every_tab_of_the_app_is_checked(built):
    demo, _ = built
    [tabs] = [b for b in demo.blocks.values() if isinstance(b, gr.Tabs) and b.elem_id == "tabs"]
    assert [b.id for b in tabs.children if isinstance(b, gr.Tab)] == TAB_IDS


@pytest.mark.parametrize("tab_id", TAB_IDS)
def test_every_labelled_control_of_every_tab_is_bound(built, tab_id):
    """A label, info or placeholder text that the switch would not touch stays English in the Chinese UI."""
    demo, ctx = built
    bound = {id(b.component): b for b in ctx.tr.bindings}
    for block in _components(demo, tab_id):
        kind = type(block).__name__
        binding = bound.get(id(block))
        for attr in ("label", "info", "placeholder"):
            text = getattr(block, attr, None)
            if not isinstance(text, str) or not text.strip() or (kind, attr) in _NAMES:
                continue
            keys = [getattr(binding, attr, None)] + [binding.value] * ((kind, "value") in i18n._LABEL_IS_TEXT)
            assert binding is not None and any(keys), f"{tab_id}: {kind} {attr}={text!r} is not translated"


@pytest.mark.parametrize("tab_id", TAB_IDS)
def test_every_text_a_tab_shows_follows_the_language(built, tab_id):
    """A button caption, a heading or a status line with words in it is bound to its key, or (a status line that
    later shows a result) relabelled by its own language-switch event."""
    demo, ctx = built
    bound = {id(b.component) for b in ctx.tr.bindings if b.value}
    for block in _components(demo, tab_id):
        if not isinstance(block, (gr.Button, gr.Markdown, gr.HTML)):
            continue
        text = re.sub(r"<[^>]*>", "", block.value) if isinstance(block.value, str) else ""
        if re.search(r"[^\W\d_]", text) and id(block) not in bound:
            assert _follows_language(ctx, block), f"{tab_id}: {type(block).__name__} {text[:60]!r} stays English"


@pytest.mark.parametrize("tab_id", TAB_IDS)
def test_every_control_of_every_tab_has_an_info_line(built, tab_id):
    demo, _ = built
    inputs = (gr.Number, gr.Slider, gr.Dropdown, gr.Checkbox, gr.CheckboxGroup, gr.Textbox, gr.Radio)
    for block in _components(demo, tab_id):
        if isinstance(block, inputs) and block.interactive is not False:
            assert block.info, f"{tab_id}: {type(block).__name__} {block.label!r} has no info text"


def test_a_status_line_follows_the_language_while_idle_and_keeps_a_result():
    importlib.import_module("app.ui.chat_tab")  # registers chat.idle
    switch = i18n.keep_result("chat.idle")
    assert switch("zh", i18n.t("chat.idle", "en")) == i18n.t("chat.idle", "zh")
    assert switch("en", i18n.t("chat.idle", "zh")) == i18n.t("chat.idle", "en")
    assert switch("zh", None) == i18n.t("chat.idle", "zh")
    kept = switch("zh", "✅ Loaded on cpu: base, my-run.")
    assert kept is not None and not isinstance(kept, str)  # gr.skip(): the result stays as shown


def test_labelled_and_text_build_and_bind_in_one_call():
    i18n.add({"test.widget": ("Rank", "秩"), "test.widget.info": ("Higher = more", "越高越多")})
    tr = i18n.Translator("zh")
    with gr.Blocks():
        number = tr.labelled(gr.Number, "test.widget", info=True, value=8)
        plain = tr.labelled(gr.Number, "test.widget")
        button = tr.text(gr.Button, "test.widget", size="sm")
    assert (number.label, number.info, number.value) == ("秩", "越高越多", 8)
    assert plain.info is None and button.value == "秩"
    bindings = {id(b.component): b for b in tr.bindings}
    assert (bindings[id(number)].label, bindings[id(number)].info) == ("test.widget", "test.widget.info")
    assert bindings[id(plain)].info is None and bindings[id(button)].value == "test.widget"
    assert tr.updates("en")[number] == gr.update(label="Rank", info="Higher = more")


# ---- figures: every word of a plot comes from the page's language ---------------------------------------------------
def test_the_training_plot_takes_every_word_from_the_train_tab():
    from app.ui import plots

    importlib.import_module("app.ui.train_tab")  # registers train.plot.*
    assert [k for k in plots.TRAINING_LABELS if f"train.plot.{k}" not in i18n.STRINGS] == []
    marked = {key: f"<{key}>" for key in plots.TRAINING_LABELS}
    fig = plots.training_figure([1, 2], [2.0, 1.5], [2], [1.8], [1e-4, 2e-4], marked)
    layout = fig.layout
    words = [trace.name for trace in fig.data] + [
        axis.title.text for axis in (layout.xaxis, layout.yaxis, layout.yaxis2)
    ]
    assert [w for w in words if w not in marked.values()] == []


def test_the_memory_bar_names_its_parts_in_the_page_language():
    from ui_ctx import tab_context, values_of

    from app import memory

    model_tab = importlib.import_module("app.ui.model_tab")
    assert [k for k in memory.BREAKDOWN_KEYS if f"model.part.{k}" not in i18n.STRINGS] == []
    assert {k: i18n.t(f"model.part.{k}", "en") for k in memory.BREAKDOWN_KEYS} == dict(memory.LABELS)
    _, ctx = tab_context(["model"], "smollm2-135m-instruct", lang="zh")
    out = model_tab.estimate_panel(ctx, values_of(ctx))
    names = [bar["name"] for bar in json.loads(out[ctx.model.plot].plot)["data"]]
    chinese = {i18n.t(f"model.part.{k}", "zh") for k in memory.BREAKDOWN_KEYS}
    assert names and set(names) <= chinese, names
