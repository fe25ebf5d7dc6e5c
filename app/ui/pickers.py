"""Shared pickers of the Chat, Evaluate and Export tabs: a base model, up to N adapters/checkpoints, a device.

Adapters come from the run list (`runs.list_runs()`: each finished or stopped run's adapter/ or model/ folder and
its checkpoints) or from any folder path typed into the same dropdown. The base is preselected from the app
defaults and follows the adapters when they name one (the run's config.yaml, else adapter_config.json).

The choices follow the run history by themselves (`follow_runs`): a timer compares a cheap signature of the runs
folder (names, and the stat of each run's events, lock, checkpoints and final folders) with the one the page last
drew, and redraws the choices only when it changed; the user's selection is kept. "Refresh runs" does the same at
once.

The device guard: one owner of the accelerator at a time. When a training run holds the device a model would load
on, the tab says so and offers the choice: wait for the run, or load on the CPU.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app import catalog, devices, files, history, runs
from app.adapters import base_of, display_name, run_dir_of
from app.config import ConfigError, load_yaml
from app.ui import i18n

STRINGS = {
    "pick.base": ("Base model", "基础模型"),
    "pick.base.info": (
        "Catalog id, hub id in the local cache, or a model folder; adapters fill it in when they name their base.",
        "目录 ID、本地缓存中的 Hub ID 或模型文件夹；所选适配器记录了底座时会自动填入。",
    ),
    "pick.adapters": ("Adapters and checkpoints", "适配器与检查点"),
    "pick.adapters.info": (
        "Pick from finished or stopped runs, or type a folder path and press Enter (at most 4).",
        "从已完成或已停止的训练中选择，或输入文件夹路径后回车（最多 4 个）。",
    ),
    "pick.adapter": ("Adapter or model folder", "适配器或模型文件夹"),
    "pick.adapter.info": (
        "A run's adapter/checkpoint, or type any adapter folder path and press Enter.",
        "选择训练得到的适配器或检查点，或输入任意适配器文件夹路径后回车。",
    ),
    "pick.refresh": ("Refresh runs", "刷新训练列表"),
    "pick.device": ("Device", "设备"),
    "pick.device.info": (
        "auto: the GPU when there is one. cpu: slower, but usable while a training run holds the GPU.",
        "auto：有 GPU 就用 GPU。cpu：较慢，但在训练占用 GPU 时也能用。",
    ),
    "pick.device_busy": (
        "A training run is using {device} ({run}). Wait for it to finish, or choose device **cpu** and load again.",
        "训练任务正在使用 {device}（{run}）。请等待训练结束，或把设备改为 **cpu** 后重新加载。",
    ),
    "pick.cpu_shared": (
        "Note: a training run is also using the CPU; both will run slower.",
        "注意：训练任务也在使用 CPU，两者都会变慢。",
    ),
    "pick.kind.adapter": ("adapter", "适配器"),
    "pick.kind.model": ("model", "完整模型"),
    "pick.base_column": ("{name} (base)", "{name}（基础模型）"),
    "pick.status.running": ("running", "训练中"),
    "pick.status.finished": ("finished", "已完成"),
    "pick.status.stopped": ("stopped", "已停止"),
    "pick.status.failed": ("failed", "失败"),
    "pick.status.interrupted": ("interrupted", "已中断"),
    "pick.status.created": ("not started", "未开始"),
}
i18n.add(STRINGS)

MAX_ADAPTERS = 4
DEVICE_CHOICES = ("auto", "cpu")
USABLE = ("finished", "stopped")
FOLLOW_S = 3.0  # how often a page looks at the runs folder: a stat per run file, ~1 ms for 100 runs
REDRAW_EVERY = 10  # ticks (30 s): a drawing the page dropped is made good this soon (see follow_runs)
_CREATED = re.compile(r"^\d{8}-\d{6}-")  # runs.create_run's folder prefix: the creation time


@dataclass
class ModelPicker:
    """Base + adapters + device widgets; `adapters` is a multiselect dropdown (or single for `single=True`).
    `timer` and `seen` (`drawn(lang, runs.signature())` of the choices the page shows) drive `follow_runs`."""

    base: gr.Dropdown
    adapters: gr.Dropdown
    refresh: gr.Button
    device: gr.Radio | None
    timer: gr.Timer
    seen: gr.Textbox


# ---- choices from the run list ------------------------------------------------------------------------------
def adapter_choices(output_dir: str | Path | None = None, lang: str = "en") -> list[tuple[str, str]]:
    """(label, folder) for each finished/stopped run's final adapter (or model) and its checkpoints, newest first.

    >>> adapter_choices("/nonexistent")
    []
    """
    out: list[tuple[str, str]] = []
    for run in runs.list_runs(output_dir):
        if run.status not in USABLE:
            continue
        if run.adapter is not None:
            out.append((f"{run.id} · {i18n.t('pick.kind.' + run.adapter.name, lang)}", str(run.adapter)))
        for ckpt in reversed(history.checkpoints(run.path)):
            out.append((f"{run.id} · {ckpt.name}", str(ckpt)))
    return out


def status_text(status: str, lang: str = "en") -> str:
    """A run status as a person reads it, in `lang` ("created" is "not started")."""
    key = f"pick.status.{status}"
    return i18n.t(key, lang) if key in i18n.STRINGS else status


def drawn(lang: str, signature: tuple) -> str:
    """A short text naming a drawing of the choices: the language and a digest of the runs signature.

    >>> drawn("en", ())
    'en:f9065fa7389750e1'
    """
    return f"{lang}:{hashlib.sha1(repr(signature).encode()).hexdigest()[:16]}"


# ---- names a person reads ------------------------------------------------------------------------------------
def run_name(run_dir: str | Path) -> str:
    """The run's name as its person gave it (train.run_name in its config.yaml), else its folder name without
    the creation time.

    >>> run_name("/nowhere/20260101-120000-lora-smollm2-135m-instruct")
    'lora-smollm2-135m-instruct'
    """
    run_dir = Path(run_dir)
    try:
        train = load_yaml(run_dir / runs.CONFIG).get("train") or {}
        given = str(train.get("run_name") or "").strip() if isinstance(train, dict) else ""
    except (ConfigError, OSError):  # no or a damaged config.yaml: the folder name still names the run
        given = ""
    return given or _CREATED.sub("", run_dir.name) or run_dir.name


def model_name(name_or_path: str | None) -> str:
    """A base model as a person names it: a catalog or hub id as it is, a folder or file by its own name.

    >>> model_name("/home/me/.cache/tunedesk/models/smollm2-135m-instruct/")
    'smollm2-135m-instruct'
    """
    text = str(name_or_path or "").strip().rstrip("/\\")
    if not text:
        return "?"
    path = Path(text).expanduser()
    if text.startswith((".", "/", "~")) or path.is_absolute() or path.exists():
        return path.name.removesuffix(".gguf")
    return text


def folder_name(folder: str | Path) -> str:
    """An adapter, checkpoint or model folder by its run's name (`lora-demo`, `lora-demo · checkpoint-40`), or by
    the folder's own name outside any run."""
    folder = Path(folder)
    run = run_dir_of(folder)
    if run is None:  # e.g. a copied run's adapter/ folder: its parent's name, without a creation time
        return _CREATED.sub("", display_name(folder)).replace("/", " · ")
    step = history.checkpoint_step(folder)
    return f"{run_name(run)} · {folder.name}" if step is not None else run_name(run)


def unique_names(names: list[str], folders: list[str | Path]) -> list[str]:
    """`names`, with the run's creation time added to each name that two of them share (two runs of one name),
    and the run's folder name where even that is shared (two runs created in the same second)."""

    def created(folder: str | Path) -> str:
        parts = [part for part in Path(folder).parts if _CREATED.match(part)]
        return parts[-1] if parts else str(folder)

    def stamp(folder: str | Path) -> str:
        n = created(folder)
        return f"{n[:4]}-{n[4:6]}-{n[6:8]} {n[9:11]}:{n[11:13]}:{n[13:15]}" if _CREATED.match(n) else n

    out = [f"{n} ({stamp(f)})" if names.count(n) > 1 else n for n, f in zip(names, folders, strict=True)]
    return [f"{n} ({created(f)})" if out.count(o) > 1 else o for n, o, f in zip(names, out, folders, strict=True)]


def base_choices(default: str) -> list[str]:
    ids = catalog.ids()
    return ids if not default or default in ids else [default, *ids]


# ---- widgets ---------------------------------------------------------------------------------------------------
def build(
    tr: i18n.Translator,
    default_base: str,
    prefix: str,
    single: bool = False,
    max_adapters: int = MAX_ADAPTERS,
    with_device: bool = True,
) -> ModelPicker:
    """The picker in the current Blocks context; `prefix` makes elem ids unique per tab. Without a device choice
    (Export: merging always runs on the CPU) `device` is None."""
    with gr.Row(equal_height=False):
        base = tr.labelled(
            gr.Dropdown,
            "pick.base",
            info=True,
            choices=base_choices(default_base),
            value=default_base,
            allow_custom_value=True,
            filterable=True,
            scale=2,
            elem_id=f"{prefix}-base",
        )
        key = "pick.adapter" if single else "pick.adapters"
        adapters = tr.labelled(
            gr.Dropdown,
            key,
            info=True,
            choices=adapter_choices(),
            value=None if single else [],
            multiselect=not single,
            max_choices=None if single else max_adapters,
            allow_custom_value=True,
            filterable=True,
            scale=3,
            elem_id=f"{prefix}-adapters",
        )
        with gr.Column(scale=1, min_width=160):
            device = None
            if with_device:
                device = tr.labelled(
                    gr.Radio,
                    "pick.device",
                    info=True,
                    choices=list(DEVICE_CHOICES),
                    value="auto",
                    elem_id=f"{prefix}-device",
                )
            refresh = tr.text(gr.Button, "pick.refresh", size="sm", elem_id=f"{prefix}-refresh")
    timer = gr.Timer(FOLLOW_S)
    # "<what the choices above were drawn from>/<ticks since>", kept in the page with them (see follow_runs)
    seen = gr.Textbox(f"{drawn(tr.lang, runs.signature())}/0", visible=False, interactive=False)
    picker = ModelPicker(base=base, adapters=adapters, refresh=refresh, device=device, timer=timer, seen=seen)
    adapters.change(follow_base, inputs=[adapters, base], outputs=base, show_progress="hidden")
    return picker


def follow_runs(
    picker: ModelPicker,
    prefix: str,
    lang_selector: Any = None,
    also: dict[Any, Callable[[str], list]] | None = None,
) -> None:
    """Keep the adapter choices (and `also`: {dropdown: choices(lang)}) in step with the run history: the timer
    redraws them when the runs signature or the language changed since the last drawing, Refresh at once. Each
    tab calls this once for its picker (after building what `also` names).

    A dropdown whose list is open (its input focused) ignores new choices (Gradio 6.31): a run that finished
    while the user looked at the list stayed unlisted. So the timer also redraws every REDRAW_EVERY ticks even
    when nothing changed; the other ticks only count, in the hidden `seen` box."""
    also = also or {}
    outputs = [picker.adapters, *also, picker.seen]
    lang = [lang_selector] if lang_selector is not None else []

    def redraw(seen: Any, *chosen: str, force: bool = False) -> tuple:
        lang_now = chosen[0] if chosen and chosen[0] else "en"
        now = drawn(lang_now, runs.signature())
        last, _, count = str(seen or "").partition("/")
        ticks = int(count) + 1 if count.isdigit() else 1
        if now == last and ticks < REDRAW_EVERY and not force:
            return (*(gr.skip() for _ in outputs[:-1]), f"{now}/{ticks}")
        choices = [gr.update(choices=adapter_choices(lang=lang_now))]
        also_choices = (gr.update(choices=make(lang_now)) for make in also.values())
        return (*choices, *also_choices, f"{now}/0")

    picker.timer.tick(
        redraw,
        inputs=[picker.seen, *lang],
        outputs=outputs,
        show_progress="hidden",
        concurrency_limit=None,  # a few stats: never queue behind a model load
        api_name=f"{prefix}_follow_runs",
        api_visibility="private",
    )
    picker.refresh.click(
        lambda seen, *chosen: redraw(seen, *chosen, force=True),
        inputs=[picker.seen, *lang],
        outputs=outputs,
        show_progress="hidden",
        api_name=f"{prefix}_refresh_runs",
        api_visibility="private",
    )


def selected(value: Any) -> list[str]:
    """The dropdown's value as a list of non-empty folder paths (single or multiselect)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def follow_base(adapters: Any, base: str) -> Any:
    """Set the base to the first adapter's recorded base, when it records one (else keep the user's choice)."""
    for folder in selected(adapters):
        found = base_of(folder)
        if found:
            return gr.update(value=found)
    return gr.update(value=base)


# ---- the device guard --------------------------------------------------------------------------------------------
def busy_note(choice: str, lang: str) -> tuple[bool, str]:
    """(blocked, message): blocked when a training run of this app holds the device `choice` resolves to, unless
    the user chose cpu explicitly: then loading goes ahead (sharing the CPU, both run slower) with a note."""
    holder = devices.holder(choice)
    if holder is None:
        return False, ""
    if choice == "cpu":
        return False, i18n.t("pick.cpu_shared", lang)
    return True, i18n.t("pick.device_busy", lang, device=holder.device, run=holder.run)


# ---- files the app hands to the browser or keeps for later --------------------------------------------------------
def private_dir() -> Path:
    """This app process's private scratch folder (app.files): Gradio's upload cache and CSV downloads."""
    return files.scratch_dir()


def fresh_dir() -> Path:
    """A new subfolder of private_dir(): files of the same name (two CSV downloads) never clash."""
    return files.fresh_dir()


def clean_stale_folders() -> None:
    """Remove the scratch folders that earlier app processes could not remove (killed, power lost)."""
    files.clean_stale()
