"""The Gradio Blocks app: a header, the tabs, and `python -m app ui`.

Tabs are modules of app.ui, each with `build(ctx: AppContext) -> <its handles dataclass>`, listed in TABS (a
missing one fails at start and in the tests: nothing is left out quietly). A tab module may also define
`wire(ctx: AppContext) -> None`, called once every tab is built: events whose inputs or outputs span tabs (the
memory estimate reads data and train fields; Start reads every form field) are registered there.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import socket
import sys
import threading
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from starlette.middleware import Middleware

from app import access, devices, last_form, paths
from app.config import ConfigError, RunConfig
from app.ui import i18n, pickers
from app.ui.form import Form

if TYPE_CHECKING:  # the tab modules are imported when the app is built (TABS), not when this module is
    from app.ui.chat_tab import ChatHandles
    from app.ui.data_tab import DataHandles
    from app.ui.evaluate_tab import EvaluateHandles
    from app.ui.export_tab import ExportHandles
    from app.ui.model_tab import ModelHandles
    from app.ui.train_tab import TrainHandles

STRINGS = {
    "app.title": ("TuneDesk", "TuneDesk"),
    "app.subtitle": (
        "Point-and-click fine-tuning: Full, Freeze, LoRA and QLoRA on your own machine.",
        "点点鼠标即可微调：在自己的机器上进行全参数、冻结、LoRA 和 QLoRA 训练。",
    ),
    "app.language": ("Language", "语言"),
    "tab.model": ("Model", "模型"),
    "tab.data": ("Data", "数据"),
    "tab.train": ("Train", "训练"),
    "tab.chat": ("Chat", "对话"),
    "tab.export": ("Export", "导出"),
    "tab.evaluate": ("Evaluate", "评估"),
}
i18n.add(STRINGS)

TABS: tuple[tuple[str, str], ...] = (
    ("model", "app.ui.model_tab"),
    ("data", "app.ui.data_tab"),
    ("train", "app.ui.train_tab"),
    ("chat", "app.ui.chat_tab"),
    ("evaluate", "app.ui.evaluate_tab"),
    ("export", "app.ui.export_tab"),
)


@dataclass
class AppContext:
    """What every tab's build() receives: translations, the shared form, and the other tabs' handles.

    `handles` holds each built tab's handles under its TABS key; read them through the typed properties
    (`ctx.train.status`), which name the tab when it was not built (a tab-only test build)."""

    tr: i18n.Translator
    form: Form
    defaults: RunConfig
    handles: dict[str, Any] = field(default_factory=dict)
    lang_selector: Any = None
    demo: Any = None

    def lang(self, values: dict[Any, Any] | None = None) -> str:
        """The session's language: the selector's value when a handler received it, else the app default."""
        if values is not None and self.lang_selector in values:
            return values[self.lang_selector] or self.tr.lang
        return self.tr.lang

    def _tab(self, key: str) -> Any:
        try:
            return self.handles[key]
        except KeyError:
            raise LookupError(f"the {key} tab is not built in this app (built: {sorted(self.handles)})") from None

    @property
    def model(self) -> ModelHandles:
        return self._tab("model")

    @property
    def data(self) -> DataHandles:
        return self._tab("data")

    @property
    def train(self) -> TrainHandles:
        return self._tab("train")

    @property
    def chat(self) -> ChatHandles:
        return self._tab("chat")

    @property
    def evaluate(self) -> EvaluateHandles:
        return self._tab("evaluate")

    @property
    def export(self) -> ExportHandles:
        return self._tab("export")


def default_config(model: str | None = None) -> RunConfig:
    cfg = RunConfig()
    return cfg.replace(**{"model.name_or_path": model}) if model else cfg


def build_app(lang: str = "en", model: str | None = None, defaults: RunConfig | None = None) -> gr.Blocks:
    return build_blocks(lang, model, defaults)[0]


def build_blocks(
    lang: str = "en", model: str | None = None, defaults: RunConfig | None = None
) -> tuple[gr.Blocks, AppContext]:
    """The Blocks and the context holding every tab's handles (tests call handlers through it)."""
    tr = i18n.Translator(lang)
    defaults = defaults or default_config(model)
    ctx = AppContext(tr=tr, form=Form(tr, defaults), defaults=defaults)
    with gr.Blocks(title="TuneDesk") as demo:
        ctx.demo = demo
        _header(ctx, lang)
        modules = {}
        with gr.Tabs(elem_id="tabs"):
            for key, module_name in TABS:
                with tr.labelled(gr.Tab, f"tab.{key}", id=key, elem_id=f"tab-{key}"):
                    ctx.handles[key], modules[key] = _build_tab(module_name, ctx)
        for module in modules.values():
            if hasattr(module, "wire"):
                module.wire(ctx)
        _keep_form(ctx)
        ctx.lang_selector.change(
            lambda lang: _switch(tr, lang),
            inputs=ctx.lang_selector,
            outputs=tr.components(),
            show_progress="hidden",
            api_visibility="private",
        )
    return demo, ctx


# ---- the last form: every setting survives a page refresh and an app restart ---------------------------------
def _keep_form(ctx: AppContext) -> None:
    """Save the form (app.last_form) whenever any of its widgets changes, on every tab: one event for all of them,
    the last change wins (a preset or an opened run changes forty widgets at once)."""
    inputs = ctx.form.inputs()
    gr.on(
        [c.change for c in inputs],
        lambda values: remember_form(ctx, values),
        inputs=inputs,
        outputs=None,
        trigger_mode="always_last",
        show_progress="hidden",
        concurrency_limit=1,
        concurrency_id="last-form",
        api_name="remember_form",
        api_visibility="private",
    )


def remember_form(ctx: AppContext, values: dict[Any, Any]) -> None:
    """Write the form to app.last_form and make it what the next page opens with. A value that does not fit its
    type (never from a typed widget) skips this save; the next change saves again."""
    try:
        cfg = ctx.form.to_config(values, lenient=True)
    except ConfigError:
        return
    last_form.save(cfg)
    show_initially(ctx, cfg)


def show_initially(ctx: AppContext, cfg: RunConfig) -> None:
    """Make `cfg` the value every widget of the form has when a page opens (a refresh, another browser tab).

    Gradio serves each new page the values of `demo.config`; changing them there (and on the components, from
    which launch() rebuilds that config) means every tab's own page-load event (the data preview, the estimate)
    already reads these values, where a separate load event filling the form would race them."""
    entries = {c["id"]: c for c in (ctx.demo.config or {}).get("components", [])}
    for comp, update in ctx.form.updates_from(cfg).items():
        if not isinstance(update, dict) or "value" not in update:
            continue
        value = comp.postprocess(update["value"])
        value = value.model_dump() if hasattr(value, "model_dump") else value
        comp.value = value
        changed = {"value": value, **_offered(comp, value)}
        entry = entries.get(comp._id)
        if entry is not None:  # a new props dict, not keys added to the one a page load may be copying right now
            entry["props"] = {**entry["props"], **changed}


def _offered(comp: Any, value: Any) -> dict[str, Any]:
    """A checkbox group or dropdown of fixed choices opens with `value` ticked: add what its choices lack (the
    target modules of a model other than the default, e.g. GPT-2's c_attn), as the form's own build does."""
    choices = getattr(comp, "choices", None)
    if not isinstance(choices, list) or getattr(comp, "allow_custom_value", False):
        return {}
    known = {c[1] if isinstance(c, (tuple, list)) else c for c in choices}
    missing = [v for v in (value if isinstance(value, list) else [value]) if v is not None and v not in known]
    if not missing:
        return {}
    comp.choices = [(str(v), v) for v in missing] + list(choices)
    return {"choices": comp.choices}


def restore_last_form(ctx: AppContext, model: str | None = None) -> str:
    """At app start: show the last saved form (with `model` when --model named one); returns a note when the
    saved file could not be used, "" otherwise."""
    cfg, note = last_form.load()
    if cfg is not None:
        show_initially(ctx, cfg.replace(**{"model.name_or_path": model}) if model else cfg)
    return note


def _header(ctx: AppContext, lang: str) -> None:
    tr = ctx.tr
    with gr.Row(elem_id="header", equal_height=True):
        with gr.Column(scale=0, min_width=60, elem_id="logo-col"):
            gr.HTML(logo_svg(), elem_id="logo", container=False)
        with gr.Column(scale=5, min_width=300):
            gr.Markdown(f"## {tr('app.title')}", elem_id="title")  # the name: the same in every language
            tr.text(gr.Markdown, "app.subtitle", elem_id="subtitle")
        with gr.Column(scale=1, min_width=180):
            ctx.lang_selector = tr.labelled(
                gr.Radio, "app.language", choices=[("English", "en"), ("中文", "zh")], value=lang, elem_id="lang"
            )


def logo_svg() -> str:
    """The logo inline (no file route needed: the app serves no local paths)."""
    path = paths.assets_dir() / "logo.svg"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _build_tab(module_name: str, ctx: AppContext) -> tuple[Any, Any]:
    module = importlib.import_module(module_name)
    return module.build(ctx), module


def _switch(tr: i18n.Translator, lang: str) -> dict[Any, Any]:
    tr.lang = lang
    return tr.updates(lang)


def css() -> str:
    path = paths.assets_dir() / "style.css"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


# ---- CLI ---------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=int(os.environ.get("TUNEDESK_PORT", 7860)))
    parser.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 (needs --auth)")
    parser.add_argument("--share", action="store_true", help="create a public Gradio link (needs --auth)")
    parser.add_argument(
        "--auth",
        default=None,
        help="USER:PASS required to open the app. Visible to other accounts in `ps`: prefer $TUNEDESK_AUTH or "
        "--auth-file",
    )
    parser.add_argument("--auth-file", default=None, help="a file (only you can read) holding USER:PASS")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[h for h in os.environ.get("TUNEDESK_ALLOWED_HOSTS", "").split(",") if h.strip()],
        metavar="NAME",
        help="also answer requests for this host name (repeatable; $TUNEDESK_ALLOWED_HOSTS, comma-separated); "
        "localhost, 127.0.0.1 and ::1 always work, and with --listen this machine's own names and addresses",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--model", default=None, help="preselect this base model (catalog id, hub id, folder, .gguf)")
    parser.add_argument("--lang", choices=i18n.LANGS, default=os.environ.get("TUNEDESK_LANG", "en"))
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=None,
        help=f"largest file a browser may upload, in MB (default $TUNEDESK_MAX_UPLOAD_MB, else {MAX_UPLOAD_MB})",
    )


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if not auth:
        return None
    user, sep, password = auth.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASS with both parts non-empty")
    return user, password


def resolve_auth(args: argparse.Namespace) -> tuple[tuple[str, str] | None, str | None]:
    """(USER, PASS) from --auth, else --auth-file, else $TUNEDESK_AUTH; and a warning for --auth on the command
    line, which every account on the machine can read in `ps`. Raises ValueError naming the bad source."""
    if args.auth:
        return parse_auth(args.auth), (
            "tunedesk: note: --auth on the command line is visible to other accounts (ps); "
            "prefer TUNEDESK_AUTH=USER:PASS or --auth-file FILE"
        )
    if getattr(args, "auth_file", None):
        path = Path(args.auth_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"--auth-file {path}: cannot read it ({exc.strerror or exc})") from None
        try:
            return parse_auth(text), None
        except ValueError:
            raise ValueError(f"--auth-file {path} must hold USER:PASS on one line, both parts non-empty") from None
    return parse_auth(os.environ.get("TUNEDESK_AUTH")), None


MAX_UPLOAD_MB = 512
"""Upload limit: a 512 MB JSONL is ~1M Alpaca records, more than anyone fine-tunes from a browser upload."""


def max_upload_mb(arg: int | None = None) -> int:
    """--max-upload-mb, else $TUNEDESK_MAX_UPLOAD_MB, else 512. Raises ValueError naming the bad value."""
    raw = arg if arg is not None else os.environ.get("TUNEDESK_MAX_UPLOAD_MB") or MAX_UPLOAD_MB
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"TUNEDESK_MAX_UPLOAD_MB={raw!r} is not a whole number of MB") from None
    if value < 1:
        raise ValueError(f"the upload limit must be at least 1 MB, got {value}")
    return value


def private_upload_dir() -> str:
    """Gradio's upload and download cache ($GRADIO_TEMP_DIR) in a folder only this user can open (mode 700),
    removed at exit and, after a crash, at the next start (app.ui.pickers.private_dir). Gradio's default,
    /tmp/gradio, is created 755, so other accounts on a shared machine could read uploaded datasets. A
    GRADIO_TEMP_DIR set by the user is kept as it is."""
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = str(pickers.private_dir())
    return os.environ["GRADIO_TEMP_DIR"]


def main(args: argparse.Namespace) -> int:
    try:
        auth, warning = resolve_auth(args)
        upload_mb = max_upload_mb(getattr(args, "max_upload_mb", None))
        token = None if auth else access.new_token()
    except ValueError as exc:
        print(f"tunedesk: {exc}", file=sys.stderr)
        return 2
    if (args.listen or args.share) and auth is None:
        print(
            "tunedesk: refusing to serve beyond this machine without a password: --listen and --share expose "
            "training, your files and your models to the network. Set TUNEDESK_AUTH=USER:PASS (or --auth-file "
            "FILE; --auth USER:PASS works too but shows the password in `ps`).",
            file=sys.stderr,
        )
        return 2
    if warning:
        print(warning, file=sys.stderr)
    gate = access.Gate(token, access.allowed_hosts(args.listen, args.share, args.allow_host), args.port)
    pickers.clean_stale_folders()
    private_upload_dir()  # before the Blocks exist: they read GRADIO_TEMP_DIR when created
    # Four events of a kind at once (Gradio's default is 1). Read by the queue that gr.Blocks() creates: calling
    # demo.queue(default_concurrency_limit=4) instead rebuilds the FastAPI app (~170 routes), 0.7 s of cold start.
    os.environ.setdefault("GRADIO_DEFAULT_CONCURRENCY_LIMIT", "4")
    demo, ctx = build_blocks(args.lang, args.model)
    note = restore_last_form(ctx, args.model)
    if note:
        print(f"tunedesk: {note}", file=sys.stderr)
    demo.launch(
        server_name="0.0.0.0" if args.listen else "127.0.0.1",
        server_port=args.port,
        share=args.share,
        auth=auth,
        inbrowser=False,  # opened below, with the token in the address
        quiet=True,  # Gradio's own "Running on" line has no token: ours below does
        css=css(),
        max_file_size=f"{upload_mb}mb",  # over it: HTTP 413 "File size exceeded maximum allowed size of N bytes"
        allowed_paths=[],
        show_error=False,
        ssr_mode=False,  # the gate sits in front of the Python server; a Node front server would bypass it
        app_kwargs={"middleware": [Middleware(access.GateMiddleware, gate=gate)]},
        prevent_thread_lock=True,
    )
    gate.starting = False
    url = gate.url(f"http://127.0.0.1:{demo.server_port}")
    print(f"TuneDesk is running. Open {url}", flush=True)
    if args.listen:
        print(f"Others on your network: http://{socket.gethostname()}:{demo.server_port} (password required)")
    if getattr(demo, "share_url", None):
        print(f"Public link: {demo.share_url} (password required)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    signal.signal(signal.SIGTERM, _interrupt)  # so `kill` cleans up like Ctrl-C (atexit: the private folders)
    threading.Thread(target=warm_up, name="tunedesk-warm-up", daemon=True).start()
    demo.block_thread()
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def warm_up() -> None:
    """Once the page is served: import the trainer (torch, transformers: 5-30 s on a busy 2-core machine) and
    look for the GPU, so the first Start and the first estimate do not wait for them. The tabs import these
    lazily, which keeps the page's first appearance fast."""
    try:
        importlib.import_module("app.train")
        devices.detect()
    except Exception as exc:  # a broken torch install must not kill the app; the tabs report it when used
        print(f"tunedesk: warm-up failed: {exc}", file=sys.stderr)
    freeze_startup_objects()


def freeze_startup_objects() -> None:
    """Move everything startup built (gradio, torch, transformers: ~590k objects) out of the cyclic GC's reach.

    Each full collection walks them all: 0.9-1.4 s with the GIL held on a busy 2-core machine, and training in
    the app allocates enough to trigger one every so often, so every UI request in flight stalled that long (the
    estimate's p99 under training was 650 ms, its max 1.1 s). These objects live as long as the app; one last
    collection first so no startup garbage is frozen with them."""
    gc.collect()
    gc.freeze()
