"""Loading and validation: every broken record is reported by index, line and field; valid records are all kept;
a file that cannot be read at all gives one clear DataError. Fixtures live in tests/fixtures/data/."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from app import data_io
from app.data import DataError, load_examples, preview

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "data"


def problems_of(result, severity: str | None = None) -> set[tuple]:
    return {(p.index, p.field, p.message) for p in result.problems if severity in (None, p.severity)}


def test_jsonl_bad_line_is_reported_with_its_line_and_the_rest_kept():
    res = load_examples(str(FIX / "bad_line.jsonl"))
    assert (res.format, res.records, len(res.examples), res.skipped) == ("alpaca", 5, 4, 1)
    [bad] = res.problems
    assert (bad.index, bad.line, bad.field, bad.severity) == (2, 3, None, "error")
    assert "invalid JSON" in bad.message and "line 3" in bad.describe()
    assert [e.index for e in res.examples] == [0, 1, 3, 4]
    assert res.examples[-1].messages[-1]["content"] == "Rome."  # after the blank line 5, still read


def test_missing_and_empty_fields_each_reported_by_record_and_field():
    res = load_examples(str(FIX / "missing_fields.json"))
    assert problems_of(res) == {
        (1, "instruction", "missing"),
        (2, "output", "missing"),
        (3, "output", "is empty"),
        (4, "instruction", "is null"),
    }
    assert [e.index for e in res.examples] == [0, 5]
    assert res.skipped == 4 and res.records == 6
    assert [p.line for p in res.problems] == [7, 11, 15, 20]  # where each record starts in the JSON list


def test_wrong_types_are_errors_except_numbers_which_are_kept_with_a_warning():
    res = load_examples(str(FIX / "wrong_types.json"))
    assert {(p.index, p.field, p.severity) for p in res.problems} == {
        (0, "output", "warning"),
        (1, "output", "error"),
        (2, "input", "error"),
        (3, "instruction", "error"),
        (4, None, "error"),
    }
    assert [e.index for e in res.examples] == [0, 5]
    assert res.examples[0].messages[-1]["content"] == "42"
    assert res.examples[1].fields == {"instruction": "Fine record.", "input": "with input"}
    assert res.examples[1].messages[0]["content"] == "Fine record.\n\nwith input"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("empty.json", "is empty"),
        ("image.json", "is a PNG image"),
        ("not_json.json", "is not JSON: it starts with 'This is a plain"),
        ("broken_list.json", "not valid JSON (line 3, column 22"),
        ("does_not_exist.json", "file not found"),
        ("", "not a datasets.save_to_disk folder"),  # the fixtures folder itself
    ],
)
def test_unreadable_sources_raise_one_clear_error_naming_the_file(name, expected):
    path = FIX / name
    with pytest.raises(DataError) as info:
        load_examples(str(path))
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_bom_file_loads_without_the_bom():
    res = load_examples(str(FIX / "bom.json"))
    assert (res.records, len(res.examples), res.problems) == (2, 2, [])
    assert res.examples[0].messages[0]["content"] == "你好"


def test_mixed_encodings_read_and_flagged_per_line():
    res = load_examples(str(FIX / "mixed_encoding.jsonl"))
    assert len(res.examples) == 3
    [note] = res.problems
    assert (note.index, note.line, note.severity) == (1, 2, "warning") and "not UTF-8" in note.message
    assert res.examples[1].messages[0]["content"] == "翻译：谢谢"


def test_csv_quoted_cells_multiline_cells_and_ragged_rows():
    res = load_examples(str(FIX / "data.csv"))
    assert (res.records, len(res.examples), res.skipped) == (6, 4, 2)
    outputs = [e.messages[-1]["content"] for e in res.examples]
    assert outputs == ["Hi!", "a, b", "Line one.\nLine two.", "Madrid."]
    assert {(p.index, p.line, p.field) for p in res.problems} == {(3, 6, None), (4, 7, "output")}
    assert "4 cells but the header names 3 columns" in res.problems[0].message


def test_parquet_nulls_and_numbers(tmp_path):
    import pandas as pd

    rows = [
        {"instruction": "A", "input": None, "output": "a"},
        {"instruction": "B", "input": "", "output": None},
        {"instruction": "C", "input": "ctx", "output": "c"},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    res = load_examples(str(tmp_path / "d.parquet"))
    assert [e.index for e in res.examples] == [0, 2]
    assert problems_of(res) == {(1, "output", "is null")}
    assert res.examples[0].fields["input"] == ""
    # Content decides over the name: a Parquet file called .json is still read, with a note.
    (tmp_path / "d.parquet").rename(tmp_path / "renamed.json")
    res = load_examples(str(tmp_path / "renamed.json"))
    assert len(res.examples) == 2 and any("is a Parquet file" in p.message for p in res.problems)


def test_save_to_disk_folder_and_dataset_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(5)])
    ds.save_to_disk(str(tmp_path / "single"))
    res = load_examples(str(tmp_path / "single"))
    assert (res.format, res.records, len(res.examples)) == ("alpaca", 5, 5)
    DatasetDict({"test": ds.select(range(2)), "train": ds}).save_to_disk(str(tmp_path / "dict"))
    res = load_examples(str(tmp_path / "dict"))
    assert len(res.examples) == 5 and "using the 'train' split" in res.problems[0].message


def test_hub_id_offline_names_the_id_and_what_to_do():
    with pytest.raises(DataError) as info:
        load_examples("nobody-here/no-such-dataset")
    message = str(info.value)
    assert "'nobody-here/no-such-dataset'" in message and ".to_json('data.jsonl')" in message
    assert "`python -m app download dataset nobody-here/no-such-dataset`" in message and "\n" not in message


def test_sharegpt_conversations_validated_turn_by_turn():
    res = load_examples(str(FIX / "sharegpt.json"))
    assert res.format == "sharegpt" and res.columns["messages"] == "conversations"
    assert [e.index for e in res.examples] == [0, 1, 4]
    errors = {(p.index, p.field) for p in res.problems if p.severity == "error"}
    assert errors == {(2, "conversations[0].from"), (3, "conversations"), (5, "conversations")}
    multi = res.examples[1].messages
    assert [m["role"] for m in multi] == ["system", "user", "assistant", "user", "assistant"]
    assert multi[0]["content"] == "You are terse."
    dangling = res.examples[2].messages
    assert [m["role"] for m in dangling] == ["user", "assistant"]  # the unanswered last turn is dropped...
    assert (4, "conversations", "warning") in {(p.index, p.field, p.severity) for p in res.problems}  # ...and said


def test_messages_format_and_an_empty_answer():
    res = load_examples(str(FIX / "messages.jsonl"))
    assert res.format == "messages" and [e.index for e in res.examples] == [0, 1]
    assert problems_of(res) == {(2, "messages[1].content", "is empty")}
    assert res.examples[0].messages[0] == {"role": "system", "content": "Be brief."}


def test_column_aliases_are_detected_and_a_mapping_overrides():
    res = load_examples(str(FIX / "question_answer.json"))
    assert res.columns == {"instruction": "question", "output": "answer"}
    assert res.examples[1].messages[-1]["content"] == "Green."
    with pytest.raises(DataError) as info:
        load_examples(str(FIX / "custom_columns.json"))
    assert "q, ctx, a" in str(info.value) and "data.columns" in str(info.value)
    res = load_examples(str(FIX / "custom_columns.json"), columns={"instruction": "q", "input": "ctx", "output": "a"})
    assert [e.index for e in res.examples] == [0, 1]
    assert problems_of(res) == {(2, "a", "missing")}
    assert res.examples[1].fields == {"instruction": "Translate: cat", "input": "to French"}


def test_placeholders_filled_everywhere_and_unfilled_ones_warned(tmp_path):
    path = tmp_path / "id.json"
    path.write_text(json.dumps([{"instruction": "Who made {{name}}?", "output": "{{ author }} made {{name}}."}]))
    res = load_examples(str(path), placeholders={"name": "TuneBot", "author": "Ada"})
    assert res.examples[0].messages == [
        {"role": "user", "content": "Who made TuneBot?"},
        {"role": "assistant", "content": "Ada made TuneBot."},
    ]
    assert res.problems == []
    res = load_examples(str(path), placeholders={"name": "TuneBot"})
    assert problems_of(res) == {(0, "output", res.problems[0].message)}
    assert "{{author}} has no value" in res.problems[0].message and len(res.examples) == 1


def test_duplicates_are_warned_and_kept():
    res = load_examples(str(FIX / "duplicates.json"))
    assert len(res.examples) == 10 and res.skipped == 0
    dupes = [(p.index, p.severity) for p in res.problems]
    assert dupes == [(1, "warning"), (2, "warning")]
    assert "duplicate of record 0; kept" in res.problems[0].message


def test_json_lines_content_in_a_json_file():
    res = load_examples(str(FIX / "jsonl_named.json"))
    assert (res.records, len(res.examples)) == (2, 2)


def test_max_records_reads_only_the_head(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = [json.dumps({"instruction": f"Q{i}", "output": f"A{i}"}) for i in range(30)] + ["{broken"]
    path.write_text("\n".join(lines) + "\n")
    res = load_examples(str(path), max_records=10)
    assert (res.records, len(res.examples), res.problems) == (10, 10, [])
    assert load_examples(str(path)).skipped == 1


def test_preview_reads_only_the_page_of_a_jsonl_file(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    path.write_text(
        "".join(json.dumps({"instruction": f"Q{i}", "input": "", "output": f"A{i}"}) + "\n" for i in range(5000))
    )
    calls = []
    counting = types.SimpleNamespace(
        loads=lambda s: calls.append(1) or json.loads(s), JSONDecodeError=json.JSONDecodeError
    )
    monkeypatch.setattr(data_io, "json", counting)
    frame, total = preview(str(path), page=3, page_size=20)
    assert total == 5000 and len(calls) == 20  # 20 lines parsed, not 5000
    assert frame["#"].tolist() == list(range(60, 80))
    assert list(frame.columns) == ["#", "instruction", "input", "output"]
    assert frame["instruction"].iloc[0] == "Q60"


def test_preview_shows_broken_rows_and_pages_json_lists():
    frame, total = preview(str(FIX / "bad_line.jsonl"))
    assert total == 5 and frame["_error"].notna().tolist() == [False, False, True, False, False]
    assert frame["_error"].iloc[2].startswith("line 3: invalid JSON")
    frame, total = preview(str(FIX / "sharegpt.json"), page=1, page_size=4)
    assert total == 6 and frame["#"].tolist() == [4, 5]
    assert json.loads(frame["conversations"].iloc[0])[0] == {"from": "human", "value": "Q"}  # nested as JSON text


def test_preview_streams_a_csv_page_with_the_same_indices_as_loading():
    frame, total = preview(str(FIX / "data.csv"), page=1, page_size=2)
    assert total == 6 and frame["#"].tolist() == [2, 3]
    assert frame["output"].iloc[0] == "Line one.\nLine two." and frame["_error"].iloc[1].startswith("line 6: 4 cells")


def test_preview_pages_parquet_and_save_to_disk_by_slicing(tmp_path):
    import pandas as pd
    from datasets import Dataset

    rows = [{"instruction": f"Q{i}", "input": "", "output": f"A{i}"} for i in range(45)]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    for path in (tmp_path / "d.parquet", tmp_path / "disk"):
        frame, total = preview(str(path), page=2, page_size=20)
        assert total == 45 and frame["#"].tolist() == list(range(40, 45))
        assert frame["output"].tolist() == [f"A{i}" for i in range(40, 45)]
        frame, _ = preview(str(path), page=3, page_size=20)
        assert frame.empty


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line in a fresh interpreter (slow to start: imports transformers)."""
    return subprocess.run(
        [sys.executable, "-m", "app", "data", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The same dispatcher in this process: (exit code, stdout, stderr)."""
    from app.__main__ import main

    code = main(["data", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_output_is_the_documented_object(tiny_model_dir, capsys):
    code, stdout, stderr = cli(
        capsys, "inspect", str(FIX / "wrong_types.json"), "--model", str(tiny_model_dir), "--json"
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert list(report) == ["format", "records", "valid", "skipped", "problems", "tokens"]
    assert (report["format"], report["records"], report["valid"], report["skipped"]) == ("alpaca", 6, 2, 4)
    assert all(list(p) == ["index", "field", "message"] for p in report["problems"])
    assert [p["index"] for p in report["problems"]] == [0, 1, 2, 3, 4]
    assert report["problems"][1] == {"index": 1, "field": "output", "message": "line 7: expected text, got a list"}
    assert list(report["tokens"]) == ["total", "mean", "max", "truncated"]
    assert report["tokens"]["total"] > 0 and isinstance(report["tokens"]["mean"], float)


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~5 s idle, 20+ s on a busy 2-core machine
def test_cli_on_the_sample_dataset_with_the_default_model(default_model_dir):
    out = run_cli("inspect", "assets/sample_data.json", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["format"] == "alpaca" and report["records"] == report["valid"] >= 200
    assert report["skipped"] == 0 and report["problems"] == [] and report["tokens"]["truncated"] == 0


def test_cli_exit_codes(tiny_model_dir, tmp_path, capsys):
    code, stdout, stderr = cli(capsys, "inspect", str(FIX / "image.json"), "--model", str(tiny_model_dir))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and "PNG image" in stderr
    none_valid = tmp_path / "none.json"
    none_valid.write_text(json.dumps([{"instruction": "", "output": "x"}]))
    code, stdout, _ = cli(capsys, "inspect", str(none_valid), "--model", str(tiny_model_dir))
    assert code == 1 and "record 0 (line 1), instruction: is empty" in stdout
    code, stdout, _ = cli(capsys, "inspect", str(FIX / "bad_line.jsonl"), "--model", str(tiny_model_dir))
    assert code == 0 and "4 valid, 1 skipped" in stdout and "record 2 (line 3): invalid JSON" in stdout


def test_core_data_modules_import_neither_gradio_nor_torch():
    code = "import sys, app.data; print(sorted(m for m in ('gradio', 'torch', 'plotly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_inspects_preference_data_with_its_own_loader(tiny_model_dir, tmp_path, capsys):
    """Pairs are read as pairs (not as broken Alpaca records): counts, a problem named by record, TRL's lengths."""
    pairs = json.loads((ROOT / "assets" / "preference_sample.json").read_text(encoding="utf-8"))[:6]
    pairs[2]["rejected"] = pairs[2]["chosen"]  # identical sides teach nothing
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs), encoding="utf-8")
    code, stdout, stderr = cli(capsys, "inspect", str(path), "--model", str(tiny_model_dir), "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert (report["kind"], report["records"], report["valid"], report["skipped"]) == ("pairs", 6, 5, 1)
    assert [p["index"] for p in report["problems"]] == [2] and "identical" in report["problems"][0]["message"]
    assert report["tokens_max"] > report["prompt_tokens_mean"] > 0
    code, stdout, _ = cli(capsys, "inspect", str(path), "--model", str(tiny_model_dir))
    assert code == 0 and "preference data (pairs: trl), 6 records, 5 valid" in stdout and "record 2 " in stdout
