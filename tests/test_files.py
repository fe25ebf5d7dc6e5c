"""The app's own files (issue 20, item 10): an upload is stored once, outside the scratch folder that is removed at
exit, so a run that names it can still be resumed after a restart; stale scratch folders are cleaned."""

from __future__ import annotations

import json
import os
import stat

from app import files, recent


def test_an_upload_in_the_scratch_folder_is_moved_and_kept_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    cache = files.fresh_dir()  # where Gradio's upload cache lives in the app ($GRADIO_TEMP_DIR)
    first = cache / "train.json"
    first.write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    kept = files.keep_upload(first)
    assert kept.read_text() == json.dumps([{"instruction": "a", "output": "b"}]) and kept.name == "train.json"
    assert not first.exists()  # moved, not copied: one copy on disk
    assert stat.S_IMODE(files.uploads_dir().stat().st_mode) == 0o700
    again = files.fresh_dir() / "train.json"
    again.write_text(kept.read_text())
    assert files.keep_upload(again) == kept  # the same content uploaded twice is one file
    outside = tmp_path / "mine.json"
    outside.write_text("[]")
    files.keep_upload(outside)
    assert outside.exists()  # a file of the user's own is never removed


def test_clean_stale_removes_dead_owners_and_keeps_live_and_foreign_folders(tmp_path):
    dead = tmp_path / "tunedesk-1-dead"
    dead.mkdir()
    (dead / files.OWNER).write_text(json.dumps({"pid": 999999, "started": 1.0}))
    live = tmp_path / "tunedesk-2-live"
    live.mkdir()
    (live / files.OWNER).write_text(json.dumps({"pid": os.getpid(), "started": files._start_time(os.getpid())}))
    recent_legacy = tmp_path / "tunedesk-abc"  # an older version's folder, no owner file, used recently
    recent_legacy.mkdir()
    old_legacy = tmp_path / "tunedesk-old"
    old_legacy.mkdir()
    os.utime(old_legacy, (1, 1))
    other = tmp_path / "something-else"
    other.mkdir()
    removed = files.clean_stale(tmp_path)
    assert sorted(removed) == sorted([dead, old_legacy])
    assert live.exists() and recent_legacy.exists() and other.exists()


def test_upload_name_is_the_files_own_name_only_for_kept_uploads(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    src = tmp_path / "my_data.json"
    src.write_text("[]")
    kept = files.keep_upload(src)
    assert files.upload_name(kept) == "my_data.json" and files.upload_name(str(kept)) == "my_data.json"
    assert files.upload_name(src) is None  # the user's own file is no upload
    assert files.upload_name(files.uploads_dir()) is None and files.upload_name("assets/sample_data.json") is None


def test_recent_data_files_survive_a_restart_newest_first_without_duplicates_or_gone_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    a, b = tmp_path / "a.json", tmp_path / "b.jsonl"
    a.write_text("[]")
    b.write_text("")
    assert recent.recent() == []
    recent.remember(str(a))
    recent.remember(str(b))
    assert recent.remember(str(a)) == [str(a), str(b)]  # used again: first, and once
    recent.remember(str(tmp_path / "typo.json"))  # names no file: not remembered
    recent.remember("HuggingFaceH4/no_robots")  # a Hub id is no local file either
    stored = json.loads((tmp_path / "home" / recent.FILE).read_text())
    assert stored == [str(a), str(b)]  # on disk: a fresh process reads the same list
    b.unlink()
    assert recent.recent() == [str(a)]
    for i in range(recent.MAX + 3):
        f = tmp_path / f"f{i}.json"
        f.write_text("[]")
        recent.remember(f)
    assert len(recent.recent()) == recent.MAX and recent.recent()[0] == str(tmp_path / f"f{recent.MAX + 2}.json")


def test_a_broken_recent_list_reads_as_empty_and_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / recent.FILE).write_text('{"not": "a list"')
    assert recent.recent() == []
    f = tmp_path / "x.csv"
    f.write_text("q,a\n")
    assert recent.remember(f) == [str(f)]
