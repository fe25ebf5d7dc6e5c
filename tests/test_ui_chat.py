"""Chat tab handlers on real Gradio components with a real ChatSession: the tiny model and a PEFT adapter whose
LoRA B weights were perturbed, streamed side by side into two columns; prompt sets; errors and the device guard."""

from __future__ import annotations

import pandas as pd
import pytest
from ui_ctx import chat_values, make_adapter, make_run, tab_context

from app import adapters, devices
from app.ui import chat_tab, pickers


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("chat") / "my-adapter")


@pytest.fixture(scope="module")
def chat_ctx(tiny_model_dir):
    demo, ctx = tab_context(["chat"], str(tiny_model_dir))
    yield ctx
    chat_tab.HOLDER.close()


@pytest.fixture(scope="module")
def loaded(chat_ctx, adapter_dir):
    h = chat_ctx.handles["chat"]
    out = chat_tab.load_models(chat_ctx, chat_values(chat_ctx, adapters=[str(adapter_dir)]))
    assert out[h.status].startswith("✅"), out[h.status]
    return out


def test_load_shows_one_column_per_model(chat_ctx, loaded):
    h = chat_ctx.handles["chat"]
    assert "base, my-adapter" in loaded[h.status]
    assert [loaded[pane]["visible"] for pane in h.panes] == [True, True, False, False, False]
    assert [loaded[bot]["label"] for bot in h.chatbots[:2]] == ["base", "my-adapter"]
    assert loaded[h.histories] == {}


def test_answers_stream_into_two_columns(chat_ctx, loaded, monkeypatch):
    h = chat_ctx.handles["chat"]
    monkeypatch.setattr(chat_tab, "THROTTLE_S", 0.0)  # every round is a redraw
    values = chat_values(chat_ctx, prompt="What is the capital of France?")
    updates = list(chat_tab.send(chat_ctx, values))
    assert updates[0][h.prompt] == ""  # the box clears at once
    assert updates[0][h.panes[1]]["visible"] and updates[0][h.chatbots[1]]["label"] == "my-adapter"
    growing = [len(u[h.chatbots[1]][-1]["content"]) for u in updates if isinstance(u.get(h.chatbots[1]), list)]
    assert len(growing) >= 3 and growing == sorted(growing) and growing[-1] > 0  # token by token
    final = updates[-1]
    base, adapted = final[h.chatbots[0]], final[h.chatbots[1]]
    assert [m["role"] for m in base] == ["user", "assistant"] and base[0]["content"] == values[h.prompt]
    assert base[1]["content"] and adapted[1]["content"]
    assert base[1]["content"] != adapted[1]["content"]  # the perturbed adapter changes the greedy answer
    assert "tokens/s" in final[h.speeds[0]] and "tokens/s" in final[h.speeds[1]]
    histories = final[h.histories]
    assert set(histories) == {"base", "my-adapter"} and histories["base"] == base
    again = chat_values(chat_ctx, prompt="And of Italy?")
    again[h.histories] = histories
    second = list(chat_tab.send(chat_ctx, again))[-1]
    assert len(second[h.histories]["my-adapter"]) == 4
    cleared = chat_tab.clear(chat_ctx)
    assert cleared[h.histories] == {} and cleared[h.chatbots[0]] == []


def test_same_seed_same_answer_when_sampling(chat_ctx, loaded):
    h = chat_ctx.handles["chat"]
    values = chat_values(chat_ctx, prompt="Who are you?", temperature=0.9, seed=7)
    first = list(chat_tab.send(chat_ctx, values))[-1][h.histories]
    again = list(chat_tab.send(chat_ctx, values))[-1][h.histories]
    assert first == again


def test_prompt_set_runs_across_columns_into_a_csv(chat_ctx, loaded, tmp_path):
    h = chat_ctx.handles["chat"]
    out = chat_tab.run_prompt_set(chat_ctx, chat_values(chat_ctx, prompt_lines="Hi\n\nWho are you?\n"))
    assert out[h.set_status].startswith("✅"), out[h.set_status]
    table = out[h.set_table]
    assert list(table.columns) == ["prompt", "base", "my-adapter"] and list(table["prompt"]) == ["Hi", "Who are you?"]
    csv = pd.read_csv(out[h.set_csv], encoding="utf-8-sig", keep_default_na=False)
    assert list(csv.columns) == list(table.columns) and list(csv["prompt"]) == ["Hi", "Who are you?"]
    file = tmp_path / "set.json"
    file.write_text('[{"instruction": "Say hi", "output": "Hi!"}]', encoding="utf-8")
    with_ref = chat_tab.run_prompt_set(chat_ctx, chat_values(chat_ctx, prompt_file=str(file)))
    assert list(with_ref[h.set_table].columns[:2]) == ["prompt", "reference"]
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2", encoding="utf-8")
    bad = chat_tab.run_prompt_set(chat_ctx, chat_values(chat_ctx, prompt_file=str(broken)))
    assert bad[h.set_status].startswith("❌") and "broken.json" in bad[h.set_status]


def test_bad_settings_and_empty_prompt_are_messages(chat_ctx, loaded):
    h = chat_ctx.handles["chat"]
    (empty,) = chat_tab.send(chat_ctx, chat_values(chat_ctx, prompt="  "))
    assert "Type a message" in empty[h.status]
    (bad,) = chat_tab.send(chat_ctx, chat_values(chat_ctx, prompt="Hi", top_p=0.0))
    assert "top_p" in bad[h.status]


def test_load_errors_are_messages(chat_ctx, tmp_path, tiny_model_dir):
    h = chat_ctx.handles["chat"]
    missing = chat_tab.load_models(chat_ctx, chat_values(chat_ctx, adapters=[str(tmp_path / "nope")]))
    assert missing[h.status].startswith("❌") and "nope" in missing[h.status]
    five = [str(tmp_path / f"a{i}") for i in range(5)]
    assert "at most 4" in chat_tab.load_models(chat_ctx, chat_values(chat_ctx, adapters=five))[h.status]
    (not_loaded,) = chat_tab.send(chat_ctx, chat_values(chat_ctx, prompt="Hi"))
    assert "Load a model first" in not_loaded[h.status]
    chat_tab.unload(chat_ctx)
    assert chat_tab.HOLDER.session is None


def test_device_guard_offers_the_cpu(chat_ctx, tiny_model_dir, monkeypatch):
    h = chat_ctx.handles["chat"]
    monkeypatch.setattr(devices, "holder", lambda device: devices.Holder(devices.resolve(device), "42"))
    blocked = chat_tab.load_models(chat_ctx, chat_values(chat_ctx, device="auto"))
    assert blocked[h.status].startswith("⏳") and "choose device **cpu**" in blocked[h.status]
    assert chat_tab.HOLDER.session is None
    on_cpu = chat_tab.load_models(chat_ctx, chat_values(chat_ctx, device="cpu"))
    assert on_cpu[h.status].startswith("✅") and "also using the CPU" in on_cpu[h.status]
    chat_tab.unload(chat_ctx)


def test_picker_lists_finished_runs_and_follows_their_base(runs_tmp, tiny_model_dir):
    done = make_run(tiny_model_dir)
    failed = make_run(tiny_model_dir, status="failed")
    folders = [path for _, path in pickers.adapter_choices()]
    assert str(done / "adapter") in folders and str(failed / "adapter") not in folders
    assert adapters.run_dir_of(done / "adapter") == done
    assert pickers.follow_base([str(done / "adapter")], "other")["value"] == str(tiny_model_dir)
    assert pickers.follow_base([], "other")["value"] == "other"
