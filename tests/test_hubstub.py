"""The Hub stand-in (tests/hubstub.py) answers the real huggingface_hub, transformers and datasets clients the way
the Hub does: downloads, resume after a cut, gated and missing repos, search, file sizes, dataset configs and splits.
Other tests build the app's Hub features on it, so this file proves the stand-in itself, with no app code."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hubstub import (  # noqa: F401  (hub_fixture registers the `hub` fixture here)
    ALPACA_DATASET,
    CONFIGS_DATASET,
    DATASET_ROWS,
    GATED_MODEL,
    PARQUET_DATASET,
    TINY_CHUNK,
    TINY_JUNK,
    TINY_MODEL,
    TINY_NEEDED,
    closed_port_endpoint,
    hub_fixture,
    subprocess_env,
)
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError


def test_snapshot_download_fetches_only_the_asked_files_and_transformers_loads_them(hub):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(snapshot_download(TINY_MODEL, allow_patterns=list(TINY_NEEDED)))
    assert sorted(p.name for p in folder.iterdir()) == sorted(TINY_NEEDED)
    assert folder.name == hub.repos[("model", TINY_MODEL)].sha
    assert not any(hub.requested(name) or hub.requested(name, "HEAD") for name in TINY_JUNK)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(folder).chat_template


def test_a_cut_transfer_resumes_with_a_range_request_past_the_bytes_written(hub):
    entry = hub.repos[("model", TINY_MODEL)].files["model.safetensors"]
    hub.cut_after("model.safetensors", 100_000)
    path = hf_hub_download(TINY_MODEL, "model.safetensors")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == entry.sha256
    first, second = hub.file_requests()
    assert first.body_bytes == 100_000 and first.range is None
    # The client keeps whole chunks only (64 KiB under the fixture): it asks for the rest from the first lost byte.
    assert second.range == f"bytes={TINY_CHUNK}-" and second.status == 206
    assert second.body_bytes == entry.size - TINY_CHUNK


def test_with_the_clients_own_10_mb_chunks_a_cut_small_file_is_fetched_again_whole(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 10 * 1024 * 1024)
    entry = hub.repos[("model", TINY_MODEL)].files["model.safetensors"]
    hub.cut_after("model.safetensors", 100_000)
    path = hf_hub_download(TINY_MODEL, "model.safetensors")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == entry.sha256
    first, second = hub.file_requests()
    assert first.body_bytes == 100_000 and (second.range, second.status, second.body_bytes) == (None, 200, entry.size)


def test_gated_repo_needs_the_token_and_shows_its_card_without_it(hub):
    info = HfApi().model_info(GATED_MODEL)  # as on the Hub: the card and file list are public, the files are not
    assert info.gated == "manual" and info.card_data.license == "llama3.2"
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(GATED_MODEL, "config.json")
    assert err.value.response.status_code == 401 and "restricted" in str(err.value)
    assert Path(hf_hub_download(GATED_MODEL, "config.json", token=hub.token)).is_file()
    assert hub.file_requests()[-1].token == hub.token
    hub.add_user("hf_otherUserToken", "someone-else")
    hub.repos[("model", GATED_MODEL)].granted = {hub.user}
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download(GATED_MODEL, "tokenizer.json", token="hf_otherUserToken")
    assert err.value.response.status_code == 403 and f"{hub.url}/{GATED_MODEL}" in str(err.value)
    hub.repos[("model", GATED_MODEL)].gate_api = True  # a stricter Hub: the card is gated too
    with pytest.raises(GatedRepoError):
        HfApi().model_info(GATED_MODEL)


def test_login_stores_the_token_where_hf_auth_login_does_and_downloads_use_it(hub, tmp_path):
    import huggingface_hub

    huggingface_hub.login(token=hub.token, add_to_git_credential=False)
    assert (tmp_path / "hf" / "token").read_text() == hub.token
    assert huggingface_hub.whoami()["name"] == hub.user
    assert Path(hf_hub_download(GATED_MODEL, "config.json")).is_file()
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError, match="Invalid user token"):
        HfApi().whoami(token="hf_notAValidToken")


def test_unknown_repo_and_revision_raise_the_hub_errors(hub):
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("tunedesk-test/no-such-model")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tunedesk-test/no-such-model", "config.json")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(TINY_MODEL, revision="no-such-branch")
    sha = hub.repos[("model", TINY_MODEL)].sha
    assert HfApi().model_info(TINY_MODEL, revision=sha).sha == sha


def test_search_and_model_info_give_downloads_license_and_file_sizes(hub):
    hits = list(HfApi().list_models(search="tiny-llama", limit=10, sort="downloads"))
    assert [m.id for m in hits][:2] == [TINY_MODEL, GATED_MODEL]
    assert hits[0].downloads == 1234 and "license:apache-2.0" in hits[0].tags
    expanded = next(iter(HfApi().list_models(search="tiny-llama", expand=["gated", "safetensors", "siblings"])))
    assert expanded.gated is False and expanded.safetensors.total > 0 and expanded.siblings
    info = HfApi().model_info(TINY_MODEL, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings}
    files = hub.repos[("model", TINY_MODEL)].files
    assert sizes == {path: f.size for path, f in files.items()}
    assert (
        next(s for s in info.siblings if s.rfilename == "model.safetensors").lfs.sha256
        == files["model.safetensors"].sha256
    )
    assert info.card_data.license == "apache-2.0" and info.likes == 56
    tree = {f.path for f in HfApi().list_repo_tree(TINY_MODEL, recursive=True)}
    assert {"onnx", "onnx/model.onnx", "model.safetensors"} <= tree
    assert [d.id for d in HfApi().list_datasets(search="tiny-alpaca")] == [ALPACA_DATASET, CONFIGS_DATASET]


def test_throttled_transfer_can_be_cancelled_midway_and_leaves_no_file(hub, tmp_path):
    class Cancel(Exception):
        pass

    class StopAfterTwoChunks:  # what a Cancel button does: raise from the progress callback
        def __init__(self, *args, **kwargs):
            self.n = 0

        def update(self, n=1):
            self.n += n
            if self.n >= 2 * TINY_CHUNK:
                raise Cancel

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    hub.throttle(200_000)  # 560 KB of weights would take ~3 s
    started = time.monotonic()
    with pytest.raises(Cancel):
        hf_hub_download(TINY_MODEL, "model.safetensors", tqdm_class=StopAfterTwoChunks)
    assert time.monotonic() - started < 1.5
    (transfer,) = hub.file_requests()
    assert transfer.body_bytes < hub.repos[("model", TINY_MODEL)].files["model.safetensors"].size / 2
    # huggingface_hub 2.4 deletes its partial file on failure: nothing of it stays in the cache.
    assert not [p for p in (tmp_path / "hf" / "hub").rglob("*") if p.is_file() and "blobs" in p.parts]


def test_a_subprocess_uses_the_stand_in_through_its_environment(hub, tmp_path):
    code = f"from huggingface_hub import model_info; print(model_info({TINY_MODEL!r}).sha)"
    env = subprocess_env(hub.url, tmp_path / "hf-sub")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == hub.repos[("model", TINY_MODEL)].sha, out.stderr


def test_closed_port_endpoint_refuses_at_once():
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(closed_port_endpoint())
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((url.hostname, url.port), timeout=3)
    assert time.monotonic() - started < 1


def test_datasets_lists_configs_and_splits_and_loads_each_layout(hub):
    import datasets

    assert datasets.get_dataset_config_names(CONFIGS_DATASET) == ["en", "zh"]
    assert datasets.get_dataset_split_names(CONFIGS_DATASET, "zh") == ["train", "test"]
    zh = datasets.load_dataset(CONFIGS_DATASET, "zh", split="train")
    assert len(zh) == DATASET_ROWS[(CONFIGS_DATASET, "zh")]["train"] and zh[0]["instruction"].startswith("计算")
    alpaca = datasets.load_dataset(ALPACA_DATASET)
    assert {k: len(v) for k, v in alpaca.items()} == DATASET_ROWS[(ALPACA_DATASET, None)]
    parquet = datasets.load_dataset(PARQUET_DATASET, split="train")
    assert len(parquet) == DATASET_ROWS[(PARQUET_DATASET, None)]["train"]
    assert set(parquet.column_names) == {"instruction", "input", "output"}


def test_lfs_files_can_come_from_another_host_like_the_hubs_cdn_without_the_token(hub):
    hub.lfs_redirect = True
    entry = hub.repos[("model", GATED_MODEL)].files["model.safetensors"]
    path = hf_hub_download(GATED_MODEL, "model.safetensors", token=hub.token)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == entry.sha256
    head, get = hub.file_requests("HEAD")[-1], hub.file_requests()[-1]
    assert head.status == 302 and head.token == hub.token
    assert get.path == f"/_cdn/{entry.sha256}" and get.token is None  # the client keeps the token on the Hub


def test_a_private_repo_is_not_found_without_a_token_with_access(hub, tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "config.json").write_text("{}")
    hub.add_repo("tunedesk-test/private", tmp_path / "private", private=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("tunedesk-test/private")
    assert not list(HfApi().list_models(search="private"))
    assert HfApi().model_info("tunedesk-test/private", token=hub.token).private is True


def test_byte_ranges_are_served_as_the_file_system_client_asks(hub):
    from huggingface_hub import HfFileSystem

    data = hub.repos[("model", TINY_MODEL)].files["model.safetensors"].data
    with HfFileSystem().open(f"{TINY_MODEL}/model.safetensors", "rb", block_size=4096) as f:
        f.seek(8)
        assert f.read(16) == data[8:24]
        f.seek(len(data) - 10)
        assert f.read() == data[-10:]
    ranges = [r.range for r in hub.file_requests() if r.status == 206]
    assert ranges and ranges[0] == "bytes=8-4119"  # blocks of 4096 from where it read
