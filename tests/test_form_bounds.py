"""The form and validate() agree on every bound and choice: both read them from app/config.py (MINIMUMS, METHODS,
QUANT_BITS, ...), so a widget never offers a value that Start refuses, nor refuses one that a YAML file may hold."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from app import config as C
from app.config import RunConfig
from app.ui import form, i18n
from app.ui.form import BY_PATH, FIELDS, Form, from_widget


@pytest.fixture(scope="module")
def widgets() -> dict[str, object]:
    f = Form(i18n.Translator("en"), RunConfig())
    with gr.Blocks():
        return f.build([row.path for row in FIELDS])


def _problems_naming(cfg: RunConfig, path: str) -> list[str]:
    return [p for p in cfg.validate() if p.startswith(f"{path}:")]


def _base(path: str) -> RunConfig:
    """The defaults, with max_steps set where epochs would otherwise need it (nothing else in the way)."""
    return RunConfig().replace(**{"train.max_steps": 10}) if path != "train.max_steps" else RunConfig()


@pytest.mark.parametrize("path", sorted(p for p in C.MINIMUMS if p in BY_PATH))
def test_a_widget_starts_where_validate_starts(widgets, path):
    lowest = C.MINIMUMS[path]
    widget = widgets[path]
    shown = 0 if form._unset_by_zero(BY_PATH[path]) else lowest  # an empty optional count reads back as None
    assert widget.minimum == shown, f"{path}: the widget starts at {widget.minimum}, validate() at {lowest}"
    at_minimum = _base(path).replace(**{path: from_widget(BY_PATH[path], lowest)})
    assert _problems_naming(at_minimum, path) == []
    below = _base(path).replace(**{path: lowest - 1})
    assert _problems_naming(below, path), f"{path}: validate() accepts {lowest - 1}"


def test_every_minimum_names_a_config_field():
    for path in C.MINIMUMS:
        section, _, name = path.rpartition(".")
        assert name in {f.name for f in dataclasses.fields(getattr(RunConfig(), section))}, path


def test_a_row_that_repeats_a_config_minimum_is_refused():
    with pytest.raises(ValueError, match="data.max_seq_len"):
        form.Field("data.max_seq_len", "slider", "x", "x", "x", minimum=16)


@pytest.mark.parametrize("path", sorted(f.path for f in FIELDS if f.kind == "dropdown"))
def test_every_dropdown_choice_validates(widgets, path):
    for _label, value in widgets[path].choices:
        cfg = RunConfig().replace(**{path: from_widget(BY_PATH[path], value)})
        if path == "quant.bits" and value != "none":
            cfg = cfg.replace(method="qlora")  # quantized weights need an adapter method
        assert _problems_naming(cfg, path) == [], f"{path}={value!r}"


def test_the_quantization_choices_are_the_configs():
    assert BY_PATH["quant.bits"].choices == C.QUANT_BITS
    assert BY_PATH["quant.type"].choices == C.QUANT_TYPES
    assert _problems_naming(RunConfig().replace(**{"quant.bits": 2}), "quant.bits")
    assert _problems_naming(RunConfig().replace(**{"quant.type": "int4"}), "quant.type")


def test_explain_puts_the_label_on_screen_in_place_of_every_config_key():
    broken = RunConfig().replace(
        **{"method": "qlora", "train.epochs": 0.0, "train.learning_rate": 2.0, "lora.target_modules": []}
    )
    problems = broken.validate()
    assert len(problems) == 4 and any("quant.bits" in p for p in problems)
    shown = form.explain(problems, "en")
    assert shown[0].startswith("Quantization bits: ") and "set Quantization bits to 4 or 8" in shown[0]
    assert "Max steps" in " ".join(shown)  # "(or set train.max_steps)" in the epochs problem
    for line in shown + form.explain(problems, "zh"):
        for path in [*BY_PATH, *C.HIDDEN]:
            assert "." not in path or path not in line, line
    assert form.explain(problems, "zh")[0].startswith("量化位数: ")
    assert form.explain(["data.placeholders.name: expected str"], "en") == ["Placeholders (name): expected str"]
    assert form.explain(["train.eval_steps: 0 must be >= 1 or null"]) == ["Eval steps: 0 must be >= 1 or empty"]
