"""Model tab: the form round trip, presets, the memory panel (figure, verdict, exact trainable count, fixes that
change the form), the method comparison, and loading / inspecting real models through the tab's handlers."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from app import devices, estimate, memory
from app.config import RunConfig
from app.ui import app as ui_app
from app.ui import model_tab, plots
from app.ui.form import ALL_LINEAR


@pytest.fixture(scope="module")
def built():
    return ui_app.build_blocks("en")


def _values(ctx, cfg: RunConfig | None = None, extra=None):
    """{component: value} for every form widget showing `cfg` (defaults when None), as Gradio passes a set."""
    updates = ctx.form.updates_from(cfg or ctx.defaults)
    values = {c: (updates[c]["value"] if c in updates else c.value) for c in ctx.form.inputs()}
    values[ctx.lang_selector] = "en"
    values.update(extra or {})
    return values


def _shown(ctx, values, updates):
    """The form's config after applying `updates` (a handler's return) to `values`."""
    merged = dict(values)
    merged.update({c: u["value"] for c, u in updates.items() if c in values and isinstance(u, dict) and "value" in u})
    return ctx.form.to_config(merged)


@pytest.mark.parametrize("preset", [None, *sorted(p.name for p in model_tab.paths.presets_dir().glob("*.yaml"))])
def test_form_round_trip(built, preset):
    _, ctx = built
    cfg = RunConfig() if preset is None else RunConfig.from_preset(model_tab.paths.presets_dir() / preset)
    assert ctx.form.to_config(_values(ctx, cfg)) == cfg


def test_estimate_panel_for_the_default_config(built):
    _, ctx = built
    h = ctx.handles["model"]
    out = model_tab.estimate_panel(ctx, _values(ctx))
    figure = json.loads(out[h.plot].plot)  # the plotly.js figure gr.Plot sends, built without go.Figure
    assert out[h.plot].type == "plotly" and len(figure["data"]) >= 5
    assert len(go.Figure(figure).data) == len(figure["data"])  # a valid figure for plotly as well
    device = devices.detect()
    expected = memory.estimate(
        memory.architecture_from(ctx.defaults.model.name_or_path), ctx.defaults, device.kind, device.total_bytes
    )
    assert expected.fits and "Fits" in out[h.verdict]
    # SmolLM2-135M, r=8 on q_proj/v_proj: 30 layers x 8 x ((576+576) + (576+192)) = 460,800 exact.
    assert expected.trainable_params == 460_800 and "460,800" in out[h.trainable]
    assert out[h.fix_state] == [] and all(out[b]["visible"] is False for b in h.fix_buttons)
    table = out[h.compare]
    assert list(table["method"]) == ["full", "freeze", "lora", "qlora"]
    assert out[h.details]["trainable_params"] == 460_800


def test_a_config_that_does_not_fit_offers_fixes_that_change_the_form(built):
    _, ctx = built
    h = ctx.handles["model"]
    big = ctx.defaults.replace(**{"model.name_or_path": "llama-3.1-70b-instruct", "method": "full"})
    values = _values(ctx, big)
    out = model_tab.estimate_panel(ctx, values)
    assert "Does not fit" in out[h.verdict] and 'class="td-no"' in out[h.verdict]
    fixes = out[h.fix_state]
    assert fixes and out[h.fix_buttons[0]]["visible"] is True and "GiB" in out[h.fix_buttons[0]]["value"]
    qlora = next(i for i, f in enumerate(fixes) if f["changes"].get("method") == "qlora")
    applied = model_tab.apply_fix(ctx, {**values, h.fix_state: fixes}, qlora)
    after = _shown(ctx, values, applied)
    assert after.method == "qlora" and after.quant.bits == 4 and after.model.name_or_path == "llama-3.1-70b-instruct"
    assert "Applied" in applied[h.status]
    # only the changed widgets are updated, so one click redraws the estimate once, not once per widget
    assert len([c for c in applied if c in ctx.form.inputs()]) == 2
    stale = model_tab.apply_fix(ctx, {**values, h.fix_state: []}, 0)
    assert "no longer applies" in stale[h.status]


def test_an_unknown_model_explains_instead_of_raising(built):
    _, ctx = built
    h = ctx.handles["model"]
    values = _values(ctx, extra={ctx.form.components["model.name_or_path"]: "no-such/model-xyz"})
    out = model_tab.estimate_panel(ctx, values)
    assert "Cannot estimate" in out[h.verdict] and "catalog" in out[h.verdict] and out[h.plot] is None
    loaded = model_tab.load_or_inspect(ctx, values, inspect_only=False)
    assert loaded[h.status].startswith("❌") and "no-such/model-xyz" in loaded[h.status]


def test_apply_preset_keeps_the_dataset_and_replaces_the_rest(built, tmp_path):
    _, ctx = built
    h = ctx.handles["model"]
    data = str(tmp_path / "mine.json")
    values = _values(ctx, ctx.defaults.replace(**{"data.path": data, "quant.bits": 8, "method": "qlora"}))
    preset = model_tab.paths.presets_dir() / "llama-3.1-8b-lora-48gb.yaml"
    out = model_tab.apply_preset(ctx, {**values, h.preset: str(preset)})
    cfg = _shown(ctx, values, out)
    assert cfg.model.name_or_path == "llama-3.1-8b-instruct" and cfg.method == "lora" and cfg.lora.rank == 16
    assert cfg.quant.bits is None, "the last preset's quantization must not linger"
    assert cfg.data.path == data and "Applied preset" in out[h.status]
    assert "Pick a preset" in model_tab.apply_preset(ctx, {**values, h.preset: None})[h.status]


def test_inspect_a_70b_without_weights_fills_the_target_picker(built):
    _, ctx = built
    h = ctx.handles["model"]
    values = _values(ctx, extra={ctx.form.components["model.name_or_path"]: "llama-3.1-70b-instruct"})
    out = model_tab.load_or_inspect(ctx, values, inspect_only=False)  # not on this machine: structure only
    assert "not on this machine" in out[h.status] and "70.55B" in out[h.info] and "| Layers | 80 |" in out[h.info]
    picker = out[ctx.form.components["lora.target_modules"]]
    assert picker["choices"][-1] == ALL_LINEAR and "gate_proj" in picker["choices"]
    assert model_tab.HOLDER.loaded is None


def test_load_the_tiny_model_shows_its_facts_and_modules(built, tiny_model_dir):
    _, ctx = built
    h = ctx.handles["model"]
    f = ctx.form.components
    values = _values(ctx, extra={f["model.name_or_path"]: str(tiny_model_dir), f["lora.target_modules"]: ["q_proj"]})
    out = model_tab.load_or_inspect(ctx, values, inspect_only=False)
    try:
        assert "Loaded" in out[h.status]
        info = out[h.info]
        assert "LlamaForCausalLM" in info and "| Layers | 2 |" in info and "float32" in info and "cpu" in info
        assert "Load time" in info and "`down_proj`" in info
        picker = out[f["lora.target_modules"]]
        assert picker["choices"] == [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            ALL_LINEAR,
        ]
        assert picker["value"] == ["q_proj"]
        first = model_tab.HOLDER.loaded
        assert first is not None and first.info["layers"] == 2
        model_tab.load_or_inspect(ctx, values, inspect_only=False)
        assert model_tab.HOLDER.loaded is not first, "loading again replaces (and releases) the held model"
    finally:
        model_tab.HOLDER.release()
    assert model_tab.HOLDER.loaded is None


def test_memory_bar_marks_the_capacity_line_in_the_verdict_colour():
    fig = plots.memory_bar({"weights": 6 * plots.GIB, "activations": 3 * plots.GIB}, 8 * plots.GIB, "GPU")
    assert [t.name for t in fig.data] == ["weights", "activations"]
    line = fig.layout.shapes[0]
    assert line.x0 == 8 and line.line.color == plots.FIT_COLORS["no"]
    assert estimate.verdict(7 * plots.GIB, 8 * plots.GIB) == "tight" and estimate.verdict(1, None) == "unknown"


def test_an_empty_number_box_sent_as_0_means_not_set(built):
    """The browser shows and sends gr.Number(None) as 0; for optional counts that must read back as None, or
    Start would refuse the defaults with 'train.max_steps: 0 must be >= 1'."""
    _, ctx = built
    f = ctx.form.components
    zeros = {f["train.max_steps"]: 0, f["train.eval_steps"]: 0, f["data.max_samples"]: 0}
    cfg = ctx.form.to_config(_values(ctx, extra=zeros))
    assert (cfg.train.max_steps, cfg.train.eval_steps, cfg.data.max_samples) == (None, None, None)
    assert cfg.validate() == [] and f["train.max_steps"].minimum == 0
    assert ctx.form.to_config(_values(ctx, extra={f["train.save_steps"]: 0})).train.save_steps == 0


def test_a_training_run_claiming_the_device_frees_the_loaded_model():
    """The Model tab's loaded copy would only compete with training for memory: it goes when a run claims a device
    (app.devices.on_claim), whoever starts the run (the Train tab, the CLI's job manager)."""
    model_tab.HOLDER.loaded = object()
    holder = devices.claim("cpu", "run-x")
    try:
        assert model_tab.HOLDER.loaded is None
    finally:
        devices.release(holder)
