"""Bad input gets a clear message, never a traceback: each case through the core (the exception type and its words)
and through the UI handler functions (they return a status message; none raises).

Cases: a path that does not exist, a folder that is not a model, a damaged .safetensors, a truncated GGUF, a
pickle-only model or adapter, a dataset with no valid record, impossible config values, an adapter trained on
another base, and Trust remote code without its confirmation. The full-disk cases are in test_reliability_disk.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train_kit import events_of, one_torch_thread, tiny_config, write_alpaca  # noqa: F401
from ui_ctx import make_adapter

from app import chat, data, export, jobs, modeling, runs, train
from app.config import ConfigError, ModelConfig
from app.ui import app as ui_app
from app.ui import chat_tab, data_tab, export_tab, model_tab, train_tab

ERROR_MARK = "❌"


# ---- the bad artefacts ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Every broken thing a user may point the app at, built once from the tiny model."""
    from tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bad")
    out: dict[str, Path] = {"missing": root / "no" / "such" / "model", "not_a_model": root / "just-a-folder"}
    out["not_a_model"].mkdir()
    (out["not_a_model"] / "notes.txt").write_text("not a model")
    out["damaged_st"] = _copy_with(tiny_model_dir, root / "damaged-st", "model.safetensors", _cut_in_half)
    out["pickle_model"] = _pickle_only(tiny_model_dir, root / "pickle-model")
    out["truncated_gguf"] = root / "truncated.gguf"
    out["truncated_gguf"].write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\x05\x00")  # magic, version, cut
    out["not_gguf"] = root / "weights.gguf"
    out["not_gguf"].write_bytes(b"PK\x03\x04 a zip, not a gguf")
    out["adapter"] = make_adapter(tiny_model_dir, root / "adapter")
    out["damaged_adapter"] = _copy_with(out["adapter"], root / "damaged-adapter", "adapter_model.safetensors", _cut)
    out["pickle_adapter"] = _pickle_adapter(out["adapter"], root / "pickle-adapter")
    out["other_base"] = build_tiny_model(root / "tiny-hidden-32", hidden=32)
    out["no_valid_data"] = root / "no-valid.json"
    records = [{"instruction": "", "output": "x"}, {"instruction": "hi", "output": ""}, {"instruction": ["a"]}, "text"]
    out["no_valid_data"].write_text(json.dumps(records))  # empty field, empty answer, a list, not an object
    out["good_data"] = write_alpaca(root / "good.json", n=16)
    return out


def _copy_with(src: Path, dst: Path, name: str, damage) -> Path:
    shutil.copytree(src, dst)
    damage(dst / name)
    return dst


def _cut_in_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a download or copy that stopped half-way


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])  # even the header is cut


def _pickle_only(model_dir: Path, dst: Path) -> Path:
    from safetensors.torch import load_file

    shutil.copytree(model_dir, dst)
    torch.save(load_file(str(dst / "model.safetensors")), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


def _pickle_adapter(adapter: Path, dst: Path) -> Path:
    from safetensors.torch import load_file

    shutil.copytree(adapter, dst)
    torch.save(load_file(str(dst / "adapter_model.safetensors")), dst / "adapter_model.bin")
    (dst / "adapter_model.safetensors").unlink()
    return dst


# ---- through the core ------------------------------------------------------------------------------------------
MODEL_CASES = [
    ("missing", "path not found"),
    ("not_a_model", "not a model: it has no config.json"),
    ("damaged_st", "damaged or truncated"),
    ("pickle_model", "pickle"),
    ("truncated_gguf", "damaged or truncated GGUF"),
    ("not_gguf", "is not a GGUF file"),
]


@pytest.mark.parametrize(("case", "words"), MODEL_CASES)
def test_core_refuses_a_bad_model_with_a_message_naming_it(bad, case, words):
    with pytest.raises(modeling.ModelError) as info:
        modeling.load_model(ModelConfig(name_or_path=str(bad[case])), device="cpu", progress=lambda f, m: None)
    assert words in str(info.value) and bad[case].name in str(info.value)


@pytest.mark.parametrize(
    ("case", "base", "words"),
    [
        ("missing", None, "not found or not a folder"),
        ("damaged_adapter", None, "damaged or truncated"),
        ("pickle_adapter", None, "pickle file that can run code"),
        ("adapter", "other_base", "does not fit the base model"),
    ],
)
def test_core_refuses_a_bad_adapter_in_chat_and_merge(bad, tmp_path, case, base, words):
    base_name = str(bad[base]) if base else _tiny(bad)
    with pytest.raises(chat.ChatError, match=words):
        chat.ChatSession(base_name, [str(bad[case])], device="cpu")
    with pytest.raises(export.ExportError, match=words):
        export.merge(bad[case], tmp_path / "merged", base=base_name)
    assert not (tmp_path / "merged").exists()  # nothing half-written is left behind


def _tiny(bad: dict[str, Path]) -> str:
    """The base the good adapter was trained on (its adapter_config names it)."""
    return json.loads((bad["adapter"] / "adapter_config.json").read_text())["base_model_name_or_path"]


def test_core_mismatch_message_names_both_models_and_what_to_do(bad):
    with pytest.raises(chat.ChatError) as info:
        chat.ChatSession(str(bad["other_base"]), [str(bad["adapter"])], device="cpu")
    text = str(info.value)
    assert "q_proj" in text and "needs 32" in text and str(bad["other_base"]) in text
    assert "It was trained on" in text and "choose that base" in text


def test_core_dataset_with_no_valid_record_lists_why_and_training_fails_clearly(bad, tiny_model_dir, runs_tmp):
    load = data.load_examples(str(bad["no_valid_data"]))
    assert load.examples == [] and load.skipped == 4
    assert {p.index for p in load.problems if p.severity == "error"} == {0, 1, 2, 3}  # each record
    cfg = tiny_config(tiny_model_dir, bad["no_valid_data"])
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "failed"
    (failed,) = events_of(run_dir, "failed")
    assert "no usable training examples" in failed["message"] and "Data tab" in failed["message"]
    assert runs.run_status(run_dir) == "failed" and runs.summarize(run_dir).message == failed["message"]


def test_core_impossible_config_lists_every_problem_and_never_starts(tiny_model_dir, bad, runs_tmp):
    cfg = tiny_config(
        tiny_model_dir,
        bad["good_data"],
        **{"lora.rank": 0, "train.learning_rate": 5.0, "data.val_size": 1.5, "train.batch_size": 0},
    )
    problems = cfg.validate()
    for key in ("lora.rank", "train.learning_rate", "data.val_size", "train.batch_size"):
        assert any(p.startswith(key) for p in problems), key
    with pytest.raises(ConfigError):
        jobs.JobManager().start(cfg)
    assert not runs_tmp.exists() or not any(runs_tmp.iterdir())


def test_core_values_only_the_model_can_refuse_end_as_a_failed_run(tiny_model_dir, bad, runs_tmp):
    """A config valid on paper that the model refuses (freeze 5 of 2 layers) fails with the limit in words."""
    cfg = tiny_config(tiny_model_dir, bad["good_data"], "freeze", **{"freeze.trainable_layers": 5})
    run_dir = runs.create_run(cfg)
    assert train.run(cfg, run_dir) == "failed"
    message = events_of(run_dir, "failed")[0]["message"]
    assert "only 2 decoder layers" in message and "Traceback" not in message


# ---- through the UI handlers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ui(tiny_model_dir, bad, tmp_path_factory):
    """The whole app's Blocks with the tiny model and a small dataset as defaults; handlers called directly."""
    runs_root = tmp_path_factory.mktemp("ui-runs")
    cfg = tiny_config(tiny_model_dir, bad["good_data"], **{"train.output_dir": str(runs_root)})
    _, ctx = ui_app.build_blocks("en", defaults=cfg)
    yield ctx
    jobs.manager.stop()
    jobs.manager.wait(60)


def _form(ctx, **fields) -> dict:
    """{component: value} as the browser sends them: the form at its defaults, `fields` (dotted paths with '__' for
    '.') changed, the language, and each tab's own inputs at their initial values."""
    values = {c: c.value for c in ctx.form.inputs()}
    for key, value in fields.items():
        values[ctx.form.components[key.replace("__", ".")]] = value
    values[ctx.lang_selector] = "en"
    return values


@pytest.mark.parametrize(("case", "words"), MODEL_CASES)
def test_model_tab_load_shows_a_message_for_a_bad_model(ui, bad, case, words):
    out = model_tab.load_or_inspect(ui, _form(ui, model__name_or_path=str(bad[case])), inspect_only=False)
    status = out[ui.handles["model"].status]
    assert status.startswith(ERROR_MARK) and words in status, status


def test_model_tab_inspect_of_a_missing_model_says_so(ui, bad):
    out = model_tab.load_or_inspect(ui, _form(ui, model__name_or_path=str(bad["missing"])), inspect_only=True)
    assert "path not found" in out[ui.handles["model"].status]


@pytest.mark.parametrize(
    ("case", "words"),
    [("missing", "not found"), ("no_valid_data", "0 valid")],
)
def test_data_tab_load_shows_a_message_for_bad_data(ui, bad, case, words):
    h = ui.handles["data"]
    out = data_tab.load_data(ui, _form(ui, data__path=str(bad[case])), fetch=False)
    status = out[h.status]
    assert words in status.replace("*", ""), status
    if case == "no_valid_data":  # each rejected record is listed with its reason
        assert len(out[h.problems]) >= 4


def test_train_tab_start_lists_impossible_values_and_starts_nothing(ui):
    h = ui.handles["train"]
    values = _form(ui, lora__rank=0, train__learning_rate=5.0, data__val_size=0.9, train__warmup_ratio=0.0)
    values[h.view] = train_tab.RunView()
    out = train_tab.start_run(ui, values)
    assert "Cannot start" in out[h.status] and "LoRA rank" in out[h.status] and "Learning rate" in out[h.status]
    assert h.view not in out and jobs.manager.active() is None


@pytest.mark.parametrize("case", ["no_valid_data"])
def test_train_tab_run_that_cannot_load_ends_failed_with_its_message(ui, bad, case):
    """Start returns at once; a data problem found while loading shows up as the run's failed status line. (A
    missing model or data path is refused before a run exists: test_train_preflight.py.)"""
    h = ui.handles["train"]
    field = {"model__name_or_path": str(bad["missing"])} if case == "missing" else {"data__path": str(bad[case])}
    values = {**_form(ui, **field), h.view: train_tab.RunView()}
    view = train_tab.start_run(ui, values)[h.view]
    assert jobs.manager.wait(120) == "failed"
    view = train_tab.load_history(view.run_dir)
    line = train_tab.status_line(view, "en")
    expected = "path not found" if case == "missing" else "no usable training examples"
    assert view.status == "failed" and expected in line, line


@pytest.mark.parametrize(
    ("case", "base", "words"),
    [
        ("missing", None, "not found or not a folder"),
        ("damaged_adapter", None, "damaged or truncated"),
        ("pickle_adapter", None, "pickle file that can run code"),
        ("adapter", "other_base", "does not fit the base model"),
    ],
)
def test_chat_and_export_tabs_show_a_message_for_a_bad_adapter(ui, bad, tmp_path, case, base, words):
    hc, he = ui.handles["chat"], ui.handles["export"]
    base_value = str(bad[base]) if base else _tiny(bad)
    chat_values = {hc.picker.base: base_value, hc.picker.adapters: [str(bad[case])], hc.picker.device: "cpu"}
    status = chat_tab.load_models(ui, {**chat_values, ui.lang_selector: "en"})[hc.status]
    assert status.startswith(ERROR_MARK) and words in status, status
    export_values = {
        he.picker.base: base_value,
        he.picker.adapters: [str(bad[case])],
        he.out_dir: str(tmp_path / "merged"),
        he.dtype: "float32",
        he.overwrite: False,
        he.share_cpu: False,
        ui.lang_selector: "en",
    }
    status = export_tab.merge_adapter(ui, export_values)[he.status]
    assert status.startswith(ERROR_MARK) and words in status, status


def test_the_ui_never_offers_pickle_loading(ui):
    """allow_pickle is not a form field and no tab passes it: a .bin can only be loaded from the CLI/API."""
    assert not any("pickle" in path for path in ui.form.components)
    assert ui.defaults.model.allow_pickle is False


# ---- Trust remote code needs a confirmation --------------------------------------------------------------------
def test_trust_remote_code_is_off_and_needs_a_second_tick_with_a_warning(ui):
    h, trust = ui.handles["model"], ui.form.components["model.trust_remote_code"]
    assert trust.value is False and h.trust_confirm.value is False and h.trust_confirm.visible is False
    assert "run the Python files" in h.trust_confirm.info or "runs the Python files" in h.trust_confirm.info
    ticked = _trust_listener(ui)(True)  # ticking shows the confirmation box, cleared
    assert ticked["visible"] is True and ticked["value"] is False
    assert _trust_listener(ui)(False)["visible"] is False


def _trust_listener(ui):
    """The function Gradio runs when the Trust remote code box changes."""
    trust = ui.form.components["model.trust_remote_code"]
    confirm = ui.handles["model"].trust_confirm
    for dep in ui.demo.fns.values():
        if [b._id for b in dep.inputs] == [trust._id] and [b._id for b in dep.outputs] == [confirm._id]:
            return dep.fn
    raise AssertionError("no listener on model.trust_remote_code updates the confirmation box")


def test_trust_remote_code_without_confirmation_is_refused_everywhere(ui):
    h, hm, hd = ui.handles["train"], ui.handles["model"], ui.handles["data"]
    values = {**_form(ui, model__trust_remote_code=True), h.view: train_tab.RunView()}
    started = train_tab.start_run(ui, values)
    assert "Trust remote code" in started[h.status] and "not confirmed" in started[h.status]  # the label on screen
    assert jobs.manager.active() is None
    loaded = model_tab.load_or_inspect(ui, values, inspect_only=False)
    assert "not confirmed" in loaded[hm.status]
    assert "not confirmed" in data_tab.load_data(ui, values, fetch=False)[hd.status]
    ticked = {**values, hm.trust_confirm: True}
    refused = model_tab.load_or_inspect(ui, ticked, inspect_only=True)  # the box's value alone is no consent
    assert "Trust remote code" in refused[hm.status], refused[hm.status]
    model_tab.record_consent(values[ui.form.components["model.name_or_path"]], True)  # the person's tick
    confirmed = model_tab.load_or_inspect(ui, ticked, inspect_only=True)
    model_tab.withdraw_consent()
    assert "Inspected" in confirmed[hm.status]  # confirmed: the form reads, the model is looked at
    assert ui.form.to_config({**values, hm.trust_confirm: True}).model.trust_remote_code is True


def test_a_reopened_config_with_trust_on_asks_again(ui):
    hm = ui.handles["model"]
    cfg = ui.defaults.replace(**{"model.trust_remote_code": True})
    updates = ui.form.updates_from(cfg)
    assert updates[hm.trust_confirm]["visible"] is True and updates[hm.trust_confirm]["value"] is False
