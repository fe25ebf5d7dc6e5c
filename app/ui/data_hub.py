"""The Data tab's Hugging Face Hub panel and its table of datasets to mix (data.sources).

Hub panel: a dataset id, its configs and splits (app.hub_data.dataset_choices), Download with a progress line
(bytes, speed, time left) and Cancel, then the dataset shows as a local file does (the Data tab's Load). The
download is the app's one download (app.hub.start, shared with the Model tab: one at a time), as a model's is: it
belongs to the app, not to the page, so a page that goes away leaves it running; a page that opens while it runs
draws it again (`watch`, on page load) and loads the dataset when it ends, and Download pressed again for the same
dataset follows the running transfer. Cancel stops whatever is downloading (what arrived whole stays for the next
Download).

Mix table: one row per dataset of the run (dataset, config, split, revision, limit, share); the first row is the
dataset in the path field above. `Form.add_extra` reads it into data.sources whenever the form is read, so Start,
the preview and the estimate see the same mix. An empty table (or one plain row) is the path field alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import hub, hub_data
from app.config import ConfigError, DataSource
from app.ui import hub_panel, i18n

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "data.hub": ("Hugging Face Hub", "Hugging Face Hub"),
    "data.hub.repo": ("Hub dataset id", "Hub 数据集 ID"),
    "data.hub.repo.info": (
        "owner/name, e.g. tatsu-lab/alpaca; Show configs lists its configs and splits.",
        "owner/name，例如 tatsu-lab/alpaca；点击“显示配置”列出它的配置和划分。",
    ),
    "data.hub.show": ("Show configs", "显示配置"),
    "data.hub.config": ("Config", "配置"),
    "data.hub.config.info": ("The subset of the dataset.", "数据集的子集。"),
    "data.hub.split": ("Split", "划分"),
    "data.hub.split.info": ("Which part of it to train on.", "用哪一部分训练。"),
    "data.hub.download": ("Download and use", "下载并使用"),
    "data.hub.cancel": ("Cancel", "取消"),
    "data.hub.add": ("Add to the mix", "加入混合"),
    "data.hub.idle": (
        "Type a Hub dataset id and press **Show configs**.",
        "输入 Hub 数据集 ID，然后点击“**显示配置**”。",
    ),
    "data.hub.no_id": ("Type a Hub dataset id first (owner/name).", "请先输入 Hub 数据集 ID（owner/name）。"),
    "data.hub.choices": (
        "**{repo}**: {configs} config(s); pick one and its split, then **Download and use**.",
        "**{repo}**：{configs} 个配置；选好配置和划分后点击“**下载并使用**”。",
    ),
    "data.hub.starting": ("⏳ Downloading **{repo}**…", "⏳ 正在下载 **{repo}**……"),
    "data.hub.progress": ("⏳ **{repo}**: {line}", "⏳ **{repo}**：{line}"),
    "data.hub.done": (
        "✅ Downloaded {what}; it is the dataset now.",
        "✅ 已下载 {what}；现在使用它作为数据集。",
    ),
    "data.hub.cancelling": ("Cancelling the download of **{repo}**…", "正在取消 **{repo}** 的下载……"),
    "data.hub.nothing": ("Nothing is downloading.", "当前没有下载任务。"),
    "data.hub.error": ("❌ {msg}", "❌ {msg}"),
    "data.hub.stopped": ("⏹ {msg}", "⏹ {msg}"),
    "data.hub.added": (
        "Added **{repo}** to the mix: set its limit or share in the table, then **Load / validate**.",
        "已把 **{repo}** 加入混合：在表格中设置条数上限或比例，然后点击“**加载并校验**”。",
    ),
    "data.not_fetched": (
        "{what} is not downloaded yet: press Load / validate (or the Hub panel's Download) to fetch it",
        "{what} 尚未下载：点击“加载并校验”（或 Hub 面板的“下载”）获取",
    ),
    "data.mix": ("Mix datasets", "混合数据集"),
    "data.mix.info": (
        "Several datasets in one run, one row each; the first row is the dataset above. limit: read only its first "
        "N records; share: its part of the mixed records (e.g. 0.3); leave both empty to use all of it. Hub rows "
        "keep their config, split and the commit they were downloaded at. Empty: the dataset above alone.",
        "一次训练使用多个数据集，每行一个；第一行就是上面的数据集。limit：只读前 N 条记录；share：它在混合数据中所占"
        "比例（如 0.3）；两者都留空则全部使用。Hub 数据集保留其配置、划分和下载时的提交。表格为空：只用上面的数据集。",
    ),
    "data.mix.path": ("dataset", "数据集"),
    "data.mix.config": ("config", "配置"),
    "data.mix.split": ("split", "划分"),
    "data.mix.revision": ("revision", "版本"),
    "data.mix.limit": ("limit", "条数上限"),
    "data.mix.share": ("share", "比例"),
    # The on-screen name of data.sources in messages (form.explain); the field has no row of ui/form.py.
    "field.data.sources": ("Mix datasets", "混合数据集"),
}
i18n.add(STRINGS)

COLUMNS = ("path", "config", "split", "revision", "limit", "share")
POLL_S = 0.5  # how often a Download event looks at the transfer's progress


@dataclass
class HubHandles:
    repo: gr.Textbox
    show: gr.Button
    config: gr.Dropdown
    split: gr.Dropdown
    download: gr.Button
    cancel: gr.Button
    add: gr.Button
    status: gr.Markdown
    splits: gr.State
    """{config: [split, ...]} of the dataset last shown, so picking a config offers its splits at once."""
    sources: gr.Dataframe


# ---- build ---------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> HubHandles:
    """The Hub panel and the mix table, in the Data tab's left column; the table feeds data.sources."""
    tr = ctx.tr
    with tr.labelled(gr.Accordion, "data.hub", open=False, elem_id="data-hub-box"):
        with gr.Row(equal_height=True):
            repo = tr.labelled(gr.Textbox, "data.hub.repo", info=True, scale=3, elem_id="data-hub-repo")
            show = tr.text(gr.Button, "data.hub.show", size="sm", scale=1, elem_id="data-hub-show")
        with gr.Row():
            config = tr.labelled(gr.Dropdown, "data.hub.config", info=True, choices=[], elem_id="data-hub-config")
            split = tr.labelled(gr.Dropdown, "data.hub.split", info=True, choices=[], elem_id="data-hub-split")
        with gr.Row():
            download = tr.text(gr.Button, "data.hub.download", variant="primary", size="sm", elem_id="data-hub-get")
            cancel = tr.text(gr.Button, "data.hub.cancel", size="sm", elem_id="data-hub-cancel")
            add = tr.text(gr.Button, "data.hub.add", size="sm", elem_id="data-hub-add")
        # not bound to a key: it shows progress and results, which a language switch must not wipe
        status = gr.Markdown(tr("data.hub.idle"), elem_classes="td-info", elem_id="data-hub-status")
    with tr.labelled(gr.Accordion, "data.mix", open=bool(ctx.defaults.data.sources), elem_id="data-mix-box"):
        tr.text(gr.Markdown, "data.mix.info", elem_classes="td-info")
        sources = gr.Dataframe(
            value=rows_of(ctx.defaults.data.sources),
            headers=headers(tr.lang),
            column_count=len(COLUMNS),
            interactive=True,
            show_label=False,
            elem_id="data-mix",
        )
    h = HubHandles(repo, show, config, split, download, cancel, add, status, gr.State({}), sources)
    ctx.form.add_extra([sources], _apply(h), _show(h))
    return h


def headers(lang: str) -> list[str]:
    return [i18n.t(f"data.mix.{c}", lang) for c in COLUMNS]


def rows_of(sources: list[DataSource]) -> list[list[Any]]:
    """The table rows of data.sources (empty numbers as empty cells)."""
    return [["" if getattr(s, c) is None else getattr(s, c) for c in COLUMNS] for s in sources]


def _frame(rows: list[list[Any]], lang: str) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers(lang))


# ---- table <-> data.sources --------------------------------------------------------------------------------------
def table_rows(value: Any) -> list[list[Any]]:
    """The table's rows as lists (a DataFrame from the browser, {"data": ...} or a list of rows from a test), rows
    without a dataset left out."""
    if isinstance(value, pd.DataFrame):
        rows = value.values.tolist()
    else:
        rows = list((value.get("data") if isinstance(value, dict) else value) or [])
    out = [(list(row) + [""] * len(COLUMNS))[: len(COLUMNS)] for row in rows]
    return [row for row in out if _text(row[0])]


def sources_of(value: Any, path: str) -> list[dict[str, Any]]:
    """data.sources from the table: the first row is the dataset in the path field (when the field names another,
    that row becomes it, with its limit and share but not the other dataset's config, split and revision). One
    plain row is no mix: []. Raises ConfigError for a limit or share that is not a number."""
    out = []
    for k, row in enumerate(table_rows(value)):
        entry = {c: _text(v) for c, v in zip(COLUMNS[:4], row[:4], strict=True)}
        entry["limit"] = _number(row[4], int, f"data.sources[{k}].limit")
        entry["share"] = _number(row[5], float, f"data.sources[{k}].share")
        out.append(entry)
    if out and out[0]["path"] != path.strip():
        out[0] = {"path": path.strip(), "limit": out[0]["limit"], "share": out[0]["share"]}
    plain = len(out) == 1 and not any(v for key, v in out[0].items() if key != "path")
    return [] if plain else out


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def _number(value: Any, kind: type, key: str) -> Any:
    text = _text(value)
    if not text or text.lower() == "nan":
        return None
    try:
        number = float(text)
    except ValueError:
        raise ConfigError([f"{key}: {text!r} is not a number"]) from None
    if kind is int and number != int(number):
        raise ConfigError([f"{key}: {text} is not a whole number of records"])
    return kind(number)


def _apply(h: HubHandles) -> Callable[[dict[str, Any], dict[Any, Any]], None]:
    def apply(cfg: dict[str, Any], values: dict[Any, Any]) -> None:
        cfg["data"]["sources"] = sources_of(values.get(h.sources), cfg["data"]["path"])

    return apply


def _show(h: HubHandles) -> Callable[[Any], dict[Any, Any]]:
    def show(cfg: Any) -> dict[Any, Any]:
        return {h.sources: gr.update(value=rows_of(cfg.data.sources))}

    return show


# ---- handlers ----------------------------------------------------------------------------------------------------
def show_choices(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """The dataset's configs and splits in the dropdowns (the default config and train first), or one line saying
    why not (unreachable within 3 s, not found, gated)."""
    h, lang = ctx.data.hub, ctx.lang(values)
    repo = _text(values.get(h.repo))
    if not repo:
        return {h.status: i18n.t("data.hub.no_id", lang)}
    try:
        configs, splits = hub_data.dataset_choices(repo)
    except hub.HubError as exc:
        return {h.status: i18n.t("data.hub.error", lang, msg=str(exc))}
    return {
        h.config: gr.update(choices=configs, value=configs[0]),
        **_split_update(h, splits.get(configs[0], [])),
        h.splits: splits,
        h.status: i18n.t("data.hub.choices", lang, repo=repo, configs=len(configs)),
    }


def _split_update(h: HubHandles, names: list[str]) -> dict[Any, Any]:
    value = hub_data.DEFAULT_SPLIT if hub_data.DEFAULT_SPLIT in names else (names[0] if names else None)
    return {h.split: gr.update(choices=names, value=value)}


def pick_config(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    h = ctx.data.hub
    return _split_update(h, (values.get(h.splits) or {}).get(values.get(h.config), []))


def download(ctx: AppContext, values: dict[Any, Any], load: Callable[..., dict[Any, Any]]) -> Iterator[dict]:
    """Download the picked config and split as the app's one download (progress every half second), then use it as
    the dataset (`_use`). The same dataset already downloading: this page follows it; another download running:
    one line saying which."""
    h, lang = ctx.data.hub, ctx.lang(values)
    repo = _text(values.get(h.repo))
    if not repo:
        yield {h.status: i18n.t("data.hub.no_id", lang)}
        return
    config, split = _text(values.get(h.config)) or None, _text(values.get(h.split)) or None

    def work(report: Callable[[hub.Progress], None], cancel: threading.Event) -> hub_data.DatasetDownload:
        return hub_data.download_dataset(repo, config, split, None, report, cancel)

    try:
        transfer = hub.start(dataset_key(repo, config, split), work, "dataset")
    except hub.Busy as exc:
        yield {h.status: hub_panel.busy_line(exc, lang)}
        return
    yield from _follow(ctx, transfer, values, load, lang)


def dataset_key(repo: str, config: str | None, split: str | None) -> str:
    """The name of a dataset download (its app.hub.start key): 'owner/name (config, split)', the parts given."""
    bits = [b for b in (config, split) if b]
    return f"{repo} ({', '.join(bits)})" if bits else repo


def watch(ctx: AppContext, values: dict[Any, Any], load: Callable[..., dict[Any, Any]]) -> Iterator[dict]:
    """On page load: a dataset download that runs (started before a refresh, or on another page) is drawn here too,
    and its dataset loads when it ends (a model's is the Model tab's to draw)."""
    transfer = hub.current()
    if transfer is None or transfer.repo_type != "dataset":
        yield {ctx.data.hub.status: gr.skip()}
        return
    yield from _follow(ctx, transfer, values, load, ctx.lang(values))


def _follow(
    ctx: AppContext, transfer: hub.Transfer, values: dict[Any, Any], load: Callable[..., dict], lang: str
) -> Iterator[dict]:
    """The progress line while the transfer's thread lives (redrawn when it changes), then how it ended. Closing
    this generator (the page went away) leaves the transfer running: the next page's `watch` picks it up."""
    h, shown = ctx.data.hub, None
    while transfer.alive():
        if transfer.progress is None:
            text = i18n.t("data.hub.starting", lang, repo=transfer.key)
        else:
            text = i18n.t(
                "data.hub.progress", lang, repo=transfer.key, line=hub_panel.progress_line(transfer.progress, lang)
            )
        if text != shown:
            shown = text
            yield {h.status: text}
        transfer.wait(POLL_S)
    err = transfer.error
    if err is not None:
        key = "data.hub.stopped" if err.kind == "cancelled" else "data.hub.error"
        yield {h.status: i18n.t(key, lang, msg=str(err))}
        return
    yield _use(ctx, transfer.result, values, load, lang)


def _use(
    ctx: AppContext, got: hub_data.DatasetDownload, values: dict[Any, Any], load: Callable[..., dict], lang: str
) -> dict[Any, Any]:
    """The downloaded dataset becomes the dataset: the path field names it, the mix table holds it with the commit
    it came from, and `load` (the Data tab's Load) shows its records, problems and statistics."""
    h, path = ctx.data.hub, ctx.data.fields["data.path"]
    rows = [[got.repo_id, got.config, got.split or "", got.sha, "", ""]]
    out = load(ctx, {**values, path: got.repo_id, h.sources: rows})
    out.update({path: got.repo_id, h.sources: gr.update(value=_frame(rows, lang))})
    out[h.status] = i18n.t("data.hub.done", lang, what=got.describe())
    return out


def cancel(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Stop what is downloading (this dataset, or the download a Busy line named); what arrived whole stays for the
    next Download."""
    h, lang = ctx.data.hub, ctx.lang(values)
    running = hub.current()
    if running is None:
        return {h.status: i18n.t("data.hub.nothing", lang)}
    running.cancel.set()
    return {h.status: i18n.t("data.hub.cancelling", lang, repo=running.key)}


def add_to_mix(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Append the picked Hub dataset (config, split) to the mix table, after the dataset in the path field; Load
    downloads it when it is not here yet."""
    h, lang = ctx.data.hub, ctx.lang(values)
    repo = _text(values.get(h.repo))
    if not repo:
        return {h.status: i18n.t("data.hub.no_id", lang)}
    rows = table_rows(values.get(h.sources))
    current = _text(values.get(ctx.data.fields["data.path"]))
    if not rows and current:
        rows = [[current, "", "", "", "", ""]]
    rows.append([repo, _text(values.get(h.config)), _text(values.get(h.split)), "", "", ""])
    return {h.sources: gr.update(value=_frame(rows, lang)), h.status: i18n.t("data.hub.added", lang, repo=repo)}


def follow_path(ctx: AppContext, path: str, value: Any, lang: str = "en") -> Any:
    """The path field changed (picker, upload, typing, a preset): the table's first row becomes that dataset; a
    table of that one plain dataset empties."""
    rows = table_rows(value)
    if not rows or _text(rows[0][0]) == _text(path):
        return gr.skip()
    rows[0] = [_text(path), "", "", "", rows[0][4], rows[0][5]]
    keep = len(rows) > 1 or any(_text(v) for v in rows[0][1:])
    return gr.update(value=_frame(rows if keep else [], lang))


# ---- wiring ------------------------------------------------------------------------------------------------------
def wire(
    ctx: AppContext, h: HubHandles, path: Any, inputs: set[Any], views: list[Any], load: Callable[..., dict]
) -> None:
    """Connect the panel: `path` is the path field, `inputs` and `views` the Data tab's Load inputs and outputs,
    `load` its handler."""
    lang_in = {ctx.lang_selector} if ctx.lang_selector is not None else set()
    mine = {h.repo, *lang_in}
    h.show.click(
        lambda v: show_choices(ctx, v),
        inputs=mine,
        outputs=[h.config, h.split, h.splits, h.status],
        api_name="data_hub_choices",
    )
    h.repo.submit(lambda v: show_choices(ctx, v), inputs=mine, outputs=[h.config, h.split, h.splits, h.status])
    h.config.input(lambda v: pick_config(ctx, v), inputs={h.config, h.splits}, outputs=[h.split])

    def download_event(values: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        yield from download(ctx, values, load)

    def watch_event(values: dict[Any, Any]) -> Iterator[dict[Any, Any]]:
        yield from watch(ctx, values, load)

    flow = [h.status, path, h.sources, *views]
    h.download.click(
        download_event,
        inputs=inputs | {h.repo, h.config, h.split},
        outputs=flow,
        api_name="data_hub_download",
        concurrency_limit=None,  # mostly asleep: the transfer is the app's one download, whatever pages follow it
    )
    if ctx.demo is not None:  # a page opened while a dataset downloads draws it, then loads it
        ctx.demo.load(
            watch_event,
            inputs=inputs,
            outputs=flow,
            api_name="data_hub_watch",
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
    h.cancel.click(lambda v: cancel(ctx, v), inputs=mine, outputs=[h.status], api_name="data_hub_cancel")
    h.add.click(
        lambda v: add_to_mix(ctx, v),
        inputs=mine | {h.config, h.split, h.sources, path},
        outputs=[h.sources, h.status],
        api_name="data_hub_add",
    )
    if ctx.lang_selector is not None:  # the idle line and the table's headers follow the language
        i18n.keep_result_on_switch(ctx.lang_selector, h.status, "data.hub.idle")
        ctx.lang_selector.change(
            lambda lang, table: gr.update(value=_frame(table_rows(table), lang)),
            inputs=[ctx.lang_selector, h.sources],
            outputs=h.sources,
            show_progress="hidden",
            api_visibility="private",
        )
    path.change(
        lambda p, table, *lang: follow_path(ctx, p, table, *lang),
        inputs=[path, h.sources, *lang_in],
        outputs=h.sources,
        show_progress="hidden",
        trigger_mode="always_last",
        api_visibility="private",
    )
