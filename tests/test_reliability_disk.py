"""A full disk while saving: the run ends `failed` with a message saying the disk is full, the previous checkpoint
and adapter stay intact, nothing half-written is left, and Resume continues from the last complete checkpoint.

Two ways to fill the disk: a fault injected in the one function that writes LoRA weights (PEFT's safetensors
save: it writes half the file, then raises ENOSPC as the kernel would), always; and a real 1 MB tmpfs filled up
after the first checkpoint, where the kernel itself refuses the writes (needs root and `mount`; skipped otherwise).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import peft.peft_model
import pytest
from safetensors.torch import load_file
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import history, runs, train, train_events
from app.ui import train_tab


class DiskFull:
    """Wraps PEFT's safetensors writer: call number `fail_at` (1-based) writes half its bytes, then raises ENOSPC."""

    def __init__(self, real, fail_at: int):
        self.real, self.fail_at, self.calls = real, fail_at, 0

    def __call__(self, tensors, filename, metadata=None):
        self.calls += 1
        if self.calls != self.fail_at:
            return self.real(tensors, filename, metadata=metadata)
        self.real(tensors, filename, metadata=metadata)
        raw = Path(filename).read_bytes()
        Path(filename).write_bytes(raw[: len(raw) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))


@pytest.fixture()
def data_file(tmp_path):
    return write_alpaca(tmp_path / "alpaca.json", n=24)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _check_failed_for_disk(run_dir: Path) -> str:
    assert runs.run_status(run_dir) == "failed"
    message = events_of(run_dir, "failed")[-1]["message"]
    assert "disk is full" in message and "checkpoint-2" in message and "Resume" in message, message
    line = train_tab.status_line(train_tab.load_history(run_dir), "en")  # what the Train tab shows
    assert "failed" in line and "disk is full" in line
    return message


def _check_checkpoint_2_intact(run_dir: Path) -> None:
    assert [p.name for p in history.checkpoints(run_dir)] == ["checkpoint-2"]
    ckpt = run_dir / "checkpoints" / "checkpoint-2"
    assert load_file(str(ckpt / "adapter_model.safetensors"))  # loads: not the half-written file
    assert (ckpt / "optimizer.pt").is_file() and (ckpt / "trainer_state.json").is_file()
    assert not (run_dir / "checkpoints" / ".partial").exists(), "a half-written checkpoint was left behind"
    assert not list(run_dir.glob(".adapter.tmp-*"))


def test_disk_full_at_the_second_checkpoint_keeps_the_first_and_resume_finishes(
    tiny_model_dir, data_file, runs_tmp, monkeypatch
):
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.max_steps": 4, "train.save_steps": 2})
    run_dir = runs.create_run(cfg)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", DiskFull(peft.peft_model.safe_save_file, fail_at=2))
    assert train.run(cfg, run_dir) == "failed"
    _check_failed_for_disk(run_dir)
    _check_checkpoint_2_intact(run_dir)
    assert runs.final_artifact(run_dir) is None

    monkeypatch.undo()  # space freed: Resume continues from checkpoint-2
    assert train.run(cfg, run_dir, resume=True) == "finished"
    assert events_of(run_dir, "resumed")[0]["from_step"] == 2
    logged = [e["step"] for e in history.effective_events(events_of(run_dir)) if e["type"] == "log"]
    assert logged == [1, 2, 3, 4]
    assert load_file(str(runs.final_artifact(run_dir) / "adapter_model.safetensors"))


def test_disk_full_while_saving_the_adapter_keeps_the_previous_one(tiny_model_dir, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj"])
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    adapter = train.save_artifact(model, tokenizer, run_dir, "lora")
    before = _digest(adapter)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", DiskFull(peft.peft_model.safe_save_file, fail_at=1))
    with pytest.raises(OSError) as info:
        train.save_artifact(model, tokenizer, run_dir, "lora")
    assert info.value.errno == errno.ENOSPC
    assert _digest(adapter) == before  # the saved adapter is untouched
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter"]  # the temp folder is gone


# ---- a real full disk ----------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_disk(tmp_path):
    """A 1 MB tmpfs, or skip where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Write a file that leaves `leave` bytes free: enough for the event lines, not for a checkpoint (~112 KB)."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler.bin", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_a_really_full_disk_fails_the_run_clearly_and_keeps_the_checkpoint(
    tiny_model_dir, data_file, tiny_disk, monkeypatch
):
    cfg = tiny_config(
        tiny_model_dir, data_file, **{"train.max_steps": 4, "train.save_steps": 2, "train.output_dir": str(tiny_disk)}
    )
    run_dir = runs.create_run(cfg)
    real_on_save = train_events.EventsCallback.on_save

    def fill_after_first_save(self, args, state, control, **kwargs):
        real_on_save(self, args, state, control, **kwargs)
        if state.global_step == 2:
            _fill(tiny_disk, leave=24 * 1024)

    monkeypatch.setattr(train_events.EventsCallback, "on_save", fill_after_first_save)
    assert train.run(cfg, run_dir) == "failed"
    _check_failed_for_disk(run_dir)
    _check_checkpoint_2_intact(run_dir)
    (tiny_disk / "filler.bin").unlink()
    monkeypatch.undo()
    assert train.run(cfg, run_dir, resume=True) == "finished"
    assert runs.final_artifact(run_dir) is not None
