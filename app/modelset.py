"""One model set: a base model loaded once, N adapters attached to it, and the one way TuneDesk generates text.

Chat (side-by-side columns, streamed) and evaluate (loss and greedy answers per model) both hold a ModelSet:

    models = ModelSet(base, [resolve_source(a) for a in adapters], device="auto", purpose="chat")
    models.columns                       # ["base", "<run>", "<run>/checkpoint-40", ...]
    with models.use("base") as (model, tokenizer): ...    # every adapter off (the base column)
    dec = models.decoder("<run>", [prompt_ids], GenSettings(max_new_tokens=64))
    while not dec.done: dec.step()       # one token per prompt per step; dec.text streams the first prompt
    models.close()

Each LoRA adapter (a run's adapter/, a checkpoint-N folder, any PEFT folder) is attached under its own PEFT name
and switched per decoding step; the base column runs with every adapter disabled. Memory is the base plus the
adapters (a rank-8 q/v adapter on the 135M default model is 0.9 MB) instead of one base copy per column. A full or
freeze run has no adapter: its model/ folder is loaded as a separate model and costs its whole size again (the
135M default model: 540 MB in fp32), which is why it is the exception.

`Decoder` is the one generation path: greedy or seeded sampling with the processors transformers' generate()
builds, its own KV cache, stop at end-of-turn, and several prompts at once (left-padded) for evaluation.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import devices
from app.adapters import adapter_tokenizer, check_adapter_fits, display_name
from app.commands import ChatConfig
from app.config import ModelConfig

Progress = Callable[[float, str], None]


class ModelSetError(RuntimeError):
    """A model cannot be loaded or used (load failure, bad settings, unknown column); the message says what to do."""


GenSettings = ChatConfig
"""How every column generates: the chat command's typed config (app.commands), whose defaults the CLI and the Chat
tab show."""


# ---- the device --------------------------------------------------------------------------------------------
def open_device(device: str, purpose: str = "chat") -> str:
    """The device `device` (auto, cpu, cuda, cuda:N) resolves to (app.devices), once no training run holds it:
    ModelSetError for a device this machine lacks, app.devices.DeviceBusy (its advice names `purpose`) when held."""
    try:
        resolved = devices.resolve(device)
    except devices.DeviceError as exc:
        raise ModelSetError(str(exc)) from None
    devices.require_free(resolved, device, purpose)
    return resolved


# ---- decoding -----------------------------------------------------------------------------------------------
def stop_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-turn ids: the tokenizer's eos plus generation_config's (ChatML models stop at <|im_end|>)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    return ids


def _processors(settings: GenSettings) -> list[Any]:
    """The same logits processors, in the same order, as transformers' generate() builds for these settings."""
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs: list[Any] = []
    if settings.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        procs.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            procs.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            procs.append(TopPLogitsWarper(settings.top_p))
    return procs


def _cache_kw(model: Any) -> str:
    """transformers 5 names the KV-cache argument `cache` (`past_key_values` is deprecated), 4.x `past_key_values`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@dataclass
class Decoder:
    """Generation state of one model for one or more prompts: its own KV cache, seeded generator, compute time.

    Prompts of different lengths are left-padded with an attention mask and position ids counted from each
    prompt's first real token, as transformers' generate() does; one prompt is never padded. A repetition
    penalty also sees the padding of a padded row (evaluation decodes greedily, without one).
    """

    model: Any
    tokenizer: Any
    prompts: list[list[int]]
    settings: GenSettings
    stops: set[int]
    activate: Callable[[], None] | None = None  # puts a shared model in this column's adapter state
    cancel: threading.Event | None = None  # checked before every step; a cancelled decoder is done
    rows: list[list[int]] = field(default_factory=list)
    cache: Any = None
    seconds: float = 0.0
    done: bool = False
    text: str = ""
    """The first prompt's answer so far (for streaming), never ending in half a multi-byte character."""

    def __post_init__(self) -> None:
        import torch

        if self.settings.problems():
            raise ModelSetError("generation settings: " + "; ".join(self.settings.problems()))
        self.procs = _processors(self.settings)
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.device = next(self.model.parameters()).device
        self.cache_kw = _cache_kw(self.model)
        self.rows = [[] for _ in self.prompts]
        self.finished = [False] * len(self.prompts)
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        width = max(len(p) for p in self.prompts)
        self.padded = any(len(p) != width for p in self.prompts)
        self.seq = torch.tensor([[self.pad] * (width - len(p)) + p for p in self.prompts])  # every token so far
        self.mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in self.prompts])
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)

    def step(self) -> None:
        """Run one forward pass (the whole prompt the first time) and pick one token per prompt."""
        import torch

        if self.cancel is not None and self.cancel.is_set():
            self.done = True
            return
        if self.activate is not None:
            self.activate()  # not timed: tokens/s is the model's speed, not the cost of comparing columns
        start = time.perf_counter()
        first = self.cache is None
        kwargs: dict[str, Any] = {
            "input_ids": (self.seq if first else self.seq[:, -1:]).to(self.device),
            self.cache_kw: self.cache,
            "use_cache": True,
        }
        if self.padded:
            if not first:
                self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
                self.positions = self.positions[:, -1:] + 1
            kwargs["attention_mask"] = self.mask.to(self.device)
            kwargs["position_ids"] = self.positions.to(self.device)
        with torch.inference_mode():
            out = self.model(**kwargs)
        self.cache = out[self.cache_kw]
        tokens = self._pick(out.logits[:, -1, :].float())
        self.seconds += time.perf_counter() - start
        self.seq = torch.cat([self.seq, torch.tensor(tokens)[:, None]], 1)
        self._take(tokens)

    def _take(self, tokens: list[int]) -> None:
        for i, token in enumerate(tokens):
            if self.finished[i]:
                continue
            if token in self.stops:
                self.finished[i] = True
                continue
            self.rows[i].append(token)
            self.finished[i] = len(self.rows[i]) >= self.settings.max_new_tokens
        self.done = all(self.finished)
        if len(self.rows) == 1:
            text = self.tokenizer.decode(self.rows[0], skip_special_tokens=True)
            if not text.endswith("\ufffd"):  # a multi-byte character is still incomplete: wait for its next token
                self.text = text

    def _pick(self, logits: Any) -> list[int]:
        import torch

        if self.procs:
            all_ids = self.seq.to(logits.device)
            for proc in self.procs:
                logits = proc(all_ids, logits)
        if self.settings.temperature <= 0:
            return logits.argmax(-1).tolist()  # one device sync per step, not one per prompt
        probs = torch.softmax(logits, -1).cpu()
        return torch.multinomial(probs, 1, generator=self.generator)[:, 0].tolist()

    def finish(self) -> None:
        self.texts = [self.tokenizer.decode(row, skip_special_tokens=True) for row in self.rows]
        self.text = self.texts[0] if self.texts else ""
        self.cache = None  # free the KV cache (layers x 2 x tokens x kv_dim floats)

    def run(self) -> list[str]:
        """Decode to the end; the answers, one per prompt."""
        while not self.done:
            self.step()
        self.finish()
        return self.texts

    @property
    def ids(self) -> list[int]:
        return self.rows[0] if self.rows else []

    @property
    def tokens_per_s(self) -> float:
        return sum(len(r) for r in self.rows) / self.seconds if self.seconds else 0.0


def round_robin(decoders: dict[str, Decoder], lock: threading.Lock | None = None) -> Iterator[dict[str, tuple]]:
    """Step every decoder one token per round (under `lock`: adapter switching is global model state); yields
    {name: (text so far, tokens/s)} after each round."""
    lock = lock or threading.Lock()
    while not all(d.done for d in decoders.values()):
        for dec in decoders.values():
            if not dec.done:
                with lock:
                    dec.step()
                if dec.done:
                    dec.finish()
        yield {c: (d.text, d.tokens_per_s) for c, d in decoders.items()}


# ---- the set ------------------------------------------------------------------------------------------------
@dataclass
class Member:
    name: str
    kind: str
    """base | adapter (a PEFT adapter on the shared base) | model (a separately loaded folder)"""
    path: Path | None = None
    adapter: str | None = None
    """PEFT adapter name (a0, a1, ...): display names may hold characters PEFT does not allow."""
    loaded: Any = None
    """LoadedModel for kind "model"."""
    tokenizer: Any = None


class ModelSet:
    """A base model and N adapters/checkpoints/model folders, loaded once, generating through one path.

    Raises ModelSetError (load failures), app.devices.DeviceBusy, or app.adapters.AdapterError (an adapter that
    does not fit).
    """

    def __init__(
        self,
        base: str,
        sources: list[tuple[str, Path]],
        device: str = "auto",
        allow_pickle: bool = False,
        progress: Progress | None = None,
        purpose: str = "chat",
    ):
        self.allow_pickle, self.progress, self.warnings = allow_pickle, progress, []
        self._lock = threading.Lock()  # adapter switching is global model state: one decoding step at a time
        self.device = open_device(device, purpose)
        self._say(0.05, f"loading base model {base}")
        self.base = self._load(base)
        self.base_label = base
        self.model = self.base.model
        self.members: dict[str, Member] = {"base": Member("base", "base", tokenizer=self.base.tokenizer)}
        for i, (kind, path) in enumerate(sources):
            self._say(0.5 + 0.5 * i / max(1, len(sources)), f"loading {path}")
            self._add(kind, path, f"a{i}")
        self.model.eval()
        self._switch = _AdapterSwitch(self.model) if hasattr(self.model, "peft_config") else None
        self._say(1.0, f"ready: {', '.join(self.columns)}")

    @property
    def columns(self) -> list[str]:
        return list(self.members)

    def _load(self, name: str | Path) -> Any:
        from app.modeling import ModelError, load_model

        try:
            loaded = load_model(
                ModelConfig(name_or_path=str(name), allow_pickle=self.allow_pickle),
                device=self.device,
                progress=self.progress or _quiet,
            )
        except ModelError as exc:
            raise ModelSetError(str(exc)) from None
        loaded.model.eval()
        return loaded

    def _add(self, kind: str, path: Path, peft_name: str) -> None:
        name = self._unique(display_name(path))
        if kind == "model":
            loaded = self._load(path)
            self.members[name] = Member(name, "model", path, loaded=loaded, tokenizer=loaded.tokenizer)
            return
        self.warnings += check_adapter_fits(path, self.model, self.base_label, self.allow_pickle)
        self._attach(path, peft_name)
        tokenizer = adapter_tokenizer(path, self.base.tokenizer)
        self.members[name] = Member(name, "adapter", path, adapter=peft_name, tokenizer=tokenizer)

    def _attach(self, path: Path, peft_name: str) -> None:
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=peft_name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=peft_name)
        except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for damaged or foreign adapters
            raise ModelSetError(f"adapter {path} could not be loaded onto {self.base_label}: {exc}") from None

    def _unique(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self.members:
            candidate, n = f"{name} ({n})", n + 1
        return candidate

    def _say(self, frac: float, msg: str) -> None:
        if self.progress is not None:
            self.progress(frac, msg)

    def member(self, column: str) -> Member:
        found = self.members.get(column)
        if found is None:
            raise ModelSetError(f"no column {column!r}; the columns are {', '.join(self.columns)}")
        return found

    def _model_of(self, col: Member) -> Any:
        return col.loaded.model if col.kind == "model" else self.model

    def _activate(self, col: Member) -> None:
        if col.kind != "model" and self._switch is not None:
            self._switch.use(col.adapter)  # None for the base column: every adapter off

    @contextmanager
    def use(self, column: str) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) with `column` active (its adapter on, or every adapter off for the base), held
        for the whole block."""
        col = self.member(column)
        with self._lock:
            self._activate(col)
            yield self._model_of(col), col.tokenizer

    def decoder(
        self,
        column: str,
        prompts: list[list[int]],
        settings: GenSettings | None = None,
        cancel: threading.Event | None = None,
    ) -> Decoder:
        """A Decoder for `column` that switches the shared model to that column before each of its steps."""
        col = self.member(column)
        model = self._model_of(col)
        activate = (lambda: self._activate(col)) if col.kind != "model" and self._switch is not None else None
        stops = stop_ids(model, col.tokenizer)
        return Decoder(model, col.tokenizer, prompts, settings or GenSettings(), stops, activate, cancel)

    def stream(self, decoders: dict[str, Decoder]) -> Iterator[dict[str, tuple[str, float]]]:
        """round_robin under this set's lock: columns decode one token each per round, side by side."""
        yield from round_robin(decoders, self._lock)

    def close(self) -> None:
        """Drop every model and free the memory (CUDA cache included)."""
        for col in self.members.values():
            col.loaded = None
        self.members.clear()
        self.model = self.base = self._switch = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _quiet(frac: float, msg: str) -> None:
    """load_model prints its steps when given no callback; a caller without progress wants none."""


class _AdapterSwitch:
    """Make one adapter active on the shared PEFT model, or none (the base column), only when that changes.

    Does per LoRA layer what `PeftModel.set_adapter(name)` and `with PeftModel.disable_adapter():` do, without
    their whole-model scans: disable_adapter first calls get_model_status, which walks every module several
    times. Measured on the 30-layer default model with two q/v adapters (60 LoRA layers), one CPU thread of the
    shared 2-core box, per switch: disable_adapter 41 ms, set_adapter 10 ms, this 5 ms; a one-token forward
    takes ~100 ms, so the base column would otherwise decode ~40% slower than it is.
    """

    def __init__(self, model: Any):
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self.current: str | None | bool = False  # False: unknown yet

    def use(self, adapter: str | None) -> None:
        if adapter == self.current:
            return
        for layer in self.layers:
            if adapter is None:
                layer.enable_adapters(False)
                continue
            layer.set_adapter(adapter)  # a layer the adapter does not target then acts as the base layer
            if layer.disable_adapters:
                layer.enable_adapters(True)
        if adapter is not None:
            self.model.base_model.active_adapter = adapter  # keep PeftModel.active_adapter truthful
        self.current = adapter
