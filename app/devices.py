"""Devices: what "auto" means, what this machine trains on (and its memory), and which run holds which device.

One meaning of a device name, for training, chat, evaluate, export and the estimate alike:

* ``auto``: ``cuda`` when PyTorch sees a CUDA GPU, else ``cpu``;
* ``cpu``, ``cuda`` (GPU 0) and ``cuda:N`` as PyTorch spells them.

torch is imported inside functions only, so importing this module stays cheap (the UI imports it at start, and the
estimate works without torch installed: "auto" is then the CPU).

Who holds a device is a small registry: the job manager claims a device for each training run, and chat, evaluate,
export, the pickers and the Model tab ask `holder(device)` before they load a model on it.

    >>> resolve("cpu")
    'cpu'
    >>> kind("cuda:1")
    'cuda'
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

AUTO, CPU, CUDA = "auto", "cpu", "cuda"
GIB = 1 << 30


class DeviceError(ValueError):
    """A device name that is not valid here (unknown, or a GPU PyTorch does not see); the message says what to use."""


# ---- what this machine has ----------------------------------------------------------------------------------------
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
        return self.total_bytes / GIB

    @property
    def label(self) -> str:
        """How the estimate names it: the GPU's name, or "CPU RAM"."""
        return "CPU RAM" if self.kind == CPU else (self.name or "GPU")


@functools.cache
def detect() -> DeviceInfo:
    """GPU 0 when PyTorch sees CUDA, else the CPU with the machine's RAM. Cached: looking for CUDA imports torch
    (3-10 s), and neither the GPU nor its total memory changes while the process runs (`detect.cache_clear()`)."""
    gpu = None if _surely_no_gpu() else _cuda_device(0)
    return gpu if gpu is not None else cpu_device()


def _surely_no_gpu() -> bool:
    """True where PyTorch cannot see a CUDA GPU, known without importing torch (3-10 s): macOS, CUDA_VISIBLE_DEVICES
    set empty or to -1, or Linux without NVIDIA device nodes (/dev/nvidiactl; /dev/dxg under WSL). `python -m app
    estimate` on a laptop stays fast."""
    if sys.platform == "darwin" or os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return True
    if sys.platform.startswith("linux"):
        return not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg"))
    return False


def _cuda_device(index: int) -> DeviceInfo | None:
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return None
        props = torch.cuda.get_device_properties(index)
    except (RuntimeError, AssertionError):  # a broken driver or a CPU-only build: train on the CPU
        return None
    return DeviceInfo(CUDA, props.name, int(props.total_memory))


def cpu_device() -> DeviceInfo:
    """The CPU, named by the platform, with total RAM from psutil."""
    import psutil

    name = platform.processor() or platform.machine() or "CPU"
    return DeviceInfo(CPU, f"{name} ({psutil.cpu_count(logical=True)} threads)", int(psutil.virtual_memory().total))


# ---- what a device name means -------------------------------------------------------------------------------------
def _index(device: str) -> int | None:
    """N of "cuda:N" (0 for "cuda"); None when `device` is not a CUDA name."""
    if device == CUDA:
        return 0
    head, _, tail = device.partition(":")
    return int(tail) if head == CUDA and tail.isdigit() else None


def is_valid(device: str) -> bool:
    """auto, cpu, cuda or cuda:N (whether or not this machine has that GPU)."""
    return device in (AUTO, CPU) or _index(device) is not None


def kind(device: str = AUTO) -> str:
    """The kind, "cuda" or "cpu", of device a run set to `device` uses. Never raises for a GPU this machine lacks
    (an estimate for a cuda config is meaningful on a laptop); "auto" looks at this machine."""
    if device == AUTO:
        return detect().kind
    if device == CPU:
        return CPU
    if _index(device) is None:
        raise DeviceError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    return CUDA


def resolve(device: str = AUTO) -> str:
    """The torch device a run set to `device` loads on: auto -> cuda or cpu; cuda / cuda:N only when PyTorch sees
    that GPU (DeviceError otherwise, saying what to choose instead)."""
    if device == AUTO:
        return detect().kind
    if device == CPU:
        return CPU
    index = _index(device)
    if index is None:
        raise DeviceError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    if _cuda_device(index) is None:
        raise DeviceError(f"device is {device} but PyTorch sees no such CUDA GPU; use auto or cpu")
    return device


def info(device: str = AUTO) -> DeviceInfo | None:
    """Facts of the device a run set to `device` would use; None for a GPU this machine does not have."""
    if kind(device) == CPU:
        found = detect()
        return found if found.kind == CPU else cpu_device()
    index = 0 if device == AUTO else _index(device)
    if index == 0:
        found = detect()
        return found if found.kind == CUDA else None
    return _cuda_device(index or 0)


def capacity(device: str = AUTO) -> tuple[str, int | None, str]:
    """(kind, total bytes, label) of the device a run set to `device` would use, for the memory estimate; the
    bytes are None (label "CUDA") when this machine lacks that GPU."""
    found = info(device)
    if found is None:
        return CUDA, None, CUDA.upper()
    return found.kind, found.total_bytes, found.label


# ---- who holds which device ---------------------------------------------------------------------------------------
@dataclass
class Holder:
    """A training run that owns a device until it ends."""

    device: str
    """The device as the run resolved it (cpu, cuda, cuda:1)."""
    run: str
    """The run's name (its folder under runs/)."""
    alive: Callable[[], bool] = lambda: True
    """Whether the run still trains (a thread's is_alive); a holder that is not alive holds nothing."""
    since: float = field(default_factory=time.time)

    def describe(self) -> str:
        return f"training run {self.run}"


class DeviceBusy(RuntimeError):
    """A training run already holds the device; `holder` says which, the message what to do."""

    def __init__(self, holder: Holder, message: str = "") -> None:
        super().__init__(message or f"{holder.describe()} is already training on {holder.device}")
        self.holder = holder


_lock = threading.Lock()
_holders: dict[str, Holder] = {}


def _key(device: str) -> str:
    """One key per physical device: cuda and cuda:0 are the same GPU; auto is what it resolves to here."""
    name = kind(device) if device == AUTO else device
    index = _index(name)
    return CPU if index is None else f"{CUDA}:{index}"


def claim(device: str, run: str, alive: Callable[[], bool] = lambda: True) -> Holder:
    """Register `run` as the holder of `device` (resolved: cpu, cuda, cuda:N); atomic, so two quick Starts make one
    holder and one DeviceBusy. The claim ends when `alive()` turns False, or at `release`."""
    holder = Holder(device, run, alive)
    with _lock:
        current = _holders.get(_key(device))
        if current is not None and current.alive():
            raise DeviceBusy(current)
        _holders[_key(device)] = holder
    for listener in list(_listeners):
        listener(device)
    return holder


def release(holder: Holder) -> None:
    """End `holder`'s claim (a no-op when another run holds the device now)."""
    with _lock:
        if _holders.get(_key(holder.device)) is holder:
            del _holders[_key(holder.device)]


def holder(device: str = AUTO) -> Holder | None:
    """The live training run holding the device `device` names (auto: the one it resolves to here), or None."""
    with _lock:
        current = _holders.get(_key(device))
    return current if current is not None and current.alive() else None


def busy(device: str = AUTO) -> bool:
    return holder(device) is not None


def require_free(device: str, requested: str = AUTO, action: str = "chat") -> None:
    """Raise DeviceBusy when a training run holds `device`, saying how to `action` (chat, evaluate, merge) anyway.

    An explicit requested="cpu" is the user's way around a busy accelerator, so it is never refused.
    """
    if requested == CPU:
        return
    current = holder(device)
    if current is not None:
        way = "share the CPU with it (both run slower)" if kind(device) == CPU else f"{action} on the CPU instead"
        message = f'{current.describe()} is using {device}. Wait for it to finish, or pass device="cpu" to {way}.'
        raise DeviceBusy(current, message)


_listeners: list[Callable[[str], None]] = []


def on_claim(listener: Callable[[str], None]) -> None:
    """Call `listener(device)` whenever a run claims a device: what holds a model for display (the Model tab's
    loaded copy) frees it rather than compete with training for memory."""
    _listeners.append(listener)
