"""What this machine trains on: the CUDA GPU PyTorch sees (name, total memory), or the CPU and its RAM.

torch is imported inside the function only, so importing this module stays cheap (the UI imports it at start).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    """"cuda" or "cpu"."""
    name: str
    """GPU name (e.g. NVIDIA GeForce RTX 4090) or the CPU's description."""
    total_bytes: int
    """Total GPU memory as PyTorch reports it (a 24 GB card shows ~23.6 GiB), or total RAM for the CPU."""

    @property
    def total_gib(self) -> float:
        return self.total_bytes / (1 << 30)


def detect_device() -> DeviceInfo:
    """GPU 0 when PyTorch sees CUDA, else the CPU with the machine's RAM."""
    gpu = _cuda_device()
    return gpu if gpu is not None else cpu_device()


def _cuda_device() -> DeviceInfo | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
    except (RuntimeError, AssertionError):  # a broken driver or a CPU-only build: train on the CPU
        return None
    return DeviceInfo("cuda", props.name, int(props.total_memory))


def cpu_device() -> DeviceInfo:
    """The CPU, named by the platform, with total RAM from psutil."""
    import psutil

    name = platform.processor() or platform.machine() or "CPU"
    return DeviceInfo("cpu", f"{name} ({psutil.cpu_count(logical=True)} threads)", int(psutil.virtual_memory().total))
