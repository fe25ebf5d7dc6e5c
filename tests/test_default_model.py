"""The embedded default model: fetched and converted once, then loads from the cache and answers."""

from __future__ import annotations

import json

import pytest

from app import modeling
from app.config import ModelConfig


@pytest.mark.slow
def test_default_model_cache_is_a_safetensors_folder_with_chat_template(default_model_dir):
    files = {p.name for p in default_model_dir.iterdir()}
    assert "config.json" in files and "model.safetensors" in files and "tokenizer.json" in files
    assert not any(name.endswith(".bin") for name in files)
    config = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tok = modeling.load_tokenizer(str(default_model_dir))
    assert "<|im_start|>" in tok.chat_template


@pytest.mark.slow
def test_default_model_answers_paris_greedy(default_model_dir):
    loaded = modeling.load_model(ModelConfig())
    assert loaded.path == str(default_model_dir)
    assert loaded.device == "cpu" and loaded.dtype == "float32"
    assert loaded.info["linear_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    tok, model = loaded.tokenizer, loaded.model
    batch = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**batch, max_new_tokens=24, do_sample=False)
    answer = tok.decode(out[0][batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_aliases_resolve_to_the_cache_folder(default_model_dir):
    for alias in ("smollm2-135m-instruct", "default", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert modeling.resolve_model(alias) == str(default_model_dir)


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(modeling.ModelError, match="no config.json"):
        modeling.resolve_model(str(tmp_path))


def test_missing_path_and_uncached_hub_id_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(modeling.ModelError, match="not found"):
        modeling.resolve_model(str(tmp_path / "nope" / "model.gguf"))
    with pytest.raises(modeling.ModelError) as err:
        modeling.resolve_model("some-org/some-model-that-is-not-cached")
    assert "some-org/some-model-that-is-not-cached" in str(err.value)
    assert "python -m app download model" in str(err.value)


def test_corrupt_gguf_is_refused_with_a_clear_message(tmp_path):
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"PNG\x00" * 100)
    with pytest.raises(modeling.ModelError, match="not a GGUF"):
        modeling.resolve_model(str(fake))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(modeling.ModelError, match="damaged or truncated"):
        modeling.resolve_model(str(truncated))


def test_tiny_model_folder_loads_and_lists_linear_modules(tiny_model_dir):
    loaded = modeling.load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert loaded.info["layers"] == 2
    assert set(loaded.info["linear_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_pickle_only_folder_is_refused_by_default(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(modeling.ModelError, match="pickle"):
        modeling.load_model(ModelConfig(name_or_path=str(folder)))
