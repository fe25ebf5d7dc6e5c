"""RunConfig: strict loading, every problem at once, YAML round trip."""

from __future__ import annotations

import pytest
import yaml

from app.config import FIELD_DOCS, ConfigError, RunConfig, deep_merge, field_doc


def test_defaults_are_valid_and_drive_the_cpu_default():
    cfg = RunConfig()
    assert cfg.validate() == []
    assert cfg.method == "lora" and cfg.model.name_or_path == "smollm2-135m-instruct"
    assert cfg.data.path == "assets/sample_data.json"


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().replace(**{"lora.rank": 16, "lora.target_modules": "all-linear", "train.max_steps": 7})
    path = tmp_path / "c.yaml"
    cfg.save(path)
    assert RunConfig.from_yaml(path) == cfg
    assert not (tmp_path / "c.yaml.tmp").exists()


def test_unknown_key_names_file_key_and_nearest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lerning_rate: 1.0e-4\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    msg = str(err.value)
    assert str(path) in msg and "train.lerning_rate" in msg and "learning_rate" in msg


def test_learning_rate_written_as_string_is_rejected_with_hint(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n")  # PyYAML reads 1e-4 as the string '1e-4'
    assert yaml.safe_load(path.read_text())["train"]["learning_rate"] == "1e-4"
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    msg = str(err.value)
    assert str(path) in msg and "train.learning_rate" in msg and "1.0e-4" in msg


def test_all_type_problems_reported_together():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"lora": {"rank": "eight", "use_dora": "yes"}, "train": {"batch_size": 2.5}, "x": 1})
    assert len(err.value.problems) == 4
    joined = "\n".join(err.value.problems)
    for key in ("lora.rank", "lora.use_dora", "train.batch_size", "x: unknown key"):
        assert key in joined


def test_int_is_accepted_for_float_but_bool_is_not_a_number():
    assert RunConfig.from_dict({"lora": {"alpha": 32}}).lora.alpha == 32.0
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"train": {"learning_rate": True}})


def test_validate_returns_every_problem():
    cfg = RunConfig().replace(
        **{
            "method": "qlora",
            "lora.rank": 0,
            "data.val_size": 1.0,
            "train.optimizer": "adamw",
            "lora.target_modules": [],
        }
    )
    problems = cfg.validate()
    joined = "\n".join(problems)
    assert "quant.bits" in joined and "lora.rank" in joined and "data.val_size" in joined
    assert "train.optimizer" in joined and "did you mean" in joined and "lora.target_modules" in joined
    with pytest.raises(ConfigError):
        cfg.check()


@pytest.mark.parametrize("bits,ok", [(4, True), (8, True), (None, False)])
def test_qlora_needs_4_or_8_bits(bits, ok):
    cfg = RunConfig().replace(**{"method": "qlora", "quant.bits": bits})
    assert (not any(p.startswith("quant.bits") for p in cfg.validate())) == ok


def test_full_and_freeze_refuse_quantized_base():
    for method in ("full", "freeze"):
        cfg = RunConfig().replace(**{"method": method, "quant.bits": 4})
        assert any("quant.bits" in p for p in cfg.validate())


def test_field_docs_cover_every_field():
    import dataclasses

    cfg = RunConfig()
    for section in ("model", "quant", "lora", "freeze", "data", "train"):
        for f in dataclasses.fields(getattr(cfg, section)):
            assert field_doc(section, f.name), f"{section}.{f.name} has no docstring"
    assert FIELD_DOCS["method"].startswith("full")


def test_deep_merge_keeps_mappings_whole_for_free_form_dicts():
    merged = deep_merge({"data": {"placeholders": {"a": "1"}, "path": "x"}}, {"data": {"placeholders": {"b": "2"}}})
    assert merged == {"data": {"placeholders": {"b": "2"}, "path": "x"}}


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"train.epochs": NAN}, "train.epochs", "not a finite number"),
        ({"train.epochs": INF}, "train.epochs", "not a finite number"),
        ({"train.epochs": 1e308}, "train.epochs", "more than 1000 passes"),
        ({"train.epochs": 1e308, "train.max_steps": 3}, "train.epochs", "more than 1000 passes"),
        ({"train.learning_rate": NAN}, "train.learning_rate", "not a finite number"),
        ({"train.max_grad_norm": -INF}, "train.max_grad_norm", "not a finite number"),
        ({"lora.alpha": NAN}, "lora.alpha", "not a finite number"),
        ({"lora.dropout": NAN}, "lora.dropout", "not a finite number"),
        ({"data.val_size": INF}, "data.val_size", "not a finite number"),
        ({"train.seed": 2**32}, "train.seed", "from 0 to 4294967295"),
        ({"train.seed": -1}, "train.seed", "from 0 to 4294967295"),
        ({"train.max_steps": 10**20}, "train.max_steps", "out of range"),
        ({"data.max_seq_len": 2**40}, "data.max_seq_len", "out of range"),
    ],
)
def test_impossible_numbers_are_named_once(changes, key, words):
    """NaN fails every range check; one line per field says what is wrong with it."""
    problems = RunConfig().replace(**changes).validate()
    assert [p for p in problems if p.startswith(key)] == [p for p in problems if words in p] and len(problems) == 1
    assert words in problems[0] and problems[0].startswith(f"{key}: ")


def test_a_seed_just_under_2_to_the_32_and_many_epochs_within_reason_are_fine():
    assert RunConfig().replace(**{"train.seed": 2**32 - 1, "train.epochs": 1000.0}).validate() == []


def test_tracking_early_stopping_and_check_settings_are_validated():
    from app.config import RunConfig

    ok = RunConfig().replace(**{"train.report_to": ["mlflow", "tensorboard"], "train.early_stopping_patience": 2})
    assert ok.validate() == [] and RunConfig().train.report_to == ["tensorboard"]  # TensorBoard on by default
    bad = RunConfig().replace(**{
        "train.report_to": ["tensorbord", "wandb", "wandb"], "train.early_stopping_patience": -1,
        "train.learn_check": 100, "train.eval_generations": -2,
    })  # fmt: skip
    problems = bad.validate()
    assert any("train.report_to: 'tensorbord'" in p and "did you mean 'tensorboard'" in p for p in problems)
    assert any(p.startswith("train.report_to:") and "twice" in p for p in problems)
    for key in ("early_stopping_patience", "learn_check", "eval_generations"):
        assert any(p.startswith(f"train.{key}:") for p in problems), key
    no_val = RunConfig().replace(**{"data.val_size": 0.0, "train.load_best_at_end": True})
    assert ["train.load_best_at_end" in p and "data.val_size" in p for p in no_val.validate()] == [True]
