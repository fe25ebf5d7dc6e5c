"""Did it learn? The base and the tuned model side by side on a few training examples, after the run.

    learned.load(run_dir) -> Learned | None    the table and verdict of a run's last session (learned.json)

With train.learn_check = N > 0, rank 0 of a run records:
- at the start of training (EventsCallback.on_train_begin, before the first step), the first N examples of the
  training split with the base model's answer and loss on each: learned_base.json. A fresh LoRA adapter is a
  no-op and full/freeze have not moved yet, so the model is the base; a resumed run reuses the record instead of
  measuring a half-trained model.
- at the end (train._finish, finished or stopped, after the artifact is saved), the tuned model's: learned.json
  (`Learned`: rows + verdict) and a `learned` event with the summary, so the event stream sees it appear.

Answers are greedy (train_events.SAMPLE_TOKENS new tokens) from the prompt exactly as training renders it; the loss
is the mean negative log-likelihood per reference-answer token (nats), app.evaluate.response_nll with the training
masks (app.eval_data.encode_for_eval). The verdict flags a run whose training loss did not fall from its first
logged value, and one whose tuned loss on these examples is not below the base's. Any error here is a logged
warning and no table: the check never fails a run.

torch is imported only inside the functions that run a model: the Train tab's `load` costs no torch import.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app import history, objective_table
from app.config import DataConfig, RunConfig

log = logging.getLogger("tunedesk.learned")

BASE = "learned_base.json"
"""The base model's side, written before the first step; a resume reads it."""
TABLE = "learned.json"
"""The table and verdict, written at the end of each session that trained."""
EVENT = "learned"
"""The event type of the summary in events.jsonl (fields: `Learned.summary()`)."""
MIN_GAIN = 0.01
"""A loss must fall by at least 1% to count: less is noise (a run at learning rate 1e-9 moves it by ~1e-8)."""
WALK = 200
"""Records tokenized at most to find the first N training examples (held-out ones in between are skipped)."""
ADVICE = "try a higher learning rate or more steps"
COLUMNS = ("record", "example", "reference", "base answer", "tuned answer", "base loss", "tuned loss", "change")
"""The table's columns, as `Learned.table()` gives its rows; losses are nats per reference token."""


# ---- the table -------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One training example: its answers and losses (nats per reference token) before and after training."""

    index: int
    """Record number in the data file (0-based)."""
    prompt: str
    reference: str
    base_answer: str
    tuned_answer: str
    base_loss: float | None
    tuned_loss: float | None
    tokens: int
    """Reference tokens the losses average over."""

    @property
    def change(self) -> float | None:
        """tuned - base loss: negative when the tuned model predicts the reference better."""
        if self.base_loss is None or self.tuned_loss is None:
            return None
        return self.tuned_loss - self.base_loss


@dataclass
class Learned:
    """The "did it learn?" result of a run: the rows, the mean losses and the verdict."""

    rows: list[Row]
    step: int
    """The optimizer step the tuned side was measured at."""
    base_loss: float | None
    """Token-weighted mean loss of the base model over the rows (nats per reference token)."""
    tuned_loss: float | None
    first_loss: float | None
    """The run's first and last logged training loss (None with fewer than two logged points)."""
    last_loss: float | None
    flags: list[str] = field(default_factory=list)
    """One plain sentence per sign that the run did not learn; empty when it did."""
    verdict: str = ""
    """The flags, or one sentence that says what improved."""

    @property
    def learned(self) -> bool:
        return not self.flags

    def table(self) -> list[list[Any]]:
        """The rows in COLUMNS order, losses rounded to 4 digits, for a table widget."""
        return [
            [r.index, r.prompt, r.reference, r.base_answer, r.tuned_answer, *map(_r4, (r.base_loss, r.tuned_loss))]
            + [_r4(r.change)]
            for r in self.rows
        ]

    def summary(self) -> dict[str, Any]:
        """The `learned` event's fields."""
        keys = ("step", "base_loss", "tuned_loss", "first_loss", "last_loss", "flags", "verdict")
        return {"examples": len(self.rows), **{k: getattr(self, k) for k in keys}}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Learned:
        return cls(**{**data, "rows": [Row(**r) for r in data["rows"]]})


def _r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def not_for(objective: str) -> str | None:
    """Why the table is not made for `objective` (a preference objective: its data has no single reference
    answer), for the run's log and the Train tab; None when it is made."""
    if not objective_table.get(objective).preference:
        return None
    return (
        f"did it learn? compares answers with one reference answer, which {objective} data does not have; a "
        "preference run shows its reward accuracy and margin (train and eval) instead"
    )


def load(run_dir: str | Path) -> Learned | None:
    """The run's table and verdict; None when the run wrote none (learn_check 0, still training, the check failed)
    or the file cannot be read (logged)."""
    path = Path(run_dir) / TABLE
    try:
        return Learned.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("%s cannot be read (%s); no 'did it learn?' table", path, exc)
        return None


# ---- the verdict -----------------------------------------------------------------------------------------------
def mean_loss(pairs: list[tuple[float | None, int]]) -> float | None:
    """Token-weighted mean of (loss per token, tokens) pairs; None when no pair has a loss.

    >>> mean_loss([(2.0, 1), (1.0, 3), (None, 5)])
    1.25
    """
    kept = [(loss, n) for loss, n in pairs if loss is not None and n > 0]
    tokens = sum(n for _, n in kept)
    return sum(loss * n for loss, n in kept) / tokens if tokens else None


def judge(rows: list[Row], losses: list[float], step: int, what: str = "the adapter") -> Learned:
    """Rows and the run's logged training losses -> the result with its flags and verdict. `what` names what
    training changed ("the adapter", or "training" for full/freeze) in the sentence."""
    base = mean_loss([(r.base_loss, r.tokens) for r in rows])
    tuned = mean_loss([(r.tuned_loss, r.tokens) for r in rows])
    first, last = (losses[0], losses[-1]) if len(losses) >= 2 else (None, None)
    found = []
    if first is not None and not _fell(first, last):
        found.append(f"the training loss did not fall: {first:.3f} at the first logged step, {last:.3f} at the last")
    if base is not None and not _fell(base, tuned):
        found.append(
            f"{what} changed nothing: on {len(rows)} training examples the tuned model's loss on the reference "
            f"answers is {_num(tuned)} per token against the base model's {base:.3f}"
        )
    flags = [_sentence(f"{fact}; {ADVICE}") for fact in found]
    verdict = _sentence("; ".join([*found, ADVICE]) if found else _praise(len(rows), base, tuned, first, last))
    return Learned(rows, step, base, tuned, first, last, flags, verdict)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "." if text else ""


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3f}"


def _fell(before: float, after: float | None) -> bool:
    return after is not None and after < before * (1 - MIN_GAIN)


def _praise(n: int, base: float | None, tuned: float | None, first: float | None, last: float | None) -> str:
    parts = []
    if base is not None and tuned is not None:
        parts.append(
            f"on {n} training examples the loss on the reference answers fell from {base:.3f} to {tuned:.3f} per "
            f"token ({(tuned - base) / base:+.0%})"
        )
    if first is not None and last is not None:
        parts.append(f"the training loss fell from {first:.3f} to {last:.3f}")
    return "it learned: " + ", and ".join(parts) if parts else ""


# ---- measuring -------------------------------------------------------------------------------------------------
def record_base(run_dir: Path, cfg: RunConfig, model: Any, tokenizer: Any, store: Any, step: int) -> None:
    """The base side, at the start of training: the first learn_check examples of the training split (`store`:
    its TokenStore), the model's answers and losses, in learned_base.json. Kept when it exists (a resume);
    skipped with a warning when a run resumes without one (its model is no longer the base)."""
    path = Path(run_dir) / BASE
    if not cfg.train.learn_check or path.is_file():
        return
    if step > 0:
        log.warning("learn check: no %s from the run's start to compare with; no table after this run", BASE)
        return
    try:
        examples = training_examples(cfg, tokenizer, store, cfg.train.learn_check)
        measured = measure(model, tokenizer, cfg.data, [e for e, _, _ in examples])
        records = [
            {**_example_json(ex), "prompt": prompt, "reference": ref, "answer": a, "loss": loss, "tokens": n}
            for (ex, prompt, ref), (a, loss, n) in zip(examples, measured, strict=True)
        ]
        _write_json(path, {"step": step, "created": round(time.time(), 3), "examples": records})
    except Exception as exc:  # the check is a nicety: a run never fails for it
        log.warning("learn check: the base model could not be measured (%s); no table after this run", exc)


def record_tuned(run_dir: Path, cfg: RunConfig, model: Any, tokenizer: Any, step: int) -> None:
    """The tuned side, at the end of a session: the same examples, the table and verdict (learned.json) and the
    `learned` event. Without a base record (learn_check 0, or it could not be made) it does nothing."""
    run_dir = Path(run_dir)
    if not cfg.train.learn_check or not (run_dir / BASE).is_file():
        return
    try:
        base = json.loads((run_dir / BASE).read_text(encoding="utf-8"))["examples"]
        measured = measure(model, tokenizer, cfg.data, [_example_of(b) for b in base])
        rows = [
            Row(b["index"], b["prompt"], b["reference"], b["answer"], answer, b["loss"], loss, b["tokens"])
            for b, (answer, loss, _) in zip(base, measured, strict=True)
        ]
        result = judge(rows, history.read(run_dir).losses, step, _changed_what(cfg))
        _write_json(run_dir / TABLE, result.to_json())
        history.append_event(run_dir, EVENT, **result.summary())
    except Exception as exc:  # the check is a nicety: a run never fails for it
        log.warning("learn check: the tuned model could not be compared with the base (%s)", exc)


def training_examples(cfg: RunConfig, tokenizer: Any, store: Any, n: int) -> list[tuple[Any, str, str]]:
    """(example cut at its last answer, prompt text, reference answer) of the first `n` training examples.

    Found without tokenizing the whole data set again: the split keeps file order, so the records are walked in
    order and a record is the next training example when its tokens are the next row of `store` (a held-out or
    dropped record's are not: identical records always land on the same side). At most WALK records are tried."""
    from app import data as data_mod
    from app.eval_data import load_items

    loaded = data_mod.load_from_config(cfg.data).examples
    records = loaded[: min(cfg.data.max_samples or WALK, WALK)]
    found, row = [], 0
    for example in records:
        if len(found) >= n or row >= len(store):
            break
        try:
            ids = data_mod.encode_example(example, tokenizer, cfg.data).input_ids
        except data_mod.RenderError:
            continue
        if store.ids_of(row).tolist() == ids:
            found.append(example)
            row += 1
    if not found:
        raise ValueError(f"none of the first {len(records)} records is in the training split")
    items = load_items(found, cfg, None, tokenizer, None)[0]
    return [(it.example, it.prompt, it.reference) for it in items]


def measure(model: Any, tokenizer: Any, data_cfg: DataConfig, examples: list[Any]) -> list[tuple]:
    """(greedy answer, loss per reference token or None, reference tokens) of each example, in eval mode."""
    from app.eval_data import encode_for_eval
    from app.evaluate import response_nll
    from app.train_events import SAMPLE_TOKENS, evaluating, greedy_answers

    prompts, losses = [], []
    with evaluating(model):
        for example in examples:
            prompt_ids, ids, labels = encode_for_eval(example, tokenizer, data_cfg)
            nll, n = response_nll(model, ids, labels)
            losses.append((nll / n if n and math.isfinite(nll) else None, n))
            prompts.append((prompt_ids, SAMPLE_TOKENS))
        answers = greedy_answers(model, tokenizer, prompts)
    return [(answer, loss, n) for answer, (loss, n) in zip(answers, losses, strict=True)]


def _example_json(example: Any) -> dict[str, Any]:
    return {"index": example.index, "messages": example.messages, "fields": dict(example.fields)}


def _example_of(record: dict[str, Any]) -> Any:
    from app.data import Example

    return Example(record["messages"], record["index"], record["fields"])


def _changed_what(cfg: RunConfig) -> str:
    from app import methods

    return "the adapter" if methods.of(cfg).saves == "adapter" else "training"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written beside and renamed over, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)
