"""Train tab: folding events into the page's view, and a real 3-step run on the tiny model driven through the tab's
handler functions (Start, the timer tick, the run list, Open, Delete with its confirm step)."""

from __future__ import annotations

import re
import time

import plotly.graph_objects as go
import pytest
from test_train_kit import tiny_config, write_alpaca
from ui_ctx import only_outputs

from app import jobs, runs
from app.config import RunConfig
from app.ui import app as ui_app
from app.ui import plots, train_tab
from app.ui.train_tab import RunView, fold


def _log(step, loss, lr=1e-3, **extra):
    return {"type": "log", "time": 1.0, "step": step, "total_steps": 10, "loss": loss, "learning_rate": lr, **extra}


def test_fold_collects_points_samples_and_the_final_status():
    view = RunView(run_dir="/tmp/r")
    events = [
        {"type": "started", "time": 1.0, "total_steps": 10},
        _log(1, 2.0),
        _log(2, 1.5, tokens_per_s=900.0, elapsed_s=3.0, eta_s=12.0),
        {"type": "eval", "time": 2.0, "step": 2, "eval_loss": 1.7},
        {"type": "sample", "time": 2.0, "step": 2, "samples": [{"prompt": "Hi?", "answer": "Hello."}]},
        {"type": "finished", "time": 3.0, "step": 2, "adapter": "/tmp/r/adapter"},
    ]
    fold(view, events)
    facts = view.facts  # app.history's typed reading, the one every reader of events.jsonl uses
    assert (facts.steps, facts.losses, facts.eval_steps, facts.eval_losses) == ([1, 2], [2.0, 1.5], [2], [1.7])
    assert facts.samples == [(2, "Hi?", "Hello.")]
    assert view.status == "finished" and view.artifact == "/tmp/r/adapter"
    assert (facts.progress.step, facts.progress.tokens_per_s, facts.progress.eta_s) == (2, 900.0, 12.0)
    assert len(view.log) == len(events) and "loss 1.5000" in train_tab.event_line(view.log[2])


def test_the_log_shows_the_newest_event_first_in_the_page_language():
    view = RunView(run_dir="/tmp/r")
    fold(view, [{"type": "started", "time": 1.0, "total_steps": 10}, _log(1, 2.0), _log(2, 1.5, tokens_per_s=900.0)])
    lines = train_tab.event_line(view.log[-1], "en"), train_tab.event_line(view.log[-1], "zh")
    assert "log" in lines[0] and "step 2/10" in lines[0] and "loss 1.5000" in lines[0] and "900 tok/s" in lines[0]
    assert "日志" in lines[1] and "步 2/10" in lines[1] and "损失 1.5000" in lines[1] and "900 tokens/秒" in lines[1]
    assert "loss" not in lines[1] and "step" not in lines[1]
    assert (
        train_tab.state_word("running", "zh") == "训练中"
        and train_tab.state_word("interrupted", "en") == "interrupted"
    )


def test_resumed_event_drops_the_steps_the_resumed_session_logs_again():
    view = RunView(run_dir="/tmp/r")
    fold(view, [_log(s, 3.0 - s / 10) for s in range(1, 8)] + [{"type": "eval", "time": 1, "step": 6, "eval_loss": 2}])
    fold(view, [{"type": "resumed", "time": 2.0, "from_step": 5, "total_steps": 10}, _log(6, 0.5)])
    assert view.facts.steps == [1, 2, 3, 4, 5, 6] and view.facts.losses[-1] == 0.5
    assert view.facts.eval_steps == []


def test_failed_event_shows_its_message():
    view = RunView(run_dir="/tmp/20250101-lora-x")
    fold(view, [{"type": "failed", "time": 1.0, "message": "CUDA out of memory: lower train.batch_size"}])
    line = train_tab.status_line(view, "en")
    assert "failed" in line and "lower Micro-batch size" in line  # the label on screen, not the config key
    assert "失败" in train_tab.status_line(view, "zh")  # the language switch re-renders the status, keeping it


def test_progress_and_ema_helpers():
    html = plots.progress_html(5, 10, 65.0, 65.0, 1234.0, "running")
    assert "width:50.0%" in html and "1:05" in html and "1,234" in html
    smooth = plots.ema([4.0, 2.0, 2.0, 2.0], 0.5)
    assert smooth[0] == 4.0 and smooth[-1] < smooth[1] < 4.0


# ---- a real run through the handlers ------------------------------------------------------------------------------
@pytest.fixture()
def train_app(tiny_model_dir, runs_tmp, tmp_path):
    data = write_alpaca(tmp_path / "alpaca.json", n=16)
    cfg = tiny_config(tiny_model_dir, data, "lora", **{"train.save_steps": 0, "train.eval_steps": 2})
    demo, ctx = ui_app.build_blocks("en", defaults=cfg)
    yield ctx, cfg
    jobs.manager.stop()
    jobs.manager.wait(60)


def _values(ctx, view=None, extra=None):
    """{component: value} as Gradio passes a set of inputs: the form at its defaults, plus `extra`."""
    h = ctx.handles["train"]
    values = {c: c.value for c in ctx.form.inputs()}
    values.update({ctx.lang_selector: "en", h.view: view or RunView(), h.ticks: 0, h.run_pick: None})
    values.update(extra or {})
    return values


def _follow(ctx, view, timeout=180.0):
    """Tick like the 1 s timer until the run ends; returns (last full render, view)."""
    h = ctx.handles["train"]
    rendered, ticks = {}, 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticks += 1
        out = train_tab.tick(ctx, _values(ctx, view, {h.ticks: ticks}))
        view = out[h.view]
        if h.plot in out:
            rendered = out
        if view.status in ("finished", "stopped", "failed", "interrupted"):
            return rendered, view
        time.sleep(0.5)
    raise AssertionError(f"run did not end within {timeout} s; last status {view.status}")


@pytest.mark.slow
def test_start_train_follow_open_and_delete_on_the_tiny_model(train_app):
    ctx, cfg = train_app
    h = ctx.handles["train"]
    started = train_tab.start_run(ctx, _values(ctx), confirmed=True)  # 3 steps on purpose: Start anyway
    view = started[h.view]
    assert view.run_dir and ("Training" in started[h.status] or "Starting" in started[h.status])

    with pytest.warns(UserWarning, match="already"):  # gr.Warning outside a request is a Python warning
        again = train_tab.start_run(ctx, _values(ctx))  # a second Start while the first trains is refused
    assert h.view not in again and "already" in again[h.status]

    rendered, view = _follow(ctx, view)
    assert view.status == "finished", view.message
    assert view.facts.steps == [1, 2, 3] and len(view.facts.eval_steps) >= 1
    figure = rendered[h.plot]
    assert isinstance(figure, go.Figure) and list(figure.data[0].y) == view.facts.losses
    assert "Finished" in rendered[h.status] and "adapter" in rendered[h.status]
    scored = [t for t in figure.data if t.name == "eval ROUGE-L"]  # each evaluation's scored answers, plotted
    assert scored and list(scored[0].x) == view.facts.eval_series("rougeL")[0]
    # did it learn? the base and tuned answers side by side once the run has ended
    assert rendered[h.learned_box]["visible"] is True and rendered[h.learned_text]
    shown = rendered[h.learned]
    assert len(shown) == cfg.train.learn_check and list(shown.columns)[3:5] == ["base answer", "tuned answer"]

    table, ids = train_tab.run_table("en")
    assert ids == [view.name] and table.iloc[0]["status"] == "finished" and table.iloc[0]["steps"] == "3/3"
    assert table.iloc[0]["best step"] == str(view.facts.best_step)

    reloaded = train_tab.attach(ctx, _values(ctx))  # a page refresh (fresh session state) redraws the history
    assert reloaded[h.view].run_dir == view.run_dir and reloaded[h.view].facts.steps == [1, 2, 3]
    assert isinstance(reloaded[h.plot], go.Figure) and "Finished" in reloaded[h.status]

    opened = train_tab.open_run(ctx, _values(ctx, extra={h.run_pick: view.name}))
    assert opened[h.view].facts.steps == [1, 2, 3]
    batch = ctx.form.components["train.batch_size"]
    assert opened[batch]["value"] == cfg.train.batch_size == 2 and "python -m app train" in opened[h.commands]

    asked = train_tab.ask_delete(ctx, _values(ctx, extra={h.run_pick: view.name}))
    assert asked[h.confirm_box]["visible"] is True and view.name in asked[h.confirm_text]
    assert runs.list_runs()  # asking deletes nothing
    deleted = train_tab.delete_run(ctx, _values(ctx, view, {h.run_pick: view.name}))
    assert runs.list_runs() == [] and deleted[h.view].run_dir is None


@pytest.mark.slow
def test_stop_shows_stopping_then_stopped_and_resume_finishes_the_run(train_app):
    ctx, _ = train_app
    h = ctx.handles["train"]
    f = ctx.form.components
    # 16 steps (0.1-2 s each on 2 shared cores), eval only at the end: time to stop part-way, short to resume.
    view = train_tab.start_run(ctx, _values(ctx, extra={f["train.max_steps"]: 16, f["train.eval_steps"]: 1000}))[
        h.view
    ]
    deadline = time.monotonic() + 120
    while not view.facts.steps and view.status not in ("failed", "finished") and time.monotonic() < deadline:
        time.sleep(0.1)
        view = train_tab.tick(ctx, _values(ctx, view))[h.view]
    stopping = train_tab.stop_run(ctx, _values(ctx, view))
    assert "Stopping" in stopping[h.status]
    rendered, view = _follow(ctx, stopping[h.view])
    assert view.status == "stopped" and "Stopped" in rendered[h.status], view.message
    stopped_at = view.facts.steps[-1]
    assert 0 < stopped_at < 16

    resumed = train_tab.resume_run(ctx, _values(ctx, extra={h.run_pick: view.name}))
    assert "Resuming" in resumed[h.status]
    _, view = _follow(ctx, resumed[h.view])
    assert view.status == "finished" and view.facts.steps[-1] == 16
    assert view.facts.steps == sorted(set(view.facts.steps)), "a resumed run must draw one continuous curve"


def test_start_lists_every_problem_of_the_form(train_app):
    ctx, _ = train_app
    h = ctx.handles["train"]
    f = ctx.form.components
    values = _values(ctx, extra={f["train.learning_rate"]: 0.0, f["data.max_seq_len"]: 8, f["train.batch_size"]: 0})
    out = train_tab.start_run(ctx, values)
    for key, label in (
        ("train.learning_rate", "Learning rate"),
        ("data.max_seq_len", "Max sequence length"),
        ("train.batch_size", "Micro-batch size"),
    ):  # each problem names the label on screen, never the config key
        assert f"- {label}:" in out[h.status] and key not in out[h.status]
    assert runs.list_runs() == [] and jobs.manager.active() is None


def test_start_names_the_quantization_label_when_qlora_lacks_bits(train_app):
    ctx, _ = train_app
    h = ctx.handles["train"]
    f = ctx.form.components
    out = train_tab.start_run(ctx, _values(ctx, extra={f["method"]: "qlora", ctx.lang_selector: "zh"}))
    assert "量化位数" in out[h.status] and "quant.bits" not in out[h.status] and "无法开始" in out[h.status]


def test_stop_without_a_run_says_so(train_app):
    ctx, _ = train_app
    out = train_tab.stop_run(ctx, _values(ctx))
    assert "No run is active" in out[ctx.handles["train"].status]


def test_save_config_writes_the_form_and_shows_the_headless_commands(train_app, tmp_path, monkeypatch):
    ctx, cfg = train_app
    h = ctx.handles["train"]
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    out = train_tab.save_config(ctx, _values(ctx, extra={ctx.form.components["train.run_name"]: "my run"}))
    path = tmp_path / "home" / "configs" / "my-run.yaml"
    assert "Saved" in out[h.status] and path.is_file()
    assert RunConfig.from_yaml(path) == cfg.replace(**{"train.run_name": "my run"})
    lines = out[h.commands].splitlines()
    assert f"python -m app train {path}" in lines
    # as printed, from a fresh shell: the first command puts this environment's python on the PATH
    activate = train_tab.activate_line()
    assert lines[1] == activate
    import subprocess
    import sys

    shell = subprocess.run(
        ["bash", "-c", f"{activate} && python -c 'import sys, app; print(sys.prefix)'"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0 and shell.stdout.strip() == sys.prefix, shell.stderr
    assert any(line.startswith("accelerate launch --multi_gpu --num_processes 2 -m app train") for line in lines)
    assert any(line.startswith("torchrun --standalone --nproc_per_node 2 -m app train") for line in lines)


# ---- the tab's handlers with exactly the inputs the UI wires (one app for all: a build takes 10-20 s) ------------
@pytest.fixture(scope="module")
def app_ctx():
    return ui_app.build_blocks("en")[1]


@pytest.fixture()
def small_ram(monkeypatch):
    """This machine judged as a 16 GiB CPU, so a verdict does not depend on the RAM of the machine running tests."""
    _judge_ram(monkeypatch, 16)


@pytest.fixture()
def two_gib_ram(monkeypatch):
    """This machine judged as a 2 GiB CPU: TOO_BIG does not fit it, and fits with gradient checkpointing."""
    _judge_ram(monkeypatch, 2)


def _judge_ram(monkeypatch, gib: int) -> None:
    from app import estimate

    target = estimate.Target("cpu", gib * 2**30, "CPU RAM")
    monkeypatch.setattr(estimate.Target, "of", classmethod(lambda cls, device="auto", capacity_bytes=None: target))


# 64 x 158 tokens (the sample data's longest batch) without gradient checkpointing: on the CPU one chunk of 512
# tokens at a time (app.accel.row_splits), 2.2 GiB of 2; 1.45 GiB with gradient checkpointing
TOO_BIG = {"train__batch_size": 64, "data__max_seq_len": 4096, "train__gradient_checkpointing": False}


def test_start_waits_at_a_run_estimated_not_to_fit_and_start_anyway_starts_it(
    app_ctx, runs_tmp, two_gib_ram, monkeypatch
):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    fn, values = wired(ctx, "start_training", **TOO_BIG)
    with pytest.warns(UserWarning, match="not to fit"):
        out = fn(values)
    assert out[h.nofit_box]["visible"] is True and "Not started yet" in out[h.status]
    only_outputs(ctx, "start_training", out)
    shown = out[h.nofit_text]
    assert "not to fit" in shown and "2.0 GiB" in shown and "gradient checkpointing" in shown
    assert "Start anyway" in shown
    assert runs.list_runs() == [] and jobs.manager.active() is None  # nothing started, no run folder
    values[ctx.lang_selector] = "zh"  # the best fix in the page's language, as the Model tab words it
    with pytest.warns(UserWarning):
        shown_zh = fn(values)[h.nofit_text]
    fix_zh = re.search(r"最佳修正：(.+?)（", shown_zh).group(1)
    assert not re.search(r"[A-Za-z]{4,}", fix_zh), shown_zh

    launched = []
    monkeypatch.setattr(
        train_tab, "_launch", lambda cfg, lang, resume_dir=None: (launched.append(cfg), (None, "x"))[1]
    )
    fn, values = wired(ctx, "start_anyway", **TOO_BIG)
    with pytest.warns(UserWarning):  # the stand-in launcher refuses: a toast
        out = fn(values)
    assert len(launched) == 1 and launched[0].train.batch_size == 64 and out[h.nofit_box]["visible"] is False
    only_outputs(ctx, "start_anyway", out)


def test_start_waits_at_will_it_learn_warnings_and_start_anyway_starts_the_run(app_ctx, runs_tmp, monkeypatch):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    launched = []
    monkeypatch.setattr(
        train_tab, "_launch", lambda cfg, lang, resume_dir=None: (launched.append(cfg), (None, "x"))[1]
    )
    fn, values = wired(ctx, "start_training", train__learning_rate=0.5)  # 500x the top of LoRA's usual range
    with pytest.warns(UserWarning, match="Will it learn"):
        out = fn(values)
    only_outputs(ctx, "start_training", out)
    assert out[h.nofit_box]["visible"] is True and out[h.apply_fix]["visible"] is False  # no memory fix to apply
    shown = out[h.nofit_text]
    assert "**Learning rate**" in shown and "0.5" in shown and "Start anyway" in shown, shown
    assert "train.learning_rate" not in shown  # the label on screen, not the config key
    assert "see the warnings above" in out[h.status] and launched == [] and runs.list_runs() == []
    values[ctx.lang_selector] = "zh"
    with pytest.warns(UserWarning):
        assert "**学习率**" in fn(values)[h.nofit_text]

    fn, values = wired(ctx, "start_anyway", train__learning_rate=0.5)
    with pytest.warns(UserWarning):  # the stand-in launcher refuses: a toast
        out = fn(values)
    assert len(launched) == 1 and launched[0].train.learning_rate == 0.5 and out[h.nofit_box]["visible"] is False


def test_start_with_the_default_settings_does_not_wait(app_ctx, runs_tmp, small_ram, monkeypatch):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    launched = []
    monkeypatch.setattr(
        train_tab, "_launch", lambda cfg, lang, resume_dir=None: (launched.append(cfg), (None, "x"))[1]
    )
    fn, values = wired(ctx, "start_training")
    with pytest.warns(UserWarning, match="x"):  # only the stand-in launcher's refusal: no fit or learn warning
        out = fn(values)
    assert len(launched) == 1 and out[h.nofit_box]["visible"] is False


def test_apply_the_fix_puts_the_best_fix_into_the_form(app_ctx, runs_tmp, two_gib_ram):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    fn, values = wired(ctx, "apply_fit_fix", **TOO_BIG)
    out = fn(values)
    checkpointing = ctx.form.components["train.gradient_checkpointing"]
    assert out[checkpointing]["value"] is True and "Applied" in out[h.status]
    assert ctx.form.components["train.batch_size"] not in out  # only what the fix changes
    only_outputs(ctx, "apply_fit_fix", out)
    fn, values = wired(ctx, "start_training", **{**TOO_BIG, "train__gradient_checkpointing": True})
    assert train_tab._estimate(ctx.form.to_config(values)).verdict != "no"


def test_the_run_list_shows_steps_and_start_time_while_running_and_the_timer_redraws_it_only_on_change(
    app_ctx, runs_tmp
):
    from ui_ctx import wired

    from app import history

    ctx, h = app_ctx, app_ctx.train
    fn, values = wired(ctx, "train_tick")
    values[h.ticks] = train_tab.DISCOVER_EVERY - 1  # the next tick looks at the runs
    first = fn(values)
    values[h.listed] = first.get(h.listed, values[h.listed])
    assert h.run_table not in fn(values), "redrawn although nothing changed"

    run_dir = runs.create_run(ctx.defaults, name="listed")
    table, _ = train_tab.run_table("en")
    assert table.iloc[0]["steps"] == "-" and table.iloc[0]["started"]  # before the trainer's first event
    redrawn = fn(values)
    assert redrawn[h.run_table].iloc[0]["run"] == run_dir.name and redrawn[h.run_pick]["choices"] == [run_dir.name]
    values[h.listed] = redrawn[h.listed]
    history.append_event(run_dir, "started", step=0, total_steps=20, method="lora", device="cpu")
    history.append_event(run_dir, "log", step=2, total_steps=20, loss=1.0)
    out = fn(values)
    only_outputs(ctx, "train_tick", out)
    table = out[h.run_table]
    assert table.iloc[0]["steps"] == "2/20"
    zh, _ = train_tab.run_table("zh")
    assert zh.iloc[0]["步数"] == "2/20" and zh.iloc[0]["状态"] in ("训练中", "已中断")


def test_open_fills_every_tab_from_the_run_config(app_ctx, runs_tmp):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    cfg = ctx.defaults.replace(
        **{
            "data.path": "assets/identity.json",
            "data.placeholders": {"name": "Ada", "author": "Lovelace Labs"},
            "train.max_steps": 12,
            "train.run_name": "opened",
        }
    )
    run_dir = runs.create_run(cfg)
    fn, values = wired(ctx, "open_run")
    values[h.run_pick] = run_dir.name
    out = fn(values)
    f = ctx.form.components
    assert out[f["data.path"]]["value"] == "assets/identity.json" and out[f["train.max_steps"]]["value"] == 12
    assert out[f["train.run_name"]]["value"] == "opened"
    assert out[ctx.data.placeholders]["value"] == [["name", "Ada"], ["author", "Lovelace Labs"]]
    only_outputs(ctx, "open_run", out)


def test_save_settings_as_preset_and_load_it_back(app_ctx, tmp_path, monkeypatch):
    from ui_ctx import wired

    from app.config import RunConfig

    ctx, h = app_ctx, app_ctx.train
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    fn, values = wired(ctx, "save_preset", train__run_name="my preset", train__max_steps=9, data__path="x.jsonl")
    out = fn(values)
    path = tmp_path / "home" / "presets" / "my-preset.yaml"
    assert out[h.preset_file]["value"] == str(path) and out[h.preset_file]["visible"] is True
    assert "my-preset.yaml" in out[h.status]
    loaded = RunConfig.from_preset(path)
    assert (loaded.train.max_steps, loaded.data.path, loaded.train.run_name) == (9, "x.jsonl", "my preset")

    fn, values = wired(ctx, "load_preset")
    values[h.load_preset] = str(path)
    out = fn(values)
    f = ctx.form.components
    assert out[f["train.max_steps"]]["value"] == 9 and out[f["data.path"]]["value"] == "x.jsonl"
    only_outputs(ctx, "load_preset", out)
    assert "Loaded **my-preset.yaml**" in out[h.status]


@pytest.mark.parametrize(
    ("text", "said"),
    [("train: {max_stepz: 3}\n", "Max steps"), ("train: [1, 2\n", "not valid YAML"), ("- a\n", "mapping")],
)
def test_load_preset_names_the_file_and_the_problem(app_ctx, tmp_path, text, said):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    bad = tmp_path / "broken.yaml"
    bad.write_text(text, encoding="utf-8")
    fn, values = wired(ctx, "load_preset")
    values[h.load_preset] = str(bad)
    out = fn(values)
    assert set(out) == {h.status} and "Could not load **broken.yaml**" in out[h.status]
    assert said in out[h.status] or ("max_stepz" in out[h.status] and said == "Max steps")


def test_use_the_identity_demo_selects_and_applies_its_preset(app_ctx):
    [select] = [d for d in app_ctx.demo.fns.values() if d.api_name == "use_identity_demo"]
    assert train_tab.IDENTITY_PRESET.is_file(), "presets/smollm2-135m-identity-cpu.yaml is the suggested first run"
    chosen = select.fn()
    assert chosen["value"] == str(train_tab.IDENTITY_PRESET) and select.outputs == [app_ctx.model.preset]
    from ui_ctx import values_of

    ctx, h = app_ctx, app_ctx.train
    values = values_of(ctx, ctx.model.preset)
    values[ctx.model.preset] = chosen["value"]
    out = train_tab.use_identity(ctx, values)
    only_outputs(ctx, "use_identity_apply", out)
    data_path = ctx.form.components["data.path"]
    names = RunConfig.from_preset(train_tab.IDENTITY_PRESET).data.placeholders
    assert "identity" in str(out[data_path]["value"])
    assert names["name"] in out[h.status] and names["author"] in out[h.status] and "Placeholders" in out[h.status]


def test_reset_all_settings_puts_every_tab_back_to_the_defaults(app_ctx):
    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    fn, values = wired(ctx, "reset_form")
    assert set(values) == {ctx.lang_selector}
    out = fn(values)
    only_outputs(ctx, "reset_form", out)
    f = ctx.form.components
    defaults = ctx.defaults
    assert out[f["train.max_steps"]]["value"] == defaults.train.max_steps and out[f["method"]]["value"] == "lora"
    assert out[f["data.path"]]["value"] == defaults.data.path and out[f["lora.target_modules"]]["value"] == [
        "q_proj",
        "v_proj",
    ]
    assert ctx.data.placeholders in out and "default" in out[h.status]


def test_open_in_tensorboard_links_to_a_tensorboard_of_the_runs_folder_on_localhost(app_ctx, runs_tmp):
    import urllib.request

    from ui_ctx import wired

    ctx, h = app_ctx, app_ctx.train
    fn, values = wired(ctx, "open_tensorboard")
    out = fn(values)
    only_outputs(ctx, "open_tensorboard", out)
    url = re.search(r"\((http://127\.0\.0\.1:\d+/)\)", out[h.tb_link]).group(1)
    with urllib.request.urlopen(url + "data/environment", timeout=30) as answer:  # TensorBoard's own API
        assert str(runs_tmp) in answer.read().decode()
    assert fn(values)[h.tb_link] == out[h.tb_link]  # started once: the same server on the second press


@pytest.mark.slow
def test_a_dpo_run_started_from_the_tab_plots_its_rewards_beside_the_loss(tiny_model_dir, runs_tmp, tmp_path):
    """objective dpo in the form: Start trains with TRL's DPO (the same job, events and plot), and the rewards chart
    (chosen, rejected, margin, accuracy; eval dotted) appears for it; a supervised run never shows it."""
    import json

    from test_train_preference import PAIRS

    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS * 4]))
    cfg = tiny_config(tiny_model_dir, data, "lora", **{
        "objective": "dpo", "train.packing": False, "train.max_steps": 4, "train.learning_rate": 5.0e-3,
        "train.save_steps": 0, "train.eval_steps": 2, "data.val_size": 0.25,
    })  # fmt: skip
    _demo, ctx = ui_app.build_blocks("en", defaults=cfg)
    h = ctx.handles["train"]
    try:
        started = train_tab.start_run(ctx, _values(ctx), confirmed=True)
        rendered, view = _follow(ctx, started[h.view])
    finally:
        jobs.manager.stop()
        jobs.manager.wait(60)
    assert view.status == "finished", view.message
    assert rendered[h.rewards]["visible"] is True
    names = [t.name for t in rendered[h.rewards]["value"].data]
    assert {"chosen reward", "rejected reward", "reward margin", "eval reward margin"} <= set(names), names
    margin = next(t for t in rendered[h.rewards]["value"].data if t.name == "reward margin")
    assert list(margin.x) == view.facts.series("reward_margin")[0] == view.facts.steps
    assert rendered[h.learned_box]["visible"] is True  # no did-it-learn table for pairs: it says why, and what instead
    assert "reward accuracy and margin" in rendered[h.learned_text] and rendered[h.learned] is None
    plain_view = RunView(run_dir=None)
    assert train_tab.render(ctx, plain_view, "en")[h.rewards]["visible"] is False


def test_save_config_for_two_gpus_shows_the_plan_and_writes_the_accelerate_file(train_app, tmp_path, monkeypatch):
    """The distributed rows as a person sets them (two GPUs, FSDP): Save writes the run config and, next to it, the
    accelerate config file that accelerate's own loader reads; Commands shows the plan line and the exact
    `accelerate launch --config_file FILE -m app train CFG`. A file of the user's at that path is never replaced:
    the config is still saved and the status says why there is no command."""
    from accelerate.commands.config.config_args import load_config_from_file

    ctx, _ = train_app
    h, fields = ctx.handles["train"], ctx.form.components
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path / "home"))
    two = {
        fields["train.run_name"]: "two gpus",
        fields["distributed.num_processes"]: 2,
        fields["distributed.strategy"]: "fsdp",
        fields["train.device"]: "cuda",
    }
    out = train_tab.save_config(ctx, _values(ctx, extra=two))
    path = tmp_path / "home" / "configs" / "two-gpus.yaml"
    accel = path.with_name("two-gpus.accelerate.yaml")
    assert "Saved" in out[h.status] and path.is_file() and accel.is_file(), out[h.status]
    assert RunConfig.from_yaml(path).distributed.num_processes == 2
    lines = out[h.commands].splitlines()
    assert lines[1] == train_tab.activate_line()
    assert any(line.startswith("# plan: ") and "2 GPUs" in line for line in lines), lines
    assert f"accelerate launch --config_file {accel} -m app train {path}" in lines
    loaded = load_config_from_file(str(accel))
    assert loaded.distributed_type.value == "FSDP" and loaded.num_processes == 2

    accel.write_text("# my own accelerate settings\n", encoding="utf-8")
    out = train_tab.save_config(ctx, _values(ctx, extra=two))
    assert "no launch command could be made" in out[h.status] and str(accel) in out[h.status]
    assert out[h.commands] == "" and accel.read_text(encoding="utf-8") == "# my own accelerate settings\n"


def test_start_with_several_gpus_set_points_to_the_launch_command(train_app):
    """Start trains in the app's own process on one device; with the distributed rows set for two GPUs it refuses
    (no run folder, nothing started) and says where the accelerate command is, rather than training one process
    against a per-GPU estimate."""
    ctx, cfg = train_app
    h, fields = ctx.handles["train"], ctx.form.components
    from app import paths

    listed = lambda: set(paths.runs_dir().glob("*")) if paths.runs_dir().is_dir() else set()  # noqa: E731
    before = listed()
    out = train_tab.start_run(ctx, _values(ctx, extra={fields["distributed.num_processes"]: 2}))
    assert "one device" in out[h.status] and "Save config and show commands" in out[h.status]
    assert jobs.manager.active() is None and listed() == before
