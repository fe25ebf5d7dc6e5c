"""Experiment trackers (train.report_to) through transformers' own report_to integrations: TensorBoardCallback,
WandbCallback, MLflowCallback and TrackioCallback log the training metrics; this module checks the trackers before a
run, points each at the run folder, records the full RunConfig and the sample answers through each tracker's own
object, and serves TensorBoard on 127.0.0.1.

    problems(cfg)                      one line per tracker that is not installed or not usable, for preflight
    attach(trainer, cfg, run_dir)      after the Trainer is built: run folder, run name, config at train begin
    log_text(trainer, tag, text, step) text (sample answers) to every active tracker
    tensorboard_url(logdir)            `tensorboard --logdir <runs>` on a free port, once per process

Where each writes: TensorBoard into run_dir/tensorboard; W&B offline into run_dir/wandb unless the user is logged in
or set WANDB_MODE; MLflow into the file store run_dir/mlruns unless MLFLOW_TRACKING_URI is set; Trackio into its
local store (~/.cache/huggingface/trackio, or TRACKIO_DIR) unless the user names a Space. Never imports gradio:
trackio does, so it is imported only when a run uses it.
"""

from __future__ import annotations

import atexit
import html
import importlib.util
import netrc
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from app.config import TRACKERS, RunConfig

PROJECT = "tunedesk"
"""W&B and Trackio project a run logs under unless WANDB_PROJECT is set."""
TENSORBOARD_DIR = "tensorboard"
"""run_dir/tensorboard holds the run's event files, so `tensorboard --logdir runs` shows every run by folder."""
MLFLOW_DIR = "mlruns"
"""run_dir/mlruns: the MLflow file store a run logs into when MLFLOW_TRACKING_URI is not set."""
CONFIG_TAG = "run_config"
"""Name the RunConfig is recorded under: TensorBoard text, MLflow artifact run_config.yaml, W&B and Trackio config."""
EXTRA = "pip install 'tunedesk[trackers]'"
SERVER_WAIT_S = 90.0
"""Longest wait for TensorBoard to answer: it imports TensorFlow-free in ~3 s, more on a busy 2-core machine."""


class TrackingError(Exception):
    """A tracker service (TensorBoard) could not be started; the message says why."""


# ---- before a run -----------------------------------------------------------------------------------------------
def installed(name: str) -> bool:
    """Whether tracker `name` can be imported, asked without importing it (find_spec)."""
    return importlib.util.find_spec(name) is not None


def report_to(cfg: RunConfig) -> list[str] | str:
    """TrainingArguments.report_to for this run: the trackers it names, or "none"."""
    return list(cfg.train.report_to) or "none"


def problems(cfg: RunConfig) -> list[str]:
    """One line per tracker in train.report_to that cannot log this run (config.validate() names unknown ones)."""
    found = []
    for name in cfg.train.report_to:
        if name not in TRACKERS:
            continue
        if not installed(name):
            found.append(f"train.report_to: {name} is not installed; {EXTRA} or untick it")
        elif name == "mlflow" and os.environ.get("DISABLE_MLFLOW_INTEGRATION", "").upper() == "TRUE":
            found.append(
                "train.report_to: mlflow is turned off by DISABLE_MLFLOW_INTEGRATION=TRUE; unset it or untick it"
            )
        elif name == "wandb" and os.environ.get("WANDB_MODE") == "online" and not wandb_logged_in():
            found.append(
                "train.report_to: wandb has WANDB_MODE=online but no W&B login; run `wandb login` (or set "
                "WANDB_API_KEY), or unset WANDB_MODE to log offline into the run folder"
            )
    return found


def wandb_logged_in() -> bool:
    """A W&B API key in the environment or in ~/.netrc (where `wandb login` saves it) for the configured host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return path.is_file() and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """The user's WANDB_MODE; otherwise online when logged in, offline (files in the run folder) when not."""
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


# ---- during a run ------------------------------------------------------------------------------------------------
INTEGRATIONS = {
    "TensorBoardCallback": "tensorboard",
    "WandbCallback": "wandb",
    "MLflowCallback": "mlflow",
    "TrackioCallback": "trackio",
}
"""transformers' report_to callback class -> tracker; matched by name so this module never imports transformers."""
_own_wandb: list[Any] = []  # W&B runs attach() opened and the end of training has not finished yet
_own_mlflow_uris: set[str] = set()  # file stores attach() pointed MLflow at (they are not the user's URI)


def active_in(callbacks: list[Any]) -> dict[str, Any]:
    """The tracker integration callbacks among a Trainer's callbacks (made from report_to), by tracker name."""
    return {INTEGRATIONS[type(cb).__name__]: cb for cb in callbacks if type(cb).__name__ in INTEGRATIONS}


def attach(trainer: Any, cfg: RunConfig, run_dir: Path) -> None:
    """Point the Trainer's tracker integrations at `run_dir`, name the run after its folder, and record `cfg` when
    training begins. Call after the Trainer is built (it made the callbacks from report_to) and before train()."""
    trackers = active_in(trainer.callback_handler.callbacks)
    if not trackers:
        return
    run_dir = Path(run_dir)
    trainer.args.run_name = run_dir.name  # W&B, MLflow and Trackio name their run after it
    trainer.args.project = PROJECT  # Trackio's project
    if "tensorboard" in trackers:
        # on this callback, not the process-wide TENSORBOARD_LOGGING_DIR that a run in another thread would read too
        trackers["tensorboard"].logging_dir = str(run_dir / TENSORBOARD_DIR)
    if trainer.is_world_process_zero():
        if "mlflow" in trackers:
            _point_mlflow(run_dir)
        if "wandb" in trackers:
            _open_wandb(cfg, run_dir)
    trainer.add_callback(_config_recorder(cfg, trainer.callback_handler))  # last: after the integrations' setup


def _point_mlflow(run_dir: Path) -> None:
    """A file store in run_dir/mlruns unless the user set MLFLOW_TRACKING_URI. MLflowCallback logs through MLflow's
    process-wide tracking URI (its fluent API resolves it at every call), so it cannot be scoped to one thread: two
    runs training at the same time in one process would share the later one's store. A URI set for an earlier run of
    ours (mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI) is not the user's."""
    import mlflow

    user = os.environ.get("MLFLOW_TRACKING_URI")
    if user and user not in _own_mlflow_uris:
        return
    # MLflow 3 refuses a file store unless asked; it is the local store mlflow-skinny writes (sqlite needs SQLAlchemy)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (run_dir / MLFLOW_DIR).absolute().as_uri()
    mlflow.set_tracking_uri(uri)
    _own_mlflow_uris.add(uri)


def _unpoint_mlflow() -> None:
    """Forget the run's file store once MLflowCallback ended its run, so a process started later (a torchrun launch)
    does not inherit it as MLFLOW_TRACKING_URI and take it for the user's."""
    if os.environ.get("MLFLOW_TRACKING_URI") in _own_mlflow_uris:
        import mlflow

        mlflow.set_tracking_uri(None)


def _open_wandb(cfg: RunConfig, run_dir: Path) -> None:
    """Start the W&B run WandbCallback logs into (it uses wandb.run when one exists), with what W&B would otherwise
    read from process-wide env vars: offline files in run_dir/wandb unless the user logged in or set WANDB_MODE,
    WANDB_DIR or WANDB_PROJECT. W&B has one current run per process: runs training at once in one process share it."""
    import wandb

    _finish_wandb()  # a run of ours still open: its training failed before it ended
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT") or PROJECT,
        name=run_dir.name,
        dir=os.environ.get("WANDB_DIR") or str(run_dir),
        mode=wandb_mode(),
        config={CONFIG_TAG: cfg.to_dict()},
    )
    _own_wandb.append(run)


def _finish_wandb() -> None:
    """Finish the W&B runs attach() opened (WandbCallback leaves the run open when training ends)."""
    while _own_wandb:
        _own_wandb.pop().finish()


def _config_recorder(cfg: RunConfig, handler: Any) -> Any:
    """A TrainerCallback that records `cfg` through each tracker when training begins and finishes the W&B run
    attach() opened when it ends; added after the integrations, so their runs and writers exist by then.
    transformers is imported here, not with this module, which the UI imports for tensorboard_url."""
    from transformers import TrainerCallback

    class RecordConfig(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                record_config(active_in(handler.callbacks), cfg)

        def on_train_end(self, args, state, control, **kwargs):
            _finish_wandb()
            _unpoint_mlflow()

    return RecordConfig()


def record_config(trackers: dict[str, Any], cfg: RunConfig) -> None:
    """The full RunConfig through each active tracker's own object: TensorBoard text, an MLflow artifact
    run_config.yaml, the Trackio run's config (W&B got it when attach() opened the run)."""
    if (tb := trackers.get("tensorboard")) is not None and tb.tb_writer is not None:
        tb.tb_writer.add_text(CONFIG_TAG, _code_block(cfg.to_yaml()))
        tb.tb_writer.flush()
    if "mlflow" in trackers:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_dict(cfg.to_dict(), f"{CONFIG_TAG}.yaml")
    if "trackio" in trackers and (run := _trackio_run()) is not None:
        run.config.update({CONFIG_TAG: cfg.to_dict()})


def log_text(trainer: Any, tag: str, text: str, step: int) -> None:
    """`text` (e.g. the sample answers) at `step` through every tracker integration of `trainer`."""
    trackers = active_in(trainer.callback_handler.callbacks)
    if (tb := trackers.get("tensorboard")) is not None and tb.tb_writer is not None:
        tb.tb_writer.add_text(tag, _code_block(text), step)
        tb.tb_writer.flush()
    if "wandb" in trackers:
        import wandb

        if wandb.run is not None:
            wandb.run.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>"), "train/global_step": step})
    if "mlflow" in trackers:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_text(text, f"{tag}/step_{step:06d}.txt")
    if "trackio" in trackers and _trackio_run() is not None:
        import trackio

        trackio.log({tag: trackio.Markdown(_code_block(text))}, step=step)


def samples_text(answers: list[dict]) -> str:
    """Sample answers ({"prompt", "answer"} dicts) as the text trackers show, one question and answer per block."""
    return "\n\n".join(f"Q: {a['prompt']}\nA: {a['answer']}" for a in answers)


def _code_block(text: str) -> str:
    """Markdown code block (4-space indent): TensorBoard and Trackio render text as markdown, which would reflow it."""
    return "    " + text.replace("\n", "\n    ")


def _trackio_run() -> Any:
    """This thread's current Trackio run (a context variable), or None."""
    from trackio import context_vars

    return context_vars.current_run.get()


# ---- TensorBoard server ------------------------------------------------------------------------------------------
_servers: dict[Path, tuple[subprocess.Popen, str]] = {}
_servers_lock = threading.Lock()


def tensorboard_url(logdir: str | Path) -> str:
    """URL of a TensorBoard serving `logdir` (the runs folder) on 127.0.0.1, started on a free port the first time
    and reused after; it is stopped when this process exits. Raises TrackingError saying why it cannot start."""
    logdir = Path(logdir).expanduser().resolve()
    with _servers_lock:
        running = _servers.get(logdir)
        if running is not None and running[0].poll() is None:
            return running[1]
        _servers[logdir] = _start_tensorboard(logdir)
        return _servers[logdir][1]


def _start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    if not installed("tensorboard"):
        raise TrackingError("tensorboard is not installed; it comes with TuneDesk: pip install tensorboard")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"{logdir} cannot hold runs for TensorBoard to show: {exc}") from exc
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    output = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block TensorBoard's logging
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    atexit.register(_stop, proc)
    try:
        _wait_until_serving(proc, url, output)
    except TrackingError:
        _stop(proc)
        raise
    return proc, url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str, output: Any) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy
    deadline = time.monotonic() + SERVER_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrackingError(f"tensorboard exited (code {proc.returncode}) before serving: {_tail(output)}")
        try:
            with opener.open(url, timeout=2):
                return
        except OSError:  # URLError and refused connections: not listening yet
            time.sleep(0.3)
    raise TrackingError(f"tensorboard did not answer at {url} within {SERVER_WAIT_S:.0f} s: {_tail(output)}")


def _tail(output: Any, chars: int = 600) -> str:
    output.seek(0)
    text = output.read().decode("utf-8", "replace").strip()
    return text[-chars:] or "no output"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
