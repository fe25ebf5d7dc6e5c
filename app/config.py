"""One typed config for a run: the UI form, the presets, the CLI, the estimator and the trainer all read it.

Nested dataclasses mirror the YAML one for one:

    model: {name_or_path: smollm2-135m-instruct, trust_remote_code: false, attn_implementation: sdpa}
    method: lora
    quant: {bits: null, type: nf4, double_quant: true, compute_dtype: auto}
    lora: {rank: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}
    ...

`RunConfig.from_dict()` is strict: an unknown key names the nearest valid key, a wrong type says what was
expected. `validate()` returns every problem at once. Pure Python: no torch, no gradio.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from app import methods, objective_table

DEFAULT_MODEL = "smollm2-135m-instruct"

METHODS: tuple[str, ...] = methods.NAMES  # full, freeze, lora, qlora: what each does is app.methods' table
OPTIMIZERS: tuple[str, ...] = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
SCHEDULERS: tuple[str, ...] = ("cosine", "linear", "constant")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
COMPUTE_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
DATA_FORMATS: tuple[str, ...] = ("auto", "alpaca", "sharegpt", "messages")
TEMPLATES: tuple[str, ...] = ("auto", "alpaca", "chat")
ATTN_IMPLS: tuple[str, ...] = ("sdpa", "eager", "flash_attention_2")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
OBJECTIVES: tuple[str, ...] = objective_table.NAMES
"""What a run optimises (app.objective_table): supervised fine-tuning, or preference training with TRL's trainers."""
PREFERENCE_LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust")
REFERENCES: tuple[str, ...] = ("auto", "copy", "precompute")
STRATEGIES: tuple[str, ...] = ("auto", "ddp", "fsdp", "deepspeed_zero3")
"""How a run spreads over several GPUs (app.parallel plans it; accelerate launches it): auto is the planner's pick."""
TRACKERS: tuple[str, ...] = ("tensorboard", "wandb", "mlflow", "trackio")
"""Experiment trackers train.report_to may name: TensorBoard is installed with TuneDesk, the others with
`pip install tunedesk[trackers]` (app.tracking checks them before a run starts)."""
QUANT_BITS: tuple[int | None, ...] = (None, 8, 4)
QUANT_TYPES: tuple[str, ...] = ("nf4", "fp4")
MINIMUMS: dict[str, int] = {
    "lora.rank": 1,
    "freeze.trainable_layers": 1,
    "data.max_seq_len": 16,
    "data.max_samples": 1,
    "train.max_steps": 1,
    "train.batch_size": 1,
    "train.grad_accum": 1,
    "train.logging_steps": 1,
    "train.save_steps": 0,
    "train.eval_steps": 1,
    "train.sample_every": 0,
    "train.save_total_limit": 1,
    "train.early_stopping_patience": 0,
    "train.eval_generations": 0,
    "train.learn_check": 0,
    "train.weight_decay": 0,
    "train.max_grad_norm": 0,
    "train.seed": 0,
    "distributed.num_processes": 1,
    "distributed.num_machines": 1,
    "distributed.machine_rank": 0,
    "distributed.main_process_port": 1,
}
"""Smallest valid value of each field with a lower bound, by dotted path: validate() refuses less and the form's
widgets start there (one place for both). An optional count (max_steps, eval_steps, max_samples) may also be null."""
OPTIONAL_POSITIVE: tuple[str, ...] = ("preference.beta",)
"""Optional fields that must be > 0 when set: 0 is not a value they take, so the form reads a 0 as "not set"."""


class ConfigError(ValueError):
    """Raised by strict loading; `problems` holds every problem found, each naming where it is."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(
            head + ("; ".join(self.problems) if len(self.problems) < 2 else "\n  - ".join(["", *self.problems]))
        )


@dataclass
class ModelConfig:
    name_or_path: str = DEFAULT_MODEL
    """The base model: a catalog id (e.g. smollm2-135m-instruct), a Hugging Face hub id, a local folder with
    config.json, or a local .gguf file (dequantized on load)."""
    trust_remote_code: bool = False
    """Run Python code shipped with the model. Off by default: only turn on for a model whose code you trust."""
    allow_pickle: bool = False
    """Allow loading pickle-based .bin weights (can execute code). Off: safetensors only."""
    attn_implementation: str = "sdpa"
    """Attention kernel: sdpa (PyTorch fused, default), eager (reference), flash_attention_2 (CUDA GPUs of compute
    capability 8.0+ with flash-attn installed, bf16/fp16; sdpa elsewhere, with a message)."""


@dataclass
class QuantConfig:
    bits: int | None = None
    """Storage width of the frozen base weights: none (16/32-bit), 8 (LLM.int8) or 4 (NF4/FP4). QLoRA needs 4 or 8."""
    type: str = "nf4"
    """4-bit data type: nf4 (normal float, better for weights) or fp4."""
    double_quant: bool = True
    """Quantize the 4-bit block scales too: saves ~0.37 bit/param (about 0.4 GB on a 7B model)."""
    compute_dtype: str = "auto"
    """Dtype the dequantized weights are multiplied in: auto (fp32 on CPU, bf16/fp16 on CUDA), float32, bfloat16,
    float16."""


@dataclass
class LoraConfig:
    rank: int = 8
    """LoRA rank r: higher = more capacity and memory; 8-16 is a good start."""
    alpha: float = 16.0
    """Scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA). Usually 2 x rank."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training; 0-0.1."""
    target_modules: Union[list[str], str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # noqa: UP007
    """Linear layers that get an adapter: a list of module names (e.g. [q_proj, v_proj]) or "all-linear"."""
    use_dora: bool = False
    """DoRA: learn a magnitude per output channel as well; slightly better quality, ~1.3x slower."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r): keeps high ranks learning at the same rate."""


@dataclass
class FreezeConfig:
    trainable_layers: int = 2
    """Freeze method: train only the last N decoder layers."""
    train_norms: bool = False
    """Also train every norm layer (a few thousand parameters)."""


@dataclass
class DataSource:
    """One dataset of a run: where it is, which part of it, and how much of it a mix takes."""

    path: str = ""
    """A JSON/JSONL/CSV/Parquet file, a datasets.save_to_disk folder, or a Hugging Face Hub dataset id."""
    config: str = ""
    """Hub dataset config (subset), e.g. en; empty for the dataset's default (or first) one."""
    split: str = ""
    """Split of a Hub dataset or a save_to_disk DatasetDict, e.g. train; empty for train (else the first)."""
    revision: str = ""
    """Hub commit the records come from (the download records it, so a rerun reads the same records); empty for
    the newest."""
    limit: int | None = None
    """Read only the first N records of this dataset; empty for all."""
    share: float | None = None
    """Part of the mixed records that come from this dataset, in (0, 1], e.g. 0.3; empty: all its records."""


@dataclass
class DataConfig:
    path: str = "assets/sample_data.json"
    """Training data: JSON/JSONL/CSV/Parquet file, a datasets.save_to_disk folder, or a hub dataset id. With
    data.sources set, the first of them."""
    sources: list[DataSource] = field(default_factory=list)
    """Several datasets mixed into one (each a file, folder or Hub id with its config, split, revision and an
    optional record limit or share), or one Hub dataset's config, split and revision. The first is data.path.
    Empty: data.path alone."""
    format: str = "auto"
    """Record format: auto (detect), alpaca (instruction/input/output), sharegpt (conversations), messages."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column mapping overrides, e.g. {instruction: question, output: answer}."""
    template: str = "auto"
    """Prompt template: auto (the model's chat template when it has one, else alpaca), alpaca, chat."""
    system_prompt: str = ""
    """System message put before every example (chat template only); empty for none."""
    placeholders: dict[str, str] = field(default_factory=dict)
    """Text substituted for {{key}} in every record, e.g. {name: TuneBot, author: Ada} for identity data."""
    max_seq_len: int = 512
    """Tokens per example; longer examples are cut (the Data tab shows how many)."""
    max_samples: int | None = None
    """Use only the first N valid records; leave empty (or 0) for all records."""
    val_size: float = 0.05
    """Share of records held out for eval loss, in [0, 1)."""
    train_on_prompt: bool = False
    """Compute loss on the prompt tokens too (default: only on the response)."""

    def datasets(self) -> list[DataSource]:
        """The datasets of the run: `sources` when their first is `path`, else `path` alone (a caller that sets
        another path, e.g. an evaluation file, means that file; validate() refuses the mismatch in a config).

        >>> DataConfig(path="a.json").datasets()
        [DataSource(path='a.json', config='', split='', revision='', limit=None, share=None)]
        """
        if self.sources and self.sources[0].path.strip() == self.path.strip():
            return list(self.sources)
        return [DataSource(path=self.path)]


@dataclass
class TrainConfig:
    epochs: float = 3.0
    """Passes over the training data (ignored when a maximum number of steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps; leave empty (or 0) to train for the number of epochs."""
    batch_size: int = 4
    """Examples per micro-batch: activation memory grows linearly with it."""
    grad_accum: int = 4
    """Micro-batches per optimizer step: effective batch = micro-batch size x accumulation, no extra memory."""
    learning_rate: float = 2.0e-4
    """Peak learning rate: 1e-4 to 3e-4 for LoRA, 1e-5 to 5e-5 for full fine-tuning."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warm-up: cosine, linear or constant."""
    warmup_ratio: float = 0.03
    """Share of steps spent ramping the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this value (0 = off)."""
    optimizer: str = "adamw_torch"
    """adamw_torch (8 B/param of state), adamw_8bit (~2 B/param), paged_adamw_8bit / paged_adamw_32bit (CUDA: state
    pages to CPU RAM under memory pressure; on the CPU adamw_8bit / adamw_torch, with a message)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less memory, ~30% slower."""
    precision: str = "auto"
    """auto (fp32 on CPU, bf16 on CUDA where supported, else fp16), fp32, bf16, fp16."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    group_by_length: bool = True
    """Batch examples of similar length together: less padding, faster steps."""
    packing: bool = False
    """Pack several examples into one sequence (attention kept separate per example)."""
    liger_kernel: bool = False
    """Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, fused linear cross-entropy) on CUDA: less memory and
    faster steps; needs `pip install liger-kernel`; ignored with a message on the CPU."""
    torch_compile: bool = False
    """torch.compile the model: faster steps after a compile of tens of seconds; on CPU too."""
    logging_steps: int = 1
    """Write a loss point every N optimizer steps."""
    save_steps: int = 100
    """Save a resumable checkpoint every N optimizer steps (0 = only at the end)."""
    eval_steps: int | None = None
    """Compute eval loss every N steps; leave empty (or 0) to compute it at each checkpoint save and at the
    end."""
    save_total_limit: int = 3
    """Keep at most this many checkpoints (oldest removed first)."""
    sample_every: int = 0
    """Generate answers to the sample prompts every N steps and log them (0 = off)."""
    sample_prompts: list[str] = field(default_factory=list)
    """Up to 3 prompts answered during training, one per line, when sampling is on (every N steps above 0)."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers that log the run: tensorboard (into the run folder), wandb, mlflow, trackio; empty =
    none. wandb runs offline and mlflow writes into the run folder unless you configured your own server."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations in a row without a better eval loss (0 = off; needs a validation split)."""
    load_best_at_end: bool = False
    """Keep the checkpoint with the best eval loss as the run's result (a checkpoint is saved at every
    evaluation; needs a validation split)."""
    eval_generations: int = 4
    """At each evaluation, answer this many validation prompts and score them against their references
    (ROUGE-L, exact match); 0 = eval loss only."""
    learn_check: int = 4
    """After the run, compare the base and the tuned model on this many training examples (answers and loss on
    the reference); 0 = off."""
    seed: int = 42
    """Random seed for data order and adapter initialisation."""
    output_dir: str = "runs"
    """Folder that holds run folders (runs/<timestamp>-<name>/)."""
    run_name: str = ""
    """Name appended to the run folder; empty = method and model."""


@dataclass
class PreferenceConfig:
    beta: float | None = None
    """Strength of the preference; empty = the objective's usual value: DPO and KTO 0.1 (how far the model may
    move from the reference), ORPO 0.1 (the odds-ratio weight lambda), SimPO 2.0 (the reward scale)."""
    loss_type: str = "sigmoid"
    """DPO's loss: sigmoid (the paper's), ipo (bounded, for near-deterministic preferences), hinge, robust (noisy
    labels)."""
    reference: str = "auto"
    """DPO and KTO compare with a reference model. auto: the base with the adapter switched off for LoRA/QLoRA (no
    second copy), a frozen copy for full/freeze; copy: always a frozen copy; precompute: the reference's
    log-probabilities computed once before training, no copy held while training."""
    simpo_gamma: float = 0.5
    """SimPO: the target reward margin, as a share of beta."""
    desirable_weight: float = 1.0
    """KTO: weight of the desirable examples' loss (label true); raise it when they are the fewer."""
    undesirable_weight: float = 1.0
    """KTO: weight of the undesirable examples' loss (label false)."""


@dataclass
class DistributedConfig:
    strategy: str = "auto"
    """auto: the planner's pick (DDP when one GPU holds the whole run, else FSDP, then FSDP with CPU offload); ddp:
    a whole copy of the model on every GPU; fsdp: weights, gradients and optimizer states sharded across the GPUs
    (PyTorch FSDP through accelerate); deepspeed_zero3: the same sharding through DeepSpeed, where installed."""
    cpu_offload: bool = False
    """FSDP / ZeRO-3: keep the sharded weights and optimizer states in CPU RAM between uses; fits a bigger model,
    trains slower."""
    num_processes: int = 1
    """GPUs (one process each) in all, across every machine; 1 trains on one device."""
    num_machines: int = 1
    """Machines the GPUs are spread over; each runs the same command with its own machine rank."""
    machine_rank: int = 0
    """This machine's number, 0 for the main one (the one at the main address)."""
    main_process_ip: str = ""
    """Address of machine 0 that the others can reach (several machines only)."""
    main_process_port: int = 29500
    """Port on machine 0 for the processes to meet; open it between the machines."""


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: str = "lora"
    """full (every weight), freeze (last N layers), lora (low-rank adapters), qlora (adapters on a 4/8-bit base)."""
    objective: str = "sft"
    """sft (supervised: learn the answers), or preference training on pairs of a better and a worse answer: dpo,
    orpo (no reference model), simpo (no reference, length-normalised), kto (single answers labelled good or bad)."""
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    # ---- loading -----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, source: str | None = None) -> RunConfig:
        """Strict: unknown keys and wrong types raise ConfigError listing every problem.

        >>> RunConfig.from_dict({"lora": {"rank": 16}}).lora.rank
        16
        """
        problems: list[str] = []
        cfg = _build(cls, data or {}, "", problems)
        if problems:
            raise ConfigError(problems, source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(load_yaml(path), source=str(path))

    @classmethod
    def from_preset(cls, path: str | Path, base: RunConfig | None = None) -> RunConfig:
        """Apply a partial YAML preset over `base` (defaults when None)."""
        merged = deep_merge((base or cls()).to_dict(), load_yaml(path))
        return cls.from_dict(merged, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml(), encoding="utf-8")
        tmp.replace(path)

    def replace(self, **changes: Any) -> RunConfig:
        """Copy with dotted-path changes: cfg.replace(**{"lora.rank": 16, "method": "qlora"})."""
        data = self.to_dict()
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
        return RunConfig.from_dict(data)

    # ---- validation --------------------------------------------------------------------------------------
    def validate(self) -> list[str]:
        """Every problem at once, each naming the key; empty when the config is usable."""
        numbers = _number_problems(self.to_dict())
        broken = {problem.split(":", 1)[0] for problem in numbers}  # NaN fails every range check: say it once
        return numbers + [problem for problem in self._field_problems() if problem.split(":", 1)[0] not in broken]

    def _field_problems(self) -> list[str]:
        p: list[str] = []
        _choice(p, "method", self.method, METHODS)
        _choice(p, "model.attn_implementation", self.model.attn_implementation, ATTN_IMPLS)
        if not self.model.name_or_path.strip():
            p.append("model.name_or_path: empty; name a catalog id, hub id, folder or .gguf file")
        q = self.quant
        if q.bits not in QUANT_BITS:
            p.append(f"quant.bits: {q.bits!r} is not supported; use null, 8 or 4")
        p += methods.problems(self.method, q.bits)
        _choice(p, "quant.type", q.type, QUANT_TYPES)
        _choice(p, "quant.compute_dtype", q.compute_dtype, COMPUTE_DTYPES)
        lo = self.lora
        if lo.rank < MINIMUMS["lora.rank"]:
            p.append(f"lora.rank: {lo.rank} must be >= {MINIMUMS['lora.rank']} (8-16 is a good start)")
        if lo.alpha <= 0:
            p.append(f"lora.alpha: {lo.alpha} must be > 0")
        if not 0 <= lo.dropout < 1:
            p.append(f"lora.dropout: {lo.dropout} must be in [0, 1)")
        if isinstance(lo.target_modules, str):
            if lo.target_modules != "all-linear":
                p.append(f"lora.target_modules: {lo.target_modules!r} must be a list of module names or 'all-linear'")
        elif not lo.target_modules:
            p.append("lora.target_modules: empty; pick at least one module (e.g. q_proj, v_proj) or 'all-linear'")
        _at_least(p, "freeze.trainable_layers", self.freeze.trainable_layers)
        d = self.data
        _choice(p, "data.format", d.format, DATA_FORMATS)
        _choice(p, "data.template", d.template, TEMPLATES)
        if d.max_seq_len < (shortest := MINIMUMS["data.max_seq_len"]):
            p.append(f"data.max_seq_len: {d.max_seq_len} is too short; use at least {shortest} tokens")
        if not 0 <= d.val_size < 1:
            p.append(f"data.val_size: {d.val_size} must be in [0, 1)")
        _at_least(p, "data.max_samples", d.max_samples)
        _validate_sources(d, p)
        _validate_train(self.train, p)
        _validate_preference(self, p)
        _validate_distributed(self.distributed, p)
        t = self.train
        for key, on in (
            ("early_stopping_patience", t.early_stopping_patience > 0),
            ("load_best_at_end", t.load_best_at_end),
        ):
            if on and d.val_size <= 0:
                p.append(
                    f"train.{key}: needs a validation split to measure eval loss, but data.val_size is 0; "
                    "set data.val_size above 0 (e.g. 0.05)"
                )
        return p

    def check(self, source: str | None = None) -> RunConfig:
        """Raise ConfigError with every problem when validate() finds any; return self otherwise."""
        problems = self.validate()
        if problems:
            raise ConfigError(problems, source)
        return self


HIDDEN: dict[str, str] = {
    "model.allow_pickle": "pickle weights can run code: only a config file turns it on, never a click",
    "data.columns": "the Data tab's column dropdowns set it (Form.add_extra), not a row of ui/form.py",
    "data.placeholders": "the Data tab's placeholder table sets it (Form.add_extra), not a row of ui/form.py",
    "data.sources": "the Data tab's Hub download and its table of datasets to mix set it (Form.add_extra)",
    "train.save_total_limit": "3 checkpoints suit the app; a config file keeps more",
    "train.output_dir": "the app keeps runs where its runs list reads them; a config file moves them",
}
"""RunConfig fields with no row in ui/form.py, and why (a test checks every other field has one)."""


MAX_EPOCHS = 1000.0
"""More passes than this over one dataset is a typo, not a plan (1e308 epochs overflowed the step count)."""
MAX_INT = 2**31 - 1
"""Largest count any field takes (steps, tokens, layers); larger ones overflow 32-bit counters downstream."""
SEED_LIMIT = 2**32
"""Seeds are in [0, 2^32): NumPy refuses others."""


def _number_problems(data: dict[str, Any], prefix: str = "") -> list[str]:
    """NaN and infinity in any number field, and integers too large for any count (the seed has its own range).

    >>> _number_problems({"train": {"epochs": float("nan"), "seed": 42}})
    ['train.epochs: nan is not a finite number; write a plain value (NaN and infinity cannot train)']
    """
    problems: list[str] = []
    for key, value in data.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict):
            problems += _number_problems(value, where + ".")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(
                f"{where}: {value} is not a finite number; write a plain value (NaN and infinity cannot train)"
            )
        elif where == "train.seed" and not MINIMUMS["train.seed"] <= value < SEED_LIMIT:
            problems.append(f"{where}: {value} is out of range; use a whole number from 0 to {SEED_LIMIT - 1}")
        elif isinstance(value, int) and where != "train.seed" and abs(value) > MAX_INT:
            problems.append(f"{where}: {value} is out of range; at most {MAX_INT:,}")
    return problems


def _validate_sources(d: DataConfig, p: list[str]) -> None:
    """data.sources: each entry names a dataset with a sensible limit and share, the first is data.path, and the
    shares can be met (every dataset with a share: they add up to 1; else they leave room for the others)."""
    if not d.sources:
        return
    for k, src in enumerate(d.sources):
        where = f"data.sources[{k}]"
        if not src.path.strip():
            p.append(f"{where}.path: empty; name a file, a save_to_disk folder or a Hub dataset id")
        if src.limit is not None and src.limit < 1:
            p.append(f"{where}.limit: {src.limit} must be >= 1 or null")
        if src.share is not None and not 0 < src.share <= 1:
            p.append(f"{where}.share: {src.share} must be in (0, 1], e.g. 0.3 for 30% of the mixed records")
    first = d.sources[0].path.strip()
    if first and d.path.strip() != first:
        p.append(f"data.path: {d.path!r} is not the first of data.sources ({first!r}); set data.path to {first!r}")
    shares = [s.share for s in d.sources if s.share is not None and 0 < s.share <= 1]
    total = sum(shares)
    if len(shares) == len(d.sources) and abs(total - 1) > 1e-6:
        p.append(
            f"data.sources: every dataset has a share and they add up to {total:g}; make them add up to 1 (or leave "
            "one without a share: it keeps all its records)"
        )
    elif shares and len(shares) < len(d.sources) and total >= 1 - 1e-6:
        p.append(
            f"data.sources: the shares add up to {total:g}, leaving nothing for the datasets without one; keep them "
            "below 1"
        )


def _validate_train(t: TrainConfig, p: list[str]) -> None:
    if t.epochs <= 0 and t.max_steps is None:
        p.append(f"train.epochs: {t.epochs} must be > 0 (or set train.max_steps)")
    if t.epochs > MAX_EPOCHS:
        p.append(f"train.epochs: {t.epochs:g} is more than {MAX_EPOCHS:g} passes; use a few (1-5 is usual)")
    for name in ("max_steps", "batch_size", "grad_accum", "logging_steps", "save_steps", "eval_steps"):
        _at_least(p, f"train.{name}", getattr(t, name))
    if not 0 < t.learning_rate < 1:
        p.append(f"train.learning_rate: {t.learning_rate} must be in (0, 1); 2.0e-4 is typical for LoRA")
    if not 0 <= t.warmup_ratio < 1:
        p.append(f"train.warmup_ratio: {t.warmup_ratio} must be in [0, 1)")
    for name in ("weight_decay", "max_grad_norm", "sample_every", "early_stopping_patience"):
        _at_least(p, f"train.{name}", getattr(t, name))
    for name, most in (("eval_generations", 64), ("learn_check", 32)):  # each is a greedy generation, or two
        _at_least(p, f"train.{name}", getattr(t, name))
        if getattr(t, name) > most:
            p.append(f"train.{name}: {getattr(t, name)} is more than {most}; a few examples show it (4 is usual)")
    for tracker in t.report_to:
        _choice(p, "train.report_to", tracker, TRACKERS)
    if len(set(t.report_to)) < len(t.report_to):
        p.append(f"train.report_to: {', '.join(t.report_to)} names a tracker twice; name each once")
    if len(t.sample_prompts) > 3:
        p.append(f"train.sample_prompts: {len(t.sample_prompts)} prompts; at most 3")
    _at_least(p, "train.save_total_limit", t.save_total_limit)
    _choice(p, "train.optimizer", t.optimizer, OPTIMIZERS)
    _choice(p, "train.lr_scheduler", t.lr_scheduler, SCHEDULERS)
    _choice(p, "train.precision", t.precision, PRECISIONS)
    _choice(p, "train.device", t.device, DEVICES)


def _validate_preference(cfg: RunConfig, p: list[str]) -> None:
    _choice(p, "objective", cfg.objective, OBJECTIVES)
    pref = cfg.preference
    _choice(p, "preference.loss_type", pref.loss_type, PREFERENCE_LOSSES)
    _choice(p, "preference.reference", pref.reference, REFERENCES)
    if pref.beta is not None and not pref.beta > 0:
        p.append(f"preference.beta: {pref.beta} must be > 0 (or empty for the objective's usual value)")
    for name in ("simpo_gamma", "desirable_weight", "undesirable_weight"):
        if not getattr(pref, name) >= 0:
            p.append(f"preference.{name}: {getattr(pref, name)} must be >= 0")
    if cfg.objective != "sft" and cfg.train.packing:
        p.append(f"train.packing: {cfg.objective} compares whole answers; turn packing off for preference training")


def _validate_distributed(d: DistributedConfig, p: list[str]) -> None:
    _choice(p, "distributed.strategy", d.strategy, STRATEGIES)
    for name in ("num_processes", "num_machines", "machine_rank", "main_process_port"):
        _at_least(p, f"distributed.{name}", getattr(d, name))
    if d.main_process_port > 65535:
        p.append(
            f"distributed.main_process_port: {d.main_process_port} is not a port; use 1024-65535 (29500 is usual)"
        )
    if d.num_machines >= 1 and d.num_processes >= 1 and d.num_processes % d.num_machines:
        p.append(
            f"distributed.num_processes: {d.num_processes} GPUs do not split evenly over {d.num_machines} machines; "
            "give every machine the same number of GPUs (num_processes counts all of them)"
        )
    if d.num_machines >= 1 and d.machine_rank >= d.num_machines:
        p.append(
            f"distributed.machine_rank: {d.machine_rank} with {d.num_machines} machine(s); number them 0 to "
            f"{d.num_machines - 1}"
        )
    if d.num_machines > 1 and not d.main_process_ip.strip():
        p.append("distributed.main_process_ip: empty; several machines need machine 0's address (e.g. 10.0.0.1)")
    if d.cpu_offload and d.strategy == "ddp":
        p.append("distributed.cpu_offload: DDP keeps a whole copy on every GPU; offload needs fsdp or deepspeed_zero3")


def _at_least(problems: list[str], key: str, value: Any) -> None:
    """`key: value must be >= MINIMUMS[key]` (`or null` for an optional count, where None is valid)."""
    if value is not None and value < MINIMUMS[key]:
        optional = key in ("data.max_samples", "train.max_steps", "train.eval_steps")
        problems.append(f"{key}: {value} must be >= {MINIMUMS[key]}" + (" or null" if optional else ""))


def _choice(problems: list[str], key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        near = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        problems.append(f"{key}: {value!r} is not one of {', '.join(allowed)}{hint}")


# ---- strict construction ------------------------------------------------------------------------------------
@functools.cache
def _hints_and_fields(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """Resolved type hints and fields of a config dataclass, once per class: `from __future__ import annotations`
    makes get_type_hints eval every annotation string on each call (~0.5 ms a class, 7 classes per from_dict, and
    the estimate builds ~5 configs per form change: 20 ms of a 25 ms estimate before this cache)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or '<top>'}: expected a mapping of keys, got {type(data).__name__}")
        return cls()
    hints, fields = _hints_and_fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{near[0]}'?" if near else f"; valid keys: {', '.join(fields)}"
            problems.append(f"{where}: unknown key{hint}")
            continue
        hint = hints[key]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, where + ".", problems)
        elif dataclasses.is_dataclass(item):  # data.sources: each entry built as strictly as a section
            kwargs[key] = _build_list(item, value, where, problems)
        else:
            ok, converted = _coerce(value, hint)
            if ok:
                kwargs[key] = converted
            else:
                problems.append(f"{where}: expected {_describe(hint)}, got {_show(value)}{_string_hint(value, hint)}")
    return cls(**kwargs)


def _build_list(cls: type, data: Any, where: str, problems: list[str]) -> list[Any]:
    """A list of config dataclasses (mappings, or instances as RunConfig.replace may pass), each checked strictly."""
    if not isinstance(data, list):
        problems.append(f"{where}: expected a list of mappings, got {_show(data)}")
        return []
    items = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for v in data]
    return [_build(cls, v, f"{where}[{k}].", problems) for k, v in enumerate(items)]


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in args:
            if arg is type(None):
                continue
            ok, converted = _coerce(value, arg)
            if ok:
                return True, converted
        return False, None
    if origin is Literal:
        return (value in args), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return (isinstance(value, int) and not isinstance(value, bool)), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list):
            return False, None
        items = [_coerce(v, args[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        if not isinstance(value, dict):
            return False, None
        items = {k: _coerce(v, args[1]) for k, v in value.items()}
        ok = all(isinstance(k, str) for k in value) and all(ok for ok, _ in items.values())
        return ok, {k: v for k, (_, v) in items.items()}
    return True, value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _string_hint(value: Any, hint: Any) -> str:
    if isinstance(value, str) and "number" in _describe(hint):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads 1e-4 as text: write it with a dot and a signed exponent, e.g. 1.0e-4)"
    return ""


# ---- YAML ---------------------------------------------------------------------------------------------------
def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error raises ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"file not found: {path}"], str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping at the top level, got {type(data).__name__}"], str(path))
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `override` wins, mappings are merged key by key.

    >>> deep_merge({"lora": {"rank": 8, "alpha": 16}}, {"lora": {"rank": 4}})
    {'lora': {'rank': 4, 'alpha': 16}}
    """
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("columns", "placeholders"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def field_doc(section: str | None, name: str) -> str:
    """The docstring written under a field, for UI info text and --help (empty when none)."""
    return FIELD_DOCS.get(f"{section}.{name}" if section else name, "")


def _collect_field_docs() -> dict[str, str]:
    import ast
    import inspect

    docs: dict[str, str] = {}
    sections = {
        "ModelConfig": "model",
        "QuantConfig": "quant",
        "LoraConfig": "lora",
        "FreezeConfig": "freeze",
        "DataConfig": "data",
        "DataSource": "data.sources",
        "TrainConfig": "train",
        "PreferenceConfig": "preference",
        "DistributedConfig": "distributed",
        "RunConfig": None,
    }
    tree = ast.parse(inspect.getsource(inspect.getmodule(RunConfig)))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in sections:
            body = node.body
            for stmt, nxt in zip(body, body[1:], strict=False):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                ):
                    prefix = sections[node.name]
                    key = f"{prefix}.{stmt.target.id}" if prefix else stmt.target.id
                    docs[key] = " ".join(str(nxt.value.value).split())
    return docs


FIELD_DOCS: dict[str, str] = _collect_field_docs()
