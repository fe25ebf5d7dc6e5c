"""Run history: the one writer and reader of a run's events.jsonl and of its checkpoint folders.

    events.jsonl       one JSON object per line, appended with flush + fsync, so a crash loses at most the line being
                       written; readers skip a truncated last line
    checkpoints/checkpoint-<step>/   resumable Hugging Face Trainer checkpoints (`checkpoint_step` parses the name)

EVENT_FIELDS is the log's schema. `read(run_dir)` folds a whole file into a typed RunHistory; the Train tab's timer
extends one from a byte offset (`read_events` + `RunHistory.fold`). The runs list, the Train tab, evaluate's
efficiency report, export's model card and resume all ask it, so no reader folds the raw lines its own way.
The run folder around these files (config, lock, claim, listing) is app.runs'. No torch import.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from app import files

EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints"
TERMINAL = ("finished", "stopped", "failed")
SESSION_START = ("started", "resumed")
GENERATION_METRICS = ("rougeL", "exact_match")
"""Scores (app.metrics, 0-100) of greedy answers to a few validation prompts that each evaluation adds beside its
loss (train.eval_generations); the trainer logs them as eval_<name>, the `eval` event carries them so."""
PREFERENCE_METRICS = ("reward_margin", "reward_chosen", "reward_rejected", "reward_accuracy")
"""What a preference run (DPO, ORPO, SimPO, KTO) logs besides its loss, as TRL computes them: the mean reward
margin (chosen minus rejected), the chosen and rejected answers' mean rewards, and the share of pairs whose chosen
answer earns the higher reward (0-1; KTO logs none). `log` events carry them, `eval` events as eval_<name>."""
SERIES = (
    "loss", "learning_rate", "tokens_per_s", *PREFERENCE_METRICS,
    "eval_loss", *(f"eval_{name}" for name in (*GENERATION_METRICS, *PREFERENCE_METRICS)),
)  # fmt: skip
"""The names RunHistory.series draws: training figures per logged step, eval_* per evaluation."""

# fmt: off
_SESSION_FIELDS = (
    "total_steps", "method", "objective", "model", "device", "dtype", "trainable_params", "total_params",
    "world_size", "threads", "memory", "train_examples", "val_examples", "train_rows", "skipped_records", "truncated",
    "tokens_per_epoch", "label_tokens_per_epoch", "template", "message",
)
_END_FIELDS = (
    "step", "total_steps", "loss", "eval_loss", "best_eval_loss", "best_step", "artifact_step", "stop_reason",
    "adapter", "model", "train_s", "label_tokens_per_s", "peak_rss_mb", "peak_cuda_mb", "message",
)
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    # A session begins. memory: app.memory's estimate (MemoryEstimate.to_json: total_gib, breakdown_gib, ...) or null.
    "started": _SESSION_FIELDS,
    # A resume's first event: the same, plus the checkpoint it continues from and the run's status before.
    "resumed": (*_SESSION_FIELDS, "from_step", "checkpoint", "previous_status"),
    # Every logging_steps optimizer steps. tokens_per_s counts real tokens, label_tokens_per_s those that carry loss;
    # a preference run adds PREFERENCE_METRICS (and its eval events eval_<name>).
    "log": (
        "step", "total_steps", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "label_tokens_per_s",
        "elapsed_s", "eta_s", *PREFERENCE_METRICS,
    ),
    "eval": ("step", "epoch", "eval_loss", *(f"eval_{name}" for name in (*GENERATION_METRICS, *PREFERENCE_METRICS))),
    "checkpoint": ("step", "path"),
    "sample": ("step", "samples"),  # samples: [{prompt, answer}]
    # A session ends. adapter | model: the saved folder or null; peak_cuda_mb on CUDA only; message when Stop came
    # before training began. best_step / best_eval_loss: the lowest eval loss and its step; artifact_step: the step
    # whose weights adapter/ or model/ holds (best_step with load_best_at_end); stop_reason: why training ended
    # before total_steps when early stopping ended it, else null.
    "finished": _END_FIELDS,
    "stopped": _END_FIELDS,
    "failed": ("message", "error", "step", "peak_rss_mb", "peak_cuda_mb"),  # message: what to do
    # "Did it learn?" after the run (app.learned.Learned.summary; the table itself is learned.json, app.learned.load).
    "learned": ("examples", "step", "base_loss", "tuned_loss", "first_loss", "last_loss", "flags", "verdict"),
}
# fmt: on
"""The event log's schema: each event type and the fields it may carry besides "type" and "time". The trainer
writes no other (a test checks a real run against it) and the history reader reads no other (`_field` checks)."""


# ---- writing and reading ------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers reject them), Paths become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def append_event(run_dir: str | Path, type: str, **fields: Any) -> dict:
    """Append one event line and fsync it; returns the event. A torn last line (crash mid-write) is closed off
    with a newline first, so the new event is never glued onto it."""
    if type not in EVENT_FIELDS:
        raise ValueError(f"unknown event type {type!r}; EVENT_FIELDS declares {', '.join(EVENT_FIELDS)}")
    event = _clean({"type": type, "time": round(time.time(), 3), **fields})
    files.append_json_line(Path(run_dir) / EVENTS, event)
    return event


def read_events(run_dir: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset`, and the offset to pass next time.

    Only complete lines are consumed: a last line without its newline (being written, or torn by a crash) is
    left for the next call. Lines that are not JSON objects are skipped. An offset past the end (the file was
    replaced) starts again from 0.
    """
    path = Path(run_dir) / EVENTS
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if offset > size:
                offset = 0
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and "type" in event:
            events.append(event)
    return events, offset + end


def load_events(run_dir: str | Path) -> list[dict]:
    return read_events(run_dir, 0)[0]


def effective_events(events: list[dict]) -> list[dict]:
    """Events with the ones a resume superseded removed: a run killed at step 9 whose last checkpoint was step 5
    redoes steps 6-9 after resuming, so the first 6-9 log/eval/sample/checkpoint events are dropped. The loss
    curve is then one continuous line."""
    out: list[dict] = []
    for event in events:
        if event["type"] == "resumed":
            step = event.get("from_step") or 0
            out = [e for e in out if e["type"] in SESSION_START or not _superseded(e.get("step"), step)]
        out.append(event)
    return out


def _superseded(step: int | None, from_step: int) -> bool:
    """An event at `step` is redone by a session resumed from `from_step` (events without a step never are)."""
    return step is not None and step > from_step


def has_events(run_dir: str | Path) -> bool:
    return (Path(run_dir) / EVENTS).is_file()


# ---- checkpoint folders ----------------------------------------------------------------------------------------
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint at `step`, as the Hugging Face Trainer names it (checkpoint-<step>)."""
    return f"checkpoint-{step}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint-N folder (a name or a path), else None: the one parser of these names.

    >>> checkpoint_step("runs/x/checkpoints/checkpoint-40"), checkpoint_step("runs/x/adapter")
    (40, None)
    """
    match = _CHECKPOINT.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_folders(folder: str | Path) -> list[Path]:
    """The checkpoint-N folders directly inside `folder`, complete or not, oldest (lowest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (trainer_state.json is written last, and the folder is renamed into
    place only when whole)."""
    return [p for p in checkpoint_folders(Path(run_dir) / CHECKPOINTS) if (p / "trainer_state.json").is_file()]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


# ---- the history: one typed reading of the events -------------------------------------------------------------
def _field(event: dict, name: str) -> Any:
    """event[name] or None; the name must be one EVENT_FIELDS declares for the event's type, so a reader never
    waits for a field nobody writes."""
    assert name in EVENT_FIELDS[event["type"]], f"{event['type']} events carry no {name!r} (see EVENT_FIELDS)"
    return event.get(name)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rewards(event: dict, prefix: str) -> dict[str, float]:
    """The PREFERENCE_METRICS an event carries (as `<prefix><name>`), by name; {} for a supervised run's."""
    found = {name: _number(_field(event, prefix + name)) for name in PREFERENCE_METRICS}
    return {name: value for name, value in found.items() if value is not None}


@dataclass
class Session:
    """A `started` or `resumed` event: what the session trains, where, and the estimate made before it began."""

    kind: str
    time: float
    total_steps: int | None
    method: str | None
    model: str | None
    device: str | None
    trainable_params: int | None
    total_params: int | None
    estimated_memory_bytes: int | None
    """app.memory's estimate (its total_gib, rounded to 1 MiB) in bytes; None when it could not estimate."""
    from_step: int | None = None
    objective: str | None = None
    """sft, dpo, orpo, simpo or kto; None in runs from before objectives."""
    train_examples: int | None = None
    """Training records the session counted (a pushed model's card says how many it learned from)."""


@dataclass
class Ending:
    """A `finished`, `stopped` or `failed` event: how a session ended and what it cost."""

    kind: str
    time: float
    step: int | None = None
    message: str | None = None
    artifact: str | None = None
    """The saved adapter/ or model/ folder, else None."""
    loss: float | None = None
    train_s: float | None = None
    label_tokens_per_s: float | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    best_step: int | None = None
    best_eval_loss: float | None = None
    artifact_step: int | None = None
    """The step whose weights the artifact holds: the best evaluation's with load_best_at_end, else the last."""
    stop_reason: str | None = None
    """Why training ended before its total steps (early stopping's sentence), else None."""
    superseded: bool = False
    """A later resume redid this step (the session was killed after its last checkpoint)."""


@dataclass
class LogPoint:
    step: int
    loss: float | None
    learning_rate: float | None
    tokens_per_s: float | None
    elapsed_s: float | None
    rewards: dict[str, float] = field(default_factory=dict)
    """The PREFERENCE_METRICS this log carries (a preference run's), by name."""


@dataclass
class EvalPoint:
    step: int
    eval_loss: float
    rougeL: float | None = None
    exact_match: float | None = None
    """Generation scores (GENERATION_METRICS, 0-100) of this evaluation; None when it answered no prompts."""
    rewards: dict[str, float] = field(default_factory=dict)
    """The PREFERENCE_METRICS of this evaluation (a preference run's), by name without the eval_ prefix."""


class Sample(NamedTuple):
    step: int
    prompt: str
    answer: str


@dataclass
class Progress:
    """The newest logged numbers, as the progress bar shows them (a `started` event sets total_steps early)."""

    step: int | None = None
    total_steps: int | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    tokens_per_s: float | None = None


@dataclass
class RunHistory:
    """A run's events folded into facts. Points a resume redid are dropped as the resume arrives, so the curves
    are continuous; sessions, endings and samples keep everything that happened. Fold a whole file
    (`history(run_dir)`) or extend one from a byte offset (`read_events` + `fold`, as the Train tab's timer does)."""

    sessions: list[Session] = field(default_factory=list)
    endings: list[Ending] = field(default_factory=list)
    logs: list[LogPoint] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)
    checkpoint_steps: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    phase: str = "created"
    """What the events alone say now: created, starting (a session began, no loss yet), running, or how the last
    session ended (finished, stopped, failed). Whether a live process still writes is `status`'s question."""
    outcome: str = "created"
    """created, open (the last session has not ended) or the last ending's kind; `status_of` adds the lock."""
    checkpoints: list[Path] = field(default_factory=list)
    """Complete checkpoint folders on disk, oldest first (filled by `read(run_dir)`)."""

    def fold(self, events: list[dict]) -> None:
        for event in events:
            self.add(event)

    def add(self, event: dict) -> bool:
        """Apply one event; True when it sets `phase` (a session began or ended, or a loss was logged)."""
        kind = event.get("type")
        if kind == "log":
            return self._log(event)
        if kind == "eval" and _field(event, "eval_loss") is not None:
            scores = {name: _number(_field(event, f"eval_{name}")) for name in GENERATION_METRICS}
            rewards = _rewards(event, "eval_")
            step, loss = int(_field(event, "step") or 0), float(_field(event, "eval_loss"))
            self.evals.append(EvalPoint(step, loss, **scores, rewards=rewards))
        elif kind == "checkpoint":
            self.checkpoint_steps.append(int(_field(event, "step") or 0))
        elif kind == "sample":
            self.samples += [
                Sample(int(_field(event, "step") or 0), s.get("prompt", ""), s.get("answer", ""))
                for s in _field(event, "samples") or []
            ]
        elif kind in SESSION_START:
            self._begin(event)
            return True
        elif kind in TERMINAL:
            self._end(event)
            return True
        return False

    def _log(self, event: dict) -> bool:
        point = LogPoint(
            step=int(_field(event, "step") or 0),
            loss=_number(_field(event, "loss")),
            learning_rate=_number(_field(event, "learning_rate")),
            tokens_per_s=_number(_field(event, "tokens_per_s")),
            elapsed_s=_number(_field(event, "elapsed_s")),
            rewards=_rewards(event, ""),
        )
        self.logs.append(point)
        if point.loss is None:  # a NaN loss is written as null: no point to draw
            return False
        self.progress = Progress(
            point.step, _field(event, "total_steps"), point.elapsed_s, _field(event, "eta_s"), point.tokens_per_s
        )
        self.phase = "running"
        return True

    def _begin(self, event: dict) -> None:
        kind = event["type"]
        memory = _field(event, "memory")
        gib = _number(memory.get("total_gib")) if isinstance(memory, dict) else None
        session = Session(
            kind=kind,
            time=event.get("time", 0.0),
            total_steps=_field(event, "total_steps"),
            method=_field(event, "method"),
            model=_field(event, "model"),
            device=_field(event, "device"),
            trainable_params=_field(event, "trainable_params"),
            total_params=_field(event, "total_params"),
            estimated_memory_bytes=int(gib * 2**30) if gib else None,
            from_step=_field(event, "from_step") if kind == "resumed" else None,
            objective=_field(event, "objective"),
            train_examples=_field(event, "train_examples"),
        )
        self.sessions.append(session)
        self.outcome = "open"
        if kind == "resumed":
            self._supersede(int(session.from_step or 0))
            self.phase = "running"
        else:
            if "total_steps" in event:
                self.progress.total_steps = session.total_steps
            self.phase = "running" if self.steps else "starting"

    def _end(self, event: dict) -> None:
        kind = event["type"]
        artifact = None if kind == "failed" else _field(event, "adapter") or _field(event, "model")
        self.endings.append(
            Ending(
                kind=kind,
                time=event.get("time", 0.0),
                step=_field(event, "step"),
                message=_field(event, "message"),
                artifact=artifact,
                loss=None if kind == "failed" else _number(_field(event, "loss")),
                train_s=None if kind == "failed" else _number(_field(event, "train_s")),
                label_tokens_per_s=None if kind == "failed" else _number(_field(event, "label_tokens_per_s")),
                peak_rss_mb=_number(_field(event, "peak_rss_mb")),
                peak_cuda_mb=_number(_field(event, "peak_cuda_mb")),
                **({} if kind == "failed" else self._best_fields(event)),
            )
        )
        self.outcome = self.phase = kind

    @staticmethod
    def _best_fields(event: dict) -> dict:
        """What a finished or stopped event says about the best evaluation, the artifact's step and early stopping."""
        best, artifact = _field(event, "best_step"), _field(event, "artifact_step")
        return {
            "best_step": int(best) if _number(best) is not None else None,
            "best_eval_loss": _number(_field(event, "best_eval_loss")),
            "artifact_step": int(artifact) if _number(artifact) is not None else None,
            "stop_reason": _field(event, "stop_reason"),
        }

    def _supersede(self, from_step: int) -> None:
        """A resume from `from_step` redoes every later step: their points go (as effective_events drops them)."""
        self.logs = [p for p in self.logs if not _superseded(p.step, from_step)]
        self.evals = [p for p in self.evals if not _superseded(p.step, from_step)]
        self.checkpoint_steps = [s for s in self.checkpoint_steps if not _superseded(s, from_step)]
        for ending in self.endings:
            ending.superseded = ending.superseded or _superseded(ending.step, from_step)

    # ---- what the readers ask --------------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        """Steps of the loss curve (logged points with a loss)."""
        return [p.step for p in self.logs if p.loss is not None]

    @property
    def losses(self) -> list[float]:
        return [p.loss for p in self.logs if p.loss is not None]

    @property
    def lrs(self) -> list[float]:
        return [p.learning_rate or 0.0 for p in self.logs if p.loss is not None]

    @property
    def eval_steps(self) -> list[int]:
        return [p.step for p in self.evals]

    @property
    def eval_losses(self) -> list[float]:
        return [p.eval_loss for p in self.evals]

    @property
    def step(self) -> int:
        """The furthest step the kept events reached (logs, checkpoints, endings)."""
        kept = [e.step or 0 for e in self.endings if not e.superseded]
        return max([p.step for p in self.logs] + self.checkpoint_steps + kept, default=0)

    @property
    def total_steps(self) -> int | None:
        return self.sessions[-1].total_steps if self.sessions else None

    @property
    def started(self) -> float | None:
        """When the first session began (epoch seconds)."""
        return self.sessions[0].time if self.sessions else None

    @property
    def last_loss(self) -> float | None:
        return self.logs[-1].loss if self.logs else None

    def eval_series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one generation score (a GENERATION_METRICS name) over the evaluations that have it,
        for a live chart.

        >>> found = RunHistory(evals=[EvalPoint(2, 1.5, 10.0, 0.0), EvalPoint(4, 1.2), EvalPoint(6, 1.1, 30.0, 25.0)])
        >>> found.eval_series("rougeL")
        ([2, 6], [10.0, 30.0])
        """
        if name not in GENERATION_METRICS:
            raise ValueError(f"{name!r} is not a generation score; use one of {', '.join(GENERATION_METRICS)}")
        points = [(p.step, getattr(p, name)) for p in self.evals if getattr(p, name) is not None]
        return [step for step, _ in points], [value for _, value in points]

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one SERIES name for a live plot: a training figure at each logged step that has it
        ("loss", "reward_margin", ...), or an evaluation's ("eval_loss", "eval_reward_accuracy", "eval_rougeL", ...).

        >>> found = RunHistory(logs=[LogPoint(1, 0.69, 1e-3, None, 1.0, {"reward_margin": 0.0}),
        ...                          LogPoint(2, 0.52, 1e-3, None, 2.0, {"reward_margin": 0.4})])
        >>> found.series("reward_margin"), found.series("eval_reward_margin")
        (([1, 2], [0.0, 0.4]), ([], []))
        >>> RunHistory(evals=[EvalPoint(2, 1.5)]).series("eval_loss")
        ([2], [1.5])
        """
        if name not in SERIES:
            raise ValueError(f"{name!r} is not a series; use one of {', '.join(SERIES)}")
        if name.startswith("eval_"):
            points = [(p.step, _point_value(p, name.removeprefix("eval_"))) for p in self.evals]
        else:
            points = [(p.step, _point_value(p, name)) for p in self.logs]
        kept = [(step, value) for step, value in points if value is not None]
        return [step for step, _ in kept], [value for _, value in kept]

    @property
    def best_eval_loss(self) -> float | None:
        return min(self.eval_losses, default=None)

    @property
    def best_step(self) -> int | None:
        """The step of the lowest eval loss (the earliest of equal ones, as the trainer's best-model choice); the
        checkpoint load_best_at_end makes the run's result. None before the first evaluation."""
        best = min(self.evals, key=lambda p: p.eval_loss, default=None)
        return best.step if best else None

    @property
    def stop_reason(self) -> str | None:
        """Why the last session ended before its total steps (early stopping); None while a session runs."""
        return self.ending.stop_reason if self.ending and self.outcome != "open" else None

    @property
    def ending(self) -> Ending | None:
        """How the newest session ended, None before the first ending."""
        return self.endings[-1] if self.endings else None

    def until(self, step: int) -> RunHistory:
        """The history as it stood at checkpoint `step`: points and kept endings after it left out."""
        return RunHistory(
            sessions=list(self.sessions),
            endings=[e for e in self.endings if not e.superseded and (e.step is None or e.step <= step)],
            logs=[p for p in self.logs if p.step <= step],
            evals=[p for p in self.evals if p.step <= step],
            checkpoint_steps=[s for s in self.checkpoint_steps if s <= step],
            samples=[s for s in self.samples if s.step <= step],
            checkpoints=[p for p in self.checkpoints if (checkpoint_step(p) or 0) <= step],
        )


def _point_value(point: LogPoint | EvalPoint, name: str) -> float | None:
    """A point's figure by series name (without eval_): a field, or one of its rewards."""
    if name in PREFERENCE_METRICS:
        return point.rewards.get(name)
    return point.eval_loss if isinstance(point, EvalPoint) and name == "loss" else getattr(point, name)


def read(run_dir: str | Path) -> RunHistory:
    """Everything the run folder's events and checkpoint folders say, folded once."""
    found = RunHistory(checkpoints=checkpoints(run_dir))
    found.fold(load_events(run_dir))
    return found


def stamp(run_dir: str | Path) -> tuple:
    """What a run's history looks like from outside, cheaply: the (mtime, size) of its events file and checkpoints
    folder (None where absent). Equal stamps mean nothing was appended or checkpointed (two stat calls)."""
    return tuple(file_stamp(Path(run_dir) / part) for part in (EVENTS, CHECKPOINTS))


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(mtime ns, size) of a file or folder, None where absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
