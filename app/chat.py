"""Chat and compare: one base model, up to 4 adapters switched on it, answers streamed side by side.

The base model is loaded once. Each LoRA adapter (a run's adapter/, a checkpoint-N folder, or any PEFT folder
with adapter_config.json) is attached to it under its own PEFT name and switched per decoding step
(`set_adapter`); the base column runs inside `disable_adapter()`. Memory is the base plus the adapters (a rank-8
q/v adapter on the 135M default model is 0.9 MB) instead of one base copy per column.

A full or freeze run has no adapter: its model/ folder is loaded as a separate model and costs its whole size
again (the 135M default model: 540 MB in fp32), which is why it is the exception, not the way adapters load.

Every column gets the same prompt, sampling settings and seed; each keeps its own KV cache, and the columns are
decoded round-robin, one token each per round, so they stream side by side from one model in one thread.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import ModelConfig

MAX_ADAPTERS = 4
ADAPTER_CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"
ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

Progress = Callable[[float, str], None]


class ChatError(RuntimeError):
    """A model or adapter cannot be used for chat; the message names it and says what to do."""


class DeviceBusy(RuntimeError):
    """A training job holds the device; wait for it, or chat on the CPU with device="cpu"."""


@dataclass
class GenSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0 = greedy (argmax); above 0 samples with top_p/top_k from a generator seeded with `seed`."""
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int = 42
    system_prompt: str = ""

    def problems(self) -> list[str]:
        """Every out-of-range setting, each naming the field."""
        p = []
        if self.max_new_tokens < 1:
            p.append(f"max_new_tokens: {self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            p.append(f"temperature: {self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            p.append(f"top_p: {self.top_p} must be in (0, 1]")
        if self.top_k < 0:
            p.append(f"top_k: {self.top_k} must be >= 0 (0 = off)")
        if self.repetition_penalty <= 0:
            p.append(f"repetition_penalty: {self.repetition_penalty} must be > 0 (1 = off)")
        return p


# ---- what a folder is ---------------------------------------------------------------------------------------
def resolve_source(path: str | Path) -> tuple[str, Path]:
    """("adapter", folder) for a PEFT adapter, ("model", folder) for a full model folder.

    A run folder resolves to its adapter/ (LoRA/QLoRA), its model/ (full/freeze) or its newest checkpoint
    (checkpoints/checkpoint-N, as app.runs lays them out, or checkpoint-N directly inside).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ChatError(
            f"{p}: not found or not a folder; pick an adapter folder (with {ADAPTER_CONFIG}), "
            "a checkpoint-N folder, a run folder or a model folder"
        )
    checkpoints = [*p.glob("checkpoints/checkpoint-*"), *p.glob("checkpoint-*")]
    for candidate in (p, p / "adapter", p / "model", *sorted(checkpoints, key=_step_of, reverse=True)):
        if (candidate / ADAPTER_CONFIG).is_file():
            return "adapter", candidate
        if (candidate / "config.json").is_file():
            return "model", candidate
    raise ChatError(
        f"{p}: holds no {ADAPTER_CONFIG} (adapter) and no config.json (model), nor an adapter/, "
        "model/ or checkpoint-N folder inside; pick the folder that holds them"
    )


def _step_of(path: Path) -> int:
    digits = path.name.rsplit("-", 1)[-1]
    return int(digits) if digits.isdigit() else -1


def column_name(path: Path) -> str:
    """Short display name: the run name for <run>/adapter and <run>/model, <run>/checkpoint-N, else the folder."""
    if path.name in ("adapter", "model"):
        return path.parent.name
    if path.name.startswith("checkpoint-"):
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return f"{run.name}/{path.name}"
    return path.name


def run_dir_of(adapter_dir: Path) -> Path | None:
    """The run folder around an adapter: <run>/adapter, <run>/checkpoints/checkpoint-N (or <run>/checkpoint-N)."""
    for candidate in (adapter_dir, adapter_dir.parent, adapter_dir.parent.parent):
        if (candidate / "config.yaml").is_file() or (candidate / "events.jsonl").is_file():
            return candidate
    return None


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ChatError(f"{path}: cannot be read as JSON ({exc}); the adapter folder is damaged") from None
    if not isinstance(cfg, dict):
        raise ChatError(f"{path}: expected a JSON object")
    return cfg


def check_adapter_files(adapter_dir: Path, allow_pickle: bool = False) -> Path:
    """The weights file; refuses pickle-only adapters unless allowed (a .bin can run code when loaded)."""
    if (adapter_dir / SAFE_WEIGHTS).is_file():
        return adapter_dir / SAFE_WEIGHTS
    if (adapter_dir / PICKLE_WEIGHTS).is_file():
        if allow_pickle:
            return _plain_pickle(adapter_dir / PICKLE_WEIGHTS)
        raise ChatError(
            f"adapter {adapter_dir} holds only {PICKLE_WEIGHTS}, a pickle file that can run code when "
            f"loaded. Re-save it as safetensors, or allow it explicitly (allow_pickle=True, CLI "
            f"--allow-pickle) if you trust its source."
        )
    raise ChatError(
        f"adapter {adapter_dir} has {ADAPTER_CONFIG} but no {SAFE_WEIGHTS}: the weights are missing "
        "(was the copy or the training interrupted?)"
    )


def _plain_pickle(weights: Path) -> Path:
    """`weights`, once app.modeling has checked it holds only tensors (an allowed pickle may still not run code)."""
    from app.modeling import ModelError, check_plain_tensors

    try:
        check_plain_tensors(weights)
    except ModelError as exc:
        raise ChatError(str(exc)) from None
    return weights


def infer_base(adapter_dir: Path) -> str:
    """The base model an adapter names (adapter_config base_model_name_or_path), else its run's config.yaml."""
    name = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    run = run_dir_of(adapter_dir)
    if (not name or not _loadable(name)) and run is not None and (run / "config.yaml").is_file():
        from app.config import load_yaml

        name = (load_yaml(run / "config.yaml").get("model") or {}).get("name_or_path") or name
    if not name:
        raise ChatError(
            f"adapter {adapter_dir}: {ADAPTER_CONFIG} names no base_model_name_or_path; "
            "choose the base model it was trained on"
        )
    return str(name)


def _loadable(name: str) -> bool:
    from app.modeling import ModelError, resolve_model

    try:
        resolve_model(name)
    except ModelError:
        return False
    return True


def adapter_tokenizer(adapter_dir: Path, base_tokenizer: Any) -> Any:
    """The adapter's own tokenizer when it ships one (a trainer may save its chat template there), else the base's."""
    if not (adapter_dir / "tokenizer_config.json").is_file():
        return base_tokenizer
    from app.modeling import load_tokenizer

    return load_tokenizer(str(adapter_dir))


# ---- does an adapter fit the base? ---------------------------------------------------------------------------
def adapter_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the safetensors header (no tensor data) or a trusted .bin."""
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as fh:
                return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
        except SafetensorError as exc:  # a truncated or overwritten file; not an OSError
            raise ChatError(
                f"{weights} is damaged or truncated ({exc}); copy the adapter again or retrain it"
            ) from None
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def fit_problems(shapes: dict[str, tuple[int, ...]], model: Any) -> list[str]:
    """Every adapter tensor whose module is missing from the base or whose shape does not match it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel: look past the wrapper
    modules = dict(base.named_modules())
    problems: list[str] = []
    for key, shape in shapes.items():
        match = re.match(
            r"(?:base_model\.model\.)?(.+?)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
            r"lora_magnitude_vector|modules_to_save)\b",
            key,
        )
        if not match:
            continue
        module_name, part = match.groups()
        module = modules.get(module_name)
        if module is None:
            problems.append(f"module {module_name} does not exist in the base")
            continue
        expected = _expected_size(module, part, shape)
        if expected is not None:
            problems.append(f"{key} has shape {list(shape)} but the base {module_name} needs {expected}")
    return list(dict.fromkeys(problems))  # lora_A and lora_B of one missing module give the same line


def _expected_size(module: Any, part: str, shape: tuple[int, ...]) -> str | None:
    """What the base needs when the tensor does not fit it, else None.

    PEFT stores lora_A as [r, in_features], lora_B as [out_features, r]; for embeddings lora_embedding_A is
    [r, num_embeddings] and lora_embedding_B is [embedding_dim, r].
    """
    if len(shape) != 2:
        return None
    axis, attr, what = {
        "lora_A": (1, "in_features", "input features"),
        "lora_B": (0, "out_features", "output features"),
        "lora_embedding_A": (1, "num_embeddings", "embeddings"),
        "lora_embedding_B": (0, "embedding_dim", "embedding dims"),
    }.get(part, (0, "", ""))
    want = getattr(module, attr, None) if attr else None
    return f"{want} {what}" if isinstance(want, int) and shape[axis] != want else None


def check_adapter_fits(adapter_dir: Path, model: Any, base_label: str, allow_pickle: bool = False) -> list[str]:
    """Raise ChatError naming adapter and base when they do not fit; return warnings (e.g. another base name)."""
    cfg = read_adapter_config(adapter_dir)
    weights = check_adapter_files(adapter_dir, allow_pickle)
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ChatError(
            f"adapter {adapter_dir} is a {cfg.get('peft_type')} adapter; chat and merge handle LoRA "
            "adapters (LoRA, QLoRA, DoRA, rsLoRA) only"
        )
    trained_on = cfg.get("base_model_name_or_path") or "an unnamed base"
    problems = fit_problems(adapter_shapes(weights), model)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ChatError(
            f"adapter {adapter_dir} does not fit the base model {base_label}: "
            f"{'; '.join(problems[:3])}{more}. It was trained on {trained_on}; choose that base "
            "model (or leave the base empty to use the adapter's own)."
        )
    if _base_differs(trained_on, base_label):
        return [
            f"adapter {column_name(adapter_dir)} was trained on {trained_on}, not {base_label}; the shapes "
            "fit, but answers may be poor if the weights differ"
        ]
    return []


def _base_differs(trained_on: str, base_label: str) -> bool:
    from app.modeling import DEFAULT_ALIASES, default_model_dir

    def norm(name: str) -> str:
        if name in DEFAULT_ALIASES or Path(name).expanduser() == default_model_dir():
            return "<default>"
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name.rstrip("/")

    return norm(trained_on) != norm(base_label)


# ---- the device guard ----------------------------------------------------------------------------------------
def check_device_free(device: str, requested: str = "auto") -> None:
    """Raise DeviceBusy when a training job holds `device` (app.jobs.manager.device_busy, when that exists).

    An explicit device="cpu" is the user's way around a busy accelerator, so it is never refused.
    """
    if requested == "cpu":
        return
    try:
        jobs = importlib.import_module("app.jobs")
    except ImportError:
        return
    busy_fn = getattr(getattr(jobs, "manager", None), "device_busy", None)
    busy = busy_fn(device) if callable(busy_fn) else False
    if busy:
        what = busy if isinstance(busy, str) else "a training run"
        share = "share the CPU with it (both run slower)" if device == "cpu" else "chat on the CPU instead"
        raise DeviceBusy(f'{what} is using {device}. Wait for it to finish, or pass device="cpu" to {share}.')


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
    """Token ids of the conversation with the generation prompt: the chat template, or Alpaca when there is none."""
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja raises TemplateError (e.g. "roles must alternate", no system role)
            raise ChatError(f"the model's chat template rejected this conversation: {exc}") from None
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    turns = [m for m in messages if m["role"] != "system"]
    text = ""
    for m in turns:
        text += ALPACA_PROMPT.format(instruction=m["content"]) if m["role"] == "user" else m["content"] + "\n\n"
    system = next((m["content"] + "\n\n" for m in messages if m["role"] == "system"), "")
    return tokenizer(system + text)["input_ids"]


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


@dataclass
class _Decoder:
    """One column's generation state: its own KV cache, token ids, seeded generator and compute time."""

    model: Any
    tokenizer: Any
    prompt_ids: list[int]
    settings: GenSettings
    stops: set[int]
    activate: Callable[[], None] | None = None  # puts the shared model in this column's adapter state
    ids: list[int] = field(default_factory=list)
    cache: Any = None
    seconds: float = 0.0
    done: bool = False
    text: str = ""

    def __post_init__(self) -> None:
        import torch

        if self.settings.problems():
            raise ChatError("generation settings: " + "; ".join(self.settings.problems()))
        self.procs = _processors(self.settings)
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.device = next(self.model.parameters()).device
        self.cache_kw = _cache_kw(self.model)

    def step(self) -> None:
        """Run one forward pass (the whole prompt the first time) and pick one token."""
        import torch

        if self.activate is not None:
            self.activate()  # not timed: tokens/s is the model's speed, not the cost of comparing columns
        start = time.perf_counter()
        tokens = self.prompt_ids if self.cache is None else self.ids[-1:]
        kwargs = {
            "input_ids": torch.tensor([tokens], device=self.device),
            self.cache_kw: self.cache,
            "use_cache": True,
        }
        with torch.inference_mode():
            out = self.model(**kwargs)
        self.cache = out[self.cache_kw]
        token = self._pick(out.logits[:, -1, :].float())
        self.seconds += time.perf_counter() - start
        if token in self.stops:
            self.done = True
            return
        self.ids.append(token)
        self.done = len(self.ids) >= self.settings.max_new_tokens
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # a multi-byte character is still incomplete: wait for its next token
            self.text = text

    def _pick(self, logits: Any) -> int:
        import torch

        all_ids = torch.tensor([self.prompt_ids + self.ids], device=logits.device)
        for proc in self.procs:
            logits = proc(all_ids, logits)
        if self.settings.temperature <= 0:
            return int(logits.argmax(-1))
        probs = torch.softmax(logits, -1).cpu()
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def finish(self) -> None:
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        self.cache = None  # free the KV cache (layers x 2 x tokens x kv_dim floats)

    @property
    def tokens_per_s(self) -> float:
        return len(self.ids) / self.seconds if self.seconds else 0.0


def _cache_kw(model: Any) -> str:
    """transformers 5 names the KV-cache argument `cache` (`past_key_values` is deprecated), 4.x `past_key_values`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def generate(model: Any, tokenizer: Any, messages: list[dict], settings: GenSettings | None = None) -> str:
    """One answer to a conversation, decoded exactly as a chat column is (same sampling, template and stops)."""
    settings = settings or GenSettings()
    if settings.problems():
        raise ChatError("generation settings: " + "; ".join(settings.problems()))
    if settings.system_prompt and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": settings.system_prompt}, *messages]
    dec = _Decoder(model, tokenizer, encode_chat(tokenizer, messages), settings, stop_ids(model, tokenizer))
    while not dec.done:
        dec.step()
    dec.finish()
    return dec.text


# ---- the session ----------------------------------------------------------------------------------------------
@dataclass
class _Column:
    name: str
    kind: str  # "base", "adapter" (a PEFT adapter on the shared base) or "model" (a separately loaded folder)
    path: Path | None = None
    adapter: str | None = None  # PEFT adapter name; display names may hold characters PEFT does not allow
    loaded: Any = None  # LoadedModel for kind "model"
    tokenizer: Any = None


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
        self.allow_pickle = allow_pickle
        self.progress = progress
        self.warnings: list[str] = []
        self._lock = threading.Lock()  # adapter switching is global model state: one decoding step at a time
        sources = [resolve_source(a) for a in adapters]
        base = base or self._first_adapter_base(sources)
        self.device = self._device(device)
        self._say(0.05, f"loading base model {base}")
        self.base = self._load(base)
        self.base_label = base
        self.model = self.base.model
        self._columns: dict[str, _Column] = {"base": _Column("base", "base", tokenizer=self.base.tokenizer)}
        for i, (kind, path) in enumerate(sources):
            self._say(0.5 + 0.5 * i / max(1, len(sources)), f"loading {path}")
            self._add(kind, path, f"a{i}")
        self.model.eval()
        self._switch = _AdapterSwitch(self.model) if hasattr(self.model, "peft_config") else None
        self._say(1.0, f"ready: {', '.join(self.columns)}")

    # ---- loading
    @staticmethod
    def _first_adapter_base(sources: list[tuple[str, Path]]) -> str:
        for kind, path in sources:
            if kind == "adapter":
                return infer_base(path)
        raise ChatError("no base model given and no LoRA adapter to read it from; choose a base model")

    @staticmethod
    def _device(device: str) -> str:
        from app.modeling import ModelError, resolve_device

        try:
            resolved = resolve_device(device)
        except ModelError as exc:
            raise ChatError(str(exc).replace("train.device", "device")) from None
        check_device_free(resolved, device)
        return resolved

    def _load(self, name: str | Path) -> Any:
        from app.modeling import ModelError, load_model

        try:
            return load_model(
                ModelConfig(name_or_path=str(name), allow_pickle=self.allow_pickle),
                device=self.device,
                progress=self.progress,
            )
        except ModelError as exc:
            raise ChatError(str(exc)) from None

    def _add(self, kind: str, path: Path, peft_name: str) -> None:
        name = self._unique(column_name(path))
        if kind == "model":
            loaded = self._load(path)
            loaded.model.eval()
            self._columns[name] = _Column(name, "model", path, loaded=loaded, tokenizer=loaded.tokenizer)
            return
        self.warnings += check_adapter_fits(path, self.model, self.base_label, self.allow_pickle)
        self._attach(path, peft_name)
        tokenizer = adapter_tokenizer(path, self.base.tokenizer)
        self._columns[name] = _Column(name, "adapter", path, adapter=peft_name, tokenizer=tokenizer)

    def _attach(self, path: Path, peft_name: str) -> None:
        from peft import PeftModel

        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=peft_name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=peft_name)
        except Exception as exc:  # PEFT raises ValueError/RuntimeError/KeyError for damaged or foreign adapters
            raise ChatError(f"adapter {path} could not be loaded onto {self.base_label}: {exc}") from None

    def _unique(self, name: str) -> str:
        candidate, n = name, 2
        while candidate in self._columns:
            candidate, n = f"{name} ({n})", n + 1
        return candidate

    def _say(self, frac: float, msg: str) -> None:
        if self.progress is not None:
            self.progress(frac, msg)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    # ---- generation
    def _decoder(self, column: str, history: list[dict], prompt: str, settings: GenSettings) -> _Decoder:
        col = self._columns.get(column)
        if col is None:
            raise ChatError(f"no column {column!r}; the columns are {', '.join(self.columns)}")
        model = col.loaded.model if col.kind == "model" else self.model
        ids = encode_chat(col.tokenizer, build_messages(history, prompt, settings.system_prompt))
        return _Decoder(model, col.tokenizer, ids, settings, stop_ids(model, col.tokenizer), self._activator(col))

    def _activator(self, col: _Column) -> Callable[[], None] | None:
        if col.kind == "model" or self._switch is None:
            return None
        return lambda: self._switch.use(col.adapter)

    def stream_all(
        self, histories: dict[str, list[dict]], prompt: str, settings: GenSettings | None = None
    ) -> Iterator[dict[str, tuple[str, float]]]:
        """Every column answers `prompt` (after its own history), one token per column per round.

        Yields {column: (answer so far, tokens/s)} after each round; tokens/s counts each column's own compute
        time (prompt included), so columns are comparable although they share one model.
        """
        settings = settings or GenSettings()
        decoders = {c: self._decoder(c, histories.get(c, []), prompt, settings) for c in self.columns}
        yield from self._round_robin(decoders)

    def stream(
        self, column: str, history: list[dict], prompt: str, settings: GenSettings | None = None
    ) -> Iterator[tuple[str, float]]:
        """One column's answer, yielded token by token as (answer so far, tokens/s)."""
        dec = self._decoder(column, history, prompt, settings or GenSettings())
        for state in self._round_robin({column: dec}):
            yield state[column]

    def _round_robin(self, decoders: dict[str, _Decoder]) -> Iterator[dict[str, tuple[str, float]]]:
        while not all(d.done for d in decoders.values()):
            for dec in decoders.values():
                if not dec.done:
                    with self._lock:
                        dec.step()
                    if dec.done:
                        dec.finish()
            yield {c: (d.text, d.tokens_per_s) for c, d in decoders.items()}

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
        for col in self._columns.values():
            col.loaded = None
        self._columns.clear()
        self.model = self.base = self._switch = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


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


# ---- prompt sets --------------------------------------------------------------------------------------------
def load_prompt_set(path: str | Path) -> list[dict]:
    """Prompts for side-by-side review: a text file (one prompt per line), a JSON list of strings, of
    {"prompt", "reference"} objects or of Alpaca records (instruction/input/output), or JSON lines of those.

    >>> load_prompt_set("assets/prompts.txt")  # doctest: +SKIP
    [{'prompt': 'What is the capital of France?', 'reference': None}, ...]
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatError(f"prompt set {path}: cannot be read ({exc})") from None
    if path.suffix.lower() == ".json":
        items = _parse_json(path, text)
    elif path.suffix.lower() == ".jsonl":
        items = [_parse_json(path, line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    prompts = [_prompt_item(path, i, item) for i, item in enumerate(items)]
    if not prompts:
        raise ChatError(f"prompt set {path}: holds no prompts (one per line, or a JSON list)")
    return prompts


def _parse_json(path: Path, text: str, line: int | None = None) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {line}" if line else f"line {exc.lineno}"
        raise ChatError(f"prompt set {path}: {where} is not valid JSON ({exc.msg})") from None
    if line is None and not isinstance(data, list):
        raise ChatError(f"prompt set {path}: expected a JSON list of prompts, got {type(data).__name__}")
    return data


def _prompt_item(path: Path, index: int, item: Any) -> dict:
    if isinstance(item, str) and item.strip():
        return {"prompt": item, "reference": None}
    if isinstance(item, dict):
        prompt = item.get("prompt") or item.get("instruction")
        if isinstance(prompt, str) and prompt.strip():
            if item.get("input") and "prompt" not in item:
                prompt = f"{prompt}\n\n{item['input']}"
            reference = item.get("reference", item.get("output"))
            return {"prompt": prompt, "reference": None if reference is None else str(reference)}
    raise ChatError(
        f"prompt set {path}: item {index + 1} has no text; give a string or an object with a non-empty "
        f'"prompt" (or "instruction") field'
    )


def save_table(df: Any, path: str | Path) -> Path:
    """Write a prompt-set table as CSV (UTF-8 with BOM so spreadsheet apps read Chinese), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False, encoding="utf-8-sig")
    tmp.replace(path)
    return path


# ---- CLI: python -m app chat --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapters", nargs="*", help=f"up to {MAX_ADAPTERS} adapter, checkpoint, run or model folders")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        dest="more_adapters",
        metavar="FOLDER",
        help="an adapter folder, like the positional ones (repeatable; the same option as `evaluate --adapter`)",
    )
    parser.add_argument("--base", help="base model (catalog id, folder or .gguf); default: the first adapter's base")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--allow-pickle", action="store_true", help="allow adapter_model.bin (pickle) adapters")
    parser.add_argument("--prompts", help="run a prompt set (.txt one per line, .json list) instead of chatting")
    parser.add_argument("--csv", help="with --prompts: save the answer table here")
    parser.add_argument("--system", default="", help="system prompt")
    for name, default in (
        ("max_new_tokens", 128),
        ("temperature", 0.0),
        ("top_p", 0.9),
        ("top_k", 50),
        ("repetition_penalty", 1.0),
        ("seed", 42),
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)


def main(args: argparse.Namespace) -> int:
    settings = GenSettings(
        args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.repetition_penalty, args.seed, args.system
    )
    try:
        session = ChatSession(
            args.base,
            [*args.adapters, *args.more_adapters],
            args.device,
            args.allow_pickle,
            progress=lambda f, m: print(f"[{f:4.0%}] {m}", file=sys.stderr),
        )
        for warning in session.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.prompts:
            df = session.run_prompt_set(load_prompt_set(args.prompts), settings)
            print(df.to_string(max_colwidth=60))
            print(f"tokens/s: {df.attrs['tokens_per_s']}")
            if args.csv:
                print(f"saved {save_table(df, args.csv)}")
            return 0
        _repl(session, settings)
    except (ChatError, DeviceBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _repl(session: ChatSession, settings: GenSettings) -> None:
    histories: dict[str, list[dict]] = {c: [] for c in session.columns}
    print(f"columns: {', '.join(session.columns)}. Type a message; /reset clears the history, /quit ends.")
    while True:
        try:
            prompt = input(">>> ").strip()
        except EOFError:
            return
        if prompt in ("/quit", "/exit"):
            return
        if prompt == "/reset":
            histories = {c: [] for c in session.columns}
            continue
        for column, (answer, tps) in session.answer_all(prompt, settings, histories).items():
            print(f"--- {column} ({tps:.1f} tok/s)\n{answer}")
            histories[column] += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
