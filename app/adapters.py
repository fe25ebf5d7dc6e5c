"""What an adapter folder is: where its weights are, what base it was trained on, its method, rank and targets.

Every caller that meets a folder a person picked (chat, evaluate, export, the UI pickers) asks this module:

    kind, folder = resolve_source(path)   # ("adapter" | "model", the loadable folder) for a run folder, adapter/,
                                          # model/, checkpoint-N or any PEFT/transformers folder
    info = describe(folder)               # AdapterInfo: base, method, rank, alpha, targets, trained, weights
    check_adapter_files(folder)           # the weights file; pickle (.bin) refused unless allowed and plain
    check_adapter_fits(folder, model, base_label)   # AdapterError when the tensors do not fit the base

torch and peft are imported only inside the functions that read tensors, so importing this module is cheap.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import history, runs

ADAPTER_CONFIG = "adapter_config.json"
SAFE_WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"


class AdapterError(RuntimeError):
    """A folder is not a usable adapter or model; the message names the folder and says what to do."""


# ---- what a folder is ---------------------------------------------------------------------------------------
def resolve_source(path: str | Path) -> tuple[str, Path]:
    """("adapter", folder) for a PEFT adapter, ("model", folder) for a full model folder.

    A run folder resolves to its adapter/ (LoRA/QLoRA), its model/ (full/freeze) or its newest checkpoint
    (checkpoints/checkpoint-N, as app.runs lays them out, or checkpoint-N directly inside).
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise AdapterError(
            f"{p}: not found or not a folder; pick an adapter folder (with {ADAPTER_CONFIG}), "
            "a checkpoint-N folder, a run folder or a model folder"
        )
    checkpoints = [*history.checkpoint_folders(p / history.CHECKPOINTS), *history.checkpoint_folders(p)]
    newest_first = sorted(checkpoints, key=history.checkpoint_step, reverse=True)
    for candidate in (p, p / "adapter", p / "model", *newest_first):
        if (candidate / ADAPTER_CONFIG).is_file():
            return "adapter", candidate
        if (candidate / "config.json").is_file():
            return "model", candidate
    raise AdapterError(
        f"{p}: holds no {ADAPTER_CONFIG} (adapter) and no config.json (model), nor an adapter/, "
        "model/ or checkpoint-N folder inside; pick the folder that holds them"
    )


def display_name(path: str | Path) -> str:
    """Short name for a column, a table row or a file name: the run name for <run>/adapter and <run>/model,
    <run>/checkpoint-N for a checkpoint (under <run>/checkpoints/ or directly in <run>), else the folder.

    >>> display_name("runs/20260101-demo/checkpoints/checkpoint-40")
    '20260101-demo/checkpoint-40'
    """
    path = Path(path)
    if path.name in ("adapter", "model"):
        return path.parent.name
    if history.checkpoint_step(path) is not None:
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return f"{run.name}/{path.name}"
    return path.name


def run_dir_of(folder: str | Path) -> Path | None:
    """The run folder around an adapter: <run>/adapter, <run>/model, <run>/checkpoints/checkpoint-N (or
    <run>/checkpoint-N), or the run folder itself; None for a folder outside any run."""
    folder = Path(folder)
    for candidate in (folder, folder.parent, folder.parent.parent):
        if runs.is_run_dir(candidate):
            return candidate
    return None


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: cannot be read as JSON ({exc}); the adapter folder is damaged") from None
    if not isinstance(cfg, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return cfg


def _run_setting(folder: Path, section: str, key: str) -> Any:
    """`section.key` of the run config around `folder` (as the user set it), or None (no run, a damaged
    config.yaml: never raises)."""
    run = run_dir_of(folder)
    if run is None or not (run / runs.CONFIG).is_file():
        return None
    from app.config import load_yaml

    try:
        part = load_yaml(run / runs.CONFIG).get(section) or {}
    except Exception:  # a damaged config.yaml: the adapter's own record still names a base
        return None
    return part.get(key) if isinstance(part, dict) else None


def _run_model_name(folder: Path) -> str | None:
    """model.name_or_path of the run around `folder` (the name the user chose, e.g. a catalog id), or None."""
    name = _run_setting(folder, "model", "name_or_path")
    return str(name) if name else None


def system_prompt_of(folder: str | Path) -> str:
    """The system prompt an adapter was trained with (its run's data.system_prompt); "" for none or no run."""
    value = _run_setting(Path(folder), "data", "system_prompt")
    return value if isinstance(value, str) else ""


def base_of(folder: str | Path) -> str | None:
    """The base model an adapter was trained on, as the user named it: its run's config.yaml, else
    adapter_config.json's base_model_name_or_path; None for a full model or an unknown folder (never raises)."""
    folder = Path(folder)
    name = _run_model_name(folder)
    if name:
        return name
    try:
        return read_adapter_config(folder).get("base_model_name_or_path") or None
    except AdapterError:
        return None


def infer_base(adapter_dir: str | Path) -> str:
    """The base model to load for an adapter: base_model_name_or_path when that loads here, else its run's
    config.yaml; AdapterError when neither names one."""
    adapter_dir = Path(adapter_dir)
    name = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if not name or not _loadable(name):
        name = _run_model_name(adapter_dir) or name
    if not name:
        raise AdapterError(
            f"adapter {adapter_dir}: {ADAPTER_CONFIG} names no base_model_name_or_path; "
            "choose the base model it was trained on"
        )
    return str(name)


def _loadable(name: str) -> bool:
    from app.modeling import ModelError, resolve_model

    try:
        resolve_model(name)
    except ModelError:
        return False
    return True


def adapter_tokenizer(adapter_dir: Path, base_tokenizer: Any) -> Any:
    """The adapter's own tokenizer when it ships one (a trainer may save its chat template there), else the base's."""
    if not (adapter_dir / "tokenizer_config.json").is_file():
        return base_tokenizer
    from app.modeling import load_tokenizer

    return load_tokenizer(str(adapter_dir))


# ---- the weights --------------------------------------------------------------------------------------------
def check_adapter_files(adapter_dir: Path, allow_pickle: bool = False) -> Path:
    """The weights file; refuses pickle-only adapters unless allowed (a .bin can run code when loaded)."""
    if (adapter_dir / SAFE_WEIGHTS).is_file():
        return adapter_dir / SAFE_WEIGHTS
    if (adapter_dir / PICKLE_WEIGHTS).is_file():
        if allow_pickle:
            return _plain_pickle(adapter_dir / PICKLE_WEIGHTS)
        raise AdapterError(
            f"adapter {adapter_dir} holds only {PICKLE_WEIGHTS}, a pickle file that can run code when "
            f"loaded. Re-save it as safetensors, or allow it explicitly (allow_pickle=True, CLI "
            f"--allow-pickle) if you trust its source."
        )
    raise AdapterError(
        f"adapter {adapter_dir} has {ADAPTER_CONFIG} but no {SAFE_WEIGHTS}: the weights are missing "
        "(was the copy or the training interrupted?)"
    )


def _plain_pickle(weights: Path) -> Path:
    """`weights`, once app.modeling has checked it holds only tensors (an allowed pickle may still not run code)."""
    from app.modeling import ModelError, check_plain_tensors

    try:
        check_plain_tensors(weights)
    except ModelError as exc:
        raise AdapterError(str(exc)) from None
    return weights


def adapter_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the safetensors header (no tensor data) or a trusted .bin."""
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as fh:
                return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
        except SafetensorError as exc:  # a truncated or overwritten file; not an OSError
            raise AdapterError(
                f"{weights} is damaged or truncated ({exc}); copy the adapter again or retrain it"
            ) from None
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def is_trained(adapter_dir: str | Path, allow_pickle: bool = False) -> bool:
    """False for an untouched initialisation: PEFT starts every lora_B at zero, so an adapter whose lora_B
    tensors are all zero changes nothing (a run stopped before its first optimizer step saves one)."""
    weights = check_adapter_files(Path(adapter_dir), allow_pickle)
    for tensor in _lora_b_tensors(weights):
        if bool(tensor.any()):
            return True
    return False


def _lora_b_tensors(weights: Path) -> Any:
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118
                if ".lora_B" in key or ".lora_embedding_B" in key:
                    yield fh.get_tensor(key)
        return
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    yield from (v for k, v in state.items() if ".lora_B" in k or ".lora_embedding_B" in k)


# ---- the facts in one place ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    """The folder that holds adapter_config.json."""
    name: str
    """display_name(path)."""
    base: str | None
    """base_of(path): the run's model name, else adapter_config's base_model_name_or_path."""
    method: str
    """The run's method (lora, qlora, ...) when the folder belongs to a run, else dora / lora from its config."""
    rank: int | None
    alpha: float | None
    targets: tuple[str, ...]
    """Module names the adapter wraps (q_proj, v_proj, ...), sorted; a regex target is one entry."""
    trained: bool
    """False when every lora_B is zero: PEFT's initialisation, which changes nothing."""
    run_dir: Path | None


def describe(adapter_dir: str | Path, allow_pickle: bool = False) -> AdapterInfo:
    """Every fact about an adapter folder (run, adapter/, checkpoint-N or PEFT folder); AdapterError for a full
    model folder or a damaged adapter."""
    kind, folder = resolve_source(adapter_dir)
    if kind != "adapter":
        raise AdapterError(f"{folder} is a full model folder, not a LoRA adapter")
    cfg = read_adapter_config(folder)
    targets = cfg.get("target_modules") or ()
    targets = (targets,) if isinstance(targets, str) else tuple(sorted(str(t) for t in targets))
    return AdapterInfo(
        path=folder,
        name=display_name(folder),
        base=base_of(folder),
        method=_method(folder, cfg),
        rank=cfg.get("r"),
        alpha=cfg.get("lora_alpha"),
        targets=targets,
        trained=is_trained(folder, allow_pickle),
        run_dir=run_dir_of(folder),
    )


def _method(folder: Path, cfg: dict[str, Any]) -> str:
    run = run_dir_of(folder)
    if run is not None and (run / runs.CONFIG).is_file():
        from app.config import load_yaml

        try:
            method = (load_yaml(run / runs.CONFIG).get("method") or {}).get("name")
        except Exception:  # a damaged config.yaml: fall back to what the adapter itself says
            method = None
        if method:
            return str(method)
    return "dora" if cfg.get("use_dora") else "lora"


# ---- does an adapter fit the base? ---------------------------------------------------------------------------
def fit_problems(shapes: dict[str, tuple[int, ...]], model: Any) -> list[str]:
    """Every adapter tensor whose module is missing from the base or whose shape does not match it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PeftModel: look past the wrapper
    modules = dict(base.named_modules())
    problems: list[str] = []
    for key, shape in shapes.items():
        match = re.match(
            r"(?:base_model\.model\.)?(.+?)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
            r"lora_magnitude_vector|modules_to_save)\b",
            key,
        )
        if not match:
            continue
        module_name, part = match.groups()
        module = modules.get(module_name)
        if module is None:
            problems.append(f"module {module_name} does not exist in the base")
            continue
        expected = _expected_size(module, part, shape)
        if expected is not None:
            problems.append(f"{key} has shape {list(shape)} but the base {module_name} needs {expected}")
    return list(dict.fromkeys(problems))  # lora_A and lora_B of one missing module give the same line


def _expected_size(module: Any, part: str, shape: tuple[int, ...]) -> str | None:
    """What the base needs when the tensor does not fit it, else None.

    PEFT stores lora_A as [r, in_features], lora_B as [out_features, r]; for embeddings lora_embedding_A is
    [r, num_embeddings] and lora_embedding_B is [embedding_dim, r].
    """
    if len(shape) != 2:
        return None
    axis, attr, what = {
        "lora_A": (1, "in_features", "input features"),
        "lora_B": (0, "out_features", "output features"),
        "lora_embedding_A": (1, "num_embeddings", "embeddings"),
        "lora_embedding_B": (0, "embedding_dim", "embedding dims"),
    }.get(part, (0, "", ""))
    want = getattr(module, attr, None) if attr else None
    return f"{want} {what}" if isinstance(want, int) and shape[axis] != want else None


def check_adapter_fits(adapter_dir: Path, model: Any, base_label: str, allow_pickle: bool = False) -> list[str]:
    """Raise AdapterError naming adapter and base when they do not fit; return warnings (e.g. another base name)."""
    cfg = read_adapter_config(adapter_dir)
    weights = check_adapter_files(adapter_dir, allow_pickle)
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterError(
            f"adapter {adapter_dir} is a {cfg.get('peft_type')} adapter; chat and merge handle LoRA "
            "adapters (LoRA, QLoRA, DoRA, rsLoRA) only"
        )
    trained_on = cfg.get("base_model_name_or_path") or "an unnamed base"
    problems = fit_problems(adapter_shapes(weights), model)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise AdapterError(
            f"adapter {adapter_dir} does not fit the base model {base_label}: "
            f"{'; '.join(problems[:3])}{more}. It was trained on {trained_on}; choose that base "
            "model (or leave the base empty to use the adapter's own)."
        )
    if _base_differs(trained_on, base_label):
        return [
            f"adapter {display_name(adapter_dir)} was trained on {trained_on}, not {base_label}; the shapes "
            "fit, but answers may be poor if the weights differ"
        ]
    return []


def _base_differs(trained_on: str, base_label: str) -> bool:
    from app.modeling import DEFAULT_ALIASES, default_model_dir

    def norm(name: str) -> str:
        if name in DEFAULT_ALIASES or Path(name).expanduser() == default_model_dir():
            return "<default>"
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name.rstrip("/")

    return norm(trained_on) != norm(base_label)


def candidates(output_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, path) of every run's final adapter/model and its checkpoints, newest run first."""
    out: list[tuple[str, str]] = []
    for run in runs.list_runs(output_dir):
        if run.adapter is not None:
            out.append((f"{run.id} ({run.adapter.name})", str(run.adapter)))
        for ckpt in reversed(history.checkpoints(run.path)):
            out.append((f"{run.id}/{ckpt.name}", str(ckpt)))
    return out
