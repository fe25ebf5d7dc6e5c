"""Background training jobs: Start returns at once, training runs in a thread of the app, one job per device.

The UI never waits on a job: it polls runs/<id>/events.jsonl with a timer (see app.runs), which also works after
a page refresh or an app restart. Each job claims its device in app.devices, which chat, evaluate and export ask
(`devices.holder(device)`) before loading a model.

    run_dir = manager.start(config)      # raises JobBusy while this device trains
    manager.stop()                       # cooperative: takes effect after the current optimizer step
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from app import devices, history, runs
from app.config import ConfigError, RunConfig


def preflight(config: RunConfig) -> list[str]:
    """app.train.preflight's problems: everything that makes `config` impossible, found without loading anything.
    The trainer (torch, transformers) is imported here, when a run is about to start, so the UI can import this
    module."""
    from app import train

    return train.preflight(config)


class JobBusy(RuntimeError):
    """A training job already owns the device; the message names the run and says what to do."""


@dataclass
class Job:
    run_dir: Path
    device: str
    thread: threading.Thread
    started: float
    stop_event: threading.Event = field(default_factory=threading.Event)
    status: str | None = None
    """finished | stopped | failed once the thread ended; None while it runs."""

    def alive(self) -> bool:
        return self.thread.is_alive()


class JobManager:
    """Owns the training threads of this process. Check-and-start is atomic under one lock, so two quick
    clicks on Start make one run and one JobBusy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._last: Job | None = None

    def start(self, config: RunConfig, resume_dir: Path | None = None) -> Path:
        """Create the run folder (or reuse `resume_dir`, whose saved config.yaml is used) and start training in
        a background thread; returns the run folder at once.

        Raises JobBusy when a job trains on the same device, or the run to resume is training elsewhere (its OS
        lock, runs.claim) or finished, and ConfigError (every problem listed) when the config cannot run; neither
        creates a folder nor writes into the run.
        """
        resume_dir = Path(resume_dir) if resume_dir is not None else None
        if resume_dir is not None:
            config = runs.load_config(resume_dir)
        problems = preflight(config)
        if problems:
            raise ConfigError(problems)
        device = _resolve(config.train.device)
        with self._lock:
            self._refuse_if_busy(device)
            run_dir = resume_dir or runs.create_run(config)
            try:  # the run's OS lock, taken before its thread starts and held until train.run returns
                claim = runs.claim(run_dir, resume=resume_dir is not None)
            except runs.RunBusy as exc:
                raise JobBusy(str(exc)) from None
            job = Job(run_dir, device, threading.Thread(), time.time())
            try:
                devices.claim(device, run_dir.name, alive=lambda: job.status is None)  # None until train.run returns
            except devices.DeviceBusy as exc:  # a job of another manager (tests make their own)
                claim.release()
                raise JobBusy(_busy_message(exc.holder)) from None
            job.thread = threading.Thread(
                target=self._work,
                args=(job, config, resume_dir is not None, claim),
                name=f"tunedesk-train-{run_dir.name}",
                daemon=True,
            )
            self._jobs[device] = job
            self._last = job
            job.thread.start()
        return run_dir

    def _refuse_if_busy(self, device: str) -> None:
        holder = devices.holder(device)
        if holder is not None:
            raise JobBusy(_busy_message(holder))

    def _work(self, job: Job, config: RunConfig, resume: bool, claim: runs.Claim) -> None:
        try:
            from app import train

            job.status = train.run(config, job.run_dir, job.stop_event, resume=resume, claim=claim)
        except BaseException as exc:  # train.run never raises for training errors; this is the last safety net
            job.status = "failed"
            with open(job.run_dir / runs.ERROR_LOG, "a", encoding="utf-8") as fh:
                fh.write(traceback.format_exc())
            history.append_event(job.run_dir, "failed", message=f"{type(exc).__name__}: {exc} (see error.log)")

    def stop(self) -> bool:
        """Ask every running job to stop after its current optimizer step; False when none runs."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.alive()]
        for job in running:
            job.stop_event.set()
        return bool(running)

    def active(self) -> Job | None:
        """The most recently started job that is still running."""
        with self._lock:
            alive = [job for job in self._jobs.values() if job.alive()]
        return max(alive, key=lambda job: job.started) if alive else None

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait for the last started job; its final status, or None if it still runs after `timeout` seconds."""
        job = self._last
        if job is None:
            return None
        job.thread.join(timeout)
        return None if job.alive() else job.status


def _resolve(device: str) -> str:
    try:
        return devices.resolve(device)
    except devices.DeviceError as exc:
        raise ConfigError([f"train.device: {exc}"]) from None


def _busy_message(holder: devices.Holder) -> str:
    return (
        f"run {holder.run} is already training on {holder.device}; stop it or wait for it to finish before "
        "starting another"
    )


manager = JobManager()
