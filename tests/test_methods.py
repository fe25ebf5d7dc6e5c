"""The table of methods and the objective slot: every module asks the table, and the trainer uses the objective."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import config, memory, methods, objectives, runs
from app.config import RunConfig

APP = Path(__file__).resolve().parents[1] / "app"
# `cfg.method == "qlora"`, `method in ("lora", "qlora")`, `method != "full"`: a method decided by its name
NAME_CHECK = re.compile(r"""method\s*(==|!=|in|not in)\s*[\(\[]?\s*["'](full|freeze|lora|qlora)["']""")


def test_the_table_is_the_config_s_list_and_is_consistent():
    assert config.METHODS == methods.NAMES == ("full", "freeze", "lora", "qlora")
    for m in methods.TABLE.values():
        assert m.saves == ("adapter" if m.adapter else "model")
        assert not m.quantized or m.adapter  # a quantized weight cannot be trained
        assert m.kbit_prep == m.quantized
        assert m.speed > 0 and m.note
    assert [v.flag for v in methods.get("lora").variants] == ["lora.use_dora", "lora.use_rslora"]
    with pytest.raises(ValueError, match="full, freeze, lora, qlora"):
        methods.get("dpo")


def test_no_module_decides_by_the_method_s_name():
    found = [
        f"{path.relative_to(APP)}:{n}: {line.strip()}"
        for path in sorted(APP.rglob("*.py"))
        if path.name != "methods.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NAME_CHECK.search(line)
    ]
    assert found == []


def test_validate_reads_the_table():
    assert "method qlora needs quantized base weights" in " ".join(RunConfig().replace(method="qlora").validate())
    full = RunConfig().replace(**{"method": "full", "quant.bits": 4}).validate()
    assert any("full fine-tuning cannot train quantized weights" in p for p in full)
    assert RunConfig().replace(**{"method": "qlora", "quant.bits": 4}).validate() == []


def test_lora_with_quant_bits_is_estimated_as_the_trainer_loads_it():
    """The trainer loads a k-bit base for qlora only (methods: quantized); a lora config that carries quant.bits
    trains a 16-bit base, and the estimate now says so instead of counting 4-bit weights."""
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    lora = RunConfig().replace(**{"model.name_or_path": "llama-3.1-8b-instruct", "method": "lora"})
    plain = memory.estimate(arch, lora, "cuda")
    with_bits = memory.estimate(arch, lora.replace(**{"quant.bits": 4}), "cuda")
    assert with_bits.breakdown["weights"] == plain.breakdown["weights"] == arch.total_params * 2


def test_every_objective_of_the_config_has_its_table_row_and_its_trainer():
    """config.OBJECTIVES is the torch-free table's list; each has a registry entry: sft's own loss, a preference
    objective's TRL trainer; the default config trains with sft; an unknown name says which there are."""
    from app import objective_table

    assert config.OBJECTIVES == objective_table.NAMES == tuple(objectives.REGISTRY)
    sft = objectives.of(RunConfig())
    assert sft is objectives.get("sft") and sft.loss is objectives.label_loss and not sft.facts.preference
    for name in ("dpo", "orpo", "simpo", "kto"):
        entry = objectives.get(name)
        assert entry.trl is not None and entry.facts.preference and entry.settings is not None, name
    with pytest.raises(ValueError, match="sft, dpo"):
        objectives.get("ppo")


def test_the_trainer_takes_its_loss_and_data_from_the_objective(tiny_model_dir, tmp_path, runs_tmp, monkeypatch):
    from app import train

    calls = {"prepare": 0, "loss": 0}
    sft = objectives.get("sft")

    def prepare(cfg, tokenizer):
        calls["prepare"] += 1
        return sft.prepare(cfg, tokenizer)

    def loss(*args):
        calls["loss"] += 1
        return sft.loss(*args)

    counting = objectives.Objective("counting", "sft, counted", prepare, loss)
    monkeypatch.setitem(objectives.REGISTRY, objectives.DEFAULT, counting)
    cfg = tiny_config(tiny_model_dir, write_alpaca(tmp_path / "data.json", n=12), **{"train.max_steps": 1})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    assert calls["prepare"] == 1 and calls["loss"] >= 2  # 1 step x 2 accumulated micro-batches (+ eval)
    assert events_of(run_dir, "finished")
