"""What an evaluation runs on: the examples (a run's validation split or a data file), cut at the last answer.

items, data_cfg, desc = load_items(data, run_cfg, run_dir, tokenizer, max_examples)
prompt_ids, input_ids, labels = encode_for_eval(item.example, tokenizer, data_cfg)

A preference run (objective dpo, orpo or simpo) is evaluated on pairs: its held-out pairs, or a pair file.
    items, pairs, data_cfg, desc = load_pair_items(data, run_cfg, run_dir, tokenizer, max_examples)
Each item is the prompt with its chosen answer (loss, perplexity and text metrics compare with the chosen answer);
pairs[k] holds item k's chosen and rejected answers tokenized as TRL's trainers tokenize them (app.preference_data).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.config import DataConfig, RunConfig

IGNORE = -100
UNCUT = 10**9
"""max_seq_len that cuts nothing: the generation prompt is never truncated at the training length."""


class EvalError(RuntimeError):
    """An evaluation that cannot run (no data, no validation split, adapter for another base, device busy);
    the message says what to do."""


@dataclass
class Item:
    example: Any
    """app.data.Example cut after its last assistant turn."""
    prompt: str
    """Every non-system message before the last answer, for display."""
    reference: str


def _answerable(example: Any) -> Item | None:
    """The example up to its last assistant turn, or None when it has none."""
    from app.data import Example

    msgs = example.messages
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    prompt = "\n\n".join(m["content"] for m in msgs[:last] if m["role"] != "system")
    cut = Example(msgs[: last + 1], example.index, dict(getattr(example, "fields", {}) or {}))
    return Item(cut, prompt, msgs[last]["content"])


def file_config(run_cfg: RunConfig | None, path: str) -> DataConfig:
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

    prepared = data_mod.prepare(run_cfg.data, tokenizer, seed=run_cfg.train.seed)  # the split the trainer held out
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
) -> tuple[list[Item], DataConfig, dict]:
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
            cfg = file_config(run_cfg, str(data))
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


# ---- preference runs: held-out pairs -----------------------------------------------------------------------
@dataclass
class PairItem:
    """One pair's answers as they train: (input_ids, labels) each, labels -100 on the prompt."""

    index: int
    chosen: tuple[list[int], list[int]]
    rejected: tuple[list[int], list[int]]


def pairwise(run_cfg: RunConfig | None) -> bool:
    """The run trains on pairs (dpo, orpo, simpo): evaluate it on pairs."""
    from app import preference_data

    return run_cfg is not None and preference_data.kind_of(run_cfg.objective) == preference_data.PAIRS


def load_pair_items(
    data: Any, run_cfg: RunConfig, run_dir: Path | None, tokenizer: Any, max_examples: int | None
) -> tuple[list[Item], list[PairItem], DataConfig, dict]:
    """(items, pairs, data config, description) of a preference run: its held-out pairs (data None), or the pairs
    of a file (a path or a DataConfig); pairs the template cannot render are listed in desc["skipped"]."""
    from app import preference_data
    from app.data import DataError

    try:
        if data is None:
            cfg, found = run_cfg.data, held_out_pairs(run_cfg, run_dir, tokenizer)
            desc = {"data": str(cfg.path), "split": f"validation split of run {run_dir.name}"}
        else:
            cfg = data if isinstance(data, DataConfig) else file_config(run_cfg, str(data))
            found = preference_data.load(cfg, preference_data.PAIRS).records
            desc = {"data": str(cfg.path), "split": "file"}
    except DataError as exc:
        raise EvalError(str(exc)) from None
    encoded = preference_data.encode_many(found, tokenizer, cfg)
    usable = [(p, e) for p, e in zip(found, encoded, strict=True) if e.error is None]
    desc["skipped"] = [f"record {e.index}: {e.error}" for e in encoded if e.error is not None]
    if not usable:
        raise EvalError(f"{desc['data']}: no pair to evaluate on" + (f" ({desc['skipped'][0]})" if encoded else ""))
    desc["available"] = len(usable)
    usable = usable[:max_examples] if max_examples else usable
    return [_pair_example(p) for p, _ in usable], [_pair_tokens(e) for _, e in usable], cfg, desc


def held_out_pairs(run_cfg: RunConfig, run_dir: Path | None, tokenizer: Any) -> list[Any]:
    """The pairs the trainer held out (app.preference_data.prepare's seeded split), as Pair records."""
    from app import preference_data

    prepared = preference_data.prepare(run_cfg, tokenizer)
    name = run_dir.name if run_dir is not None else "this run"
    if prepared.val is None or prepared.load is None:
        raise EvalError(
            f"run {name} held out no validation pairs (data.val_size = {run_cfg.data.val_size}); choose a pair "
            "file to evaluate on"
        )
    wanted = {_row_key(r) for r in prepared.val}
    rows = ((p, preference_data.row(p, tokenizer, run_cfg.data)) for p in prepared.load.records)
    return [p for p, r in rows if _row_key(r) in wanted]


def _row_key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _pair_example(pair: Any) -> Item:
    """The prompt with the chosen answer: what loss, perplexity and the text metrics compare with."""
    from app.data import Example

    messages = [*pair.prompt, {"role": "assistant", "content": pair.chosen}]
    prompt = "\n\n".join(m["content"] for m in pair.prompt if m["role"] != "system")
    fields = {"instruction": pair.prompt[-1]["content"], "input": ""}  # the Alpaca template's last user turn
    return Item(Example(messages, pair.index, fields), prompt, pair.chosen)


def _pair_tokens(encoding: Any) -> PairItem:
    chosen, rejected = encoding.answers["chosen"], encoding.answers["rejected"]
    return PairItem(encoding.index, (chosen.input_ids, chosen.labels), (rejected.input_ids, rejected.labels))
