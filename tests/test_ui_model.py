"""Model tab: the form round trip, presets, the memory panel (figure, verdict, exact trainable count, fixes that
change the form), the method comparison, and loading / inspecting real models through the tab's handlers."""

from __future__ import annotations

import json

import gradio as gr
import plotly.graph_objects as go
import pytest
import yaml
from ui_ctx import wired

from app import devices, estimate, memory
from app.config import RunConfig
from app.ui import app as ui_app
from app.ui import i18n, model_tab, plots
from app.ui.form import ALL_LINEAR

GIB = plots.GIB


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


@pytest.fixture()
def gpu_24(monkeypatch):
    """Every estimate judged against a 24 GiB GPU, whatever this machine has."""
    monkeypatch.setattr(
        estimate.Target, "of", classmethod(lambda cls, device="auto", capacity=None: cls("cuda", 24 * GIB, "GPU"))
    )


def test_a_config_that_does_not_fit_offers_fixes_that_change_the_form(built, gpu_24):
    _, ctx = built
    h = ctx.handles["model"]
    big = ctx.defaults.replace(**{"model.name_or_path": "llama-3.1-8b-instruct", "method": "full"})
    values = _values(ctx, big)
    out = model_tab.estimate_panel(ctx, values)
    assert "Does not fit" in out[h.verdict] and 'class="td-no"' in out[h.verdict]
    fixes = out[h.fix_state]
    assert fixes and out[h.fix_buttons[0]]["visible"] is True and "GiB" in out[h.fix_buttons[0]]["value"]
    qlora = next(i for i, f in enumerate(fixes) if f["changes"].get("method") == "qlora")
    applied = model_tab.apply_fix(ctx, {**values, h.fix_state: fixes}, qlora)
    after = _shown(ctx, values, applied)
    assert after.method == "qlora" and after.quant.bits == 4 and after.model.name_or_path == "llama-3.1-8b-instruct"
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
    assert list(out[h.compare].columns) == ["method", "memory (GiB)", "trainable params", "fits", "speed vs LoRA",
                                            "notes"]  # fmt: skip
    loaded = model_tab.load_or_inspect(ctx, values, inspect_only=False)
    assert loaded[h.status].startswith("❌") and "no-such/model-xyz" in loaded[h.status]
    # nothing of the model opened before stays under the error
    assert loaded[h.info_state] is None and loaded[h.info] == i18n.t("model.info_empty")


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
    zeros = {f["train.max_steps"]: 0, f["train.eval_steps"]: 0, f["data.max_samples"]: 0, f["preference.beta"]: 0}
    cfg = ctx.form.to_config(_values(ctx, extra={**zeros, f["objective"]: "dpo", f["train.packing"]: False}))
    assert (cfg.train.max_steps, cfg.train.eval_steps, cfg.data.max_samples) == (None, None, None)
    assert cfg.preference.beta is None  # an empty beta box: the objective's usual value, not an invalid 0
    assert cfg.validate() == [] and f["train.max_steps"].minimum == 0 and f["preference.beta"].minimum == 0
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


# ---- choices that imply others (issue 14, item 6) ------------------------------------------------------------
def test_picking_qlora_sets_4_bit_nf4_and_a_plain_method_sets_it_back_to_none(built):
    _, ctx = built
    f = ctx.form.components
    fn, values = wired(ctx, "method_quantization", method="qlora")
    assert set(values) == {f["method"], f["quant.bits"], f["quant.type"]}
    out = fn(values)
    assert out[f["quant.bits"]]["value"] == "4" and out[f["quant.type"]]["value"] == "nf4"
    shown = _shown(ctx, _values(ctx), {f["method"]: {"value": "qlora"}, **out})
    assert shown.validate() == [] and shown.quant.bits == 4
    # the estimate and the methods table now agree on QLoRA's figure
    panel = model_tab.estimate_panel(ctx, _values(ctx, shown))
    table = panel[ctx.model.compare]
    qlora_gib = float(table[table["method"] == "qlora"]["memory (GiB)"].iloc[0])
    assert panel[ctx.model.details]["total_gib"] == pytest.approx(qlora_gib, abs=0.01)
    fn, values = wired(ctx, "method_quantization", method="qlora", quant__bits="8")
    assert fn(values) == {f["quant.bits"]: gr.skip()}, "8-bit is a QLoRA choice too: kept"
    fn, values = wired(ctx, "method_quantization", method="full", quant__bits="4")
    assert fn(values) == {f["quant.bits"]: gr.update(value="none")}


def test_all_linear_and_single_targets_exclude_each_other(built):
    _, ctx = built
    fn, values = wired(ctx, "exclusive_targets")
    [chosen] = values.values()
    assert chosen == ["q_proj", "v_proj"]  # the default
    tick_all = fn(chosen + [ALL_LINEAR], gr.SelectData(None, {"index": 7, "value": ALL_LINEAR, "selected": True}))
    assert tick_all["value"] == [ALL_LINEAR]
    tick_one = fn([ALL_LINEAR, "k_proj"], gr.SelectData(None, {"index": 1, "value": "k_proj", "selected": True}))
    assert tick_one["value"] == ["k_proj"]
    untick = fn(["q_proj"], gr.SelectData(None, {"index": 2, "value": "v_proj", "selected": False}))
    assert untick["value"] == ["q_proj"]


def test_another_model_named_clears_the_last_ones_details_and_sets_the_freeze_range(built, tiny_model_dir):
    _, ctx = built
    h = ctx.handles["model"]
    layers = h.fields["freeze.trainable_layers"]
    fn, values = wired(ctx, "forget_model", model__name_or_path=str(tiny_model_dir), freeze__trainable_layers=8)
    out = fn(values)
    assert out[h.status] == "" and out[h.info_state] is None
    assert "is not loaded" in out[h.info] and str(tiny_model_dir) in out[h.info]
    assert out[layers]["maximum"] == 2 and out[layers]["value"] == 2  # the tiny model has 2 decoder layers
    fn, values = wired(ctx, "forget_model", model__name_or_path="llama-3.1-70b-instruct", freeze__trainable_layers=8)
    assert fn(values)[layers] == gr.update(maximum=80)


def test_the_memory_chart_keeps_one_colour_per_part_and_no_cuda_context_on_a_cpu(built, monkeypatch):
    _, ctx = built
    h = ctx.handles["model"]

    def bars(method: str, lang: str = "en") -> dict[str, str]:
        cfg = ctx.defaults.replace(method=method, **{"quant.bits": 4 if method == "qlora" else None})
        out = model_tab.estimate_panel(ctx, _values(ctx, cfg, {ctx.lang_selector: lang}))
        return {bar["name"]: bar["marker"]["color"] for bar in json.loads(out[h.plot].plot)["data"]}

    monkeypatch.setattr(estimate.Target, "of", classmethod(lambda cls, *a, **k: cls("cpu", 64 * GIB, "CPU RAM")))
    full, lora = bars("full"), bars("lora")
    assert "LoRA adapter" in lora and "LoRA adapter" not in full
    assert full["model weights"] == lora["model weights"] == plots.PART_COLORS["weights"]
    assert lora["LoRA adapter"] == plots.PART_COLORS["adapter"]
    assert len(set(lora.values())) == len(lora), "one colour per part"
    assert "CUDA context" not in full and "CUDA context" not in lora
    chinese = bars("lora", "zh")
    assert "LoRA 适配器" in chinese
    assert not [n for n in chinese if n in memory.LABELS.values()], "no English part name in Chinese"
    monkeypatch.setattr(estimate.Target, "of", classmethod(lambda cls, *a, **k: cls("cuda", 24 * GIB, "GPU")))
    assert "CUDA context" in bars("lora")


def test_fixes_and_method_notes_speak_the_page_language(built, gpu_24):
    _, ctx = built
    h = ctx.handles["model"]
    big = ctx.defaults.replace(**{"model.name_or_path": "llama-3.1-8b-instruct", "method": "full"})
    out = model_tab.estimate_panel(ctx, _values(ctx, big, {ctx.lang_selector: "zh"}))
    labels = [f["label"] for f in out[h.fix_state]]
    assert labels and all(label == i18n.t("model.fix.quantize_4bit", "zh") for label in labels[:1]), labels
    notes = list(out[h.compare]["说明"])
    assert notes == [i18n.t(f"model.note.{m}", "zh") for m in ("full", "freeze", "lora", "qlora")]
    for key, params in [
        ("gradient_checkpointing", {}),
        ("micro_batch", {"batch": 2, "accum": 8}),
        ("optimizer_8bit", {"optimizer": "adamw_8bit"}),
        ("shorter_seq", {"seq": 256, "cut": 3}),
        ("shorter_seq", {"seq": 256, "cut": None}),
        ("combined", {"parts": [["gradient_checkpointing", {}], ["quantize_4bit", {}]]}),
    ]:
        zh, en = model_tab.fix_label(key, params, "zh"), model_tab.fix_label(key, params, "en")
        assert zh != en and "{" not in zh, key


def test_a_preset_that_names_a_dataset_brings_its_data_section(built, tmp_path):
    _, ctx = built
    h = ctx.handles["model"]
    values = _values(ctx, ctx.defaults.replace(**{"data.path": str(tmp_path / "mine.json"), "data.max_seq_len": 384}))
    preset = tmp_path / "tiny-identity-cpu.yaml"
    data = {"path": "assets/sample_data.json", "placeholders": {"name": "Nova", "author": "Ada"}}
    preset.write_text(yaml.safe_dump({"method": "lora", "data": {**data, "system_prompt": "You are Nova."}}))
    out = model_tab.apply_preset(ctx, {**values, h.preset: str(preset)})
    cfg = _shown(ctx, values, out)
    assert cfg.data.path == "assets/sample_data.json" and cfg.data.system_prompt == "You are Nova."
    assert cfg.data.max_seq_len == ctx.defaults.data.max_seq_len, "the whole data section, not only its path"
    placeholders = [c for c, u in out.items() if c in ctx.form.inputs() and c not in ctx.form.components.values()]
    assert placeholders, "the Data tab's placeholder table shows the preset's names"
    assert "Applied preset tiny-identity-cpu" in out[h.status]


def test_the_model_tabs_messages_name_the_labels_on_screen(built):
    _, ctx = built
    h = ctx.handles["model"]
    f = ctx.form.components
    values = _values(ctx, extra={f["model.trust_remote_code"]: True, h.trust_confirm: False})
    out = model_tab.load_or_inspect(ctx, values, inspect_only=True)
    assert "Trust remote code: on but not confirmed" in out[h.status], out[h.status]
    assert "model.trust_remote_code" not in out[h.status]


def test_the_panel_draws_at_once_then_sizes_for_the_dataset(built, monkeypatch):
    """estimate_panel (every change) never waits for a tokenizer: sized for batch x max_seq_len while the dataset
    is measured, then estimate_panel_data (chained after it) redraws it sized for the data."""
    _, ctx = built
    h = ctx.handles["model"]
    monkeypatch.setattr(estimate, "_LENGTHS", type(estimate._LENGTHS)())  # nothing measured yet
    now, values = wired(ctx, "estimate_panel")
    first = now(values)
    assert first[h.pending] is True and "Measuring the token lengths of sample_data.json" in first[h.sized]
    assert first[h.details]["sized_for"]["by"] == "config"
    then, values = wired(ctx, "estimate_panel_data")
    assert h.pending in values
    values[h.pending] = first[h.pending]
    second = then(values)
    assert second[h.pending] is False and "Sized for your data (sample_data.json)" in second[h.sized]
    assert second[h.details]["sized_for"]["by"] == "data"
    assert second[h.details]["sized_for"]["tokens"] < first[h.details]["sized_for"]["tokens"]  # ~170, not 512
    # never more; on a CPU both fill one chunk of 512 tokens (4 x ~170 is over 512), so not less there either
    assert second[h.details]["total_gib"] <= first[h.details]["total_gib"]
    values[h.pending] = False
    assert then(values) == {h.pending: gr.skip()}
    assert now(values)[h.pending] is False, "measured once: drawn sized for the data at once"


def test_the_identity_preset_brings_its_dataset_and_names(built, tmp_path):
    """The Train tab's suggested first run applies presets/smollm2-135m-identity-cpu.yaml through apply_preset:
    the user's other dataset gives way to the identity data with its placeholders and empty system prompt."""
    _, ctx = built
    h = ctx.handles["model"]
    mine = ctx.defaults.replace(**{"data.path": str(tmp_path / "mine.json"), "data.system_prompt": "Be brief."})
    values = _values(ctx, mine)
    preset = model_tab.paths.presets_dir() / "smollm2-135m-identity-cpu.yaml"
    out = model_tab.apply_preset(ctx, {**values, h.preset: str(preset)})
    merged = {**values, **{c: u["value"] for c, u in out.items() if isinstance(u, dict) and "value" in u}}
    cfg = ctx.form.to_config(merged)
    assert cfg == RunConfig.from_preset(preset), "every field as the preset says, the placeholders too"
    assert cfg.data.path == "assets/identity.json" and cfg.data.placeholders["name"]
    panel = model_tab.estimate_panel(ctx, merged)
    assert panel[h.details]["sized_for"]["by"] == "data" and panel[h.details]["sized_for"]["tokens"] <= 256
