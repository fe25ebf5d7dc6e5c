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
import threading

NAMES: dict[str, tuple[str, ...]] = {
    "transformers": (
        "AutoConfig",
        "AutoModelForCausalLM",
        "AutoTokenizer",
        "BitsAndBytesConfig",
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
    "transformers.trainer_callback": ("PrinterCallback",),
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
