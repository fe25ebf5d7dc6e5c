"""The memory estimator: exact trainable counts against PEFT, reading architectures from folders and GGUF files,
monotonic behaviour, fixes, the method comparison and the CLI on every preset."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from app import __main__ as cli
from app import accel, devices, estimate, memory, objective_table
from app.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
DEFAULT_GGUF = Path.home() / ".cache" / "tunedesk" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GIB = memory.GIB


def _cfg(name: str, **changes) -> RunConfig:
    return RunConfig().replace(**{"model.name_or_path": name, **changes})


# ---- exact trainable parameters (real PEFT on real models) ---------------------------------------------------
def _peft_trainable(folder: Path, targets, rank: int, dora: bool) -> int:
    import peft
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    model = peft.get_peft_model(model, peft.LoraConfig(r=rank, target_modules=targets, use_dora=dora))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


LORA_CASES = [
    (["q_proj", "v_proj"], 8, False),
    (["q_proj", "v_proj"], 4, True),
    ("all-linear", 8, False),
    ("all-linear", 16, True),
    (["o_proj", "gate_proj", "down_proj"], 2, False),
]


@pytest.mark.parametrize(("targets", "rank", "dora"), LORA_CASES)
def test_lora_trainable_params_equal_peft_on_the_tiny_model(tiny_model_dir, targets, rank, dora):
    cfg = _cfg(str(tiny_model_dir), **{"lora.target_modules": targets, "lora.rank": rank, "lora.use_dora": dora})
    est = memory.estimate(memory.architecture_from(str(tiny_model_dir)), cfg)
    assert est.trainable_params == _peft_trainable(tiny_model_dir, targets, rank, dora)


@pytest.mark.parametrize(("layers", "norms"), [(1, False), (1, True), (2, False)])
def test_freeze_trainable_params_equal_freeze_all_but_last(tiny_model_dir, layers, norms):
    from transformers import AutoModelForCausalLM

    from app.modeling import freeze_all_but_last

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    freeze_all_but_last(model, layers, norms)
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cfg = _cfg(
        str(tiny_model_dir), method="freeze", **{"freeze.trainable_layers": layers, "freeze.train_norms": norms}
    )
    assert memory.estimate(memory.architecture_from(str(tiny_model_dir)), cfg).trainable_params == expected


def test_full_counts_every_param_of_the_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    est = memory.estimate(memory.architecture_from(str(tiny_model_dir)), _cfg(str(tiny_model_dir), method="full"))
    assert est.trainable_params == est.total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(("targets", "rank", "dora"), [(["q_proj", "v_proj"], 8, False), ("all-linear", 16, True)])
def test_lora_trainable_params_equal_peft_on_the_default_model(default_model_dir, targets, rank, dora):
    arch = memory.architecture_from(str(default_model_dir))
    cfg = _cfg(str(default_model_dir), **{"lora.target_modules": targets, "lora.rank": rank, "lora.use_dora": dora})
    assert memory.estimate(arch, cfg).trainable_params == _peft_trainable(default_model_dir, targets, rank, dora)


@pytest.mark.slow
def test_default_model_folder_matches_the_loaded_model_and_the_catalog(default_model_dir):
    from transformers import AutoModelForCausalLM

    arch = memory.architecture_from(str(default_model_dir))
    model = AutoModelForCausalLM.from_pretrained(default_model_dir)
    assert arch.total_params == sum(p.numel() for p in model.parameters()) == 134_515_008
    assert (arch.layers, arch.hidden, arch.vocab, arch.tied) == (30, 576, 49152, True)
    assert arch.total_params == memory.architecture_from("smollm2-135m-instruct").total_params


def test_gguf_metadata_gives_the_same_architecture_as_the_catalog():
    if not DEFAULT_GGUF.is_file():
        pytest.skip(f"{DEFAULT_GGUF} is absent")
    arch = memory.architecture_from(str(DEFAULT_GGUF))
    known = memory.architecture_from("smollm2-135m-instruct")
    assert (arch.linears, arch.total_params, arch.tied, arch.layers) == (
        known.linears,
        known.total_params,
        True,
        30,
    )


# ---- reading architectures and the errors people meet ----------------------------------------------------------
def test_folder_with_only_config_json_is_enough(tmp_path):
    cfg = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24}
    cfg |= {"num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert memory.architecture_from(str(tmp_path)).total_params == 494_032_768  # Qwen2.5-0.5B


def test_unknown_names_and_bad_folders_say_what_to_do(tmp_path):
    with pytest.raises(memory.EstimateError, match="catalog id"):
        memory.architecture_from("no-such/model-anywhere")
    with pytest.raises(memory.EstimateError, match="no config.json"):
        memory.architecture_from(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(memory.EstimateError, match="not readable JSON"):
        memory.architecture_from(str(tmp_path))
    with pytest.raises(memory.EstimateError, match="GGUF file not found"):
        memory.architecture_from(str(tmp_path / "missing.gguf"))


def test_bad_targets_and_too_many_frozen_layers_are_explained():
    arch = memory.architecture_from("smollm2-135m-instruct")
    with pytest.raises(memory.EstimateError, match="q_proj, k_proj"):
        memory.estimate(arch, _cfg("smollm2-135m-instruct", **{"lora.target_modules": ["query"]}))
    with pytest.raises(memory.EstimateError, match="only 30 decoder layers"):
        memory.estimate(arch, _cfg("smollm2-135m-instruct", method="freeze", **{"freeze.trainable_layers": 31}))


# ---- the physics: monotonic, ordered, the right terms move ---------------------------------------------------------
MODELS = ["smollm2-135m-instruct", "llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "gemma-2-2b", "phi-3-mini"]
SETTINGS = list(
    itertools.product(MODELS, ["full", "freeze", "lora", "qlora"], [True, False], ["sdpa", "eager"], ["cuda", "cpu"])
)


def _setting(model: str, method: str, ckpt: bool, attn: str) -> RunConfig:
    return _cfg(
        model,
        method=method,
        **{
            "quant.bits": 4 if method == "qlora" else None,
            "train.gradient_checkpointing": ckpt,
            "model.attn_implementation": attn,
            "lora.target_modules": "all-linear" if model == "phi-3-mini" else ["q_proj", "v_proj"],
        },
    )


@pytest.mark.parametrize(("model", "method", "ckpt", "attn", "device"), SETTINGS)
def test_raising_rank_batch_or_seq_never_lowers_the_estimate(model, method, ckpt, attn, device):
    arch = memory.architecture_from(model)
    cfg = _setting(model, method, ckpt, attn)
    for key, values in (
        ("lora.rank", [1, 4, 16, 64]),
        ("train.batch_size", [1, 2, 3, 8]),
        ("data.max_seq_len", [64, 256, 1000, 4096]),
    ):
        totals = [memory.estimate(arch, cfg.replace(**{key: v}), device).total_bytes for v in values]
        assert totals == sorted(totals), f"{key}: {totals}"
        chunked = device == "cpu" and key == "train.batch_size"  # rows of max_seq_len: one per chunk on the CPU
        if method in ("lora", "qlora") and not chunked:  # (full fine-tuning of 8B can be bound by the optimizer step)
            assert totals[-1] > totals[0], f"{key} should matter for {method}"


def test_the_cpu_estimate_holds_one_chunk_of_rows_at_a_time():
    """On the CPU the supervised trainer runs a batch in chunks of at most Stack.cpu_chunk_tokens tokens: batch 4
    of 512-token rows holds one row's activations and logits at a time, batch 4 of 128-token rows all four (one
    chunk), batch 8 of 128 two chunks of four; a row longer than a chunk is its own chunk; batch 3 of 200-token rows
    is counted as a full chunk (any batch of the run may fill one); a GPU run, a preference run and a stack without
    chunks hold the whole batch."""
    arch = memory.architecture_from("smollm2-135m-instruct")
    cfg = _cfg("smollm2-135m-instruct", method="lora")

    def dynamic(batch: int, seq: int, device: str = "cpu", stack=None, **changes) -> int:
        est = memory.estimate(arch, cfg.replace(**{"train.batch_size": batch, "data.max_seq_len": seq, **changes}),
                              device, stack=stack)  # fmt: skip
        return est.breakdown["activations"] + est.breakdown["logits"]

    assert memory.Stack().cpu_chunk_tokens == accel.CPU_CHUNK_TOKENS
    assert dynamic(4, 512) == dynamic(1, 512)
    assert dynamic(4, 128) == dynamic(1, 512) > dynamic(2, 128)
    assert dynamic(8, 128) == dynamic(4, 128)
    assert dynamic(3, 200) == dynamic(1, 512) > max(accel.row_splits(3, 200, 512)) * dynamic(1, 200)
    assert dynamic(4, 1024) == dynamic(1, 1024) > dynamic(1, 512)
    assert dynamic(4, 512, "cuda") > 3 * dynamic(1, 512, "cuda")
    assert dynamic(4, 512, stack=memory.Stack(cpu_chunk_tokens=0)) > 3 * dynamic(1, 512)
    assert dynamic(4, 512, objective="dpo") > 3 * dynamic(1, 512, objective="dpo")


@pytest.mark.parametrize("model", MODELS)
def test_weights_shrink_from_16_to_8_to_4_bits(model):
    arch = memory.architecture_from(model)
    cfg = _cfg(model, method="qlora", **{"lora.target_modules": "all-linear"})
    by_bits = {b: memory.estimate(arch, cfg.replace(**{"quant.bits": b})) for b in (4, 8)}
    lora = memory.estimate(arch, cfg.replace(method="lora"))
    assert by_bits[4].breakdown["weights"] < by_bits[8].breakdown["weights"] < lora.breakdown["weights"]
    assert by_bits[4].total_bytes < by_bits[8].total_bytes < lora.total_bytes
    double = memory.estimate(arch, cfg.replace(**{"quant.bits": 4, "quant.double_quant": False}))
    assert by_bits[4].breakdown["weights"] < double.breakdown["weights"]


@pytest.mark.parametrize(("model", "method", "ckpt", "attn", "device"), [s for s in SETTINGS if s[2]])
def test_gradient_checkpointing_lowers_activations(model, method, ckpt, attn, device):
    arch = memory.architecture_from(model)
    on = memory.estimate(arch, _setting(model, method, True, attn), device)
    off = memory.estimate(arch, _setting(model, method, False, attn), device)
    assert on.breakdown["activations"] < off.breakdown["activations"]
    assert on.total_bytes < off.total_bytes


def test_eager_attention_grows_quadratically_and_sdpa_does_not():
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    cfg = _cfg("llama-3.1-8b-instruct", **{"train.gradient_checkpointing": False, "train.batch_size": 1})

    def acts(attn: str, seq: int) -> int:
        c = cfg.replace(**{"model.attn_implementation": attn, "data.max_seq_len": seq})
        return memory.estimate(arch, c).breakdown["activations"]

    assert acts("sdpa", 4096) == pytest.approx(2 * acts("sdpa", 2048), rel=0.01)
    assert acts("eager", 4096) > 2.5 * acts("eager", 2048)


def test_bf16_weights_cost_2_bytes_and_cpu_fp32_costs_4():
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    cfg = _cfg("llama-3.1-8b-instruct")
    assert memory.estimate(arch, cfg, "cuda").breakdown["weights"] == 2 * arch.total_params
    cpu = memory.estimate(arch, cfg, "cpu")
    assert cpu.breakdown["weights"] == 4 * arch.total_params
    assert cpu.breakdown["runtime"] == memory.Stack().process_baseline


def test_cpu_allocator_term_is_glibc_retention_and_leaves_cuda_alone():
    arch = memory.architecture_from("smollm2-135m-instruct")
    cfg = _cfg("smollm2-135m-instruct", **{"train.precision": "fp32", "train.gradient_checkpointing": False})
    stack = memory.Stack()
    for device, share in (("cpu", stack.cpu_allocator_share), ("cuda", stack.allocator_share)):
        parts = memory.estimate(arch, cfg, device).breakdown
        transient = parts["activations"] + parts["logits"] + parts["workspace"]
        assert parts["allocator"] == pytest.approx(share * transient, abs=2)
    # glibc keeps far more of a step's freed heap (bench/memory_cpu.py) than CUDA's caching allocator leaves free
    assert stack.cpu_allocator_share > 3 * stack.allocator_share
    no_retention = memory.Stack(cpu_allocator_share=0.0)
    assert memory.estimate(arch, cfg, "cuda", stack=no_retention) == memory.estimate(arch, cfg, "cuda")
    assert memory.estimate(arch, cfg, "cpu", stack=no_retention).breakdown["allocator"] == 0
    sizes = [
        memory.estimate(arch, cfg.replace(**{"train.batch_size": b, "data.max_seq_len": 64}), "cpu").breakdown[
            "allocator"
        ]
        for b in (1, 4, 8)  # 8 x 64 tokens: still one chunk on the CPU
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_nf4_weights_are_half_a_byte_plus_scales_on_linear_layers_only():
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    cfg = _cfg("llama-3.1-8b-instruct", method="qlora", **{"quant.bits": 4})
    linear = arch.linear_weight_params
    rest = arch.total_params - linear  # embeddings, lm_head, norms: fp32 after prepare_model_for_kbit_training
    weights = memory.estimate(arch, cfg).breakdown["weights"]
    assert weights == pytest.approx(linear * (0.5 + 0.127 / 8) + rest * 4, rel=1e-6)


def test_adamw_states_cost_2_per_param_width_and_8bit_about_2_bytes():
    arch = memory.architecture_from("llama-3.2-1b-instruct")
    cfg = _cfg("llama-3.2-1b-instruct", method="full")
    torch_adam = memory.estimate(arch, cfg).breakdown["optimizer"]
    assert torch_adam == 4 * arch.total_params  # two bf16 states
    bnb = memory.estimate(arch, cfg.replace(**{"train.optimizer": "adamw_8bit"})).breakdown["optimizer"]
    # 2 B/param, 8 B for the embedding (32-bit states by the Trainer) and for small tensors
    assert 2 * arch.total_params < bnb < 2 * arch.total_params + 6.1 * arch.embed_params


def test_logits_grow_with_vocab_times_tokens():
    small = memory.architecture_from("smollm2-135m-instruct")
    cfg = _cfg("smollm2-135m-instruct", **{"train.batch_size": 4, "data.max_seq_len": 256})
    est = memory.estimate(small, cfg, "cpu")
    # one chunk of 2 x 256 tokens (4 x 256 runs as two on the CPU) x 49,152 vocab x 12 B = 302 MB at the loss peak,
    # the largest term for a 135M model; on a GPU the whole batch's 604 MB
    assert est.breakdown["logits"] == 2 * 256 * 49152 * 12
    gpu = memory.estimate(small, cfg, "cuda")
    assert gpu.breakdown["logits"] == 4 * 256 * 49152 * 12
    assert gpu.breakdown["logits"] > gpu.breakdown["weights"]


# ---- presets, fixes, comparison -------------------------------------------------------------------------------
def test_70b_qlora_preset_needs_more_than_24_gib_and_fits_48():
    cfg = RunConfig.from_preset(ROOT / "presets" / "llama-3.1-70b-qlora-48gb.yaml")
    est = memory.estimate(memory.architecture_from(cfg.model.name_or_path), cfg, "cuda", 48 * GIB)
    assert est.total_gib > 24
    assert est.fits is True


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_cli_prints_a_valid_json_object_for_every_preset(preset, capsys):
    assert cli.main(["estimate", str(preset), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {
        "total_gib",
        "breakdown_gib",
        "trainable_params",
        "total_params",
        "device",
        "device_memory_gib",
        "fits",
        "verdict",
        "device_label",
        "fixes",
        "methods",
        "sized_for",
    }
    assert out["sized_for"]["by"] in ("data", "config") and out["sized_for"]["rows"] >= 1
    assert out["total_gib"] == pytest.approx(sum(out["breakdown_gib"].values()), abs=0.01)
    assert 0 < out["trainable_params"] <= out["total_params"]
    assert out["device"] == devices.kind(RunConfig.from_preset(preset).train.device)  # auto: this machine's device


def test_cli_table_and_capacity_verdict(capsys):
    preset = ROOT / "presets" / "llama-3.1-8b-qlora-24gb.yaml"
    assert cli.main(["estimate", str(preset), "--device-memory-gib", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fits"] is False and out["device_memory_gib"] == 8
    assert cli.main(["estimate", str(preset), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "process baseline" in text and "total" in text and "| cpu" in text


def test_cli_bad_model_name_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("model: {name_or_path: not-a-model}\n")
    assert cli.main(["estimate", str(path)]) == 2
    assert "not-a-model" in capsys.readouterr().err


def test_fixes_keep_the_effective_batch_and_each_lowers_memory():
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    cfg = _cfg(
        "llama-3.1-8b-instruct",
        **{"train.gradient_checkpointing": False, "train.batch_size": 4, "train.grad_accum": 2},
    )
    base = memory.estimate(arch, cfg, "cuda", 24 * GIB)
    fixes = estimate.suggest_fixes(arch, cfg, "cuda", 24 * GIB)
    keys = [f.key for f in fixes]
    assert keys[:5] == ["gradient_checkpointing", "micro_batch", "optimizer_8bit", "quantize_4bit", "shorter_seq"]
    for fix in fixes:
        assert fix.estimate.total_bytes < base.total_bytes
        assert (
            memory.estimate(arch, cfg.replace(**fix.changes), "cuda", 24 * GIB).total_bytes == fix.estimate.total_bytes
        )
    batch = fixes[1].changes
    assert batch["train.batch_size"] * batch["train.grad_accum"] == 8


def test_combined_fix_when_no_single_change_fits():
    arch = memory.architecture_from("llama-3.1-70b-instruct")
    cfg = _cfg("llama-3.1-70b-instruct", **{"train.gradient_checkpointing": False, "data.max_seq_len": 2048})
    fixes = estimate.suggest_fixes(arch, cfg, "cuda", 48 * GIB)
    assert not any(f.estimate.fits for f in fixes[:-1])
    assert fixes[-1].key == "combined" and fixes[-1].estimate.fits
    assert fixes[-1].changes["method"] == "qlora"


def test_no_fixes_for_what_already_applies_and_the_single_argument_form():
    cfg = RunConfig.from_preset(ROOT / "presets" / "llama-3.1-70b-qlora-48gb.yaml")
    keys = [f.key for f in estimate.suggest_fixes(cfg)]
    assert "gradient_checkpointing" not in keys and "quantize_4bit" not in keys and "micro_batch" not in keys


def test_compare_methods_orders_memory_as_expected():
    arch = memory.architecture_from("llama-3.1-8b-instruct")
    rows = {r["method"]: r for r in estimate.compare_methods(arch, _cfg("llama-3.1-8b-instruct"), "cuda", 24 * GIB)}
    assert list(rows) == ["full", "freeze", "lora", "qlora"]
    assert rows["qlora"]["total_bytes"] < rows["lora"]["total_bytes"] < rows["full"]["total_bytes"]
    assert rows["full"]["trainable_params"] == arch.total_params
    assert rows["full"]["fits"] is False and rows["qlora"]["fits"] is True
    assert all(r["notes"] and r["speed"] > 0 for r in rows.values())


def test_estimate_json_shape_and_ordered_breakdown():
    est = memory.estimate_config(_cfg("qwen2.5-0.5b-instruct"))
    assert list(est.breakdown) == list(memory.BREAKDOWN_KEYS)
    assert all(v >= 0 for v in est.breakdown.values())
    assert est.total_bytes == sum(est.breakdown.values())
    assert est.to_json()["total_gib"] == pytest.approx(est.total_gib, abs=1e-3)
    assert est.allocated_bytes < est.reserved_bytes < est.total_bytes


def test_detect_device_reports_this_machine():
    info = devices.detect()
    assert info.kind in ("cuda", "cpu")
    assert info.total_bytes > 1 * GIB and info.name


# ---- preference objectives ----------------------------------------------------------------------------------
OBJECTIVE_KEYS = ("reference", "pairs")
PREFERENCE_SETTINGS = [
    ("smollm2-135m-instruct", "lora", False, "cpu"),
    ("qwen2.5-0.5b-instruct", "full", True, "cuda"),
    ("llama-3.1-8b-instruct", "qlora", True, "cuda"),
    ("llama-3.1-8b-instruct", "freeze", False, "cuda"),
]


def _dynamic(est: memory.MemoryEstimate) -> int:
    return sum(est.breakdown[k] for k in ("activations", "logits", "workspace", "allocator"))


@pytest.mark.parametrize(("model", "method", "ckpt", "device"), PREFERENCE_SETTINGS)
def test_dpo_exceeds_sft_by_exactly_the_reference_forward_and_the_doubled_sequences(model, method, ckpt, device):
    arch = memory.architecture_from(model)
    sft = _cfg(model, method=method, **{"quant.bits": 4 if method == "qlora" else None})
    sft = sft.replace(**{"train.gradient_checkpointing": ckpt, "train.batch_size": 2, "freeze.trainable_layers": 2})
    whole = memory.Stack(cpu_chunk_tokens=0)  # the supervised step as TRL runs it: the whole batch at once

    def estimate(cfg: RunConfig) -> memory.MemoryEstimate:
        return memory.estimate(arch, cfg, device, stack=whole)

    base, dpo = estimate(sft), estimate(sft.replace(objective="dpo"))
    assert base.breakdown["reference"] == base.breakdown["pairs"] == 0  # SFT: unchanged, no preference terms
    same = [k for k in memory.BREAKDOWN_KEYS if k not in OBJECTIVE_KEYS]
    assert {k: dpo.breakdown[k] for k in same} == {k: base.breakdown[k] for k in same}
    assert dpo.total_bytes - base.total_bytes == dpo.breakdown["reference"] + dpo.breakdown["pairs"] > 0
    # the doubled sequences: what the same SFT step costs with twice the rows (chosen and rejected of 2 pairs)
    doubled = estimate(sft.replace(**{"train.batch_size": 4}))
    assert dpo.breakdown["pairs"] == pytest.approx(_dynamic(doubled) - _dynamic(base), abs=4)
    # the reference: a frozen copy of the weights for full/freeze, none for an adapter (its base with it off)
    # kto runs one sequence per example through the same reference (copy + L), dpo two (copy + 2 L)
    copy = 2 * estimate(sft.replace(objective="kto")).breakdown["reference"]
    copy -= dpo.breakdown["reference"]
    if method in ("full", "freeze"):
        assert copy == pytest.approx(base.breakdown["weights"], abs=4)
    else:
        assert copy == pytest.approx(0, abs=4) and dpo.breakdown["reference"] > 0


def test_each_objective_counts_its_own_sequences_and_reference():
    arch = memory.architecture_from("smollm2-135m-instruct")
    cfg = _cfg("smollm2-135m-instruct", **{"train.batch_size": 2})

    def parts(objective: str, **changes) -> dict[str, int]:
        est = memory.estimate(arch, cfg.replace(objective=objective, **changes), "cuda")
        return {k: est.breakdown[k] for k in OBJECTIVE_KEYS}

    dpo = parts("dpo")
    assert parts("orpo") == parts("simpo") == {"reference": 0, "pairs": dpo["pairs"]}  # reference-free
    assert parts("kto")["pairs"] == 0 and 0 < parts("kto")["reference"] < dpo["reference"]  # unpaired answers
    assert parts("dpo", **{"preference.reference": "precompute"}) == {"reference": 0, "pairs": dpo["pairs"]}
    copy = parts("dpo", **{"preference.reference": "copy"})["reference"] - dpo["reference"]
    assert copy == memory.estimate(arch, cfg, "cuda").breakdown["weights"]  # LoRA asked for a copy holds one
    full = parts("dpo", method="full", **{"preference.reference": "precompute"})
    assert full["reference"] == 0  # precompute: the log-probs were computed once; no copy while training
    held = [objective_table.reference_of(cfg.replace(objective="dpo", method=m)) for m in ("lora", "qlora", "full")]
    assert held == [
        "adapter_off",
        "adapter_off",
        "copy",
    ]


def test_the_cli_table_names_the_reference_and_the_second_sequence(capsys):
    preset = ROOT / "presets" / "llama-3.1-8b-dpo-qlora-24gb.yaml"
    assert cli.main(["estimate", str(preset), "--device", "cuda", "--device-memory-gib", "24"]) == 0
    text = capsys.readouterr().out
    assert "qlora + dpo (2 sequences per example, reference = the base with the adapter off)" in text
    assert "reference model" in text and "chosen + rejected (2nd sequence)" in text and "fits in 24.0 GiB" in text
    sft = ROOT / "presets" / "llama-3.1-8b-qlora-24gb.yaml"
    assert cli.main(["estimate", str(sft), "--device", "cuda", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["breakdown_gib"]["reference"] == out["breakdown_gib"]["pairs"] == 0
    assert cli.main(["estimate", str(sft), "--device", "cuda"]) == 0
    assert "reference model" not in capsys.readouterr().out  # an SFT table has no preference lines
