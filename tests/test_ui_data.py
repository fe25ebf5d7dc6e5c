"""Data tab handlers called directly on real Gradio components (no browser): the default dataset through the tiny
model's tokenizer, broken files, truncation, column mapping and placeholders into the config, upload, paging."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import pytest
from ui_ctx import tab_context, values_of, wired

from app import data, data_io, paths, recent
from app.ui import data_tab, i18n

SAMPLE = "assets/sample_data.json"


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Uploads and the recent-files list go to a home of this test's own, never the user's ~/.cache/tunedesk."""
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def data_ctx(tiny_model_dir):
    demo, ctx = tab_context(["data"], str(tiny_model_dir))
    return ctx


def _values(ctx, **by_path):
    h = ctx.handles["data"]
    values = values_of(ctx, h.page, h.record, h.upload)
    for path, value in by_path.items():
        values[ctx.form.components[path.replace("__", ".")]] = value
    return values


def _states(mask) -> set[str]:
    return {state for _, state in mask}


def test_default_dataset_shows_table_prompt_mask_and_histogram(data_ctx):
    h = data_ctx.handles["data"]
    assert data_ctx.form.components["data.path"].value == SAMPLE
    out = data_tab.load_data(data_ctx, _values(data_ctx))
    assert out[h.status].startswith("✅"), out[h.status]
    records = json.loads((paths.ROOT / SAMPLE).read_text(encoding="utf-8"))
    assert f"{len(records)} records" in out[h.status]
    table = out[h.table]["value"]
    assert isinstance(table, pd.DataFrame) and len(table) == data_tab.PAGE_SIZE
    assert list(table["#"]) == list(range(data_tab.PAGE_SIZE))
    assert table.columns[1] == "instruction"  # mapped columns first
    # The rendered prompt is the exact training text: prompt part unhighlighted, the answer highlighted.
    rendered = out[h.rendered]
    response = [text for text, cat in rendered if cat is not None]
    assert response and response[0].startswith(records[0]["output"][:20])
    assert "<|im_start|>user" in rendered[0][0]  # the tiny model's ChatML template (template auto -> chat)
    assert _states(out[h.mask]) == {"trained", "prompt"}
    trained = "".join(text for text, state in out[h.mask] if state == "trained")
    assert trained.startswith(records[0]["output"][:10]) and trained.endswith("<|im_end|>")
    assert isinstance(out[h.histogram], go.Figure)
    assert out[h.histogram].data[0].x and len(out[h.histogram].data[0].x) == len(records)
    stats = out[h.stats]
    assert "Tokens total" in stats and "Train / validation" in stats
    assert "page 1 of" in out[h.page_info].lower()


def test_record_picker_and_skipped_record(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    path = tmp_path / "two.json"
    path.write_text(json.dumps([{"instruction": "Hi", "output": "Hello there."}, {"instruction": "", "output": "x"}]))
    values = _values(data_ctx, data__path=str(path))
    data_tab.load_data(data_ctx, values)
    values[h.record] = 1
    out = data_tab.show_record(data_ctx, values)
    assert "skipped" in out[h.record_info] and "instruction" in out[h.record_info] and "empty" in out[h.record_info]
    assert out[h.rendered] is None
    values[h.record] = 7
    assert "0 to 1" in data_tab.show_record(data_ctx, values)[h.record_info]
    values[h.record] = 0
    out = data_tab.show_record(data_ctx, values)
    assert out[h.record_info].startswith("Record **0**") and _states(out[h.mask]) == {"trained", "prompt"}


@pytest.mark.parametrize(
    "content",
    [b'[{"instruction": "a", "output": "b"},', b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b""],
    ids=["truncated-json", "png-renamed", "empty"],
)
def test_broken_file_gives_a_message_not_an_exception(data_ctx, tmp_path, content):
    h = data_ctx.handles["data"]
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    out = data_tab.load_data(data_ctx, _values(data_ctx, data__path=str(path)))
    status = out[h.status]
    assert status.startswith(("❌", "⚠️")), status
    assert "broken.json" in status
    assert "Traceback" not in status


def test_missing_file_names_it(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    out = data_tab.load_data(data_ctx, _values(data_ctx, data__path=str(tmp_path / "nope.json")))
    assert out[h.status].startswith("❌") and "nope.json" in out[h.status]


def test_long_record_shows_cut_tokens_and_truncated_share(data_ctx):
    h = data_ctx.handles["data"]
    values = _values(data_ctx, data__max_seq_len=48)
    out = data_tab.load_data(data_ctx, values)
    share = re.search(r"Cut by Max sequence length 48 \| (\d+) \((\d+\.\d)%\)", out[h.stats])
    assert share and int(share.group(1)) > 0
    assert "cut" in out[h.histogram].layout.annotations[0].text
    prepared = data_tab.PREPARED.get(data_ctx.form.to_config(values))
    long = next(e for e in prepared.train + prepared.val if e.truncated)
    values[h.record] = long.index
    shown = data_tab.show_record(data_ctx, values)
    assert _states(shown[h.mask]) == {"prompt", "trained", "cut"} or _states(shown[h.mask]) == {"prompt", "cut"}
    cut = [text for text, state in shown[h.mask] if state == "cut"]
    assert len(cut) >= long.full_length - 48 - 3  # byte tokens of one character are shown together
    assert f"{long.full_length - 48} cut" in shown[h.record_info]


def test_column_mapping_and_placeholders_reach_the_config(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    path = tmp_path / "qa.csv"
    path.write_text("q,a\nWho are you?,I am {{name}} by {{author}}.\nWhat is 2+2?,4\n", encoding="utf-8")
    values = _values(data_ctx, data__path=str(path))
    unmapped = data_tab.load_data(data_ctx, values)
    assert unmapped[h.status].startswith("❌") and "cannot tell the record format" in unmapped[h.status]
    values[h.columns["instruction"]] = "q"
    values[h.columns["output"]] = "a"
    values[h.placeholders] = pd.DataFrame([["name", "TuneBot"], ["author", ""]], columns=["placeholder", "text"])
    cfg = data_ctx.form.to_config(values)
    assert cfg.data.columns == {"instruction": "q", "output": "a"}
    assert cfg.data.placeholders == {"name": "TuneBot"}  # a row without text is left out
    out = data_tab.load_data(data_ctx, values)
    assert out[h.status].startswith("⚠️") and "2 valid" in out[h.status]  # warning: {{author}} has no value
    assert "I am TuneBot by {{author}}." in "".join(text for text, _ in out[h.rendered])
    assert "q" in out[h.columns["instruction"]]["choices"]
    rows = out[h.placeholders]["value"].values.tolist()
    assert ["name", "TuneBot"] in rows and ["author", ""] in rows


def test_extras_show_a_config(data_ctx):
    h = data_ctx.handles["data"]
    cfg = data_ctx.defaults.replace(**{"data.columns": {"output": "answer"}, "data.placeholders": {"name": "X"}})
    updates = data_ctx.form.updates_from(cfg)
    assert updates[h.columns["output"]]["value"] == "answer"
    assert updates[h.columns["input"]]["value"] == data_tab.AUTO
    assert updates[h.placeholders]["value"][0] == ["name", "X"]


def test_upload_copies_into_a_private_folder_and_shows_the_files_own_name(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    cache = tmp_path / "tunedesk-123-abcd" / "tmpk2j4"  # where Gradio's upload cache puts the browser's file
    cache.mkdir(parents=True)
    src = cache / "mine.jsonl"
    src.write_text('{"instruction": "Hi", "output": "Hello."}\n', encoding="utf-8")
    values = _values(data_ctx)
    values[h.upload] = str(src)
    out = data_tab.upload(data_ctx, values)
    target = out[data_ctx.form.components["data.path"]]
    assert target != str(src) and target.endswith("mine.jsonl")
    assert out[h.status] == "Uploaded **mine.jsonl**."  # its own name, not a cache path
    assert open(target, encoding="utf-8").read() == src.read_text(encoding="utf-8")
    src.unlink()  # the copy outlives Gradio's upload cache
    loaded = data_tab.load_data(data_ctx, _values(data_ctx, data__path=target))
    assert loaded[h.status].startswith("✅") and "1 valid" in loaded[h.status]
    assert "tunedesk-" not in loaded[h.status] and "uploads" not in loaded[h.status]
    picker = loaded[h.picker]
    assert picker["value"] == target and ("mine.jsonl (uploaded)", target) in picker["choices"]
    assert recent.recent()[0] == target  # offered again after a restart


def test_paging_moves_and_clamps(data_ctx):
    h = data_ctx.handles["data"]
    values = _values(data_ctx)
    values[h.page] = 1
    out = data_tab.show_page(data_ctx, values, +1)
    assert out[h.page] == 2 and out[h.table]["value"]["#"].iloc[0] == data_tab.PAGE_SIZE
    values[h.page] = 10_000
    last = data_tab.show_page(data_ctx, values)
    assert 2 < last[h.page] < 10_000 and len(last[h.table]["value"]) >= 1


def test_chinese_messages(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    values = _values(data_ctx, data__path=str(tmp_path / "nope.json"))
    values[data_ctx.lang_selector] = "zh"
    assert "无法读取数据集" in data_tab.load_data(data_ctx, values)[h.status]


def test_strings_have_the_same_fields_in_both_languages():
    """A {field} missing from one translation would raise KeyError when that language formats it."""
    from app.ui import chat_tab, evaluate_tab, export_tab, pickers

    for module in (data_tab, chat_tab, evaluate_tab, export_tab, pickers):
        for key, (en, zh) in module.STRINGS.items():
            assert en.strip() and zh.strip(), key
            fields = [set(re.findall(r"\{(\w+)[^}]*\}", text)) - {"key", "name", "author"} for text in (en, zh)]
            assert fields[0] == fields[1], key
    assert not [k for k in i18n.missing_keys() if k.split(".")[0] in ("data", "chat", "eval", "export", "pick")]


def test_tabs_build_inside_the_app(tiny_model_dir):
    """The shell imports the four tabs by name; every input control they show carries a one-line info text, and the
    language switch reaches their labels."""
    import gradio as gr

    from app.ui import app, chat_tab, evaluate_tab, export_tab

    demo, ctx = app.build_blocks(model=str(tiny_model_dir))
    kinds = {"data": data_tab.DataHandles, "chat": chat_tab.ChatHandles, "evaluate": evaluate_tab.EvaluateHandles,
             "export": export_tab.ExportHandles}  # fmt: skip
    for key, cls in kinds.items():
        handles = ctx.handles[key]
        assert isinstance(handles, cls), key
        for comp in _components(vars(handles)):
            shown = comp.visible is not False  # a hidden value holder (the chat tab's) has nothing to explain
            if shown and isinstance(comp, (gr.Dropdown, gr.Slider, gr.Number, gr.Textbox, gr.Checkbox, gr.Radio)):
                assert comp.info, f"{key}: {comp.label} has no info text"
    assert demo.get_config_file()["components"]
    h = ctx.handles["data"]
    zh = ctx.tr.updates("zh")
    assert zh[h.load]["value"] == "加载并校验" and zh[ctx.handles["chat"].send]["value"] == "发送"
    assert zh[h.columns["instruction"]]["label"] == "指令列"


def _components(tree):
    for value in tree.values() if isinstance(tree, dict) else tree:
        if isinstance(value, (dict, list, tuple)):
            yield from _components(value)
        elif hasattr(value, "_id"):
            yield value
        elif hasattr(value, "__dataclass_fields__"):
            yield from _components(vars(value))


def test_opening_the_page_never_downloads_the_default_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "empty-home"))  # no converted default model here
    _, ctx = tab_context(["data"], "smollm2-135m-instruct")
    h = ctx.handles["data"]
    out = data_tab.load_data(ctx, _values(ctx), fetch=False)
    assert "not in the cache yet" in out[h.status] and len(out[h.table]["value"]) == data_tab.PAGE_SIZE
    assert out[h.histogram] is None and not (tmp_path / "empty-home").exists()


def test_importing_the_tabs_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, app.ui.data_tab, app.ui.chat_tab, app.ui.export_tab, app.ui.evaluate_tab, app.ui.pickers; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=paths.ROOT, check=True)
    assert result.stdout.strip() == "False"


# ---- issue 20: large, oversized and deeply nested files (items 6 and 8) ------------------------------------------
def test_load_sends_the_browser_one_page_of_a_large_file(data_ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(
        data, "TOKEN_SAMPLE", 200, raising=False
    )  # the sampling path without tokenizing 20,000 records here
    h = data_ctx.handles["data"]
    lines = [json.dumps({"instruction": f"Q{i}", "output": f"A{i}"}) for i in range(3000)] + ["{broken"] * 1500
    path = tmp_path / "large.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = data_tab.load_data(data_ctx, wired(data_ctx, "data_load", data__path=str(path))[1])
    assert out[h.status].startswith("⚠️") and "4500 records" in out[h.status] and "3000 valid" in out[h.status]
    assert len(out[h.table]["value"]) == data_tab.PAGE_SIZE and "page 1 of 225" in out[h.page_info].lower()
    problems = out[h.problems]
    assert len(problems) == data_tab.PROBLEM_ROWS + 1
    assert "500 more" in problems.iloc[-1, -1] and "--json" in problems.iloc[-1, -1]
    # a command that works as printed from a shell in the checkout: the venv's python, the file's own path
    assert f".venv/bin/python -m app data inspect {path} --json" in problems.iloc[-1, -1]
    assert len(out[h.histogram].data[0].x) == 200
    assert "200 evenly spaced examples of 3,000" in out[h.stats]
    assert out[h.record_info].startswith("Record **0**")
    prepared = data_tab.PREPARED.get(data_ctx.form.to_config(_values(data_ctx, data__path=str(path))))
    assert prepared.sampled == 3000 and len(prepared.train) + len(prepared.val) == 200
    assert len(prepared.load.examples) == 3000  # the record view still finds every record


def test_load_lists_a_record_over_the_cap_and_shows_the_others(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    big = {"instruction": "Long", "output": "x" * (data_io.MAX_RECORD_CHARS + 1)}
    rows = [{"instruction": "Hi", "output": "Hello."}, big, {"instruction": "Bye", "output": "Goodbye."}]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    values = wired(data_ctx, "data_load", data__path=str(path))[1]
    out = data_tab.load_data(data_ctx, values)
    assert out[h.status].startswith("⚠️") and "2 valid" in out[h.status] and "1 skipped" in out[h.status]
    row = out[h.problems].iloc[0].tolist()
    assert row[:2] == [1, 2] and "over the limit of 1,000,000" in row[-1]
    assert all(len(str(cell)) < 3000 for cell in out[h.table]["value"].to_numpy().ravel())
    values = wired(data_ctx, "data_record", data__path=str(path))[1]
    values[h.record] = 1
    shown = data_tab.show_record(data_ctx, values)
    assert "skipped" in shown[h.record_info] and "1,000,000" in shown[h.record_info] and shown[h.rendered] is None


def test_load_of_a_deeply_nested_file_is_a_message_not_an_exception(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    deep = "[" * 100_000 + "]" * 100_000
    whole = tmp_path / "deep.json"
    whole.write_text(deep, encoding="utf-8")
    out = data_tab.load_data(data_ctx, wired(data_ctx, "data_load", data__path=str(whole))[1])
    assert out[h.status].startswith("❌") and "deep.json" in out[h.status] and "nested too deeply" in out[h.status]
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"instruction": "Hi", "output": "Hello."}\n' + deep + "\n", encoding="utf-8")
    out = data_tab.load_data(data_ctx, wired(data_ctx, "data_load", data__path=str(lines))[1])
    assert out[h.status].startswith("⚠️") and "1 valid" in out[h.status]
    row = out[h.problems].iloc[0].tolist()
    assert row[:2] == [1, 2] and "nested too deeply" in row[-1]


# ---- issue 14: the dataset picker, tables that fit, the system prompt beside the rendered prompt -----------------
def test_picker_offers_the_bundled_datasets_recent_files_and_the_current_path_by_friendly_names(tmp_path):
    mine = tmp_path / "data" / "train.json"
    mine.parent.mkdir()
    mine.write_text("[]")
    recent.remember(mine)
    choices = data_tab.dataset_choices("HuggingFaceH4/no_robots")
    assert choices[:2] == [
        ("sample_data.json (bundled sample)", "assets/sample_data.json"),
        ("identity.json (identity demo: teaches the model its name)", "assets/identity.json"),
    ]
    assert (f"train.json (in {mine.parent})", str(mine)) in choices
    assert choices[-1] == ("HuggingFaceH4/no_robots", "HuggingFaceH4/no_robots")  # what the path field names
    # another spelling of a listed file is that entry, not a second one; the picker shows it chosen
    state = data_tab._picker_state(str(paths.ROOT / "assets" / "identity.json"), "en")
    assert state["value"] == "assets/identity.json" and len(state["choices"]) == 3
    assert data_tab.dataset_label(str(Path.home() / "x" / "y.json"), "en") == "y.json (in ~/x)"
    zh = dict((p, label) for label, p in data_tab.dataset_choices("", "zh"))
    assert zh["assets/sample_data.json"] == "sample_data.json（内置示例）"


def test_picking_a_dataset_writes_the_path_field_and_loads_it(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    path_field = data_ctx.form.components["data.path"]
    picked = tmp_path / "qa.jsonl"
    picked.write_text('{"instruction": "Hi", "output": "Hello."}\n{"instruction": "Bye", "output": "Ciao."}\n')
    fn, values = wired(data_ctx, "data_pick")
    assert h.picker in values and path_field in values
    values[h.picker] = str(picked)
    out = fn(values)
    assert out[path_field] == str(picked)  # the form (and so Start) reads the picked file
    assert out[h.status].startswith("✅") and "qa.jsonl" in out[h.status] and "2 valid" in out[h.status]
    assert recent.recent() == [str(picked)] and out[h.picker]["value"] == str(picked)


def test_browsing_to_a_file_uses_it_and_a_folder_changes_nothing(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    path_field = data_ctx.form.components["data.path"]
    assert Path(h.browse.root_dir) == Path.home()
    found = tmp_path / "found.json"
    found.write_text(json.dumps([{"instruction": "Hi", "output": "Hello."}]))
    fn, values = wired(data_ctx, "data_browse")
    values[h.browse] = str(found)
    out = fn(values)
    assert out[path_field] == str(found) and "found.json" in out[h.status] and "1 valid" in out[h.status]
    assert recent.recent() == [str(found)]
    values[h.browse] = str(tmp_path)  # a folder clicked open: no dataset choice
    out = fn(values)
    assert list(out) == [path_field] and out[path_field] == gr.skip()


def test_any_change_of_the_path_field_redraws_the_picker(data_ctx, tmp_path):
    """A preset, a reopened run, an upload or typing changes the path field; the picker follows it."""
    h = data_ctx.handles["data"]
    path_field = data_ctx.form.components["data.path"]
    changes = [d for d in data_ctx.demo.fns.values() if (path_field._id, "change") in d.targets]
    [dep] = [d for d in changes if h.picker in d.outputs]  # the other one keeps the mix table's first row (data_hub)
    assert dep.outputs == [h.picker]
    identity = str(paths.ROOT / "assets" / "identity.json")
    update = dep.fn(identity, "zh")
    assert update["value"] == "assets/identity.json"
    assert ("identity.json（身份示例：教模型记住名字）", "assets/identity.json") in update["choices"]
    kept = data_tab.files.keep_upload(_write(tmp_path / "mine.csv", "q,a\nHi,Hello\n"))
    assert ("mine.csv (uploaded)", str(kept)) in dep.fn(str(kept), "en")["choices"]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_records_table_columns_share_the_pane_and_the_long_text_gets_the_room():
    frame = pd.DataFrame(
        {"#": [0, 1], "instruction": ["Name a colour.", "Name a fruit."], "input": ["", ""], "output": ["x" * 400] * 2}
    )
    widths = data_tab.record_widths(frame)
    assert all(w.endswith("%") for w in widths)
    pct = [float(w.rstrip("%")) for w in widths]
    assert 99 <= sum(pct) <= 100 and pct[3] > 50 and pct[3] > pct[1] > pct[2] > pct[0] > 0
    px = [p / 100 * data_tab.PANE_PX for p in pct]  # in the 720 px pane every header word fits on one line
    assert all(px[i] >= len(name) * 9.5 + 24 - 1 for i, name in enumerate(frame.columns))
    many = pd.DataFrame({f"a_rather_long_column_name_{i}": ["x"] for i in range(12)})
    assert sum(float(w.rstrip("%")) for w in data_tab.record_widths(many)) <= 100  # too many to fit: shrunk alike
    problems = data_tab.problem_table([], "en")
    assert len(data_tab.PROBLEM_WIDTHS) == 5 and sum(float(w.rstrip("%")) for w in data_tab.PROBLEM_WIDTHS) <= 100
    assert list(problems.columns) == ["reason"]


def test_the_system_prompt_is_what_the_rendered_prompt_shows_and_editing_it_rerenders(data_ctx):
    h = data_ctx.handles["data"]
    fn, values = wired(data_ctx, "data_rerender", data__system_prompt="You are TuneBot, made by Ada.")
    assert h.record in values
    out = fn(values)
    rendered = "".join(text for text, _ in out[h.rendered])
    assert "You are TuneBot, made by Ada." in rendered
    assert "You are TuneBot" in "".join(text for text, _ in out[h.mask])
    assert "Tokens total" in out[h.stats]
    fn, values = wired(data_ctx, "data_rerender", data__system_prompt="")
    assert "TuneBot" not in "".join(text for text, _ in fn(values)[h.rendered])


def test_the_histogram_and_the_placeholder_table_speak_chinese(data_ctx):
    h = data_ctx.handles["data"]
    values = _values(data_ctx)
    values[data_ctx.lang_selector] = "zh"
    out = data_tab.load_data(data_ctx, values)
    fig = out[h.histogram]
    assert fig.layout.title.text.startswith("每条样本的 token 数") and fig.layout.xaxis.title.text == "token 数"
    assert fig.layout.annotations[0].text.startswith("最大序列长度")
    assert list(out[h.placeholders]["value"].columns) == ["占位符", "文本"]
    assert "最大序列长度" in out[h.stats] and "max_seq_len" not in out[h.stats]
    assert out[h.picker]["choices"][0][0] == "sample_data.json（内置示例）"


def test_with_the_default_model_an_empty_system_prompt_renders_none_not_smollms_own(data_ctx, default_model_dir):
    """SmolLM2's chat template adds "You are a helpful AI assistant named SmolLM, trained by Hugging Face" when a
    conversation has no system turn; the Data tab shows what training sees: the run's own prompt, or none."""
    h = data_ctx.handles["data"]
    model = data_ctx.form.components["model.name_or_path"]
    fn, values = wired(data_ctx, "data_rerender", data__system_prompt="")
    values[model] = str(default_model_dir)  # a folder: no download into this test's own home
    rendered = "".join(text for text, _ in fn(values)[h.rendered])
    assert "<|im_start|>user" in rendered and "SmolLM" not in rendered and "Hugging Face" not in rendered
    values[data_ctx.form.components["data.system_prompt"]] = "You are TuneBot."
    rendered = "".join(text for text, _ in fn(values)[h.rendered])
    assert "You are TuneBot." in rendered and "SmolLM" not in rendered


def test_problem_severities_speak_chinese(data_ctx, tmp_path):
    h = data_ctx.handles["data"]
    path = _write(
        tmp_path / "one.json", json.dumps([{"instruction": "", "output": "x"}, {"instruction": "a", "output": "b"}])
    )
    values = _values(data_ctx, data__path=str(path))
    values[data_ctx.lang_selector] = "zh"
    problems = data_tab.load_data(data_ctx, values)[h.problems]
    assert list(problems.columns) == ["记录", "行", "字段", "级别", "原因"] and problems.iloc[0, 3] == "错误"


@pytest.mark.parametrize(("lang", "label"), [("en", "Placeholders"), ("zh", "占位符")])
def test_problems_name_the_label_on_screen_not_the_config_key(data_ctx, tmp_path, lang, label):
    """A record with an unfilled {{name}} names the widget to fill (the Placeholders table), in the page's language."""
    h = data_ctx.handles["data"]
    path = _write(tmp_path / "p.json", json.dumps([{"instruction": "hi", "output": "I am {{name}}."}]))
    values = _values(data_ctx, data__path=str(path))
    values[data_ctx.lang_selector] = lang
    reasons = " ".join(str(r) for r in data_tab.load_data(data_ctx, values)[h.problems].iloc[:, -1])
    assert label in reasons and "data.placeholders" not in reasons, reasons
