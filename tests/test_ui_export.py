"""Export tab handlers on real Gradio components: merge a perturbed PEFT adapter into the tiny model (the adapted
weights change, the others do not), refuse a non-empty folder, write a GGUF with its Modelfile."""

from __future__ import annotations

import gradio as gr
import pytest
from safetensors.torch import load_file
from ui_ctx import make_adapter, make_run, tab_context, values_of, wired

from app import devices
from app.ui import export_tab, pickers


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("export") / "adapter-x")


@pytest.fixture(scope="module")
def export_ctx(tiny_model_dir):
    demo, ctx = tab_context(["export"], str(tiny_model_dir))
    return ctx


def _values(ctx, **changes):
    h = ctx.handles["export"]
    values = values_of(ctx, h.picker.base, h.picker.adapters, h.dtype, h.out_dir, h.overwrite, h.share_cpu,
                       h.gguf_src, h.quant, h.gguf_out)  # fmt: skip
    for key, value in changes.items():
        values[getattr(h.picker, key, None) or getattr(h, key)] = value
    return values


def test_merge_writes_a_model_whose_adapted_weights_changed(export_ctx, adapter_dir, tiny_model_dir, tmp_path):
    h = export_ctx.handles["export"]
    out_dir = tmp_path / "merged"
    out = export_tab.merge_adapter(
        export_ctx, _values(export_ctx, adapters=str(adapter_dir), out_dir=str(out_dir), dtype="float32")
    )
    assert out[h.status].startswith("✅"), out[h.status]
    assert str(out_dir) in out[h.status]
    assert out[h.files]["visible"]  # hidden until a merge lists its files
    files = set(out[h.files]["value"]["file"])
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert out[h.gguf_src] == str(out_dir) and out[h.gguf_out].endswith("merged-gguf")
    merged, base = load_file(out_dir / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    assert not merged[q].equal(base[q])  # W + B @ A * alpha / r
    assert merged[k].equal(base[k])  # not adapted
    again = export_tab.merge_adapter(export_ctx, _values(export_ctx, adapters=str(adapter_dir), out_dir=str(out_dir)))
    assert again[h.status].startswith("❌") and "not empty" in again[h.status]


def test_gguf_export_shows_path_and_modelfile(export_ctx, adapter_dir, tmp_path):
    h = export_ctx.handles["export"]
    gguf_out = tmp_path / "gguf"
    values = _values(export_ctx, adapters=str(adapter_dir), gguf_out=str(gguf_out), quant="q8_0")
    out = export_tab.export_gguf(export_ctx, values)  # no merged folder given: the adapter is merged first
    assert out[h.gguf_status].startswith("✅"), out[h.gguf_status]
    assert (gguf_out / "model-q8_0.gguf").stat().st_size > 0
    assert "FROM ./model-q8_0.gguf" in out[h.modelfile] and '"<|im_end|>"' in out[h.modelfile]
    assert "LlamaForCausalLM" in export_tab.STRINGS["export.gguf_note"][0]


def test_missing_inputs_and_bad_folders_are_messages(export_ctx, tmp_path):
    h = export_ctx.handles["export"]
    assert "Pick an adapter" in export_tab.merge_adapter(export_ctx, _values(export_ctx, adapters=None))[h.status]
    no_out = _values(export_ctx, adapters=str(tmp_path), out_dir="")
    assert "output folder" in export_tab.merge_adapter(export_ctx, no_out)[h.status]
    not_adapter = export_tab.merge_adapter(export_ctx, _values(export_ctx, adapters=str(tmp_path), out_dir="x"))
    assert not_adapter[h.status].startswith("❌") and str(tmp_path) in not_adapter[h.status]
    gguf = export_tab.export_gguf(export_ctx, _values(export_ctx, gguf_src=str(tmp_path), gguf_out=str(tmp_path)))
    assert gguf[h.gguf_status].startswith("❌")


def test_training_on_the_cpu_needs_consent(export_ctx, adapter_dir, tmp_path, monkeypatch):
    h = export_ctx.handles["export"]
    monkeypatch.setattr(devices, "holder", lambda device: devices.Holder("cpu", "42") if device == "cpu" else None)
    values = _values(export_ctx, adapters=str(adapter_dir), out_dir=str(tmp_path / "m"), share_cpu=False)
    waiting = export_tab.merge_adapter(export_ctx, values)
    assert waiting[h.status].startswith("⏳") and "Share the CPU" in waiting[h.status]
    assert not (tmp_path / "m").exists()
    values[h.share_cpu] = True
    assert export_tab.merge_adapter(export_ctx, values)[h.status].startswith("✅")


def test_output_folders_default_into_the_run(runs_tmp, tiny_model_dir):
    run = make_run(tiny_model_dir)
    merged, gguf = export_tab.suggest_out([str(run / "adapter")], "bfloat16")
    assert merged == str(run / "export" / "merged-bfloat16") and gguf == str(run / "export" / "gguf")
    outside, _ = export_tab.suggest_out("/somewhere/my-adapter", "float16")
    assert outside.endswith("my-adapter-float16")


def test_adapter_choices_follow_the_history(export_ctx, runs_tmp, tiny_model_dir):
    h = export_ctx.handles["export"]
    fn, values = wired(export_ctx, "export_follow_runs")
    values[h.picker.seen] = f"{pickers.drawn('en', ())}/0"  # what the page last drew: an empty runs folder
    assert fn(*values.values())[0] == gr.skip()
    run = make_run(tiny_model_dir)  # a run finishes while the Export tab is open
    adapters, seen = fn(*values.values())
    assert adapters["choices"] == [(f"{run.name} · adapter", str(run / "adapter"))]
    values[h.picker.seen] = seen
    assert fn(*values.values())[0] == gr.skip()
