"""Peak memory of a training run, before it starts: (architecture, RunConfig) -> MemoryEstimate with a breakdown.

Pure and fast (no torch import, well under 50 ms a call). Every term is a count of tensors the training step
really keeps, written from the shapes in config.json, not a fitted curve:

* weights: 2 B/param in bf16 (4 B on a CPU, where training runs fp32); LLM.int8 1 B per decoder Linear param;
  NF4/FP4 0.5 B + block scales (0.5 bit/param, 0.127 bit with double quantization) for decoder Linear layers only.
  Embeddings, lm_head, norms and biases stay 16-bit, or fp32 where `prepare_model_for_kbit_training` upcasts them
  (QLoRA).
* trainable params (LoRA A/B from the real Linear shapes, DoRA magnitudes, the last N layers, or all), their
  gradients, and optimizer states (AdamW: 2 states in the param dtype; bnb 8-bit: ~2 B/param; 32-bit: 8 B/param).
* activations autograd keeps per token per decoder layer: fp32 norm inputs, q/k/v/out for SDPA (plus the
  heads x seq probabilities for eager attention), gate/up/act for the MLP, LoRA inputs and dropout masks, the
  inputs of trainable Linear layers. With gradient checkpointing only each layer's input is kept, plus one layer
  recomputed during backward. On the CPU the supervised trainer runs a micro-batch in chunks of rows of at most
  Stack.cpu_chunk_tokens tokens (app.accel.row_splits), so activations, logits and backward buffers are one
  chunk's: batch 4 x 512 tokens holds one row's at a time (counted as one row of up to 512 tokens).
* logits and loss: batch x seq x vocab, upcast to fp32 for the loss: 12 B per logit at the loss peak
  (saved log-softmax, its gradient and the nll gradient). Often the largest term for a small model with a big vocab.
* CUDA context and allocator cache (on CPU, the baseline RSS of Python + torch + libraries, and glibc's retained
  heap instead).
* preference objectives (RunConfig.objective): pairwise losses (dpo, orpo, simpo) run the chosen and the rejected
  answer of each example as one batch of 2 x batch_size sequences (TRL's concatenated forward), so activations,
  logits and backward buffers are those of 2 x batch: "chosen + rejected" is what the second sequence adds. DPO and
  KTO compare with a reference model: "reference model" is its forward's logits (no gradients, so no activations
  are kept) and, for full/freeze or preference.reference copy, a second frozen copy of the weights; with
  preference.reference precompute the reference's log-probs are computed once before training and neither is held.

The constants that no config can tell (CUDA context, allocator slack) were checked against 86 published
measurements in tests/test_memory_calibration.py (median error 7%) and, on CPU, against real runs in
bench/memory_cpu.py; the `Stack` knobs describe how other training code lays out memory, so the same formulas
can be compared with measurements from LitGPT, DeepSpeed or plain PEFT scripts.

Its neighbours: app.architecture reads the model (config.json, catalog, GGUF -> Architecture), app.calibration holds
the Stack knobs and measured constants, and app.estimate turns an estimate into a verdict, fixes and the method
comparison.

The trainer computes logits only at label positions; the estimate keeps full batch x seq x vocab logits (an upper
bound: the peak micro-batch may be all response tokens, e.g. with data.train_on_prompt). TRL's DPO and KTO
trainers compute log-probs through a tiled LM head, so the same logits terms are an upper bound there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from app import devices, methods, objective_table
from app.architecture import (  # noqa: F401  (architecture_from, EstimateError: what callers of the estimate use)
    Architecture,
    EstimateError,
    Linear,
    architecture_from,
    architecture_from_config,
)
from app.calibration import GIB, Stack
from app.config import RunConfig

BREAKDOWN_KEYS: tuple[str, ...] = (
    "weights",
    "adapter",
    "gradients",
    "optimizer",
    "reference",
    "activations",
    "logits",
    "pairs",
    "workspace",
    "allocator",
    "runtime",
)
LABELS: dict[str, str] = {
    "weights": "model weights",
    "adapter": "LoRA adapter",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "reference": "reference model",  # DPO/KTO: a frozen copy when one is held, and its forward's logits
    "activations": "activations",
    "logits": "logits + loss",
    "pairs": "chosen + rejected (2nd sequence)",  # what the rejected answers add in a pairwise objective
    "workspace": "backward / step buffers",
    "allocator": "allocator cache",
    "runtime": "CUDA context",  # on a CPU the process baseline: the Model tab's chart leaves it out there
}
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit states for tensors with fewer elements (min_8bit_size)


@dataclass(frozen=True)
class _Plan:
    """Widths and switches resolved from the config and device."""

    device: str
    w: int  # bytes per 16/32-bit weight element (2 or 4)
    act: int  # bytes per activation element
    mask: int  # bytes per dropout mask element (bool on CUDA, float on CPU)
    autocast: bool
    quant_bits: int | None
    double_quant: bool
    kbit_upcast: bool
    trainable_bytes: int  # width of a trainable param
    seq: int
    batch: int
    stack: Stack


def _plan(cfg: RunConfig, device: str, stack: Stack) -> _Plan:
    t = cfg.train
    fp32 = t.precision == "fp32" or (t.precision == "auto" and device == "cpu")
    w = 4 if fp32 else 2
    autocast = (not fp32) if stack.autocast is None else stack.autocast
    method = methods.of(cfg)
    bits = cfg.quant.bits if method.quantized else None  # the trainer loads a k-bit base for these methods only
    at_once = _tokens_at_once(cfg, device, stack)
    return _Plan(
        device=device,
        w=w,
        act=w,
        mask=1 if device != "cpu" else w,
        autocast=autocast,
        quant_bits=bits,
        double_quant=cfg.quant.double_quant,
        kbit_upcast=bits is not None and method.kbit_prep and stack.kbit_upcast,
        trainable_bytes=(stack.adapter_bytes if w == 2 else 4) if method.adapter else w,
        seq=at_once[1],
        batch=at_once[0],
        stack=stack,
    )


def _tokens_at_once(cfg: RunConfig, device: str, stack: Stack) -> tuple[int, int]:
    """(rows, tokens per row) of the largest forward: the micro-batch, batch_size x max_seq_len; on the CPU the
    supervised trainer runs it in chunks of rows (app.accel.row_splits) that hold at most
    Stack.cpu_chunk_tokens tokens, or one row when a row is longer: counted as one row of that many tokens (any
    batch of the run, not only the widest, can fill a chunk). TRL's preference trainers run the whole batch."""
    rows, seq, budget = cfg.train.batch_size, cfg.data.max_seq_len, stack.cpu_chunk_tokens
    if device != "cpu" or budget <= 0 or objective_table.of(cfg).preference or rows * seq <= max(budget, seq):
        return rows, seq
    return 1, max(seq, budget)


# ---- trainable parameters ------------------------------------------------------------------------------------
def lora_targets(arch: Architecture, targets: list[str] | str) -> list[Linear]:
    """The block Linear layers PEFT adapts: a list of leaf names, or every block Linear for "all-linear"."""
    if isinstance(targets, str):
        return list(arch.linears) if targets == "all-linear" else [x for x in arch.linears if x.name == targets]
    return [lin for lin in arch.linears if lin.name in set(targets)]


def trainable_tensors(arch: Architecture, cfg: RunConfig) -> list[int]:
    """Element counts of every trainable tensor, as PEFT / freeze_all_but_last / full training create them."""
    trains = methods.of(cfg).trains
    if trains == methods.ADAPTERS:
        return _lora_tensors(arch, cfg)
    if trains == methods.LAST_LAYERS:
        return _freeze_tensors(arch, cfg.freeze.trainable_layers, cfg.freeze.train_norms)
    return _all_tensors(arch)


def _lora_tensors(arch: Architecture, cfg: RunConfig) -> list[int]:
    lo = cfg.lora
    mods = lora_targets(arch, lo.target_modules)
    head = isinstance(lo.target_modules, list) and "lm_head" in lo.target_modules
    if not mods and not head:
        wanted = lo.target_modules if isinstance(lo.target_modules, str) else ", ".join(lo.target_modules)
        raise EstimateError(
            f"lora.target_modules: none of [{wanted}] is a Linear layer of {arch.name or arch.model_type}; "
            f"its Linear layers are {', '.join(arch.linear_names())} (or use all-linear)"
        )
    one_block = [lin for lin in mods]
    if head:
        one_block = one_block + [Linear("lm_head", arch.hidden, arch.vocab)]
    tensors: list[int] = []
    for index, lin in enumerate(one_block):
        times = 1 if lin.name == "lm_head" and index >= len(mods) else arch.layers
        sizes = [lo.rank * lin.in_features, lin.out_features * lo.rank] + ([lin.out_features] if lo.use_dora else [])
        tensors += sizes * times
    return tensors


def _block_tensors(arch: Architecture) -> list[int]:
    sizes = []
    for lin in arch.linears:
        sizes += [lin.weight_params] + ([lin.out_features] if lin.bias else [])
    return sizes + list(arch.block_norms)


def _freeze_tensors(arch: Architecture, layers: int, train_norms: bool) -> list[int]:
    if layers > arch.layers:
        raise EstimateError(
            f"freeze.trainable_layers is {layers} but {arch.name or 'the model'} has only {arch.layers} decoder "
            f"layers; use at most {arch.layers} (or method full)"
        )
    sizes = _block_tensors(arch) * layers
    if train_norms:
        sizes += list(arch.block_norms) * (arch.layers - layers) + [n for kind, n in arch.outer if kind == "norm"]
    return sizes


def _all_tensors(arch: Architecture) -> list[int]:
    head = [] if arch.tied else [arch.head_params]
    return [arch.embed_params, *head, *(_block_tensors(arch) * arch.layers), *(n for _, n in arch.outer)]


# ---- the terms -----------------------------------------------------------------------------------------------
def weight_bytes(arch: Architecture, p: _Plan) -> float:
    """Base weights: 16/32-bit, or decoder Linear weights in 8/4 bits with the rest 16-bit (fp32 after k-bit prep)."""
    total = arch.total_params
    if p.quant_bits is None:
        return total * p.w
    quantized = arch.linear_weight_params + (arch.head_params if p.stack.quantize_head else 0)
    rest = total - quantized
    return quantized * _quant_bytes_per_param(p, arch) + rest * (4 if p.kbit_upcast else p.w)


def _quant_bytes_per_param(p: _Plan, arch: Architecture) -> float:
    if p.quant_bits == 8:
        return 1.0 + 4.0 / arch.hidden  # int8 + one fp32 scale per output row
    if p.stack.quant_scheme == "gptq":
        return 0.5 + (2 + 0.5) / 128  # int4 + fp16 scale and 4-bit zero per group of 128 inputs
    # NF4/FP4: 4 bits + one fp32 absmax per 64 weights (0.5 bit), or 8-bit absmax + fp32 per 256 blocks (0.127 bit)
    return 0.5 + (0.127 if p.double_quant else 0.5) / 8


def optimizer_bytes(tensors: list[int], optimizer: str, p: _Plan, embedding: int = 0) -> float:
    """AdamW keeps two states per param: torch in the param dtype, bnb 8-bit ~2 B (32-bit below 4096 elements, and
    for the embedding, which the transformers Trainer registers for 32-bit states), bnb 32-bit 8 B.

    `embedding` is the element count of a trainable embedding matrix among `tensors` (0 when frozen).
    """
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        # 2 x 1 B + an fp32 absmax per 2048-element block for each state
        eight = sum(n * (2 + 8 / 2048) if n >= BNB_MIN_8BIT_SIZE else n * 8 for n in tensors)
        return eight + embedding * (8 - 2 - 8 / 2048)
    if optimizer == "paged_adamw_32bit":
        return sum(tensors) * 8.0
    per = p.stack.state_bytes if p.stack.state_bytes is not None else 2 * p.trainable_bytes
    return sum(tensors) * per


def _layer_bytes(arch: Architecture, cfg: RunConfig, p: _Plan, trainable: bool, adapted: bool) -> float:
    """Bytes autograd keeps per token for one decoder block that is part of the backward graph."""
    a, h, i = p.act, arch.hidden, arch.intermediate
    norm = 4 if (p.stack.norm_fp32 or p.autocast) else a  # fp32 copy of the norm input (bf16 input for LitGPT)
    total = arch.norms_per_block * h * norm + (arch.attn_dim + arch.kv_dim) * norm * arch.qk_norm
    total += _attention_bytes(arch, cfg, p) + (3 if arch.gated_mlp else 1) * i * a
    keeps_input = p.quant_bits == 8 or (p.quant_bits == 4 and p.stack.kbit_saves_input)
    if trainable or keeps_input:  # weight grads (and LLM.int8's backward, old 4-bit bnb) need the layer inputs
        total += _distinct_inputs(arch) * a
    if trainable and methods.of(cfg).trains_all and a < 4:  # trainable norm weight: the 16-bit normed input as well
        total += arch.norms_per_block * h * a
    if adapted:
        total += _lora_layer_bytes(arch, cfg, p)
    return total


def _distinct_inputs(arch: Architecture) -> int:
    """Elements of the distinct Linear inputs in a block (q/k/v share one, gate/up share one)."""
    seen: dict[tuple[str, int], int] = {}
    for lin in arch.linears:
        group = "attn_in" if lin.name in ("q_proj", "k_proj", "v_proj", "query_key_value", "c_attn") else lin.name
        group = "mlp_in" if lin.name in ("gate_proj", "up_proj", "w1", "w2") else group
        seen[(group, lin.in_features)] = lin.in_features
    return sum(seen.values())


def _attention_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> float:
    impl = cfg.model.attn_implementation
    a = p.act
    kv = arch.attn_dim if (p.stack.repeat_kv and impl != "flash_attention_2") else arch.kv_dim
    mha = arch.kv_heads == arch.heads  # with GQA LitGPT copies q/k/v out of the fused output; with MHA v is a view
    fused = (arch.attn_dim + arch.kv_dim) * a if p.stack.fused_qkv_view and mha else 0
    if impl == "eager":  # q, k^T and v for the matmuls, fp32 softmax probs (+ their 16-bit copy), heads x seq each
        probs = arch.heads * p.seq * (4 + (a if a < 4 else 0))
        return (arch.attn_dim + 2 * kv) * a + probs + fused
    return (2 * arch.attn_dim + 2 * kv) * a + 4 * arch.heads + fused  # q, k, v, out + fp32 logsumexp


def _lora_layer_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> float:
    """LoRA keeps the input of each lora_A (16-bit under autocast, fp32 otherwise) and the dropout mask; DoRA also
    keeps the base output and the LoRA output for the magnitude gradient."""
    lo = cfg.lora
    width = p.act if p.autocast else p.trainable_bytes
    total = 0.0
    for lin in lora_targets(arch, lo.target_modules):
        total += lin.in_features * (width + (p.mask if lo.dropout > 0 else 0))
        if lo.use_dora:
            total += lin.out_features * (p.act + width)
    return total


def _graph_layers(arch: Architecture, cfg: RunConfig) -> tuple[int, int]:
    """(layers in the backward graph, of which have trainable weights)."""
    trains = methods.of(cfg).trains
    if trains == methods.ALL:
        return arch.layers, arch.layers
    if trains == methods.LAST_LAYERS:
        n = min(cfg.freeze.trainable_layers, arch.layers)
        return (arch.layers if cfg.freeze.train_norms else n), n
    return arch.layers, 0


def activation_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> tuple[float, float]:
    """(activations kept for backward, backward working set) for one micro-batch, in bytes.

    The working set is what backward adds while it runs: the gradients of one MLP, and under gradient checkpointing
    the recomputed activations of one layer. It is added on top of the logits buffers: the caching allocator cannot
    always reuse the freed logits blocks for it, and a sum errs on the safe side (calibration: median error 7.6%
    summed vs 9.4% with max(), which under-predicts checkpointed long-sequence runs by 15%).
    """
    tokens = p.batch * p.seq
    graph, trainable = _graph_layers(arch, cfg)
    adapted = methods.of(cfg).adapter
    full_layer = _layer_bytes(arch, cfg, p, trainable > 0, adapted)
    frozen_layer = _layer_bytes(arch, cfg, p, False, adapted)
    working = (3 * arch.intermediate + 4 * arch.hidden) * p.act  # grads of one MLP and the residual in backward
    if cfg.train.gradient_checkpointing:  # keep each layer's input; recompute one layer at a time in backward
        kept = graph * arch.hidden * p.act
        working += full_layer
    else:
        kept = trainable * full_layer + (graph - trainable) * frozen_layer
    kept += arch.hidden * (4 if p.stack.norm_fp32 or p.autocast else p.act)  # final norm
    if methods.of(cfg).trains_all:
        kept += arch.hidden * p.act  # trainable lm_head keeps its input
    return kept * tokens, working * tokens


def reference_bytes(arch: Architecture, cfg: RunConfig, p: _Plan, share: float) -> float:
    """The reference model's memory: a frozen copy of the base weights when one is held (as loaded, without the
    k-bit preparation's fp32 upcast), and its forward's logits for every sequence of the micro-batch, with the
    allocator cache their blocks leave. The forward runs under no_grad, so it keeps no activations; its logits
    (model width, plus the fp32 upcast on a 16-bit model and the fp32 log-softmax) are alive while the policy's
    activations wait for backward."""
    policy = objective_table.reference_of(cfg)
    if policy in (objective_table.NO_REFERENCE, objective_table.PRECOMPUTE):
        return 0.0
    copy = weight_bytes(arch, replace(p, kbit_upcast=False)) if policy == objective_table.COPY else 0.0
    per = p.act + 4 + (4 if p.act < 4 else 0)  # e.g. bf16 2 B + fp32 upcast 4 B + fp32 log-softmax 4 B
    logits = p.batch * objective_table.sequences_per_example(cfg) * p.seq * arch.vocab * per
    return copy + logits * (1 + share)


def logits_bytes(arch: Architecture, p: _Plan) -> float:
    """batch x seq x vocab logits at the loss: bf16 logits, fp32 upcast, log-softmax and its grads ~12 B each."""
    per = p.stack.logits_bytes + (2 * p.act if arch.logit_softcap else 0)  # tanh soft-capping copies
    return p.batch * p.seq * arch.vocab * per


def _dequant_bytes(arch: Architecture, cfg: RunConfig, p: _Plan) -> float:
    """Largest weight materialised at once: a dequantized k-bit Linear, or DoRA's fp32 weight for its norm."""
    largest = max(lin.weight_params for lin in arch.linears)
    out = largest * p.act if p.quant_bits else 0.0
    if methods.of(cfg).adapter and cfg.lora.use_dora:
        out += largest * 4
    return out


def _step_bytes(tensors: list[int], cfg: RunConfig, p: _Plan) -> float:
    """torch AdamW's foreach step makes one temporary the size of all trainable params (sqrt of exp_avg_sq)."""
    if cfg.train.optimizer != "adamw_torch" or p.device == "cpu":
        return max(tensors, default=0) * 4.0
    return sum(tensors) * p.trainable_bytes


# ---- the estimate --------------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    total_bytes: int
    breakdown: dict[str, int]
    """Bytes per part, in BREAKDOWN_KEYS order (LABELS has a human label for each)."""
    trainable_params: int
    total_params: int
    device: str
    device_memory_bytes: int | None = None
    fits: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def allocated_bytes(self) -> int:
        """What torch.cuda.max_memory_allocated would report: the total less allocator cache and runtime."""
        return self.total_bytes - self.breakdown["allocator"] - self.breakdown["runtime"]

    @property
    def reserved_bytes(self) -> int:
        """What torch.cuda.max_memory_reserved would report: allocated + the allocator cache."""
        return self.total_bytes - self.breakdown["runtime"]

    def to_json(self) -> dict[str, Any]:
        return {
            "total_gib": round(self.total_gib, 3),
            "breakdown_gib": {k: round(v / GIB, 3) for k, v in self.breakdown.items()},
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "device": self.device,
            "device_memory_gib": None
            if self.device_memory_bytes is None
            else round(self.device_memory_bytes / GIB, 3),
            "fits": self.fits,
        }

    to_dict = to_json


def estimate(
    arch: Architecture,
    cfg: RunConfig,
    device: str = "cuda",
    device_memory_bytes: int | None = None,
    stack: Stack | None = None,
) -> MemoryEstimate:
    """Peak memory of training `cfg` on `arch` on a CUDA GPU ("cuda") or in RAM ("cpu"), with a breakdown.

    `fits` is None without a capacity. `stack` describes another training stack (see Stack); leave it None for
    this app's trainer.
    """
    try:
        device = devices.kind(device)  # cuda:1 trains like cuda; auto is this machine's device
    except devices.DeviceError as exc:
        raise EstimateError(str(exc)) from None
    p = _plan(cfg, device, stack or Stack())
    tensors = trainable_tensors(arch, cfg)
    trainable = sum(tensors) + p.stack.extra_trainable
    share = p.stack.allocator_share if device == "cuda" else p.stack.cpu_allocator_share
    parts = {**_static_parts(arch, cfg, p, tensors), **_dynamic_parts(arch, cfg, p, tensors, share)}
    pairs = objective_table.sequences_per_example(cfg)
    if pairs > 1:  # the same step for pairs x batch sequences: what the rejected answers add
        both = _dynamic_parts(arch, cfg, replace(p, batch=p.batch * pairs), tensors, share)
        parts["pairs"] = sum(both.values()) - sum(parts[k] for k in both)
    parts["reference"] = reference_bytes(arch, cfg, p, share)
    parts["runtime"] = p.stack.cuda_context if device == "cuda" else p.stack.process_baseline
    breakdown = {k: int(round(parts.get(k, 0.0))) for k in BREAKDOWN_KEYS}
    total = sum(breakdown.values())
    fits = None if device_memory_bytes is None else total <= device_memory_bytes
    return MemoryEstimate(total, breakdown, trainable, arch.total_params, device, device_memory_bytes, fits)


def _dynamic_parts(arch: Architecture, cfg: RunConfig, p: _Plan, tensors: list[int], share: float) -> dict[str, float]:
    """Activations, logits, backward / step buffers and the allocator cache of one micro-batch of p.batch rows."""
    acts, working = activation_bytes(arch, cfg, p)
    logits = logits_bytes(arch, p)
    backward = logits + working + _dequant_bytes(arch, cfg, p)
    dynamic = max(acts + backward, _step_bytes(tensors, cfg, p))
    return {"activations": acts, "logits": logits, "workspace": dynamic - acts - logits, "allocator": share * dynamic}


def _static_parts(arch: Architecture, cfg: RunConfig, p: _Plan, tensors: list[int]) -> dict[str, float]:
    trainable = sum(tensors)
    method = methods.of(cfg)
    grads = trainable * (p.trainable_bytes + (4 if p.stack.master_weights else 0))
    embedding = arch.embed_params if method.trains_all else 0
    optim = optimizer_bytes(tensors, cfg.train.optimizer, p, embedding)
    optim += trainable * 4 if p.stack.master_weights else 0
    copies = p.stack.extra_trainable  # modules_to_save: copy, grad and torch AdamW states in the model width
    return {
        "weights": weight_bytes(arch, p),
        "adapter": (trainable * p.trainable_bytes if method.adapter else 0) + copies * p.w,
        "gradients": grads + copies * p.w,
        "optimizer": optim + p.stack.extra_bytes + copies * 2 * p.w,
    }


def estimate_config(cfg: RunConfig, device: str | None = None, device_memory_bytes: int | None = None):
    """estimate() for a RunConfig alone: the architecture from cfg.model.name_or_path, the device from
    cfg.train.device (devices.kind: auto is this machine's GPU, else its CPU)."""
    arch = architecture_from(cfg.model.name_or_path)
    return estimate(arch, cfg, device or devices.kind(cfg.train.device), device_memory_bytes)


def sharding_terms(arch: Architecture, cfg: RunConfig, device: str = "cuda", stack: Stack | None = None):
    """The terms a sharded run (FSDP, DeepSpeed ZeRO: app.parallel) splits or gathers, from the same formulas as
    estimate(), in bytes or elements: {"layer": one decoder block's base weights, "outer": the embeddings, lm_head
    and final norms, "scales": the k-bit blocks' quantization scales (bitsandbytes keeps them beside the module,
    outside the sharded flat parameter), "layer_trainable": trainable elements of one block that trains,
    "outer_trainable": trainable elements outside the blocks, "backward": logits + backward working set of one
    micro-batch, "step": the optimizer step's temporary}. layers x layer + outer == the estimate's base weights."""
    p = _plan(cfg, devices.kind(device), stack or Stack())
    block_linear = sum(lin.weight_params for lin in arch.linears)
    if p.quant_bits is None:
        layer, scales = arch.block_params * p.w, 0.0
    else:
        per = _quant_bytes_per_param(p, arch)
        layer = block_linear * per + (arch.block_params - block_linear) * (4 if p.kbit_upcast else p.w)
        scales = arch.linear_weight_params * (per - (1.0 if p.quant_bits == 8 else 0.5))
    tensors = trainable_tensors(arch, cfg)
    trains = methods.of(cfg).trains
    if trains == methods.ADAPTERS:
        inside = _block_targets(cfg)
        per_layer = sum(_lora_tensors(arch, cfg.replace(**{"lora.target_modules": inside}))) if inside else 0
        per_layer //= arch.layers
        blocks = arch.layers if per_layer else 0
    else:
        per_layer = sum(_block_tensors(arch))
        blocks = min(cfg.freeze.trainable_layers, arch.layers) if trains == methods.LAST_LAYERS else arch.layers
    acts, working = activation_bytes(arch, cfg, p)
    return {
        "layer": layer,
        "outer": weight_bytes(arch, p) - arch.layers * layer,
        "scales": scales,
        "layer_trainable": float(per_layer),
        "outer_trainable": float(max(0, sum(tensors) - blocks * per_layer)),
        "backward": logits_bytes(arch, p) + working + _dequant_bytes(arch, cfg, p),
        "step": _step_bytes(tensors, cfg, p),
    }


def _block_targets(cfg: RunConfig) -> list[str] | str:
    """cfg's LoRA targets without lm_head (an adapter on lm_head sits outside the blocks); [] when none is left."""
    targets = cfg.lora.target_modules
    return targets if isinstance(targets, str) else [t for t in targets if t != "lm_head"]
