"""app.libs resolves, under one lock, every transformers/peft name the app imports (a name it misses would be
imported lazily again, racing the warm-up thread: ImportError 'cannot import name AutoTokenizer')."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from app import libs

APP = Path(__file__).resolve().parents[1] / "app"


def _imported_names() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            root = node.module.split(".")[0] if isinstance(node, ast.ImportFrom) and node.module else ""
            if root in ("transformers", "peft"):
                found.setdefault(node.module, set()).update(a.name for a in node.names)
    return found


def test_every_transformers_and_peft_name_the_app_imports_is_preloaded():
    used = _imported_names()
    assert used, "found no transformers/peft import in app/: the scan is broken"
    missing = {
        f"{module}.{name}"
        for module, names in used.items()
        for name in names
        if module != "transformers.utils" and name not in libs.NAMES.get(module, ())
    }
    assert not missing, f"add these to app.libs.NAMES: {sorted(missing)}"


def test_modeling_and_train_load_the_libraries_on_import():
    code = (
        "import sys; from app import libs; assert 'transformers' not in sys.modules; "
        "import app.modeling; assert libs._loaded; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=APP.parent, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_two_threads_importing_at_once_both_get_the_classes():
    """The app's situation: the warm-up thread imports the trainer while a handler loads a tokenizer class."""
    code = """
import threading
errors = []
def trainer():
    try:
        import app.train  # noqa: F401  (what the warm-up imports)
    except Exception as exc:
        errors.append(repr(exc))
def tokenizer():
    try:
        from app import modeling
        from transformers import AutoTokenizer, StoppingCriteria  # noqa: F401
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=trainer), threading.Thread(target=tokenizer)]
[t.start() for t in threads]
[t.join() for t in threads]
print(errors or 'ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=APP.parent, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.stdout, out.stderr[-2000:])


def test_bitsandbytes_hub_kernel_advice_is_not_shown_but_other_warnings_are():
    """bitsandbytes on AVX512-BF16 CPUs logs "Failed to load CPU gemm_4bit_forward from kernels-community ... pip
    install kernels" at import: wrong advice for TuneDesk, which downloads no code at run time. The app drops that
    one message (whatever the CPU, the record goes through the same logger) and nothing else of bitsandbytes'."""
    import logging

    import app  # noqa: F401  (installs the filter)

    logger = logging.getLogger(libs.BNB_HUB_KERNEL_LOGGER)

    def shown(msg: str) -> bool:
        why = ("No module named 'kernels'",)
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, why, None)
        return logger.filter(record)

    assert not shown("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please `pip install kernels`")
    assert shown("some other bitsandbytes warning: %s")
    proc = subprocess.run(
        [sys.executable, "-c", "import app, bitsandbytes"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "kernels" not in proc.stderr, proc.stderr


def test_the_hub_kernels_package_is_hidden_so_no_code_is_fetched_from_the_hub(tmp_path, tiny_model_dir):
    """transformers >= 5.25 installs `kernels`, and bitsandbytes then asks the Hub for a compiled kernel at import
    (on AVX512-BF16 CPUs). After `import app` the package is invisible: transformers maps no Hub kernel, and
    importing peft and bitsandbytes sends no request to the endpoint. The endpoint here is a port nobody listens
    on, so a request would show up as a connection error in the log; the check holds whether or not the package
    is installed on this machine. A model then loads (transformers >= 5.25 kernelizes it unless told not to)."""
    code = """
import importlib.util, os
import app
import peft, bitsandbytes
from transformers.utils import is_kernels_available
from app import libs
assert importlib.util.find_spec(libs.HUB_KERNELS_PACKAGE) is None
assert not is_kernels_available()
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained(os.environ["TINY"])  # transformers >= 5.25 kernelizes a loaded model by default
try:
    import kernels
except ImportError:
    print("hidden")
"""
    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path),
        "TINY": str(tiny_model_dir),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "hidden"
    assert "127.0.0.1:9" not in proc.stderr and "kernels" not in proc.stderr, proc.stderr[-2000:]
