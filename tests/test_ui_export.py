"""Export tab handlers on real Gradio components: merge a perturbed PEFT adapter into the tiny model (the adapted
weights change, the others do not), refuse a non-empty folder, write a GGUF with its Modelfile, list the artifacts
with their commands, the GGUF types' sizes, Ollama create and push to a stand-in Hub. The handlers that need
llama.cpp (K-quants, check, LoRA GGUF) are in test_ui_export_llama.py."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest
from hubstub import hub_fixture  # noqa: F401  (the `hub` fixture)
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from ui_ctx import make_adapter, make_run, only_outputs, tab_context, values_of, wired

from app import devices
from app import hub as apphub
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
                       h.gguf_src, h.quant, h.gguf_out, h.keep_f16, h.ollama_name, h.repo_id, h.what,
                       h.private)  # fmt: skip
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
    only_outputs(export_ctx, "export_gguf", out)
    table = out[h.artifacts]["value"]
    assert out[h.artifacts]["visible"] and {"gguf", "modelfile"} <= set(table["kind"])
    command = dict(zip(table["kind"], table["command"], strict=True))
    assert command["gguf"] == f"llama-cli -m {gguf_out / 'model-q8_0.gguf'} -cnv"
    name = out[h.ollama_name]
    assert name and command["modelfile"].endswith(f"ollama create {name} -f Modelfile && ollama run {name}")


def test_types_table_gives_each_types_size_for_the_chosen_model(export_ctx, adapter_dir, tiny_model_dir):
    """Before export: every type the dropdown offers, with its expected size for the adapter's base (the tiny model)
    in the order of the sizes' bits per weight, who makes it and a note."""
    from app import commands, gguf

    h = export_ctx.handles["export"]
    _fn, values = wired(export_ctx, "export_gguf")
    table = export_tab.types_for(str(adapter_dir), "", "en")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(commands.GGUF_QUANTS)
    params = gguf.count_params(tiny_model_dir)
    assert f"{params / 1e6:.0f}M parameters" in table.splitlines()[0]
    q4 = next(r for r in rows if r.startswith("| `q4_k_m`"))
    assert export_tab._size(gguf.expected_size(params, "q4_k_m")) in q4 and "llama.cpp" in q4
    assert "TuneDesk" in next(r for r in rows if r.startswith("| `f16`"))
    assert "bits/weight" in export_tab.types_for(None, "", "en")  # no model: bits per weight instead of sizes
    assert h.keep_f16 in values and h.quant in values  # the export's own inputs carry the choice


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


def test_ollama_create_runs_ollama_in_the_gguf_folder(export_ctx, adapter_dir, tmp_path, monkeypatch):
    """With an `ollama` on PATH (a script standing in: there is no Ollama here) the button runs `ollama create NAME
    -f Modelfile` in the GGUF folder; without one, it says how to install it."""
    h = export_ctx.handles["export"]
    gguf_out = tmp_path / "gguf"
    export_tab.export_gguf(export_ctx, _values(export_ctx, adapters=str(adapter_dir), gguf_out=str(gguf_out),
                                               quant="f16"))  # fmt: skip
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "ollama").write_text(f'#!/bin/sh\necho "$PWD $*" >> {calls}\necho "success"\n', encoding="utf-8")
    (bin_dir / "ollama").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    fn, values = wired(export_ctx, "export_ollama")
    values.update({h.gguf_out: str(gguf_out), h.ollama_name: "my-bot"})
    status = fn(values)
    assert status.startswith("✅") and "ollama run my-bot" in status, status
    assert calls.read_text(encoding="utf-8").split() == [str(gguf_out), "create", "my-bot", "-f", "Modelfile"]
    monkeypatch.setenv("PATH", "/nonexistent")
    assert export_tab.create_in_ollama(export_ctx, values).startswith("❌")


def test_push_sends_the_gguf_folder_to_a_private_repo(export_ctx, adapter_dir, hub, tmp_path, monkeypatch):
    """Push with exactly the inputs the button wires: the GGUF folder reaches the stand-in Hub (downloaded back
    byte-equal), private, with its card; no repo id is a message, not a request."""
    h = export_ctx.handles["export"]
    for name in ("HOME", "TUNEDESK_HOME"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    apphub.login(hub.token)
    gguf_out = tmp_path / "gguf"
    export_tab.export_gguf(export_ctx, _values(export_ctx, adapters=str(adapter_dir), gguf_out=str(gguf_out),
                                               quant="q8_0"))  # fmt: skip
    fn, values = wired(export_ctx, "export_push")
    assert set(values) >= {h.repo_id, h.what, h.private, h.gguf_out}
    assert "owner/name" in fn(values)  # the repo field starts empty
    values.update({h.repo_id: f"{hub.user}/ui-pushed", h.what: "gguf", h.gguf_out: str(gguf_out)})
    status = fn(values)
    assert status.startswith("✅") and f"{hub.user}/ui-pushed" in status, status
    down = Path(snapshot_download(f"{hub.user}/ui-pushed", token=hub.token, local_dir=tmp_path / "down"))
    assert (down / "model-q8_0.gguf").read_bytes() == (gguf_out / "model-q8_0.gguf").read_bytes()
    card = (down / "README.md").read_text(encoding="utf-8")
    assert "gguf" in card.split("---")[1] and "model-q8_0.gguf" in card, card


def test_modelfile_parameters_are_the_chat_tabs_settings(tiny_model_dir, adapter_dir, tmp_path):
    """In an app with a Chat tab, Export GGUF receives its sampling settings (exactly the wired inputs) and the
    Modelfile's PARAMETERs are them; the chat box's system prompt is not the run's and stays out."""
    _demo, ctx = tab_context(["chat", "export"], str(tiny_model_dir))
    h, chat = ctx.handles["export"], ctx.handles["chat"].settings
    fn, values = wired(ctx, "export_gguf")
    assert chat["temperature"] in values and chat["system_prompt"] not in values
    values.update({h.picker.adapters: str(adapter_dir), h.gguf_out: str(tmp_path / "gguf"), h.quant: "f16",
                   chat["temperature"]: 0.7, chat["top_k"]: 20.0, chat["max_new_tokens"]: 64.0})  # fmt: skip
    out = fn(values)
    assert out[h.gguf_status].startswith("✅"), out[h.gguf_status]
    lines = out[h.modelfile].splitlines()
    assert {"PARAMETER temperature 0.7", "PARAMETER top_k 20", "PARAMETER num_predict 64"} <= set(lines)
    assert not any(line.startswith("SYSTEM") for line in lines)  # the run had no system prompt
    values[chat["top_p"]] = 0.0  # not a valid top_p: the Chat tab says so; the Modelfile takes the defaults
    assert export_tab.chat_settings(ctx, values) is None
