"""Devices: one meaning of auto, the device's memory, and the registry of which run holds which device."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from app import devices


@pytest.fixture(autouse=True)
def no_holders():
    yield
    devices._holders.clear()


def test_import_is_torch_free():
    code = "import sys, app.devices; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_is_the_detected_device_everywhere():
    found = devices.detect()
    assert devices.resolve("auto") == devices.kind("auto") == found.kind
    assert devices.resolve("cpu") == devices.kind("cpu") == "cpu"
    assert devices.kind("cuda") == devices.kind("cuda:3") == "cuda"


def test_a_gpu_this_machine_lacks_is_refused_for_loading_but_estimated_without_capacity():
    with pytest.raises(devices.DeviceError, match="cuda:99.*use auto or cpu"):
        devices.resolve("cuda:99")
    assert devices.capacity("cuda:99") == ("cuda", None, "CUDA")
    with pytest.raises(devices.DeviceError, match="use auto, cpu, cuda or cuda:N"):
        devices.kind("tpu")
    assert devices.is_valid("cuda:1") and not devices.is_valid("cuda:x")


def test_capacity_of_auto_is_this_machine():
    kind, total, label = devices.capacity("auto")
    found = devices.detect()
    assert (kind, total) == (found.kind, found.total_bytes) and total > devices.GIB
    assert label == ("CPU RAM" if kind == "cpu" else found.name)


def test_a_claim_holds_until_the_run_ends_and_names_it():
    running = threading.Event()
    running.set()
    holder = devices.claim("cpu", "run-1", alive=running.is_set)
    assert devices.holder("cpu") is holder and devices.busy("cpu")
    assert devices.holder("cuda") is None
    with pytest.raises(devices.DeviceBusy, match="run-1"):
        devices.claim("cpu", "run-2")
    with pytest.raises(devices.DeviceBusy, match="training run run-1 is using cpu.*share the CPU"):
        devices.require_free("cpu", "auto", "evaluate")
    devices.require_free("cpu", "cpu")  # an explicit cpu is the way around a busy device
    running.clear()
    assert devices.holder("cpu") is None
    devices.release(devices.claim("cpu", "run-2"))
    assert not devices.busy("cpu")


def test_cuda_and_cuda_0_are_one_gpu_and_the_message_names_the_action():
    holder = devices.claim("cuda", "gpu-run")
    assert devices.holder("cuda:0") is holder and devices.holder("cuda:1") is None
    with pytest.raises(devices.DeviceBusy, match="evaluate on the CPU instead"):
        devices.require_free("cuda:0", "cuda", "evaluate")


def test_listeners_hear_every_claim():
    heard: list[str] = []
    devices.on_claim(heard.append)
    try:
        devices.claim("cpu", "r")
    finally:
        devices._listeners.remove(heard.append)
    assert heard == ["cpu"]
