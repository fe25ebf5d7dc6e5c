"""Model tab: get a model from the Hugging Face Hub. Search (with size, license, gating, what the cache holds and
whether a LoRA / QLoRA run fits this machine), Download with a progress bar and Cancel, and the Hub token.

Everything about the Hub goes through app.hub (huggingface_hub underneath): this module only lays out widgets,
starts the transfer and draws what it reports.

Download: the model named in the Base model field (a catalog id or a Hub id; picking a search row fills it in).
The transfer is the app's one download (app.hub.start, shared with the Data tab's datasets: one at a time), and
the Download event is a generator that draws its progress twice a second, so the bar moves; Cancel sets the
transfer's threading.Event, which app.hub checks on every chunk. Pressing Download again after a Cancel or a
crash fetches only what is missing: huggingface_hub 2.4 keeps the files that arrived whole and restarts the file
that was in flight.

A page refresh: the transfer belongs to the app, not to the page, so it goes on (as a training run does), and a
page that opens while it runs draws it again (`watch`, on page load) and can Cancel it. "Downloading" is never a
stored flag: it is the transfer's thread being alive, so nothing can show it after the thread ended.

`progress_line` and `busy_line` word app.hub's progress and its one-at-a-time refusal in the page's language;
the Data tab's Hub panel uses them too.

The token goes from its password box to app.hub.login (huggingface_hub's token store) and nowhere else: the box
is no form widget (so never in the last form, a preset or a run config), it is cleared after Save, and no message
repeats it.
"""

from __future__ import annotations

import functools
import html
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import catalog, estimate, hub, memory
from app.config import ConfigError, RunConfig
from app.ui import i18n, plots

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "hub.download": ("Download", "下载"),
    "hub.cancel": ("Cancel download", "取消下载"),
    "hub.consent": ("Allow pickle weights", "允许 pickle 权重"),
    "hub.consent.info": (
        "This repo has only pytorch_model*.bin weights: loading a pickle file can run code. Tick only if you trust "
        "its author, then press Download again.",
        "该仓库只有 pytorch_model*.bin 权重：加载 pickle 文件可能执行代码。只有信任作者时才勾选，然后再次点击“下载”。",
    ),
    "hub.section": ("Find a model on the Hugging Face Hub", "在 Hugging Face Hub 上查找模型"),
    "hub.query": ("Search the Hub", "搜索 Hub"),
    "hub.query.info": (
        "A name (llama 3.2 1b) or a Hub id (owner/name). Pick a row to put it in Base model, then Download.",
        "输入名称（如 llama 3.2 1b）或 Hub ID（owner/name）。点选一行即填入“基础模型”，再点击“下载”。",
    ),
    "hub.search": ("Search", "搜索"),
    "hub.results": ("Models on the Hub", "Hub 上的模型"),
    "hub.col.id": ("model", "模型"),
    "hub.col.downloads": ("downloads", "下载量"),
    "hub.col.weights": ("weights", "权重大小"),
    "hub.col.license": ("license", "许可证"),
    "hub.col.gated": ("gated", "需授权"),
    "hub.col.state": ("cached", "已缓存"),
    "hub.col.lora": ("LoRA", "LoRA"),
    "hub.col.qlora": ("QLoRA", "QLoRA"),
    "hub.yes": ("yes", "是"),
    "hub.no": ("no", "否"),
    "hub.unknown": ("?", "?"),
    "hub.state.ready": ("ready", "已就绪"),
    "hub.state.partial": ("partial", "不完整"),
    "hub.state.absent": ("-", "-"),
    "hub.found": (
        "{count} models found for '{query}'. LoRA / QLoRA: whether such a run fits {device} with this form's "
        "settings (the memory estimate from each model's config.json). Cached: what this machine holds.",
        "“{query}”找到 {count} 个模型。LoRA / QLoRA：按当前表单设置，这样的训练能否装进 {device}（由各模型的 "
        "config.json 估算）。已缓存：本机已有的部分。",
    ),
    "hub.none_found": ("No model on the Hub matches '{query}'.", "Hub 上没有与“{query}”匹配的模型。"),
    "hub.no_query": ("Type a name or a Hub id to search.", "请输入名称或 Hub ID 再搜索。"),
    "hub.picked": (
        "Base model set to {id}: press Download, then Load.",
        "基础模型已设为 {id}：点击“下载”，然后“加载”。",
    ),
    "hub.downloading": ("Downloading **{id}**...", "正在下载 **{id}**..."),
    "hub.planning": ("Checking **{id}** on the Hub...", "正在 Hub 上查询 **{id}**..."),
    "hub.done": (
        "✅ Downloaded **{id}** ({size}) into the Hugging Face cache. Press Load to load it.",
        "✅ 已下载 **{id}**（{size}）到 Hugging Face 缓存。点击“加载”即可载入。",
    ),
    "hub.ready": (
        "**{id}** is already downloaded (complete in the Hugging Face cache): press Load.",
        "**{id}** 已下载（Hugging Face 缓存中完整）：点击“加载”。",
    ),
    "hub.local": (
        "**{name}** is on this machine already (a folder, a .gguf file or the bundled default model): press Load.",
        "**{name}** 已在本机（文件夹、.gguf 文件或内置默认模型）：点击“加载”。",
    ),
    "hub.no_name": (
        "Name a model in Base model (or pick a search row) first.",
        "请先在“基础模型”中填写模型（或点选搜索结果）。",
    ),
    "hub.busy.model": (
        "The model **{other}** is downloading now (one download at a time, models and datasets alike): wait for "
        "it or cancel it.",
        "模型 **{other}** 正在下载（模型和数据集一次只下载一个）：请等待或取消它。",
    ),
    "hub.busy.dataset": (
        "The dataset **{other}** is downloading now (one download at a time, models and datasets alike): wait for "
        "it or cancel it.",
        "数据集 **{other}** 正在下载（模型和数据集一次只下载一个）：请等待或取消它。",
    ),
    "hub.progress.bytes": ("{done} of {total}", "{done} / {total}"),
    "hub.progress.eta": ("{eta} left", "剩余 {eta}"),
    "hub.progress.files": ("{files} files", "{files} 个文件"),
    "hub.cancelling": ("Cancelling the download of **{id}**...", "正在取消 **{id}** 的下载..."),
    "hub.nothing": ("Nothing is downloading.", "当前没有下载任务。"),
    "hub.error": ("❌ {msg}", "❌ {msg}"),
    "hub.stopped": ("⏹ {msg}", "⏹ {msg}"),
    "hub.token_section": ("Hub token (gated and private models)", "Hub 令牌（需授权或私有模型）"),
    "hub.token": ("Access token", "访问令牌"),
    "hub.token.info": (
        "A read token from huggingface.co/settings/tokens. Saved in huggingface_hub's own token store (as "
        "`hf auth login` does), never in TuneDesk's settings, runs or logs.",
        "来自 huggingface.co/settings/tokens 的只读令牌。保存在 huggingface_hub 自己的令牌存储中（与 `hf auth login` "
        "相同），不会写入 TuneDesk 的设置、训练记录或日志。",
    ),
    "hub.save_token": ("Save token", "保存令牌"),
    "hub.forget_token": ("Forget token", "删除令牌"),
    "hub.who": ("Logged in to the Hub as **{user}**.", "已以 **{user}** 身份登录 Hub。"),
    "hub.saved": ("A Hub token is saved (named **{name}**).", "已保存 Hub 令牌（名称 **{name}**）。"),
    "hub.who_none": (
        "No Hub token saved: public models only. Gated models need a read token and their license accepted.",
        "未保存 Hub 令牌：只能下载公开模型。需授权的模型要有只读令牌并已接受其许可证。",
    ),
    "hub.forgotten": ("Token removed from this machine's token store.", "已从本机令牌存储中删除令牌。"),
}
i18n.add(STRINGS)

COLUMNS = ("id", "downloads", "weights", "license", "gated", "state", "lora", "qlora")
FIT_METHODS = ("lora", "qlora")
FIT_HITS = 8  # hits whose config.json is read for the fit columns: one small request each, in parallel
SEARCH_LIMIT = 20
POLL_S = 0.5  # how often the Download event redraws the bar


@dataclass
class HubHandles:
    download: gr.Button
    cancel: gr.Button
    consent: gr.Checkbox
    progress: gr.HTML
    status: gr.Markdown
    query: gr.Textbox
    search: gr.Button
    results: gr.Dataframe
    hits: gr.State
    token: gr.Textbox
    save_token: gr.Button
    forget_token: gr.Button
    who: gr.Markdown


# ---- build -----------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> HubHandles:
    """Download / Cancel under the Load row, then the Hub search and the token in folded sections."""
    tr = ctx.tr
    with gr.Row():
        download = tr.text(gr.Button, "hub.download", min_width=100, elem_id="hub-download")
        cancel = tr.text(gr.Button, "hub.cancel", visible=False, min_width=100, elem_id="hub-cancel")
    consent = tr.labelled(gr.Checkbox, "hub.consent", info=True, value=False, visible=False, elem_id="hub-consent")
    progress = gr.HTML("", elem_id="hub-progress")
    status = gr.Markdown("", elem_id="hub-status", elem_classes="td-status")
    with tr.labelled(gr.Accordion, "hub.section", open=False, elem_id="hub-section"):
        with gr.Row():
            query = tr.labelled(gr.Textbox, "hub.query", info=True, scale=4, elem_id="hub-query")
            search = tr.text(gr.Button, "hub.search", scale=1, min_width=100, elem_id="hub-search")
        results = tr.labelled(
            gr.Dataframe,
            "hub.results",
            value=results_table([], tr.lang),
            interactive=False,
            wrap=True,
            column_widths=["28%", "12%", "11%", "12%", "9%", "9%", "9%", "10%"],
            elem_id="hub-results",
        )
        hits = gr.State([])
        with tr.labelled(gr.Accordion, "hub.token_section", open=False):
            token = tr.labelled(gr.Textbox, "hub.token", info=True, type="password", value="", elem_id="hub-token")
            with gr.Row():
                save_token = tr.text(gr.Button, "hub.save_token", size="sm", elem_id="hub-save-token")
                forget_token = tr.text(gr.Button, "hub.forget_token", size="sm", elem_id="hub-forget-token")
            who = gr.Markdown("", elem_id="hub-who")
    return HubHandles(
        download, cancel, consent, progress, status, query, search, results, hits, token, save_token, forget_token, who
    )


def wire(ctx: AppContext, h: HubHandles) -> None:
    """The panel's events (called from the Model tab's wire, once every form widget exists: the fit columns read
    the form's batch, sequence length and LoRA settings)."""
    name, lang = ctx.form.components["model.name_or_path"], ctx.lang_selector
    quiet = {"show_progress": "hidden", "api_visibility": "private"}
    gr.on(
        [h.search.click, h.query.submit],
        functools.partial(search, ctx, h),
        inputs=ctx.form.inputs() | {h.query, lang},
        outputs=[h.results, h.hits, h.status],
        api_name="hub_search",
        api_visibility="private",
    )

    def _pick(hits: list[dict[str, Any]], lg: str, evt: gr.SelectData) -> dict[Any, Any]:
        return pick(ctx, h, hits, lg, evt)

    h.results.select(_pick, inputs=[h.hits, lang], outputs=[name, h.status], api_name="hub_pick", **quiet)
    name.change(lambda: gr.update(visible=False, value=False), outputs=h.consent, **quiet)  # consent is per repo
    flow = [h.progress, h.status, h.cancel, h.consent]
    common = {"concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}  # mostly asleep
    h.download.click(
        functools.partial(download, ctx, h), inputs={name, h.consent, lang}, outputs=flow, api_name="hub_download",
        **common,
    ).then(_refresh_choices, outputs=name, **quiet)  # fmt: skip
    ctx.demo.load(_refresh_choices, outputs=name, **quiet)  # downloads made by the CLI or another page
    h.cancel.click(functools.partial(cancel, h), inputs=lang, outputs=h.status, api_name="hub_cancel", **quiet)
    ctx.demo.load(functools.partial(watch, h), inputs=lang, outputs=flow, api_name="hub_watch", **common)
    h.save_token.click(
        functools.partial(save_token, ctx, h), inputs={h.token, lang}, outputs=[h.token, h.who],
        api_name="hub_save_token", **quiet,
    )  # fmt: skip
    h.forget_token.click(
        functools.partial(forget_token, h), inputs=lang, outputs=[h.token, h.who], api_name="hub_forget_token",
        **quiet,
    )  # fmt: skip
    ctx.demo.load(who_line, inputs=lang, outputs=h.who, **quiet)
    lang.change(
        lambda hits, lg: (results_table(hits, lg), who_line(lg)), inputs=[h.hits, lang], outputs=[h.results, h.who],
        **quiet,
    )  # fmt: skip


def base_choices() -> list[str]:
    """The Base model list: the catalog, then the Hub models downloaded whole (a partial download is never listed)."""
    known = catalog.ids()
    return known + [m for m in hub.downloaded("model") if catalog.lookup(m) is None]


def _refresh_choices() -> dict[str, Any]:
    return gr.update(choices=base_choices())


# ---- search ----------------------------------------------------------------------------------------------------
def search(ctx: AppContext, h: HubHandles, values: dict[Any, Any]) -> dict[Any, Any]:
    """The Hub's models matching the query, with the fit columns for the form's settings on this machine."""
    lang = ctx.lang(values)
    query = str(values.get(h.query) or "").strip()
    if not query:
        return {h.results: gr.skip(), h.hits: gr.skip(), h.status: i18n.t("hub.no_query", lang)}
    try:
        found = hub.search_models(query, limit=SEARCH_LIMIT)
    except hub.HubError as exc:
        return {h.results: results_table([], lang), h.hits: [], h.status: i18n.t("hub.error", lang, msg=str(exc))}
    cfg = _form_config(ctx, values)
    target = estimate.Target.of(cfg.train.device)
    hits = [_hit(s) for s in found]
    with ThreadPoolExecutor(max_workers=4) as pool:
        fits = list(pool.map(lambda s: fits_of(s.id, cfg, target), found[:FIT_HITS]))
    for hit, fit in zip(hits, fits, strict=False):
        hit.update(fit)
    if not hits:
        note = i18n.t("hub.none_found", lang, query=query)
    else:
        device = i18n.t("model.device.cpu", lang) if target.kind == "cpu" else target.label
        note = i18n.t("hub.found", lang, count=len(hits), query=query, device=device)
    return {h.results: results_table(hits, lang), h.hits: hits, h.status: note}


def _hit(summary: hub.RepoSummary) -> dict[str, Any]:
    """A search hit as plain data (kept in the page's State)."""
    return {
        "id": summary.id,
        "downloads": summary.downloads,
        "weights": summary.weights_bytes,
        "license": summary.license,
        "gated": summary.gated,
        "state": summary.state,
    }


def _form_config(ctx: AppContext, values: dict[Any, Any]) -> RunConfig:
    """The form's settings (batch, sequence length, LoRA rank...) for the fit columns; the defaults while the form
    holds a problem (Start names it; search need not)."""
    try:
        return ctx.form.to_config(values, lenient=True)
    except ConfigError:
        return ctx.defaults


def fits_of(repo_id: str, cfg: RunConfig, target: estimate.Target) -> dict[str, bool | None]:
    """{"lora": fits, "qlora": fits} for `repo_id` with `cfg`'s settings on `target`: the estimate from the model's
    config.json (the catalog's numbers or the cached file when here, else fetched: a few KB). {} when the config
    cannot be read (gated without a token, not a decoder-only model)."""
    try:
        arch = architecture(repo_id)
    except (hub.HubError, memory.EstimateError, ValueError, OSError):
        return {}
    rows = estimate.compare_methods(arch, cfg.replace(**{"model.name_or_path": repo_id}), target.kind,
                                    target.capacity_bytes)  # fmt: skip
    return {row["method"]: row["fits"] for row in rows if row["method"] in FIT_METHODS}


@functools.lru_cache(maxsize=128)
def architecture(repo_id: str) -> memory.Architecture:
    """A Hub model's architecture without its weights; cached: a repo's config.json does not change under a search."""
    try:
        return memory.architecture_from(repo_id)
    except memory.EstimateError:
        config = hub.fetch_config(repo_id)
    return memory.architecture_from_config(config, repo_id, f"hub:{repo_id}")


def results_table(hits: list[dict[str, Any]], lang: str = "en") -> pd.DataFrame:
    """The hits as a table in the page's language; no hits: the headers alone."""
    t = functools.partial(i18n.t, lang=lang)
    yes_no = {True: t("hub.yes"), False: t("hub.no")}
    rows = [
        [
            hit["id"],
            plots.fmt_count(hit["downloads"]) if hit.get("downloads") is not None else t("hub.unknown"),
            hub.fmt_bytes(hit["weights"]) if hit.get("weights") else t("hub.unknown"),
            hit.get("license") or t("hub.unknown"),
            yes_no[bool(hit.get("gated"))],
            t(f"hub.state.{hit.get('state') or 'absent'}"),
            *(yes_no.get(hit.get(m), t("hub.unknown")) for m in FIT_METHODS),
        ]
        for hit in hits or []
    ]
    return pd.DataFrame(rows, columns=[t(f"hub.col.{c}") for c in COLUMNS])


def pick(ctx: AppContext, h: HubHandles, hits: list[dict[str, Any]], lang: str, evt: Any) -> dict[Any, Any]:
    """A row picked (`evt`: Gradio's SelectData, which names the row): its Hub id goes into the Base model field,
    which Download and Load then use."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    name = ctx.form.components["model.name_or_path"]
    if not hits or not isinstance(row, int) or not 0 <= row < len(hits):
        return {name: gr.skip(), h.status: gr.skip()}
    repo = hits[row]["id"]
    return {name: gr.update(value=repo), h.status: i18n.t("hub.picked", lang or "en", id=repo)}


# ---- download --------------------------------------------------------------------------------------------------
def repo_of(name: str) -> str | None:
    """The Hub repo a Base model name downloads from: a catalog id's Hub id, or the name itself (owner/name); None
    for a folder, a .gguf file or the bundled default model, which are on this machine already."""
    from app import modeling  # hub_id_of, DEFAULT_ALIASES; the app's warm-up imports it anyway

    name = name.strip()
    hub_id = modeling.hub_id_of(name)  # the catalog's Hub id, or an owner/name id
    if hub_id is not None:
        return hub_id
    path = Path(name).expanduser()
    if name in modeling.DEFAULT_ALIASES or name.startswith((".", "/", "~")) or path.suffix == ".gguf" or path.exists():
        return None
    return name  # neither here nor an id: app.hub says what a Hub id looks like


def download(ctx: AppContext, h: HubHandles, values: dict[Any, Any]) -> Any:
    """Download the model named in Base model (generator: each yield redraws the bar). Checks what it will fetch
    and the free disk first (app.hub.plan_download, check_disk); a refusal is one line."""
    lang = ctx.lang(values)
    name = str(values.get(ctx.form.components["model.name_or_path"]) or "").strip()
    idle = {h.progress: "", h.cancel: gr.update(visible=False), h.consent: gr.skip()}
    if not name:
        yield {**idle, h.status: i18n.t("hub.no_name", lang)}
        return
    repo = repo_of(name)
    if repo is None:
        yield {**idle, h.status: i18n.t("hub.local", lang, name=name)}
        return
    if hub.cached_state(repo) == "ready":
        yield {**idle, h.status: i18n.t("hub.ready", lang, id=repo)}
        return
    yield {**idle, h.status: i18n.t("hub.planning", lang, id=repo)}
    try:
        plan = hub.plan_download(repo, allow_pickle=bool(values.get(h.consent)))
        hub.check_disk(plan)
        transfer = hub.start(plan.repo_id, functools.partial(hub.download, plan))
    except hub.Busy as exc:
        yield {**idle, h.status: busy_line(exc, lang), h.cancel: gr.update(visible=True)}
        return
    except hub.HubError as exc:
        yield {**idle, **_refusal(h, exc, lang)}
        return
    yield from _follow(h, transfer, lang)


def _refusal(h: HubHandles, exc: hub.HubError, lang: str) -> dict[Any, Any]:
    out = {h.status: i18n.t("hub.error", lang, msg=str(exc))}
    if exc.kind == "consent":
        out[h.consent] = gr.update(visible=True, value=False)
    return out


def busy_line(exc: hub.Busy, lang: str) -> str:
    """The one-at-a-time refusal, naming what is downloading (a model or a dataset)."""
    return i18n.t(f"hub.busy.{exc.repo_type}", lang, other=exc.key)


def watch(h: HubHandles, lang: str) -> Any:
    """On page load: a model download that runs (started before a refresh, or from another page) is drawn here too
    (a dataset's is the Data tab's to draw)."""
    transfer = hub.current()
    if transfer is None or transfer.repo_type != "model":
        yield {h.progress: gr.skip()}  # an empty dict reads as no value for four outputs
        return
    yield from _follow(h, transfer, lang or "en")


def _follow(h: HubHandles, transfer: hub.Transfer, lang: str) -> Any:
    """Redraw the bar every POLL_S while the transfer's thread lives, then its outcome. Closing this generator (the
    page went away) leaves the transfer running: the next page's `watch` picks it up."""
    while transfer.alive():
        yield {
            h.progress: progress_html(transfer.progress, "running", lang),
            h.status: i18n.t("hub.downloading", lang, id=transfer.key),
            h.cancel: gr.update(visible=True),
            h.consent: gr.skip(),
        }
        transfer.wait(POLL_S)
    yield {**_outcome(h, transfer, lang), h.cancel: gr.update(visible=False), h.consent: gr.update(visible=False)}


def _outcome(h: HubHandles, transfer: hub.Transfer, lang: str) -> dict[Any, Any]:
    err, last = transfer.error, transfer.progress
    if err is None:  # app.hub.download reports every byte done as it returns
        size = hub.fmt_bytes(last.total_bytes if last is not None else 0)
        return {
            h.progress: progress_html(last, "finished", lang),
            h.status: i18n.t("hub.done", lang, id=transfer.key, size=size),
        }
    key = "hub.stopped" if err.kind == "cancelled" else "hub.error"
    state = "stopped" if err.kind == "cancelled" else "failed"
    return {h.progress: progress_html(last, state, lang), h.status: i18n.t(key, lang, msg=str(err))}


def progress_line(progress: hub.Progress, lang: str) -> str:
    """app.hub's progress in the page's language: "312.0 MB of 1.2 GB · 45.0 MB/s · 20 s left · 3/7 files"."""
    parts = progress.parts()
    out = [i18n.t("hub.progress.bytes", lang, **parts)]
    if parts["speed"]:
        out.append(parts["speed"])
    if parts["eta"]:
        out.append(i18n.t("hub.progress.eta", lang, **parts))
    out.append(i18n.t("hub.progress.files", lang, **parts))
    return " · ".join(out)


def progress_html(progress: hub.Progress | None, state: str, lang: str = "en") -> str:
    """The bar (styled as the Train tab's, style.css .td-progress) with the progress line: bytes, speed, time left;
    an empty bar until the transfer's first report."""
    share = 1.0 if state == "finished" else progress.fraction if progress is not None else 0.0
    text = html.escape(progress_line(progress, lang)) if progress is not None else ""
    return (
        f'<div class="td-progress td-{state}" data-fraction="{share:.4f}"><div class="td-bar" '
        f'style="width:{share * 100:.1f}%"></div><div class="td-progress-text">{text}</div></div>'
    )


def cancel(h: HubHandles, lang: str) -> Any:
    """Cancel sets the running transfer's flag (a model's, or the dataset's the Busy line named); the event that
    follows it then shows how it ended."""
    lg = lang or "en"
    transfer = hub.current()
    if transfer is None:
        return i18n.t("hub.nothing", lg)
    transfer.cancel.set()
    return i18n.t("hub.cancelling", lg, id=transfer.key)


# ---- token -----------------------------------------------------------------------------------------------------
def save_token(ctx: AppContext, h: HubHandles, values: dict[Any, Any]) -> dict[Any, Any]:
    """Hand the token to app.hub.login (checked with the Hub, kept in huggingface_hub's store); the box is cleared
    either way and no message repeats the token."""
    lang = ctx.lang(values)
    try:
        user = hub.login(str(values.get(h.token) or ""))
    except hub.HubError as exc:
        return {h.token: gr.update(value=""), h.who: i18n.t("hub.error", lang, msg=str(exc))}
    return {h.token: gr.update(value=""), h.who: i18n.t("hub.who", lang, user=user)}


def forget_token(h: HubHandles, lang: str) -> dict[Any, Any]:
    """huggingface_hub's logout: the stored token is gone (from the store `hf auth login` writes too)."""
    lg = lang or "en"
    try:
        hub.logout()
    except hub.HubError as exc:
        return {h.token: gr.update(value=""), h.who: i18n.t("hub.error", lg, msg=str(exc))}
    return {h.token: gr.update(value=""), h.who: f"{i18n.t('hub.forgotten', lg)} {who_line(lg)}"}


def who_line(lang: str | None = None) -> str:
    """Whether a token is saved, by its name (app.hub reads the store only: no network, so not the account)."""
    name = hub.saved_token_name()
    lang = lang or "en"
    return i18n.t("hub.saved", lang, name=name) if name else i18n.t("hub.who_none", lang)
