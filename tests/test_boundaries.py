"""Import boundaries: the core never imports gradio (nor the UI); the core modules that do not train never import
torch; the UI never imports torch, transformers or peft at import time (its handlers ask the core, lazily).

Every check discovers what it checks: each app/*.py is a core module, each app/ui/*.py a UI module, so a new module
is covered the day it lands. Each runtime check imports in a fresh interpreter, so nothing earlier in the session
leaks in; the source checks also see an import inside a function, which a runtime check only sees when it runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted(p.stem for p in (ROOT / "app").glob("*.py") if p.stem != "__init__")
UI = sorted(p.stem for p in (ROOT / "app" / "ui").glob("*.py") if p.stem != "__init__")
NEEDS_TORCH = {
    "batching": "collates token tensors for the trainer",
    "modeling": "loads, quantizes and wraps models",
    "objectives": "each training objective's loss on a micro-batch",
    "preference_train": "builds TRL's preference trainers (DPO, ORPO, SimPO, KTO) and their reference model",
    "train": "the training loop",
    "train_events": "the TrainerCallback that writes events and samples",
    "train_failures": "names torch's out-of-memory error in a failed run's message",
    "trainer": "the Hugging Face Trainer subclass",
}
"""Core modules that may import torch when imported; every other core module must not (the CLI's --help, the
estimate and the app's first page stay fast, and work where torch is not installed)."""
TRAINING_LIBS = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "trl")
UI_ONLY = ("gradio",)


def _imported_names(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in `tree` (functions included): `import a.b`, `from a import b` (as
    a.b), relative imports resolved against `package`, and importlib.import_module("a.b")."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _module_level(tree: ast.Module) -> ast.Module:
    """The statements that run at import: function bodies left out (class bodies and if/try blocks run)."""

    class Strip(ast.NodeTransformer):
        def visit_FunctionDef(self, node):
            return None

        visit_AsyncFunctionDef = visit_FunctionDef

    return Strip().visit(ast.parse(ast.unparse(tree)))


def _parse(package: str, name: str) -> ast.Module:
    path = ROOT / Path(*package.split(".")) / f"{name}.py"
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _hits(found: list[tuple[int, str]], roots: tuple[str, ...]) -> list[str]:
    return [
        f"line {line}: {name}" for line, name in found if any(name == r or name.startswith(r + ".") for r in roots)
    ]


def _loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level package names in sys.modules after importing `modules` in one fresh interpreter."""
    code = f"import sys, {', '.join(modules)}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"import {modules} failed:\n{result.stderr[-2000:]}"
    return set(result.stdout.split())


def _culprits(modules: list[str], lib: str) -> list[str]:
    """Which of `modules` loads `lib` on its own (run only when the joint import found it)."""
    return [m for m in modules if lib in _loaded_after_import([m])]


def test_discovery_finds_the_modules():
    """The lists below are read from the tree: a check over an empty or stale list would pass for nothing."""
    assert {"config", "memory", "data", "train", "runs", "chat", "export", "evaluate"} <= set(CORE)
    assert {"app", "form", "i18n", "model_tab", "train_tab"} <= set(UI)
    assert set(NEEDS_TORCH) <= set(CORE), (
        f"NEEDS_TORCH names modules that no longer exist: {set(NEEDS_TORCH) - set(CORE)}"
    )


@pytest.mark.parametrize("name", CORE)
def test_core_source_never_imports_gradio_or_the_ui(name):
    """Anywhere in the file, a function body included: such an import only shows at runtime when it runs."""
    hits = _hits(_imported_names(_parse("app", name), "app"), (*UI_ONLY, "app.ui"))
    assert hits == [], f"app/{name}.py imports the UI; the core must work without it: {hits}"


@pytest.mark.parametrize("name", sorted(set(CORE) - set(NEEDS_TORCH)))
def test_torch_free_core_source_imports_training_libraries_only_inside_functions(name):
    hits = _hits(_imported_names(_module_level(_parse("app", name)), "app"), TRAINING_LIBS)
    assert hits == [], f"app/{name}.py imports a training library at import time: {hits}"


def test_importing_every_core_module_loads_no_gradio():
    """One interpreter imports them all: if none is loaded then, no single module loads it."""
    modules = [f"app.{name}" for name in CORE]
    if "gradio" in _loaded_after_import(modules):
        pytest.fail(f"these pull in gradio; the core must work without the UI: {_culprits(modules, 'gradio')}")


def test_importing_the_torch_free_core_loads_no_torch():
    modules = [f"app.{name}" for name in CORE if name not in NEEDS_TORCH]
    if "torch" in _loaded_after_import(modules):
        pytest.fail(
            f"these pull in torch; declare them in NEEDS_TORCH or import lazily: {_culprits(modules, 'torch')}"
        )


@pytest.mark.parametrize("name", UI)
def test_ui_source_imports_training_libraries_only_inside_handlers(name):
    """A tab may reach torch through the core when a handler runs, never when the page is built."""
    hits = _hits(_imported_names(_module_level(_parse("app.ui", name)), "app.ui"), TRAINING_LIBS)
    assert hits == [], f"app/ui/{name}.py imports a training library at import time (ask the core instead): {hits}"


@pytest.mark.parametrize("name", UI)
def test_ui_source_never_imports_torch_directly(name):
    """Not even inside a handler: the core owns the model (modeling, chat, evaluate, export)."""
    hits = _hits(_imported_names(_parse("app.ui", name), "app.ui"), ("torch",))
    assert hits == [], f"app/ui/{name}.py imports torch (call the core instead): {hits}"


def test_importing_the_whole_ui_loads_no_training_library():
    loaded = _loaded_after_import([f"app.ui.{name}" for name in UI])
    assert loaded.isdisjoint(TRAINING_LIBS), f"importing the UI loads {sorted(loaded & set(TRAINING_LIBS))}"


def test_the_source_checks_see_imports_inside_functions():
    tree = ast.parse("import os\ndef f():\n    import gradio as gr\n    from app.ui import form\n")
    found = _imported_names(tree, "app")
    assert _hits(found, (*UI_ONLY, "app.ui")) == ["line 3: gradio", "line 4: app.ui.form"]
    assert _hits(_imported_names(_module_level(tree), "app"), UI_ONLY) == []
    relative = ast.parse("from .ui import app\nfrom . import torch_free\n")
    assert [name for _, name in _imported_names(relative, "app")] == ["app.ui.app", "app.torch_free"]
    call = ast.parse("import importlib\nimportlib.import_module('gradio.themes')\n")
    assert _hits(_imported_names(call, "app"), UI_ONLY) == ["line 2: gradio.themes"]


def test_plots_need_neither_gradio_nor_torch():
    loaded = _loaded_after_import(["app.ui.plots"])
    assert "plotly" in loaded
    assert "gradio" not in loaded and "torch" not in loaded, "figure builders must be reusable without the app"
