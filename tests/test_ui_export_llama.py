"""Export tab handlers that need llama.cpp (the gguf extra; `make test` builds it while the suite runs, so these run
last): a K-quant export, the parity check shown side by side, the LoRA GGUF, and Install when it is already there.
On the tiny Llama: the logic, not the quality (the default model's figures are test_gguf_check's)."""

from __future__ import annotations

import pytest
from test_ui_export import _values
from ui_ctx import make_adapter, only_outputs, tab_context, wired

from app.ui import export_tab


@pytest.fixture(scope="module")
def ctx(tiny_model_dir, llama_cpp):
    _demo, ctx = tab_context(["export"], str(tiny_model_dir))
    return ctx


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("export-llama") / "adapter-k")


def test_k_quant_export_then_check_shows_both_answers(ctx, adapter_dir, tmp_path):
    """q4_0 through llama.cpp's quantizer (the tiny model's rows are 64 wide: K-quants would fall back), the F16
    intermediate removed; then Check with exactly the inputs its button wires: a figure line computed from the rows,
    one table row per prompt with both answers."""
    h = ctx.handles["export"]
    gguf_out = tmp_path / "gguf"
    fn, values = wired(ctx, "export_gguf")
    values.update({h.picker.adapters: str(adapter_dir), h.gguf_out: str(gguf_out), h.quant: "q4_0"})
    out = fn(values)
    assert out[h.gguf_status].startswith("✅"), out[h.gguf_status]
    assert sorted(p.name for p in gguf_out.glob("*.gguf")) == ["model-q4_0.gguf"]  # the F16 file is gone
    check, values = wired(ctx, "export_check")
    values.update({h.picker.adapters: str(adapter_dir), h.gguf_out: str(gguf_out), h.quant: "q4_0"})
    shown = check(values)
    only_outputs(ctx, "export_check", shown)
    assert h.check_table in shown, shown[h.check_status]
    table = shown[h.check_table]["value"]
    assert shown[h.check_table]["visible"] and len(table["prompt"]) >= 1
    agreeing = sum(mark == "✅" for mark in table["agree"])
    assert f"{agreeing}/{len(table['prompt'])}" in shown[h.check_status].splitlines()[0]
    values[h.quant] = "q6_k"  # not exported yet: a message naming the missing file
    assert "model-q6_k.gguf" in check(values)[h.check_status]


def test_lora_gguf_export_writes_adapter_base_and_modelfile(ctx, adapter_dir, tmp_path):
    h = ctx.handles["export"]
    gguf_out = tmp_path / "gguf"
    out = export_tab.export_lora(ctx, _values(ctx, adapters=str(adapter_dir), gguf_out=str(gguf_out)))
    assert out[h.gguf_status].startswith("✅"), out[h.gguf_status]
    folder = export_tab.lora_folder(gguf_out)
    assert (folder / "adapter-f16.gguf").is_file() and list(folder.glob("base-*.gguf"))
    assert "ADAPTER ./adapter-f16.gguf" in out[h.modelfile]
    kinds = set(out[h.artifacts]["value"]["kind"])
    assert {"lora-gguf", "gguf", "modelfile"} <= kinds


def test_install_when_installed_says_so_and_hides_the_button(ctx):
    """Install runs pip for real (llama.cpp is already installed here: pip says so in seconds) and streams its log."""
    h = ctx.handles["export"]
    updates = list(export_tab.install_llamacpp(ctx, "en"))
    last = updates[-1]
    assert last[h.llama].startswith("✅"), last[h.llama]
    assert last[h.install]["visible"] is False
    assert "llama-cpp-python" in last[h.install_log]["value"]
    assert export_tab.llama_note("en").startswith("llama.cpp 0.3.36")
