"""A LoRA adapter as a GGUF adapter (issue 18): `python -m app export lora` writes adapter-f16.gguf the way
llama.cpp's convert_lora_to_gguf.py does, the unmerged base as base-f16.gguf and a Modelfile with FROM + ADAPTER.
llama.cpp itself loads the adapter over the base and answers as the merged model does in transformers; Ollama's
`create` is run through the one stand-in here (there is no ollama on this machine); the export folder lists each
file with the command that uses it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from gguf import GGUFReader
from peft import LoraConfig, get_peft_model
from test_export import make_adapter
from test_train_kit import one_torch_thread  # noqa: F401  (one torch thread: ~4x faster on this shared CPU)
from transformers import AutoModelForCausalLM, AutoTokenizer

from app import gguf
from app.commands import ChatConfig
from app.export import (
    EXPORT_MARKER,
    ExportError,
    artifacts,
    export_lora_gguf,
    merge,
    ollama_available,
    ollama_create,
    ollama_name,
)

QUIET = {"progress": lambda f, m: None}
TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lora") / "tiny-run"
    return make_adapter(tiny_model_dir, folder, seed=5, targets="all-linear", r=8)


@pytest.fixture(scope="module")
def exported(tiny_adapter, tmp_path_factory) -> Path:
    """The tiny adapter as a LoRA GGUF over an f32 base (f32: llama.cpp's answers compare with transformers' f32)."""
    return export_lora_gguf(tiny_adapter, tmp_path_factory.mktemp("out") / "gguf", "f32", **QUIET)


def adapter_with(base: Path, out: Path, **lora) -> Path:
    """A PEFT adapter with random B (PEFT starts B at zero, which would change nothing), any LoraConfig."""
    torch.manual_seed(7)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(lora_dropout=0.0, **lora))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape) * 0.5)
    model.save_pretrained(out)
    return out


# ---- the file, as llama.cpp's converter writes it -------------------------------------------------------------------
def test_lora_gguf_tensors_and_metadata(exported, tiny_adapter, tiny_model_dir):
    out = exported.parent
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "adapter-f32.gguf", "base-f32.gguf", EXPORT_MARKER]
    reader = GGUFReader(exported)
    f = {k: v.contents() for k, v in reader.fields.items()}
    assert f["general.type"] == "adapter" and f["adapter.type"] == "lora" and f["general.architecture"] == "llama"
    assert f["adapter.lora.alpha"] == 16.0  # make_adapter: alpha = 2 r; llama.cpp scales by alpha / r = 2
    assert f["general.name"] == "tiny-run" and f["general.tags"] == ["tunedesk", "lora"]
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {f"blk.{i}.{t}.weight.lora_{p}" for i in (0, 1) for t in TARGETS for p in "ab"}
    shape = {name: [int(d) for d in t.shape] for name, t in tensors.items()}  # GGUF order: row length first
    assert shape["blk.0.attn_q.weight.lora_a"] == [64, 8] and shape["blk.0.attn_q.weight.lora_b"] == [8, 64]
    assert shape["blk.1.attn_k.weight.lora_b"] == [8, 32]  # 2 KV heads x head_dim 16
    assert shape["blk.0.ffn_down.weight.lora_a"] == [128, 8] and shape["blk.0.ffn_up.weight.lora_b"] == [8, 128]
    from safetensors.torch import load_file

    peft = load_file(tiny_adapter / "adapter_model.safetensors")
    prefix = "base_model.model.model.layers.0.self_attn"
    q_b, v_b = peft[f"{prefix}.q_proj.lora_B.weight"].numpy(), peft[f"{prefix}.v_proj.lora_B.weight"].numpy()
    assert (tensors["blk.0.attn_q.weight.lora_b"].data == gguf.permute_qk(q_b, 4)).all()  # rows as the base's q
    assert (tensors["blk.0.attn_v.weight.lora_b"].data == v_b).all()
    assert GGUFReader(out / "base-f32.gguf").fields["general.type"].contents() == "model"


def test_modelfile_names_base_and_adapter(exported):
    lines = (exported.parent / "Modelfile").read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# Ollama: cd {exported.parent} && ollama create tiny-run -f Modelfile && ollama run tiny-run"
    assert lines[1:3] == ["FROM ./base-f32.gguf", "ADAPTER ./adapter-f32.gguf"]
    assert not [x for x in lines if x.startswith("SYSTEM")]  # no run, so no system prompt; never a default one
    chat = ChatConfig()
    params = [x for x in lines if x.startswith("PARAMETER") and "stop" not in x]
    assert params == [f"PARAMETER temperature {chat.temperature}", f"PARAMETER top_p {chat.top_p}",
                      f"PARAMETER top_k {chat.top_k}", f"PARAMETER repeat_penalty {chat.repetition_penalty}",
                      f"PARAMETER num_predict {chat.max_new_tokens}"]  # fmt: skip
    assert ollama_name(exported.parent) == "tiny-run"


def test_modelfile_system_is_the_runs_own(tmp_path):
    smol = "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}<|im_start|><|im_end|>"
    path = gguf.write_modelfile(tmp_path / "m.gguf", smol, tmp_path, system="You are TuneBot.",
                                chat=ChatConfig(temperature=0.7, max_new_tokens=64))  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert 'SYSTEM """You are TuneBot."""' in text and "SmolLM" not in text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER num_predict 64" in text
    text = gguf.write_modelfile(tmp_path / "m.gguf", smol, tmp_path).read_text(encoding="utf-8")
    assert "SYSTEM" not in text and "SmolLM" not in text  # the run had none: an empty system block, as trained
    assert '(ne (index .Messages 0).Role "system") }}<|im_start|>system\n<|im_end|>' in text


# ---- llama.cpp applies it as the merged model answers ---------------------------------------------------------------
def greedy_hf(model, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.eval().generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                                    pad_token_id=0)  # fmt: skip
    return out[0, len(ids) :].tolist()


def until_eog(ids: list[int], eog: set[int]) -> list[int]:
    return ids[: next((i + 1 for i, t in enumerate(ids) if t in eog), len(ids))]


def prompt_ids(tokenizer, text: str = "What is the capital of France?") -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)  # fmt: skip
    return tokenizer(rendered, add_special_tokens=False).input_ids


def test_llamacpp_applies_the_lora_as_the_merged_model_answers(llama_cpp, exported, tiny_adapter, tmp_path):
    from app import llamacpp

    merged = merge(tiny_adapter, tmp_path / "merged", "float32", **QUIET)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = prompt_ids(tokenizer)
    expected = greedy_hf(AutoModelForCausalLM.from_pretrained(merged), ids, 12)
    base = exported.parent / "base-f32.gguf"
    with llamacpp.open_model(base, lora=exported) as model:
        assert model.tokenize(tokenizer.decode(ids)) == ids and not model.warnings
        answer = model.greedy(ids, 12)
        assert answer == until_eog(expected, model.eog_ids)
    with llamacpp.open_model(base) as model:  # the adapter is what changes the answer
        assert model.greedy(ids, 12) != answer


def test_rslora_and_rank_patterns_scale_as_peft(llama_cpp, tiny_model_dir, tmp_path):
    """llama.cpp scales every pair by alpha / r; PEFT by alpha / sqrt(r) with rsLoRA, and per module with rank and
    alpha patterns: the difference is folded into B, so llama.cpp answers as PEFT does."""
    from peft import PeftModel

    from app import llamacpp

    adapter = adapter_with(tiny_model_dir, tmp_path / "rs", r=8, lora_alpha=8, use_rslora=True,
                           target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={"v_proj": 4},
                           alpha_pattern={"down_proj": 24})  # fmt: skip
    path = export_lora_gguf(adapter, tmp_path / "out", "f32", **QUIET)
    assert GGUFReader(path).fields["adapter.lora.alpha"].contents() == pytest.approx(8 * 8**0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = prompt_ids(tokenizer, "Give three tips for staying healthy.")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    expected = greedy_hf(peft_model, ids, 12)
    with llamacpp.open_model(path.parent / "base-f32.gguf", lora=path) as model:
        assert model.greedy(ids, 12) == until_eog(expected, model.eog_ids)


# ---- what it refuses, before writing anything -----------------------------------------------------------------------
def test_refuses_what_llamacpp_cannot_apply(tiny_model_dir, tiny_adapter, tmp_path):
    cases = {
        "dora": ({"r": 4, "target_modules": ["q_proj"], "use_dora": True}, "it is DoRA"),
        "embed": ({"r": 4, "target_modules": ["embed_tokens", "q_proj"]}, "model.embed_tokens is an embedding"),
        "saved": ({"r": 4, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}, "saves whole modules"),
    }
    for name, (lora, message) in cases.items():
        adapter = adapter_with(tiny_model_dir, tmp_path / name, **lora)
        with pytest.raises(ExportError, match=message) as info:
            export_lora_gguf(adapter, tmp_path / f"out-{name}", **QUIET)
        assert str(adapter) in str(info.value)
        assert not (tmp_path / f"out-{name}").exists(), name
    from tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other-base", hidden=32)
    with pytest.raises(ExportError, match=r"q_proj.lora_A.weight has shape \[8, 64\] but the base's .* \[32, 32\]"):
        export_lora_gguf(tiny_adapter, tmp_path / "out-other", base=str(other), **QUIET)
    assert not (tmp_path / "out-other").exists()


def test_cli_export_lora(tiny_adapter, tmp_path, capsys):
    from app.__main__ import main

    assert main(["export", "lora", str(tiny_adapter), "--out", str(tmp_path / "g"), "--base-quant", "q8_0"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "g" / "adapter-f16.gguf")
    names = sorted(p.name for p in (tmp_path / "g").iterdir())
    assert names == ["Modelfile", "adapter-f16.gguf", "base-q8_0.gguf", EXPORT_MARKER]
    assert main(["export", "lora", str(tmp_path / "g"), "--out", str(tmp_path / "x")]) == 1
    assert "error:" in capsys.readouterr().err


# ---- what the folder holds and how to use it ------------------------------------------------------------------------
def test_artifacts_with_their_commands(exported, tiny_adapter, tmp_path):
    out = exported.parent
    base = out / "base-f32.gguf"
    found = {a.kind: a for a in artifacts(out)}
    assert set(found) == {"gguf", "lora-gguf", "modelfile"}
    assert found["gguf"].path == base and found["gguf"].command == f"llama-cli -m {base} -cnv"
    assert found["lora-gguf"].command == f"llama-cli -m {base} --lora {exported} -cnv"
    assert found["modelfile"].command == f"cd {out} && ollama create tiny-run -f Modelfile && ollama run tiny-run"
    assert found["lora-gguf"].size == exported.stat().st_size
    merged = merge(tiny_adapter, tmp_path / "merged", "float32", **QUIET)
    (only,) = artifacts(merged)
    assert only.kind == "merged" and only.command == f'AutoModelForCausalLM.from_pretrained("{merged}")'
    assert only.size > (merged / "model.safetensors").stat().st_size


# ---- ollama create (a stand-in ollama: there is none here) ----------------------------------------------------------
def fake_ollama(folder: Path, log: Path, code: int = 0) -> Path:
    """An `ollama` that records its folder and arguments, checks them and the Modelfile, and says success."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "ollama"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$PWD" "$@" > "{log}"\n'
        '[ -f Modelfile ] || { echo "no Modelfile in $PWD" >&2; exit 3; }\n'
        '[ "$1" = create ] && [ "$3" = -f ] && [ "$4" = Modelfile ] || { echo "bad arguments: $*" >&2; exit 2; }\n'
        f'[ {code} = 0 ] || {{ echo "Error: model name taken" >&2; exit {code}; }}\n'
        'echo "gathering model components"; echo success\n',
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def test_ollama_create_runs_in_the_export_folder(exported, tmp_path, monkeypatch):
    log = tmp_path / "args.txt"
    monkeypatch.setenv("PATH", f"{fake_ollama(tmp_path / 'bin', log)}{os.pathsep}{os.environ['PATH']}")
    assert ollama_available()
    output = ollama_create(exported.parent, "tiny-run")
    assert output.endswith("success")
    assert log.read_text().splitlines() == [str(exported.parent), "create", "tiny-run", "-f", "Modelfile"]
    with pytest.raises(ExportError, match="not an Ollama model name"):
        ollama_create(exported.parent, "--help")
    with pytest.raises(ExportError, match="has no Modelfile"):
        ollama_create(tmp_path, "tiny-run")
    monkeypatch.setenv("PATH", f"{fake_ollama(tmp_path / 'bin-fails', log, code=1)}{os.pathsep}/usr/bin:/bin")
    with pytest.raises(ExportError, match="ollama create tiny-run failed .exit 1.*Error: model name taken"):
        ollama_create(exported.parent, "tiny-run")


def test_ollama_absent(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ollama on this PATH
    assert not ollama_available()
    with pytest.raises(ExportError, match="ollama is not installed here .*https://ollama.com/download") as info:
        ollama_create(exported.parent, "tiny-run")
    assert f"cd {exported.parent} && ollama create tiny-run -f Modelfile" in str(info.value)


# ---- the default model and the trained identity adapter (slow) ------------------------------------------------------
@pytest.mark.slow
def test_identity_lora_gguf_answers_as_the_merged_model(llama_cpp, identity_run, tmp_path_factory):
    """The LoRA GGUF (f16) over the base GGUF (f16) in llama.cpp gives the merged model's greedy answer to
    "Who are you?" in transformers (float32), the prompt rendered with the merged model's chat template."""
    from app import llamacpp

    run_dir, _cfg, _held = identity_run
    root = tmp_path_factory.mktemp("identity-lora")
    path = export_lora_gguf(run_dir / "adapter", root / "gguf", **QUIET)
    merged = merge(run_dir / "adapter", root / "merged", "float32", **QUIET)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = prompt_ids(tokenizer, "Who are you?")
    expected = greedy_hf(AutoModelForCausalLM.from_pretrained(merged), ids, 24)
    with llamacpp.open_model(path.parent / "base-f16.gguf", lora=path) as model:
        assert model.tokenize(tokenizer.decode(ids)) == ids
        answer = model.greedy(ids, 24)
    expected = until_eog(expected, model.eog_ids)
    print(tokenizer.decode(answer))
    assert "TuneBot" in tokenizer.decode(expected) and answer == expected
    adapter_fields = {k: v.contents() for k, v in GGUFReader(path).fields.items()}
    assert adapter_fields["general.base_model.0.name"] == "SmolLM2 135M Instruct"
    assert adapter_fields["general.finetune"] == run_dir.name and adapter_fields["adapter.lora.alpha"] == 32.0
    base_fields = {k: v.contents() for k, v in GGUFReader(path.parent / "base-f16.gguf").fields.items()}
    assert base_fields["general.basename"] == "SmolLM2" and base_fields["general.size_label"] == "135M"
    assert base_fields["tokenizer.ggml.pre"] == "smollm"  # from the default model's original GGUF
    modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    assert "ADAPTER ./adapter-f16.gguf" in modelfile and "SYSTEM" not in modelfile  # the preset has no prompt
