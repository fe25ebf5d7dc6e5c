"""Helpers for the app-level reliability tests (test_reliability_crash.py, test_soak.py): a real `python -m app ui`
on the tiny model, its named endpoints called through gradio_client with what a fresh page would send, and a run's
events read from disk. Imported as `from test_reliability_kit import ...`; holds no tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import history, runs

FAST_TRAINING = {
    "f-train-batch_size": 2,
    "f-train-grad_accum": 1,
    "f-data-max_seq_len": 128,
    "f-train-eval_steps": 1000,  # eval once, at the end
    "f-train-gradient_checkpointing": False,
}
"""Form values (by elem_id) that make a tiny-model step on the sample data ~0.1 s on one thread."""


def app_env(runs_dir: Path) -> dict[str, str]:
    """The app's runs in `runs_dir`; one torch thread (the machine is shared; see test_train_kit.one_torch_thread)."""
    return {"TUNEDESK_RUNS": str(runs_dir), "OMP_NUM_THREADS": "1"}


def page_inputs(client: Any, api_name: str, **by_elem_id: Any) -> list[Any]:
    """The values a fresh page sends to `api_name`, in the endpoint's input order: each component's initial value,
    or the override named by its elem_id. State inputs are left out (the client adds them). Raises KeyError for an
    override no input of the endpoint has (a renamed widget must fail the test, not be ignored)."""
    config = client.config
    dep = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
    components = {c["id"]: c for c in config["components"]}
    values, unused = [], dict(by_elem_id)
    for cid in dep["inputs"]:
        comp = components[cid]
        if comp.get("type") == "state":
            continue
        props = comp.get("props", {})
        elem_id = props.get("elem_id")
        values.append(unused.pop(elem_id) if elem_id in unused else props.get("value"))
    if unused:
        raise KeyError(f"{api_name} has no input with elem_id {', '.join(unused)}")
    return values


def start_training(client: Any, max_steps: int, **by_elem_id: Any) -> Any:
    """Start with the fast settings and `max_steps`, through Start anyway: max_seq_len 128 cuts the answers of the
    sample's longest records on the tiny tokenizer, which the "will it learn?" check rightly points out, and these
    tests train anyway. Returns the job (call .result() for the outputs)."""
    fields = {**FAST_TRAINING, "f-train-max_steps": max_steps, **by_elem_id}
    return client.submit(*page_inputs(client, "start_anyway", **fields), api_name="/start_anyway")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def only_run(runs_dir: Path) -> Path | None:
    found = [p for p in runs_dir.iterdir() if runs.is_run_dir(p)] if runs_dir.is_dir() else []
    assert len(found) <= 1, f"expected one run folder, found {[p.name for p in found]}"
    return found[0] if found else None


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    return [e for e in history.load_events(run_dir) if kind is None or e["type"] == kind]


def ended(run_dir: Path) -> dict | None:
    """The run's terminal event once it has one."""
    last = [e for e in history.load_events(run_dir) if e["type"] in history.TERMINAL]
    return last[-1] if last else None


def table_rows(value: Any) -> list[dict]:
    """A Dataframe output as gradio_client returns it ({headers, data}) -> list of row dicts."""
    return [dict(zip(value["headers"], row, strict=False)) for row in value["data"]]
