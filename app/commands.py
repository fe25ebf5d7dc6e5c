"""Typed configs of the commands besides training (chat, evaluate, merge, export): each default lives here, once.

`RunConfig` (app.config) drives training; these docstring dataclasses drive the rest the same way. The CLI builds
its options from the fields (`add_options`: type, default, choices and help from the field's docstring) and the
UI tabs take their widgets' initial values from the same fields, so `--help` and the UI cannot disagree:

    python -m app merge runs/X/adapter --out exports/X             # --dtype float16, MergeConfig.dtype
    python -m app export gguf exports/X --out exports/X-gguf       # --quant q8_0, ExportConfig.quant

A field with no widget in its tab is named in the class's HIDDEN mapping with the reason (a test checks that every
other field has one). Pure Python: no torch, no gradio.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from app.config import ConfigError, _build, _choice

DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
"""Weight dtypes a merged model is saved in."""
GGUF_QUANTS: tuple[str, ...] = ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "q4_0", "q5_0", "f32")
"""GGUF file types an export can write: f16, q8_0 and f32 by TuneDesk's own writer (app.gguf), the others by
llama.cpp's quantizer from an F16 file (app.llamacpp; the optional extra tunedesk[gguf]). Sizes and quality notes
per type: app.gguf.GGUF_TYPES."""
PUSH_WHAT: tuple[str, ...] = ("merged", "adapter", "gguf")
"""What a push to the Hub uploads: a merged model folder, a LoRA adapter folder, or a folder of GGUF files."""


@dataclass
class ChatConfig:
    """How each chat column generates: the same settings and seed for every column."""

    max_new_tokens: int = 128
    """Longest answer, in tokens."""
    temperature: float = 0.0
    """0 = greedy (argmax); above 0 samples with top_p/top_k from a generator seeded with `seed`."""
    top_p: float = 0.9
    """Sample only from the most likely tokens whose probabilities add up to this share (1 = off)."""
    top_k: int = 50
    """Sample only from the k most likely tokens (0 = off)."""
    repetition_penalty: float = 1.0
    """Divide the scores of tokens already in the text by this (1 = off; 1.1-1.3 curbs loops)."""
    seed: int = 42
    """Seed of the sampling generator: the same seed and settings give the same answers."""
    system_prompt: str = ""
    """System message put before every conversation; empty for none."""

    HIDDEN: ClassVar[dict[str, str]] = {}
    CLI_FLAGS: ClassVar[dict[str, tuple[str, ...]]] = {"system_prompt": ("--system", "--system-prompt")}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None) -> ChatConfig:
        """Strict, like RunConfig.from_dict: unknown keys and wrong types raise ConfigError listing every one."""
        return _from_dict(cls, data, source)

    def validate(self) -> list[str]:
        """Every out-of-range setting, each naming the field; empty when usable."""
        p = _finite(self)
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
        if not 0 <= self.seed < 2**64:  # torch.Generator.manual_seed takes an unsigned 64-bit seed
            p.append(f"seed: {self.seed} must be a whole number from 0 to 2^64 - 1")
        return p

    problems = validate  # the name chat and its tab have always called


@dataclass
class EvaluateConfig:
    """How much of the data evaluate scores and how long each answer may be."""

    max_examples: int = 50
    """Evaluate the first N examples (0 = all): generation dominates, ~50 answers a minute for a 135M model on CPU."""
    max_new_tokens: int = 128
    """Answer length limit in tokens; longer references are scored on their first part only."""
    batch_size: int = 8
    """Prompts generated together: faster on a GPU, more memory."""

    HIDDEN: ClassVar[dict[str, str]] = {"batch_size": "a throughput knob for scripts; the tab keeps the default"}
    CLI_FLAGS: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None) -> EvaluateConfig:
        """Strict, like RunConfig.from_dict."""
        return _from_dict(cls, data, source)

    def validate(self) -> list[str]:
        p = _finite(self)
        if self.max_examples < 0:
            p.append(f"max_examples: {self.max_examples} must be >= 1 (or 0 for all)")
        if self.max_new_tokens < 1:
            p.append(f"max_new_tokens: {self.max_new_tokens} must be >= 1 ({EvaluateConfig.max_new_tokens} is usual)")
        if self.batch_size < 1:
            p.append(f"batch_size: {self.batch_size} must be >= 1")
        return p


@dataclass
class MergeConfig:
    """How an adapter is merged into its base and saved."""

    dtype: str = "float16"
    """Weights of the merged model: float16/bfloat16 halve the size; float32 keeps every bit."""
    overwrite: bool = False
    """Replace an output folder an earlier TuneDesk export wrote (any other non-empty folder is refused)."""
    allow_pickle: bool = False
    """Allow an adapter_model.bin (pickle, can execute code) adapter; off: safetensors only."""

    HIDDEN: ClassVar[dict[str, str]] = {"allow_pickle": "CLI only: the Export tab never loads pickle"}
    CLI_FLAGS: ClassVar[dict[str, tuple[str, ...]]] = {}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"dtype": DTYPES}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None) -> MergeConfig:
        """Strict, like RunConfig.from_dict."""
        return _from_dict(cls, data, source)

    def validate(self) -> list[str]:
        return _choice_problems(self)


@dataclass
class ExportConfig:
    """How a model is written as GGUF."""

    quant: str = "q8_0"
    """File type: q4_k_m / q5_k_m / q6_k (llama.cpp's K-quants, what Ollama and llama.cpp users run), q8_0 (8-bit,
    near-lossless), f16, q4_0 / q5_0 (legacy), f32."""
    keep_f16: bool = False
    """Keep the F16 file a llama.cpp quant (q4_k_m ...) is made from; off: it is removed once the quant is written."""
    allow_pickle: bool = False
    """Allow an adapter_model.bin (pickle, can execute code) adapter; off: safetensors only."""

    HIDDEN: ClassVar[dict[str, str]] = {"allow_pickle": "CLI only: the Export tab never loads pickle"}
    CLI_FLAGS: ClassVar[dict[str, tuple[str, ...]]] = {}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"quant": GGUF_QUANTS}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None) -> ExportConfig:
        """Strict, like RunConfig.from_dict."""
        return _from_dict(cls, data, source)

    def validate(self) -> list[str]:
        return _choice_problems(self)


@dataclass
class PushConfig:
    """How an export is uploaded to the Hugging Face Hub (with the token saved by `hf auth login` or the Model tab)."""

    repo_id: str = ""
    """The Hub repo, owner/name; created when it does not exist yet (required to push)."""
    what: str = "merged"
    """What the folder holds: merged (a merged model folder), adapter (a LoRA adapter) or gguf (GGUF files)."""
    private: bool = True
    """Create the repo private (only you can see it); an existing repo keeps its visibility."""
    message: str = "Upload from TuneDesk"
    """The commit message on the Hub."""

    HIDDEN: ClassVar[dict[str, str]] = {"message": "CLI only: the Export tab uses the default message"}
    CLI_FLAGS: ClassVar[dict[str, tuple[str, ...]]] = {"repo_id": ("--repo", "--repo-id")}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"what": PUSH_WHAT}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None) -> PushConfig:
        """Strict, like RunConfig.from_dict."""
        return _from_dict(cls, data, source)

    def validate(self) -> list[str]:
        p = _choice_problems(self)
        parts = self.repo_id.strip().split("/")
        if self.repo_id.strip() and (len(parts) != 2 or not all(parts)):
            p.append(f"repo_id: {self.repo_id!r} is not owner/name (for example you/my-model)")
        return p


COMMAND_CONFIGS: dict[str, type] = {
    "chat": ChatConfig,
    "evaluate": EvaluateConfig,
    "merge": MergeConfig,
    "export": ExportConfig,
    "push": PushConfig,
}
"""Each command's config class, by CLI command name."""


# ---- CLI options from the fields ------------------------------------------------------------------------------
def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of `cls`: --name-with-dashes, the field's type, default and choices, help = its docstring.

    A bool that defaults to False becomes a flag (--overwrite); one that defaults to True, --no-<name>.
    """
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    choices = getattr(cls, "CHOICES", {})
    for f in dataclasses.fields(cls):
        flags = cls.CLI_FLAGS.get(f.name, ("--" + f.name.replace("_", "-"),))
        kind = hints[f.name]
        if kind is bool:
            if f.default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                    help=docs[f.name])  # fmt: skip
            else:
                parser.add_argument(*flags, dest=f.name, action="store_true", help=docs[f.name])
            continue
        show = f" (default: {f.default})" if f.default != "" else ""
        parser.add_argument(*flags, dest=f.name, type=kind, default=f.default, choices=choices.get(f.name),
                            help=docs[f.name].replace("%", "%%") + show)  # fmt: skip


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config held by parsed options (add_options); ConfigError listing every problem when not usable."""
    cfg = cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
    problems = cfg.validate()
    if problems:
        raise ConfigError(problems, "options")
    return cfg


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: the docstring written under it} for a config class, whitespace folded."""
    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(cls)).body[0].body
    for stmt, nxt in zip(body, body[1:], strict=False):
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


# ---- strict loading and checks ----------------------------------------------------------------------------------
def _from_dict(cls: type, data: dict[str, Any] | None, source: str | None) -> Any:
    problems: list[str] = []
    cfg = _build(cls, data or {}, "", problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _choice_problems(cfg: Any) -> list[str]:
    """A value outside its CHOICES, for each field that has them."""
    p: list[str] = []
    for name, allowed in cfg.CHOICES.items():
        _choice(p, name, getattr(cfg, name), allowed)
    return p


def _finite(cfg: Any) -> list[str]:
    """NaN or infinity in any float field (every range check passes or fails NaN silently)."""
    return [
        f"{f.name}: {value} is not a finite number"
        for f in dataclasses.fields(cfg)
        if isinstance(value := getattr(cfg, f.name), float) and not math.isfinite(value)
    ]
