"""llama.cpp in TuneDesk, through its Python bindings (llama-cpp-python): install, quantize, load and decode.

The one home of llama.cpp here: the Export tab's quantized GGUF types (Q4_K_M, Q5_K_M, ...) come from llama.cpp's
own quantizer, and the GGUF parity check (app.gguf_check) decodes exported files with llama.cpp itself, as
llama-server and Ollama will, rather than with transformers' GGUF loader.

    if not llamacpp.available():
        print(llamacpp.missing_message())
    llamacpp.quantize(f16_path, out / "model-q4_k_m.gguf", llamacpp.FTYPES["q4_k_m"])
    with llamacpp.open_model(path) as model:
        ids = model.greedy(model.tokenize(prompt_text), max_new_tokens=48)
        print(model.detokenize(ids))

The package is optional (the `gguf` extra): it is built from source, so it is imported only inside functions, and
every entry point raises LlamaCppError with missing_message() when it is absent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.gguf import GGUF_TYPES

REQUIREMENT = "llama-cpp-python==0.3.36"
"""The pin pip installs (pyproject's optional extra `gguf` holds the same string)."""

FTYPES: dict[str, int] = {name: kind.ftype for name, kind in GGUF_TYPES.items() if name not in ("f16", "f32")}
"""llama.cpp's llama_ftype numbers (LLAMA_FTYPE_MOSTLY_*) of the quantized types, from app.gguf's one table of GGUF
types (a test checks each against llama_cpp's own constant)."""

REPACKING_NOTE = (
    "llama.cpp's extra CPU buffer types (weight repacking, e.g. AMX) are off when TuneDesk loads a GGUF: with them "
    "llama_decode crashes on Q8_0/Q4_x files on some CPUs (ggml-org/llama.cpp#20824); the numbers are the same, "
    "only slower on CPUs that support repacking"
)
"""Said in the parity report, so a person comparing speeds with llama-server knows why they may differ."""

BUILD_MINUTES = "about 20-35 minutes on 2 CPU cores, a few minutes on a big machine"
_TAIL_LINES = 20

# ggml_log_level (ggml.h): 1 DEBUG, 2 INFO, 3 WARN, 4 ERROR, 5 CONT (continues the previous line at its level);
# llama_cpp/_logger.py's table predates DEBUG's move to 1
_WARN, _ERROR, _CONT = 3, 4, 5

_lock = threading.Lock()  # model loading and quantizing share the one global log callback
_backend_ready = False


class LlamaCppError(RuntimeError):
    """llama.cpp is missing or failed; the message names the file and says what to do."""


# ---- install -------------------------------------------------------------------------------------------------
def available() -> bool:
    """True when llama-cpp-python imports here (its shared library included)."""
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # load_shared_library raises RuntimeError for a missing .so
        return False
    return True


def missing_message() -> str:
    """What to install when llama.cpp's bindings are missing, and what that costs."""
    return (
        f"llama.cpp's Python bindings ({REQUIREMENT}) are not installed: install them with "
        f'pip install "tunedesk[gguf]" (or {sys.executable} -m pip install "{REQUIREMENT}"), or the Export tab\'s '
        f"Install button. pip builds llama.cpp from source: {BUILD_MINUTES}."
    )


def _require() -> Any:
    """llama_cpp.llama_cpp: the ctypes bindings of llama.h (one Python function per C function)."""
    try:
        import llama_cpp.llama_cpp as lib
    except (ImportError, OSError, RuntimeError):
        raise LlamaCppError(missing_message()) from None
    return lib


def build_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment pip builds llama.cpp in: no multimodal library (-DLLAVA_BUILD=OFF: TuneDesk never uses it,
    and it is a fifth of the build) and every core, unless the user's own CMAKE_ARGS / parallel level say otherwise.

    >>> build_env({"CMAKE_ARGS": "-DGGML_CUDA=on"})["CMAKE_ARGS"]
    '-DGGML_CUDA=on -DLLAVA_BUILD=OFF'
    """
    out = dict(os.environ if env is None else env)
    args = out.get("CMAKE_ARGS", "").strip()
    if "LLAVA_BUILD" not in args:
        out["CMAKE_ARGS"] = f"{args} -DLLAVA_BUILD=OFF".strip()
    out.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    return out


def install(
    log: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    *,
    requirement: str = REQUIREMENT,
    pip_args: Sequence[str] = (),
) -> None:
    """pip install `requirement` into this Python, streaming pip's lines to `log`; killed when `cancel` is set.

    Raises LlamaCppError with pip's last lines when it fails or is cancelled."""
    cmd = [sys.executable, "-m", "pip", "install", *pip_args, requirement]
    proc = subprocess.Popen(
        cmd, env=build_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    stopped = threading.Event()
    if cancel is not None:  # a watcher, since the reading loop below blocks on pip's output
        threading.Thread(target=_kill_on, args=(cancel, stopped, proc), daemon=True).start()
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            if log is not None:
                log(line.rstrip())
        code = proc.wait()
    finally:
        stopped.set()
    if cancel is not None and cancel.is_set():
        raise LlamaCppError(f"installing {requirement} was cancelled; nothing half-built is kept by pip")
    if code != 0:
        raise LlamaCppError(
            f"pip install {requirement} failed (exit {code}); its last lines:\n" + "\n".join(tail)
            + "\nA build needs a C++ compiler and cmake (apt install build-essential cmake)."
        )  # fmt: skip
    import importlib

    importlib.invalidate_caches()


def _kill_on(cancel: threading.Event, stopped: threading.Event, proc: subprocess.Popen) -> None:
    while not stopped.is_set():
        if cancel.wait(0.2):
            proc.kill()
            return


# ---- llama.cpp's log: kept out of the terminal, its warnings kept for the report ------------------------------
@contextlib.contextmanager
def _captured_log() -> Iterator[list[str]]:
    """Route llama.cpp's log into a list of its WARN/ERROR lines for the duration (INFO is dropped: verbose=False)."""
    global _backend_ready
    lib = _require()
    lines: list[str] = []
    last = [0]

    def keep(level: int, text: bytes, _user: Any) -> None:
        level = last[0] if level == _CONT else level
        last[0] = level
        if level in (_WARN, _ERROR):
            lines.append(text.decode("utf-8", "replace"))

    callback = lib.llama_log_callback(keep)  # referenced until restored: ctypes must not free it
    with _lock:
        lib.llama_log_set(callback, ctypes.c_void_p(0))
        try:
            if not _backend_ready:
                lib.llama_backend_init()
                _backend_ready = True
            yield lines
        finally:
            from llama_cpp import _logger

            lib.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def _log_lines(lines: list[str]) -> list[str]:
    """Whole lines from the pieces llama.cpp logged (it may send one line in several calls)."""
    return [x.strip() for x in "".join(lines).splitlines() if x.strip()]


def check_file(path: Path) -> Path:
    """`path`, when it is a GGUF file (its first 4 bytes say so); LlamaCppError otherwise."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LlamaCppError(f"{path}: no such file; give the path of a .gguf file")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise LlamaCppError(f"{path}: not a GGUF file (it does not start with 'GGUF'); give a .gguf file")
    return path


# ---- quantize ------------------------------------------------------------------------------------------------
def quantize(src: Path, dst: Path, ftype: int, threads: int | None = None) -> None:
    """llama.cpp's own quantizer: `src` (an F16/F32 GGUF) written as `dst` in the llama_ftype `ftype`.

    Written beside `dst` under a temporary name and renamed when complete. Tensors whose rows do not fit the type's
    block (256 values for K-quants) get llama.cpp's own fallback type."""
    lib = _require()
    src, dst = check_file(Path(src)), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    try:
        with _captured_log() as lines:
            code = lib.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if code != 0 or not tmp.is_file():
            said = "; ".join(_log_lines(lines)[-5:]) or "no message"
            raise LlamaCppError(
                f"llama.cpp could not quantize {src} to {_ftype_label(ftype)} (return code {code}): {said}"
            )
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)


def _ftype_label(ftype: int) -> str:
    names = {v: k for k, v in FTYPES.items()}
    return f"{names[ftype]} (llama_ftype {ftype})" if ftype in names else f"llama_ftype {ftype}"


# ---- load and decode -----------------------------------------------------------------------------------------
@dataclass
class LlamaModel:
    """A GGUF loaded in llama.cpp with one context: tokenize, detokenize and greedy decoding, nothing else."""

    path: Path
    metadata: dict[str, str]
    """llama.cpp's model metadata (tokenizer.chat_template, general.file_type, ...), every value as a string."""
    eos_id: int
    eog_ids: set[int]
    """Every end-of-generation token (EOS, EOT, <|im_end|> ...), as llama.cpp stops on them."""
    add_bos: bool
    n_ctx: int
    warnings: list[str] = field(default_factory=list)
    """WARN/ERROR lines llama.cpp logged while loading (none for a well-formed file)."""
    _lib: Any = field(repr=False, default=None)
    _model: Any = field(repr=False, default=None)
    _ctx: Any = field(repr=False, default=None)
    _vocab: Any = field(repr=False, default=None)
    n_vocab: int = 0

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's tokens for `text`, special tokens (<|im_start|>) parsed, BOS only when the GGUF says add_bos."""
        lib, data = self._lib, text.encode("utf-8")
        size = len(data) + 8
        buf = (lib.llama_token * size)()
        n = lib.llama_tokenize(self._vocab, data, len(data), buf, size, True, True)
        if n < 0:  # the buffer was too small: -n is the size needed
            size = -n
            buf = (lib.llama_token * size)()
            n = lib.llama_tokenize(self._vocab, data, len(data), buf, size, True, True)
        if n < 0:
            raise LlamaCppError(f"{self.path}: llama.cpp could not tokenize a {len(data)}-byte text")
        return list(buf[:n])

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of `ids`; control tokens (<|im_end|>) are left out, as a chat front-end shows an answer."""
        lib = self._lib
        arr = (lib.llama_token * max(1, len(ids)))(*ids)
        size = 64 + 16 * len(ids)
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_detokenize(self._vocab, arr, len(ids), buf, size, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            size = -n + 1
        raise LlamaCppError(f"{self.path}: llama.cpp could not detokenize {len(ids)} tokens")

    def piece(self, token: int) -> str:
        """One token's text, special tokens shown (for messages: 'llama.cpp has <|im_end|> where ...')."""
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(0, n)].decode("utf-8", "replace")

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """The argmax continuation of `ids`, up to `max_new_tokens`, ending with the first end-of-generation token
        (included, as transformers' generate includes it). The KV cache is cleared first: each call is alone."""
        import numpy as np

        lib = self._lib
        if not ids:
            raise LlamaCppError("greedy decoding needs at least one prompt token")
        if len(ids) + max_new_tokens > self.n_ctx:
            raise LlamaCppError(
                f"{len(ids)} prompt tokens + {max_new_tokens} new ones exceed the context of {self.n_ctx} tokens"
            )
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        out: list[int] = []
        batch = list(ids)
        for _ in range(max_new_tokens):
            arr = (lib.llama_token * len(batch))(*batch)
            # llama_batch_get_one: one sequence, logits of its last token only
            code = lib.llama_decode(self._ctx, lib.llama_batch_get_one(arr, len(batch)))
            if code != 0:
                raise LlamaCppError(f"{self.path}: llama_decode failed (code {code}) after {len(out)} tokens")
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self.n_vocab,))
            token = int(np.argmax(logits))  # the first of equal maxima, as torch.argmax in transformers' greedy
            out.append(token)
            if token in self.eog_ids:
                break
            batch = [token]
        return out


@contextlib.contextmanager
def open_model(path: Path, lora: Path | None = None, n_ctx: int = 2048) -> Iterator[LlamaModel]:
    """`with open_model(path) as model:` a GGUF loaded on the CPU (with `lora`, a LoRA GGUF, applied at scale 1).

    Built on llama.cpp's C API rather than llama_cpp.Llama: Llama.__init__ takes its model parameters from
    llama_model_default_params() and offers no use_extra_bufts, so turning repacking off there would mean patching a
    module function that any other thread's Llama would also see; the C API takes the parameters as given, and
    greedy decoding needs no more than decode + logits + argmax. Freed on leaving the block."""
    lib = _require()
    path = check_file(Path(path))
    if lora is not None:
        lora = check_file(Path(lora))
    model = ctx = None
    try:
        with _captured_log() as lines:
            params = lib.llama_model_default_params()
            params.use_extra_bufts = False  # REPACKING_NOTE
            model = lib.llama_model_load_from_file(str(path).encode(), params)
            if not model:
                raise LlamaCppError(f"llama.cpp could not load {path}: {_said(lines)}{_hint(lines)}")
            handle = _load_lora(lib, model, lora, lines) if lora is not None else None
            vocab = lib.llama_model_get_vocab(model)
            n = min(n_ctx, lib.llama_model_n_ctx_train(model) or n_ctx)
            ctx = lib.llama_init_from_model(model, _context_params(lib, n))
            if not ctx:
                raise LlamaCppError(f"llama.cpp could not make a {n}-token context for {path}: {_said(lines)}")
            if handle is not None and lib.llama_set_adapters_lora(ctx, (lib.llama_adapter_lora_p_ctypes * 1)(handle),
                                                                  1, (ctypes.c_float * 1)(1.0)) != 0:  # fmt: skip
                raise LlamaCppError(f"llama.cpp could not apply the LoRA {lora} to {path}: {_said(lines)}")
            n_vocab = lib.llama_vocab_n_tokens(vocab)
            loaded = LlamaModel(
                path=path,
                metadata=_metadata(lib, model),
                eos_id=lib.llama_vocab_eos(vocab),
                eog_ids={t for t in range(n_vocab) if lib.llama_vocab_is_eog(vocab, t)},
                add_bos=bool(lib.llama_vocab_get_add_bos(vocab)),
                n_ctx=n,
                _lib=lib,
                _model=model,
                _ctx=ctx,
                _vocab=vocab,
                n_vocab=n_vocab,
            )
        loaded.warnings = _log_lines(lines)
        yield loaded
    finally:
        with _captured_log():  # llama.cpp logs what it frees
            if ctx:
                lib.llama_free(ctx)
            if model:
                lib.llama_model_free(model)  # frees its LoRA adapters too


def _load_lora(lib: Any, model: Any, lora: Path, lines: list[str]) -> Any:
    handle = lib.llama_adapter_lora_init(model, str(lora).encode())
    if not handle:
        raise LlamaCppError(
            f"llama.cpp could not load the LoRA {lora} (it must be a LoRA GGUF made for this base): {_said(lines)}"
        )
    return handle


def _context_params(lib: Any, n_ctx: int) -> Any:
    from app.threads import cpu_threads

    params = lib.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx  # a whole prompt in one llama_decode call
    params.n_threads = params.n_threads_batch = cpu_threads()
    return params


def _hint(lines: list[str]) -> str:
    """What to do about the load failures people meet with exported files."""
    said = "".join(lines)
    if "unknown pre-tokenizer type" in said:
        return (
            ". The file's tokenizer.ggml.pre names a pre-tokenizer this llama.cpp does not know: re-export it "
            "(TuneDesk, or llama.cpp's convert_hf_to_gguf.py) or update llama.cpp"
        )
    if "unknown model architecture" in said:
        return ". This llama.cpp does not know the file's architecture: update llama.cpp"
    return ""


def _said(lines: list[str]) -> str:
    return "; ".join(_log_lines(lines)[-5:]) or "no message from llama.cpp (is the file complete?)"


def _metadata(lib: Any, model: Any) -> dict[str, str]:
    """Every metadata key and value llama.cpp read from the file (values as strings; arrays are summarised)."""

    def text(fn: Any, i: int) -> str:
        size = 1024
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = fn(model, i, buf, size)
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1
        return buf.value.decode("utf-8", "replace")

    count = lib.llama_model_meta_count(model)
    return {
        text(lib.llama_model_meta_key_by_index, i): text(lib.llama_model_meta_val_str_by_index, i)
        for i in range(count)
    }
