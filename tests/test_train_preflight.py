"""Impossible values are refused before a run folder exists (issue 20, item 7): `python -m app train`, the job
manager and the Train tab's Start check the numbers, the model path, the data path and the output folder first; a
refusal prints one message naming the key, no traceback, exits non-zero and leaves nothing under runs/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_kit import one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import jobs
from app.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=8)


def _nothing_under(runs_dir: Path) -> bool:
    return not runs_dir.exists() or not any(runs_dir.iterdir())


CASES = {
    "nan-epochs": ({"train.epochs": NAN}, "train.epochs: nan is not a finite number"),
    "inf-epochs": ({"train.epochs": INF}, "train.epochs: inf is not a finite number"),
    "huge-epochs": ({"train.epochs": 1e308}, "train.epochs: 1e+308 is more than 1000 passes"),
    "seed-2^32": ({"train.seed": 2**32}, "train.seed: 4294967296 is out of range"),
    "missing-model": ({"model.name_or_path": "MISSING/model-folder"}, "model.name_or_path: path not found"),
    "missing-data": ({"data.path": "MISSING/data.json"}, "data.path: MISSING/data.json: file not found"),
}


def _config(case: str, tiny_model_dir: Path, data_file: Path, tmp_path: Path):
    changes, words = CASES[case]
    changes = {k: v.replace("MISSING", str(tmp_path / "missing")) if isinstance(v, str) else v
               for k, v in changes.items()}  # fmt: skip
    return tiny_config(tiny_model_dir, data_file, **changes), words.replace("MISSING", str(tmp_path / "missing"))


@pytest.mark.parametrize("case", list(CASES))
def test_cli_refuses_before_making_a_run_folder(case, tiny_model_dir, data_file, tmp_path):
    cfg, words = _config(case, tiny_model_dir, data_file, tmp_path)
    path = tmp_path / "run.yaml"
    cfg.save(path)
    runs_dir = tmp_path / "runs"
    env = {**os.environ, "TUNEDESK_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "app", "train", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert words in out.stderr and str(path) in out.stderr, out.stderr[-3000:]
    assert "cannot convert" not in out.stderr
    assert _nothing_under(runs_dir)


@pytest.mark.parametrize("case", list(CASES))
def test_job_manager_refuses_before_making_a_run_folder(case, tiny_model_dir, data_file, tmp_path, runs_tmp):
    cfg, words = _config(case, tiny_model_dir, data_file, tmp_path)
    with pytest.raises(ConfigError) as info:
        jobs.JobManager().start(cfg)
    assert any(p.startswith(words) for p in info.value.problems), info.value.problems
    assert _nothing_under(runs_tmp)


def test_train_tab_start_refuses_a_missing_model_and_data_before_making_a_run_folder(
    tiny_model_dir, data_file, tmp_path, runs_tmp
):
    from app.ui import app as ui_app
    from app.ui import train_tab
    from app.ui.train_tab import RunView

    cfg = tiny_config(tiny_model_dir, data_file)
    _demo, ctx = ui_app.build_blocks("en", defaults=cfg)
    h, f = ctx.handles["train"], ctx.form.components
    values = {c: c.value for c in ctx.form.inputs()}  # exactly what Start's inputs carry: the form, the language
    values.update({ctx.lang_selector: "en", h.view: RunView(), h.ticks: 0, h.run_pick: None})
    values.update({f["model.name_or_path"]: str(tmp_path / "gone"), f["data.path"]: str(tmp_path / "gone.json")})
    status = train_tab.start_run(ctx, values)[h.status]
    # each problem names the widget on screen (Base model, Dataset), not its config key
    assert "Base model: path not found" in status and str(tmp_path / "gone") in status, status
    assert "Dataset: " in status and "gone.json: file not found" in status, status
    assert "Traceback" not in status and _nothing_under(runs_tmp) and jobs.manager.active() is None


def test_output_folder_that_is_a_file_is_refused(tiny_model_dir, data_file, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.output_dir": str(blocker / "runs")})
    with pytest.raises(ConfigError) as info:
        jobs.JobManager().start(cfg)
    (problem,) = info.value.problems
    assert problem.startswith("train.output_dir:") and "is a file" in problem and blocker.read_text() == "x"
