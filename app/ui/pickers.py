"""Shared pickers of the Chat, Evaluate and Export tabs: a base model, up to N adapters/checkpoints, a device.

Adapters come from the run list (`runs.list_runs()`: each finished or stopped run's adapter/ or model/ folder and
its checkpoints) or from any folder path typed into the same dropdown. The base is preselected from the app
defaults and follows the adapters when they name one (the run's config.yaml, else adapter_config.json).

The device guard: one owner of the accelerator at a time. When a training run holds the device a model would load
on, the tab says so and offers the choice: wait for the run, or load on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app import catalog, devices, files, history, runs
from app.adapters import base_of
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
    "pick.final": ("final", "最终"),
}
i18n.add(STRINGS)

MAX_ADAPTERS = 4
DEVICE_CHOICES = ("auto", "cpu")
USABLE = ("finished", "stopped")


@dataclass
class ModelPicker:
    """Base + adapters + device widgets; `adapters` is a multiselect dropdown (or single for `single=True`)."""

    base: gr.Dropdown
    adapters: gr.Dropdown
    refresh: gr.Button
    device: gr.Radio | None


# ---- choices from the run list ------------------------------------------------------------------------------
def adapter_choices(output_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, folder) for each finished/stopped run's final adapter (or model) and its checkpoints, newest first.

    >>> adapter_choices("/nonexistent")
    []
    """
    out: list[tuple[str, str]] = []
    for run in runs.list_runs(output_dir):
        if run.status not in USABLE:
            continue
        if run.adapter is not None:
            out.append((f"{run.id} · {run.adapter.name}", str(run.adapter)))
        for ckpt in reversed(history.checkpoints(run.path)):
            out.append((f"{run.id} · {ckpt.name}", str(ckpt)))
    return out


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
    picker = ModelPicker(base=base, adapters=adapters, refresh=refresh, device=device)
    refresh.click(lambda: gr.update(choices=adapter_choices()), outputs=adapters, show_progress="hidden")
    adapters.change(follow_base, inputs=[adapters, base], outputs=base, show_progress="hidden")
    return picker


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
