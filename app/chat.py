"""Chat and compare: a base model and up to 4 adapters answering the same conversation side by side.

The models live in one app.modelset.ModelSet (the base loaded once, each adapter attached to it and switched per
decoding step, the base column with every adapter off); this module turns conversations into prompts (the chat
template, or Alpaca when there is none) and streams every column's answer. Every column gets the same prompt,
sampling settings and seed; each keeps its own KV cache, and the columns are decoded round-robin, one token each
per round, so they stream side by side from one model in one thread.

Prompt sets live in app.prompt_sets, the terminal front (`python -m app chat`) in app.chat_cli.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.adapters import AdapterError, infer_base, resolve_source, system_prompt_of
from app.data_render import with_system
from app.modelset import Decoder, GenSettings, ModelSet, ModelSetError, stop_ids

MAX_ADAPTERS = 4
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

Progress = Callable[[float, str], None]


class ChatError(RuntimeError):
    """A model or adapter cannot be used for chat; the message names it and says what to do."""


# ---- prompts and decoding -----------------------------------------------------------------------------------
def build_messages(history: list[dict], prompt: str, system_prompt: str = "") -> list[dict]:
    """System prompt (when set and history has none) + history + the new user turn.

    >>> build_messages([], "Hi", "Be brief")
    [{'role': 'system', 'content': 'Be brief'}, {'role': 'user', 'content': 'Hi'}]
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in history]
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages + [{"role": "user", "content": prompt}]


def encode_chat(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Token ids of the conversation with the generation prompt: the chat template (never injecting the model's
    built-in system prompt: data_render.with_system), or Alpaca when there is none."""
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(
                with_system(messages, tokenizer), add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja raises TemplateError (e.g. "roles must alternate", no system role)
            raise ChatError(f"the model's chat template rejected this conversation: {exc}") from None
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    turns = [m for m in messages if m["role"] != "system"]
    text = ""
    for m in turns:
        text += ALPACA_PROMPT.format(instruction=m["content"]) if m["role"] == "user" else m["content"] + "\n\n"
    system = next((m["content"] + "\n\n" for m in messages if m["role"] == "system"), "")
    return tokenizer(system + text)["input_ids"]


def generate(model: Any, tokenizer: Any, messages: list[dict], settings: GenSettings | None = None) -> str:
    """One answer to a conversation, decoded exactly as a chat column is (same sampling, template and stops)."""
    settings = settings or GenSettings()
    if settings.problems():
        raise ChatError("generation settings: " + "; ".join(settings.problems()))
    if settings.system_prompt and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": settings.system_prompt}, *messages]
    ids = encode_chat(tokenizer, messages)
    return Decoder(model, tokenizer, [ids], settings, stop_ids(model, tokenizer)).run()[0]


# ---- the session ----------------------------------------------------------------------------------------------
class ChatSession:
    """A base model and up to 4 adapters/checkpoints/model folders, answering the same prompt side by side."""

    def __init__(
        self,
        base: str | None,
        adapters: list[str],
        device: str = "auto",
        allow_pickle: bool = False,
        progress: Progress | None = None,
    ):
        if len(adapters) > MAX_ADAPTERS:
            raise ChatError(f"{len(adapters)} adapters chosen; compare at most {MAX_ADAPTERS} at once")
        try:
            sources = [resolve_source(a) for a in adapters]
            base = base or _first_adapter_base(sources)
            self.models = ModelSet(base, sources, device, allow_pickle, progress, purpose="chat")  # DeviceBusy passes
        except (AdapterError, ModelSetError) as exc:
            raise ChatError(str(exc)) from None
        self.device, self.base_label, self.warnings = self.models.device, base, self.models.warnings

    @property
    def columns(self) -> list[str]:
        return self.models.columns if self.models is not None else []

    @property
    def model(self) -> Any:
        """The shared model: the base, wrapped in a PeftModel once an adapter is attached."""
        return self.models.model if self.models is not None else None

    # ---- generation
    def messages(self, column: str, history: list[dict], prompt: str, settings: GenSettings) -> list[dict]:
        """What `column` is asked: its system prompt (the chat's, else an adapter's run's own, never the base's
        built-in one), its history and `prompt`. A Chat vote records this conversation."""
        if self.models is None:
            raise ChatError("the session is closed; load the models again")
        try:
            member = self.models.member(column)
        except ModelSetError as exc:
            raise ChatError(str(exc)) from None
        system = settings.system_prompt or (system_prompt_of(member.path) if member.path is not None else "")
        return build_messages(history, prompt, system)

    def _decoder(self, column: str, history: list[dict], prompt: str, settings: GenSettings) -> Decoder:
        if settings.problems():
            raise ChatError("generation settings: " + "; ".join(settings.problems()))
        messages = self.messages(column, history, prompt, settings)
        ids = encode_chat(self.models.member(column).tokenizer, messages)
        return self.models.decoder(column, [ids], settings)

    def stream_all(
        self, histories: dict[str, list[dict]], prompt: str, settings: GenSettings | None = None
    ) -> Iterator[dict[str, tuple[str, float]]]:
        """Every column answers `prompt` (after its own history), one token per column per round.

        Yields {column: (answer so far, tokens/s)} after each round; tokens/s counts each column's own compute
        time (prompt included), so columns are comparable although they share one model.
        """
        settings = settings or GenSettings()
        decoders = {c: self._decoder(c, histories.get(c, []), prompt, settings) for c in self.columns}
        yield from self.models.stream(decoders)

    def stream(
        self, column: str, history: list[dict], prompt: str, settings: GenSettings | None = None
    ) -> Iterator[tuple[str, float]]:
        """One column's answer, yielded token by token as (answer so far, tokens/s)."""
        dec = self._decoder(column, history, prompt, settings or GenSettings())
        for state in self.models.stream({column: dec}):
            yield state[column]

    def answer_all(
        self, prompt: str, settings: GenSettings | None = None, histories: dict[str, list[dict]] | None = None
    ) -> dict[str, tuple[str, float]]:
        """Final answers of every column (stream_all run to the end)."""
        final: dict[str, tuple[str, float]] = {}
        for state in self.stream_all(histories or {}, prompt, settings):
            final = state
        return final

    def run_prompt_set(
        self, prompts: list[str] | list[dict], settings: GenSettings | None = None, progress: Progress | None = None
    ) -> Any:
        """A table with one row per prompt and one answer column per chat column (plus reference when given).

        Mean tokens/s per column is kept in `df.attrs["tokens_per_s"]`.
        """
        import pandas as pd

        items = [p if isinstance(p, dict) else {"prompt": p} for p in prompts]
        rows, speeds = [], {c: [] for c in self.columns}
        for i, item in enumerate(items):
            if progress is not None:
                progress(i / max(1, len(items)), f"prompt {i + 1}/{len(items)}")
            answers = self.answer_all(item["prompt"], settings)
            row = {"prompt": item["prompt"]}
            if any(it.get("reference") is not None for it in items):
                row["reference"] = item.get("reference") or ""
            rows.append(row | {c: answers[c][0] for c in self.columns})
            for c in self.columns:
                speeds[c].append(answers[c][1])
        df = pd.DataFrame(rows, columns=[*rows[0].keys()] if rows else ["prompt", *self.columns])
        df.attrs["tokens_per_s"] = {c: round(sum(v) / len(v), 1) if v else 0.0 for c, v in speeds.items()}
        if progress is not None:
            progress(1.0, f"{len(items)} prompts answered by {len(self.columns)} columns")
        return df

    def close(self) -> None:
        """Drop every model and free the memory (CUDA cache included)."""
        if self.models is not None:
            self.models.close()
        self.models = None


def _first_adapter_base(sources: list[tuple[str, Path]]) -> str:
    for kind, path in sources:
        if kind == "adapter":
            return infer_base(path)
    raise ChatError("no base model given and no LoRA adapter to read it from; choose a base model")
