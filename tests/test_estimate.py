"""The estimate service: one answer (estimate, verdict, fixes, methods) that the Model tab's `estimate` endpoint and
`python -m app estimate --json` both show, judged against the device the config names on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from app import __main__ as cli
from app import devices, estimate
from app.config import RunConfig
from app.memory import GIB

CASES = {
    "fits": {},
    "too-big": {
        "model": {"name_or_path": "llama-3.1-70b-instruct"},
        "method": "full",
        "train": {"gradient_checkpointing": False},
    },
}


@pytest.fixture(scope="module")
def built():
    from app.ui import app as ui_app

    return ui_app.build_blocks("en")


def _endpoint(demo):
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    return next(f for f in fns if f.api_name == "estimate")


@pytest.mark.parametrize("case", list(CASES))
def test_the_cli_and_the_model_tab_endpoint_give_the_same_answer(built, case, tmp_path, capsys):
    demo, ctx = built
    partial = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(partial), encoding="utf-8")
    assert cli.main(["estimate", str(path), "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    dep = _endpoint(demo)
    assert len(dep.inputs) == 1  # the endpoint's one input: a partial config over the app's defaults
    assert ctx.defaults == RunConfig()  # the CLI reads the YAML over RunConfig(): the same base
    from_tab = dep.fn(partial)
    for key in ("total_gib", "breakdown_gib", "device", "device_memory_gib", "fits", "verdict", "fixes", "methods"):
        assert from_cli[key] == from_tab[key], key
    assert from_tab["device"] == devices.kind("auto")  # auto is this machine's device, never assumed cuda
    if case == "too-big":
        assert from_tab["verdict"] == "no" and from_tab["fixes"][-1]["key"] == "combined"
    else:
        assert from_tab["verdict"] in ("fits", "tight") and from_tab["fixes"] == []


def test_the_verdict_and_fixes_follow_the_capacity():
    cfg = RunConfig().replace(**{"model.name_or_path": "llama-3.1-8b-instruct", "method": "lora"})
    roomy = estimate.service(cfg, estimate.Target("cuda", 80 * GIB, "GPU"))
    assert roomy.verdict == "fits" and roomy.fixes == [] and roomy.estimate.device == "cuda"
    total = roomy.estimate.total_bytes
    tight = estimate.service(cfg, estimate.Target("cuda", int(total / 0.9), "GPU"))
    assert tight.verdict == "tight" and tight.fixes == []
    short = estimate.service(cfg, estimate.Target("cuda", total - GIB, "GPU"))
    assert short.verdict == "no" and short.fixes and all(f.estimate.total_bytes < total for f in short.fixes)
    unknown = estimate.service(cfg, estimate.Target("cuda", None, "CUDA"))
    assert unknown.verdict == "unknown" and unknown.fixes == []
    assert [row["method"] for row in roomy.methods] == ["full", "freeze", "lora", "qlora"]


def test_the_table_says_the_verdict_and_the_fixes(capsys, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(CASES["too-big"]), encoding="utf-8")
    assert cli.main(["estimate", str(path), "--device", "cuda", "--device-memory-gib", "24"]) == 0
    text = capsys.readouterr().out
    assert "does NOT fit in 24.0 GiB" in text and "fix: QLoRA" in text


def test_target_of_auto_is_this_machine():
    target = estimate.Target.of("auto")
    found = devices.detect()
    assert (target.kind, target.capacity_bytes) == (found.kind, found.total_bytes)
    assert estimate.Target.of("cuda:99") == estimate.Target("cuda", None, "CUDA")


def test_the_cli_imports_no_torch_where_no_gpu_can_be_seen(tmp_path):
    code = (
        "import sys; from app import __main__ as m; assert m.main(['estimate', sys.argv[1], '--json']) == 0; "
        "from app import devices; assert ('torch' in sys.modules) == (not devices._surely_no_gpu())"
    )
    path = tmp_path / "run.yaml"
    path.write_text("{}\n", encoding="utf-8")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)
