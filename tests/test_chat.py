"""Chat and compare on the tiny Llama: one base, adapters made with plain PEFT, answers checked against plain
transformers/PEFT generation."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from test_train_kit import one_torch_thread, tiny_config, write_alpaca  # noqa: F401  (one thread: ~4x faster here)
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from app import devices
from app.adapters import AdapterError, resolve_source
from app.chat import ChatError, ChatSession, generate
from app.devices import DeviceBusy
from app.modelset import GenSettings
from app.prompt_sets import load_prompt_set, save_table

PROMPT = "What is the capital of France?"
GREEDY = GenSettings(max_new_tokens=12)


def make_adapter(base_dir: Path, out: Path, seed: int, targets, r: int = 4, safe: bool = True) -> Path:
    """A LoRA adapter with random A and B (B is zero at init, which would change nothing), saved with PEFT."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=0.0))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(out, safe_serialization=safe)
    return out


def hf_greedy(model, tokenizer, messages: list[dict], max_new_tokens: int = 12) -> str:
    """The reference: transformers' own generate() on the chat-templated conversation."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.eval().generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "qv": make_adapter(tiny_model_dir, root / "qv", seed=1, targets=["q_proj", "v_proj"]),
        "all": make_adapter(tiny_model_dir, root / "all", seed=2, targets="all-linear", r=8),
    }


@pytest.fixture(scope="module")
def session(tiny_model_dir, adapters):
    chat = ChatSession(str(tiny_model_dir), [str(adapters["qv"]), str(adapters["all"])], device="cpu")
    yield chat
    chat.close()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_columns_match_plain_base_and_plain_peft(session, tiny_model_dir, adapters, tokenizer):
    assert session.columns == ["base", "qv", "all"]
    answers = {c: text for c, (text, _) in session.answer_all(PROMPT, GREEDY).items()}
    assert answers["base"] == hf_greedy(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, user(PROMPT))
    for column in ("qv", "all"):
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapters[column])
        assert answers[column] == hf_greedy(plain, tokenizer, user(PROMPT)), column
    assert all(answers.values()) and len(set(answers.values())) == 3, answers


def test_one_base_model_shared_by_all_adapters(tiny_model_dir, adapters):
    def llama_count() -> int:
        gc.collect()
        return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())

    before = llama_count()
    chat = ChatSession(str(tiny_model_dir), [str(adapters["qv"]), str(adapters["all"])], device="cpu")
    assert llama_count() - before == 1
    base_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    session_params = sum(p.numel() for p in chat.model.parameters())
    # base + two adapters (~20k LoRA parameters), far from three base copies (3 x ~150k)
    assert base_params < session_params < 1.3 * base_params
    chat.close()
    assert llama_count() - before <= 0


def test_stream_yields_growing_text_and_speed(session):
    states = list(session.stream("qv", [], PROMPT, GREEDY))
    assert 1 <= len(states) <= GREEDY.max_new_tokens
    texts = [t for t, _ in states]
    assert all(a == b[: len(a)] or a.endswith("\ufffd") for a, b in zip(texts, texts[1:], strict=False))
    assert states[-1][1] > 0
    assert states[-1][0] == session.answer_all(PROMPT, GREEDY)["qv"][0]


def test_stream_all_round_robin_yields_every_column(session):
    states = list(session.stream_all({}, PROMPT, GREEDY))
    assert all(set(s) == set(session.columns) for s in states)
    assert len(states) == max(len(list(session.stream(c, [], PROMPT, GREEDY))) for c in session.columns)


def test_multi_turn_history_is_used_per_column(session, tiny_model_dir, tokenizer):
    history = [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "I am a helpful assistant."},
    ]
    with_history = session.answer_all(PROMPT, GREEDY, {"base": history})
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert with_history["base"][0] == hf_greedy(plain, tokenizer, history + user(PROMPT))
    assert with_history["base"][0] != session.answer_all(PROMPT, GREEDY)["base"][0]
    assert with_history["qv"][0] == session.answer_all(PROMPT, GREEDY)["qv"][0]  # qv got no history


def test_system_prompt_goes_through_the_chat_template(session, tiny_model_dir, tokenizer):
    settings = GenSettings(max_new_tokens=12, system_prompt="You are terse.")
    answer = session.answer_all(PROMPT, settings)["base"][0]
    messages = [{"role": "system", "content": "You are terse."}, *user(PROMPT)]
    assert answer == hf_greedy(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer, messages)


def test_sampling_is_seeded_and_the_same_in_every_mode(session):
    hot = GenSettings(max_new_tokens=8, temperature=1.0, top_p=0.95, top_k=0, seed=7)
    first = {c: text for c, (text, _) in session.answer_all(PROMPT, hot).items()}
    assert first == {c: text for c, (text, _) in session.answer_all(PROMPT, hot).items()}
    assert list(session.stream("all", [], PROMPT, hot))[-1][0] == first["all"]  # alone or round-robin: same
    other_seed = GenSettings(max_new_tokens=8, temperature=1.0, top_k=0, seed=8)
    assert list(session.stream("base", [], PROMPT, other_seed))[-1][0] != first["base"]


def test_generate_helper_matches_transformers(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert generate(model, tokenizer, user(PROMPT), GREEDY) == hf_greedy(model, tokenizer, user(PROMPT))


def test_bad_settings_are_listed():
    with pytest.raises(ChatError, match="max_new_tokens.*top_p"):
        generate(None, None, [], GenSettings(max_new_tokens=0, top_p=0))


def test_prompt_set_to_table_to_csv(session, tmp_path):
    (tmp_path / "p.txt").write_text("What is the capital of France?\n\nWho are you?\n", encoding="utf-8")
    (tmp_path / "p.json").write_text(json.dumps(["Hi", {"prompt": "你好", "reference": "Hello"}]), encoding="utf-8")
    alpaca = [{"instruction": "Add", "input": "1 and 2", "output": "3"}]
    (tmp_path / "a.json").write_text(json.dumps(alpaca), encoding="utf-8")
    assert [p["prompt"] for p in load_prompt_set(tmp_path / "p.txt")] == [PROMPT, "Who are you?"]
    assert load_prompt_set(tmp_path / "a.json") == [{"prompt": "Add\n\n1 and 2", "reference": "3"}]
    prompts = load_prompt_set(tmp_path / "p.json")
    seen = []
    df = session.run_prompt_set(prompts, GenSettings(max_new_tokens=6), progress=lambda f, m: seen.append(f))
    assert list(df.columns) == ["prompt", "reference", "base", "qv", "all"]
    assert df.shape == (2, 5) and df.loc[1, "reference"] == "Hello"
    assert df.loc[0, "qv"] == session.answer_all("Hi", GenSettings(max_new_tokens=6))["qv"][0]
    assert seen[-1] == 1.0 and set(df.attrs["tokens_per_s"]) == set(session.columns)
    back = pd.read_csv(save_table(df, tmp_path / "out" / "table.csv"), encoding="utf-8-sig", keep_default_na=False)
    assert back["prompt"].tolist() == ["Hi", "你好"] and back["qv"].tolist() == df["qv"].tolist()


def test_prompt_set_errors_name_file_and_item(tmp_path):
    (tmp_path / "bad.json").write_text('["a", ', encoding="utf-8")
    with pytest.raises(ChatError, match=r"bad\.json: line 1 is not valid JSON"):
        load_prompt_set(tmp_path / "bad.json")
    (tmp_path / "noprompt.json").write_text(json.dumps(["a", {"answer": "x"}]), encoding="utf-8")
    with pytest.raises(ChatError, match=r"noprompt\.json: item 2 has no text"):
        load_prompt_set(tmp_path / "noprompt.json")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ChatError, match="holds no prompts"):
        load_prompt_set(tmp_path / "empty.txt")


def test_base_inferred_from_adapter_config(tiny_model_dir, adapters):
    chat = ChatSession(None, [str(adapters["qv"])], device="cpu")
    assert chat.base_label == str(tiny_model_dir) and chat.columns == ["base", "qv"] and not chat.warnings
    chat.close()


def test_run_and_checkpoint_folders_resolve_to_adapters(tmp_path, adapters, tiny_model_dir):
    run = tmp_path / "20250101-lora-tiny"  # the layout app.runs writes
    shutil.copytree(adapters["qv"], run / "adapter")
    shutil.copytree(adapters["all"], run / "checkpoints" / "checkpoint-3")
    (run / "checkpoints" / "checkpoint-3" / "optimizer.pt").write_bytes(b"never loaded")  # trainer state
    checkpoint = run / "checkpoints" / "checkpoint-3"
    assert resolve_source(run) == ("adapter", run / "adapter")
    assert resolve_source(checkpoint) == ("adapter", checkpoint)
    shutil.rmtree(run / "adapter")  # a run stopped before its final save: its newest checkpoint
    assert resolve_source(run) == ("adapter", checkpoint)
    shutil.copytree(adapters["qv"], run / "adapter")
    chat = ChatSession(None, [str(run), str(checkpoint)], device="cpu")
    assert chat.columns == ["base", "20250101-lora-tiny", "20250101-lora-tiny/checkpoint-3"]
    chat.close()
    with pytest.raises(AdapterError, match="holds no adapter_config.json"):
        resolve_source(tmp_path)


def test_full_model_folder_is_a_separate_column(tmp_path, tiny_model_dir, adapters, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # a "fully fine-tuned" model whose answers differ from the base
    model.save_pretrained(tmp_path / "run" / "model")
    tokenizer.save_pretrained(tmp_path / "run" / "model")
    chat = ChatSession(str(tiny_model_dir), [str(adapters["qv"]), str(tmp_path / "run")], device="cpu")
    answers = chat.answer_all(PROMPT, GREEDY)
    assert chat.columns == ["base", "qv", "run"]
    assert answers["run"][0] == hf_greedy(model, tokenizer, user(PROMPT)) != answers["base"][0]
    chat.close()


def test_adapter_from_another_base_is_refused_clearly(tmp_path, tiny_model_dir, adapters):
    from tiny import build_tiny_model

    other_base = build_tiny_model(tmp_path / "other-base", hidden=32)
    foreign = make_adapter(other_base, tmp_path / "foreign", seed=3, targets=["q_proj", "v_proj"])
    with pytest.raises(ChatError) as err:
        ChatSession(str(tiny_model_dir), [str(adapters["qv"]), str(foreign)], device="cpu")
    message = str(err.value)
    assert str(foreign) in message and str(tiny_model_dir) in message and str(other_base) in message
    assert "does not fit" in message and "q_proj" in message and "Traceback" not in message


def test_pickle_adapter_needs_allow_pickle(tmp_path, tiny_model_dir, session):
    pickled = make_adapter(tiny_model_dir, tmp_path / "pickled", seed=1, targets=["q_proj", "v_proj"], safe=False)
    assert (pickled / "adapter_model.bin").is_file() and not (pickled / "adapter_model.safetensors").exists()
    with pytest.raises(ChatError, match="allow_pickle=True"):
        ChatSession(str(tiny_model_dir), [str(pickled)], device="cpu")
    chat = ChatSession(str(tiny_model_dir), [str(pickled)], device="cpu", allow_pickle=True)
    # the same seed as the "qv" safetensors adapter: the same answer
    assert chat.answer_all(PROMPT, GREEDY)["pickled"][0] == session.answer_all(PROMPT, GREEDY)["qv"][0]
    chat.close()


def test_busy_device_raises_device_busy_with_the_choice(monkeypatch, tiny_model_dir):
    holder = devices.claim(devices.resolve("auto"), "42")  # what the job manager does for a run
    try:
        with pytest.raises(DeviceBusy, match='training run 42.*device="cpu"'):
            ChatSession(str(tiny_model_dir), [], device="auto")
    finally:
        devices.release(holder)
    chat = ChatSession(str(tiny_model_dir), [], device="cpu")  # the offered way out works
    assert chat.columns == ["base"]
    chat.close()


def test_at_most_four_adapters(tiny_model_dir, adapters):
    with pytest.raises(ChatError, match="at most 4"):
        ChatSession(str(tiny_model_dir), [str(adapters["qv"])] * 5, device="cpu")


def test_cli_prompt_set_writes_csv(tmp_path, adapters, capsys):
    from app.__main__ import main

    (tmp_path / "prompts.txt").write_text("Hi\nWho are you?\n", encoding="utf-8")
    argv = ["chat", str(adapters["qv"]), "--device", "cpu", "--prompts", str(tmp_path / "prompts.txt"),
            "--csv", str(tmp_path / "answers.csv"), "--max-new-tokens", "4"]  # fmt: skip
    assert main(argv) == 0
    assert pd.read_csv(tmp_path / "answers.csv").columns.tolist() == ["prompt", "base", "qv"]
    assert main(["chat", str(tmp_path / "missing")]) == 1
    assert "not found" in capsys.readouterr().err


def test_a_tunedesk_run_is_a_chat_column_and_merges_with_its_card(tiny_model_dir, tokenizer, tmp_path, runs_tmp):
    from app import history, runs, train
    from app.export import merge

    cfg = tiny_config(tiny_model_dir, write_alpaca(tmp_path / "data.json"), "lora")
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished"
    chat = ChatSession(None, [str(run_dir)], device="cpu")  # base read from the adapter, as a user would pick it
    assert chat.columns == ["base", run_dir.name] and not chat.warnings
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir / "adapter")
    assert chat.answer_all(PROMPT, GREEDY)[run_dir.name][0] == hf_greedy(plain, tokenizer, user(PROMPT))
    chat.close()
    card = (merge(run_dir, tmp_path / "merged") / "README.md").read_text(encoding="utf-8")
    summary = runs.summarize(run_dir)
    assert f"| Steps | {summary.step} |" in card and f"| Final train loss | {summary.last_loss:.4f} |" in card
    evals = [e["eval_loss"] for e in history.load_events(run_dir) if e["type"] == "eval"]
    assert evals and f"| Final eval loss | {evals[-1]:.4f} |" in card
    assert "method: lora" in card and str(tiny_model_dir) in card


@pytest.mark.slow
def test_default_model_chat_with_an_adapter(default_model_dir, tmp_path):
    adapter = make_adapter(default_model_dir, tmp_path / "smol-qv", seed=5, targets=["q_proj", "v_proj"], r=8)
    chat = ChatSession(None, [str(adapter)], device="cpu")
    answers = chat.answer_all(PROMPT, GenSettings(max_new_tokens=10))
    print({c: f"{tps:.1f} tok/s" for c, (_, tps) in answers.items()})
    assert "Paris" in answers["base"][0]
    assert answers["base"][0] != answers["smol-qv"][0]
    chat.close()
