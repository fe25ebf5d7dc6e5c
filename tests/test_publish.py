"""Pushing exports to the Hub with the real huggingface_hub client against the stand-in (tests/hubstub.py): a
merged folder, an adapter and GGUF files from a real tiny run (trained, evaluated, merged, exported), downloaded
back byte for byte; the model card; private by default; an existing repo reused; 401/403 said clearly; Cancel; the
token never written by TuneDesk; the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from hubstub import closed_port_endpoint, hub_fixture, subprocess_env  # noqa: F401  (the `hub` fixture)
from huggingface_hub import snapshot_download
from test_train_kit import one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import eval_report, export, history, publish, runs, train
from app import hub as apphub
from app.commands import PushConfig
from app.hub import HubError

ROOT = Path(__file__).resolve().parent.parent
PRIVATE = ("tunedesk_export.json", "tunedesk_merge.json")


# ---- a real run: trained, evaluated, merged, exported ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> Path:
    """A 3-step LoRA run on the tiny model (24 records) with a saved evaluation of 2 examples."""
    from app import evaluate

    root = tmp_path_factory.mktemp("publish-run")
    cfg = tiny_config(tiny_model_dir, write_alpaca(root / "train.json"), **{"train.output_dir": str(root / "runs")})
    run = runs.create_run(cfg, "publish")
    assert train.run(cfg, run) == "finished", history.load_events(run)[-1]
    evaluate.evaluate(None, [str(run / runs.ADAPTER)], max_examples=2, max_new_tokens=4, device="cpu")
    return run


@pytest.fixture(scope="module")
def merged(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "merged"
    return export.merge(trained / runs.ADAPTER, out, "float32", progress=lambda f, m: None)


@pytest.fixture(scope="module")
def gguf_dir(merged, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("g") / "gguf"
    export.export_gguf(merged, out, "f16", lambda f, m: None)
    return out


@pytest.fixture()
def pushing(hub, tmp_path, monkeypatch):
    """The stand-in, with HOME and TUNEDESK_HOME of this test's own, and the token saved as the Model tab does."""
    for name in ("HOME", "TUNEDESK_HOME"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    assert hub_login(hub.token) == hub.user
    return hub


def hub_login(token: str) -> str:
    return apphub.login(token)


def pushed(stub, repo_id: str, tmp_path: Path) -> Path:
    """The repo as a user downloads it (snapshot_download with the token), in a folder of its own."""
    return Path(snapshot_download(repo_id, token=stub.token, local_dir=tmp_path / "down" / repo_id))


def sent_files(folder: Path) -> dict[str, bytes]:
    """What a push of `folder` sends unchanged: every file but TuneDesk's records, hidden files and README.md."""
    out = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_file() and p.name not in (*PRIVATE, "README.md") and not any(s.startswith(".") for s in rel.parts):
            out[rel.as_posix()] = p.read_bytes()
    return out


def repo_files(down: Path) -> dict[str, bytes]:
    return {
        p.relative_to(down).as_posix(): p.read_bytes()
        for p in down.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(down).parts
    }


def front_matter(card: str) -> dict:
    return yaml.safe_load(re.match(r"^---\n(.*?)\n---", card, re.S).group(1))


def assert_no_local_paths(files: dict[str, bytes], *folders: Path) -> None:
    for name, data in files.items():
        for folder in folders:
            for local in {str(folder), str(folder.resolve()), str(Path.home())}:
                assert local.encode() not in data, f"{name} names the local folder {local}"


# ---- merged ----------------------------------------------------------------------------------------------------
def test_push_merged_folder_sends_its_files_and_a_card_with_the_run_and_its_evaluation(
    pushing, merged, trained, tmp_path
):
    said: list[tuple[float, str]] = []
    result = publish.push(merged, PushConfig(repo_id="tunedesk-tester/tiny-merged"), lambda f, m: said.append((f, m)))
    assert (result.created, result.private, result.url) == (True, True, f"{pushing.url}/tunedesk-tester/tiny-merged")
    assert pushing.repos[("model", "tunedesk-tester/tiny-merged")].private

    down = repo_files(pushed(pushing, result.repo_id, tmp_path))
    expected = sent_files(merged)
    assert set(down) == {*expected, "README.md", ".gitattributes"}
    assert {k: down[k] for k in expected} == expected  # byte for byte
    assert set(result.files) == {*expected, "README.md"}
    assert not any(name in down for name in PRIVATE)
    assert_no_local_paths(down, merged, trained, trained.parent)

    card = down["README.md"].decode()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and {"tunedesk", "lora", "merged"} <= set(meta["tags"])
    assert "| Learning rate | 0.01 |" in card and "| Batch | 2 x 2 gradient accumulation |" in card
    assert "| Sequence length | 96 |" in card and "| Steps trained | 3 |" in card
    assert re.search(r"\| Data \| `train\.json` \(\d+ training records\) \|", card)
    assert "r=4, alpha=8" in card and "q_proj, v_proj" in card
    evaluation = eval_report.list_evaluations(trained)[0]
    for row in evaluation["table"]:  # the Evaluate tab's table: base row and the adapter's
        assert f"| {row['model']} | {row['loss']:.4f} | {row['perplexity']:.2f} | {row['rouge1']:.1f} |" in card
    assert 'AutoModelForCausalLM.from_pretrained("tunedesk-tester/tiny-merged")' in card

    phases = [m for _, m in said]
    assert phases[0].startswith("checking") and any(m.startswith("creating repo") for m in phases)
    assert any(m.startswith("uploading") for m in phases) and phases[-1] == f"done: {result.url}"
    assert [f for f, _ in said] == sorted(f for f, _ in said)
    lfs_puts = {r.path.rsplit("/", 1)[1] for r in pushing.writes() if r.method == "PUT"}
    assert publish_sha(merged / "model.safetensors") in lfs_puts  # weights went through the LFS batch API


def publish_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- adapter ---------------------------------------------------------------------------------------------------
def test_push_adapter_loads_with_peft_from_what_was_pushed_and_reuses_the_repo(
    pushing, trained, tiny_model_dir, tmp_path
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = trained / runs.ADAPTER
    cfg = PushConfig(repo_id="tunedesk-tester/tiny-adapter", what="adapter", private=False)
    first = publish.push(adapter, cfg)
    assert (first.created, first.private) == (True, False)
    assert not pushing.repos[("model", cfg.repo_id)].private
    down_dir = pushed(pushing, cfg.repo_id, tmp_path)
    down = repo_files(down_dir)
    expected = sent_files(adapter)
    assert set(down) == {*expected, "README.md", ".gitattributes"}
    changed = {k for k in expected if down[k] != expected[k]}
    assert changed == {"adapter_config.json"}  # its local base folder becomes a name
    sent_cfg = json.loads(down["adapter_config.json"])
    local_cfg = json.loads(expected["adapter_config.json"])
    assert sent_cfg["base_model_name_or_path"] == Path(local_cfg["base_model_name_or_path"]).name
    assert {k: v for k, v in sent_cfg.items() if k != "base_model_name_or_path"} == {
        k: v for k, v in local_cfg.items() if k != "base_model_name_or_path"
    }
    assert_no_local_paths(down, adapter, tiny_model_dir)
    meta = front_matter(down["README.md"].decode())
    assert meta["library_name"] == "peft" and {"tunedesk", "lora"} <= set(meta["tags"])
    assert 'PeftModel.from_pretrained(base, "tunedesk-tester/tiny-adapter")' in down["README.md"].decode()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 17, 42, 99]])
    local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter)
    remote = PeftModel.from_pretrained(base, down_dir)
    with torch.no_grad():
        assert torch.equal(local(ids).logits, remote(ids).logits)

    again = publish.push(adapter, PushConfig(repo_id=cfg.repo_id, what="adapter"))  # private=True asked: kept public
    assert (again.created, again.private) == (False, False)
    assert not pushing.repos[("model", cfg.repo_id)].private


def test_card_names_the_hub_base_model_and_keeps_a_hub_id_in_adapter_config(pushing, trained, tmp_path):
    adapter = shutil.copytree(trained / runs.ADAPTER, tmp_path / "loose-adapter")  # outside any run
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    result = publish.push(adapter, PushConfig(repo_id="tunedesk-tester/loose", what="adapter"))
    down = repo_files(pushed(pushing, result.repo_id, tmp_path))
    assert down["adapter_config.json"] == (adapter / "adapter_config.json").read_bytes()
    card = down["README.md"].decode()
    assert front_matter(card)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "## Evaluation" not in card  # no run: no evaluation to show
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card


# ---- GGUF ------------------------------------------------------------------------------------------------------
def test_push_gguf_folder_with_its_source_run(pushing, gguf_dir, merged, trained, tmp_path):
    result = publish.push(gguf_dir, PushConfig(repo_id="tunedesk-tester/tiny-GGUF", what="gguf"), source=merged)
    down = repo_files(pushed(pushing, result.repo_id, tmp_path))
    expected = sent_files(gguf_dir)
    assert set(down) == {*expected, "README.md", ".gitattributes"}
    ggufs = [k for k in expected if k.endswith(".gguf")]
    assert ggufs and all(down[k] == expected[k] for k in ggufs)
    assert down["Modelfile"].decode() == expected["Modelfile"].decode().replace(str(gguf_dir), ".")
    assert_no_local_paths(down, gguf_dir, merged, trained)
    card = down["README.md"].decode()
    assert "gguf" in front_matter(card)["tags"] and "## Evaluation" in card
    assert f"| {ggufs[0]} |" in card and f"llama-cli -m {ggufs[0]}" in card
    assert "ollama run hf.co/tunedesk-tester/tiny-GGUF" in card

    alone = publish.model_card(publish.gather(gguf_dir, "gguf"), "tunedesk-tester/tiny-GGUF")  # no source given
    assert front_matter(alone)["tags"] == ["tunedesk", "gguf"] and "| Method | unknown |" in alone
    assert "## Evaluation" not in alone and f"| {ggufs[0]} |" in alone


# ---- refusals and errors ---------------------------------------------------------------------------------------
def test_wrong_folder_and_empty_repo_are_refused_together_before_any_request(pushing, trained, tmp_path):
    pushing.clear_log()
    with pytest.raises(HubError) as err:
        publish.push(trained / runs.ADAPTER, PushConfig(repo_id="", what="gguf"))
    message = str(err.value)
    assert err.value.kind == "invalid" and "repo_id: empty" in message and "no .gguf file" in message
    assert "--what adapter" in message
    with pytest.raises(HubError, match="not a valid Hub name"):
        publish.push(trained / runs.ADAPTER, PushConfig(repo_id="you/my model", what="adapter"))
    with pytest.raises(HubError, match="not owner/name") as err:
        publish.push(tmp_path / "missing", PushConfig(repo_id="no-owner"))
    assert "not found or not a folder" in str(err.value)
    assert pushing.requests == []


def test_no_token_and_an_invalid_token_say_how_to_save_a_write_token(pushing, merged, monkeypatch):
    apphub.logout()
    with pytest.raises(HubError) as err:
        publish.push(merged, PushConfig(repo_id="tunedesk-tester/x"))
    assert err.value.kind == "auth" and "WRITE access" in str(err.value) and "hf auth login" in str(err.value)
    assert pushing.writes() == []
    monkeypatch.setenv("HF_TOKEN", "hf_notAValidToken")
    with pytest.raises(HubError) as err:
        publish.push(merged, PushConfig(repo_id="tunedesk-tester/x"))
    assert err.value.kind == "auth" and "(401)" in str(err.value) and "WRITE access" in str(err.value)
    assert ("model", "tunedesk-tester/x") not in pushing.repos


def test_read_only_token_and_someone_elses_namespace_get_403(pushing, trained, tmp_path):
    adapter = trained / runs.ADAPTER
    read_token = "hf_readOnlyTokenForTuneDesk000000000"
    pushing.add_user(read_token, pushing.user, role="read")
    assert hub_login(read_token) == pushing.user
    pushing.clear_log()
    with pytest.raises(HubError) as err:
        publish.push(adapter, PushConfig(repo_id="tunedesk-tester/ro", what="adapter"))
    assert err.value.kind == "forbidden" and "read-only token" in str(err.value)
    assert "cannot write to tunedesk-tester" in str(err.value)
    assert pushing.writes() and all((r.token, r.status) == (read_token, 403) for r in pushing.writes())

    # the user's own existing repo: create says 403, the client finds the repo, the upload is refused
    hub_login(pushing.token)
    publish.push(adapter, PushConfig(repo_id="tunedesk-tester/ro", what="adapter"))
    hub_login(read_token)
    with pytest.raises(HubError) as err:
        publish.push(adapter, PushConfig(repo_id="tunedesk-tester/ro", what="adapter"))
    assert err.value.kind == "forbidden"

    hub_login(pushing.token)
    with pytest.raises(HubError) as err:
        publish.push(adapter, PushConfig(repo_id="someone-else/theirs", what="adapter"))
    assert err.value.kind == "forbidden" and "cannot write to someone-else" in str(err.value)
    pushing.orgs[pushing.user] = {"my-org"}
    assert publish.push(adapter, PushConfig(repo_id="my-org/ours", what="adapter")).created


def test_unreachable_hub(pushing, merged, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", closed_port_endpoint())
    with pytest.raises(HubError) as err:
        publish.push(merged, PushConfig(repo_id="tunedesk-tester/x"))
    assert err.value.kind == "unreachable" and "cannot be reached" in str(err.value)


def test_cancel_between_files_commits_nothing(pushing, merged):
    cancel = threading.Event()

    def progress(frac: float, msg: str) -> None:
        if msg.startswith("uploading") and "2/" in msg:
            cancel.set()

    with pytest.raises(HubError) as err:
        publish.push(merged, PushConfig(repo_id="tunedesk-tester/cut"), progress, cancel)
    assert err.value.kind == "cancelled" and "nothing was committed" in str(err.value)
    assert set(pushing.repos[("model", "tunedesk-tester/cut")].files) == {".gitattributes"}
    assert not [r for r in pushing.writes() if "/commit/" in r.path]


def test_the_token_is_never_written_by_tunedesk(pushing, merged, trained, tmp_path):
    import os

    publish.push(merged, PushConfig(repo_id="tunedesk-tester/secret"))
    token = pushing.token.encode()
    for root in (Path(os.environ["HOME"]), Path(os.environ["TUNEDESK_HOME"]), merged, trained):
        for p in root.rglob("*"):
            assert not p.is_file() or token not in p.read_bytes(), f"{p} holds the token"


# ---- CLI -------------------------------------------------------------------------------------------------------
def test_cli_prints_the_url_and_fails_with_one_line(pushing, trained, tmp_path):
    env = subprocess_env(pushing.url, tmp_path / "hf")  # the token hub.login saved there
    adapter = str(trained / runs.ADAPTER)
    cmd = [sys.executable, "-m", "app", "push", adapter, "--repo", "tunedesk-tester/cli", "--what", "adapter"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"{pushing.url}/tunedesk-tester/cli"
    assert "created private repo tunedesk-tester/cli" in done.stdout and "uploading" in done.stderr
    assert pushing.repos[("model", "tunedesk-tester/cli")].private

    other = cmd[:5] + ["--repo", "someone-else/x", "--what", "adapter"]
    bad = subprocess.run(other, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: the saved token cannot write to someone-else")


def test_a_gguf_names_its_base_model_as_llama_cpp_writes_it(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "model-q8_0.gguf", "llama")
    writer.add_string("general.base_model.0.repo_url", "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    card = publish.model_card(publish.gather(tmp_path, "gguf"), "you/x-GGUF")
    assert front_matter(card)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "| model-q8_0.gguf |" in card and "llama-cli -m model-q8_0.gguf -cnv" in card


def test_a_damaged_adapter_config_is_refused_with_its_file_named(pushing, trained, tmp_path):
    adapter = shutil.copytree(trained / runs.ADAPTER, tmp_path / "damaged")
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(HubError) as err:
        publish.push(adapter, PushConfig(repo_id="tunedesk-tester/damaged", what="adapter"))
    assert err.value.kind == "invalid" and "adapter_config.json" in str(err.value)
    assert pushing.writes() == []
