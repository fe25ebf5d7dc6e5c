"""Evaluation that means something, early stopping and the best checkpoint, on the tiny model: generation scores
at each evaluation, a run that stops when eval loss stops improving (and says why), the artifact byte-identical to
the best checkpoint's weights, resume with these on, and the validation they need."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from test_train_kit import events_of, one_torch_thread, stop_when, tiny_config, write_alpaca  # noqa: F401  (fixture)

from app import history, runs, train, trainer
from app.batching import IGNORE, TokenStore

DIVERGING = {"train.learning_rate": 0.9, "train.max_steps": 30, "train.eval_steps": 1}
"""Eval every step at a learning rate far too high for the tiny model: eval loss stops improving within a few
steps, long before step 30."""


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=24)


def _tensors(path: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {name: t.numpy().tobytes() for name, t in load_file(path).items()}


def _adapter_matches_checkpoint(run_dir: Path, step: int) -> None:
    """adapter/ holds exactly the weights of the checkpoint at `step`, tensor for tensor, byte for byte."""
    name = "adapter_model.safetensors"
    saved = _tensors(run_dir / runs.ADAPTER / name)
    best = _tensors(run_dir / history.CHECKPOINTS / history.checkpoint_name(step) / name)
    assert saved.keys() == best.keys() and saved == best


# ---- generation scores at each evaluation ----------------------------------------------------------------------
def test_the_generation_set_is_the_validation_prompts_as_training_tokenized_them(tiny_model_dir, data_file):
    from app import data, modeling
    from app.train_events import render_prompt

    cfg = tiny_config(tiny_model_dir, data_file, "lora")
    tokenizer = modeling.load_tokenizer(str(tiny_model_dir))
    prepared = data.prepare(cfg.data, tokenizer, seed=cfg.train.seed)
    records = json.loads(Path(data_file).read_text())
    found = trainer.generation_set(TokenStore.from_examples(prepared.val), tokenizer, 3)
    assert len(found) == 3
    for (ids, reference, budget), encoded in zip(found, prepared.val, strict=False):
        record = records[encoded.index]
        assert reference == record["output"]
        assert tokenizer.decode(ids.tolist()) == render_prompt(tokenizer, cfg, record["instruction"])
        assert len(tokenizer(reference)["input_ids"]) < budget <= trainer.GENERATION_TOKENS


def test_answer_span_is_the_last_labelled_run_and_needs_a_prompt_before_it():
    import numpy as np

    span = trainer.answer_span
    assert span(np.array([IGNORE, 5, IGNORE, IGNORE, 8, 9, IGNORE])) == (4, 6)  # the last turn of a conversation
    assert span(np.array([IGNORE, IGNORE, 3])) == (2, 3)
    assert span(np.array([IGNORE, IGNORE])) is None  # no answer
    assert span(np.array([1, 2, 3])) is None  # train_on_prompt: where the answer starts is not in the labels


def test_each_evaluation_scores_answers_to_the_validation_prompts(tiny_model_dir, data_file, runs_tmp):
    changes = {"train.max_steps": 2, "train.eval_steps": 1, "train.eval_generations": 2}
    cfg = tiny_config(tiny_model_dir, data_file, "lora", **changes)
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    evals = events_of(run_dir, "eval")
    assert [e["step"] for e in evals] == [1, 2]
    for event in evals:
        for name in history.GENERATION_METRICS:
            assert 0.0 <= event[f"eval_{name}"] <= 100.0, event
    found = history.read(run_dir)
    steps, values = found.eval_series("rougeL")
    assert steps == [1, 2] and values == [e["eval_rougeL"] for e in evals]
    assert found.eval_series("exact_match")[0] == [1, 2]

    off = tiny_config(tiny_model_dir, data_file, "lora", **{**changes, "train.eval_generations": 0})
    run_dir = runs.create_run(off)
    assert train.run(off, run_dir) == "finished"
    assert all("eval_rougeL" not in e for e in events_of(run_dir, "eval"))
    assert history.read(run_dir).eval_series("rougeL") == ([], [])


# ---- early stopping and the best checkpoint ----------------------------------------------------------------------
def test_early_stopping_ends_the_run_and_the_adapter_is_the_best_checkpoint(tiny_model_dir, data_file, runs_tmp):
    changes = {
        **DIVERGING,
        "train.early_stopping_patience": 2,
        "train.load_best_at_end": True,
        "train.save_steps": 7,  # ignored: with load_best_at_end a checkpoint is saved at every evaluation
        "train.save_total_limit": 1,  # the best checkpoint outlives the rotation all the same
        "train.eval_generations": 0,
    }
    cfg = tiny_config(tiny_model_dir, data_file, "lora", **changes)
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    (finished,) = events_of(run_dir, "finished")
    evals = [(e["step"], e["eval_loss"]) for e in events_of(run_dir, "eval")]
    best_step, best_loss = min(evals, key=lambda pair: pair[1])
    assert finished["step"] < 30 and finished["step"] == evals[-1][0]  # stopped at an evaluation, early
    assert [loss for step, loss in evals if step > best_step] and all(
        loss >= best_loss for step, loss in evals if step > best_step
    )
    assert len([s for s, _ in evals if s > best_step]) == 2  # patience: 2 evaluations without improvement
    assert (finished["best_step"], finished["artifact_step"], finished["best_eval_loss"]) == (
        best_step,
        best_step,
        best_loss,
    )
    assert "did not improve for 2 evaluations" in finished["stop_reason"]
    assert f"at step {best_step}" in finished["stop_reason"]
    assert [e["step"] for e in events_of(run_dir, "checkpoint")] == [s for s, _ in evals]  # saved at each eval
    _adapter_matches_checkpoint(run_dir, best_step)

    found = history.read(run_dir)
    assert found.best_step == best_step and found.stop_reason == finished["stop_reason"]
    assert (found.ending.best_step, found.ending.artifact_step) == (best_step, best_step)
    summary = runs.summarize(run_dir)
    assert (summary.best_step, summary.best_eval_loss, summary.status) == (best_step, best_loss, "finished")
    assert summary.stop_reason == finished["stop_reason"]


def test_a_run_that_improves_to_the_end_has_no_stop_reason(tiny_model_dir, data_file, runs_tmp):
    changes = {"train.max_steps": 3, "train.eval_steps": 1, "train.early_stopping_patience": 3}
    cfg = tiny_config(tiny_model_dir, data_file, "lora", **{**changes, "train.eval_generations": 0})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    (finished,) = events_of(run_dir, "finished")
    assert finished["step"] == 3 and finished["stop_reason"] is None and finished["artifact_step"] == 3
    assert history.read(run_dir).stop_reason is None


def test_resume_with_early_stopping_and_best_checkpoint_ends_as_the_uninterrupted_run(
    tiny_model_dir, data_file, runs_tmp
):
    changes = {**DIVERGING, "train.early_stopping_patience": 3, "train.load_best_at_end": True}
    cfg = tiny_config(tiny_model_dir, data_file, "lora", **{**changes, "train.eval_generations": 0})
    reference = runs.create_run(cfg)
    assert train.run(cfg, reference) == "finished"
    (expected,) = events_of(reference, "finished")
    assert expected["stop_reason"] and expected["step"] == expected["best_step"] + 3

    # Stopped after the best evaluation, with patience already counting: a resume that forgot the count (or the
    # best checkpoint) would train past the reference's last step or keep other weights.
    run_dir = runs.create_run(cfg)
    stop = threading.Event()
    watcher = stop_when(run_dir, stop, expected["best_step"] + 1, kind="eval")  # Stop once that evaluation is written
    assert train.run(cfg, run_dir, stop) == "stopped"
    watcher.join(5)
    at = events_of(run_dir, "stopped")[0]["step"]
    assert expected["best_step"] < at < expected["step"]
    assert train.run(cfg, run_dir, resume=True) == "finished"
    (finished,) = events_of(run_dir, "finished")
    for key in ("step", "best_step", "artifact_step", "stop_reason"):
        assert finished[key] == expected[key], key
    _adapter_matches_checkpoint(run_dir, finished["best_step"])
    assert runs.summarize(run_dir).best_step == expected["best_step"]


def test_stale_checkpoints_never_include_the_best_one():
    found = [Path(history.checkpoint_name(s)) for s in (2, 4, 6, 8)]
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(trainer.stale_checkpoints(found, 2, None)) == names(found[:2])
    assert names(trainer.stale_checkpoints(found, 2, found[0])) == names(found[1:3])  # best + the newest
    assert names(trainer.stale_checkpoints(found, 1, found[1])) == names([found[0], found[2]])
    assert names(trainer.stale_checkpoints(found, 3, found[3])) == names(found[:1])  # the best is the newest


# ---- what they need ----------------------------------------------------------------------------------------------
def test_early_stopping_and_best_checkpoint_without_validation_fail_with_the_fix(tiny_model_dir, data_file, runs_tmp):
    for val_size in (0.0, 0.01):  # none asked for; and a share that holds out no record of 24
        changes = {"data.val_size": val_size, "train.early_stopping_patience": 2, "train.load_best_at_end": True}
        cfg = tiny_config(tiny_model_dir, data_file, "lora", **changes)
        run_dir = runs.create_run(cfg)
        assert train.run(cfg, run_dir) == "failed"
        (failed,) = events_of(run_dir, "failed")
        assert "train.early_stopping_patience" in failed["message"] and "data.val_size" in failed["message"]
        assert "Traceback" not in failed["message"]
        if val_size == 0.0:
            assert "train.load_best_at_end" in failed["message"]  # validate() lists every problem
