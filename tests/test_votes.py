"""Chat votes as preference data (app.votes): each vote appends one TRL conversational pair to a .jsonl file the
user names, never rewriting what is there (a torn last line, other writers at the same moment); the records render
through TRL's own chat-template step; bad paths and pairs that teach nothing are refused with a message; the file
joins the recent files the Data tab lists."""

from __future__ import annotations

import json
import threading

import pytest
from transformers import AutoTokenizer
from trl.data_utils import apply_chat_template, is_conversational

from app import recent, votes

HI = {"role": "user", "content": "What is the capital of France?"}
SYSTEM = {"role": "system", "content": "Be brief."}


def side(model: str, answer: str, *before: dict) -> votes.Side:
    return votes.Side(model, [*before, HI, {"role": "assistant", "content": answer}])


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_vote_appends_one_trl_pair_and_keeps_what_was_there(home, tmp_path):
    file = tmp_path / "prefs" / "votes.jsonl"
    got, count = votes.record_vote(str(file), side("my-run", "Paris.", SYSTEM), side("base", "France is a country."))
    assert (got, count) == (file, 1)
    [record] = lines(file)
    assert record["prompt"] == [SYSTEM, HI]
    assert record["chosen"] == [{"role": "assistant", "content": "Paris."}]
    assert record["rejected"] == [{"role": "assistant", "content": "France is a country."}]
    assert record["models"] == {"chosen": "my-run", "rejected": "base"}
    assert record["time"][:2] == "20" and record["time"][10] == "T"  # ISO 8601 with the local offset
    before = file.read_bytes()
    _, count = votes.record_vote(str(file), side("base", "Lyon?"), side("my-run", "Paris is."))
    assert count == 2 and file.read_bytes().startswith(before)  # appended after, never rewritten
    assert [r["models"]["chosen"] for r in lines(file)] == ["my-run", "base"]
    assert str(file) in recent.recent()  # the Data tab's picker lists the vote file


def test_records_render_through_trls_chat_template(home, tmp_path, tiny_model_dir):
    file = tmp_path / "votes.jsonl"
    votes.record_vote(str(file), side("a", "Paris.", SYSTEM), side("b", "Rome."))
    [record] = lines(file)
    assert is_conversational(record)
    rendered = apply_chat_template(record, AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    assert rendered["prompt"].rstrip().endswith("assistant") and "Be brief." in rendered["prompt"]
    assert rendered["chosen"].startswith("Paris.") and rendered["rejected"].startswith("Rome.")


def test_a_torn_last_line_is_closed_off_not_glued_to(home, tmp_path):
    file = tmp_path / "votes.jsonl"
    file.write_text('{"prompt": "kept"}\n{"prompt": "torn', encoding="utf-8")  # a crash mid-write
    _, count = votes.record_vote(str(file), side("a", "Paris."), side("b", "Rome."))
    text = file.read_text(encoding="utf-8").splitlines()
    assert text[:2] == ['{"prompt": "kept"}', '{"prompt": "torn'] and count == 3
    assert json.loads(text[2])["models"] == {"chosen": "a", "rejected": "b"}


def test_votes_from_many_threads_are_all_kept_whole(home, tmp_path):
    file = tmp_path / "votes.jsonl"
    long = "word " * 5000  # 25 kB answers: writes larger than a pipe buffer stay whole lines
    threads = [
        threading.Thread(target=votes.record_vote, args=(str(file), side(f"m{i}", long + str(i)), side("b", "x")))
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["models"]["chosen"] for r in lines(file)) == sorted(f"m{i}" for i in range(12))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "name the file votes go to"),
        ("  ", "name the file votes go to"),
        ("votes.json", r"name a \.jsonl file \(not votes\.json\)"),
        ("~/votes.csv", "name a .jsonl file"),
    ],
)
def test_a_path_that_cannot_be_a_vote_file_is_refused(home, path, message):
    with pytest.raises(votes.VoteError, match=message):
        votes.record_vote(path, side("a", "Paris."), side("b", "Rome."))


def test_a_folder_or_an_unwritable_place_is_a_message(home, tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(votes.VoteError, match="is a folder"):
        votes.record_vote(str(tmp_path / "dir.jsonl"), side("a", "Paris."), side("b", "Rome."))
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    with pytest.raises(votes.VoteError, match="cannot write"):
        votes.record_vote(str(tmp_path / "file" / "votes.jsonl"), side("a", "Paris."), side("b", "Rome."))


def test_pairs_that_teach_nothing_are_refused_and_nothing_is_written(home, tmp_path):
    file = tmp_path / "votes.jsonl"
    other = votes.Side("b", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    unanswered = votes.Side("b", [HI])
    cases = {
        "answered different prompts": (side("a", "Paris."), other),
        "b has no answer to vote on yet": (side("a", "Paris."), unanswered),
        "gave the same answer": (side("a", "Paris."), side("b", " Paris. ")),
        "both a's": (side("a", "Paris."), side("a", "Rome.")),
    }
    for message, (chosen, rejected) in cases.items():
        with pytest.raises(votes.VoteError, match=message):
            votes.record_vote(str(file), chosen, rejected)
    assert not file.exists()


def test_the_default_vote_file_lives_in_the_apps_home(home):
    assert votes.default_path() == home / "votes" / "preferences.jsonl"
    assert votes.target("~/x.jsonl").is_absolute()
