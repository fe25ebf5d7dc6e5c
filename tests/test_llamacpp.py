"""app.llamacpp on the tiny Llama: llama.cpp's quantizer writes Q8_0/Q4_0 files that load and decode, tokenization
matches the Hugging Face tokenizer, broken files give one clear message; the install's build environment and a
failing pip's message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app import gguf, llamacpp
from app.llamacpp import FTYPES, LlamaCppError

TEXTS = [
    "What is the capital of France?",
    "你好，我是一个有用的助手。",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    " 12345 ab!!",
]


@pytest.fixture(scope="module")
def tiny_f16(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny Llama (hidden 64: Q8_0/Q4_0 blocks of 32 fit; K-quants fall back by llama.cpp's own rule) as F16."""
    path = tmp_path_factory.mktemp("tiny-gguf") / "model-f16.gguf"
    gguf.write(tiny_model_dir, path, "f16", progress=lambda f, m: None)
    return path


# ---- install ----------------------------------------------------------------------------------------------------
def test_build_env_adds_no_llava_and_all_cores_unless_set():
    env = llamacpp.build_env({"PATH": "/bin"})
    assert env["CMAKE_ARGS"] == "-DLLAVA_BUILD=OFF" and env["PATH"] == "/bin"
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"].isdigit() and int(env["CMAKE_BUILD_PARALLEL_LEVEL"]) >= 1
    user = llamacpp.build_env({"CMAKE_ARGS": "-DGGML_CUDA=on", "CMAKE_BUILD_PARALLEL_LEVEL": "3"})
    assert user["CMAKE_ARGS"] == "-DGGML_CUDA=on -DLLAVA_BUILD=OFF" and user["CMAKE_BUILD_PARALLEL_LEVEL"] == "3"
    own = llamacpp.build_env({"CMAKE_ARGS": "-DLLAVA_BUILD=ON"})  # the user's own choice wins
    assert own["CMAKE_ARGS"] == "-DLLAVA_BUILD=ON"


def test_missing_message_says_what_to_install():
    text = llamacpp.missing_message()
    assert llamacpp.REQUIREMENT in text and 'pip install "tunedesk[gguf]"' in text and "Install button" in text
    assert "minutes" in text


def test_install_failure_brings_pips_own_message():
    lines: list[str] = []
    with pytest.raises(LlamaCppError) as err:  # --no-index: no network, pip fails in a second
        llamacpp.install(lines.append, requirement="nonexistent-pkg-xyz==0.0.1", pip_args=["--no-index"])
    message = str(err.value)
    assert "pip install nonexistent-pkg-xyz==0.0.1 failed" in message
    assert "No matching distribution found for nonexistent-pkg-xyz" in message  # pip's own line, passed through
    assert any("nonexistent-pkg-xyz" in line for line in lines)  # and streamed to the log as it came


def test_install_cancel_kills_pip():
    cancel = threading.Event()
    cancel.set()
    start = time.monotonic()
    with pytest.raises(LlamaCppError, match="cancelled"):
        llamacpp.install(None, cancel, requirement="nonexistent-pkg-xyz==0.0.1", pip_args=["--no-index"])
    assert time.monotonic() - start < 30


# ---- quantize, load, decode -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "ftype"), [("q8_0", 7), ("q4_0", 2), ("q5_0", 8)])
def test_quantize_writes_a_file_that_loads(llama_cpp, tiny_f16, tmp_path, name, ftype):
    assert FTYPES[name] == ftype == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.upper()}")
    for quant, number in FTYPES.items():  # the whole table, K-quants included, as llama.cpp numbers them
        assert number == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}"), quant
    out = tmp_path / f"model-{name}.gguf"
    llamacpp.quantize(tiny_f16, out, FTYPES[name])
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # the temporary file was renamed
    assert out.stat().st_size < tiny_f16.stat().st_size
    with llamacpp.open_model(out) as model:
        assert model.metadata["general.file_type"] == str(ftype)
        assert model.warnings == []  # loads with no warnings
        ids = model.greedy(model.tokenize(TEXTS[2]), 8)
        assert 1 <= len(ids) <= 8 and all(0 <= t < model.n_vocab for t in ids)


def test_k_quant_falls_back_on_small_rows(llama_cpp, tiny_f16, tmp_path):
    out = tmp_path / "model-q4_k_m.gguf"  # rows of 64 values: no 256-value K block fits, llama.cpp picks a fallback
    llamacpp.quantize(tiny_f16, out, FTYPES["q4_k_m"])
    with llamacpp.open_model(out) as model:
        assert model.metadata["general.file_type"] == "15"


def test_quantize_refuses_what_is_not_a_gguf(llama_cpp, tmp_path):
    with pytest.raises(LlamaCppError, match="no such file"):
        llamacpp.quantize(tmp_path / "none.gguf", tmp_path / "out.gguf", FTYPES["q8_0"])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LlamaCppError, match="not a GGUF file"):
        llamacpp.quantize(tmp_path / "notes.txt", tmp_path / "out.gguf", FTYPES["q8_0"])
    assert not (tmp_path / "out.gguf").exists()


def test_tokens_and_ends_match_the_hf_tokenizer(llama_cpp, tiny_f16, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with llamacpp.open_model(tiny_f16) as model:
        assert model.warnings == []
        for text in TEXTS:  # special tokens parsed; no BOS (the tiny tokenizer adds none, nor does the GGUF)
            assert model.tokenize(text) == tok(text, add_special_tokens=False).input_ids, text
            assert model.detokenize(model.tokenize(text)) == text.replace("<|im_start|>", "").replace(
                "<|im_end|>", ""
            )  # control tokens are not shown in an answer
        assert model.add_bos is False and model.eos_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
        assert model.eos_id in model.eog_ids and model.piece(model.eos_id) == "<|im_end|>"
        assert model.metadata["tokenizer.chat_template"] == tok.chat_template
        assert model.n_ctx == 512  # the model's own context, below the 2048 asked
        with pytest.raises(LlamaCppError, match="exceed the context of 512"):
            model.greedy(model.tokenize(TEXTS[0]), 600)
        first = model.greedy(model.tokenize(TEXTS[2]), 12)
        assert model.greedy(model.tokenize(TEXTS[2]), 12) == first  # each call starts from an empty KV cache


def test_open_model_refuses_broken_files(llama_cpp, tiny_f16, tmp_path):
    with pytest.raises(LlamaCppError, match="no such file"):
        with llamacpp.open_model(tmp_path / "missing.gguf"):
            pass
    (tmp_path / "weights.bin").write_bytes(b"\0" * 64)
    with pytest.raises(LlamaCppError, match="not a GGUF file"):
        with llamacpp.open_model(tmp_path / "weights.bin"):
            pass
    cut = tmp_path / "cut.gguf"  # an interrupted download: the header is there, the tensors are not
    cut.write_bytes(tiny_f16.read_bytes()[: tiny_f16.stat().st_size // 2])
    with pytest.raises(LlamaCppError, match=f"llama.cpp could not load {cut}"):
        with llamacpp.open_model(cut):
            pass
