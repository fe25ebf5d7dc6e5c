"""A Blocks holding only the tabs under test (and the Model tab's base-model field they read), for calling the
UI handlers directly with real Gradio components: no browser, no server."""

from __future__ import annotations

import importlib
from typing import Any

import gradio as gr

from app.ui import app, i18n
from app.ui.form import Form


def tab_context(tabs: list[str], model: str, lang: str = "en", **changes: Any) -> tuple[gr.Blocks, Any]:
    """(demo, ctx) with `tabs` built in order (e.g. ["data"]), defaults = model + dotted `changes`."""
    defaults = app.default_config(model).replace(**changes) if changes else app.default_config(model)
    tr = i18n.Translator(lang)
    ctx = app.AppContext(tr=tr, form=Form(tr, defaults), defaults=defaults)
    with gr.Blocks() as demo:
        ctx.demo = demo
        ctx.lang_selector = gr.Radio(choices=[("English", "en"), ("中文", "zh")], value=lang)
        ctx.form.build(["model.name_or_path", "model.trust_remote_code"])
        for key in tabs:
            ctx.handles[key] = importlib.import_module(f"app.ui.{key}_tab").build(ctx)
    return demo, ctx


def values_of(ctx: Any, *components: Any, **overrides: Any) -> dict[Any, Any]:
    """{component: value} as Gradio would pass a set of inputs: every form widget at its initial value, the
    language, and `components` at theirs."""
    out = {c: c.value for c in ctx.form.inputs()}
    out.update({c: c.value for c in components})
    out[ctx.lang_selector] = ctx.lang_selector.value
    return out
