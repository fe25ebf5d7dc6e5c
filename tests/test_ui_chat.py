"""Chat tab handlers on real Gradio components with a real ChatSession: the tiny model and a PEFT adapter whose
LoRA B weights were perturbed, streamed side by side into two columns; prompt sets; errors and the device guard;
columns named by the model and the run (never a folder's timestamp); run choices that follow the run history; votes
on the last answers (blind or named, two columns or more) that append preference pairs to the named file."""

from __future__ import annotations

import json
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


# ---- votes: which answer is better ------------------------------------------------------------------------------
@pytest.fixture()
def vote_home(tmp_path, monkeypatch):
    """A home of its own: the vote file joins this home's recent files, not the other tests'."""
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _load(ctx, adapters, blind):
    h = ctx.handles["chat"]
    fn, values = wired(ctx, "chat_load")
    values.update({h.picker.adapters: [str(a) for a in adapters], h.picker.device: "cpu", h.blind: blind})
    out = fn(values)
    assert out[h.status].startswith("✅"), out[h.status]
    return out


def _send(ctx, prompt, ballot, histories):
    """Every update of one Send, with exactly the inputs the UI wires; the last holds the final answers."""
    h = ctx.handles["chat"]
    fn, values = wired(ctx, "chat_send")
    values.update({h.prompt: prompt, h.ballot: ballot, h.histories: histories, h.settings["max_new_tokens"]: 6})
    return list(fn(values))


def _vote(ctx, api_name, ballot, file, **picks):
    h = ctx.handles["chat"]
    fn, values = wired(ctx, api_name)
    values.update({h.ballot: ballot, h.vote_file: str(file), **{getattr(h, k): v for k, v in picks.items()}})
    return fn(values)


def _records(file):
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]


def test_blind_votes_hide_the_names_until_the_vote_and_write_pairs(chat_ctx, adapter_dir, tiny_model_dir, vote_home):
    h, file = chat_ctx.handles["chat"], vote_home / "votes" / "mine.jsonl"
    base = f"{tiny_model_dir.name} (base)"
    out = _load(chat_ctx, [adapter_dir], blind=True)
    ballot = out[h.ballot]
    assert sorted(ballot["order"]) == ["base", "my-adapter"] and ballot["blind"]
    assert [out[bot]["label"] for bot in h.chatbots[:2]] == ["Model A", "Model B"]  # shuffled and unnamed
    assert out[h.vote_two]["visible"] and not out[h.vote_many]["visible"]
    assert (out[h.vote_a], out[h.vote_b]) == ("👈 Model A is better", "Model B is better 👉")
    assert "Send a message first" in _vote(chat_ctx, "chat_vote_a", ballot, file)[h.vote_status]

    updates = _send(chat_ctx, "What is the capital of France?", ballot, {})
    streaming = updates[0][h.ballot]
    assert "Wait until every column has finished" in _vote(chat_ctx, "chat_vote_a", streaming, file)[h.vote_status]
    final = updates[-1]
    shown = [final[bot][-1]["content"] for bot in h.chatbots[:2]]  # what the person read in panes A and B
    voted = _vote(chat_ctx, "chat_vote_b", final[h.ballot], file)  # "B is better"
    assert voted[h.vote_status].startswith("✅") and "mine.jsonl`: 1." in voted[h.vote_status], voted[h.vote_status]
    names = {"base": base, "my-adapter": "my-adapter"}
    order = final[h.ballot]["order"]
    assert [voted[bot]["label"] for bot in h.chatbots[:2]] == [names[c] for c in order]  # revealed
    [record] = _records(file)
    assert record["prompt"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert (record["chosen"][0]["content"], record["rejected"][0]["content"]) == (shown[1], shown[0])
    assert record["models"] == {"chosen": names[order[1]], "rejected": names[order[0]]}
    again = _vote(chat_ctx, "chat_vote_b", voted[h.ballot], file)
    assert "already recorded" in again[h.vote_status] and len(_records(file)) == 1

    # the next message after a blind vote is a new round: a fresh conversation, shuffled and unnamed again
    for n in (2, 3):
        updates = _send(chat_ctx, f"Question {n}?", voted[h.ballot], final[h.histories])
        final = updates[-1]
        assert [updates[0][bot]["label"] for bot in h.chatbots[:2]] == ["Model A", "Model B"]
        assert all(len(conversation) == 2 for conversation in final[h.histories].values())
        voted = _vote(chat_ctx, "chat_vote_a", final[h.ballot], file)
        assert f"jsonl`: {n}." in voted[h.vote_status], voted[h.vote_status]
    assert [r["prompt"][-1]["content"] for r in _records(file)] == [
        "What is the capital of France?",
        "Question 2?",
        "Question 3?",
    ]
    from app.ui import data_tab  # the Data tab's dataset picker offers the vote file

    assert str(file) in [path for _, path in data_tab.dataset_choices("")]
    chat_tab.unload(chat_ctx)


def test_blind_mode_shuffles_and_a_language_switch_keeps_the_names_hidden(chat_ctx, adapter_dir, vote_home):
    h = chat_ctx.handles["chat"]
    out = _load(chat_ctx, [adapter_dir], blind=False)
    assert out[h.ballot]["order"] == ["base", "my-adapter"] and out[h.vote_a].endswith("(base) is better")
    fn, values = wired(chat_ctx, "chat_blind")
    values.update({h.blind: True, h.ballot: out[h.ballot], h.histories: {"my-adapter": [{"role": "user"}]}})
    orders = set()
    for _ in range(20):  # a fair shuffle of two columns: both orders within 20 draws (1 in 500,000 to fail)
        blind = fn(values)
        orders.add(tuple(blind[h.ballot]["order"]))
    assert orders == {("base", "my-adapter"), ("my-adapter", "base")}
    pane = blind[h.ballot]["order"].index("my-adapter")
    assert blind[h.chatbots[pane]]["value"] == [{"role": "user"}]  # each pane shows its own model's history
    assert blind[h.chatbots[pane]]["label"] == ("Model A", "Model B")[pane]
    relabel, lang = wired(chat_ctx, "chat_relabel")
    lang.update({chat_ctx.lang_selector: "zh", h.ballot: blind[h.ballot]})
    in_chinese = relabel(lang)
    assert [in_chinese[bot]["label"] for bot in h.chatbots[:2]] == ["模型 A", "模型 B"]
    assert in_chinese[h.vote_a] == "👈 模型 A 更好"
    values.update({h.blind: False, h.ballot: {**blind[h.ballot], "generating": True}})
    busy = fn(values)
    assert busy[h.blind] is True and "once the answers have finished" in busy[h.vote_status]
    values[h.ballot] = blind[h.ballot]
    assert fn(values)[h.ballot]["order"] == ["base", "my-adapter"]  # off: load order, named
    chat_tab.unload(chat_ctx)


def test_three_columns_vote_with_a_better_and_a_worse_pick(chat_ctx, adapter_dir, tiny_model_dir, vote_home):
    h, file = chat_ctx.handles["chat"], vote_home / "three.jsonl"
    other = make_adapter(tiny_model_dir, vote_home.parent / "other-adapter", seed=2)
    out = _load(chat_ctx, [adapter_dir, other], blind=False)
    assert out[h.vote_many]["visible"] and not out[h.vote_two]["visible"]
    labels = [label for label, _ in out[h.better]["choices"]]
    assert labels == [f"{tiny_model_dir.name} (base)", "my-adapter", "other-adapter"]
    final = _send(chat_ctx, "Hi", out[h.ballot], {})[-1]
    same = _vote(chat_ctx, "chat_vote", final[h.ballot], file, better=1, worse=1)
    assert "two different columns" in same[h.vote_status]
    none = _vote(chat_ctx, "chat_vote", final[h.ballot], file, better=2, worse=None)
    assert "two different columns" in none[h.vote_status] and not file.exists()
    voted = _vote(chat_ctx, "chat_vote", final[h.ballot], file, better=2, worse=0)
    assert voted[h.vote_status].startswith("✅"), voted[h.vote_status]
    [record] = _records(file)
    assert record["models"] == {"chosen": "other-adapter", "rejected": f"{tiny_model_dir.name} (base)"}
    assert record["chosen"][0]["content"] == final[h.chatbots[2]][-1]["content"]
    bad = _vote(chat_ctx, "chat_vote", final[h.ballot], vote_home / "votes.json", better=1, worse=0)
    assert bad[h.vote_status] == "❌ Vote not recorded: votes are appended as JSON Lines: name a .jsonl file " + (
        f"(not {vote_home / 'votes.json'})"
    )
    chat_tab.unload(chat_ctx)
    gone = _vote(chat_ctx, "chat_vote_a", {}, file)
    assert "Load two or more models" in gone[h.vote_status]
