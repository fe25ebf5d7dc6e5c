"""The app shell: every tab builds, tab modules are wired after all tabs exist, and `python -m app ui` serves its
page with the tab names (a real server in a subprocess; no browser)."""

from __future__ import annotations

import gradio as gr
import pytest
from apprunner import get, running_app, served_config, tab_labels

from app.ui import app as ui_app

TAB_LABELS = ["Model", "Data", "Train", "Chat", "Evaluate", "Export"]


def _tab_labels(demo: gr.Blocks) -> list[str]:
    return [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.id in dict(ui_app.TABS)]


def test_build_app_has_every_tab_in_order():
    demo, ctx = ui_app.build_blocks("en")
    assert _tab_labels(demo) == TAB_LABELS
    assert set(ctx.handles) == {key for key, _ in ui_app.TABS}
    assert ctx.train is ctx.handles["train"] and ctx.demo is demo
    assert ui_app.css() and ui_app.logo_svg().lstrip().startswith("<svg")


def test_build_app_in_chinese_and_with_a_preselected_model(tmp_path):
    demo, ctx = ui_app.build_blocks("zh", model=str(tmp_path))
    assert _tab_labels(demo) == ["模型", "数据", "训练", "对话", "评估", "导出"]
    assert ctx.defaults.model.name_or_path == str(tmp_path)
    assert ctx.form.components["model.name_or_path"].value == str(tmp_path)


def test_every_tab_has_a_typed_handle_on_the_context():
    """ctx.<tab> for each key of TABS, annotated with the handles class that tab's build() returns."""
    import importlib
    import inspect

    demo, ctx = ui_app.build_blocks("en")
    for key, module_name in ui_app.TABS:
        module = importlib.import_module(module_name)
        accessor = getattr(ui_app.AppContext, key)
        returns = inspect.signature(module.build).return_annotation
        assert isinstance(accessor, property) and inspect.signature(accessor.fget).return_annotation == returns
        assert type(getattr(ctx, key)).__name__ == returns and getattr(ctx, key) is ctx.handles[key]


def test_a_tab_missing_from_the_context_is_named():
    from ui_ctx import tab_context

    _, ctx = tab_context(["data"], "smollm2-135m-instruct")
    assert ctx.data is ctx.handles["data"]
    with pytest.raises(LookupError, match="the train tab is not built"):
        _ = ctx.train


def test_a_tab_module_that_fails_to_import_fails_the_build(monkeypatch):
    """No quiet "not built yet" placeholder: a renamed or broken tab module stops the app and the tests."""
    monkeypatch.setattr(ui_app, "TABS", (*ui_app.TABS, ("gone", "app.ui.gone_tab")))
    monkeypatch.setitem(ui_app.i18n.STRINGS, "tab.gone", {"en": "Gone", "zh": "已删除"})
    with pytest.raises(ModuleNotFoundError, match="app.ui.gone_tab"):
        ui_app.build_blocks("en")


def test_context_language_follows_the_selector_value():
    _, ctx = ui_app.build_blocks("en")
    assert ctx.lang({ctx.lang_selector: "zh"}) == "zh"
    assert ctx.lang({}) == "en"


@pytest.mark.slow
def test_the_app_serves_its_page_with_the_tabs(tmp_path, monkeypatch):
    from app import last_form

    env = {"TUNEDESK_RUNS": str(tmp_path / "runs")}
    monkeypatch.setenv("TUNEDESK_RUNS", env["TUNEDESK_RUNS"])
    monkeypatch.delenv("TUNEDESK_HOME", raising=False)
    last_form.save(ui_app.default_config().replace(**{"train.max_steps": 7, "train.run_name": "before-restart"}))
    with running_app(env=env, log_path=tmp_path / "app.log", timeout=120) as (url, _proc):
        with get(url + "/") as resp:
            assert resp.status == 200
            assert "TuneDesk" in resp.read().decode("utf-8", "replace")
        config = served_config(url)
    assert [label for label in tab_labels(config) if label in TAB_LABELS] == TAB_LABELS
    api_names = {d.get("api_name") for d in config["dependencies"]}
    assert "start_training" in api_names
    assert "td-progress" in (config.get("css") or ""), "assets/style.css was not passed to launch()"
    # an app restart opens with the last form
    shown = {c["props"].get("elem_id"): c["props"].get("value") for c in config["components"]}
    assert shown["f-train-max_steps"] == 7 and shown["f-train-run_name"] == "before-restart"


def test_startup_objects_are_frozen_out_of_the_cyclic_gc():
    """A full collection over gradio + torch objects took ~1 s with the GIL held: after warm-up they are frozen,
    so a collection triggered by training walks only what was built since."""
    import gc
    import time

    try:
        ui_app.freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000
        start = time.perf_counter()
        gc.collect()
        assert time.perf_counter() - start < 0.5
    finally:
        gc.unfreeze()


# ---- the last form: a page refresh and an app restart keep every setting -------------------------------------------
@pytest.fixture(scope="module")
def app_ctx():
    """One full app for the last-form tests (a build takes 10-20 s on a busy 2-core machine)."""
    return ui_app.build_blocks("en")[1]


@pytest.fixture()
def own_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TUNEDESK_RUNS", raising=False)
    return tmp_path / "home"


def _initial(ctx, component):
    """The value a newly opened page gets for `component` (what Gradio serves in its config)."""
    [props] = [c["props"] for c in ctx.demo.config["components"] if c["id"] == component._id]
    return props.get("value")


CHANGED = {
    "data__path": "assets/identity.json",
    "train__max_steps": 30,
    "train__grad_accum": 2,
    "train__run_name": "my-identity",
    "train__sample_prompts": "Who are you?\nWho made you?",
    "train__gradient_checkpointing": False,
}


def test_every_change_saves_the_form_and_the_next_page_opens_with_it(app_ctx, own_home):
    from ui_ctx import wired

    from app import last_form

    ctx = app_ctx
    fn, values = wired(ctx, "remember_form", **CHANGED)
    placeholders = ctx.data.placeholders
    assert placeholders in values, "the placeholder table is not saved with the form"
    values[placeholders] = [["name", "Ada"], ["author", "Lovelace Labs"]]
    fn(values)
    saved, note = last_form.load()
    assert note == "" and last_form.path() == own_home / "last-form.yaml"
    assert saved.data.path == "assets/identity.json" and saved.data.placeholders == {
        "name": "Ada",
        "author": "Lovelace Labs",
    }
    assert (saved.train.max_steps, saved.train.grad_accum, saved.train.run_name) == (30, 2, "my-identity")
    assert (
        saved.train.sample_prompts == ["Who are you?", "Who made you?"] and saved.train.gradient_checkpointing is False
    )
    f = ctx.form.components
    assert _initial(ctx, f["data.path"]) == "assets/identity.json" and _initial(ctx, f["train.max_steps"]) == 30
    assert _initial(ctx, f["train.run_name"]) == "my-identity"
    assert _initial(ctx, f["train.sample_prompts"]) == "Who are you?\nWho made you?"
    assert _initial(ctx, f["train.gradient_checkpointing"]) is False
    assert _initial(ctx, placeholders)["data"] == [["name", "Ada"], ["author", "Lovelace Labs"]]
    assert f["train.grad_accum"].value == 2  # launch() rebuilds the served config from the components


def test_an_app_start_shows_the_saved_form_and_ignores_a_broken_one(app_ctx, own_home):
    from app import last_form
    from app.config import RunConfig

    ctx = app_ctx
    last_form.save(RunConfig().replace(**{"train.max_steps": 7, "data.path": "mine.jsonl"}))
    assert ui_app.restore_last_form(ctx) == ""
    assert _initial(ctx, ctx.form.components["train.max_steps"]) == 7
    assert _initial(ctx, ctx.form.components["data.path"]) == "mine.jsonl"
    assert ui_app.restore_last_form(ctx, model="other-model") == ""  # --model wins over the saved model
    assert _initial(ctx, ctx.form.components["model.name_or_path"]) == "other-model"

    last_form.save(RunConfig().replace(**{"lora.target_modules": ["c_attn"]}))  # GPT-2's, not among the choices
    ui_app.restore_last_form(ctx)
    modules = ctx.form.components["lora.target_modules"]
    [props] = [c["props"] for c in ctx.demo.config["components"] if c["id"] == modules._id]
    assert props["value"] == ["c_attn"] and ("c_attn", "c_attn") in props["choices"]

    last_form.path().write_text("train: {max_stepz: 3}\n", encoding="utf-8")
    note = ui_app.restore_last_form(ctx)
    assert str(last_form.path()) in note and "max_stepz" in note and "unknown key" in note


def test_a_test_app_with_its_own_runs_folder_keeps_its_own_form(tmp_path, monkeypatch):
    from app import last_form

    monkeypatch.delenv("TUNEDESK_HOME", raising=False)
    monkeypatch.setenv("TUNEDESK_RUNS", str(tmp_path / "runs"))
    assert last_form.path() == tmp_path / "runs" / ".last-form.yaml"
    last_form.save(ui_app.default_config())
    from app import runs

    assert runs.list_runs() == []  # the file is no run


def test_the_remote_code_confirmation_is_never_saved_as_given(app_ctx, own_home):
    from ui_ctx import wired

    from app import last_form

    ctx = app_ctx
    fn, values = wired(ctx, "remember_form", model__trust_remote_code=True)
    fn(values)  # unconfirmed: Start would refuse; the form is still saved as it stands
    saved, _ = last_form.load()
    assert saved.model.trust_remote_code is True
    confirm = [c for c in ctx.form.inputs() if c not in ctx.form.components.values() and _initial(ctx, c) is False]
    assert confirm, "the confirmation box opens unticked on the next page"
