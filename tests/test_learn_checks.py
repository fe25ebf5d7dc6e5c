""" "Will it learn?" checks (app.learn_checks): each warning fires on a crafted bad input, names its records and the
key to change, and stays silent on the bundled data with the default config; the step count agrees with the real
Trainer's, and `python -m app train` prints the warnings and trains anyway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import history, learn_checks, paths, runs, train
from app.config import RunConfig
from app.learn_checks import checks, format_warnings

ROOT = Path(__file__).resolve().parent.parent


def _cfg(model_dir: Path, data: Path | str, **changes) -> RunConfig:
    """The default config (3 epochs, batch 4 x accumulation 4, lr 2e-4, template auto) on the tiny model."""
    return RunConfig().replace(**{"model.name_or_path": str(model_dir), "data.path": str(data), **changes})


def _codes(found) -> list[str]:
    return [w.code for w in found]


def _one(found, code: str):
    hits = [w for w in found if w.code == code]
    assert len(hits) == 1, format_warnings(found)
    return hits[0]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def _qa(n: int) -> list[dict]:
    """`n` distinct short Alpaca records."""
    return [{"instruction": f"who are you {i}?", "input": "", "output": f"I am assistant {i}."} for i in range(n)]


@pytest.fixture(scope="module")
def base_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model's config and tokenizer saved without a chat template: a base model as the checks see it."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-base")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    tok.save_pretrained(folder)
    shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    assert not AutoTokenizer.from_pretrained(folder).chat_template
    return folder


# ---- silent on the bundled data ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data", ["assets/sample_data.json", "assets/identity.json"])
def test_silent_on_the_bundled_data_with_the_default_config(tiny_model_dir, data):
    assert checks(_cfg(tiny_model_dir, paths.ROOT / data)) == []


def test_silent_on_the_identity_demo_preset_and_the_shared_identity_data(tiny_model_dir, shared_data):
    preset = RunConfig.from_preset(paths.presets_dir() / "smollm2-135m-identity-cpu.yaml")
    assert checks(preset.replace(**{"model.name_or_path": str(tiny_model_dir)})) == []
    assert checks(_cfg(tiny_model_dir, shared_data / "identity.json")) == []


@pytest.mark.slow
def test_silent_on_the_sample_data_with_the_default_model(default_model_dir):
    """The real default model: an Instruct model with a chat template, template auto, its own tokenizer."""
    assert checks(RunConfig()) == []
    assert checks(RunConfig().replace(**{"data.path": str(paths.ROOT / "assets/identity.json")})) == []


# ---- 1. no trainable tokens -------------------------------------------------------------------------------------
def test_examples_whose_answer_max_seq_len_cuts_away_are_named(tiny_model_dir, tmp_path):
    records = _qa(40)
    for k in (3, 17, 21):
        records[k]["instruction"] = "the capital of France is Paris " * 30 + f"{k}?"
    found = checks(_cfg(tiny_model_dir, _write(tmp_path / "long.json", records), **{"data.max_seq_len": 64}))
    warning = _one(found, "no_trainable_tokens")
    assert "3 examples" in warning.message and "records 3, 17, 21" in warning.message
    assert "max_seq_len=64" in warning.message and warning.field == "data.max_seq_len"
    assert "raise data.max_seq_len" in warning.fix
    long_enough = _cfg(tiny_model_dir, tmp_path / "long.json", **{"data.max_seq_len": 1024})
    assert "no_trainable_tokens" not in _codes(checks(long_enough))


# ---- 2. template and model --------------------------------------------------------------------------------------
def test_a_chat_model_trained_with_alpaca_warns_and_auto_or_chat_does_not(tiny_model_dir):
    sample = paths.ROOT / "assets/sample_data.json"
    warning = _one(checks(_cfg(tiny_model_dir, sample, **{"data.template": "alpaca"})), "template_mismatch")
    assert "has a chat template" in warning.message and warning.field == "data.template"
    assert "auto" in warning.fix
    for template in ("auto", "chat"):
        assert checks(_cfg(tiny_model_dir, sample, **{"data.template": template})) == []


def test_a_base_model_trained_with_chat_warns_and_auto_or_alpaca_does_not(base_model_dir):
    sample = paths.ROOT / "assets/sample_data.json"
    warning = _one(checks(_cfg(base_model_dir, sample, **{"data.template": "chat"})), "template_mismatch")
    assert "no chat template" in warning.message and warning.field == "data.template"
    for template in ("auto", "alpaca"):
        assert checks(_cfg(base_model_dir, sample, **{"data.template": template})) == []


def test_an_instruct_name_without_a_chat_template_still_counts_as_a_chat_model(base_model_dir, tmp_path):
    named = shutil.copytree(base_model_dir, tmp_path / "Tiny-1M-Instruct")
    found = checks(_cfg(named, paths.ROOT / "assets/sample_data.json", **{"data.template": "alpaca"}))
    assert "chat-tuned model by its name" in _one(found, "template_mismatch").message


# ---- 3. too few optimizer steps --------------------------------------------------------------------------------
def test_too_few_optimizer_steps_say_how_they_were_counted(tiny_model_dir):
    sample = paths.ROOT / "assets/sample_data.json"  # 300 records, 285 train after val_size 0.05
    few = _cfg(tiny_model_dir, sample, **{"train.epochs": 1.0, "train.grad_accum": 16})
    warning = _one(checks(few), "too_few_steps")
    assert "only 5 optimizer steps" in warning.message  # 72 batches of 4 / 16 = 4.5 -> 5
    assert "285 training examples" in warning.message and warning.field == "train.epochs"
    capped = _one(checks(_cfg(tiny_model_dir, sample, **{"train.max_steps": 6})), "too_few_steps")
    assert capped.field == "train.max_steps" and "only 6 optimizer steps" in capped.message
    assert "too_few_steps" not in _codes(checks(_cfg(tiny_model_dir, sample, **{"train.max_steps": 10})))


@pytest.mark.parametrize("packing", [False, True])
def test_the_step_count_is_the_trainers(tiny_model_dir, runs_tmp, tmp_path, packing):
    data = write_alpaca(tmp_path / "alpaca.json", n=40)
    cfg = tiny_config(tiny_model_dir, data, **{"train.max_steps": None, "train.epochs": 1.0, "train.packing": packing})
    warning = _one(checks(cfg), "too_few_steps")
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished", events_of(run_dir)[-1]
    total = history.read(run_dir).total_steps
    assert total < learn_checks.MIN_STEPS and f"only {total} optimizer steps" in warning.message


# ---- 4. learning rate --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "lr", "said", "usual"),
    [
        ("lora", 5e-2, "50x the top", "2e-4"),
        ("lora", 5e-8, "1/200 of the bottom", "2e-4"),
        ("full", 5e-3, "50x the top", "2e-5"),
        ("freeze", 5e-8, "1/20 of the bottom", "2e-5"),
    ],
)
def test_a_learning_rate_far_outside_the_methods_range_warns(tiny_model_dir, method, lr, said, usual):
    cfg = _cfg(tiny_model_dir, paths.ROOT / "assets/sample_data.json", method=method, **{"train.learning_rate": lr})
    warning = _one(checks(cfg), "learning_rate")
    assert f"learning rate {lr:.0e}".replace("e-0", "e-") in warning.message and said in warning.message
    assert f"about {usual}, the usual value for {method}" in warning.fix and warning.field == "train.learning_rate"


@pytest.mark.parametrize(("method", "lr"), [("lora", 2e-3), ("lora", 2e-6), ("qlora", 2e-4), ("full", 5e-4)])
def test_a_learning_rate_within_ten_times_the_range_is_silent(tiny_model_dir, method, lr):
    cfg = _cfg(tiny_model_dir, paths.ROOT / "assets/sample_data.json", method=method, **{"train.learning_rate": lr})
    assert "learning_rate" not in _codes(checks(cfg))


# ---- 5. validation records that are also training records ---------------------------------------------------------
def test_validation_records_repeated_in_training_are_found(tiny_model_dir, tmp_path):
    records = _qa(30)
    # the same questions and answers in other case, punctuation and spacing: other tokens, so the split may part them
    twins = [{"instruction": r["instruction"].upper() + "!", "output": r["output"] + "  "} for r in records]
    found = checks(_cfg(tiny_model_dir, _write(tmp_path / "twins.json", records + twins), **{"data.val_size": 0.2}))
    warning = _one(found, "val_in_train")
    assert "of 12 validation examples repeat a training example" in warning.message
    assert "record" in warning.message and warning.field == "data.path"


def test_exact_copies_stay_on_one_side_of_the_split_and_do_not_warn(tiny_model_dir, tmp_path):
    records = _qa(30)
    found = checks(_cfg(tiny_model_dir, _write(tmp_path / "copies.json", records * 2), **{"data.val_size": 0.2}))
    assert "val_in_train" not in _codes(found)


# ---- what a person reads -------------------------------------------------------------------------------------------
def test_bad_inputs_give_warnings_not_tracebacks(tiny_model_dir, tmp_path):
    """A missing data file or model leaves the checks that need them out (preflight names those); the rest run."""
    lr = {"train.learning_rate": 1.0}
    assert _codes(checks(_cfg(tiny_model_dir, tmp_path / "missing.json", **lr))) == ["learning_rate"]
    assert _codes(checks(_cfg(tmp_path / "no-model", paths.ROOT / "assets/sample_data.json", **lr))) == [
        "learning_rate"
    ]


def test_the_cli_prints_the_warnings_and_trains_anyway(tiny_model_dir, runs_tmp, tmp_path):
    data = write_alpaca(tmp_path / "alpaca.json", n=24)
    cfg = tiny_config(tiny_model_dir, data, **{"train.learning_rate": 1e-9})
    cfg.save(tmp_path / "run.yaml")
    env = {**os.environ, "TUNEDESK_RUNS": str(runs_tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "app", "train", str(tmp_path / "run.yaml")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "will it learn? 2 warnings (training starts anyway)" in done.stderr
    assert "only 3 optimizer steps" in done.stderr and "fix: set train.learning_rate to about 2e-4" in done.stderr
    assert done.stderr.index("will it learn?") < done.stderr.index("run folder:")
    assert "[tunedesk] finished at step 3" in done.stderr


def test_a_preference_run_gets_the_checks_that_need_no_supervised_data(tiny_model_dir):
    """assets/preference_sample.json holds pairs, not Alpaca records: no data warning is made up from them, and the
    learning-rate check still speaks."""
    cfg = RunConfig().replace(**{
        "model.name_or_path": str(tiny_model_dir), "objective": "dpo", "train.packing": False,
        "data.path": str(paths.assets_dir() / "preference_sample.json"),
    })  # fmt: skip
    assert checks(cfg) == []
    assert [w.code for w in checks(cfg.replace(**{"train.learning_rate": 0.5}))] == ["learning_rate"]
