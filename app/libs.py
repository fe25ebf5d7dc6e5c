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
import threading

NAMES: dict[str, tuple[str, ...]] = {
    "transformers": (
        "AutoConfig",
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "BitsAndBytesConfig",
        "EarlyStoppingCallback",
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
"""bitsandbytes (>= 0.48) on CPUs with AVX512-BF16 tries, at import, to fetch a fused 4-bit kernel from the Hugging
Face Hub through the optional `kernels` package, and when that package is missing it logs a warning telling the
user to `pip install kernels`. TuneDesk declines that kernel on purpose: it downloads no code at run time (and the
kernel only serves bf16 inputs, while training on a CPU runs in float32); bitsandbytes then uses its own C kernel,
which is what runs either way. So the advice is wrong for our users, and it is dropped (only that message)."""


class _DeclinedHubKernel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels-community" not in record.getMessage()


def decline_hub_kernels() -> None:
    """Install the filter above on bitsandbytes' CPU-backend logger; idempotent, and cheap (no import of bnb)."""
    logger = logging.getLogger(BNB_HUB_KERNEL_LOGGER)
    if not any(isinstance(f, _DeclinedHubKernel) for f in logger.filters):
        logger.addFilter(_DeclinedHubKernel())
