"""A Blocks holding only the tabs under test (and the Model tab's base-model field they read), for calling the
UI handlers directly with real Gradio components: no browser, no server."""

from __future__ import annotations

import importlib
from typing import Any

import gradio as gr

from app.ui import app, i18n
from app.ui.form import Form


def tab_context(tabs: list[str], model: str, lang: str = "en", **changes: Any) -> tuple[gr.Blocks, app.AppContext]:
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


def values_of(ctx: app.AppContext, *components: Any, **overrides: Any) -> dict[Any, Any]:
    """{component: value} as Gradio would pass a set of inputs: every form widget at its initial value, the
    language, and `components` at theirs."""
    out = {c: c.value for c in ctx.form.inputs()}
    out.update({c: c.value for c in components})
    out[ctx.lang_selector] = ctx.lang_selector.value
    return out


def wired(ctx: Any, api_name: str, **by_path: Any) -> tuple[Any, dict[Any, Any]]:
    """(the event's function, {component: value}) for exactly the inputs the UI wires to the event named `api_name`
    (as the Blocks registered it), at their initial values, then `by_path` (data__path=...) changed."""
    [dep] = [d for d in ctx.demo.fns.values() if d.api_name == api_name]
    values = {c: c.value for c in dep.inputs}
    for path, value in by_path.items():
        component = ctx.form.components[path.replace("__", ".")]
        assert component in values, f"{path} is not an input of {api_name}"
        values[component] = value
    return _checked(dep, api_name), values


def only_outputs(ctx: Any, api_name: str, out: Any) -> None:
    """Fail as the browser would ("Returned component ... not specified as output") when a handler's returned
    {component: update} holds a component its event named `api_name` does not list as an output."""
    [dep] = [d for d in ctx.demo.fns.values() if d.api_name == api_name]
    _only_outputs(dep, api_name, out)


def _only_outputs(dep: Any, api_name: str, out: Any) -> None:
    if not isinstance(out, dict) or any(isinstance(k, str) for k in out):  # one gr.update, not {component: update}
        return
    outputs = {c._id for c in dep.outputs}
    stray = [getattr(c, "elem_id", None) or repr(c) for c in out if getattr(c, "_id", None) not in outputs]
    assert not stray, f"{api_name} returns updates for components that are not its outputs: {stray}"


def _checked(dep: Any, api_name: str) -> Any:
    """dep.fn, checked by _only_outputs on every call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        out = dep.fn(*args, **kwargs)
        _only_outputs(dep, api_name, out)
        return out

    return call


def chat_values(ctx: app.AppContext, **changes: Any) -> dict[Any, Any]:
    """The Chat tab's inputs at their initial values, no history, 6 new tokens, then `changes` by name (a picker,
    tab or sampling-setting attribute: adapters=[...], prompt="...", temperature=0.0)."""
    h = ctx.chat
    p = h.picker
    values = values_of(ctx, p.base, p.adapters, p.device, h.prompt, h.prompt_file, h.prompt_lines,
                       *h.settings.values())  # fmt: skip
    values[h.histories] = {}
    values[h.settings["max_new_tokens"]] = 6
    for key, value in changes.items():
        target = getattr(p, key, None) or getattr(h, key, None) or h.settings[key]
        values[target] = value
    return values


def make_adapter(model_dir: Any, folder: Any, seed: int = 1, scale: float = 0.5) -> Any:
    """A LoRA adapter (q_proj, v_proj, rank 4) on `model_dir` with random B weights (PEFT initialises B to zero, so
    an untouched adapter would change nothing), saved with save_pretrained like training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(str(folder))
    return folder


def make_run(model_dir: Any, model_name: str | None = None, status: str = "finished") -> Any:
    """A run folder under $TUNEDESK_RUNS (use the runs_tmp fixture) with config.yaml, a started and a final event,
    and an adapter trained on `model_dir`; returns the run folder."""
    from app import history, runs

    cfg = app.default_config(model_name or str(model_dir))
    run_dir = runs.create_run(cfg, name="ui-test")
    make_adapter(model_dir, run_dir / runs.ADAPTER)
    history.append_event(run_dir, "started", step=0, total_steps=2, method="lora", device="cpu")
    history.append_event(run_dir, status, step=2, adapter=str(run_dir / runs.ADAPTER))
    return run_dir
