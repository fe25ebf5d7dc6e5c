"""A model's own code runs only with the user's consent, checked in the core for every caller (issue 20, item 1).

The model used here ships a tokenizer module (auto_map) that writes a marker file when it is imported: the marker
is the proof that code ran. Each caller the way a person reaches it: the Data tab's Load with exactly the inputs
the UI wires to it, the Model tab's tick, the CLI, and Resume of a run whose config.yaml has trust on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ui_ctx import wired

from app import consent, history, jobs, modeling, runs
from app.config import ConfigError
from app.ui import app as ui_app

ROOT = Path(__file__).resolve().parent.parent

EVIL = """from pathlib import Path

Path({marker!r}).write_text("the model's code ran")

from transformers import PreTrainedTokenizerFast


class EvilTokenizerFast(PreTrainedTokenizerFast):
    pass
"""


def _remote_code_model(tiny_model_dir: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of the tiny model whose tokenizer is a class in its own evil_tok.py; returns (folder, marker)."""
    shutil.copytree(tiny_model_dir, folder)
    marker = folder.parent / f"{folder.name}-RAN"
    (folder / "evil_tok.py").write_text(EVIL.format(marker=str(marker)))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "evil_tok.EvilTokenizerFast"]}
    cfg["tokenizer_class"] = "EvilTokenizerFast"
    cfg_path.write_text(json.dumps(cfg))
    return folder, marker


@pytest.fixture()
def remote(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))  # transformers copies the code here
    consent.revoke()
    yield _remote_code_model(tiny_model_dir, tmp_path / "remote-model")
    consent.revoke()


def test_core_refuses_without_consent_runs_with_it_and_asks_again_when_the_code_changes(remote):
    folder, marker = remote
    with pytest.raises(modeling.ModelError, match="I have read this model's code"):
        modeling.load_tokenizer(str(folder), trust_remote_code=True)
    with pytest.raises(modeling.ModelError, match="Trust remote code"):
        modeling.inspect_model(str(folder), trust_remote_code=True)
    assert not marker.exists()
    consent.grant(folder)
    tok = modeling.load_tokenizer(str(folder), trust_remote_code=True)
    assert type(tok).__name__ == "EvilTokenizerFast" and marker.exists()  # the fixture's code really runs
    (folder / "evil_tok.py").write_text((folder / "evil_tok.py").read_text() + "\n# changed\n")
    with pytest.raises(modeling.ModelError, match="changed since you confirmed"):
        modeling.load_tokenizer(str(folder), trust_remote_code=True)


@pytest.fixture()
def ui(remote, tmp_path):
    from test_reliability import tiny_config

    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "Say hi", "input": "", "output": "Hi"}] * 4))
    cfg = tiny_config(remote[0], data, **{"train.output_dir": str(tmp_path / "runs")})
    cfg = cfg.replace(**{"model.trust_remote_code": True})
    _, ctx = ui_app.build_blocks("en", defaults=cfg)
    return ctx


def test_data_tab_load_with_its_real_inputs_refuses_untrusted_code(ui, remote):
    """The Data tab's Load does not receive the confirmation box: the refusal must come from the core."""
    _, marker = remote
    fn, values = wired(ui, "data_load")
    assert ui.handles["model"].trust_confirm not in values  # what made the form-level check a no-op
    assert values[ui.form.components["model.trust_remote_code"]] is True
    out = fn(values)
    statuses = [v for v in out.values() if isinstance(v, str) and "Trust remote code" in v]
    assert statuses, out
    assert not marker.exists()


def test_the_model_tab_tick_is_the_consent_and_a_new_model_name_withdraws_it(ui, remote):
    from app.ui import model_tab

    folder, marker = remote
    hm = ui.handles["model"]
    name = ui.form.components["model.name_or_path"]
    tick = next(d.fn for d in ui.demo.fns.values() if [c._id for c in d.inputs] == [name._id, hm.trust_confirm._id])
    tick(str(folder), True)  # the person ticks "I have read this model's code and trust it"
    assert consent.granted(folder)
    values = {c: c.value for c in ui.form.inputs()} | {hm.trust_confirm: True, ui.lang_selector: "en"}
    out = model_tab.load_or_inspect(ui, values, inspect_only=True)
    assert "Inspected" in out[hm.status], out[hm.status]
    withdraw = next(d.fn for d in ui.demo.fns.values() if d.fn is model_tab.withdraw_consent)
    withdraw()  # another model typed in
    assert not consent.granted(folder)
    tick(str(folder), False)
    assert not consent.granted(folder)
    del marker  # inspection reads the config only; the tokenizer's code is exercised in the core test


def test_resume_of_a_run_with_trust_on_asks_again_and_leaves_the_run_untouched(ui, remote):
    folder, marker = remote
    cfg = ui.defaults
    run_dir = runs.create_run(cfg, name="trusting")
    history.append_event(run_dir, "started", step=0, total_steps=4, method="lora", device="cpu")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="Trust remote code"):
        jobs.manager.start(cfg, resume_dir=run_dir)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert not marker.exists()


def test_cli_train_needs_the_flag_and_leaves_nothing_without_it(remote, tmp_path):
    folder, marker = remote
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "Say hi", "input": "", "output": "Hi"}] * 4))
    from test_reliability import tiny_config

    cfg = tiny_config(folder, data, **{"train.output_dir": str(tmp_path / "runs"), "train.max_steps": 1})
    path = tmp_path / "cfg.yaml"
    cfg.replace(**{"model.trust_remote_code": True}).save(path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
    cmd = [sys.executable, "-m", "app", "train", str(path)]
    refused = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "--trust-remote-code" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert not marker.exists() and not any((tmp_path / "runs").glob("*"))
    allowed = subprocess.run([*cmd, "--trust-remote-code"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert marker.exists()
