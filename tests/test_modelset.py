"""One model set, one generation path: chat and evaluate load a base and adapters through app.modelset and answer
through its Decoder, so the same base + adapter + prompt gives the same greedy text in both."""

from __future__ import annotations

import json

import pytest
from ui_ctx import make_adapter

from app import adapters, eval_data, evaluate, modelset
from app.chat import ChatSession, encode_chat
from app.config import DataConfig
from app.data import Example
from app.modelset import Decoder, GenSettings, ModelSet

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("ms") / "qv", seed=3, scale=1.0)


def test_chat_and_evaluate_give_the_same_greedy_answer(tmp_path, tiny_model_dir, adapter):
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": PROMPT, "input": "", "output": "Paris."}]), encoding="utf-8")
    report = evaluate.evaluate(str(tiny_model_dir), [str(adapter)], data=str(data), max_new_tokens=12, save=False)
    session = ChatSession(str(tiny_model_dir), [str(adapter)], device="cpu")
    try:
        chat = {c: text for c, (text, _) in session.answer_all(PROMPT, GenSettings(max_new_tokens=12)).items()}
    finally:
        session.close()
    name = adapters.display_name(adapter)
    assert set(chat) == {"base", name}
    assert chat["base"] != chat[name], "the adapter must change the answer, or the test shows nothing"
    for column in ("base", name):
        assert report.examples.loc[0, f"{column} answer"] == chat[column].strip()


def test_evaluation_prompt_is_the_chat_prompt(tiny_model_dir):
    """Evaluate renders with the training template, chat with the chat template: for a one-turn question on a
    model with a chat template they are the same tokens, which is why the answers above can agree."""
    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "Paris."}]
    prompt_ids, _, _ = eval_data.encode_for_eval(Example(messages, 0), tok, DataConfig())
    assert prompt_ids == encode_chat(tok, messages[:1])


def test_one_decoder_for_a_column_and_for_a_batch(tiny_model_dir, adapter):
    """The set's own decoder (chat's path) and a batch through `use` (evaluate's path) agree token for token;
    the base column is the plain base model with every adapter off."""
    from app.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    prompts = [encode_chat(tok, [{"role": "user", "content": t}]) for t in (PROMPT, "hi")]
    models = ModelSet(str(tiny_model_dir), [adapters.resolve_source(adapter)], device="cpu")
    name = adapters.display_name(adapter)
    settings = GenSettings(max_new_tokens=8)
    try:
        alone = {c: [models.decoder(c, [p], settings).run()[0] for p in prompts] for c in models.columns}
        for column in models.columns:
            with models.use(column) as (model, tokenizer):
                stops = modelset.stop_ids(model, tokenizer)
                assert Decoder(model, tokenizer, prompts, settings, stops).run() == alone[column]
        assert alone["base"] != alone[name]
    finally:
        models.close()
    assert models.columns == []


def test_errors_say_what_to_do(tiny_model_dir, adapter):
    with pytest.raises(modelset.ModelSetError, match="generation settings: max_new_tokens: 0"):
        Decoder(None, None, [[1]], GenSettings(max_new_tokens=0), set())
    models = ModelSet(str(tiny_model_dir), [], device="cpu")
    try:
        with pytest.raises(modelset.ModelSetError, match="no column 'x'; the columns are base"):
            models.decoder("x", [[1]])
    finally:
        models.close()
    with pytest.raises(evaluate.EvalError, match="device"):
        evaluate.evaluate(str(tiny_model_dir), [str(adapter)], data=[], device="tpu")
