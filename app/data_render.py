"""Prompt rendering and tokenization with labels: the one path both the Data tab preview and the trainer take.

An example renders to segments `[(text, is_response), ...]`; `"".join(texts)` is exactly the string that is
tokenized. Labels are the token ids on response segments and -100 elsewhere, so loss is on the answers only:

    alpaca: "Below is an instruction ... ### Response:\\n" (prompt) + "Paris.<|im_end|>" (response: output + eos)
    chat:   "<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n" (prompt) + "Paris.<|im_end|>" (response)

The end-of-turn token after every assistant answer is trained, so the model learns to stop. Re-exported by
app.data; no gradio.
"""

from __future__ import annotations

import bisect
import json
import weakref
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE = -100
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)


class RenderError(ValueError):
    """One example cannot be rendered with the chosen template (reported as a problem of that record)."""


@dataclass
class Example:
    """One valid record as a conversation; `fields` keeps the Alpaca instruction/input apart for that template."""

    messages: list[dict]
    """[{"role": "system"|"user"|"assistant", "content": str}, ...], user and assistant alternating."""
    index: int
    """Record index in the source file (0-based)."""
    fields: dict[str, str] = field(default_factory=dict)
    """{"instruction": ..., "input": ...} of an Alpaca record (the last user turn); empty for conversations."""


ROLES = {"s": "system", "u": "user", "a": "assistant"}
ROLE_CODES = {role: code for code, role in ROLES.items()}


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps with options builds one a call


def _compact(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


class Examples(Sequence):
    """Valid examples in one compact copy: each example as a line of UTF-8 JSON in one bytearray, `["ua", "Hi",
    "Hello."]` (role letters, then the texts) and its fields (`1`: instruction = the last user turn, no input),
    with its end offset and record index in int64 arrays; an Example is rebuilt (~3 us) when asked for.
    1,000,000 short Alpaca records take ~45 MB this way, ~900 MB as Example objects (a dict per message, a str
    per field, a list per example).

    >>> examples = Examples([Example([{"role": "user", "content": "Hi"}], 4)])
    >>> len(examples), examples[0].index, examples.find(4).messages[0]["content"], examples.find(5)
    (1, 4, 'Hi', None)
    """

    def __init__(self, items: Iterable[Example] = ()) -> None:
        self._blob = bytearray()
        self._ends = array("q")
        self._indices = array("q")
        for example in items:
            self.append(example)

    def append(self, example: Example) -> bytes:
        """Store `example` (record indices must increase); returns its conversation as JSON bytes, the same for
        two examples exactly when their conversations are (what the duplicate check compares)."""
        roles = "".join(ROLE_CODES[m["role"]] for m in example.messages)
        messages = _compact([roles, *(m["content"] for m in example.messages)])
        plain = len(example.messages) > 1 and example.fields == {
            "instruction": example.messages[-2]["content"],
            "input": "",
        }
        self._blob += messages + b"\n" + (b"1" if plain else _compact(example.fields))
        self._ends.append(len(self._blob))
        self._indices.append(example.index)
        return messages

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self._get(i) for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(f"example {k} of {len(self)}")
        return self._get(k % len(self))

    def _parts(self, k: int) -> list[bytes]:
        start = self._ends[k - 1] if k else 0
        return bytes(self._blob[start : self._ends[k]]).split(b"\n")

    def _get(self, k: int) -> Example:
        head, fields = self._parts(k)
        roles, *texts = json.loads(head)
        messages = [{"role": ROLES[code], "content": text} for code, text in zip(roles, texts, strict=True)]
        given = {"instruction": texts[-2], "input": ""} if fields == b"1" else json.loads(fields)
        return Example(messages, self._indices[k], given)

    def messages_json(self, k: int) -> bytes:
        """What append returned for example k."""
        return self._parts(k)[0]

    def find(self, index: int) -> Example | None:
        """The example of record `index` (a binary search), None when that record is not a valid example."""
        k = bisect.bisect_left(self._indices, index)
        return self._get(k) if k < len(self) and self._indices[k] == index else None

    def __repr__(self) -> str:
        return f"Examples({len(self)} examples, {len(self._blob):,} bytes)"

    # As a list would: `a + b` and `==` give and compare plain lists of Examples (a test adds two files' examples).
    def __add__(self, other: Iterable[Example]) -> list[Example]:
        return [*self, *other]

    def __radd__(self, other: Iterable[Example]) -> list[Example]:
        return [*other, *self]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (list, Examples)) and len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    """Same length as input_ids; -100 on prompt tokens (unless train_on_prompt). Not shifted: the model shifts."""
    full_length: int
    """Tokens before truncation at max_seq_len."""
    truncated: bool
    index: int


# ---- templates -----------------------------------------------------------------------------------------------
def resolve_template(template: str, tokenizer: Any) -> str:
    """'alpaca' or 'chat': auto picks the model's chat template when the tokenizer has one.

    Raises RenderError for 'chat' on a tokenizer without a chat template (a base model): use alpaca there.
    """
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "auto":
        return "chat" if has_chat else "alpaca"
    if template == "chat" and not has_chat:
        name = getattr(tokenizer, "name_or_path", "") or "this model"
        raise RenderError(f"{name} has no chat template (a base model); set data.template to alpaca or auto")
    if template not in ("alpaca", "chat"):
        raise RenderError(f"data.template {template!r} is not one of auto, alpaca, chat")
    return template


def render_segments(
    example: Example, tokenizer: Any, template: str, system_prompt: str = ""
) -> list[tuple[str, bool]]:
    """The exact training text as (text, is_response) segments.

    >>> render_segments(Example([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], 0,
    ...                         {"instruction": "Hi", "input": ""}), tok, "alpaca")  # doctest: +SKIP
    [('Below is an instruction ... ### Instruction:\\nHi\\n\\n### Response:\\n', False), ('Yo</s>', True)]
    """
    template = resolve_template(template, tokenizer)
    if template == "alpaca":
        return _alpaca_segments(example, tokenizer)
    return _chat_segments(example, tokenizer, system_prompt)


def _alpaca_segments(example: Example, tokenizer: Any) -> list[tuple[str, bool]]:
    """Stanford Alpaca prompt; earlier turns of a conversation become earlier Instruction/Response blocks.

    A record's own system message replaces the preamble; data.system_prompt is for chat templates only.
    """
    system = next((m["content"] for m in example.messages if m["role"] == "system"), "")
    turns = [m for m in example.messages if m["role"] != "system"]
    last_input = example.fields.get("input", "")
    preamble = system or (ALPACA_PREAMBLE_INPUT if last_input else ALPACA_PREAMBLE)
    eos = tokenizer.eos_token or ""
    segments: list[tuple[str, bool]] = []
    pending = bos_text(tokenizer) + preamble + "\n\n"
    for k in range(0, len(turns) - 1, 2):
        last = k + 2 >= len(turns)
        instruction = example.fields.get("instruction", turns[k]["content"]) if last else turns[k]["content"]
        given = last_input if last else ""
        pending += f"### Instruction:\n{instruction}\n\n" + (f"### Input:\n{given}\n\n" if given else "")
        segments += [(pending + "### Response:\n", False), (turns[k + 1]["content"] + eos, True)]
        pending = "\n\n"
    return segments


def bos_text(tokenizer: Any) -> str:
    """The BOS token text when the tokenizer adds one by itself (Llama 2/3 do; ChatML models do not).

    Rendered into the text so that tokenizing with add_special_tokens=False gives the same ids. Probed once per
    tokenizer and BOS token (two tokenizer calls, ~40 us; 100k records would spend 4 s re-probing).
    """
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return ""
    try:
        cache = _BOS_CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable or not hashable: probe every time
        cache = {}
    if bos not in cache:
        ids = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        cache[bos] = bos if ids and ids[0] == tokenizer.bos_token_id and len(ids) > len(plain) else ""
    return cache[bos]


_BOS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _chat_segments(example: Example, tokenizer: Any, system_prompt: str) -> list[tuple[str, bool]]:
    """The model's chat template; each assistant span found by rendering the conversation up to it.

    prompt_i = render(messages[:i], add_generation_prompt) and upto_i = render(messages[:i+1]) are prefixes of the
    full text for well-behaved templates; the response is upto_i[len(prompt_i):] minus trailing whitespace, so
    `Paris.<|im_end|>` is trained and the `\\n` before the next turn is not.
    """
    messages = with_system(list(example.messages), tokenizer, system_prompt)
    full = _apply(tokenizer, messages, False)
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = _assistant_span(tokenizer, messages, i, full, pos)
        segments += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    if pos < len(full):
        segments.append((full[pos:], False))
    return [s for s in segments if s[0]]


def with_system(messages: list[dict], tokenizer: Any, system_prompt: str = "") -> list[dict]:
    """The conversation with the run's system prompt, and never the model's built-in one: a record's own system
    message wins; else `system_prompt`; else, when the chat template would inject its own default (SmolLM2: "You
    are a helpful AI assistant named SmolLM, trained by Hugging Face"), an explicit empty system message, so that
    empty means none. Training, samples, chat, evaluation and the Data tab all render through this.

    >>> with_system([{"role": "user", "content": "Hi"}], smollm_tok)  # doctest: +SKIP
    [{'role': 'system', 'content': ''}, {'role': 'user', 'content': 'Hi'}]
    """
    if messages and messages[0]["role"] == "system":
        return messages
    if system_prompt:
        return [{"role": "system", "content": system_prompt}, *messages]
    if template_default_system(tokenizer):
        return [{"role": "system", "content": ""}, *messages]
    return messages


_SYS, _USER = "\x02TUNEDESK-SYSTEM\x02", "\x02TUNEDESK-USER\x02"


def template_default_system(tokenizer: Any) -> str:
    """The system prompt the chat template writes when a conversation has none ("" when it writes none).

    Found by rendering [user] and [system S, user]: the text the first has where the second has S. Cached per
    tokenizer and template (four renders, ~1 ms).
    """
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        return ""
    try:
        cache = _DEFAULT_SYSTEM.setdefault(tokenizer, {})
    except TypeError:
        cache = {}
    if template not in cache:
        cache[template] = _probe_default_system(tokenizer)
    return cache[template]


_DEFAULT_SYSTEM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_default_system(tokenizer: Any) -> str:
    try:
        plain = _apply(tokenizer, [{"role": "user", "content": _USER}], False)
        given = _apply(tokenizer, [{"role": "system", "content": _SYS}, {"role": "user", "content": _USER}], False)
    except RenderError:  # a template without a system role
        return ""
    head, head_given = plain.split(_USER)[0], given.split(_USER)[0]
    if _SYS not in head_given:
        return ""
    pre, post = head_given.split(_SYS, 1)
    if len(head) < len(pre) + len(post) or not (head.startswith(pre) and head.endswith(post)):
        return ""
    return head[len(pre) : len(head) - len(post)]


def template_with_system(tokenizer: Any, system_prompt: str) -> str | None:
    """The chat template with its built-in default system prompt replaced by `system_prompt` ("" = an empty system
    block), for an exported model that answers as it was trained; None when the template has no default or the
    replacement does not render as intended (then the template is left as it is)."""
    default = template_default_system(tokenizer)
    template = getattr(tokenizer, "chat_template", None)
    if not default or not isinstance(template, str) or template.count(default) != 1:
        return None
    for escaped in (system_prompt, system_prompt.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')):
        candidate = template.replace(default, escaped)
        if _renders_system(tokenizer, candidate, system_prompt):
            return candidate
    return None


def _renders_system(tokenizer: Any, template: str, system_prompt: str) -> bool:
    user = [{"role": "user", "content": _USER}]
    try:
        implicit = tokenizer.apply_chat_template(user, tokenize=False, chat_template=template)
        explicit = tokenizer.apply_chat_template(
            [{"role": "system", "content": system_prompt}, *user], tokenize=False, chat_template=template
        )
    except Exception:  # noqa: BLE001 - a template the replacement broke
        return False
    return implicit == explicit


def _assistant_span(tokenizer: Any, messages: list[dict], i: int, full: str, pos: int) -> tuple[int, int]:
    prompt = _apply(tokenizer, messages[:i], True)
    upto = full if i + 1 == len(messages) else _apply(tokenizer, messages[: i + 1], False)
    if full.startswith(upto) and upto.startswith(prompt) and len(prompt) >= pos:
        return len(prompt), len(upto.rstrip())
    # Templates that rewrite earlier turns (e.g. drop reasoning) break the prefix property: find the text instead.
    content = messages[i]["content"]
    start = full.find(content, pos)
    if start < 0:
        raise RenderError(
            "the chat template changes the assistant text, so its tokens cannot be located; use data.template alpaca"
        )
    end = start + len(content)
    for special in sorted(getattr(tokenizer, "all_special_tokens", []), key=len, reverse=True):
        if special and full.startswith(special, end):
            return start, end + len(special)
    return start, end


def _apply(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raises TemplateError (e.g. "roles must alternate") and others
        raise RenderError(f"the model's chat template refused this conversation: {exc}") from None
    return text if isinstance(text, str) else "".join(text)


# ---- tokenization --------------------------------------------------------------------------------------------
def tokenize_segments(batch: list[list[tuple[str, bool]]], tokenizer: Any) -> list[tuple[list[int], list[bool]]]:
    """Token ids and an is_response flag per token, for many examples in one tokenizer call.

    The full string is tokenized once and each token takes the flag of the segment its characters lie in. Where
    a token straddles a prompt/response boundary (a BPE merge across it), that example is tokenized segment by
    segment instead, so response tokens never carry prompt text.
    """
    texts = ["".join(text for text, _ in segments) for segments in batch]
    if not getattr(tokenizer, "is_fast", False):
        return [_tokenize_each(segments, tokenizer) for segments in batch]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for segments, ids, offsets in zip(batch, enc["input_ids"], enc["offset_mapping"], strict=True):
        flags = _flags_from_offsets(segments, offsets)
        out.append((list(ids), flags) if flags is not None else _tokenize_each(segments, tokenizer))
    return out


def _flags_from_offsets(segments: list[tuple[str, bool]], offsets: list) -> list[bool] | None:
    """Flags from character offsets, or None when a token straddles a segment boundary.

    Per boundary, not per token: a bisect over token starts (~600k tokens for 1000 Alpaca records in 30 ms).
    """
    starts = [start for start, _ in offsets]
    if any(a > b for a, b in zip(starts, starts[1:], strict=False)):
        return None  # offsets not in order: cannot bisect; tokenize segment by segment
    flags: list[bool] = []
    boundary, done = 0, 0
    for text, is_response in segments:
        boundary += len(text)
        k = bisect.bisect_left(starts, boundary)
        if k > 0 and offsets[k - 1][1] > boundary:
            return None
        flags += [is_response] * (k - done)
        done = k
    flags += [segments[-1][1]] * (len(offsets) - done)  # zero-width tokens at the very end, if any
    return flags


def _tokenize_each(segments: list[tuple[str, bool]], tokenizer: Any) -> tuple[list[int], list[bool]]:
    ids: list[int] = []
    flags: list[bool] = []
    for text, is_response in segments:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        flags += [is_response] * len(piece)
    return ids, flags


def to_encoded(ids: list[int], flags: list[bool], index: int, max_seq_len: int, train_on_prompt: bool) -> Encoded:
    """Cut at max_seq_len (from the right: the prompt stays, the answer's end goes) and build labels."""
    kept, kept_flags = ids[:max_seq_len], flags[:max_seq_len]
    labels = list(kept) if train_on_prompt else [t if f else IGNORE for t, f in zip(kept, kept_flags, strict=True)]
    return Encoded(list(kept), labels, len(ids), len(ids) > max_seq_len, index)


def mask_view(encoded: Encoded, tokenizer: Any, full_ids: list[int] | None = None) -> list[tuple[str, str]]:
    """(token text, state) per token; state is trained | prompt | cut (beyond max_seq_len, from `full_ids`).

    For `full_ids`, encode the example again with a large max_seq_len. A character split over several byte
    tokens (common in Chinese) is shown once, in one entry with the state of its first token, instead of as
    broken bytes; so "".join(texts) == tokenizer.decode(ids).

    >>> mask_view(Encoded([1, 2], [-100, 2], 3, True, 0), tok, [1, 2, 3])  # doctest: +SKIP
    [('Hi', 'prompt'), ('!', 'trained'), ('<eos>', 'cut')]
    """
    states = ["prompt" if label == IGNORE else "trained" for label in encoded.labels]
    ids = list(encoded.input_ids)
    if full_ids is not None and len(full_ids) > len(ids):
        states += ["cut"] * (len(full_ids) - len(ids))
        ids = list(full_ids)
    out: list[tuple[str, str]] = []
    pending: list[int] = []
    for k, token in enumerate(ids):
        pending.append(token)
        text = tokenizer.decode(pending)
        if text.endswith("\ufffd") and len(pending) < 16 and k + 1 < len(ids):
            continue  # an incomplete UTF-8 character: wait for the byte tokens that complete it
        out.append((text, states[k - len(pending) + 1]))
        pending = []
    return out
