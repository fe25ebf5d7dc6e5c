"""Every preset loads strictly, validates, and carries a header comment."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import RunConfig

PRESETS = sorted((Path(__file__).resolve().parent.parent / "presets").glob("*.yaml"))


def test_the_required_presets_exist():
    names = {p.stem for p in PRESETS}
    assert "smollm2-135m-lora-cpu" in names
    methods = {RunConfig.from_preset(p).method for p in PRESETS}
    assert methods == {"full", "freeze", "lora", "qlora"}
    assert any("70b" in n and "qlora" in n and "48gb" in n for n in names)
    assert len(PRESETS) >= 6
    objectives = {RunConfig.from_preset(p).objective for p in PRESETS}
    assert {"sft", "dpo", "orpo"} <= objectives  # preference presets on the default model (CPU) and an 8B QLoRA
    assert any("8b" in n and "dpo" in n and "qlora" in n and "24gb" in n for n in names)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_validates(path):
    cfg = RunConfig.from_preset(path)
    assert cfg.validate() == []
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "a preset starts with a comment saying what it is for"
    model_part, method, hardware = path.stem.rsplit("-", 2)
    assert TASKS.get(method, method) == cfg.method and model_part and hardware


TASKS = {"identity": "lora"}
"""Demo presets named for what they teach (<model>-<task>-<hardware>.yaml, e.g. the identity demo) and their method."""


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_round_trips_through_a_full_config(path, tmp_path):
    cfg = RunConfig.from_preset(path)
    out = tmp_path / "full.yaml"
    cfg.save(out)
    assert RunConfig.from_yaml(out) == cfg


def test_bad_preset_names_file_and_key(tmp_path):
    bad = tmp_path / "x-lora-cpu.yaml"
    bad.write_text("lora:\n  ranks: 8\n")
    with pytest.raises(Exception) as err:
        RunConfig.from_preset(bad)
    assert str(bad) in str(err.value) and "lora.ranks" in str(err.value)
