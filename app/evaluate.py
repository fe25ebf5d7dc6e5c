"""Is the adapter better than the base model, and by how much: loss, perplexity and text metrics on the same examples.

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
                     a preference run (objective dpo, orpo, simpo) adds reward_accuracy and mean_margin on its
                     held-out pairs (app.eval_report.preference_scores), the other metrics then scoring the chosen
                     answers
    report.figure()  plotly Figure: grouped bars (one colour per model) of the text metrics and of the loss
    report.to_json() dict (what metrics.json holds); report.saved_to: the eval folder, or None
    run_evaluation = evaluate (the name first announced in the core API note)

    app.metrics.score(predictions, references) -> dict   rouge1, rouge2, rougeL, bleu, exact_match: 0-100 each

The models are one app.modelset.ModelSet (the base once, adapters attached, answers from its one Decoder, the same
generation path chat uses); the examples come from app.eval_data; the report, its files and the saved evaluations
(list_evaluations, load_evaluation) from app.eval_report; the CLI (python -m app evaluate) is app.evaluate_cli;
what a run cost (efficiency_report) is app.efficiency.

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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app import metrics, objective_table, runs
from app.adapters import AdapterError, infer_base, resolve_source, run_dir_of
from app.commands import EvaluateConfig
from app.config import DataConfig, RunConfig
from app.devices import DeviceBusy
from app.eval_data import (
    IGNORE,
    UNCUT,
    EvalError,
    Item,
    PairItem,
    encode_for_eval,
    load_items,
    load_pair_items,
    pairwise,
)
from app.eval_report import EvalReport, PairScore, Result, build_examples, build_table, save_report
from app.modelset import Decoder, GenSettings, ModelSet, ModelSetError, stop_ids

Progress = Callable[[float, str], None]


# ---- evaluate ---------------------------------------------------------------------------------------------------
def evaluate(
    base: str | None,
    adapters: list[str] | None = None,
    data: Any = None,
    run_dir: str | Path | None = None,
    max_examples: int | None = EvaluateConfig.max_examples,
    max_new_tokens: int = EvaluateConfig.max_new_tokens,
    device: str = "auto",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    save: bool = True,
    batch_size: int = EvaluateConfig.batch_size,
) -> EvalReport:
    """Evaluate the base model and each adapter on the same examples; see the module docstring.

    Raises EvalError (bad choice of model, adapter or data; device busy) before any long work starts.
    """
    _check_args(max_examples, max_new_tokens, batch_size)
    started, created = time.perf_counter(), time.time()
    sources = _sources(adapters or [])
    run = Path(run_dir) if run_dir else _first_run(sources)
    run_cfg = run_config(run)
    base = base or _infer_base(run_cfg, sources)
    dev = _device(device)
    _say(progress, 0.0, "reading the data")
    pairs: list[PairItem] = []
    if pairwise(run_cfg) and not isinstance(data, (list, tuple)):
        items, pairs, cfg, desc = load_pair_items(data, run_cfg, run, _tokenizer(base), max_examples)
    else:
        items, cfg, desc = load_items(data, run_cfg, run, _tokenizer(base), max_examples)
    models = _model_set(base, sources, device, progress)
    try:
        results, cancelled = _run_all(models, items, cfg, max_new_tokens, batch_size, progress, cancel, pairs)
        rows = [(c, str(m.path or models.base.path), m.kind) for c, m in models.members.items()]
        warnings = models.warnings
    finally:
        models.close()
    refs = [it.reference for it in items]
    referenced = objective_table.of(run_cfg).reference if pairs else None  # DPO: rewards relative to the base
    table = build_table([r[:2] for r in rows], results, refs, referenced)
    info = {
        "created": created,
        "base": base,
        **desc,
        "device": dev,
        "max_new_tokens": max_new_tokens,
        **({"objective": run_cfg.objective, "reward_reference": "base" if referenced else None} if pairs else {}),
        "models": [{"model": label, "kind": kind, "path": path} for label, path, kind in rows],
        "bleu_tokenize": metrics.bleu_tokenizer(refs),
        "warnings": warnings,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    n_done = int(table["n_examples"].iloc[0])
    report = EvalReport(table, build_examples([r[:2] for r in rows], results, items), cancelled, n_done, None, info)
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
    problems = EvaluateConfig(max_examples or 0, max_new_tokens, batch_size).validate()  # None = all, as 0
    if problems:
        raise EvalError("; ".join(problems))


def _sources(adapters: Sequence[str]) -> list[tuple[str, Path]]:
    try:
        return [resolve_source(a) for a in adapters]
    except AdapterError as exc:
        raise EvalError(str(exc)) from None


def _run_of(path: Path) -> Path | None:
    """The run folder of `<run>/adapter`, `<run>/model` or `<run>/checkpoints/checkpoint-N`, when it has a config."""
    run = run_dir_of(path)
    return run if run is not None and (run / runs.CONFIG).is_file() else None


def _first_run(sources: list[tuple[str, Path]]) -> Path | None:
    return next((r for r in (_run_of(p) for _, p in sources) if r is not None), None)


def run_config(run: Path | None) -> RunConfig | None:
    """The run's config.yaml, or None without a run; EvalError when it cannot be read."""
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
    if run_cfg is not None:
        return run_cfg.model.name_or_path
    for kind, path in sources:
        if kind == "adapter":
            try:
                return infer_base(path)
            except AdapterError as exc:
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


def _model_set(base: str, sources: list[tuple[str, Path]], device: str, progress: Progress | None) -> ModelSet:
    """The base and every adapter loaded once; loading reports progress 0-0.1 (scoring takes 0.15-1)."""
    scaled = (lambda f, m: progress(0.1 * f, m)) if progress is not None else None
    try:
        return ModelSet(base, sources, device, progress=scaled, purpose="evaluate")
    except (AdapterError, ModelSetError, DeviceBusy) as exc:
        raise EvalError(str(exc)) from None


def _tokenizer(base: str) -> Any:
    from app.modeling import ModelError, load_tokenizer, resolve_model

    try:
        return load_tokenizer(resolve_model(base))
    except ModelError as exc:
        raise EvalError(str(exc)) from None


def _say(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)


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
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int | Sequence[int],
    cancel: threading.Event | None = None,
) -> list[str]:
    """Greedy answers to a batch of tokenized prompts (left-padded), through the Decoder chat uses too; stops at
    end-of-turn or when `cancel` is set (then the answers are cut short; callers discard them). `max_new_tokens`:
    one budget for all, or one per prompt (the batch decodes to the largest; each answer keeps its own)."""
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else [int(n) for n in max_new_tokens]
    longest = max(budgets, default=1)
    limit = getattr(model.config, "max_position_embeddings", None) or UNCUT
    prompts = [p[-max(1, limit - longest) :] for p in prompts]  # keep the end: the question is there
    settings = GenSettings(max_new_tokens=longest)  # temperature 0: greedy
    decoder = Decoder(model, tokenizer, prompts, settings, stop_ids(model, tokenizer), cancel=cancel)
    decoder.run()
    rows = zip(decoder.rows, budgets, strict=True)
    return [tokenizer.decode(row[:n], skip_special_tokens=True).strip() for row, n in rows]


def pair_score(model: Any, pair: PairItem) -> PairScore:
    """The model's log-probabilities of a pair's chosen and rejected answers, each summed over its answer tokens
    (what DPO's reward compares; ORPO and SimPO use the per-token means)."""
    chosen, chosen_n = response_nll(model, *pair.chosen)
    rejected, rejected_n = response_nll(model, *pair.rejected)
    return PairScore(-chosen, -rejected, chosen_n, rejected_n)


def _evaluate_batch(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    cfg: DataConfig,
    max_new_tokens: int,
    cancel: threading.Event | None,
    pairs: list[PairItem],
) -> list[Result]:
    """Each item's loss and greedy answer; with `pairs` (a preference run, one per item) each pair's log-probs."""
    encoded = [encode_for_eval(it.example, tokenizer, cfg) for it in items]
    losses = [response_nll(model, ids, labels) for _, ids, labels in encoded]
    scores = [pair_score(model, pair) for pair in pairs] or [None] * len(items)
    answers = generate_answers(model, tokenizer, [p for p, _, _ in encoded], max_new_tokens, cancel)
    return [Result(a, nll, n, s) for a, (nll, n), s in zip(answers, losses, scores, strict=True)]


def _run_all(
    models: ModelSet,
    items: list[Item],
    cfg: DataConfig,
    max_new_tokens: int,
    batch_size: int,
    progress: Progress | None,
    cancel: threading.Event | None,
    pairs: list[PairItem] | None = None,
) -> tuple[dict[str, list[Result]], bool]:
    """Batches outer, models inner: a cancelled evaluation still has every model on the same examples. A batch
    is kept only when every model finished it (answers cut short by the stop are dropped)."""
    stopped = (lambda: cancel.is_set()) if cancel is not None else (lambda: False)
    results: dict[str, list[Result]] = {c: [] for c in models.columns}
    units, done = len(items) * len(models.columns), 0
    for start in range(0, len(items), batch_size):
        batch, outs = items[start : start + batch_size], {}
        for column in models.columns:
            if stopped():
                return results, True
            with models.use(column) as (model, tokenizer):
                batch_pairs = (pairs or [])[start : start + batch_size]
                outs[column] = _evaluate_batch(model, tokenizer, batch, cfg, max_new_tokens, cancel, batch_pairs)
            if stopped():
                return results, True
            done += len(batch)
            if progress is not None:
                progress(0.15 + 0.85 * done / units, f"{column}: {start + len(batch)}/{len(items)} examples")
        for label, rows in outs.items():
            results[label] += rows
    return results, False
