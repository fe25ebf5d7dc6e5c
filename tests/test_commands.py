"""Typed command configs (app.commands): each default is written once, and `--help` and the UI show it.

The CLI side is what `python -m app NAME` parses with (app.__main__.command_parser); the UI side is read from the
built Blocks components, as a person opening the tab sees them. A source scan checks that no other module writes
one of these defaults again, and every config field has a widget in its tab or is declared hidden (with why)."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

import pytest

from app import commands, config
from app.__main__ import command_parser
from app.commands import COMMAND_CONFIGS, ChatConfig, EvaluateConfig, ExportConfig, MergeConfig, PushConfig
from app.config import ConfigError, RunConfig

APP = Path(__file__).resolve().parents[1] / "app"

CLI_ARGS = {  # the fewest arguments each command parses with: every option at its default
    "chat": [],
    "evaluate": [],
    "merge": ["adapter", "--out", "out"],
    "export": ["gguf", "src", "--out", "out"],
    "push": ["folder"],
}
TABS = {"chat": "chat", "evaluate": "evaluate", "merge": "export", "export": "export", "push": "export"}
"""The tab that shows each command's settings."""


def cli_defaults(command: str) -> dict[str, object]:
    _, parser = command_parser(command)
    args = parser.parse_args(CLI_ARGS[command])
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(COMMAND_CONFIGS[command])}


def widget(handles: object, name: str) -> object | None:
    """The tab's widget for a config field: an attribute of its handles, or an entry of its `settings` dict."""
    return getattr(handles, name, None) or (getattr(handles, "settings", None) or {}).get(name)


@pytest.fixture(scope="module")
def tabs(tiny_model_dir):
    from ui_ctx import tab_context

    _demo, ctx = tab_context(["chat", "evaluate", "export"], str(tiny_model_dir))
    return ctx


# ---- the same default on the command line and in the UI --------------------------------------------------------
@pytest.mark.parametrize("command", list(COMMAND_CONFIGS))
def test_cli_defaults_are_the_config_defaults(command):
    cls = COMMAND_CONFIGS[command]
    assert cli_defaults(command) == dataclasses.asdict(cls())
    assert cls().validate() == []


def test_help_shows_the_unified_defaults():
    merge_help = command_parser("merge")[1].format_help()
    export_help = command_parser("export")[1].format_help()
    assert "(default: float16)" in " ".join(merge_help.split())  # the Export tab's choice; the CLI said float32
    assert "(default: q8_0)" in " ".join(export_help.split())  # the Export tab's choice; the CLI said f16
    evaluate_help = " ".join(command_parser("evaluate")[1].format_help().split())
    assert "(default: 50)" in evaluate_help and "(default: 128)" in evaluate_help
    chat_help = " ".join(command_parser("chat")[1].format_help().split())
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "seed"):
        assert f"--{name.replace('_', '-')}" in chat_help
    assert "(default: 0.9)" in chat_help and "(default: 42)" in chat_help


@pytest.mark.parametrize("command", list(COMMAND_CONFIGS))
def test_ui_widgets_start_at_the_cli_defaults(tabs, command):
    handles = tabs.handles[TABS[command]]
    cls = COMMAND_CONFIGS[command]
    shown = {f.name: widget(handles, f.name).value for f in dataclasses.fields(cls) if f.name not in cls.HIDDEN}
    assert shown, f"{command}: no field is shown in the {TABS[command]} tab"
    cli = cli_defaults(command)
    assert shown == {name: cli[name] for name in shown}


def test_the_disagreeing_defaults_are_settled():
    assert MergeConfig.dtype == "float16" and ExportConfig.quant == "q8_0"
    assert (EvaluateConfig.max_examples, EvaluateConfig.max_new_tokens) == (50, 128)


# ---- every field has a widget, or says why not -------------------------------------------------------------------
@pytest.mark.parametrize("command", list(COMMAND_CONFIGS))
def test_every_command_field_has_a_widget_or_is_hidden(tabs, command):
    cls = COMMAND_CONFIGS[command]
    handles = tabs.handles[TABS[command]]
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(cls.HIDDEN) <= names, f"{cls.__name__}.HIDDEN names fields that do not exist"
    missing = [n for n in sorted(names - set(cls.HIDDEN)) if widget(handles, n) is None]
    assert not missing, f"{cls.__name__}: no widget in the {TABS[command]} tab and not in HIDDEN: {missing}"
    stale = [n for n in cls.HIDDEN if widget(handles, n) is not None]
    assert not stale, f"{cls.__name__}.HIDDEN lists fields the tab does show: {stale}"
    assert all(reason.strip() for reason in cls.HIDDEN.values())


def run_config_paths(cls: type = RunConfig, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        out += run_config_paths(kind, f"{prefix}{f.name}.") if dataclasses.is_dataclass(kind) else [prefix + f.name]
    return out


def test_every_run_config_field_has_a_form_row_or_is_hidden():
    from app.ui.form import BY_PATH

    paths = set(run_config_paths())
    assert set(config.HIDDEN) <= paths, "config.HIDDEN names fields that do not exist"
    missing = sorted(paths - set(BY_PATH) - set(config.HIDDEN))
    assert not missing, f"RunConfig fields with no row in ui/form.py FIELDS and not in config.HIDDEN: {missing}"
    stale = sorted(set(config.HIDDEN) & set(BY_PATH))
    assert not stale, f"config.HIDDEN lists fields the form does show: {stale}"


# ---- the configs themselves -------------------------------------------------------------------------------------
def test_from_dict_is_strict_and_validate_lists_every_problem():
    assert ChatConfig.from_dict({"top_k": 10}).top_k == 10
    with pytest.raises(ConfigError) as err:
        ChatConfig.from_dict({"temprature": 0.5, "top_k": "ten"}, source="x.yaml")
    text = str(err.value)
    assert "x.yaml" in text and "did you mean 'temperature'" in text and "top_k: expected an integer" in text
    problems = ChatConfig(max_new_tokens=0, temperature=-1, top_p=0, top_k=-1, repetition_penalty=0).validate()
    assert [p.split(":")[0] for p in problems] == ["max_new_tokens", "temperature", "top_p", "top_k",
                                                   "repetition_penalty"]  # fmt: skip
    assert [p.split(":")[0] for p in ChatConfig(temperature=float("nan")).validate()] == ["temperature"]
    assert EvaluateConfig(max_examples=-1, max_new_tokens=0, batch_size=0).validate()[2].startswith("batch_size")
    assert MergeConfig(dtype="fp16").validate() == ["dtype: 'fp16' is not one of float32, bfloat16, float16"]
    assert ExportConfig(quant="Q8_0").validate()[0].startswith("quant: 'Q8_0' is not one of q4_k_m, q5_k_m, q6_k")
    assert PushConfig(repo_id="no-owner").validate() == [
        "repo_id: 'no-owner' is not owner/name (for example you/my-model)"
    ]
    assert PushConfig(what="zip").validate()[0].startswith("what: 'zip' is not one of merged, adapter, gguf")


@pytest.mark.parametrize("cls", list(COMMAND_CONFIGS.values()))
def test_every_field_has_a_docstring_and_becomes_an_option(cls):
    docs = commands.field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    assert all(docs.values())
    import argparse

    parser = argparse.ArgumentParser()
    commands.add_options(parser, cls)
    text = " ".join(parser.format_help().split())
    for name, doc in docs.items():
        assert " ".join(doc.split()[:4]) in text, name


def test_bad_option_values_are_one_message(capsys):
    from app.__main__ import main

    assert main(["chat", "--top-p", "0", "--max-new-tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert "top_p" in err and "max_new_tokens" in err and "Traceback" not in err


# ---- each default written once ----------------------------------------------------------------------------------
WATCHED: dict[str, object] = {
    "dtype": MergeConfig.dtype,
    "quant": ExportConfig.quant,
    "max_examples": EvaluateConfig.max_examples,
    **{f.name: f.default for f in dataclasses.fields(ChatConfig)},
}
"""Field name -> default: the defaults that used to be written in the CLI and again in the UI."""
VALUES = {v for v in WATCHED.values() if v not in ("", 0.0, 1.0)}  # 0 and 1 are everywhere; their names are not
SHARED_NAMES = ("seed", "system_prompt")
"""Names training uses too (RunConfig's train.seed, data.system_prompt): watched in the command modules only."""
COMMAND_FILES = ("chat", "chat_cli", "evaluate", "evaluate_cli", "export", "gguf", "modelset", "ui/chat_tab",
                 "ui/evaluate_tab", "ui/export_tab")  # fmt: skip


def second_defaults(path: Path, command_file: bool) -> list[str]:
    """Places in `path` that write a watched default again, as 'line: what'."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
            defaults += node.args.kw_defaults
            for arg, default in zip(args, defaults, strict=True):
                if (
                    _named(arg.arg, command_file)
                    and isinstance(default, ast.Constant)
                    and default.value not in (None, "")
                ):
                    hits.append(f"{default.lineno}: parameter {arg.arg}={default.value!r}")
        elif isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
            if _named(node.arg, command_file):
                hits.append(f"{node.value.lineno}: {node.arg}={node.value.value!r}")
            elif command_file and node.arg in ("value", "default") and _watched(node.value.value):
                hits.append(f"{node.value.lineno}: {node.arg}={node.value.value!r}")
        elif (
            isinstance(node, ast.Tuple) and len(node.elts) == 2 and all(isinstance(e, ast.Constant) for e in node.elts)
        ):
            if node.elts[0].value in WATCHED:
                hits.append(f"{node.lineno}: ({node.elts[0].value!r}, {node.elts[1].value!r})")
        elif command_file and isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            last = node.values[-1]
            if isinstance(last, ast.Constant) and _watched(last.value):
                hits.append(f"{last.lineno}: ... or {last.value!r}")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and _watched(node.value.value):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any("DEFAULT" in n for n in names):
                hits.append(f"{node.lineno}: {names[0]} = {node.value.value!r}")
    return hits


def _named(name: str | None, command_file: bool) -> bool:
    return name in WATCHED and (command_file or name not in SHARED_NAMES)


def _watched(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (str, int, float)) and value in VALUES


def test_each_command_default_is_written_once():
    files = [p for p in sorted(APP.rglob("*.py")) if p.name not in ("commands.py", "config.py")]
    command_files = {APP / f"{name}.py" for name in COMMAND_FILES}
    assert command_files <= set(files), "a command module moved: update COMMAND_FILES"
    found = {str(p.relative_to(APP)): second_defaults(p, p in command_files) for p in files}
    found = {k: v for k, v in found.items() if v}
    assert not found, f"defaults written again outside app/commands.py: {found}"


def test_the_scan_sees_a_second_default(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        'DEFAULT_QUANT = "q8_0"\n'
        'def merge(src, dtype="float16"): ...\n'
        "x = gr.Number(value=50)\n"
        "y = values.get(k) or 128\n"
        'evaluate(max_new_tokens=128)\n'
        'for name, default in (("top_p", 0.9),): ...\n'
    )  # fmt: skip
    assert sorted(int(h.split(":")[0]) for h in second_defaults(bad, command_file=True)) == [1, 2, 3, 4, 5, 6]
