"""Import boundaries: the core never imports gradio; the estimator and the config never import torch; the UI
never imports torch directly. Each import runs in a fresh interpreter so nothing earlier in the session leaks in."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["config", "memory", "catalog", "data", "modeling", "train", "runs", "jobs", "chat", "export", "evaluate"]
TORCH_FREE = {"config", "memory"}


def _exists(name: str) -> bool:
    return (ROOT / "app" / f"{name}.py").is_file()


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"import {module} failed:\n{result.stderr[-2000:]}"
    return set(result.stdout.split())


@pytest.mark.parametrize("name", CORE)
def test_core_module_does_not_import_gradio(name):
    if not _exists(name):
        pytest.skip(f"app/{name}.py does not exist yet")
    loaded = _loaded_after_import(f"app.{name}")
    assert "gradio" not in loaded, f"app.{name} pulls in gradio; the core must work without the UI"
    if name in TORCH_FREE:
        assert "torch" not in loaded, f"app.{name} pulls in torch; it must stay importable in a fraction of a second"


def test_ui_files_never_import_torch():
    pattern = re.compile(r"^\s*(import torch\b|from torch\b)", re.MULTILINE)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "app" / "ui").rglob("*.py") if pattern.search(p.read_text())
    ]
    assert offenders == [], f"UI modules import torch directly (call the core instead): {offenders}"


def test_plots_need_neither_gradio_nor_torch():
    loaded = _loaded_after_import("app.ui.plots")
    assert "plotly" in loaded
    assert "gradio" not in loaded and "torch" not in loaded, "figure builders must be reusable without the app"
