"""The Hugging Face Trainer a run trains with: its TrainingArguments from RunConfig, our batches, the objective's loss.

`TuneTrainer` differs from a plain `Trainer` in three ways: batches come from `app.batching`'s `EpochSampler`
(length-grouped, or packed with per-example position_ids); the loss is the objective's (`app.objectives`), which
computes logits only where the shifted label is not -100; and a checkpoint is written under a staging folder, then
renamed into place, so a crash mid-save never leaves a half-written checkpoint that resume would pick.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from app import libs
from app.batching import EpochSampler
from app.config import RunConfig

libs.load()  # transformers, whole, under the lock another thread's first use waits on (see app/libs.py)

from transformers import Trainer, TrainingArguments  # noqa: E402

from app import devices, history, modeling, objectives  # noqa: E402
from app.objectives import LabelGather, Objective  # noqa: E402

OPTIMIZERS = {  # config name -> transformers OptimizerNames
    "adamw_torch": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
}
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def training_arguments(
    cfg: RunConfig, run_dir: Path, device: str, progress: bool, evaluate: bool
) -> TrainingArguments:
    t = cfg.train
    dtype = modeling.resolve_dtype(t.precision, device)
    save_steps = t.save_steps if t.save_steps > 0 else None
    eval_steps = t.eval_steps or save_steps or 10**9  # 10**9: only the evaluation at the end
    return TrainingArguments(
        output_dir=str(run_dir / history.CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        lr_scheduler_type=SCHEDULERS[t.lr_scheduler],
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=OPTIMIZERS[t.optimizer],
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_steps,
        prediction_loss_only=True,
        seed=t.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=devices.kind(device) == devices.CPU,
        dataloader_pin_memory=devices.kind(device) == devices.CUDA,
        dataloader_num_workers=0,  # collation is a few numpy copies; worker processes would only add memory
        remove_unused_columns=False,
        label_names=["labels"],
        report_to="none",
        disable_tqdm=not progress,
        ddp_find_unused_parameters=False,  # gradient checkpointing is enabled by modeling.prepare_for_method
    )


class TuneTrainer(Trainer):
    """Trainer with our batches, the objective's loss, counters for tokens/s and atomic checkpoints."""

    loss_is_scaled_for_ga = True  # the objective's loss divides by the label count of the whole accumulated step

    def __init__(
        self,
        *args: Any,
        sampler: EpochSampler,
        gather: LabelGather,
        eval_collator: Any = None,
        objective: Objective | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sampler, self.gather, self.eval_collator = sampler, gather, eval_collator
        self.objective = objective or objectives.get(objectives.DEFAULT)
        self.model_accepts_loss_kwargs = True  # makes the Trainer count labels per step -> num_items_in_batch
        self.tokens_seen = 0
        self.labels_seen = 0

    def _get_train_sampler(self, train_dataset: Any = None) -> EpochSampler:
        return self.sampler

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        train_collator = self.data_collator
        self.data_collator = self.eval_collator or train_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler:
        return torch.utils.data.SequentialSampler(eval_dataset)  # RowDataset.build(sort=True) already sorted it

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, count = self.objective.loss(model, inputs, self.gather, num_items_in_batch)
        if model.training:
            self.tokens_seen += int(inputs.get("num_tokens", 0))
            self.labels_seen += count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo for a token mean
        return (loss, {}) if return_outputs else loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write checkpoint-<step> under a staging folder, then rename it into place: a crash mid-save never
        leaves a half-written checkpoint that resume would pick."""
        final_root = self.args.output_dir
        staging = os.path.join(final_root, ".partial")
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # half a checkpoint only holds space the failure report needs
            raise
        finally:
            self.args.output_dir = final_root
        self.accelerator.wait_for_everyone()  # every rank has written its rng_state_<rank>.pth
        if self.args.should_save:
            name = history.checkpoint_name(self.state.global_step)
            target = Path(final_root) / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(Path(staging) / name, target)
            shutil.rmtree(staging, ignore_errors=True)
            for old in history.checkpoints(Path(final_root).parent)[: -self.args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)  # keep the newest save_total_limit, by step
        self.accelerator.wait_for_everyone()
