"""Import the heavy libraries (torch, transformers, peft) once, completely, under one lock.

transformers exposes its classes through a lazy module: the first `from transformers import AutoTokenizer`
imports a chain of submodules. When two threads do that at the same moment (the app's warm-up thread importing
the trainer while a tab's handler loads a tokenizer), Python's import deadlock avoidance hands one of them a
half-initialised submodule: `ImportError: cannot import name 'AutoTokenizer' from 'transformers'`, seen in the
Data tab right after the page loaded. `load()` resolves every name the app uses while holding a lock, so later
imports of those names are attribute lookups on finished modules. `app.modeling` calls it on import, and every
code path that uses transformers goes through `app.modeling` first.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading

NAMES: dict[str, tuple[str, ...]] = {
    "transformers": (
        "AutoConfig",
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "BitsAndBytesConfig",
        "EarlyStoppingCallback",
        "GenerationConfig",
        "RepetitionPenaltyLogitsProcessor",
        "StoppingCriteria",
        "StoppingCriteriaList",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
        "Trainer",
        "TrainerCallback",
        "TrainingArguments",
        "set_seed",
    ),
    "transformers.trainer_callback": ("EarlyStoppingCallback", "PrinterCallback"),
    "transformers.models.auto.modeling_auto": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",),
    "peft": ("LoraConfig", "PeftModel", "get_peft_model", "prepare_model_for_kbit_training"),
    "peft.tuners.tuners_utils": ("BaseTunerLayer",),
}
"""Module -> the names the app imports from it (tests/test_libs.py checks this list against the source)."""

_lock = threading.Lock()
_loaded = False


def load() -> None:
    """Import torch, transformers and peft and resolve every name in NAMES; once per process, thread-safe."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        importlib.import_module("torch")
        for module_name, names in NAMES.items():
            module = importlib.import_module(module_name)
            for name in names:
                getattr(module, name)
        _loaded = True


BNB_HUB_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
HUB_KERNELS_PACKAGE = "kernels"
"""Hugging Face's `kernels` package fetches compiled code from the Hub and runs it. transformers (>= 5.25) installs
it with itself, and then bitsandbytes (>= 0.48) on CPUs with AVX512-BF16 calls `kernels.get_kernel(
"kernels-community/quantization-bitsandbytes")` at import: a request to the Hub (or to whatever HF_ENDPOINT names)
from every process that imports peft, and code from the network run inside the app. TuneDesk downloads no code at
run time, so the app hides that package from the process: `sys.modules["kernels"] = None` makes
`importlib.util.find_spec` answer None (transformers' `is_kernels_available()` is then False, and no Hub kernel is
ever mapped) and `from kernels import ...` raise ImportError (bitsandbytes then uses its own C kernel, which is what
runs when the package is absent; the Hub kernel only serves bf16 inputs, while training on a CPU runs in float32).
transformers >= 5.25 also kernelizes every model it loads by default (`use_kernels=None` means yes), which fails
once the package is hidden; its own switch, `USE_HUB_KERNELS=NO`, turns that off, and the app sets it (for the
processes it starts too).

When the package is absent, bitsandbytes logs a warning telling the user to `pip install kernels`: wrong advice for
TuneDesk, so that one message is dropped (nothing else of bitsandbytes' logger)."""


class _DeclinedHubKernel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


def decline_hub_kernels() -> None:
    """Hide the `kernels` package (see HUB_KERNELS_PACKAGE) and drop bitsandbytes' advice to install it; idempotent
    and cheap (imports neither bitsandbytes nor kernels). Runs when `app` is imported, before transformers, peft or
    bitsandbytes can be; a process that imported `kernels` before that keeps it (nothing is unloaded)."""
    sys.modules.setdefault(HUB_KERNELS_PACKAGE, None)
    os.environ["USE_HUB_KERNELS"] = "NO"
    logger = logging.getLogger(BNB_HUB_KERNEL_LOGGER)
    if not any(isinstance(f, _DeclinedHubKernel) for f in logger.filters):
        logger.addFilter(_DeclinedHubKernel())
