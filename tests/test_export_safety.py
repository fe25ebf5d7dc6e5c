"""What export may touch (issue 20, items 3 and 8): Overwrite replaces only a folder a TuneDesk export wrote (it
carries tunedesk_export.json); any other non-empty folder is refused and left byte-identical, through the core,
`python -m app merge --overwrite`, GGUF export and the Export tab. A pickle allowed with --allow-pickle that holds
Python objects (a reduce calling os.system) never runs and ends in one message naming the file."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_kit import one_torch_thread, tree_hashes  # noqa: F401
from ui_ctx import make_adapter, tab_context, values_of

from app.export import EXPORT_MARKER, ExportError, export_gguf, merge
from app.modeling import ModelError, load_model

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"progress": lambda f, m: None}


class RunsACommand:
    """Unpickling this calls os.system(command): what a hostile .bin file does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("safety") / "adapter")


@pytest.fixture()
def users_folder(tmp_path) -> Path:
    """A folder of the user's own (think ~/.ssh): not empty, never written by TuneDesk."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.txt").write_text("private key\n")
    (folder / "sub" / "notes.md").write_bytes(b"\x00\x01 mine")
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _refused_untouched(message: str, folder: Path, before: dict) -> None:
    assert str(folder) in message and "not written by a TuneDesk export" in message, message
    assert "Choose an empty or new folder" in message, message
    assert tree_hashes(folder) == before
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temp or .old folder


# ---- item 3: Overwrite replaces only TuneDesk's own folders ---------------------------------------------------
def test_merge_overwrite_refuses_a_folder_tunedesk_did_not_write(adapter, users_folder):
    before = tree_hashes(users_folder)
    for overwrite in (True, False):
        with pytest.raises(ExportError) as info:
            merge(adapter, users_folder, overwrite=overwrite, **QUIET)
        _refused_untouched(str(info.value), users_folder, before)


def test_merge_overwrite_replaces_an_earlier_export(adapter, tmp_path):
    out = merge(adapter, tmp_path / "merged", **QUIET)
    assert (out / EXPORT_MARKER).is_file() and (out / "model.safetensors").is_file()
    with pytest.raises(ExportError, match="not empty.*earlier TuneDesk export.*--overwrite"):
        merge(adapter, out, **QUIET)
    (out / "stale.txt").write_text("from the first merge")
    assert merge(adapter, out, dtype="bfloat16", overwrite=True, **QUIET) == out
    assert not (out / "stale.txt").exists() and (out / EXPORT_MARKER).is_file()
    assert next(iter(load_file(out / "model.safetensors").values())).dtype == torch.bfloat16


def test_gguf_export_refuses_a_foreign_folder_and_marks_its_own(adapter, users_folder, tmp_path):
    before = tree_hashes(users_folder)
    with pytest.raises(ExportError) as info:
        export_gguf(adapter, users_folder, "f32", **QUIET)
    _refused_untouched(str(info.value), users_folder, before)
    out = tmp_path / "gguf"
    assert export_gguf(adapter, out, "f32", **QUIET) == out / "model-f32.gguf"
    assert (out / EXPORT_MARKER).is_file()
    assert export_gguf(adapter, out, "q8_0", **QUIET).is_file()  # its own folder: another quant beside the first
    assert {p.name for p in out.iterdir()} == {EXPORT_MARKER, "model-f32.gguf", "model-q8_0.gguf", "Modelfile"}


def test_cli_merge_overwrite_refuses_a_foreign_folder(adapter, users_folder):
    before = tree_hashes(users_folder)
    out = _cli("merge", str(adapter), "--out", str(users_folder), "--overwrite")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    _refused_untouched(line, users_folder, before)


def test_export_tab_overwrite_refuses_a_foreign_folder(tiny_model_dir, adapter, users_folder):
    _demo, ctx = tab_context(["export"], str(tiny_model_dir))
    h = ctx.handles["export"]
    from app.ui import export_tab

    values = values_of(ctx, h.picker.base, h.picker.adapters, h.dtype, h.out_dir, h.overwrite, h.share_cpu)
    values.update({h.picker.adapters: str(adapter), h.out_dir: str(users_folder), h.overwrite: True})
    before = tree_hashes(users_folder)
    status = export_tab.merge_adapter(ctx, values)[h.status]
    assert status.startswith("❌") and "Traceback" not in status
    _refused_untouched(status, users_folder, before)


# ---- item 8: an allowed pickle that holds Python objects never runs ------------------------------------------
def _hostile(path: Path, state: dict, marker: Path, zipped: bool) -> None:
    payload = {**state, "x": RunsACommand(f"touch {marker}")}
    if zipped:
        torch.save(payload, path)  # what torch.save writes: a zip holding the pickle
    else:
        with open(path, "wb") as fh:  # a bare pickle, the legacy layout
            pickle.dump(payload, fh)


@pytest.fixture(params=["zip", "bare"])
def hostile_adapter(request, adapter, tmp_path) -> tuple[Path, Path]:
    folder, marker = tmp_path / "hostile-adapter", tmp_path / "PWNED"
    shutil.copytree(adapter, folder)
    state = load_file(folder / "adapter_model.safetensors")
    (folder / "adapter_model.safetensors").unlink()
    _hostile(folder / "adapter_model.bin", state, marker, request.param == "zip")
    return folder, marker


def _says_not_plain(message: str, weights: Path) -> None:
    assert str(weights) in message, message
    assert "not a plain tensor file: it holds Python objects TuneDesk will not load" in message, message
    assert "safetensors" in message and "Traceback" not in message


def test_core_merge_refuses_a_hostile_adapter_pickle_without_running_it(hostile_adapter, tmp_path):
    folder, marker = hostile_adapter
    with pytest.raises(ExportError) as info:
        merge(folder, tmp_path / "out", allow_pickle=True, **QUIET)
    _says_not_plain(str(info.value), folder / "adapter_model.bin")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_core_refuses_a_hostile_base_model_pickle_without_running_it(tiny_model_dir, adapter, tmp_path):
    from app.config import ModelConfig

    base, marker = tmp_path / "hostile-base", tmp_path / "PWNED"
    shutil.copytree(tiny_model_dir, base)
    state = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    _hostile(base / "pytorch_model.bin", state, marker, zipped=True)
    with pytest.raises(ModelError) as info:
        load_model(ModelConfig(name_or_path=str(base), allow_pickle=True), device="cpu")
    _says_not_plain(str(info.value), base / "pytorch_model.bin")
    assert "posix.system" in str(info.value) or "nt.system" in str(info.value)  # what it would have called
    with pytest.raises(ExportError) as info:
        merge(adapter, tmp_path / "out", base=str(base), allow_pickle=True, **QUIET)
    _says_not_plain(str(info.value), base / "pytorch_model.bin")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_merge_allow_pickle_refuses_a_hostile_adapter(hostile_adapter, tmp_path):
    folder, marker = hostile_adapter
    out = _cli("merge", str(folder), "--out", str(tmp_path / "out"), "--allow-pickle")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    _says_not_plain(line, folder / "adapter_model.bin")
    assert not marker.exists() and not (tmp_path / "out").exists()
