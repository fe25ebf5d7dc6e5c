"""Preference data: pairs (a prompt, a chosen and a rejected answer) for DPO, ORPO and SimPO, and unpaired answers
with a good/bad label for KTO; load and validate, then rows in TRL's formats for its trainers.

Every layout people have is read, record by record (the kind of each record is told by its keys):

    {"prompt": "2+2?", "chosen": "4", "rejected": "5"}                          TRL standard (strings or messages)
    {"conversations": [{"from": "human", "value": "2+2?"}],
     "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}}   LlamaBoard ranking
    {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "label": true}       KTO
    {"prompt": "2+2?", "completion": "4", "label": true}                        TRL unpaired

Extra keys (a Chat vote's "models" and "time") are ignored. Each problem names the record, the field as the file
calls it and the reason (a missing side, identical chosen and rejected, an empty prompt), and the record is left
out; {{name}} placeholders are filled from data.placeholders as for supervised data. Pairs train KTO too (each
pair gives a desirable and an undesirable answer, as TRL's unpair_preference_dataset does).

    load = load(cfg.data, PAIRS)                       # PreferenceLoad: records, problems, read
    prepared = prepare(cfg, tokenizer)                 # train/val datasets.Dataset for TRL's trainers, facts

What trains is shown token by token (encode): the prompt once, then each answer with its label mask, tokenized as
TRL's DPOTrainer and KTOTrainer tokenize (prompt, then prompt + answer; the answer starts where they part).
No gradio; no torch at import (datasets is imported when rows are built).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import data, objective_table
from app.config import DataConfig, DataSource, RunConfig
from app.data_io import DataError, RawRecord, read_page, read_source, sniff
from app.data_records import ROLES, Problem, _kind, _Report, _unfilled, fill_placeholders
from app.data_render import IGNORE, Encoded, Example, bos_text, render_segments, resolve_template, with_system

if TYPE_CHECKING:
    from datasets import Dataset

PAIRS, UNPAIRED = objective_table.PAIRS, objective_table.UNPAIRED
LAYOUTS = {
    "trl": "prompt / chosen / rejected",
    "ranking": "LlamaBoard ranking: conversations + chosen / rejected",
    "kto": "messages + label",
    "trl_unpaired": "prompt / completion / label",
}
"""Record layouts by name, as the Data tab and messages say them."""
LAYOUT_HINT = (
    "DPO, ORPO and SimPO train on pairs: {prompt, chosen, rejected} (text or messages) or LlamaBoard's "
    "{conversations, chosen, rejected}; KTO on labelled answers: {messages, label} or {prompt, completion, label} "
    "(pairs work too)"
)


def kind_of(objective: str) -> str | None:
    """The data an objective trains on (app.objective_table): PAIRS, UNPAIRED, or None for supervised fine-tuning.

    >>> kind_of("dpo"), kind_of("kto"), kind_of("sft")
    ('pairs', 'unpaired', None)
    """
    return objective_table.TABLE[objective].data if objective in objective_table.TABLE else None


@dataclass
class Pair:
    index: int
    """Record index in the source (0-based; in a mix, numbered on from one dataset to the next)."""
    prompt: list[dict]
    """Chat messages up to the answer: an optional system message, then user/assistant turns ending with user."""
    chosen: str
    rejected: str


@dataclass
class Unpaired:
    index: int
    prompt: list[dict]
    completion: str
    label: bool
    """True: a desirable answer; False: an undesirable one."""


@dataclass
class PreferenceLoad:
    path: str
    kind: str
    """PAIRS or UNPAIRED: what `records` hold (pairs read for KTO come out UNPAIRED, two per pair)."""
    layouts: list[str]
    """The layouts found (keys of LAYOUTS), most common first."""
    records: list[Pair | Unpaired]
    problems: list[Problem]
    read: int
    """Records read from the source, broken ones included."""

    @property
    def valid(self) -> int:
        """Source records that gave a pair or answer."""
        return len({r.index for r in self.records})

    @property
    def skipped(self) -> int:
        return self.read - self.valid

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


# ---- detection -----------------------------------------------------------------------------------------------
def layout_of(value: Any) -> str | None:
    """The layout a record's keys say, None when they say none.

    >>> layout_of({"conversations": [], "chosen": {}, "rejected": {}}), layout_of({"instruction": "Hi"})
    ('ranking', None)
    """
    if not isinstance(value, dict):
        return None
    if "chosen" in value or "rejected" in value:
        return "ranking" if "conversations" in value else "trl"
    if "label" in value:
        return "kto" if "messages" in value else "trl_unpaired" if "completion" in value else None
    return None


def detect(records: list[Any]) -> str | None:
    """PAIRS or UNPAIRED when at least half the records are in one of the preference layouts, else None.

    >>> detect([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]), detect([{"instruction": "Hi", "output": "Yo"}])
    ('pairs', None)
    >>> detect([{"messages": [], "label": True}])
    'unpaired'
    """
    return _kind_of_layouts(Counter(layout_of(v) for v in records if isinstance(v, dict)))


def detect_source(data_cfg: DataConfig, head: int = 50) -> str | None:
    """detect() on the first `head` records of the config's first dataset (cheap: one page of the file), so the
    Data tab can tell preference data from supervised data before loading it whole. None when unreadable."""
    src = data_cfg.datasets()[0]
    try:
        where = Path(data._source(src.path)).expanduser()
        records, _ = read_page(where, sniff(where), 0, head, src.split, src.config, src.revision)
    except (DataError, OSError, ValueError):
        return None
    return detect([r.value for r in records if r.error is None])


def _kind_of_layouts(layouts: Counter) -> str | None:
    """detect() from a count of layouts (None: records in no preference layout)."""
    kinds = Counter({PAIRS: layouts["trl"] + layouts["ranking"], UNPAIRED: layouts["kto"] + layouts["trl_unpaired"]})
    kind, count = kinds.most_common(1)[0]
    return kind if count and count * 2 >= sum(layouts.values()) else None


# ---- one record ----------------------------------------------------------------------------------------------
def _message(turn: Any, where: str, report: _Report, role: str | None = None) -> dict | None:
    """One turn: {role, content} or {from, value} (ShareGPT), or plain text taken as `role`."""
    if isinstance(turn, str) and role is not None:
        return {"role": role, "content": turn}
    if not isinstance(turn, dict):
        report.error(where, f"expected text or a message with role and content, got {_kind(turn)}")
        return None
    role_key = "role" if "role" in turn else "from"
    raw = turn.get(role_key)
    found = ROLES.get(raw.lower()) if isinstance(raw, str) else None
    if found is None:
        report.error(f"{where}.{role_key}", f"unknown role {raw!r}; use user/human, assistant/gpt, system")
        return None
    content = turn.get("content" if "content" in turn else "value")
    if not isinstance(content, str):
        report.error(f"{where}.{'content' if 'content' in turn else 'value'}", f"expected text, got {_kind(content)}")
        return None
    return {"role": found, "content": content}


def _messages(raw: Any, where: str, report: _Report, role: str) -> list[dict] | None:
    """Text (one message of `role`), one message, or a list of them."""
    if isinstance(raw, list):
        got = [_message(t, f"{where}[{k}]", report) for k, t in enumerate(raw)]
        return None if any(m is None for m in got) else got
    got = _message(raw, where, report, role)
    return None if got is None else [got]


def _prompt(raw: Any, where: str, system: Any, report: _Report) -> list[dict] | None:
    """The prompt's messages, checked: not empty, system first only, user/assistant alternating, ending with user."""
    if raw is None:
        report.error(where, "missing: a pair needs the prompt its answers reply to")
        return None
    messages = _messages(raw, where, report, "user")
    if messages is None:
        return None
    if isinstance(system, str) and system.strip() and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not any(m["content"].strip() for m in turns):
        report.error(where, "empty prompt: there is nothing the answers reply to")
        return None
    for k, m in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if m["role"] != expected:
            report.error(where, f"turn {k}: expected a {expected} turn; turns alternate user, assistant")
            return None
    if turns[-1]["role"] != "user":
        report.error(where, "ends with an assistant turn: the prompt ends with the user message the answers reply to")
        return None
    return messages


def _answer(value: dict, key: str, report: _Report) -> str | None:
    """One answer: text, one assistant message, or a list holding just that message."""
    raw = value.get(key)
    if raw is None:
        report.error(
            key,
            "missing side: " + ("a pair needs a chosen and a rejected answer" if key != "completion" else "no answer"),
        )
        return None
    messages = _messages(raw, key, report, "assistant")
    if messages is None:
        return None
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        report.error(key, "expected one assistant answer (text, or a single assistant message)")
        return None
    if not messages[0]["content"].strip():
        report.error(key, "is empty")
        return None
    return messages[0]["content"]


def _split_implicit(value: dict) -> dict:
    """TRL's implicit prompt: without a prompt, chosen and rejected are whole conversations sharing it; the prompt is
    their common first turns (trl.data_utils.extract_prompt)."""
    chosen, rejected = value.get("chosen"), value.get("rejected")
    if "prompt" in value or not (isinstance(chosen, list) and isinstance(rejected, list)):
        return value
    k = 0
    while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
        k += 1
    return {**value, "prompt": chosen[:k], "chosen": chosen[k:], "rejected": rejected[k:]}


def _pair(value: dict, layout: str, report: _Report) -> Pair | None:
    value = _split_implicit(value)
    key = "conversations" if layout == "ranking" else "prompt"
    prompt = _prompt(value.get(key), key, value.get("system"), report)
    chosen = _answer(value, "chosen", report)
    rejected = _answer(value, "rejected", report)
    if prompt is None or chosen is None or rejected is None:
        return None
    if chosen.strip() == rejected.strip():
        report.error("rejected", "identical to chosen: the pair prefers nothing; drop it or fix one side")
        return None
    return Pair(report.index, prompt, chosen, rejected)


def _unpaired(value: dict, layout: str, report: _Report) -> Unpaired | None:
    label = value.get("label")
    if not isinstance(label, bool):
        report.error("label", f"expected true (a desirable answer) or false (an undesirable one), got {_kind(label)}")
    if layout == "kto":
        turns = value.get("messages")
        if not isinstance(turns, list) or len(turns) < 2:
            report.error("messages", "expected a list of turns: the prompt, then the assistant's answer last")
            return None
        value = {**value, "prompt": turns[:-1], "completion": turns[-1]}
        key = "messages"
    else:
        key = "prompt"
    prompt = _prompt(value.get("prompt"), key, value.get("system"), report)
    completion = _answer(value, "completion", report)
    if prompt is None or completion is None or not isinstance(label, bool):
        return None
    return Unpaired(report.index, prompt, completion, label)


def parse(record: RawRecord, placeholders: dict[str, str]) -> tuple[Pair | Unpaired | None, list[Problem]]:
    """One raw record to a Pair or Unpaired (None when it has an error) and its problems."""
    report = _Report(record.index, record.line)
    if record.error is not None:
        report.error(None, record.error)
        return None, report.problems
    layout = layout_of(record.value)
    if layout is None:
        keys = ", ".join(list(record.value)[:8]) if isinstance(record.value, dict) else _kind(record.value)
        report.error(None, f"not a preference record (it has {keys or 'no keys'}). {LAYOUT_HINT}")
        return None, report.problems
    value = fill_placeholders(record.value, placeholders) if placeholders else record.value
    _unfilled(value, report)
    make = _pair if layout in ("trl", "ranking") else _unpaired
    return make(value, layout, report), report.problems


# ---- a dataset, or several ------------------------------------------------------------------------------------
def unpair(pair: Pair) -> list[Unpaired]:
    """A pair as KTO reads it: the chosen answer desirable, the rejected one not (TRL's unpair_preference_dataset)."""
    return [
        Unpaired(pair.index, pair.prompt, pair.chosen, True),
        Unpaired(pair.index, pair.prompt, pair.rejected, False),
    ]


def load_source(src: DataSource, kind: str, placeholders: dict[str, str]) -> PreferenceLoad:
    """One dataset (file, folder or Hub split, its first `src.limit` records) read and validated as `kind`."""
    name = data._source(src.path)
    where = Path(name).expanduser()
    source = read_source(where, sniff(where), src.limit, src.split, src.config, src.revision)
    records: list[Pair | Unpaired] = []
    problems: list[Problem] = []
    layouts: Counter = Counter()
    read = 0
    for raw in source.records:
        read += 1
        got, found = parse(raw, placeholders)
        problems += found
        if raw.error is None:
            layouts[layout_of(raw.value)] += 1
        if got is not None:
            records += unpair(got) if kind == UNPAIRED and isinstance(got, Pair) else [got]
    _check_kind(name, kind, layouts)
    problems += [Problem(i, ln, None, msg, "warning") for i, ln, msg in source.notes]
    problems += _label_notes(records)
    problems.sort(key=lambda p: -1 if p.index is None else p.index)
    order = [lay for lay, _ in layouts.most_common() if lay]
    return PreferenceLoad(str(name), kind, order, records, problems, read)


def _check_kind(name: str, kind: str, layouts: Counter) -> None:
    """Refuse, with what to do, a file that is not preference data, or holds labelled answers for a pair objective.
    A file with no readable record passes: each of its records is listed as a problem."""
    found = _kind_of_layouts(layouts)
    if found is None and layouts:
        raise DataError(f"{name}: these are not preference records. {LAYOUT_HINT}")
    if found == UNPAIRED and kind == PAIRS:
        raise DataError(
            f"{name} holds single answers labelled good or bad (KTO data); DPO, ORPO and SimPO need pairs of a "
            "chosen and a rejected answer to the same prompt: train it with objective kto, or choose a pair file"
        )


def _label_notes(records: list[Pair | Unpaired]) -> list[Problem]:
    """KTO learns from the contrast of desirable and undesirable answers: warn when there is only one kind."""
    labels = {r.label for r in records if isinstance(r, Unpaired)}
    if len(labels) != 1:
        return []
    missing = "undesirable (label false)" if True in labels else "desirable (label true)"
    return [
        Problem(None, None, "label", f"every answer has the same label: no {missing} answers to learn from", "warning")
    ]


def load(data_cfg: DataConfig, kind: str) -> PreferenceLoad:
    """Every dataset of the config (data.sources, or data.path) read as `kind` (PAIRS or UNPAIRED), placeholders
    filled; several are numbered on one after another, each problem naming its dataset (as app.data.mix does).
    Raises DataError when a source cannot be read or holds no preference records."""
    if kind not in (PAIRS, UNPAIRED):
        raise ValueError(f"kind {kind!r} is not {PAIRS!r} or {UNPAIRED!r}")
    sources = data_cfg.datasets()
    loads = [load_source(s, kind, data_cfg.placeholders) for s in sources]
    if len(loads) == 1:
        return loads[0]
    counts = data.mix_counts([len(x.records) for x in loads], [s.share for s in sources])
    records, problems, offset = [], [], 0
    for one, src, count in zip(loads, sources, counts, strict=True):
        label = data.source_label(src)
        records += [replace(r, index=r.index + offset) for r in one.records[:count]]
        problems += [data._moved(p, offset, label) for p in one.problems]
        offset += one.read
    layouts = list(dict.fromkeys(lay for one in loads for lay in one.layouts))
    return PreferenceLoad(data.describe(data_cfg), kind, layouts, records, problems, offset)


# ---- rows for TRL's trainers ----------------------------------------------------------------------------------
@dataclass
class PreferencePrepared:
    train: Dataset
    val: Dataset | None
    """None when val_size leaves no record for eval: then there is no eval."""
    facts: dict[str, Any]
    """What the run's log and the Train tab say about the data: kind, layouts, format, template, counts."""
    load: PreferenceLoad | None = None
    lengths: list[int] = field(default_factory=list)
    """Tokens of each sequence (prompt + one answer) before the cut, for the Data tab's histogram."""


def conversational(data_cfg: DataConfig, tokenizer: Any) -> bool:
    """TRL's conversational format (messages, rendered by the model's chat template) when data.template resolves
    to chat; else its standard format (text rendered with the Alpaca prompt)."""
    return resolve_template(data_cfg.template, tokenizer) == "chat"


def row(record: Pair | Unpaired, tokenizer: Any, data_cfg: DataConfig) -> dict[str, Any]:
    """One record in TRL's format: {prompt, chosen, rejected} or {prompt, completion, label}.

    Conversational: the prompt's messages (with data.system_prompt, never the template's built-in one, as
    app.data_render.with_system gives every conversation) and each answer as [assistant message]. Standard: the
    Alpaca prompt as text, without the BOS token the tokenizer adds itself, and each answer as text (TRL adds EOS).

    >>> row(Pair(0, [{"role": "user", "content": "2+2?"}], "4", "5"), chatml_tok, DataConfig())  # doctest: +SKIP
    {'prompt': [{'role': 'user', 'content': '2+2?'}], 'chosen': [{'role': 'assistant', 'content': '4'}], ...}
    """
    answers = (
        {"chosen": record.chosen, "rejected": record.rejected}
        if isinstance(record, Pair)
        else {"completion": record.completion}
    )
    if conversational(data_cfg, tokenizer):
        prompt: Any = with_system(list(record.prompt), tokenizer, data_cfg.system_prompt)
        out = {"prompt": prompt, **{k: [{"role": "assistant", "content": v}] for k, v in answers.items()}}
    else:
        out = {"prompt": alpaca_prompt(record.prompt, tokenizer), **answers}
    return out if isinstance(record, Pair) else {**out, "label": record.label}


def alpaca_prompt(prompt: list[dict], tokenizer: Any) -> str:
    """The prompt messages as app.data renders an Alpaca prompt (earlier turns as earlier blocks, a record's system
    message as the preamble), up to '### Response:\\n', without the BOS text the tokenizer adds by itself."""
    user = prompt[-1]["content"]
    example = Example([*prompt, {"role": "assistant", "content": ""}], 0, {"instruction": user, "input": ""})
    text = "".join(t for t, _ in render_segments(example, tokenizer, "alpaca")[:-1])
    bos = bos_text(tokenizer)
    return text[len(bos) :] if bos and text.startswith(bos) else text


def prepare(cfg: RunConfig, tokenizer: Any) -> PreferencePrepared:
    """The run's preference data as train/val datasets.Dataset in TRL's format: loaded as its objective needs,
    the first data.max_samples records, records whose prompt alone fills data.max_seq_len left out (as problems:
    no answer token would train), val split by data.val_size with seed train.seed, prompts kept on one side.
    Raises DataError when the data is unreadable, of the wrong kind, or leaves nothing to train on."""
    kind = kind_of(cfg.objective)
    if kind is None:
        raise DataError(f"objective {cfg.objective!r} is not preference training; app.data prepares its data")
    return prepare_loaded(load(cfg.data, kind), cfg, tokenizer)


def prepare_loaded(got: PreferenceLoad, cfg: RunConfig, tokenizer: Any) -> PreferencePrepared:
    """prepare() for loaded records (as the Data tab loads them); records lost here are added to its problems."""
    from datasets import Dataset

    records = _first_records(got.records, cfg.data.max_samples)
    encoded = encode_many(records, tokenizer, cfg.data)
    lost = {e.index: why for e in encoded if (why := _why_not(e, cfg.data.max_seq_len))}
    got.problems += [Problem(index, None, None, why) for index, why in lost.items()]
    got.problems.sort(key=lambda p: -1 if p.index is None else p.index)
    got.records = [r for r in got.records if r.index not in lost]
    kept = [r for r in records if r.index not in lost]
    if not kept:
        raise DataError(f"{got.path}: nothing to train on: {_first_errors(got)}")
    train, val = split(kept, cfg.data.val_size, cfg.train.seed)
    rows = [row(r, tokenizer, cfg.data) for r in train]
    val_rows = [row(r, tokenizer, cfg.data) for r in val]
    encoded = [e for e in encoded if e.index not in lost]
    lengths = [a.full_length for e in encoded for a in e.answers.values()]
    facts = _facts(got, cfg.data, tokenizer, train, val, encoded)
    val_set = Dataset.from_list(val_rows) if val_rows else None
    return PreferencePrepared(Dataset.from_list(rows), val_set, facts, got, lengths)


def _first_records(records: list[Pair | Unpaired], max_samples: int | None) -> list[Pair | Unpaired]:
    """The records of the first `max_samples` source records (both answers of an unpaired pair count as one)."""
    if not max_samples:
        return list(records)
    keep = sorted({r.index for r in records})[:max_samples]
    return [r for r in records if keep and r.index <= keep[-1]]


def _why_not(encoding: Encoding, max_seq_len: int) -> str | None:
    """Why a record cannot train: the template refused it, or its prompt alone fills max_seq_len (no answer token
    would train; TRL would drop it without a word). None when it can."""
    if encoding.error is None and encoding.prompt_tokens >= max_seq_len:
        return (
            f"the prompt alone is {encoding.prompt_tokens} tokens, max_seq_len is {max_seq_len}: no answer token "
            "would train; raise max_seq_len or shorten the prompt"
        )
    return encoding.error


def _first_errors(got: PreferenceLoad, count: int = 3) -> str:
    shown = [p.describe() for p in got.errors[:count]]
    return "; ".join(shown) + (f" (and {len(got.errors) - count} more)" if len(got.errors) > count else "") or "empty"


def split(records: list[Pair | Unpaired], val_size: float, seed: int) -> tuple[list, list]:
    """Hold out int(n x val_size) records by a seeded shuffle of their prompts: records sharing a prompt (a pair's
    two KTO answers, several pairs on one question) stay on one side, so eval never scores a prompt it trained on.

    >>> ps = [Pair(i, [{"role": "user", "content": str(i)}], "a", "b") for i in range(10)]
    >>> [len(part) for part in split(ps, 0.2, 42)]
    [8, 2]
    """
    return data.split_train_val(records, val_size, seed, key=lambda r: json.dumps(r.prompt, ensure_ascii=False))


# ---- tokens: what trains -------------------------------------------------------------------------------------
@dataclass
class Encoding:
    """One record tokenized as TRL's DPOTrainer/KTOTrainer tokenize it: the prompt (with the generation prompt),
    then prompt + each answer; the answer starts where the two token lists part, and the whole is cut at
    max_seq_len from the end (truncation_mode keep_start)."""

    index: int
    prompt_tokens: int
    answers: dict[str, Encoded] = field(default_factory=dict)
    """'chosen' and 'rejected', or 'completion': prompt + answer ids, labels -100 on the prompt."""
    error: str | None = None
    """Why the record cannot be rendered (e.g. the chat template refuses it); then `answers` is empty."""


def encode_many(
    records: list[Pair | Unpaired], tokenizer: Any, data_cfg: DataConfig, batch: int = 256
) -> list[Encoding]:
    """encode() for many records, tokenized a batch at a time (one fast-tokenizer call per batch)."""
    chat = conversational(data_cfg, tokenizer)
    out: list[Encoding] = []
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        texts = [_texts(r, tokenizer, data_cfg, chat) for r in chunk]
        flat = [t for got in texts if isinstance(got, list) for t in got]
        ids = iter(tokenizer(flat, add_special_tokens=not chat)["input_ids"]) if flat else iter(())
        for record, got in zip(chunk, texts, strict=True):
            if isinstance(got, str):
                out.append(Encoding(record.index, 0, error=got))
                continue
            out.append(_encoding(record, [list(next(ids)) for _ in got], data_cfg.max_seq_len))
    return out


def encode(record: Pair | Unpaired, tokenizer: Any, data_cfg: DataConfig) -> Encoding:
    """One record as it trains: for the Data tab's side-by-side label masks (mask_view of each answer). For the
    tokens beyond the cut, encode again with replace(data_cfg, max_seq_len=10**9)."""
    return encode_many([record], tokenizer, data_cfg)[0]


def _texts(record: Pair | Unpaired, tokenizer: Any, data_cfg: DataConfig, chat: bool) -> list[str] | str:
    """[prompt, prompt + answer, ...] as text, as TRL renders them; or why the chat template refused."""
    got = row(record, tokenizer, data_cfg)
    answers = [got[k] for k in ("chosen", "rejected", "completion") if k in got]
    if not chat:
        eos = tokenizer.eos_token or ""
        return [got["prompt"], *(got["prompt"] + a + ("" if a.endswith(eos) else eos) for a in answers)]
    try:
        prompt = tokenizer.apply_chat_template(got["prompt"], tokenize=False, add_generation_prompt=True)
        return [prompt, *(tokenizer.apply_chat_template(got["prompt"] + a, tokenize=False) for a in answers)]
    except Exception as exc:  # noqa: BLE001 - jinja raises TemplateError (e.g. "roles must alternate") and others
        return f"the model's chat template refused this record: {exc}"


def _encoding(record: Pair | Unpaired, ids: list[list[int]], max_seq_len: int) -> Encoding:
    prompt, *fulls = ids
    cut = min(common_prefix(prompt, full) for full in fulls)
    names = ("chosen", "rejected") if isinstance(record, Pair) else ("completion",)
    answers = {}
    for name, full in zip(names, fulls, strict=True):
        labels = [IGNORE] * cut + full[cut:]
        answers[name] = Encoded(
            full[:max_seq_len], labels[:max_seq_len], len(full), len(full) > max_seq_len, record.index
        )
    return Encoding(record.index, cut, answers)


def common_prefix(ids: list[int], other: list[int]) -> int:
    """Leading tokens two lists share (trl.data_utils.common_prefix_length).

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = 0
    for a, b in zip(ids, other, strict=False):
        if a != b:
            break
        n += 1
    return n


def _facts(got: PreferenceLoad, data_cfg: DataConfig, tokenizer: Any, train: list, val: list, encoded: list) -> dict:
    """The data in numbers, for the run's log, the Train tab and the estimate: tokens per sequence (prompt +
    one answer, before the cut; a pair trains two such sequences), and how many are cut at max_seq_len."""
    lengths = [e.full_length for enc in encoded for e in enc.answers.values()]
    facts: dict[str, Any] = {
        "kind": got.kind,
        "layouts": got.layouts,
        "format": "conversational" if conversational(data_cfg, tokenizer) else "standard",
        "template": resolve_template(data_cfg.template, tokenizer),
        "path": got.path,
        "records": got.read,
        "valid": got.valid,
        "skipped": got.skipped,
        "errors": len(got.errors),
        "warnings": len(got.problems) - len(got.errors),
        "train": len(train),
        "val": len(val),
        "max_length": data_cfg.max_seq_len,
        "tokens_mean": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "tokens_max": max(lengths, default=0),
        "prompt_tokens_mean": round(sum(e.prompt_tokens for e in encoded) / len(encoded), 1) if encoded else 0.0,
        "cut": sum(n > data_cfg.max_seq_len for n in lengths),
    }
    if got.kind == UNPAIRED:
        facts["desirable"] = sum(r.label for r in train + val)
        facts["undesirable"] = len(train) + len(val) - facts["desirable"]
    return facts
