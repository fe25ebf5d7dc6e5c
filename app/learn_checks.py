""" "Will it learn?" checks before Start: settings that make a run train nothing, or nothing a person can judge.

Each check gives a LearnWarning (what is wrong, what to change, which config key) and never blocks: the user may
start anyway. What the Train tab shows at Start and `python -m app train` prints before training:

    found = checks(cfg)                         # [LearnWarning(code, message, fix, field), ...]; [] when all is well
    print(format_warnings(found))

The data checks go through app.data's own loading and tokenizing (prepare_preview: every example up to
data.TOKEN_SAMPLE, an even sample beyond), with the base model's tokenizer only, never its weights: ~1 s for 1,000
Alpaca records with the default model's chat template on a 2-core machine. When the tokenizer is not on this
machine (a model still to download) or the data cannot be read (preflight and the Data tab say why), only the
checks that need neither run. No gradio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app import methods
from app.config import RunConfig

MIN_STEPS = 10
"""Fewer optimizer steps than this draw no loss curve worth reading: a few noisy points, no trend."""
SHOWN = 5
"""Record numbers a warning lists before it says "and N more"."""


@dataclass(frozen=True)
class LearnWarning:
    code: str
    """Stable id: no_trainable_tokens, template_mismatch, too_few_steps, learning_rate, val_in_train."""
    message: str
    """What is wrong, in one line a person understands."""
    fix: str
    """What to change, in one line."""
    field: str
    """The dotted RunConfig key to change (e.g. data.max_seq_len), for a UI to point at."""


LR_FACTOR = 10
"""A learning rate this many times beyond the usual range's edge is warned about."""


def checks(cfg: RunConfig, tokenizer: Any = None, world: int = 1) -> list[LearnWarning]:
    """Every "will it learn?" warning for `cfg`, in the order a person fixes them. `tokenizer`: the base model's,
    when the caller has it loaded (else the estimate's cached one, if the model is on this machine); `world`: the
    number of data-parallel processes, which divide the steps."""
    path = _model_path(cfg)
    if tokenizer is None and path is not None:
        tokenizer = _load_tokenizer(path, cfg)
    template = _template(cfg, tokenizer, path)
    # The data checks read supervised records (app.data); preference pairs (app.preference_data) are checked
    # record by record when they load, so a preference run gets the checks that need no data.
    supervised = cfg.objective == "sft"
    facts = _prepared(cfg, tokenizer) if tokenizer is not None and supervised else None
    if facts is None:  # no tokenizer, no readable supervised data: the checks that need neither
        return [w for w in (template, _learning_rate(cfg)) if w]
    prepared, examples, lost = facts
    found = (
        _no_trainable(cfg, tokenizer, prepared, examples, lost),
        template,
        _steps(cfg, prepared, world),
        _learning_rate(cfg),
        _val_in_train(prepared, examples),
    )
    return [w for w in found if w]


def format_warnings(found: list[LearnWarning]) -> str:
    """The warnings as the CLI prints them ("" when there are none).

    >>> print(format_warnings([LearnWarning("x", "it is off", "turn it on", "train.x")]))
    will it learn? 1 warning (training starts anyway):
      - it is off
        fix: turn it on (train.x)
    """
    if not found:
        return ""
    head = f"will it learn? {len(found)} warning{'s' if len(found) > 1 else ''} (training starts anyway):"
    return "\n".join([head, *(f"  - {w.message}\n    fix: {w.fix} ({w.field})" for w in found)])


# ---- what the checks read --------------------------------------------------------------------------------------
def _model_path(cfg: RunConfig) -> str | None:
    """The base model's folder when it is on this machine (as the estimate finds it: no download, no weights)."""
    from app import estimate

    return estimate.tokenizer_source(cfg)


def _load_tokenizer(path: str, cfg: RunConfig) -> Any:
    """The estimate's cached tokenizer of `path`; None when it cannot be read (preflight says why)."""
    from app import estimate, modeling

    try:
        return estimate.cached_tokenizer(path, cfg.model.trust_remote_code)
    except (modeling.ModelError, OSError, ValueError):
        return None


def _prepared(cfg: RunConfig, tokenizer: Any):
    """(Prepared, the valid examples as loaded, problems added by encoding) from app.data's preview path, or None
    when the data or the template cannot be read (preflight, the Data tab and _template say why)."""
    from app import data

    try:
        load = data.load_from_config(cfg.data)
        examples, known = load.examples, {id(p) for p in load.problems}
        prepared = data.prepare_preview(load, cfg.data, tokenizer, seed=cfg.train.seed)
    except (data.DataError, data.RenderError, OSError):
        return None
    return prepared, examples, [p for p in load.problems if id(p) not in known]


def _records(indices: list[int]) -> str:
    """'record 3', 'records 3, 17, 40' or 'records 3, 17, 40, 41, 52 and 7 more'."""
    shown = ", ".join(str(i) for i in indices[:SHOWN])
    more = f" and {len(indices) - SHOWN:,} more" if len(indices) > SHOWN else ""
    return f"record{'s' if len(indices) > 1 else ''} {shown}{more}"


def _sampled(prepared: Any) -> str:
    return f" (of {len(prepared.train) + len(prepared.val):,} examples checked)" if prepared.sampled else ""


# ---- the checks ------------------------------------------------------------------------------------------------
def _no_trainable(cfg: RunConfig, tokenizer: Any, prepared: Any, examples: Any, lost: list) -> LearnWarning | None:
    """Examples app.data dropped because no answer token survives max_seq_len. Records lost to a template error
    are the Data tab's to report."""
    encode_cfg = replace(cfg.data, template=prepared.template, train_on_prompt=False)
    found = (examples.find(p.index) for p in lost if p.index is not None)
    empty = [e.index for e in found if e is not None and _answerless(e, tokenizer, encode_cfg)]
    if not empty:
        return None
    return LearnWarning(
        "no_trainable_tokens",
        f"{len(empty):,} example{'s have' if len(empty) > 1 else ' has'} no answer token left to train on: "
        f"data.max_seq_len={cfg.data.max_seq_len} cuts the whole answer away{_sampled(prepared)}; "
        f"{_records(sorted(empty))} {'are' if len(empty) > 1 else 'is'} left out of training",
        "raise data.max_seq_len, or shorten the prompts of those records",
        "data.max_seq_len",
    )


def _answerless(example: Any, tokenizer: Any, data_cfg: Any) -> bool:
    """True when every label is -100 once `example` is encoded the training way (data.encode_example): no answer
    token is left to learn from."""
    from app import data

    try:
        return all(x == data.IGNORE for x in data.encode_example(example, tokenizer, data_cfg).labels)
    except data.RenderError:
        return False


CHAT_NAME = re.compile(r"[-_.](instruct|chat|it)([-_.]|$)", re.IGNORECASE)
"""Names of chat-tuned models: SmolLM2-135M-Instruct, Llama-2-7b-chat-hf, gemma-2-2b-it."""


def _template(cfg: RunConfig, tokenizer: Any, path: str | None) -> LearnWarning | None:
    """A chat model (its tokenizer has a chat template, or its name says Instruct/Chat) trained with the alpaca
    template, or a model without a chat template asked for "chat". "auto" picks the right one, so never warns."""
    template, name = cfg.data.template, _model_names(cfg, path)
    has_chat = bool(getattr(tokenizer, "chat_template", None)) if tokenizer is not None else None
    if template == "alpaca" and (has_chat or any(CHAT_NAME.search(n) for n in name)):
        why = "has a chat template" if has_chat else "is a chat-tuned model by its name"
        return LearnWarning(
            "template_mismatch",
            f"{name[0]} {why}, but data.template is alpaca: it learns a second prompt format instead of building "
            "on the one it answers in",
            "set data.template to auto (the model's chat template)",
            "data.template",
        )
    if template == "chat" and has_chat is False:
        return LearnWarning(
            "template_mismatch",
            f"{name[0]} has no chat template (a base model), but data.template is chat: its records cannot be "
            "rendered and the run fails",
            "set data.template to auto (alpaca for a base model)",
            "data.template",
        )
    return None


def _model_names(cfg: RunConfig, path: str | None) -> list[str]:
    """The names the model goes by: as configured, and the folder it resolves to (the default model's alias
    'default' is the folder SmolLM2-135M-Instruct)."""
    name = cfg.model.name_or_path.strip()
    return [Path(name).name or name, *([Path(path).name] if path else [])]


def optimizer_steps(cfg: RunConfig, train_rows: int, world: int = 1) -> int:
    """Optimizer steps the Trainer makes over `train_rows` rows (examples, or packed rows), as transformers'
    Trainer.set_initial_training_values counts them: an epoch is ceil(batches / grad_accum) steps.

    >>> optimizer_steps(RunConfig(), 285)    # batch 4 x accumulation 4, 3 epochs: 72 batches -> 18 steps an epoch
    54
    """
    t = cfg.train
    if t.max_steps:
        return t.max_steps
    batches = math.ceil(train_rows / (t.batch_size * max(world, 1)))
    return math.ceil(t.epochs * max(math.ceil(batches / t.grad_accum), 1))


def _train_rows(cfg: RunConfig, prepared: Any) -> int:
    """Training rows as app.objectives builds them: one per example, or packed rows of max_seq_len tokens
    (app.batching.pack); scaled up from the sample when prepare_preview tokenized only part of the data."""
    rows = len(prepared.train)
    if cfg.train.packing:
        from app.batching import pack

        rows = len(pack([len(e.input_ids) for e in prepared.train], cfg.data.max_seq_len))
    if prepared.sampled:
        rows = round(rows * prepared.sampled / max(len(prepared.train) + len(prepared.val), 1))
    return rows


def _steps(cfg: RunConfig, prepared: Any, world: int) -> LearnWarning | None:
    rows = _train_rows(cfg, prepared)
    steps = optimizer_steps(cfg, rows, world)
    if steps >= MIN_STEPS or not rows:
        return None
    t = cfg.train
    what = "packed rows" if t.packing else "training examples"
    if t.max_steps:
        how, key = f"train.max_steps is {t.max_steps}", "train.max_steps"
        fix = f"set train.max_steps to {MIN_STEPS} or more"
    else:
        how = f"{rows:,} {what} / (batch {t.batch_size} x accumulation {t.grad_accum}) x {t.epochs:g} epochs"
        key, fix = "train.epochs", "raise train.epochs, or lower train.grad_accum or train.batch_size (or add data)"
    return LearnWarning(
        "too_few_steps",
        f"only {steps} optimizer step{'s' if steps > 1 else ''} ({how}): too few for the loss curve to show "
        "whether it learns",
        f"{fix} to reach at least {MIN_STEPS} steps",
        key,
    )


def _learning_rate(cfg: RunConfig) -> LearnWarning | None:
    """A learning rate LR_FACTOR times above the usual range (the loss jumps or turns NaN) or below it (the
    weights barely move), for the kind of weights the method trains."""
    method = methods.of(cfg)
    usual, lr = method.lr, cfg.train.learning_rate
    if usual.low / LR_FACTOR <= lr <= usual.high * LR_FACTOR:
        return None
    if lr > usual.high:
        what = f"{lr / usual.high:.0f}x the top of the usual range; the loss is likely to jump or turn NaN"
    else:
        what = f"1/{usual.low / lr:.0f} of the bottom of the usual range; the weights will barely move"
    return LearnWarning(
        "learning_rate",
        f"learning rate {_lr(lr)} is {what} ({method.name}: {_lr(usual.low)} to {_lr(usual.high)})",
        f"set train.learning_rate to about {_lr(usual.usual)}, the usual value for {method.name}",
        "train.learning_rate",
    )


def _lr(value: float) -> str:
    """A learning rate as people write it.

    >>> _lr(2e-4), _lr(1.5e-3), _lr(0.5)
    ('2e-4', '1.5e-3', '0.5')
    """
    if value >= 0.1:
        return f"{value:g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def normalized(example: Any) -> str:
    """What two examples share when they are the same question and answer written slightly differently: the user
    and assistant turns, case-folded, with punctuation and runs of spaces removed (a record's system message apart).

    >>> from app.data import Example
    >>> normalized(Example([{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Bot."}], 0))
    'who are you \\x1f bot'
    """
    turns = [m["content"] for m in example.messages if m["role"] != "system"]
    return " \x1f ".join(re.sub(r"[\W_]+", " ", t.casefold()).strip() for t in turns)


def _val_in_train(prepared: Any, examples: Any) -> LearnWarning | None:
    """Validation examples whose question and answer (normalized) are also a training example: the split keeps
    identical token sequences together, but not a copy that differs in case, spacing, punctuation or system
    message, and eval loss on it measures memory, not learning."""
    if not prepared.val:
        return None
    seen = {normalized(examples.find(e.index)) for e in prepared.train}
    leaked = sorted(e.index for e in prepared.val if normalized(examples.find(e.index)) in seen)
    if not leaked:
        return None
    return LearnWarning(
        "val_in_train",
        f"{len(leaked):,} of {len(prepared.val):,} validation examples repeat a training example (same question "
        f"and answer, written slightly differently{', in the sample checked' if prepared.sampled else ''}): "
        f"{_records(leaked)}; eval loss on them looks better than the model is",
        "remove those repeats from the data (or reword them), so validation measures unseen examples",
        "data.path",
    )
