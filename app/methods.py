"""The table of fine-tuning methods: what each trains, how its base loads, what it saves, how memory counts it.

Every module that behaves differently per method reads its entry here instead of comparing `cfg.method` with a
string: config validation (quant.bits), loading (quantized or not, fp32 master weights), preparing the model
(LoRA / freeze / all weights, k-bit preparation), saving (adapter/ or model/), the memory estimate (which tensors
train, the quantized weight width, the fp32 upcast) and the Model tab (which settings show). A new method is a new
entry, plus its branch in the few places that build it (modeling.prepare_for_method, memory.trainable_tensors).

    >>> get("qlora").quantized, get("qlora").saves, get("freeze").trains
    (True, 'adapter', 'last_layers')

No torch, no app imports: config.py reads this table too.
"""

from __future__ import annotations

from dataclasses import dataclass

ADAPTERS, LAST_LAYERS, ALL = "adapters", "last_layers", "all"


@dataclass(frozen=True)
class Variant:
    """A switch on an adapter method (a LoraConfig flag), not a method of its own."""

    flag: str
    """The RunConfig path that turns it on."""
    what: str
    memory: str
    """How the estimate counts it."""


@dataclass(frozen=True)
class LrRange:
    """Usual learning rates of a method: adapters start at zero and need ~10x the step size of base weights that
    already work (app.learn_checks warns 10x beyond the edges)."""

    low: float
    high: float
    usual: float


ADAPTER_LR = LrRange(1e-5, 1e-3, 2e-4)
BASE_LR = LrRange(1e-6, 1e-4, 2e-5)


@dataclass(frozen=True)
class Method:
    name: str
    trains: str
    """adapters (LoRA A/B on lora.target_modules), last_layers (the last freeze.trainable_layers decoder layers,
    norms too with freeze.train_norms) or all (every weight, embeddings and lm_head included)."""
    quantized: bool
    """The base loads in quant.bits (4: NF4/FP4, 8: LLM.int8) through bitsandbytes; validate() asks for 4 or 8.
    False: the base loads in the training precision and quant.bits must be null (a quantized weight cannot be
    trained) or is ignored (lora)."""
    kbit_prep: bool
    """peft.prepare_model_for_kbit_training runs first: every non-quantized param (embeddings, lm_head, norms) is
    upcast to fp32, which the estimate counts as 4 B/param."""
    saves: str
    """The run folder's artifact: "adapter" (adapter_config.json + adapter_model.safetensors, runs.ADAPTER) or
    "model" (all weights, runs.MODEL)."""
    speed: float
    """Relative step speed (LoRA = 1.0), rough, for the comparison table."""
    note: str
    """One line on quality, for the comparison table."""
    variants: tuple[Variant, ...] = ()
    lr: LrRange = BASE_LR
    """Usual learning rates for this method's trainable weights."""

    @property
    def adapter(self) -> bool:
        """Trains LoRA adapters (PEFT) on a frozen base: the estimate counts adapter width, LoRA inputs and dropout
        masks; training weights keep their own dtype (fp32 adapters on an fp16 base)."""
        return self.trains == ADAPTERS

    @property
    def trains_base(self) -> bool:
        """Trains base weights (full, freeze): fp16 precision keeps fp32 master weights (AMP cannot step fp16)."""
        return self.trains != ADAPTERS

    @property
    def trains_all(self) -> bool:
        """Every weight trains: the embedding's optimizer states, the lm_head input and the norm inputs count."""
        return self.trains == ALL


LORA_VARIANTS = (
    Variant(
        "lora.use_dora",
        "DoRA: a magnitude per output channel of each adapted layer as well",
        "+1 trainable vector per target; keeps the base and LoRA outputs and one fp32 weight for the norm",
    ),
    Variant("lora.use_rslora", "rsLoRA: scale by alpha/sqrt(r) instead of alpha/r", "no change"),
)

TABLE: dict[str, Method] = {
    "full": Method(
        "full", ALL, False, False, "model", 0.7, "best fit to the data; most memory; can forget general skills"
    ),
    "freeze": Method(
        "freeze", LAST_LAYERS, False, False, "model", 1.4, "trains only the last layers: fast, weaker on new formats"
    ),
    "lora": Method(
        "lora",
        ADAPTERS,
        False,
        False,
        "adapter",
        1.0,
        "close to full fine-tuning on instruction data; small adapter files",
        LORA_VARIANTS,
        ADAPTER_LR,
    ),
    "qlora": Method(
        "qlora",
        ADAPTERS,
        True,
        True,
        "adapter",
        0.7,
        "LoRA on a 4-bit base: ~1/3 the weight memory, slightly lower quality, slower steps",
        LORA_VARIANTS,
        ADAPTER_LR,
    ),
}
NAMES: tuple[str, ...] = tuple(TABLE)


def get(name: str) -> Method:
    """The entry for `name`; ValueError naming the methods there are."""
    try:
        return TABLE[name]
    except KeyError:
        raise ValueError(f"method {name!r}: use one of {', '.join(NAMES)}") from None


def of(cfg: object) -> Method:
    """The entry for a RunConfig's method."""
    return get(cfg.method)  # type: ignore[attr-defined]


def problems(method: str, bits: int | None) -> list[str]:
    """What the quant.bits setting gets wrong for `method` (validate() adds these to its list)."""
    if method not in TABLE:
        return []  # the unknown name itself is reported by validate()'s choice check
    m = TABLE[method]
    if m.quantized and bits not in (4, 8):
        return [f"quant.bits: method {method} needs quantized base weights; set quant.bits to 4 or 8"]
    if m.trains_base and bits is not None:
        return [f"quant.bits: {method} fine-tuning cannot train quantized weights; set quant.bits to null"]
    return []
