"""The run history (app.history): the event log's schema against what the trainer really writes, the typed reader
against the five ways the log used to be folded (runs list, Train tab, efficiency report, model card, resume) on a
real tiny-model run, a torn last line, and the structure: events.jsonl is opened in one module and "checkpoint-N"
is parsed in one function."""

from __future__ import annotations

import ast
import json
import statistics
from pathlib import Path

import pytest
from test_train_kit import one_torch_thread, tiny_config, write_alpaca  # noqa: F401  (fixture)

from app import history, runs

APP = Path(__file__).resolve().parent.parent / "app"


# ---- writing and reading --------------------------------------------------------------------------------------
def test_events_round_trip_with_offsets_and_a_torn_last_line(tmp_path):
    run_dir = tmp_path
    history.append_event(run_dir, "started", total_steps=10)
    events, offset = history.read_events(run_dir)
    assert [e["type"] for e in events] == ["started"] and events[0]["time"] > 0
    history.append_event(run_dir, "log", step=1, loss=float("nan"))
    with open(run_dir / history.EVENTS, "ab") as fh:
        fh.write(b'{"type": "log", "st')  # a crash in the middle of a line
    new, offset2 = history.read_events(run_dir, offset)
    assert [e["step"] for e in new] == [1] and new[0]["loss"] is None  # NaN written as null
    assert history.read_events(run_dir, offset2) == ([], offset2)  # the torn line is not consumed
    torn = history.read(run_dir)
    assert (torn.phase, torn.outcome, [p.step for p in torn.logs], torn.steps) == ("starting", "open", [1], [])
    history.append_event(run_dir, "log", step=2, loss=1.5)  # after a resume: starts on a fresh line
    new, _ = history.read_events(run_dir, offset2)
    assert [(e["type"], e["step"]) for e in new] == [("log", 2)]
    for line in (run_dir / history.EVENTS).read_text().splitlines()[:2]:
        json.loads(line)
    assert history.read(run_dir).steps == [2] and history.read(run_dir).phase == "running"


def test_an_undeclared_event_type_is_refused():
    with pytest.raises(ValueError, match="unknown event type 'lgo'"):
        history.append_event("/nonexistent", "lgo", step=1)


def test_effective_events_and_the_history_drop_steps_a_resume_redid():
    events = [
        {"type": "started", "time": 1.0, "total_steps": 10},
        *({"type": "log", "time": 2.0, "step": s, "loss": 1.0} for s in range(1, 10)),
        {"type": "checkpoint", "time": 2.0, "step": 5},
        {"type": "failed", "time": 3.0, "step": 9, "message": "killed"},
        {"type": "resumed", "time": 4.0, "from_step": 5, "total_steps": 10},
        *({"type": "log", "time": 5.0, "step": s, "loss": 0.5} for s in range(6, 11)),
        {"type": "finished", "time": 6.0, "step": 10},
    ]
    steps = [e["step"] for e in history.effective_events(events) if e["type"] == "log"]
    assert steps == list(range(1, 11))
    found = history.RunHistory()
    found.fold(events)
    assert found.steps == list(range(1, 11)) and found.step == 10 and found.phase == found.outcome == "finished"
    assert [(e.kind, e.superseded) for e in found.endings] == [("failed", True), ("finished", False)]
    at5 = found.until(5)
    assert at5.steps == [1, 2, 3, 4, 5] and at5.endings == [] and at5.checkpoint_steps == [5]


def test_generation_scores_best_step_and_early_stopping_are_read_from_the_events():
    reason = "early stopping: eval loss did not improve for 2 evaluations in a row; best 1.2 at step 4 of 20"
    events = [
        {"type": "started", "time": 1.0, "total_steps": 20},
        {"type": "eval", "time": 2.0, "step": 2, "eval_loss": 1.5, "eval_rougeL": 10.0, "eval_exact_match": 0.0},
        {"type": "eval", "time": 3.0, "step": 4, "eval_loss": 1.2},  # eval_generations 0: no scores
        {"type": "eval", "time": 4.0, "step": 6, "eval_loss": 1.3, "eval_rougeL": 30.0, "eval_exact_match": 25.0},
        {"type": "eval", "time": 5.0, "step": 8, "eval_loss": 1.2, "eval_rougeL": 35.0, "eval_exact_match": 25.0},
        {"type": "finished", "time": 6.0, "step": 8, "best_step": 4, "best_eval_loss": 1.2, "artifact_step": 4,
         "stop_reason": reason},
    ]  # fmt: skip
    found = history.RunHistory()
    found.fold(events)
    assert found.eval_series("rougeL") == ([2, 6, 8], [10.0, 30.0, 35.0])
    assert found.eval_series("exact_match") == ([2, 6, 8], [0.0, 25.0, 25.0])
    assert found.best_step == 4 and found.best_eval_loss == 1.2  # the earliest of equal losses
    assert (found.ending.best_step, found.ending.artifact_step, found.ending.best_eval_loss) == (4, 4, 1.2)
    assert found.stop_reason == reason and found.ending.stop_reason == reason
    with pytest.raises(ValueError, match="not a generation score"):
        found.eval_series("eval_loss")
    found.fold([{"type": "resumed", "time": 7.0, "from_step": 2, "total_steps": 20}])
    assert found.best_step == 2 and found.eval_series("rougeL") == ([2], [10.0]) and found.stop_reason is None


def test_checkpoint_names_are_parsed_in_one_place(tmp_path):
    assert history.checkpoint_step("runs/x/checkpoints/checkpoint-40") == 40
    assert history.checkpoint_step(Path("checkpoint-7")) == 7
    for name in ("adapter", "checkpoint-", "checkpoint-abc", "checkpoint-3-old", "my-checkpoint-3"):
        assert history.checkpoint_step(name) is None, name
    assert history.checkpoint_step(history.checkpoint_name(12)) == 12
    for step in (10, 2, 30):
        (tmp_path / "checkpoints" / history.checkpoint_name(step)).mkdir(parents=True)
    (tmp_path / "checkpoints" / ".partial").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-9.txt").write_text("")
    assert [history.checkpoint_step(p) for p in history.checkpoint_folders(tmp_path / "checkpoints")] == [2, 10, 30]
    (tmp_path / "checkpoints" / "checkpoint-10" / "trainer_state.json").write_text("{}")
    assert history.checkpoints(tmp_path) == [tmp_path / "checkpoints" / "checkpoint-10"]  # complete ones only


# ---- the old readers, as they were (1a9fcbc), to compare against -------------------------------------------------
def _old_summary(events: list[dict]) -> dict:
    eff = history.effective_events(events)
    logs = [e for e in eff if e["type"] == "log"]
    evals = [e["eval_loss"] for e in eff if e["type"] == "eval" and e.get("eval_loss") is not None]
    starts = [e for e in eff if e["type"] in history.SESSION_START]
    return {
        "step": max([e.get("step") or 0 for e in eff if e["type"] in ("log", "checkpoint", *history.TERMINAL)] or [0]),
        "total_steps": starts[-1].get("total_steps") if starts else None,
        "best_eval_loss": min(evals) if evals else None,
        "last_loss": logs[-1].get("loss") if logs else None,
        "started": starts[0]["time"] if starts else None,
    }


def _old_view(events: list[dict]) -> dict:
    """ui/train_tab.fold as it was: chart points, last progress numbers, status, message, artifact."""
    v = {"steps": [], "losses": [], "lrs": [], "eval_steps": [], "eval_losses": [], "samples": [], "last": {}}
    v.update(status="idle", message="", artifact="")
    for ev in events:
        kind = ev.get("type")
        if kind == "log" and ev.get("loss") is not None:
            v["steps"].append(int(ev["step"]))
            v["losses"].append(float(ev["loss"]))
            v["lrs"].append(float(ev.get("learning_rate") or 0.0))
            v["last"], v["status"] = ev, "running"
        elif kind == "eval" and ev.get("eval_loss") is not None:
            v["eval_steps"].append(int(ev.get("step", 0)))
            v["eval_losses"].append(float(ev["eval_loss"]))
        elif kind == "sample":
            v["samples"] += [(int(ev.get("step", 0)), s.get("prompt", ""), s.get("answer", "")) for s in ev["samples"]]
        elif kind == "started":
            v["status"] = "running" if v["steps"] else "starting"
            v["last"] = {**v["last"], **{k: x for k, x in ev.items() if k in ("total_steps", "step")}}
        elif kind == "resumed":
            step = int(ev.get("from_step") or 0)
            keep = [i for i, s in enumerate(v["steps"]) if s <= step]
            for key in ("steps", "losses", "lrs"):
                v[key] = [v[key][i] for i in keep]
            keep = [i for i, s in enumerate(v["eval_steps"]) if s <= step]
            for key in ("eval_steps", "eval_losses"):
                v[key] = [v[key][i] for i in keep]
            v["status"] = "running"
        elif kind in history.TERMINAL:
            v["status"], v["message"] = kind, str(ev.get("message") or "")
            v["artifact"] = str(ev.get("adapter") or ev.get("path") or ev.get("model") or "")
    last = v.pop("last")
    v["progress"] = tuple(last.get(k) for k in ("step", "total_steps", "elapsed_s", "eta_s", "tokens_per_s"))
    return v


def _new_view(found: history.RunHistory, status: str) -> dict:
    p, end = found.progress, found.ending
    return {
        "steps": found.steps,
        "losses": found.losses,
        "lrs": found.lrs,
        "eval_steps": found.eval_steps,
        "eval_losses": found.eval_losses,
        "samples": [tuple(s) for s in found.samples],
        "status": status,
        "message": str(end.message or "") if end else "",
        "artifact": str(end.artifact or "") if end else "",
        "progress": (p.step, p.total_steps, p.elapsed_s, p.eta_s, p.tokens_per_s),
    }


def _old_efficiency(events: list[dict]) -> dict:
    """evaluate.efficiency_report as it was, on the keys that come from the events."""
    starts = [e for e in events if e["type"] in history.SESSION_START]
    ends = [e for e in events if e["type"] in history.TERMINAL]
    logs = [e for e in history.effective_events(events) if e["type"] == "log"]
    first = starts[0] if starts else {}
    train_s = [e["train_s"] for e in ends if isinstance(e.get("train_s"), (int, float))]
    rates = [e["tokens_per_s"] for e in logs if isinstance(e.get("tokens_per_s"), (int, float))]
    rss = [e["peak_rss_mb"] for e in ends if isinstance(e.get("peak_rss_mb"), (int, float))]
    memory = first.get("memory") if isinstance(first.get("memory"), dict) else {}
    return {
        "method": first.get("method"),
        "device": first.get("device"),
        "model_path": first.get("model"),
        "steps": ends[-1].get("step") if ends else None,
        "training_s": round(sum(train_s), 2) if train_s else None,
        "wall_s": round(ends[-1]["time"] - starts[0]["time"], 2) if starts and ends else None,
        "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "label_tokens_per_s": ends[-1].get("label_tokens_per_s") if ends else None,
        "peak_rss_bytes": int(max(rss) * 2**20) if rss else None,
        "trainable_params": first.get("trainable_params"),
        "total_params": first.get("total_params"),
        # total_gib is what the trainer writes (MemoryEstimate.to_json); the old reader asked for total_bytes first
        "estimated_memory_bytes": int(memory["total_gib"] * 2**30) if memory.get("total_gib") else None,
    }


def _old_card(events: list[dict], limit: int | None) -> dict:
    info: dict = {}
    for event in history.effective_events(events):
        step = event.get("step")
        if limit is not None and isinstance(step, int) and step > limit:
            continue
        kind = event.get("type")
        if kind == "log" and event.get("loss") is not None:
            info["train_loss"], info["steps"] = event["loss"], event.get("step", info.get("steps"))
        elif kind == "eval" and event.get("eval_loss") is not None:
            info["eval_loss"] = event["eval_loss"]
        elif kind in history.TERMINAL:
            info["status"] = kind
            if isinstance(event.get("step"), int) and event["step"] > 0:
                info["steps"] = event["step"]
    return info


def _old_resume_elapsed(events: list[dict], step: int) -> float:
    eff = history.effective_events(events)
    elapsed = [e.get("elapsed_s") or 0 for e in eff if e["type"] == "log" and (e.get("step") or 0) <= step]
    return elapsed[-1] if elapsed else 0.0


def _same_facts(run_dir: Path) -> None:
    """history.read(run_dir) and each caller's use of it give what the old readers gave on the same file."""
    from app import export, train
    from app.efficiency import efficiency_report

    events = history.load_events(run_dir)
    found = history.read(run_dir)
    new_summary = runs.summarize(run_dir)
    assert {k: getattr(new_summary, k) for k in _old_summary(events)} == _old_summary(events)
    assert _new_view(found, found.phase) == _old_view(events)
    old, report = _old_efficiency(events), efficiency_report(run_dir)
    assert {k: report[k] for k in old} == old
    for limit in (None, *(history.checkpoint_step(p) for p in found.checkpoints)):
        card = {k: v for k, v in export._run_facts(found if limit is None else found.until(limit)).items()}
        assert card == _old_card(events, limit), limit
    ckpt, facts = train.resume_point(run_dir)
    step = history.checkpoint_step(ckpt) if ckpt else 0
    assert facts["from_step"] == step and facts["elapsed_before"] == _old_resume_elapsed(events, step)


# ---- a real run of the tiny trainer ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(tiny_model_dir, tmp_path_factory) -> Path:
    """4 LoRA steps on the tiny model: logs every step, eval and checkpoint every 2, one sample at step 4."""
    import torch

    from app import train

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("history-run")
    data = write_alpaca(folder / "data.json")
    cfg = tiny_config(
        tiny_model_dir,
        data,
        **{
            "train.max_steps": 4,
            "train.eval_steps": 2,
            "train.save_steps": 2,
            "train.sample_every": 4,
            "train.sample_prompts": ["Who are you?"],
            "train.output_dir": str(folder / "runs"),
        },
    )
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "finished", history.load_events(run_dir)[-1]
    return run_dir


def test_the_trainer_writes_only_what_the_schema_declares(real_run):
    events = history.load_events(real_run)
    kinds = {e["type"] for e in events}
    assert {"started", "log", "eval", "checkpoint", "sample", "finished"} <= kinds
    for event in events:
        extra = set(event) - {"type", "time"} - set(history.EVENT_FIELDS[event["type"]])
        assert not extra, f"{event['type']} carries undeclared {sorted(extra)}: add them to EVENT_FIELDS"
    started = next(e for e in events if e["type"] == "started")
    assert isinstance(started["memory"], dict) and started["memory"]["total_gib"] > 0  # what the estimate reads


def test_the_history_of_a_real_run_gives_the_old_readers_facts(real_run):
    found = history.read(real_run)
    assert found.steps == [1, 2, 3, 4] and found.eval_steps == [2, 4] and found.checkpoint_steps == [2, 4]
    assert [history.checkpoint_step(p) for p in found.checkpoints] == [2, 4]
    assert found.phase == "finished" and found.ending.artifact == str(real_run / runs.ADAPTER)
    assert found.sessions[0].estimated_memory_bytes > 0 and found.ending.peak_rss_mb > 0
    assert runs.run_status(real_run) == "finished"
    _same_facts(real_run)


def test_a_resumed_and_a_torn_copy_of_the_real_run_read_as_the_old_readers_did(real_run, tmp_path):
    """The real events as a run killed after step 3 (its last checkpoint at 2) would leave them, then resumed
    from step 2 and finished; and the same file with a half-written last line."""
    events = history.load_events(real_run)
    before = [e for e in events if e["type"] not in history.TERMINAL and (e.get("step") or 0) <= 3]
    start = next(e for e in events if e["type"] == "started")
    resumed = {**start, "type": "resumed", "from_step": 2, "checkpoint": "checkpoints/checkpoint-2"}
    after = [e for e in events if e["type"] != "started" and (e.get("step") or 0) > 2]
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    (resumed_dir / history.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in [*before, resumed, *after]))
    for step in (2, 4):
        (resumed_dir / "checkpoints" / history.checkpoint_name(step)).mkdir()
        (resumed_dir / "checkpoints" / history.checkpoint_name(step) / "trainer_state.json").write_text("{}")
    found = history.read(resumed_dir)
    assert found.steps == [1, 2, 3, 4] and len(found.sessions) == 2 and found.phase == "finished"
    _same_facts(resumed_dir)

    torn = tmp_path / "torn"
    torn.mkdir()
    text = (real_run / history.EVENTS).read_text()
    (torn / history.EVENTS).write_text(text + text.splitlines()[-1][:25])  # a crash mid-line after the end
    assert history.load_events(torn) == events
    _same_facts(torn)


# ---- structure: one module reads the log, one function parses checkpoint names ------------------------------------
def _sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(APP.parent)): ast.parse(p.read_text(encoding="utf-8")) for p in APP.rglob("*.py")}


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes (module, class, function, and attribute docstrings after an assignment)."""
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for stmt in body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    out.add(id(stmt.value))
    return out


def _where(tree: ast.Module, target: ast.AST) -> str:
    """The name of the function (or <module>) that holds `target`."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(n is target for n in ast.walk(node)):
            inner = _where(ast.Module(body=node.body, type_ignores=[]), target)
            return node.name if inner == "<module>" else inner
    return "<module>"


def test_events_jsonl_is_opened_in_one_module_and_folded_by_the_history():
    raw = {"load_events", "effective_events", "read_events", "EVENTS", "_write_lock"}
    names, users = set(), {}
    for path, tree in _sources().items():
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value == "events.jsonl" and id(node) not in docs:
                names.add(path)
            used = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if used in raw:
                users.setdefault(path, set()).add(used)
    assert names == {"app/history.py"}, f"the file name is written outside app/history.py: {names}"
    users.pop("app/history.py")
    users.pop("app/runs.py", None)  # re-exports them for the trainer, the jobs and the tests; folds nothing
    runs_src = (APP / "runs.py").read_text(encoding="utf-8")
    assert "load_events(" not in runs_src and "effective_events(" not in runs_src and "EVENTS" not in runs_src
    # The Train tab's timer reads what is new since its byte offset and hands it to RunHistory.fold.
    assert users == {"app/ui/train_tab.py": {"read_events"}}, users


def test_checkpoint_names_are_made_and_parsed_only_in_app_history():
    found = []
    for path, tree in _sources().items():
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                text = node.value
                at = text.find("checkpoint-")
                if at >= 0 and (text[at + 11 : at + 12] in ("", "*", "(", "[", "\\", "{") or text.endswith("-")):
                    found.append((path, _where(tree, node), text))
    places = {(path, where) for path, where, _ in found}
    allowed = {("app/history.py", "checkpoint_name"), ("app/history.py", "<module>")}  # <module>: the one regex
    assert places <= allowed, f"checkpoint-N names handled outside app.history: {found}"
    regex = [text for path, where, text in found if where == "<module>"]
    assert regex == [history._CHECKPOINT.pattern], "one pattern, used by checkpoint_step alone"
    src = (APP / "history.py").read_text(encoding="utf-8")
    assert src.count("_CHECKPOINT.") == 1 and "_CHECKPOINT.fullmatch" in src.split("def checkpoint_step")[1][:400]
