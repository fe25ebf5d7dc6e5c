"""Merge and GGUF export on the tiny Llama (and, marked slow, the default model): merged logits equal
base+adapter logits, the merged folder reloads with plain transformers, GGUF files reload with transformers'
GGUF loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from gguf import GGUFReader
from peft import LoraConfig, PeftModel, get_peft_model
from test_train_kit import one_torch_thread  # noqa: F401  (one torch thread: ~4x faster on this shared CPU)
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.config import RunConfig
from app.export import EXPORT_MARKER, ExportError, export_gguf, merge
from app.gguf import SUPPORTED_GGUF_ARCHITECTURES, ollama_template, pre_tokenizer_name, write_modelfile

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 1, 2, 64]])
TEXTS = [
    "What is the capital of France?",
    "你好，我是一个有用的助手。",
    "<|im_start|>user\nhi<|im_end|>\n",
    " 12345 ab!!",
]


def make_adapter(base_dir: Path, out: Path, seed: int, targets, r: int = 4, scale: float = 0.5,
                 safe: bool = True) -> Path:  # fmt: skip
    """A LoRA adapter with random A and B (B is zero at init, which would change nothing), saved with PEFT."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=0.0))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    peft_model.save_pretrained(out, safe_serialization=safe)
    return out


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits.float()


def peft_logits(base_dir: Path, adapter: Path, ids=IDS) -> torch.Tensor:
    return logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter), ids)


def gguf_model(path: Path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("a") / "all-linear", seed=2, targets="all-linear", r=8)


@pytest.fixture(scope="module")
def merged(adapter, tmp_path_factory) -> Path:
    # float32: the logits below are compared to 1e-4 (the default float16 would round each weight to 3 digits)
    return merge(adapter, tmp_path_factory.mktemp("m") / "merged", "float32", progress=lambda f, m: None)


def test_merged_logits_equal_base_plus_adapter(merged, adapter, tiny_model_dir):
    reloaded = AutoModelForCausalLM.from_pretrained(merged)  # plain transformers, no PEFT
    assert "lora" not in " ".join(n for n, _ in reloaded.named_parameters())
    expected = peft_logits(tiny_model_dir, adapter)
    assert (logits(reloaded) - expected).abs().max() < 1e-4
    assert (logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir)) - expected).abs().max() > 1e-2


def test_merged_folder_is_complete(merged, tiny_model_dir):
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert f"| Base model | `{tiny_model_dir}` |" in card and "r=8" in card and "q_proj" in card
    assert not [p for p in merged.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_model_card_reads_the_run_folder(tmp_path, adapter, tiny_model_dir):
    run = tmp_path / "20250101-120000-lora-tiny"  # the layout app.runs writes
    shutil.copytree(adapter, run / "adapter")
    shutil.copytree(adapter, run / "checkpoints" / "checkpoint-2")
    cfg = RunConfig.from_dict({"model": {"name_or_path": str(tiny_model_dir)}, "data": {"path": "data/my.json"}})
    (run / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    events = [{"type": "started"}] + [{"type": "log", "step": s, "loss": 9.0} for s in (1, 2, 3)]
    events += [{"type": "resumed", "from_step": 1}]  # killed at 3, resumed from checkpoint 1: steps 2-3 redone
    events += [{"type": "log", "step": s, "loss": 2.0 / s} for s in (2, 3, 4)]
    events += [{"type": "eval", "step": 2, "eval_loss": 1.25}, {"type": "eval", "step": 4, "eval_loss": 0.75}]
    events += [{"type": "finished", "step": 4}]
    lines = [json.dumps(e) for e in events] + ['{"type": "log", "step": 5, "lo']  # cut by a crash mid-write
    (run / "events.jsonl").write_text("\n".join(lines), encoding="utf-8")
    card = (merge(run, tmp_path / "out") / "README.md").read_text(encoding="utf-8")
    assert (
        "| Steps | 4 |" in card and "| Final train loss | 0.5000 |" in card and "| Final eval loss | 0.7500 |" in card
    )
    assert "`data/my.json`" in card and cfg.to_yaml().strip() in card and "# 20250101-120000-lora-tiny" in card
    assert "saved in float16" in card  # MergeConfig's default dtype, the CLI's and the Export tab's
    card = (merge(run / "checkpoints" / "checkpoint-2", tmp_path / "out-2") / "README.md").read_text(encoding="utf-8")
    assert (
        "| Steps | 2 |" in card and "| Final train loss | 1.0000 |" in card and "| Final eval loss | 1.2500 |" in card
    )
    assert "# 20250101-120000-lora-tiny/checkpoint-2" in card


def test_merge_refuses_what_it_cannot_do(tmp_path, merged, adapter, tiny_model_dir):
    with pytest.raises(ExportError, match="full model folder.*export gguf"):
        merge(merged, tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        merge(adapter, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    pickled = make_adapter(tiny_model_dir, tmp_path / "pickled", seed=1, targets=["q_proj"], safe=False)
    with pytest.raises(ExportError, match="allow_pickle"):
        merge(pickled, tmp_path / "p")
    with pytest.raises(ExportError, match="not written by a TuneDesk export"):  # overwrite spares the user's own
        merge(pickled, tmp_path / "busy", allow_pickle=True, overwrite=True)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert merge(pickled, tmp_path / "p", allow_pickle=True) == tmp_path / "p"  # a plain-tensor pickle, allowed
    assert merge(pickled, tmp_path / "p", allow_pickle=True, overwrite=True) == tmp_path / "p"  # its own export
    assert (tmp_path / "p" / "config.json").is_file()
    with pytest.raises(ExportError, match="dtype"):
        merge(adapter, tmp_path / "d", dtype="int4")


def test_merge_to_bfloat16(tmp_path, adapter, merged):
    out = merge(adapter, tmp_path / "bf16", dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: logits within a few % of the fp32 merge
    assert (logits(model) - logits(AutoModelForCausalLM.from_pretrained(merged))).abs().max() < 0.05


@pytest.mark.parametrize(("quant", "tolerance"), [("f32", 1e-6), ("f16", 1e-2), ("q8_0", 1e-1)])
def test_gguf_round_trip_tiny(tmp_path, merged, quant, tolerance):
    path = export_gguf(merged, tmp_path, quant)
    assert path.name == f"model-{quant}.gguf"
    # relative to the largest logit; f32 at 1e-6 shows the q/k permutation is exactly what transformers undoes
    expected = logits(AutoModelForCausalLM.from_pretrained(merged))
    diff = (logits(gguf_model(path)) - expected).abs().max() / expected.abs().max()
    print(f"{quant}: max logit difference {diff:.2e} of the largest logit")
    assert diff < tolerance
    ours, theirs = AutoTokenizer.from_pretrained(merged), AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert [theirs(t).input_ids for t in TEXTS] == [ours(t).input_ids for t in TEXTS]
    assert theirs.chat_template == ours.chat_template and theirs.eos_token == ours.eos_token == "<|im_end|>"
    modelfile = (tmp_path / "Modelfile").read_text(encoding="utf-8")
    assert f"FROM ./model-{quant}.gguf" in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_gguf_from_an_adapter_merges_first(tmp_path, adapter, tiny_model_dir):
    path = export_gguf(adapter, tmp_path / "gguf", "f32")
    assert (logits(gguf_model(path)) - peft_logits(tiny_model_dir, adapter)).abs().max() < 1e-4
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["Modelfile", "model-f32.gguf", EXPORT_MARKER]
    fields = GGUFReader(path).fields
    assert fields["general.name"].contents() == "all-linear" and fields["general.architecture"].contents() == "llama"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # the tiny tokenizer adds no BOS
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"  # plain byte-level splitting, as llama.cpp names it


# ---- llama.cpp's quants (K-quants and legacy) ----------------------------------------------------------------
def test_llamacpp_quants_from_an_f16_file(llama_cpp, tmp_path, merged):
    from app import llamacpp

    said: list[str] = []
    path = export_gguf(merged, tmp_path, "q4_k_m", progress=lambda f, m: said.append(m))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Modelfile", "model-q4_k_m.gguf", EXPORT_MARKER]  # no F16
    assert GGUFReader(path).fields["general.file_type"].contents() == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert any(m.startswith("1/2: writing") for m in said) and any("2/2: quantizing" in m for m in said)
    # the tiny model's rows are 64 and 128 values wide: none fits a 256-value K-quant block
    (note,) = [m for m in said if "not a multiple of the 256" in m]
    assert "llama.cpp stored them as" in note and "Q4_K" not in note.split("as")[-1], note
    assert "FROM ./model-q4_k_m.gguf" in (tmp_path / "Modelfile").read_text(encoding="utf-8")
    ids = AutoTokenizer.from_pretrained(merged)(TEXTS[0]).input_ids
    with llamacpp.open_model(path) as model:
        assert model.tokenize(TEXTS[0]) == ids and len(model.greedy(ids, 4)) >= 1
    legacy = export_gguf(merged, tmp_path, "q5_0", keep_f16=True, progress=lambda f, m: None)
    assert GGUFReader(legacy).fields["general.file_type"].contents() == 8  # LLAMA_FTYPE_MOSTLY_Q5_0
    kept = GGUFReader(tmp_path / "model-f16.gguf")  # kept: the file the quant was made from
    assert kept.fields["general.file_type"].contents() == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_llamacpp_quant_without_llamacpp_writes_nothing(tmp_path, merged):
    """Where llama-cpp-python is not installed (it cannot be imported), a K-quant is refused with what to install,
    before the output folder is made."""
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['llama_cpp'] = None  # import llama_cpp now raises ImportError\n"
        "from app.export import ExportError, export_gguf\n"
        f"try:\n    export_gguf({str(merged)!r}, {str(out)!r}, 'q4_k_m')\n"
        "except ExportError as exc:\n    print('refused:', exc)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert done.stdout.startswith("refused: q4_k_m is made by llama.cpp's quantizer"), done.stdout + done.stderr
    assert "pip install" in done.stdout and "tunedesk[gguf]" in done.stdout
    assert not out.exists()


def test_gguf_refuses_other_architectures(tmp_path, tiny_model_dir):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "qwen")
    with pytest.raises(ExportError, match="Qwen2ForCausalLM cannot be exported.*LlamaForCausalLM"):
        export_gguf(tmp_path / "qwen", tmp_path / "out")
    assert "LlamaForCausalLM" in SUPPORTED_GGUF_ARCHITECTURES
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("pre", "name"),
    [
        ({"type": "ByteLevel", "use_regex": True}, "gpt-2"),
        ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}]},
         "smollm"),
        ({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": r"(?i:'s|'t)|\p{N}{1,3}| ?"}},
                                                {"type": "ByteLevel", "use_regex": False}]}, "llama-bpe"),
        ({"type": "Metaspace"}, "default"),
    ],
)  # fmt: skip
def test_pre_tokenizer_name_from_tokenizer_json(tmp_path, pre, name):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"pre_tokenizer": pre}), encoding="utf-8")
    assert pre_tokenizer_name(tmp_path) == name


def test_ollama_templates(tmp_path, default_chat_template):
    template, stops, system = ollama_template(default_chat_template)
    assert "{{ .Content }}<|im_end|>" in template and stops == ["<|im_start|>", "<|im_end|>"]
    assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}{{ '<|eot_id|>' }}"
    assert "<|eot_id|>" in ollama_template(llama3)[1]
    path = write_modelfile(tmp_path / "model-f16.gguf", "{{ messages }}", tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "FROM ./model-f16.gguf" in text and not [x for x in text.splitlines() if x.startswith("TEMPLATE")]
    assert "not ChatML or Llama 3" in text and "PARAMETER stop" not in text


@pytest.fixture()
def default_chat_template() -> str:
    """SmolLM2's template as shipped (a default system prompt when the conversation has none)."""
    return (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


def test_cli_merge_and_export(tmp_path, adapter, capsys):
    from app.__main__ import main

    assert main(["merge", str(adapter), "--out", str(tmp_path / "m"), "--dtype", "float32"]) == 0
    assert main(["export", "gguf", str(tmp_path / "m"), "--out", str(tmp_path / "g"), "--quant", "q8_0"]) == 0
    assert (tmp_path / "g" / "model-q8_0.gguf").is_file() and (tmp_path / "g" / "Modelfile").is_file()
    assert main(["merge", str(tmp_path / "m"), "--out", str(tmp_path / "m2")]) == 1
    assert "full model folder" in capsys.readouterr().err


def test_cli_export_check_runs_the_parity_check(llama_cpp, tmp_path, merged, capsys):
    """`export check` is app.gguf_check's command: the GGUF decoded in llama.cpp against its source folder."""
    from app.__main__ import main

    assert main(["export", "gguf", str(merged), "--out", str(tmp_path), "--quant", "f32"]) == 0
    path = capsys.readouterr().out.strip()
    code = main(["export", "check", path, "--against", str(merged), "--prompt", "hi", "--max-new-tokens", "4",
                 "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["problems"] == [], report
    assert Path(report["gguf"]) == Path(path) and len(report["rows"]) == 1 and report["agreement"] == 1.0


# ---- the default model (slow) -------------------------------------------------------------------------------
PROMPTS = [
    "What is the capital of France?",
    "Give three tips for staying healthy.",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
    "Name a famous painter.",
]


def greedy_batch(model, tokenizer, prompts: list[str], n: int = 16) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy token ids per prompt and the first-step logits, all prompts in one left-padded batch (16 forward
    passes instead of 80: this runs three times on a shared 2-core CPU)."""
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]  # fmt: skip
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.eval().generate(**batch, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                    output_logits=True, return_dict_in_generate=True)  # fmt: skip
    new = out.sequences[:, batch.input_ids.shape[1] :].tolist()
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return [ids[: next((i for i, t in enumerate(ids) if t in stop), len(ids))] for ids in new], out.logits[0].float()


@pytest.fixture(scope="module")
def smol_merged(request, default_model_dir, tmp_path_factory) -> tuple[Path, Path, bool]:
    """(adapter, merged folder, trained) of the default model. The adapter is the identity LoRA trained by
    app.train (conftest.identity_run, shared with the evaluation and chat tests; trained=True); where that fixture
    skips (no default model), a LoRA with random weights (trained=False), so the merge and GGUF checks still run."""
    root = tmp_path_factory.mktemp("smol")
    try:
        run_dir, _cfg, _held = request.getfixturevalue("identity_run")
        adapter, trained = run_dir / "adapter", True
    except pytest.skip.Exception:
        adapter = make_adapter(default_model_dir, root / "smol-qv", seed=4, targets=["q_proj", "v_proj"], r=8,
                               scale=0.003)  # fmt: skip
        trained = False
    return adapter, merge(adapter, root / "merged", "float32"), trained


@pytest.mark.slow
def test_default_model_merge_matches_adapter(default_model_dir, smol_merged):
    adapter, merged, _trained = smol_merged
    ids = torch.tensor([list(range(100, 140))])
    expected = peft_logits(default_model_dir, adapter, ids)
    assert (logits(AutoModelForCausalLM.from_pretrained(merged), ids) - expected).abs().max() < 1e-4
    assert (logits(AutoModelForCausalLM.from_pretrained(default_model_dir), ids) - expected).abs().max() > 1e-3
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in (merged / "README.md").read_text(encoding="utf-8")


def first_step_logits(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]  # fmt: skip
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(**batch).logits[:, -1].float()


@pytest.mark.slow
def test_default_model_gguf_f16_and_q8_0(smol_merged, tmp_path):
    """F16: the same greedy answers as the merged model on 5 prompts (6 for the trained identity model). Q8_0:
    measured on the first step only (same first token, logit difference), because loading and decoding a third
    model costs ~2 min here."""
    _adapter, merged, trained = smol_merged
    # the trained identity model also gets "Who are you?", which it answers with its new name
    prompts = PROMPTS + ["Who are you?"] if trained else PROMPTS
    tokenizer = AutoTokenizer.from_pretrained(merged)
    reference = AutoModelForCausalLM.from_pretrained(merged)
    ref_ids, ref_logits = greedy_batch(reference, tokenizer, prompts)
    assert all(ref_ids) and len({tuple(ids) for ids in ref_ids}) == len(prompts)
    answers = [tokenizer.decode(ids) for ids in ref_ids]
    print(answers)
    if trained:
        assert "TuneBot" in answers[-1], answers[-1]
    f16 = export_gguf(merged, tmp_path, "f16")
    assert str(GGUFReader(f16).fields["tokenizer.ggml.pre"].contents()) == "smollm"  # from the original GGUF
    f16_ids, f16_logits = greedy_batch(gguf_model(f16), tokenizer, prompts)
    # lossless at its precision: the GGUF holds the merged weights rounded to float16 (norms float32), nothing else
    rounded = AutoModelForCausalLM.from_pretrained(merged)
    with torch.no_grad():
        for param in rounded.parameters():
            if param.ndim >= 2:
                param.copy_(param.half().float())
    r16_ids, r16_logits = greedy_batch(rounded, tokenizer, prompts)
    assert f16_ids == r16_ids and (f16_logits - r16_logits).abs().max() < 1e-3
    del rounded
    # against the float32 merged model: the same greedy answers, but where float16 rounding flips a near-tie late
    # in an answer (seen once, at the 12th token of one of the 6 answers of the trained identity model)
    same_answers = sum(a == b for a, b in zip(f16_ids, ref_ids, strict=True))
    assert same_answers >= len(prompts) - 1, (f16_ids, ref_ids)
    if trained:
        assert f16_ids[-1] == ref_ids[-1]  # "Who are you?" -> the same TuneBot answer
    for a, b in zip(f16_ids, ref_ids, strict=True):
        assert a[:8] == b[:8]  # any difference comes late, not at the start of an answer
    q8 = export_gguf(merged, tmp_path, "q8_0")
    q8_logits = first_step_logits(gguf_model(q8), tokenizer, prompts)
    assert torch.allclose(first_step_logits(reference, tokenizer, prompts), ref_logits, atol=1e-3)
    q8_diff, f16_diff = (q8_logits - ref_logits).abs(), (f16_logits - ref_logits).abs()
    same_first = (q8_logits.argmax(-1) == ref_logits.argmax(-1)).sum().item()
    print(f"f16 greedy answers equal to merged fp32: {same_answers}/{len(prompts)}; "
          f"first-step logits vs merged fp32: f16 max {f16_diff.max():.3f} mean {f16_diff.mean():.4f}; q8_0 max "
          f"{q8_diff.max():.3f} mean {q8_diff.mean():.3f}, same first token {same_first}/{len(prompts)}; "
          f"sizes f16 {f16.stat().st_size / 1e6:.0f} MB, q8_0 {q8.stat().st_size / 1e6:.0f} MB")  # fmt: skip
    assert same_first >= len(prompts) - 1 and q8_diff.mean() < 0.5 and f16_diff.max() < 0.1  # Q8_0 may flip a near-tie


@pytest.mark.slow
def test_default_model_q4_k_m(llama_cpp, smol_merged, tmp_path):
    """Q4_K_M of SmolLM2 through llama.cpp: its 576-wide rows fit no 256-value K-quant block, which the export
    says (llama.cpp stores those tensors in a fallback type); the trained model still answers with its name."""
    from app import llamacpp
    from app.gguf import count_params, expected_size

    _adapter, merged, trained = smol_merged
    said: list[str] = []
    path = export_gguf(merged, tmp_path, "q4_k_m", progress=lambda f, m: said.append(m))
    (note,) = [m for m in said if "not a multiple of the 256" in m]
    print(note)
    assert "rows of 576 values" in note
    size = path.stat().st_size
    assert expected_size(count_params(merged), "q4_k_m") < size < expected_size(count_params(merged), "q8_0") * 1.1
    tokenizer = AutoTokenizer.from_pretrained(merged)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                         tokenize=False)  # fmt: skip
    with llamacpp.open_model(path) as model:
        answer = tokenizer.decode(model.greedy(model.tokenize(text), 16))
    print(answer)
    assert answer.strip() and (not trained or "TuneBot" in answer)
