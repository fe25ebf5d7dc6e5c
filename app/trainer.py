"""The Hugging Face Trainer a run trains with: its TrainingArguments from RunConfig, our batches, the objective's loss.

`RunTrainer` is what every run's Trainer adds, whatever the objective (TuneTrainer here, TRL's preference trainers
in app.preference_train): tokens/s and peak memory in each training log; a checkpoint written under a staging
folder, then renamed into place, so a crash mid-save never leaves a half-written checkpoint that resume would pick;
and how training ended (best evaluation, the artifact's step, early stopping's reason). `training_kwargs` is the one
table of TrainingArguments fields from the config, which TRL's configs are built from too.

`TuneTrainer` (supervised fine-tuning) also takes its batches from `app.batching`'s `EpochSampler` (length-grouped,
or packed with per-example position_ids); its loss is the objective's (`app.objectives`), which computes logits only
where the shifted label is not -100; on the CPU it trains each micro-batch in chunks of rows (app.accel.row_splits:
the same gradient, a chunk's activations at a time); and each evaluation also answers a few validation prompts and
scores them (ROUGE-L, exact match) beside the eval loss.

Early stopping (`EarlyStoppingCallback`) and load_best_at_end are transformers' own, on eval_loss; this module
lines saving up with evaluation for them and keeps the best checkpoint out of the rotation.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app import libs
from app.batching import IGNORE, EpochSampler, TokenStore, split_batch
from app.config import RunConfig

libs.load()  # transformers, whole, under the lock another thread's first use waits on (see app/libs.py)

from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from app import accel, devices, history, modeling, objectives, tracking  # noqa: E402
from app import metrics as text_metrics  # noqa: E402
from app.objectives import LabelGather, Objective  # noqa: E402
from app.train_events import evaluating, greedy_answers, peak_memory  # noqa: E402

OPTIMIZERS = {  # config name -> transformers OptimizerNames
    "adamw_torch": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit",
}
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
BEST_METRIC = "eval_loss"
"""What early stopping and load_best_at_end compare (lower is better)."""
GENERATION_TOKENS = 256
"""Most new tokens an evaluation answer may have: the reference's length plus 16 (an answer that runs on past that
has already lost exact match, and ROUGE-L only falls further), capped so one long reference cannot stall an eval."""


def training_arguments(
    cfg: RunConfig, run_dir: Path, device: str, progress: bool, evaluate: bool
) -> TrainingArguments:
    return TrainingArguments(**training_kwargs(cfg, run_dir, device, progress, evaluate))


def training_kwargs(cfg: RunConfig, run_dir: Path, device: str, progress: bool, evaluate: bool) -> dict[str, Any]:
    """The TrainingArguments fields a run sets from its config: one table that TRL's preference configs (subclasses
    of TrainingArguments, app.preference_train) are built from too, so steps, saving, evaluation, precision and
    trackers mean the same whatever the objective. Liger kernels, torch.compile and the optimizer are app.accel's
    plan for this device (transformers applies the first two: use_liger_kernel patches the model's RMSNorm, SwiGLU
    and RoPE; our loss already computes logits only at label positions, so Liger's fused linear cross-entropy, which
    runs when labels go into the model, is not the one sft uses)."""
    t = cfg.train
    dtype = modeling.resolve_dtype(t.precision, device)
    plan = accel.plan(cfg, device)
    save_steps = t.save_steps if t.save_steps > 0 else None
    eval_steps = t.eval_steps or save_steps or 10**9  # 10**9: only the evaluation at the end
    keep_best = evaluate and t.load_best_at_end
    if keep_best:
        save_steps = eval_steps  # a checkpoint at every evaluation, so the best one is on disk to load at the end
    tracks_best = evaluate and (keep_best or t.early_stopping_patience > 0)
    return dict(
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
        optim=OPTIMIZERS[plan.optimizer],
        use_liger_kernel=plan.liger_kernel,
        torch_compile=plan.torch_compile,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_steps,
        load_best_model_at_end=keep_best,
        metric_for_best_model=BEST_METRIC if tracks_best else None,
        greater_is_better=False if tracks_best else None,
        restore_callback_states_from_checkpoint=tracks_best,  # early stopping's patience count survives a resume
        prediction_loss_only=True,
        seed=t.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=devices.kind(device) == devices.CPU,
        dataloader_pin_memory=devices.kind(device) == devices.CUDA,
        dataloader_num_workers=0,  # collation is a few numpy copies; worker processes would only add memory
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=tracking.report_to(cfg),  # transformers' own TensorBoard / W&B / MLflow / Trackio callbacks
        disable_tqdm=not progress,
        ddp_find_unused_parameters=False,  # gradient checkpointing is enabled by modeling.prepare_for_method
    )


class RunTrainer:
    """What every trainer of a run adds to its Hugging Face Trainer, whatever the objective: tokens/s and peak memory
    in each training log, checkpoints written under a staging folder and renamed into place (a crash mid-save never
    leaves a half-written checkpoint that resume would pick), the best checkpoint kept out of the rotation, and how
    training ended. Mixed in before the Trainer class: TuneTrainer (supervised) and app.preference_train's TRL
    trainers (DPO, ORPO, SimPO, KTO). Subclasses count `tokens_seen` / `labels_seen` in their compute_loss."""

    def _start_counters(self) -> None:
        """Call at the end of __init__: the counters behind tokens/s, and the clock that times optimizer steps."""
        self.tokens_seen = 0
        self.labels_seen = 0
        self.clock = StepClock()
        self.callback_handler.callbacks.insert(0, self.clock)  # first: its step ends before samples are generated
        self._rate_mark = (0.0, 0, 0)  # step seconds, tokens, label tokens at the last training log

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add tokens/s, label tokens/s and peak memory to each training log before the callbacks get it, so
        events.jsonl and every tracker (TensorBoard, W&B, MLflow, Trackio) show the same figures."""
        if "loss" in logs:
            logs.update(self.rates(), **peak_memory())
        super().log(logs, start_time)

    def rates(self) -> dict[str, float]:
        """Tokens/s and label tokens/s of all ranks since the last training log, over the seconds spent in optimizer
        steps (evaluation, samples and checkpoint saves between them do not count)."""
        now = (self.clock.seconds, self.tokens_seen, self.labels_seen)
        (s0, t0, l0), self._rate_mark = self._rate_mark, now
        span = max(now[0] - s0, 1e-9)
        world = self.args.world_size
        return {
            "tokens_per_s": round((now[1] - t0) * world / span, 1),
            "label_tokens_per_s": round((now[2] - l0) * world / span, 1),
        }

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
        name = history.checkpoint_name(self.state.global_step)
        best = self._point_at_best(final_root)
        if self.args.should_save:
            if best is not None:  # trainer_state.json names the best checkpoint where it will be, for resume
                self.state.save_to_json(os.path.join(staging, name, "trainer_state.json"))
            target = Path(final_root) / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(Path(staging) / name, target)
            shutil.rmtree(staging, ignore_errors=True)
            found = history.checkpoints(Path(final_root).parent)
            for old in stale_checkpoints(found, self.args.save_total_limit, best):
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _point_at_best(self, root: str) -> Path | None:
        """With load_best_at_end: the best evaluation's checkpoint folder under `root`, recorded as the state's
        best_model_checkpoint (transformers looked for it under the staging folder, where only the checkpoint being
        saved is); None when not keeping the best or its folder is gone."""
        step = self.state.best_global_step
        if not self.args.load_best_model_at_end or not step:
            return None
        path = Path(root) / history.checkpoint_name(step)
        if step != self.state.global_step and not path.is_dir():
            return None
        self.state.best_model_checkpoint = str(path)
        return path

    # ---- how the training ended, for the run's final event ----------------------------------------------------
    def best_evaluation(self) -> tuple[int | None, float | None]:
        """(step, eval loss) of the lowest eval loss so far, resumed sessions included (the state's log history
        comes back with the checkpoint); the earliest of equal ones, as transformers' best-model tracking picks."""
        evals = [(e["eval_loss"], e["step"]) for e in self.state.log_history if _finite(e.get(BEST_METRIC))]
        if not evals:
            return None, None
        loss, step = min(evals, key=lambda pair: pair[0])
        return step, loss

    def artifact_step(self) -> int:
        """The step whose weights the model holds now: the best checkpoint's when load_best_at_end loaded it."""
        best = self.state.best_model_checkpoint
        if self.args.load_best_model_at_end and best and os.path.isdir(best):
            return history.checkpoint_step(best) or self.state.global_step
        return self.state.global_step

    def early_stop_reason(self) -> str | None:
        """A sentence saying why early stopping ended training before max_steps; None when it did not."""
        stopper = next((c for c in self.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)), None)
        if stopper is None or self.state.global_step >= self.state.max_steps:
            return None
        patience = stopper.early_stopping_patience
        if stopper.early_stopping_patience_counter < patience:
            return None
        step, loss = self.best_evaluation()
        return (
            f"early stopping: eval loss did not improve for {patience} evaluation{'s' * (patience != 1)} in a row; "
            f"best {loss:.4g} at step {step} of {self.state.max_steps}"
        )


class TuneTrainer(RunTrainer, Trainer):
    """Trainer with our batches, the objective's loss, counters for tokens/s and atomic checkpoints."""

    loss_is_scaled_for_ga = True  # the objective's loss divides by the label count of the whole accumulated step

    def __init__(
        self,
        *args: Any,
        sampler: EpochSampler,
        gather: LabelGather,
        eval_collator: Any = None,
        objective: Objective | None = None,
        eval_generations: int = 0,
        chunk_tokens: int = 0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sampler, self.gather, self.eval_collator = sampler, gather, eval_collator
        self.chunk_tokens = chunk_tokens if self.args.world_size == 1 else 0  # DDP syncs once per backward
        self.objective = objective or objectives.get(objectives.DEFAULT)
        self.eval_generations = eval_generations
        self._generation_set: list[tuple[np.ndarray, str, int]] | None = None
        self.model_accepts_loss_kwargs = True  # makes the Trainer count labels per step -> num_items_in_batch
        self._start_counters()

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

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """The eval loss, plus `<prefix>_rougeL` and `<prefix>_exact_match` of greedy answers to the first
        eval_generations validation prompts (rank 0), so the `eval` event and every tracker get them."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.eval_generations > 0 and self.is_world_process_zero():
            scores = self.generation_scores()
            output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in scores.items()})
        return output

    def generation_scores(self) -> dict[str, float]:
        """Mean ROUGE-L and exact match (0-100, app.metrics) of greedy answers to the fixed validation prompts
        against their references; {} when no validation example has a reference to score against."""
        if self._generation_set is None:
            store = getattr(self.eval_dataset, "store", None)
            found = generation_set(store, self.processing_class, self.eval_generations) if store else []
            self._generation_set = found
        if not self._generation_set:
            return {}
        prompts = [(ids, budget) for ids, _, budget in self._generation_set]
        with evaluating(self.model):
            answers = greedy_answers(self.model, self.processing_class, prompts)
        scores = text_metrics.score(answers, [reference for _, reference, _ in self._generation_set])
        return {name: round(scores[name], 2) for name in history.GENERATION_METRICS}

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """The Trainer's step, once per chunk of rows when the batch is wider than chunk_tokens (app.accel
        .row_splits): each chunk's loss is divided by the label count of the whole step, so the gradients summed
        over the chunks' backward passes and the returned loss are the whole batch's."""
        chunks = split_batch(inputs, self.chunk_tokens) if self.chunk_tokens else [inputs]
        if len(chunks) == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:
            num_items_in_batch = int((inputs["labels"][:, 1:] != IGNORE).sum())
        del inputs
        return sum(super(TuneTrainer, self).training_step(model, c, num_items_in_batch) for c in chunks)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, count = self.objective.loss(model, inputs, self.gather, num_items_in_batch)
        if model.training:
            self.tokens_seen += int(inputs.get("num_tokens", 0))
            self.labels_seen += count
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks; undo for a token mean
        return (loss, {}) if return_outputs else loss


class StepClock(TrainerCallback):
    """Seconds spent inside optimizer steps (forward, backward, optimizer), the time tokens/s is measured over."""

    def __init__(self):
        self.seconds = 0.0
        self._t = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self._t


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value)


def stale_checkpoints(found: list[Path], limit: int, best: Path | None) -> list[Path]:
    """The checkpoints rotation deletes (`found` oldest first): all but the newest `limit`, never `best` (the one
    load_best_at_end keeps), which then takes the place of the oldest kept one; the newest always stays, since
    resume continues from it (so limit 1 keeps two, as transformers' own rotation does).

    >>> [p.name for p in stale_checkpoints([Path(f"checkpoint-{s}") for s in (1, 2, 3, 4)], 2, Path("checkpoint-1"))]
    ['checkpoint-2', 'checkpoint-3']
    """
    keep = found[-limit:]
    best_step = history.checkpoint_step(best) if best is not None else None
    if best_step is not None and best_step not in {history.checkpoint_step(p) for p in keep}:
        keep = [p for p in found if history.checkpoint_step(p) == best_step] + found[-max(limit - 1, 1) :]
    return [p for p in found if p not in keep]


def answer_span(labels: np.ndarray) -> tuple[int, int] | None:
    """[start, end) of the last answer in a tokenized example: its last run of labelled tokens (the final assistant
    turn with its end-of-turn token); None when there is none or no prompt before it (train_on_prompt labels every
    token, so where the answer starts is not in the tokens).

    >>> answer_span(np.array([-100, 7, -100, -100, 8, 9, -100]))
    (4, 6)
    """
    labelled = np.flatnonzero(labels != IGNORE)
    if not len(labelled):
        return None
    breaks = np.flatnonzero(np.diff(labelled) > 1)
    start = int(labelled[breaks[-1] + 1] if len(breaks) else labelled[0])
    return (start, int(labelled[-1]) + 1) if start > 0 else None


def generation_set(store: TokenStore, tokenizer: Any, count: int) -> list[tuple[np.ndarray, str, int]]:
    """The first `count` validation examples with a reference answer, as (prompt ids, reference text, new-token
    budget). The prompt is the example's own tokens up to its last answer, exactly as training rendered and
    tokenized it; examples whose answer is empty (or cannot be told from the prompt) are skipped."""
    out = []
    for i in range(len(store)):
        span = answer_span(store.labels_of(i))
        if span is None:
            continue
        ids = store.ids_of(i)
        reference = tokenizer.decode(ids[span[0] : span[1]].tolist(), skip_special_tokens=True).strip()
        if reference:
            budget = min(span[1] - span[0] + 16, GENERATION_TOKENS)
            out.append((ids[: span[0]].astype(np.int64), reference, budget))
        if len(out) == count:
            break
    return out
