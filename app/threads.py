"""The compute threads a run trains with: one CPU thread per physical core left free now, TF32 matmuls on CUDA.

Torch-free at import (`configure_threads` imports torch when a run sets it up), so the estimate and the CLI's
--help stay fast.
"""

from __future__ import annotations

import os
import time
from typing import Any

from app import devices


def cpu_threads(local_world: int = 1) -> int:
    """Intra-op threads for training on the CPU: one per physical core (hyper-threads share the same FP units),
    split among local processes, and fewer when other programs keep the cores busy right now: OpenMP threads wait
    for each other at every op, so on an oversubscribed CPU each extra thread costs more than it brings
    (measured here at load 9 on 2 cores: tiny-model steps 5x slower with 2 threads than with 1)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    share = max(1, cores // max(1, local_world))
    spare = (os.cpu_count() or cores) - busy_cpus()
    return max(1, min(share, round(spare)))


def busy_cpus(interval_s: float = 0.3) -> float:
    """CPUs that other programs keep busy now: all CPUs' busy time over `interval_s`, less this process's own.

    Sampled rather than read from the 1-minute load average, which still says "busy" for a minute after the
    previous job ends (it decays with a 60 s time constant) and then starved the next run at 1 thread."""
    import psutil

    me = psutil.Process()
    all0, own0, t0 = psutil.cpu_times(), me.cpu_times(), time.perf_counter()
    time.sleep(interval_s)
    all1, own1, wall = psutil.cpu_times(), me.cpu_times(), time.perf_counter() - t0
    busy = _busy_seconds(all1) - _busy_seconds(all0)
    total = _total_seconds(all1) - _total_seconds(all0)
    if total <= 0:
        return 0.0
    cpus = psutil.cpu_count() or 1
    others = busy / total * cpus - ((own1.user + own1.system) - (own0.user + own0.system)) / wall
    return min(float(cpus), max(0.0, others))


def _total_seconds(t: Any) -> float:
    # guest time is already counted in user time on Linux (psutil docs)
    return sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _busy_seconds(t: Any) -> float:
    # steal counts as busy: on a shared VM it is time another guest had our core
    return _total_seconds(t) - t.idle - getattr(t, "iowait", 0.0)


def configure_threads(device: str, local_world: int = 1) -> int:
    """Set torch's CPU threads (unless OMP_NUM_THREADS says otherwise) or enable TF32 on CUDA; returns threads."""
    import torch

    kind = devices.kind(device)
    if kind == devices.CPU and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads(local_world))
    elif kind == devices.CUDA:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores: ~8x faster, 10-bit mantissa
        torch.backends.cudnn.allow_tf32 = True
    return torch.get_num_threads()
