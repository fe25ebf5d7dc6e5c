"""Background jobs: Start returns at once, one job per device, Stop is honoured, bad configs are refused."""

from __future__ import annotations

import threading
import time

import pytest
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import devices, jobs, runs
from app.config import ConfigError


@pytest.fixture()
def manager():
    m = jobs.JobManager()
    yield m
    m.stop()
    m.wait(120)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=24)


def test_two_quick_starts_make_one_run_and_a_clear_refusal(manager, tiny_model_dir, data_file, runs_tmp):
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.max_steps": 200, "train.save_steps": 0})
    results: list = []
    barrier = threading.Barrier(2)

    def click():
        barrier.wait()
        try:
            results.append(manager.start(cfg))
        except jobs.JobBusy as exc:
            results.append(exc)

    clicks = [threading.Thread(target=click) for _ in range(2)]
    for t in clicks:
        t.start()
    for t in clicks:
        t.join(30)
    started = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, jobs.JobBusy)]
    assert len(started) == 1 and len(refused) == 1
    assert started[0].name in str(refused[0]) and "already training" in str(refused[0])
    assert [p.name for p in runs_tmp.iterdir()] == [started[0].name]
    assert devices.holder("cpu").run == started[0].name and manager.active().run_dir == started[0]
    while not events_of(started[0], "log"):
        time.sleep(0.01)
    assert manager.stop() is True
    assert manager.wait(120) == "stopped"
    assert not devices.busy("cpu") and manager.active() is None
    assert runs.run_status(started[0]) == "stopped" and runs.final_artifact(started[0]) is not None


def test_start_returns_at_once_and_resume_continues_the_same_folder(manager, tiny_model_dir, data_file, runs_tmp):
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.max_steps": 6, "train.save_steps": 100})
    t0 = time.perf_counter()
    run_dir = manager.start(cfg)
    assert time.perf_counter() - t0 < 1.0  # the model loads in the background
    while not any(e["type"] == "log" for e in events_of(run_dir)):
        time.sleep(0.01)
    manager.stop()
    assert manager.wait(120) == "stopped"
    at = events_of(run_dir, "stopped")[0]["step"]
    assert manager.start(cfg, resume_dir=run_dir) == run_dir
    assert manager.wait(120) == "finished"
    assert [e["step"] for e in events_of(run_dir, "log")] == list(range(1, 7))
    assert events_of(run_dir, "resumed")[0]["from_step"] == at
    with pytest.raises(jobs.JobBusy, match="already finished"):
        manager.start(cfg, resume_dir=run_dir)


def test_a_config_that_cannot_run_is_refused_before_any_folder(manager, tiny_model_dir, data_file, runs_tmp):
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.precision": "fp16", "lora.rank": 0})
    with pytest.raises(ConfigError) as info:
        manager.start(cfg)
    assert any("CUDA" in p for p in info.value.problems) and any("lora.rank" in p for p in info.value.problems)
    assert not runs_tmp.exists() or not any(runs_tmp.iterdir())
    assert manager.stop() is False and manager.wait(0) is None
