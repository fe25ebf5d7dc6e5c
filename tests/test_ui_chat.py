"""Chat tab handlers on real Gradio components with a real ChatSession: the tiny model and a PEFT adapter whose
LoRA B weights were perturbed, streamed side by side into two columns; prompt sets; errors and the device guard;
columns named by the model and the run (never a folder's timestamp); run choices that follow the run history."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd
import pytest
from ui_ctx import chat_values, make_adapter, make_run, tab_context, wired

from app import adapters, devices, history
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


def test_load_shows_one_column_per_model(chat_ctx, loaded, tiny_model_dir):
    h = chat_ctx.handles["chat"]
    base = f"{tiny_model_dir.name} (base)"  # the model's name, not the word "base" or its full path
    assert f"{base}, my-adapter" in loaded[h.status]
    assert [loaded[pane]["visible"] for pane in h.panes] == [True, True, False, False, False]
    assert [loaded[bot]["label"] for bot in h.chatbots[:2]] == [base, "my-adapter"]
    assert loaded[h.histories] == {}
    fn, values = wired(chat_ctx, "chat_relabel")
    values[chat_ctx.lang_selector] = "zh"
    relabelled = fn(values)
    assert relabelled[h.chatbots[0]]["label"] == f"{tiny_model_dir.name}（基础模型）"
    assert relabelled[h.chatbots[2]]["label"] == "第 3 列"


def test_answers_stream_into_two_columns(chat_ctx, loaded, monkeypatch):
    h = chat_ctx.handles["chat"]
    monkeypatch.setattr(chat_tab, "THROTTLE_S", 0.0)  # every round is a redraw
    values = chat_values(chat_ctx, prompt="What is the capital of France?")
    updates = list(chat_tab.send(chat_ctx, values))
    assert updates[0][h.prompt] == ""  # the box clears at once
    assert updates[0][h.panes[1]]["visible"] and updates[0][h.chatbots[1]]["label"] == "my-adapter"
    assert updates[0][h.chatbots[0]]["label"].endswith("(base)")
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


def test_prompt_set_runs_across_columns_into_a_csv(chat_ctx, loaded, tmp_path, tiny_model_dir):
    h = chat_ctx.handles["chat"]
    out = chat_tab.run_prompt_set(chat_ctx, chat_values(chat_ctx, prompt_lines="Hi\n\nWho are you?\n"))
    assert out[h.set_status].startswith("✅"), out[h.set_status]
    assert f"{tiny_model_dir.name} (base) " in out[h.set_status]  # mean tokens/s per column, by its label
    assert out[h.set_table]["visible"]  # hidden until there are answers
    table = out[h.set_table]["value"]
    base = f"{tiny_model_dir.name} (base)"
    assert list(table.columns) == ["Prompt", base, "my-adapter"] and list(table["Prompt"]) == ["Hi", "Who are you?"]
    csv = pd.read_csv(out[h.set_csv], encoding="utf-8-sig", keep_default_na=False)
    assert list(csv.columns) == list(table.columns) and list(csv["Prompt"]) == ["Hi", "Who are you?"]
    file = tmp_path / "set.json"
    file.write_text('[{"instruction": "Say hi", "output": "Hi!"}]', encoding="utf-8")
    in_chinese = chat_values(chat_ctx, prompt_file=str(file))
    in_chinese[chat_ctx.lang_selector] = "zh"
    with_ref = chat_tab.run_prompt_set(chat_ctx, in_chinese)
    assert list(with_ref[h.set_table]["value"].columns) == [
        "提示",
        "参考答案",
        f"{tiny_model_dir.name}（基础模型）",
        "my-adapter",
    ]
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2", encoding="utf-8")
    bad = chat_tab.run_prompt_set(chat_ctx, chat_values(chat_ctx, prompt_file=str(broken)))
    assert bad[h.set_status].startswith("❌") and "broken.json" in bad[h.set_status]


def test_bad_settings_and_empty_prompt_are_messages(chat_ctx, loaded):
    h = chat_ctx.handles["chat"]
    (empty,) = chat_tab.send(chat_ctx, chat_values(chat_ctx, prompt="  "))
    assert "Type a message" in empty[h.status]
    (bad,) = chat_tab.send(chat_ctx, chat_values(chat_ctx, prompt="Hi", top_p=0.0))
    assert "Top-p: 0.0 must be in (0, 1]" in bad[h.status] and "top_p" not in bad[h.status]  # the label on screen


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


def test_columns_are_named_by_the_run_and_two_runs_of_one_name_by_their_time(chat_ctx, runs_tmp, tiny_model_dir):
    h = chat_ctx.handles["chat"]
    first = make_run(tiny_model_dir)
    time.sleep(1.0)  # run folders are named by the second they were created in
    second = make_run(tiny_model_dir)
    assert first.name.endswith("-ui-test") and second.name.endswith("-ui-test") and first.name != second.name
    out = chat_tab.load_models(chat_ctx, chat_values(chat_ctx, adapters=[str(first / "adapter")]))
    assert [out[bot]["label"] for bot in h.chatbots[:2]] == [f"{tiny_model_dir.name} (base)", "ui-test"]
    assert first.name not in out[h.status]  # the folder's timestamp is not how a person names the run
    for run in (first, second):  # the same name typed twice
        (run / "config.yaml").write_text("train:\n  run_name: identity\n", encoding="utf-8")
    both = chat_tab.load_models(
        chat_ctx, chat_values(chat_ctx, adapters=[str(first / "adapter"), str(second / "adapter")])
    )
    labels = [both[bot]["label"] for bot in h.chatbots[1:3]]
    stamp = f"{first.name[:4]}-{first.name[4:6]}-{first.name[6:8]} {first.name[9:11]}:"
    assert labels[0].startswith(f"identity ({stamp}") and labels[0] != labels[1], labels
    chat_tab.unload(chat_ctx)


def test_picker_names_runs_checkpoints_and_models(runs_tmp, tiny_model_dir, tmp_path):
    run = make_run(tiny_model_dir)
    ckpt = run / history.CHECKPOINTS / "checkpoint-40"
    ckpt.mkdir(parents=True)
    assert pickers.folder_name(run / "adapter") == "ui-test"
    assert pickers.folder_name(ckpt) == "ui-test · checkpoint-40"
    (run / "config.yaml").write_text("train:\n  run_name: My first run\n", encoding="utf-8")
    assert pickers.folder_name(run / "adapter") == "My first run"  # the name as typed, not its folder slug
    assert pickers.folder_name(tmp_path / "20260101-120000-copied" / "adapter") == "copied"
    assert pickers.model_name(str(tiny_model_dir) + "/") == tiny_model_dir.name
    assert pickers.model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    same_second = ["runs/20260101-120000-identity/adapter", "runs/20260101-120000-identity-2/adapter"]
    assert pickers.unique_names(["identity", "identity"], same_second) == [
        "identity (20260101-120000-identity)",
        "identity (20260101-120000-identity-2)",
    ]


class _Page:
    """One browser page's picker and its hidden `seen` box, which each tick rewrites."""

    def __init__(self, ctx):
        self.ctx, self.seen = ctx, ctx.handles["chat"].picker.seen.value

    def tick(self, api_name="chat_follow_runs", lang="en"):
        fn, values = wired(self.ctx, api_name)
        values[self.ctx.handles["chat"].picker.seen] = self.seen
        values[self.ctx.lang_selector] = lang
        choices, self.seen = fn(*values.values())
        return choices


def test_run_choices_follow_the_history_without_refresh(chat_ctx, runs_tmp, tiny_model_dir):
    page = _Page(chat_ctx)
    page.tick()  # the page's first look at this runs folder (drawn at build from another one)
    assert page.tick() == gr.skip()  # nothing new: no redraw
    running = make_run(tiny_model_dir, status="started")  # a run still training: not a choice yet
    assert str(running / "adapter") not in [path for _, path in page.tick()["choices"]]
    history.append_event(running, "finished", step=2)  # it finishes: the next tick lists it
    choices = page.tick()
    assert (f"{running.name} · adapter", str(running / "adapter")) in choices["choices"]
    assert "value" not in choices  # the user's current selection stays as it is
    assert page.tick() == gr.skip()
    in_chinese = page.tick(lang="zh")  # a language switch relabels
    assert (f"{running.name} · 适配器", str(running / "adapter")) in in_chinese["choices"]
    assert page.tick("chat_refresh_runs", lang="zh")["choices"] == in_chinese["choices"]  # Refresh always redraws
    quiet = [page.tick(lang="zh") for _ in range(pickers.REDRAW_EVERY)]  # nothing changes for 30 s ...
    assert quiet[:-1] == [gr.skip()] * (pickers.REDRAW_EVERY - 1)
    assert quiet[-1]["choices"] == in_chinese["choices"]  # ... then one drawing again, in case the page dropped one
