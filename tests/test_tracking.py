"""Experiment tracking (app.tracking): a tiny-model run logs through transformers' own report_to integrations into
the run folder, read back with each tracker's own reader (TensorBoard's EventAccumulator, MLflow's client, W&B's
offline run file); a tracker that cannot log is one line at Start; TensorBoard is served on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import struct
import time
import urllib.request

import pytest
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401

from app import runs, tracking, train

SAMPLE_PROMPT = "who are you"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json", n=24)


@pytest.fixture()
def tracker_env(tmp_path, monkeypatch):
    """Each test's tracker files in its tmp_path: a fresh HOME and no tracker settings of the user's."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "NETRC", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    if importlib.util.find_spec("mlflow"):
        import mlflow

        mlflow.set_tracking_uri(None)  # MLflow keeps its URI process-wide (and in the environment)


def _train(model_dir, data_file, trackers, **changes):
    cfg = tiny_config(
        model_dir,
        data_file,
        **{"train.report_to": trackers, "train.sample_every": 2, "train.sample_prompts": [SAMPLE_PROMPT]},
        **changes,
    )
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished", events_of(run_dir)[-1]
    return cfg, run_dir


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install 'tunedesk[trackers]'; make test installs it)")


def test_tensorboard_run_writes_events_tensorboard_reads_and_serves(tiny_model_dir, data_file, runs_tmp, tracker_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, run_dir = _train(tiny_model_dir, data_file, ["tensorboard"])
    acc = EventAccumulator(str(run_dir / tracking.TENSORBOARD_DIR), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    assert [s.step for s in acc.Scalars("train/loss")] == [1, 2, 3]  # logging_steps 1: one point per step
    logged = {e["step"]: e for e in events_of(run_dir, "log")}
    for scalar in acc.Scalars("train/tokens_per_s"):  # the same figure as events.jsonl, not a second count
        assert scalar.value == pytest.approx(logged[scalar.step]["tokens_per_s"], rel=1e-6) and scalar.value > 0
    assert {"train/learning_rate", "train/grad_norm", "train/peak_rss_mb", "eval/loss"} <= set(acc.Tags()["scalars"])
    config = acc.Tensors(f"{tracking.CONFIG_TAG}/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"name_or_path: {tiny_model_dir}" in config and "report_to:" in config
    (sample,) = acc.Tensors("samples/text_summary")
    assert sample.step == 2 and SAMPLE_PROMPT in sample.tensor_proto.string_val[0].decode()

    url = tracking.tensorboard_url(runs_tmp)
    assert url.startswith("http://127.0.0.1:") and tracking.tensorboard_url(runs_tmp) == url  # started once
    assert f"{run_dir.name}/{tracking.TENSORBOARD_DIR}" in _served_runs(url)


def _served_runs(url: str, wait_s: float = 60.0) -> list[str]:
    """TensorBoard's run list (its /data/runs answer), polled until a run shows up: it loads event files after
    it starts serving."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + wait_s
    while True:
        with opener.open(url + "data/runs", timeout=10) as answer:
            found = json.loads(answer.read())
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_tensorboard_url_says_why_it_cannot_serve_a_file(tmp_path):
    not_a_folder = tmp_path / "runs.txt"
    not_a_folder.write_text("x")
    with pytest.raises(tracking.TrackingError, match="cannot hold runs"):
        tracking.tensorboard_url(not_a_folder)


def test_mlflow_logs_into_a_file_store_in_the_run_folder(tiny_model_dir, data_file, runs_tmp, tracker_env):
    _need("mlflow")
    import mlflow

    cfg, run_dir = _train(tiny_model_dir, data_file, ["mlflow"])
    client = mlflow.MlflowClient(tracking_uri=(run_dir / tracking.MLFLOW_DIR).as_uri())
    (run,) = client.search_runs(experiment_ids=["0"])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    assert {"tokens_per_s", "peak_rss_mb", "eval_loss"} <= set(run.data.metrics)
    recorded = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{tracking.CONFIG_TAG}.yaml")
    assert recorded == json.loads(json.dumps(cfg.to_dict()))
    sample = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/samples/step_000002.txt")
    assert SAMPLE_PROMPT in sample
    assert not mlflow.is_tracking_uri_set()  # the run's store is not left for the next run or a child process


def test_wandb_logs_offline_into_the_run_folder(tiny_model_dir, data_file, runs_tmp, tracker_env):
    _need("wandb")
    import wandb

    cfg, run_dir = _train(tiny_model_dir, data_file, ["wandb"])
    assert wandb.run is None  # finished with the training, not left open for the next run
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["train/global_step"] for h in history if "train/loss" in h] == [1, 2, 3]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert _items(run.config.update)[tracking.CONFIG_TAG] == json.loads(json.dumps(cfg.to_dict()))
    assert run.display_name == run_dir.name
    (sample,) = [h for h in history if "samples/path" in h]  # the answers as an HTML file beside the log
    assert sample["train/global_step"] == 2 and sample["samples/_type"] == "html-file"
    assert SAMPLE_PROMPT in (run_file.parent / "files" / sample["samples/path"]).read_text(encoding="utf-8")


def _wandb_records(path):
    """The protobuf records of a W&B transaction log (run-<id>.wandb): a 7-byte ':W&B' header, then LevelDB log
    blocks of 32 KiB; each record is split into chunks with a 7-byte header (crc, length, type 1 full or 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, out = path.read_bytes(), 32768, 7, b"", []
    assert data.startswith(b":W&B")
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            out.append(record)
            chunks = b""
    return out


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_a_tracker_that_cannot_log_is_one_line_at_start(tiny_model_dir, data_file, tracker_env, monkeypatch):
    cfg = tiny_config(tiny_model_dir, data_file, **{"train.report_to": ["tensorboard", "trackio"]})
    real_find_spec = importlib.util.find_spec
    with monkeypatch.context() as patch:  # trackio not installed, for this check only
        patch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real_find_spec(name, *a)
        )
        lines = [p for p in train.preflight(cfg) if p.startswith("train.report_to")]
    assert lines == ["train.report_to: trackio is not installed; pip install 'tunedesk[trackers]' or untick it"]

    for name in ("wandb", "mlflow", "trackio"):
        _need(name)
    every = cfg.replace(**{"train.report_to": ["tensorboard", "wandb", "mlflow", "trackio"]})
    assert tracking.problems(every) == []  # installed; W&B not logged in logs offline into the run folder
    monkeypatch.setenv("WANDB_MODE", "online")
    (line,) = tracking.problems(every)
    assert "WANDB_MODE=online" in line and "wandb login" in line
