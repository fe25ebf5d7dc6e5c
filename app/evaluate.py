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

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from app import metrics, runs
from app.config import DataConfig, ModelConfig, RunConfig
from app.metrics import TEXT_METRICS, score

Progress = Callable[[float, str], None]
METRICS = ("loss", "perplexity", *TEXT_METRICS)
"""Table columns, in order; lower is better for loss/perplexity, higher for the text metrics (0-100)."""
TABLE_COLUMNS = ("model", "path", *METRICS, "n_examples")
METRIC_LABELS = {
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bleu": "BLEU",
    "exact_match": "Exact match",
}
EVAL_DIR = "eval"
METRICS_FILE, SUMMARY_FILE, EXAMPLES_FILE = "metrics.json", "summary.csv", "examples.csv"
IGNORE = -100
UNCUT = 10**9
"""max_seq_len that cuts nothing: the generation prompt is never truncated at the training length."""
COLORS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")


class EvalError(RuntimeError):
    """An evaluation that cannot run (no data, no validation split, adapter for another base, device busy);
    the message says what to do."""


# ---- the report ---------------------------------------------------------------------------------------------
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
    """models ([{model, kind, path}]), base, data, split, device, max_new_tokens, elapsed_s, created (epoch s),
    bleu_tokenize, skipped (records that could not be evaluated, with why)."""

    def figure(self):
        """plotly Figure: text metrics (0-100) as grouped bars, one colour per model, and the loss beside them."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.78, 0.22],
            horizontal_spacing=0.08,
            subplot_titles=(
                "ROUGE, BLEU, exact match (0-100, higher is better)",
                "Loss (nats/token, lower is better)",
            ),
        )
        for i, row in enumerate(self.table.to_dict("records")):
            color = COLORS[i % len(COLORS)]
            values = [_finite(row[m]) for m in TEXT_METRICS]
            fig.add_trace(
                go.Bar(
                    name=row["model"],
                    x=[METRIC_LABELS[m] for m in TEXT_METRICS],
                    y=values,
                    marker_color=color,
                    legendgroup=row["model"],
                    texttemplate="%{y:.1f}",
                ),
                1,
                1,
            )
            fig.add_trace(
                go.Bar(
                    name=row["model"],
                    x=["loss"],
                    y=[_finite(row["loss"])],
                    marker_color=color,
                    legendgroup=row["model"],
                    showlegend=False,
                    texttemplate="%{y:.3f}",
                ),
                1,
                2,
            )
        title = f"{self.n_examples} examples" + (" (cancelled: partial results)" if self.cancelled else "")
        fig.update_layout(
            barmode="group",
            title=title,
            height=420,
            margin={"t": 70, "l": 40, "r": 20, "b": 40},
            legend={"orientation": "h", "y": -0.12},
        )
        fig.update_yaxes(range=[0, 100], row=1, col=1)
        return fig

    def to_json(self) -> dict:
        """What metrics.json holds: info, cancelled, n_examples and the table rows (NaN written as null)."""
        return _clean(
            {
                **self.info,
                "cancelled": self.cancelled,
                "n_examples": self.n_examples,
                "table": self.table.to_dict("records"),
            }
        )

    def examples_csv(self) -> str:
        """The per-example frame as CSV text (UTF-8), for a download button."""
        return self.examples.to_csv(index=False)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python numbers, Paths -> strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy/pandas scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---- what to evaluate on -----------------------------------------------------------------------------------
@dataclass
class _Item:
    example: Any
    """app.data.Example cut after its last assistant turn."""
    prompt: str
    """Every non-system message before the last answer, for display."""
    reference: str


def _answerable(example: Any) -> _Item | None:
    """The example up to its last assistant turn, or None when it has none."""
    from app.data import Example

    msgs = example.messages
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    prompt = "\n\n".join(m["content"] for m in msgs[:last] if m["role"] != "system")
    cut = Example(msgs[: last + 1], example.index, dict(getattr(example, "fields", {}) or {}))
    return _Item(cut, prompt, msgs[last]["content"])


def _file_config(run_cfg: RunConfig | None, path: str) -> DataConfig:
    """The run's data settings (template, system prompt, placeholders, max_seq_len) for another file; its format
    and column mapping only when it is the run's own file."""
    from app.paths import resolve_data_path

    base = run_cfg.data if run_cfg else DataConfig()
    same = run_cfg is not None and resolve_data_path(base.path).resolve() == resolve_data_path(path).resolve()
    return (
        replace(base, path=path, max_samples=None)
        if same
        else replace(base, path=path, format="auto", columns={}, max_samples=None)
    )


def _loaded_examples(cfg: DataConfig) -> list[Any]:
    from app import data as data_mod

    res = data_mod.load_from_config(cfg)
    if not res.examples:
        first = f" First problem: {res.errors[0].describe()}." if res.errors else ""
        raise EvalError(
            f"{cfg.path}: no usable records ({res.records} read, {res.skipped} skipped).{first} "
            "Open the file in the Data tab to see every problem."
        )
    return res.examples


def _validation_examples(run_cfg: RunConfig, run_dir: Path, tokenizer: Any) -> list[Any]:
    """The records the trainer held out: app.data.prepare with the run's data config and the base tokenizer
    makes the same seeded split (train.py calls it the same way)."""
    from app import data as data_mod

    prepared = data_mod.prepare(run_cfg.data, tokenizer)
    if not prepared.val:
        raise EvalError(
            f"run {run_dir.name} held out no validation examples (data.val_size = "
            f"{run_cfg.data.val_size} of {len(prepared.train)} examples); choose a data file to "
            "evaluate on"
        )
    by_index = {e.index: e for e in prepared.load.examples}
    return [by_index[v.index] for v in prepared.val if v.index in by_index]


def load_items(
    data: Any, run_cfg: RunConfig | None, run_dir: Path | None, tokenizer: Any, max_examples: int | None
) -> tuple[list[_Item], DataConfig, dict]:
    """(items, data config used for rendering, description) for evaluate(); see its `data` argument."""
    from app.data import DataError

    if data is None and run_cfg is None:
        raise EvalError(
            "no data to evaluate on: choose a data file, or an adapter from a run to use its validation split"
        )
    try:
        if data is None:
            cfg, found = run_cfg.data, _validation_examples(run_cfg, run_dir, tokenizer)
            desc = {"data": str(run_cfg.data.path), "split": f"validation split of run {run_dir.name}"}
        elif isinstance(data, DataConfig):
            cfg, found, desc = data, _loaded_examples(data), {"data": data.path, "split": "file"}
        elif isinstance(data, (str, os.PathLike)):
            cfg = _file_config(run_cfg, str(data))
            found, desc = _loaded_examples(cfg), {"data": str(data), "split": "file"}
        else:
            cfg = run_cfg.data if run_cfg else DataConfig()
            found, desc = list(data), {"data": f"{len(data)} given examples", "split": "given"}
    except DataError as exc:
        raise EvalError(str(exc)) from None
    items = [it for it in (_answerable(e) for e in found) if it is not None]
    desc["skipped"] = [
        f"record {e.index}: no assistant answer to compare with" for e in found if _answerable(e) is None
    ]
    if not items:
        raise EvalError(f"{desc['data']}: no example has an assistant answer to compare with")
    desc["available"] = len(items)
    return (items[:max_examples] if max_examples else items), cfg, desc


def encode_for_eval(example: Any, tokenizer: Any, data_cfg: DataConfig) -> tuple[list[int], list[int], list[int]]:
    """(prompt_ids, input_ids, labels) of one example through the training path (`app.data.encode_example`).

    input_ids/labels are what training saw (cut at max_seq_len, -100 on every prompt token); prompt_ids are every
    token before the last answer, never cut, for generation.
    """
    from app.data import encode_example

    cfg = replace(data_cfg, train_on_prompt=False)
    enc = encode_example(example, tokenizer, cfg)
    full = encode_example(example, tokenizer, replace(cfg, max_seq_len=UNCUT)) if enc.truncated else enc
    return full.input_ids[: _last_answer_start(full.labels)], enc.input_ids, enc.labels


def _last_answer_start(labels: list[int]) -> int:
    """Index of the first token of the last run of labelled tokens.

    >>> _last_answer_start([-100, -100, 5, 6, -100, -100, 7, 8, -100])
    6
    """
    j = len(labels) - 1
    while j >= 0 and labels[j] == IGNORE:
        j -= 1
    while j > 0 and labels[j - 1] != IGNORE:
        j -= 1
    return max(j, 0) if j >= 0 else len(labels)


# ---- the models ---------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    label: str
    kind: str
    """base | adapter (PEFT adapter on the shared base) | model (a separately loaded folder)"""
    path: str
    adapter: str | None = None
    """PEFT adapter name (a0, a1, ...): display labels may hold characters PEFT does not allow."""
    loaded: Any = None


class _Models:
    """The base loaded once, LoRA adapters attached to it under their own names, model folders loaded apart."""

    def __init__(self, base: str, sources: list[tuple[str, Path]], device: str, progress: Progress | None):
        from app import chat

        self.device, self.progress, self.warnings = device, progress, []
        self.base = self._load(base, 0.02)
        self.model = self.base.model
        self.entries = [_Entry("base", "base", self.base.path)]
        for i, (kind, path) in enumerate(sources):
            label = self._unique(model_label(path))
            if kind == "model":
                self.entries.append(_Entry(label, "model", str(path), loaded=self._load(str(path), 0.1)))
                continue
            try:
                self.warnings += chat.check_adapter_fits(path, self.model, base)
            except chat.ChatError as exc:
                raise EvalError(str(exc)) from None
            self._attach(path, f"a{i}")
            self.entries.append(_Entry(label, "adapter", str(path), adapter=f"a{i}"))
        self.model.eval()

    def _load(self, name: str, frac: float) -> Any:
        from app.modeling import ModelError, load_model

        if self.progress is not None:
            self.progress(frac, f"loading {name}")
        try:
            loaded = load_model(ModelConfig(name_or_path=name), device=self.device, progress=_quiet)
        except ModelError as exc:
            raise EvalError(str(exc)) from None
        loaded.model.eval()
        return loaded

    def _attach(self, path: Path, name: str) -> None:
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for damaged or foreign adapters
            raise EvalError(f"adapter {path} could not be loaded onto {self.base.path}: {exc}") from None

    def _unique(self, name: str) -> str:
        taken = {e.label for e in self.entries}
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name} ({n})", n + 1
        return candidate

    @contextmanager
    def use(self, entry: _Entry) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) with `entry` active: the adapter set, or every adapter disabled for the base."""
        from peft import PeftModel

        if entry.kind == "model":
            yield entry.loaded.model, entry.loaded.tokenizer
        elif entry.kind == "adapter":
            self.model.set_adapter(entry.adapter)
            yield self.model, self.base.tokenizer
        elif isinstance(self.model, PeftModel):
            with self.model.disable_adapter():
                yield self.model, self.base.tokenizer
        else:
            yield self.model, self.base.tokenizer


def model_label(path: Path) -> str:
    """Display name: the run name for <run>/adapter and <run>/model, <run>/checkpoint-N for a checkpoint under
    <run>/checkpoints/, else the folder name."""
    from app.chat import column_name

    run = _run_of(path)
    if run is not None and path.name.startswith("checkpoint-"):
        return f"{run.name}/{path.name}"
    return column_name(path)


def _quiet(frac: float, msg: str) -> None:
    """load_model prints its steps when given no callback; evaluation reports its own."""


# ---- loss and generation ------------------------------------------------------------------------------------
def response_nll(model: Any, input_ids: list[int], labels: list[int]) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, labelled tokens) of one example; logits only at the labelled
    positions (logits_to_keep), so a 2,048-token example on a 150k vocabulary costs a few MB, not 1.2 GB."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    keep = [i for i in range(len(labels) - 1) if labels[i + 1] != IGNORE]
    if not keep:
        return 0.0, 0
    ids = torch.tensor([input_ids], device=device)
    targets = torch.tensor([labels[i + 1] for i in keep], device=device)
    with torch.inference_mode():
        try:
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=torch.tensor(keep, device=device)).logits[0]
        except TypeError:  # an architecture whose forward has no logits_to_keep
            logits = model(input_ids=ids, use_cache=False).logits[0, keep]
    return float(F.cross_entropy(logits.float(), targets, reduction="sum")), len(keep)


def generate_answers(
    model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int, cancel: threading.Event | None = None
) -> list[str]:
    """Greedy answers to a batch of tokenized prompts (left-padded), stopping at end-of-turn or when `cancel` is
    set (then the answers are cut short; callers discard them)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    from app.chat import stop_ids

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(cancel and cancel.is_set()), device=input_ids.device)

    limit = getattr(model.config, "max_position_embeddings", None) or UNCUT
    prompts = [p[-max(1, limit - max_new_tokens) :] for p in prompts]  # keep the end: the question is there
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=sorted(stop_ids(model, tokenizer)),
            stopping_criteria=StoppingCriteriaList([_Cancelled()]),
        )
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, width:]]


@dataclass
class _Result:
    answer: str
    nll: float
    tokens: int


def _evaluate_batch(
    model: Any,
    tokenizer: Any,
    items: list[_Item],
    cfg: DataConfig,
    max_new_tokens: int,
    cancel: threading.Event | None,
) -> list[_Result]:
    encoded = [encode_for_eval(it.example, tokenizer, cfg) for it in items]
    losses = [response_nll(model, ids, labels) for _, ids, labels in encoded]
    answers = generate_answers(model, tokenizer, [p for p, _, _ in encoded], max_new_tokens, cancel)
    return [_Result(a, nll, n) for a, (nll, n) in zip(answers, losses, strict=True)]


def _run_all(
    models: _Models,
    items: list[_Item],
    cfg: DataConfig,
    max_new_tokens: int,
    batch_size: int,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[dict[str, list[_Result]], bool]:
    """Batches outer, models inner: a cancelled evaluation still has every model on the same examples. A batch
    is kept only when every model finished it (answers cut short by the stop are dropped)."""
    stopped = (lambda: cancel.is_set()) if cancel is not None else (lambda: False)
    results: dict[str, list[_Result]] = {e.label: [] for e in models.entries}
    units, done = len(items) * len(models.entries), 0
    for start in range(0, len(items), batch_size):
        batch, outs = items[start : start + batch_size], {}
        for entry in models.entries:
            if stopped():
                return results, True
            with models.use(entry) as (model, tokenizer):
                outs[entry.label] = _evaluate_batch(model, tokenizer, batch, cfg, max_new_tokens, cancel)
            if stopped():
                return results, True
            done += len(batch)
            if progress is not None:
                progress(0.15 + 0.85 * done / units, f"{entry.label}: {start + len(batch)}/{len(items)} examples")
        for label, rows in outs.items():
            results[label] += rows
    return results, False


# ---- tables ---------------------------------------------------------------------------------------------------
def build_table(models: list[_Entry], results: dict[str, list[_Result]], references: list[str]) -> pd.DataFrame:
    rows = []
    for entry in models:
        res = results[entry.label]
        loss, ppl = metrics.perplexity(sum(r.nll for r in res), sum(r.tokens for r in res))
        scores = score([r.answer for r in res], references[: len(res)])
        rows.append(
            {
                "model": entry.label,
                "path": entry.path,
                "loss": loss,
                "perplexity": ppl,
                **{m: scores[m] for m in TEXT_METRICS},
                "n_examples": len(res),
            }
        )
    return with_deltas(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))


def with_deltas(table: pd.DataFrame) -> pd.DataFrame:
    """delta_<metric> = row - first (base) row; negative is better for loss and perplexity."""
    table = table.copy()
    for m in METRICS:
        values = pd.to_numeric(table[m], errors="coerce")
        table[m] = values
        table[f"delta_{m}"] = values - values.iloc[0] if len(table) else values
    return table


def build_examples(models: list[_Entry], results: dict[str, list[_Result]], items: list[_Item]) -> pd.DataFrame:
    n = len(results[models[0].label]) if models else 0
    frame = pd.DataFrame(
        {
            "index": [it.example.index for it in items[:n]],
            "prompt": [it.prompt for it in items[:n]],
            "reference": [it.reference for it in items[:n]],
        }
    )
    for entry in models:
        res = results[entry.label]
        frame[f"{entry.label} answer"] = [r.answer for r in res]
        frame[f"{entry.label} rougeL"] = [
            metrics.rouge_scores(r.answer, it.reference)["rougeL"] for r, it in zip(res, items, strict=False)
        ]
        frame[f"{entry.label} loss"] = [r.nll / r.tokens if r.tokens else None for r in res]
    return frame


# ---- evaluate ---------------------------------------------------------------------------------------------------
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
    """Evaluate the base model and each adapter on the same examples; see the module docstring.

    Raises EvalError (bad choice of model, adapter or data; device busy) before any long work starts.
    """
    _check_args(max_examples, max_new_tokens, batch_size)
    started, created = time.perf_counter(), time.time()
    sources = _sources(adapters or [])
    run = Path(run_dir) if run_dir else _first_run(sources)
    run_cfg = _run_config(run)
    base = base or _infer_base(run_cfg, sources)
    dev = _device(device)
    _say(progress, 0.0, "reading the data")
    items, cfg, desc = load_items(data, run_cfg, run, _tokenizer(base), max_examples)
    models = _Models(base, sources, dev, progress)
    results, cancelled = _run_all(models, items, cfg, max_new_tokens, batch_size, progress, cancel)
    refs = [it.reference for it in items]
    table = build_table(models.entries, results, refs)
    info = {
        "created": created,
        "base": base,
        **desc,
        "device": dev,
        "max_new_tokens": max_new_tokens,
        "models": [{"model": e.label, "kind": e.kind, "path": e.path} for e in models.entries],
        "bleu_tokenize": metrics.bleu_tokenizer(refs),
        "warnings": models.warnings,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    n_done = int(table["n_examples"].iloc[0])
    report = EvalReport(table, build_examples(models.entries, results, items), cancelled, n_done, None, info)
    targets = [run] if run_dir else list(dict.fromkeys(r for r in (_run_of(p) for _, p in sources) if r))
    if save and targets and n_done:
        report.saved_to = save_report(report, targets[0])
        for other in targets[1:]:
            save_report(report, other)
    _say(progress, 1.0, f"evaluated {n_done} examples" + (" (cancelled)" if cancelled else ""))
    return report


run_evaluation = evaluate
"""The name first announced in the core API note; the same function."""


def _check_args(max_examples: int | None, max_new_tokens: int, batch_size: int) -> None:
    problems = []
    if max_examples is not None and max_examples < 0:
        problems.append(f"max_examples: {max_examples} must be >= 1 (or 0/None for all)")
    if max_new_tokens < 1:
        problems.append(f"max_new_tokens: {max_new_tokens} must be >= 1 (128 is a good default)")
    if batch_size < 1:
        problems.append(f"batch_size: {batch_size} must be >= 1")
    if problems:
        raise EvalError("; ".join(problems))


def _sources(adapters: Sequence[str]) -> list[tuple[str, Path]]:
    from app import chat

    try:
        return [chat.resolve_source(a) for a in adapters]
    except chat.ChatError as exc:
        raise EvalError(str(exc)) from None


def _run_of(path: Path) -> Path | None:
    """The run folder of `<run>/adapter`, `<run>/model` or `<run>/checkpoints/checkpoint-N`."""
    for candidate in (path.parent, path.parent.parent):
        if runs.is_run_dir(candidate) and (candidate / runs.CONFIG).is_file():
            return candidate
    return None


def _first_run(sources: list[tuple[str, Path]]) -> Path | None:
    return next((r for r in (_run_of(p) for _, p in sources) if r is not None), None)


def _run_config(run: Path | None) -> RunConfig | None:
    if run is None:
        return None
    from app.config import ConfigError

    try:
        return runs.load_config(run)
    except ConfigError as exc:
        raise EvalError(
            f"run {run}: its config.yaml cannot be read ({exc}); choose a data file and base model instead"
        ) from None


def _infer_base(run_cfg: RunConfig | None, sources: list[tuple[str, Path]]) -> str:
    from app import chat

    if run_cfg is not None:
        return run_cfg.model.name_or_path
    for kind, path in sources:
        if kind == "adapter":
            try:
                return chat.infer_base(path)
            except chat.ChatError as exc:
                raise EvalError(str(exc)) from None
    raise EvalError("no base model: choose a base model (or an adapter, whose base is read from it)")


def _device(device: str) -> str:
    from app import devices

    try:
        resolved = devices.resolve(device)
        devices.require_free(resolved, device, "evaluate")
    except (devices.DeviceError, devices.DeviceBusy) as exc:
        raise EvalError(str(exc)) from None
    return resolved


def _tokenizer(base: str) -> Any:
    from app.modeling import ModelError, load_tokenizer, resolve_model

    try:
        return load_tokenizer(resolve_model(base))
    except ModelError as exc:
        raise EvalError(str(exc)) from None


def _say(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)


# ---- saving and listing -------------------------------------------------------------------------------------
def save_report(report: EvalReport, run_dir: str | Path) -> Path:
    """Write `<run>/eval/<YYYYmmdd-HHMMSS>/` (metrics.json, summary.csv, examples.csv): the files go into a
    hidden temp folder that is renamed into place when complete, so a reader never sees half an evaluation."""
    root = Path(run_dir) / EVAL_DIR
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(report.info.get("created", time.time())))
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        (tmp / METRICS_FILE).write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=2), "utf-8")
        report.table.to_csv(tmp / SUMMARY_FILE, index=False, encoding="utf-8-sig")  # BOM: Excel reads UTF-8
        report.examples.to_csv(tmp / EXAMPLES_FILE, index=False, encoding="utf-8-sig")
        for n in range(1, 1000):
            target = root / (stamp if n == 1 else f"{stamp}-{n}")
            if not target.exists():
                tmp.rename(target)
                return target
        raise EvalError(f"{root}: evaluation folders {stamp}-* are all taken")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_evaluations(run_dir: str | Path) -> list[dict]:
    """Saved evaluations of a run, newest first: id, path, created, models, n_examples, cancelled, data, split,
    table (list of row dicts). Folders whose metrics.json cannot be read are left out."""
    root = Path(run_dir) / EVAL_DIR
    found = []
    for folder in sorted(root.glob("[!.]*"), key=lambda p: p.name, reverse=True) if root.is_dir() else []:
        meta = _read_metrics(folder)
        if meta is not None:
            found.append(
                {
                    "id": folder.name,
                    "path": folder,
                    "created": meta.get("created"),
                    "models": [m.get("model") for m in meta.get("models", [])],
                    "n_examples": meta.get("n_examples"),
                    "cancelled": meta.get("cancelled"),
                    "data": meta.get("data"),
                    "split": meta.get("split"),
                    "table": meta.get("table", []),
                }
            )
    return found


def _read_metrics(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def load_evaluation(folder: str | Path) -> EvalReport:
    """A saved evaluation (metrics.json + examples.csv) as an EvalReport."""
    folder = Path(folder)
    meta = _read_metrics(folder)
    if meta is None:
        raise EvalError(f"{folder}: no readable {METRICS_FILE}; it is not a saved evaluation")
    table = with_deltas(pd.DataFrame(meta.pop("table", []), columns=list(TABLE_COLUMNS)))
    try:
        examples = pd.read_csv(folder / EXAMPLES_FILE, encoding="utf-8-sig", keep_default_na=False)
    except (OSError, ValueError):
        examples = pd.DataFrame()
    cancelled, n = bool(meta.pop("cancelled", False)), int(meta.pop("n_examples", 0) or 0)
    return EvalReport(table, examples, cancelled, n, folder, meta)


def candidates(output_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, path) of every run's final adapter/model and its checkpoints, newest run first."""
    out: list[tuple[str, str]] = []
    for run in runs.list_runs(output_dir):
        if run.adapter is not None:
            out.append((f"{run.id} ({run.adapter.name})", str(run.adapter)))
        for ckpt in reversed(runs.checkpoints(run.path)):
            out.append((f"{run.id}/{ckpt.name}", str(ckpt)))
    return out


# ---- efficiency -------------------------------------------------------------------------------------------------
def efficiency_report(run_dir: str | Path) -> dict:
    """What a run cost, from its events and files: training_s (optimizer-step time summed over every session),
    wall_s (first start to last end), steps, tokens_per_s (median of the logged rates: the first step's warm-up
    does not skew it), label_tokens_per_s, peak_memory_bytes (measured: CUDA allocator peak on a GPU run, else the
    process's peak RSS, which includes everything else that process held, e.g. the app) next to
    estimated_memory_bytes (the estimate made before it started) and memory_vs_estimate (measured / estimated),
    trainable_params, total_params, trainable_share, artifact_bytes (the adapter's or model's weight files),
    model_bytes (the base model's safetensors) and size_share. Facts the run did not record are None."""
    run_dir = Path(run_dir)
    events = runs.load_events(run_dir)
    starts = [e for e in events if e["type"] in runs.SESSION_START]
    ends = [e for e in events if e["type"] in runs.TERMINAL]
    logs = [e for e in runs.effective_events(events) if e["type"] == "log"]
    first = starts[0] if starts else {}
    out: dict[str, Any] = {
        "run": run_dir.name,
        "status": runs.run_status(run_dir),
        "method": first.get("method"),
        "device": first.get("device"),
        "steps": ends[-1].get("step") if ends else None,
    }
    out.update(_time_facts(starts, ends, logs))
    out.update(_memory_facts(first, ends))
    out.update(_param_facts(first))
    out.update(_size_facts(run_dir, first))
    return out


def _time_facts(starts: list[dict], ends: list[dict], logs: list[dict]) -> dict:
    train_s = [e["train_s"] for e in ends if isinstance(e.get("train_s"), (int, float))]
    rates = [e["tokens_per_s"] for e in logs if isinstance(e.get("tokens_per_s"), (int, float))]
    wall = ends[-1]["time"] - starts[0]["time"] if starts and ends else None
    return {
        "training_s": round(sum(train_s), 2) if train_s else None,
        "wall_s": round(wall, 2) if wall is not None else None,
        "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "label_tokens_per_s": ends[-1].get("label_tokens_per_s") if ends else None,
    }


def _memory_facts(first: dict, ends: list[dict]) -> dict:
    mb = 2**20
    cuda = [e["peak_cuda_mb"] for e in ends if isinstance(e.get("peak_cuda_mb"), (int, float))]
    rss = [e["peak_rss_mb"] for e in ends if isinstance(e.get("peak_rss_mb"), (int, float))]
    on_gpu = str(first.get("device") or "").startswith("cuda") and bool(cuda)
    peak = max(cuda) if on_gpu else max(rss) if rss else None
    estimate = first.get("memory") if isinstance(first.get("memory"), dict) else {}
    est = estimate.get("total_bytes")
    if est is None and isinstance(estimate.get("total_gib"), (int, float)):
        est = estimate["total_gib"] * 2**30
    peak_bytes = int(peak * mb) if peak is not None else None
    return {
        "peak_memory_bytes": peak_bytes,
        "peak_memory_kind": ("cuda" if on_gpu else "rss") if peak else None,
        "peak_rss_bytes": int(max(rss) * mb) if rss else None,
        "peak_cuda_bytes": int(max(cuda) * mb) if cuda else None,
        "estimated_memory_bytes": int(est) if est else None,
        "memory_vs_estimate": round(peak_bytes / est, 3) if peak_bytes and est else None,
    }


def _param_facts(first: dict) -> dict:
    trainable, total = first.get("trainable_params"), first.get("total_params")
    share = trainable / total if isinstance(trainable, int) and isinstance(total, int) and total else None
    return {"trainable_params": trainable, "total_params": total, "trainable_share": share}


def _weights_bytes(folder: Path | None) -> int | None:
    """Bytes of the weight files (*.safetensors, *.bin) in a folder: the tokenizer saved beside an adapter
    (2-10 MB) would otherwise outweigh a 1 MB adapter."""
    if folder is None or not folder.is_dir():
        return None
    files = [f for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern) if f.is_file()]
    return sum(f.stat().st_size for f in files) if files else None


def _size_facts(run_dir: Path, first: dict) -> dict:
    artifact = runs.final_artifact(run_dir)
    model = first.get("model")
    if not model:
        cfg = runs.load_config(run_dir) if (run_dir / runs.CONFIG).is_file() else None
        model = cfg.model.name_or_path if cfg else None
    model_bytes = _weights_bytes(Path(model)) if model and Path(model).is_dir() else None
    art_bytes = _weights_bytes(artifact)
    return {
        "artifact": str(artifact) if artifact else None,
        "artifact_bytes": art_bytes,
        "model_path": model,
        "model_bytes": model_bytes,
        "size_share": art_bytes / model_bytes if art_bytes and model_bytes else None,
    }


# ---- CLI -----------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="base model: catalog id, folder, .gguf or merged folder (default: the run's or the adapter's base)",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="A",
        help="adapter folder, checkpoint-N, run folder or model folder; repeat to compare several",
    )
    parser.add_argument("--data", help="data file to evaluate on (default: the run's validation split)")
    parser.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="run folder: its data settings, validation split and base model; the evaluation is saved in it",
    )
    parser.add_argument("--max-examples", type=int, default=50, help="evaluate the first N examples (0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit in tokens")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together")
    parser.add_argument(
        "--placeholder",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fill {{KEY}} in the data (e.g. name=TuneBot); repeatable",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-save", action="store_true", help="do not save the evaluation in the run folder")
    parser.add_argument("--json", action="store_true", help="print metrics.json instead of the table")


def main(args: argparse.Namespace) -> int:
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())  # Ctrl-C: stop and print what is done
    try:
        report = evaluate(
            args.model,
            args.adapter,
            _cli_data(args),
            args.run,
            args.max_examples or None,
            args.max_new_tokens,
            args.device,
            _print_progress,
            cancel,
            not args.no_save,
            args.batch_size,
        )
    except EvalError as exc:
        print(f"python -m app evaluate: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps({**report.to_json(), "saved_to": report.saved_to}, ensure_ascii=False, indent=2, default=str))
    else:
        print(format_table(report))
    return 130 if report.cancelled else 0


def _cli_data(args: argparse.Namespace) -> Any:
    if not args.placeholder:
        return args.data
    if not args.data:
        raise SystemExit("python -m app evaluate: --placeholder needs --data FILE")
    pairs = {}
    for item in args.placeholder:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"python -m app evaluate: --placeholder {item!r}: write KEY=VALUE, e.g. name=TuneBot")
        pairs[key] = value
    run_cfg = _run_config(Path(args.run)) if args.run else None
    return replace(_file_config(run_cfg, args.data), placeholders=pairs)


def _print_progress(frac: float, msg: str) -> None:
    print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)


def format_table(report: EvalReport) -> str:
    """The table as text: metrics, then deltas vs base (signed), then where it was saved."""
    table = report.table.drop(columns=["path"]).set_index("model")
    head = f"{report.n_examples} examples from {report.info.get('data')} ({report.info.get('split')})" + (
        ", CANCELLED: partial results" if report.cancelled else ""
    )
    body = table[list(METRICS) + ["n_examples"]].to_string(float_format=lambda v: f"{v:.3f}")
    deltas = table[[f"delta_{m}" for m in METRICS]].rename(columns=lambda c: c.removeprefix("delta_"))
    delta_text = deltas.to_string(float_format=lambda v: f"{v:+.3f}")
    saved = f"\nsaved to {report.saved_to}" if report.saved_to else ""
    return f"{head}\n{body}\n\nchange vs base:\n{delta_text}{saved}"
