"""Issue 20, items 6 and 8 (the data half): a record over MAX_RECORD_CHARS and a record nested too deeply are
listed as problems of that record while the others load; a whole JSON file nested too deeply is one DataError
naming the file, in the core, in `python -m app data inspect` and (tests/test_ui_data.py) in the Data tab."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app import data, data_io
from app.data import DataError, load_examples, preview

ROOT = Path(__file__).resolve().parent.parent
DEPTH = 100_000
DEEP = "[" * DEPTH + "]" * DEPTH
GOOD = [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(3)]


def jsonl(path: Path, middle: str) -> Path:
    """Three good records with `middle` as line 2 (record 1) between the first and the others."""
    lines = [json.dumps(GOOD[0]), middle, *(json.dumps(r) for r in GOOD[1:])]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def over_cap(extra: int = 10) -> dict:
    return {"instruction": "Long", "output": "x" * (data_io.MAX_RECORD_CHARS + extra)}


@pytest.mark.parametrize(("extra", "unit"), [(10, "characters"), (4 * data_io.MAX_RECORD_CHARS, "bytes")])
def test_a_jsonl_record_over_the_cap_is_listed_with_its_line_and_the_others_load(tmp_path, extra, unit):
    res = load_examples(str(jsonl(tmp_path / "big.jsonl", json.dumps(over_cap(extra)))))
    assert (res.records, len(res.examples), res.skipped) == (4, 3, 1)
    assert [e.index for e in res.examples] == [0, 2, 3]
    [problem] = res.problems
    assert (problem.index, problem.line, problem.severity) == (1, 2, "error")
    assert f"{data_io.MAX_RECORD_CHARS:,}" in problem.message and "split it" in problem.message
    assert problem.describe().startswith("record 1 (line 2): the record is ") and f"{unit} long" in problem.message


def test_a_json_list_record_over_the_cap_is_listed_with_its_line_and_the_others_load(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([GOOD[0], over_cap(), GOOD[1]], indent=1), encoding="utf-8")
    res = load_examples(str(path))
    assert (res.records, len(res.examples), res.skipped) == (3, 2, 1)
    [problem] = res.problems
    assert (problem.index, problem.line) == (1, 6) and "over the limit of 1,000,000" in problem.message


def test_a_jsonl_line_nested_100000_deep_is_listed_and_the_others_load(tmp_path):
    res = load_examples(str(jsonl(tmp_path / "deep.jsonl", '{"instruction": ' + DEEP + ', "output": "x"}')))
    assert (res.records, len(res.examples), res.skipped) == (4, 3, 1)
    [problem] = res.problems
    assert (problem.index, problem.line, problem.severity) == (1, 2, "error")
    assert "nested too deeply" in problem.message


@pytest.mark.parametrize("text", [DEEP, '{"data": ' + DEEP + "}", "[" + json.dumps(GOOD[0]) + ",\n" + DEEP + "]"])
def test_a_json_file_nested_too_deeply_is_one_error_naming_the_file(tmp_path, text):
    path = tmp_path / "deep.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="nested too deeply") as caught:
        load_examples(str(path))
    assert str(path) in str(caught.value)


def test_data_inspect_prints_one_line_not_a_traceback_for_a_deeply_nested_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "app", "data", "inspect", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"error: {path}") and "nested too deeply" in out.stderr


def test_data_inspect_lists_a_deeply_nested_jsonl_line_and_counts_the_rest(tmp_path, tiny_model_dir, capsys):
    from app.__main__ import main

    path = jsonl(tmp_path / "deep.jsonl", "[" * DEPTH + "]" * DEPTH)
    code = main(["data", "inspect", str(path), "--model", str(tiny_model_dir)])
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err
    assert "3 valid, 1 skipped" in out.out and "record 1 (line 2): the record is nested too deeply" in out.out


def test_a_records_page_cuts_long_cells_for_the_browser(tmp_path):
    text = "y" * 300_000
    path = jsonl(tmp_path / "long.jsonl", json.dumps({"instruction": "Long", "output": text}))
    frame, total = preview(str(path))
    cell = frame["output"].iloc[1]
    assert total == 4 and cell.startswith("y" * data.PREVIEW_CHARS) and cell.endswith("(300,000 characters in all)")
    assert len(cell) < data.PREVIEW_CHARS + 40
    assert load_examples(str(path)).examples[1].messages[-1]["content"] == text  # loading keeps it whole


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"a": 1},]', "line 1, column 11"),
        ('[{"a": 1} {"a": 2}]', "Expecting ',' delimiter"),
        ('[{"a": 1}] extra', "Extra data"),
        ('[{"a": 1},\n {"a": ', "line 2"),
        ("[ ]", "empty list"),
    ],
)
def test_a_streamed_json_list_still_refuses_broken_syntax_naming_the_place(tmp_path, text, expected):
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="broken.json") as caught:
        load_examples(str(path))
    assert expected in str(caught.value)


def test_examples_are_one_compact_copy_that_reads_back_the_same(tmp_path):
    rows = [{"instruction": f"Q{i}", "input": "ctx" if i % 2 else "", "output": f"A{i}\nline"} for i in range(50)]
    rows += [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:50]), encoding="utf-8")
    res = load_examples(str(path))
    assert isinstance(res.examples, data.Examples) and len(res.examples) == 50
    assert res.examples[3].fields == {"instruction": "Q3", "input": "ctx"}
    assert res.examples[4].fields == {"instruction": "Q4", "input": ""}
    assert res.examples[-1].messages == [
        {"role": "user", "content": "Q49\n\nctx"},
        {"role": "assistant", "content": "A49\nline"},
    ]
    assert [e.index for e in res.examples[10:13]] == [10, 11, 12]
    assert res.examples.find(7).index == 7 and res.examples.find(99) is None


def test_a_csv_row_over_the_cap_is_listed_and_a_cell_past_the_csv_limit_is_one_error(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("instruction,output\nHi," + "x" * (data_io.MAX_RECORD_CHARS + 1) + "\nBye,Ok\n", encoding="utf-8")
    res = load_examples(str(path))
    assert (res.records, len(res.examples)) == (2, 1)
    [problem] = res.problems
    assert (problem.index, problem.line) == (0, 2) and "over the limit of 1,000,000" in problem.message
    path.write_text("instruction,output\nHi," + "x" * (data_io.CSV_CELL_LIMIT + 1) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"long.csv, line 2: field larger than field limit"):
        load_examples(str(path))


def test_a_parquet_row_over_the_cap_is_listed_and_the_others_load(tmp_path):
    import pandas as pd

    rows = [GOOD[0], over_cap(), GOOD[1]]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    res = load_examples(str(tmp_path / "d.parquet"))
    assert (res.records, [e.index for e in res.examples]) == (3, [0, 2])
    assert res.problems[0].index == 1 and "over the limit" in res.problems[0].message


def test_a_json_list_page_shows_a_record_over_the_cap_as_a_broken_row(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([GOOD[0], over_cap(), GOOD[1], GOOD[2]], indent=1), encoding="utf-8")
    frame, total = preview(str(path), page=0, page_size=3)
    assert total == 4 and frame["#"].tolist() == [0, 1, 2]
    assert frame["_error"].notna().tolist() == [False, True, False]
    assert frame["_error"].iloc[1].startswith("line 6: the record is") and frame["instruction"].iloc[2] == "Q1"
    frame, _ = preview(str(path), page=1, page_size=3)
    assert frame["#"].tolist() == [3] and frame["output"].iloc[0] == "A2"
