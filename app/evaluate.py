"""Is the adapter better than the base model, by how much, and at what cost?

Public API (stable; the Evaluate tab and the CLI use only these):

    report = evaluate(base, adapters, data=None, run_dir=None, max_examples=50, max_new_tokens=128,
                      device="auto", progress=None, cancel=None, save=True)
        base      model name/folder (catalog id, hub id, folder, .gguf, a merged folder); None = the run's base
                  (run_dir's config.yaml, else the first adapter's run or adapter_config.json)
        adapters  LoRA adapter folders (`<run>/adapter`, `<run>/checkpoints/checkpoint-N`, any PEFT folder), full
                  model folders (merged, or `<run>/model` of a full/freeze run), or run folders (their final
                  adapter/model). The base model is always evaluated too, as the first row.
        data      None = the run's validation split (the same deterministic split the trainer made), a file path
                  the Data tab reads, a DataConfig (path + format/columns/placeholders/template), or a list of
                  app.data.Example
        progress  progress(frac 0-1, message); cancel: threading.Event, checked between batches and during
                  generation; a cancelled run returns the examples finished so far with report.cancelled = True
    report.table     DataFrame, one row per model: model, path, loss, perplexity, rouge1, rouge2, rougeL, bleu,
                     exact_match, n_examples, then delta_<metric> = row - base row for each metric
    report.examples  DataFrame, one row per example: index, prompt, reference, then per model
                     "<model> answer", "<model> rougeL", "<model> loss"
    report.figure()  plotly Figure: grouped bars (one colour per model) of the text metrics and of the loss
    report.to_json() dict (what metrics.json holds); report.saved_to: the eval folder, or None
    run_evaluation = evaluate (the name first announced in the core API note)

    score(predictions, references) -> dict     rouge1, rouge2, rougeL, bleu, exact_match: all percentages 0-100
    efficiency_report(run_dir) -> dict          time, tokens/s, peak memory vs estimate, trainable share, sizes
    list_evaluations(run_dir) -> list[dict]     saved evaluations of a run, newest first
    load_evaluation(folder) -> EvalReport       a saved evaluation, for redisplay
    candidates(output_dir=None) -> list[(label, path)]   adapters/models/checkpoints of every run, for pickers
    CLI: python -m app evaluate --model M [--adapter A ...] [--data FILE] [--run RUN] [--max-examples N] [--json]

Units: loss is the token-weighted mean negative log-likelihood (nats/token) of the response tokens only, with the
training masks (`app.data.encode_example`, train_on_prompt forced off); perplexity = exp(loss). Text metrics
compare a greedy answer (prompt = every message before the last assistant turn, rendered by the training template)
with the last assistant message. Evaluations of adapters that belong to a run are saved in
`<run>/eval/<YYYYmmdd-HHMMSS>/` (metrics.json, summary.csv, examples.csv), written to a temp folder then renamed.

torch, transformers and peft are imported inside the functions that load models, so importing this module (as
the UI does) costs only pandas.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from app.metrics import TEXT_METRICS, score  # noqa: F401  (score is part of this module's API)

Progress = Callable[[float, str], None]
METRICS = ("loss", "perplexity", *TEXT_METRICS)
"""Table columns, in order; lower is better for loss/perplexity, higher for the text metrics (0-100)."""
EVAL_DIR = "eval"


class EvalError(RuntimeError):
    """An evaluation that cannot run (no data, no validation split, adapter for another base, device busy);
    the message says what to do."""


@dataclass
class EvalReport:
    table: pd.DataFrame
    """One row per model (base first): model, path, loss, perplexity, rouge1..exact_match, n_examples, delta_*."""
    examples: pd.DataFrame
    """One row per example: index, prompt, reference, "<model> answer", "<model> rougeL", "<model> loss"."""
    cancelled: bool
    n_examples: int
    saved_to: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """data source, device, max_new_tokens, elapsed_s, created (epoch s), bleu_tokenize."""

    def figure(self):
        """plotly Figure: text metrics (0-100) as grouped bars, one colour per model, and the loss beside them."""
        raise NotImplementedError

    def to_json(self) -> dict:
        raise NotImplementedError

    def examples_csv(self) -> str:
        """The per-example frame as CSV text (UTF-8), for a download button."""
        return self.examples.to_csv(index=False)


def evaluate(
    base: str | None,
    adapters: list[str] | None = None,
    data: Any = None,
    run_dir: str | Path | None = None,
    max_examples: int | None = 50,
    max_new_tokens: int = 128,
    device: str = "auto",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    save: bool = True,
    batch_size: int = 8,
) -> EvalReport:
    """Evaluate the base model and each adapter on the same examples; see the module docstring."""
    raise NotImplementedError


run_evaluation = evaluate


def efficiency_report(run_dir: str | Path) -> dict:
    """What a run cost: training_s, tokens_per_s, peak_memory_bytes (measured) and estimated_memory_bytes (the
    estimate made before it started), trainable_params, total_params, trainable_share, adapter_bytes (on disk),
    model_bytes (base safetensors), size_share. Missing facts are None."""
    raise NotImplementedError


def list_evaluations(run_dir: str | Path) -> list[dict]:
    """Saved evaluations of a run, newest first: id, path, created, models, n_examples, cancelled, data, table
    (list of row dicts)."""
    raise NotImplementedError


def load_evaluation(folder: str | Path) -> EvalReport:
    """A saved evaluation (metrics.json + examples.csv) as an EvalReport."""
    raise NotImplementedError


def candidates(output_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, path) of every run's final adapter/model and its checkpoints, newest run first."""
    raise NotImplementedError


# ---- CLI ----------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    raise NotImplementedError


def main(args) -> int:
    raise NotImplementedError
