"""Calibration of the estimator: how a training stack lays out memory, and the constants no config can tell.

`Stack` holds the knobs (fp32 norm inputs, adapter width, k-bit upcasts, loss buffers, master weights) and the
measured constants (CUDA context, allocator slack, the CPU heap's share, the process baseline). Its defaults
describe this app's trainer; tests/test_memory_calibration.py sets them to compare with 86 published measurements
of other stacks (LitGPT, DeepSpeed, plain PEFT scripts), and bench/memory_cpu.py checks the CPU figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.accel import CPU_CHUNK_TOKENS

GIB = 1 << 30


@dataclass(frozen=True)
class Stack:
    """How a training stack keeps tensors. The defaults describe this app's trainer (transformers Trainer + PEFT +
    bitsandbytes; bf16 autocast on CUDA, fp32 on CPU). The calibration test sets them to compare with other
    stacks (LitGPT, DeepSpeed, plain PEFT scripts); users never need to."""

    norm_fp32: bool = True
    """HF RMSNorm/LayerNorm keep an fp32 copy of their input for backward (LitGPT's bf16 norm keeps the input)."""
    autocast: bool | None = None
    """Mixed-precision autocast; None = on whenever the model runs in 16-bit."""
    adapter_bytes: int = 4
    """Width of LoRA weights: PEFT's autocast_adapter_dtype keeps them fp32 on a bf16 base (LitGPT bf16-true: 2)."""
    kbit_upcast: bool = True
    """prepare_model_for_kbit_training casts every non-quantized param (embeddings, lm_head, norms) to fp32."""
    kbit_saves_input: bool = False
    """bitsandbytes < 0.44 kept each 4-bit Linear's input for backward (MatMul4Bit saved A); 0.44+ does not."""
    quantize_head: bool = False
    """Quantize lm_head too (LitGPT's bnb plugin does; transformers keeps it 16-bit)."""
    quant_scheme: str = "bnb"
    """bnb (NF4/FP4 blocks of 64, LLM.int8) or gptq (int4, groups of 128 with fp16 scales and zeros)."""
    logits_bytes: float = 12.0
    """Bytes per batch x seq x vocab element at the loss peak. 12 = fp32 upcast, saved log-softmax, its gradient
    and the nll gradient (transformers). ~6 for a loss computed on bf16 logits or in chunks (LitGPT, Qwen-1)."""
    repeat_kv: bool = True
    """SDPA/eager with a padding mask repeat K/V to every query head (transformers' repeat_kv); FA2 does not."""
    fused_qkv_view: bool = False
    """LitGPT: v is a view of the fused qkv output, so the whole q+k+v tensor stays alive for backward."""
    master_weights: bool = False
    """fp32 master copy and fp32 gradients of the trainable params (DeepSpeed ZeRO-2 bf16, or AMP on a 16-bit
    model)."""
    state_bytes: float | None = None
    """Force the bytes per param of torch AdamW's two states (None: 2 x the trainable param width)."""
    extra_bytes: int = 0
    """Fixed framework buffers (e.g. DeepSpeed ZeRO-2 gradient buckets)."""
    extra_trainable: int = 0
    """Params of trainable full copies in the model width (PEFT modules_to_save, e.g. embeddings + lm_head)."""
    cuda_context: int = int(0.6 * GIB)
    """CUDA context + cuBLAS/bitsandbytes kernels: ~0.3-0.7 GB with lazy loading (CUDA 12), ~1-1.3 GB on old
    stacks."""
    allocator_share: float = 0.07
    """CUDA: reserved-but-free share of the step's transient memory in the caching allocator (typically 5-15%)."""
    cpu_allocator_share: float = 0.40
    """CPU: share of the step's transient memory that glibc's heap keeps resident beyond what torch holds (freed
    chunks under its dynamic mmap threshold, up to 32 MiB, stay in the heap and fragment it). Measured with this
    app's trainer on the default model (bench/memory_cpu.py, BENCHMARKS.md): peak RSS with glibc's default heap
    minus peak RSS with MALLOC_MMAP_THRESHOLD_=131072 (tensors then unmapped on free) is 0.28-0.30 of the
    transient without checkpointing (batch 1-4, 1 or 2 threads; ~0.25 at batch 8) and 0.47-0.68 with it (1 / 2
    threads): the retained heap follows the tokens per micro-batch more than the transient size. 0.40 has the
    smallest worst error over those runs: -12% (checkpointing, 2 threads) to +11% (batch 8)."""
    cpu_chunk_tokens: int = CPU_CHUNK_TOKENS
    """CPU: a supervised micro-batch trains in chunks of rows of at most this many padded tokens, one chunk's
    activations at a time (this app's trainer: app.accel.CPU_CHUNK_TOKENS); 0 for a stack that runs the whole batch
    at once (a plain Trainer script)."""
    process_baseline: int = int(0.45 * GIB)
    """CPU: RSS of Python + torch + transformers + peft before the model loads: 0.38 GiB for those imports alone,
    0.46 GiB once app.train (Trainer, accelerate) is imported; the UI process adds gradio."""
