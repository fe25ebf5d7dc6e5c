"""modeling: inspect a model without loading weights, LoRA config mapping, preparing a model for each method."""

from __future__ import annotations

import json
import time

import pytest
import torch

from app import modeling
from app.config import ModelConfig, QuantConfig, RunConfig


def test_inspect_model_matches_the_loaded_model(tiny_model_dir):
    info = modeling.inspect_model(str(tiny_model_dir))
    loaded = modeling.load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert info["parameters"] == modeling.count_params(loaded.model)[1]
    assert info["architecture"] == "LlamaForCausalLM" and info["layers"] == 2
    assert info["linear_modules"] == modeling.linear_module_names(loaded.model)
    assert {"q_proj", "v_proj", "down_proj"} <= set(info["linear_modules"]) and "lm_head" not in info["linear_modules"]
    assert info["chat_template"] is True and info["dtype"] == "float32"


def test_inspect_a_70b_config_without_weights(tmp_path):
    config = {  # Llama-3.1-70B's config.json numbers; no weight file exists
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    t0 = time.perf_counter()
    info = modeling.inspect_model(str(tmp_path))
    assert time.perf_counter() - t0 < 60
    assert 70.0e9 < info["parameters"] < 71.0e9  # 70.55B
    assert info["layers"] == 80 and info["dtype"] == "bfloat16" and info["chat_template"] is False
    assert info["linear_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_inspect_model_names_a_missing_folder(tmp_path):
    with pytest.raises(modeling.ModelError, match="no-model"):
        modeling.inspect_model(str(tmp_path / "no-model" / "x"))


def test_peft_lora_config_maps_every_field():
    cfg = RunConfig().replace(
        **{
            "lora.rank": 16,
            "lora.alpha": 32.0,
            "lora.dropout": 0.1,
            "lora.target_modules": "all-linear",
            "lora.use_dora": True,
            "lora.use_rslora": True,
        }
    )
    lc = modeling.peft_lora_config(cfg)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, lc.use_dora, lc.use_rslora) == (16, 32.0, 0.1, True, True)
    assert lc.target_modules == "all-linear" and lc.task_type == "CAUSAL_LM"
    assert set(modeling.peft_lora_config(RunConfig()).target_modules) == {"q_proj", "v_proj"}


def _loaded(tiny_model_dir, bits=None):
    return modeling.load_model(ModelConfig(name_or_path=str(tiny_model_dir)), QuantConfig(bits=bits))


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_prepare_for_method_sets_what_trains(tiny_model_dir):
    cfg = RunConfig().replace(**{"model.name_or_path": str(tiny_model_dir), "freeze.trainable_layers": 1})
    full = modeling.prepare_for_method(_loaded(tiny_model_dir), cfg.replace(method="full"))
    assert _trainable(full) == {name for name, _ in full.named_parameters()}

    frozen = modeling.prepare_for_method(_loaded(tiny_model_dir), cfg.replace(method="freeze"))
    assert _trainable(frozen) and all(n.startswith("model.layers.1.") for n in _trainable(frozen))
    norms = modeling.prepare_for_method(
        _loaded(tiny_model_dir), cfg.replace(**{"method": "freeze", "freeze.train_norms": True})
    )
    assert "model.norm.weight" in _trainable(norms) and "model.layers.0.input_layernorm.weight" in _trainable(norms)
    with pytest.raises(modeling.ModelError, match="only 2 decoder layers"):
        modeling.prepare_for_method(
            _loaded(tiny_model_dir), cfg.replace(**{"method": "freeze", "freeze.trainable_layers": 5})
        )

    lora = modeling.prepare_for_method(_loaded(tiny_model_dir), cfg.replace(**{"lora.target_modules": "all-linear"}))
    assert _trainable(lora) and all("lora_" in n for n in _trainable(lora))
    assert {n.split(".")[-4] for n in _trainable(lora)} >= {"q_proj", "down_proj", "gate_proj"}


def test_prepare_for_qlora_on_a_4bit_base(tiny_model_dir):
    import bitsandbytes as bnb

    cfg = RunConfig().replace(
        **{
            "model.name_or_path": str(tiny_model_dir),
            "method": "qlora",
            "quant.bits": 4,
            "train.gradient_checkpointing": True,
        }
    )
    model = modeling.prepare_for_method(_loaded(tiny_model_dir, bits=4), cfg)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert _trainable(model) and all("lora_" in n for n in _trainable(model))
    assert modeling.base_model(model).is_gradient_checkpointing
    # k-bit preparation keeps the non-quantized weights (norms, embeddings) in float32 for stable training
    assert modeling.base_model(model).model.norm.weight.dtype == torch.float32


def test_resolve_dtype_keeps_fp32_on_cpu():
    assert modeling.resolve_dtype("auto", "cpu") == torch.float32
    assert modeling.resolve_dtype("bf16", "cpu") == torch.bfloat16


def test_a_qlora_model_still_learns_after_an_answer_in_eval_mode(tiny_model_dir):
    """bitsandbytes repacks 4-bit weights for CPU inference at an eval-mode forward without gradients and never
    back (on CPUs with AVX512-BF16); the did-it-learn check answers before the first step, evaluations answer
    mid-run: gradients must still reach every LoRA layer afterwards."""
    cfg = RunConfig().replace(**{
        "model.name_or_path": str(tiny_model_dir), "method": "qlora", "quant.bits": 4,
        "train.gradient_checkpointing": False, "lora.target_modules": ["q_proj", "v_proj"],
    })  # fmt: skip
    model = modeling.prepare_for_method(_loaded(tiny_model_dir, bits=4), cfg)
    ids = torch.arange(3, 19).unsqueeze(0)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    states = [m.weight.quant_state for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert states and not any(getattr(q, "packing_format_for_cpu", False) for q in states)
