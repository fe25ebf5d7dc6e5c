"""Preference training (DPO, ORPO, SimPO, KTO) with TRL's trainers, inside the same run as supervised training.

app.train.build() asks `make_trainer` for the Trainer when the config's objective is a preference one; everything
around it is shared: the run folder, the background job, events.jsonl (EventsCallback), Stop at the next step,
Resume from a checkpoint, the trackers (app.tracking.attach) and saving. The TRL trainer owns the loss and logs
what preference users watch (rewards/margins, rewards/chosen, rewards/rejected, rewards/accuracies, train and eval);
app.trainer.RunTrainer, mixed in before it, adds what every run's trainer has: tokens/s, staged checkpoints, the best
evaluation and early stopping's reason.

The reference model (DPO and KTO; ORPO and SimPO have none), by preference.reference:
    auto        LoRA/QLoRA: the base with the adapter switched off (no second copy); full/freeze: a frozen copy
    copy        always a frozen copy of the base, loaded as the run loads it
    precompute  the reference's log-probabilities computed once before training, no copy held while training
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from app import libs, objective_table
from app.batching import IGNORE
from app.config import RunConfig

libs.load()  # transformers, whole, under the lock another thread's first use waits on (see app/libs.py)

from app.objectives import Objective  # noqa: E402
from app.trainer import RunTrainer, training_kwargs  # noqa: E402

log = logging.getLogger("tunedesk.train")

REF_ADAPTER = "ref"
"""The adapter TRL adds to a PEFT model as its reference (a copy of the fresh adapter)."""


class PreferenceTrainer(RunTrainer):
    """RunTrainer for a TRL preference trainer: counts each batch's tokens and answer tokens for tokens/s."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._start_counters()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            tokens, answers = batch_tokens(inputs)
            self.tokens_seen += tokens
            self.labels_seen += answers
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def batch_tokens(inputs: dict[str, Any]) -> tuple[int, int]:
    """(tokens, answer tokens) of one TRL preference batch. DPO and KTO collate prompt+answer rows with an
    attention_mask and a completion_mask; ORPO and CPO one row per side (chosen_/rejected_ attention masks, labels
    -100 on the prompt)."""
    if "completion_mask" in inputs:
        return int(inputs["attention_mask"].sum()), int(inputs["completion_mask"].sum())
    sides = ("chosen", "rejected")
    tokens = sum(int(inputs[f"{side}_attention_mask"].sum()) for side in sides)
    return tokens, sum(int((inputs[f"{side}_labels"] != IGNORE).sum()) for side in sides)


@cache
def trainer_class(objective: Objective) -> type:
    """The objective's TRL trainer with PreferenceTrainer mixed in before it (its checkpoints staged, its logs
    carrying tokens/s), made once per objective."""
    module, trainer_name, _ = objective.trl
    base = getattr(importlib.import_module(module), trainer_name)
    return type(f"Tune{trainer_name}", (PreferenceTrainer, base), {})


def arguments(cfg: RunConfig, objective: Objective, run_dir: Path, device: str, progress: bool, evaluate: bool):
    """The objective's TRL config: the run's TrainingArguments fields (app.trainer.training_kwargs) plus the
    objective's own (objectives' settings). Gradient checkpointing is off here because
    modeling.prepare_for_method already switched it on when train.gradient_checkpointing asks (TRL's default is
    on); max_length is data.max_seq_len, per sequence (prompt + one answer)."""
    module, _, config_name = objective.trl
    config_class = getattr(importlib.import_module(module), config_name)
    kwargs = training_kwargs(cfg, run_dir, device, progress, evaluate)
    return config_class(
        **kwargs, **objective.settings(cfg), max_length=cfg.data.max_seq_len, gradient_checkpointing=False
    )


def frozen(model: Any) -> Any:
    """`model` in eval mode with every weight frozen: the reference never trains."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def make_trainer(
    cfg: RunConfig,
    objective: Objective,
    model: Any,
    tokenizer: Any,
    data: Any,
    args: Any,
    callbacks: list[Any],
    load_reference: Callable[[], Any],
) -> Any:
    """The TRL trainer for `objective` over `model` (from modeling.prepare_for_method) and `data`
    (app.preference_data.prepare). `load_reference()` loads the base again for a frozen-copy reference."""
    kwargs: dict[str, Any] = {}
    if objective_table.reference_of(cfg) == objective_table.COPY:  # copy, or auto with full/freeze
        kwargs["ref_model"] = frozen(load_reference())
    with quiet_datasets(args.disable_tqdm):  # TRL tokenizes with datasets.map, one progress bar per pass
        trainer = trainer_class(objective)(
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.val,
            processing_class=tokenizer,
            callbacks=callbacks,
            **kwargs,
        )
    drop_reference_adapter(trainer.accelerator.unwrap_model(trainer.model))
    return trainer


@contextlib.contextmanager
def quiet_datasets(quiet: bool) -> Iterator[None]:
    """datasets' progress bars off inside the block when `quiet` (the app's runs: they would go to its log), then
    as they were."""
    import datasets

    was_on = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def drop_reference_adapter(model: Any) -> None:
    """TRL copies a PEFT model's adapter into a "ref" adapter (DPO, KTO without a ref_model) and takes the reference
    with it; our adapter is fresh (LoRA's B starts at zero), so the copy equals the base with the adapter off, which
    TRL uses when there is no "ref" adapter. Dropping it holds no second adapter (after a precompute too, which
    already used it), and saves and checkpoints only the trained one."""
    if REF_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(REF_ADAPTER)


def session_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """app.preference_data's facts as the `started` event's data fields (the names supervised runs write too)."""
    return {
        "train_examples": facts["train"],
        "val_examples": facts["val"],
        "train_rows": facts["train"],
        "skipped_records": facts["skipped"],
        "truncated": facts["cut"],
        "template": facts["template"],
    }
