"""The run's own system prompt, never the base model's built-in one (#14 item 2): SmolLM2's chat template writes
"You are a helpful AI assistant named SmolLM, trained by Hugging Face" into every conversation without a system
message. Training, the Data tab, samples, chat and the export (merged folder, GGUF template, Modelfile) must use the
run's system prompt instead, and an empty one means none. Tiny Llama with SmolLM2's template as shipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_export import make_adapter
from test_train_kit import one_torch_thread  # noqa: F401
from transformers import AutoTokenizer

from app import chat, runs, train_events
from app.config import RunConfig
from app.data_render import Example, render_segments, template_default_system, template_with_system, with_system
from app.export import export_gguf, merge
from app.gguf import CHATML_SYSTEM_TEMPLATE, ollama_template

SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOLLM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM_DEFAULT + "<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WHO = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am TuneBot."}]


@pytest.fixture(scope="module")
def smollm_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny Llama whose tokenizer carries SmolLM2's template (a built-in default system prompt)."""
    folder = tmp_path_factory.mktemp("smollm-template") / "model"
    shutil.copytree(tiny_model_dir, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = SMOLLM_TEMPLATE
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tok(smollm_model):
    return AutoTokenizer.from_pretrained(smollm_model)


def text_of(segments) -> str:
    return "".join(t for t, _ in segments)


def test_the_template_default_is_found_and_only_where_there_is_one(tok, tiny_model_dir):
    assert template_default_system(tok) == SMOLLM_DEFAULT
    assert template_default_system(AutoTokenizer.from_pretrained(tiny_model_dir)) == ""  # plain ChatML: none


def test_training_renders_the_runs_system_prompt_and_never_the_built_in_one(tok):
    example = Example(list(WHO), 0, {"instruction": "Who are you?", "input": ""})
    none = text_of(render_segments(example, tok, "chat", ""))
    assert "SmolLM" not in none and none.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWho")
    own = text_of(render_segments(example, tok, "chat", "You are TuneBot."))
    assert own.startswith("<|im_start|>system\nYou are TuneBot.<|im_end|>\n") and "SmolLM" not in own
    record_system = Example([{"role": "system", "content": "Be brief."}, *WHO], 0, {})
    assert text_of(render_segments(record_system, tok, "chat", "You are TuneBot.")).count("Be brief.") == 1
    # the trainer's samples render their prompts the same way
    cfg = RunConfig().replace(**{"data.template": "chat", "data.system_prompt": ""})
    assert train_events.render_prompt(tok, cfg, "Who are you?") == (
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_prompts_carry_no_built_in_system_prompt(tok):
    ids = chat.encode_chat(tok, chat.build_messages([], "Who are you?"))
    assert "SmolLM" not in tok.decode(ids)
    ids = chat.encode_chat(tok, chat.build_messages([], "Who are you?", "You are TuneBot."))
    assert tok.decode(ids).startswith("<|im_start|>system\nYou are TuneBot.<|im_end|>")
    assert with_system([{"role": "user", "content": "x"}], tok) == [
        {"role": "system", "content": ""},
        {"role": "user", "content": "x"},
    ]


@pytest.mark.parametrize("system", ["", 'You are TuneBot. Say "hi", it\'s fine \\ really.'])
def test_template_with_system_answers_as_training_rendered(tok, system):
    template = template_with_system(tok, system)
    assert template is not None and SMOLLM_DEFAULT not in template
    implicit = tok.apply_chat_template(WHO[:1], tokenize=False, chat_template=template)
    assert implicit == tok.apply_chat_template(with_system(WHO[:1], tok, system), tokenize=False)


def trained_run(smollm_model: Path, system: str, name: str) -> Path:
    cfg = RunConfig().replace(**{"model.name_or_path": str(smollm_model), "data.system_prompt": system})
    run = runs.create_run(cfg, name)
    make_adapter(smollm_model, run / runs.ADAPTER, seed=3, targets=["q_proj", "v_proj"])
    return run


def test_export_uses_the_runs_system_prompt_everywhere(smollm_model, runs_tmp, tmp_path):
    run = trained_run(smollm_model, "You are TuneBot, made by the TuneDesk team.", "own-system")
    merged = merge(run, tmp_path / "merged", "float32")
    out_tok = AutoTokenizer.from_pretrained(merged)
    rendered = out_tok.apply_chat_template(WHO[:1], tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou are TuneBot, made by the TuneDesk team.<|im_end|>")
    path = export_gguf(merged, tmp_path / "gguf", "f32")
    modelfile = (path.parent / "Modelfile").read_text(encoding="utf-8")
    assert 'SYSTEM """You are TuneBot, made by the TuneDesk team."""' in modelfile and "SmolLM" not in modelfile
    from gguf import GGUFReader

    gguf_template = GGUFReader(path).fields["tokenizer.chat_template"].contents()
    assert "SmolLM" not in gguf_template and "TuneBot" in gguf_template


def test_export_of_a_run_without_system_prompt_writes_none(smollm_model, runs_tmp, tmp_path):
    run = trained_run(smollm_model, "", "no-system")
    merged = merge(run, tmp_path / "merged", "float32")
    rendered = AutoTokenizer.from_pretrained(merged).apply_chat_template(WHO[:1], tokenize=False)
    assert rendered.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user")  # as training rendered it
    export_gguf(merged, tmp_path / "gguf", "f32")
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text(encoding="utf-8")
    assert "SYSTEM" not in modelfile and "SmolLM" not in modelfile
    # Ollama writes the same empty system block when no SYSTEM is given
    assert CHATML_SYSTEM_TEMPLATE in modelfile


def test_ollama_template_of_a_template_without_default_has_no_system_block():
    plain = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}"
    template, _stops, system = ollama_template(plain)
    assert system is None and "(index .Messages 0)" not in template
    assert ollama_template(SMOLLM_TEMPLATE)[2] == SMOLLM_DEFAULT


def test_chat_gives_an_adapter_its_runs_system_prompt_and_the_base_none(smollm_model, runs_tmp):
    run = trained_run(smollm_model, "You are TuneBot.", "chat-system")
    session = chat.ChatSession(str(smollm_model), [str(run)], "cpu")
    base_col, adapter_col = session.columns
    prompts = {c: session._decoder(c, [], "Who are you?", chat.GenSettings()).prompts[0] for c in session.columns}
    tok = session.models.member(adapter_col).tokenizer
    assert tok.decode(prompts[adapter_col]).startswith("<|im_start|>system\nYou are TuneBot.<|im_end|>")
    assert tok.decode(prompts[base_col]).startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user")
    # a system prompt typed in the chat applies to every column
    typed = session._decoder(adapter_col, [], "Hi", chat.GenSettings(system_prompt="Be brief.")).prompts[0]
    assert tok.decode(typed).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    # what a Chat vote records of each column is the conversation it was asked (its own system prompt)
    asked = session.messages(adapter_col, [], "Who are you?", chat.GenSettings())
    assert asked[0] == {"role": "system", "content": "You are TuneBot."} and asked[-1]["content"] == "Who are you?"
    assert session.messages(base_col, [], "Who are you?", chat.GenSettings()) == [asked[-1]]  # the base: none
