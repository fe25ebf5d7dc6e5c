"""The TrainerCallback that writes a run's events.jsonl (rank 0), honours Stop at the next optimizer step and samples.

Every event goes through `app.history.append_event` (the file is the UI's one channel); sample answers are greedy
generations from prompts rendered exactly as training renders them (app.data's template and system prompt).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from app import libs
from app.config import RunConfig

libs.load()  # transformers, whole, under the lock another thread's first use waits on (see app/libs.py)

from transformers import TrainerCallback  # noqa: E402

from app import history, learned, tracking  # noqa: E402

if TYPE_CHECKING:
    from app.trainer import RunTrainer

log = logging.getLogger("tunedesk.train")

SAMPLE_TOKENS = 48
"""New tokens per sample generation: enough for a sentence, ~1 s on the default model on a CPU."""
ANSWER_BATCH = 4
"""Prompts decoded together by greedy_answers (samples, evaluation answers, the did-it-learn check)."""
TRL_METRICS = dict(
    zip(
        history.PREFERENCE_METRICS,
        ("rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies"),
        strict=True,
    )
)
"""Our event field (history.PREFERENCE_METRICS) -> the name TRL's preference trainers log it under (eval_ prefixed
in an evaluation's logs); trackers get TRL's own names."""


class EventsCallback(TrainerCallback):
    """Writes events.jsonl (rank 0 only), honours Stop at the next optimizer step, and generates samples."""

    def __init__(self, run_dir: Path, cfg: RunConfig, stop: threading.Event, started: dict, main: bool):
        self.run_dir, self.cfg, self.stop, self.started, self.main = run_dir, cfg, stop, started, main
        self.trainer: RunTrainer | None = None  # TuneTrainer, or a preference run's TRL trainer
        self.stopped = False
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        self.best_eval: float | None = None
        self.elapsed_before = float(started.pop("elapsed_before", 0.0))
        self.t_begin = self.t_step = time.perf_counter()
        self.train_s = 0.0
        self.first_step = 0

    def event(self, type: str, **fields: Any) -> None:
        if self.main:
            history.append_event(self.run_dir, type, **fields)

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step
        kind = "resumed" if self.started.get("from_step") is not None else "started"
        self.event(kind, total_steps=state.max_steps, **self.started)
        skipped = learned.not_for(self.cfg.objective)
        if skipped and self.cfg.train.learn_check:
            log.info("%s", skipped)
        elif self.main and self.trainer is not None:  # the base side of "did it learn?", before the first step
            model, tokenizer, store = kwargs["model"], kwargs["processing_class"], self.trainer.train_dataset.store
            learned.record_base(self.run_dir, self.cfg, model, tokenizer, store, state.global_step)
        self.t_begin = time.perf_counter()  # after the check: its seconds are not training time

    def on_step_begin(self, args, state, control, **kwargs):
        self.t_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.train_s += time.perf_counter() - self.t_step
        every = self.cfg.train.sample_every
        if every and state.global_step % every == 0 and self.cfg.train.sample_prompts:
            self.sample(state.global_step, kwargs.get("processing_class"))
        if self._should_stop(args):
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # a checkpoint at this step, so Resume continues exactly here
        return control

    def _should_stop(self, args: Any) -> bool:
        flag = self.stop.is_set()
        if args.world_size > 1 and torch.distributed.is_initialized():
            t = torch.tensor([1.0 if flag else 0.0], device=args.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)  # every rank stops at the same step
            flag = bool(t.item())
        return flag

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "eval_loss" in logs:
            self.last_eval = logs["eval_loss"]
            self.best_eval = min(self.best_eval or math.inf, self.last_eval)
            scores = {key: logs[key] for key in (f"eval_{name}" for name in history.GENERATION_METRICS) if key in logs}
            scores.update(preference_fields(logs, "eval_"))
            self.event(
                "eval", step=state.global_step, epoch=_round(state.epoch, 4), eval_loss=logs["eval_loss"], **scores
            )
        if "loss" in logs:
            self.last_loss = logs["loss"]
            self.event("log", **self.log_fields(state, logs))

    def log_fields(self, state: Any, logs: dict) -> dict:
        """The `log` event: the Trainer's figures, with the token rates RunTrainer.log added for every tracker, and a
        preference run's rewards."""
        elapsed = time.perf_counter() - self.t_begin
        done = state.global_step - self.first_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
        return {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": _round(state.epoch, 4),
            "loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": _round(logs.get("grad_norm"), 6),
            "tokens_per_s": logs.get("tokens_per_s"),
            "label_tokens_per_s": logs.get("label_tokens_per_s"),
            "elapsed_s": round(self.elapsed_before + elapsed, 2),
            "eta_s": round(eta, 1) if eta is not None else None,
            **preference_fields(logs, ""),
        }

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / history.checkpoint_name(state.global_step)
        self.event("checkpoint", step=state.global_step, path=str(path))

    def sample(self, step: int, tokenizer: Any) -> None:
        if not self.main or self.trainer is None or tokenizer is None:
            return
        answers = generate_samples(self.trainer.model, tokenizer, self.cfg, self.cfg.train.sample_prompts[:3])
        self.event("sample", step=step, samples=answers)
        tracking.log_text(self.trainer, "samples", tracking.samples_text(answers), step)


def preference_fields(logs: dict, prefix: str) -> dict[str, float]:
    """The preference figures in a Trainer log (TRL's names, `prefix` "eval_" in an evaluation's) as event fields
    (`<prefix>reward_margin`, ...); {} for a supervised run's log.

    >>> preference_fields({"loss": 0.6, "rewards/margins": 0.25, "eval_rewards/margins": 0.5}, "")
    {'reward_margin': 0.25}
    """
    found = {prefix + ours: logs.get(prefix + theirs) for ours, theirs in TRL_METRICS.items()}
    return {name: _round(value, 6) for name, value in found.items() if value is not None}


def _round(value: Any, digits: int) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) else value


def render_prompt(tokenizer: Any, cfg: RunConfig, prompt: str) -> str:
    """The prompt exactly as training renders it (app.data's template and system prompt), up to where the answer
    starts, so samples show what the model learned in the format it learned it."""
    from app import data as data_mod

    turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
    example = data_mod.Example(turns, 0, {"instruction": prompt, "input": ""})
    segments = data_mod.render_segments(example, tokenizer, cfg.data.template, cfg.data.system_prompt)
    return segments[0][0]


def generate_samples(model: Any, tokenizer: Any, cfg: RunConfig, prompts: list[str]) -> list[dict]:
    """Greedy answers (48 new tokens) to a few prompts, in eval mode; the model is put back in train mode."""
    rows = [tokenizer(render_prompt(tokenizer, cfg, p), add_special_tokens=False)["input_ids"] for p in prompts]
    with evaluating(model):
        answers = greedy_answers(model, tokenizer, [(ids, SAMPLE_TOKENS) for ids in rows])
    return [{"prompt": prompt, "answer": answer} for prompt, answer in zip(prompts, answers, strict=True)]


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[Any]:
    """The model in eval mode (no dropout) inside the block, then back in the mode it was in (training's)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def greedy_answer(model: Any, tokenizer: Any, prompt_ids: Any, max_new_tokens: int = SAMPLE_TOKENS) -> str:
    """The greedy answer to one tokenized prompt, in whatever mode the model is (use `evaluating`)."""
    return greedy_answers(model, tokenizer, [(prompt_ids, max_new_tokens)])[0]


def greedy_answers(model: Any, tokenizer: Any, prompts: list[tuple[Any, int]], batch: int = ANSWER_BATCH) -> list[str]:
    """Greedy answers to tokenized prompts, each with its own new-token budget, `batch` prompts decoded together
    (app.evaluate.generate_answers: left-padded, the Decoder chat and the Evaluate tab answer with), in whatever
    mode the model is (use `evaluating`). Samples, the evaluation's scored answers (app.trainer) and the "did it
    learn?" check (app.learned) answer with it.

    Decoding several prompts together reads the weights once per new token for all of them, and decoding a small
    model on a CPU is bound by reading its weights: 4 answers of the default model took 6.2 s instead of 14.4 s
    one by one (measured with transformers' generate; BENCHMARKS.md, "After: the padding mask and batched
    answers")."""
    from app.evaluate import generate_answers

    rows = [(np.asarray(ids, dtype=np.int64).reshape(-1).tolist(), int(n)) for ids, n in prompts]
    step = max(int(batch), 1)
    out: list[str] = []
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        out += generate_answers(model, tokenizer, [ids for ids, _ in part], [n for _, n in part])
    return out


def peak_memory() -> dict:
    import resource

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # KiB on Linux
    if torch.cuda.is_available():
        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak
