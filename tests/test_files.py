"""The app's own files (issue 20, item 10): an upload is stored once, outside the scratch folder that is removed at
exit, so a run that names it can still be resumed after a restart; stale scratch folders are cleaned."""

from __future__ import annotations

import json
import os
import stat

from app import files


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
