"""Chat tab: a base model and up to 4 adapters/checkpoints side by side, one prompt box for all of them.

"Load" builds one `chat.ChatSession` for the whole app (a module-level holder: one at a time, the previous one is
closed first so two models never sit in memory together). Each column is a Gradio 6 messages-format Chatbot;
answers stream token by token (`ChatSession.stream_all`, one token per column per round) with each column's own
tokens/s. The sampling settings are shared. A prompt set (a file or pasted lines) runs across every column into a
table that downloads as CSV.

"Which is better?" turns the columns' answers to one prompt into preference data (app.votes): each vote appends a
pair to the file the user names. The vote's state (the `ballot`: which column each pane shows, whether names are
hidden, the last prompt's final answers) lives in the page; blind mode shuffles the panes and names them Model A,
B, ... until the vote reveals them, and the next message after a vote starts a fresh, reshuffled round.

Device guard: while a training run holds the device, Load says so and offers the CPU instead; it never touches
the run.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd

from app import chat, modelset, prompt_sets, votes
from app.ui import i18n, pickers

if TYPE_CHECKING:
    from app.ui.app import AppContext

STRINGS = {
    "chat.load": ("Load", "加载"),
    "chat.unload": ("Unload", "卸载"),
    "chat.idle": (
        "Pick a base model (and adapters to compare), then press **Load**.",
        "选择基础模型（以及要对比的适配器），然后点击“**加载**”。",
    ),
    "chat.loading": ("Loading...", "正在加载……"),
    "chat.loaded": ("Loaded on {device}: {columns}.", "已加载到 {device}：{columns}。"),
    "chat.unloaded": ("Unloaded; the memory is free.", "已卸载，内存已释放。"),
    "chat.error": ("Could not load: {msg}", "无法加载：{msg}"),
    "chat.too_many": (
        "{n} adapters chosen; compare at most {max} at once.",
        "选择了 {n} 个适配器；一次最多对比 {max} 个。",
    ),
    "chat.not_loaded": ("Load a model first.", "请先加载模型。"),
    "chat.empty_prompt": ("Type a message first.", "请先输入消息。"),
    "chat.gen_error": ("Generation stopped: {msg}", "生成中断：{msg}"),
    "chat.bad_settings": ("Fix the sampling settings: {msg}", "请修正采样设置：{msg}"),
    "chat.prompt": ("Message", "消息"),
    "chat.prompt.info": (
        "Sent to every column at once; Enter sends, Shift+Enter adds a line.",
        "同时发送给每一列；回车发送，Shift+回车换行。",
    ),
    "chat.send": ("Send", "发送"),
    "chat.clear": ("Clear", "清空"),
    "chat.section.sampling": ("Sampling (shared by all columns)", "采样设置（所有列共用）"),
    "chat.max_new_tokens": ("Max new tokens", "最大生成 token 数"),
    "chat.max_new_tokens.info": ("Longest answer, in tokens.", "回答的最大长度（token）。"),
    "chat.temperature": ("Temperature", "温度"),
    "chat.temperature.info": (
        "0 = greedy (the same answer every time); 0.7 is a common sampling value.",
        "0 = 贪心解码（每次回答相同）；采样时常用 0.7。",
    ),
    "chat.top_p": ("Top-p", "Top-p"),
    "chat.top_p.info": (
        "Sample from the smallest set of tokens whose probability adds up to p.",
        "只从累计概率达到 p 的最小 token 集合中采样。",
    ),
    "chat.top_k": ("Top-k", "Top-k"),
    "chat.top_k.info": (
        "Sample from the k most likely tokens (0 = off).",
        "只从最可能的 k 个 token 中采样（0 = 关闭）。",
    ),
    "chat.repetition_penalty": ("Repetition penalty", "重复惩罚"),
    "chat.repetition_penalty.info": (
        "Above 1 discourages repeating tokens already in the text (1 = off).",
        "大于 1 时抑制重复已出现的 token（1 = 关闭）。",
    ),
    "chat.seed": ("Seed", "随机种子"),
    "chat.seed.info": (
        "Same seed and settings give the same sampled answers.",
        "相同的种子和设置给出相同的采样结果。",
    ),
    "chat.system_prompt": ("System prompt", "系统提示词"),
    "chat.system_prompt.info": ("Put before every conversation; empty for none.", "放在每段对话之前；留空则无。"),
    "chat.section.prompt_set": ("Prompt set: every prompt through every column", "提示集：每个提示发给每一列"),
    "chat.prompt_file": ("Prompt file", "提示文件"),
    "chat.prompt_file.info": (
        ".txt (one prompt per line), .json list or .jsonl; Alpaca records keep their output as the reference.",
        ".txt（每行一个提示）、.json 列表或 .jsonl；Alpaca 记录的 output 作为参考答案。",
    ),
    "chat.prompt_lines": ("Or paste prompts", "或粘贴提示"),
    "chat.prompt_lines.info": (
        "One prompt per line (used when no file is given).",
        "每行一个提示（未上传文件时使用）。",
    ),
    "chat.run_set": ("Run prompt set", "运行提示集"),
    "chat.no_prompts": ("Give a prompt file or paste at least one prompt.", "请上传提示文件或粘贴至少一个提示。"),
    "chat.set_done": (
        "{n} prompts answered. Mean tokens/s: {speeds}.",
        "已回答 {n} 个提示。平均 tokens/秒：{speeds}。",
    ),
    "chat.csv": ("Answers as CSV", "答案 CSV"),
    "chat.tok_s": ("{tps:.1f} tokens/s", "{tps:.1f} tokens/秒"),
    "chat.col.prompt": ("Prompt", "提示"),
    "chat.col.reference": ("Reference", "参考答案"),
    "chat.column": ("Column {n}", "第 {n} 列"),
    "chat.vote.title": (
        "**Which is better?** Vote on the last answers: each vote is a training pair.",
        "**哪个更好？** 对最后一轮回答投票：每一票都是一条训练数据。",
    ),
    "chat.vote.left": ("👈 {name} is better", "👈 {name} 更好"),
    "chat.vote.right": ("{name} is better 👉", "{name} 更好 👉"),
    "chat.vote.better": ("Better answer", "更好的回答"),
    "chat.vote.better.info": ("The column whose answer you prefer.", "你更喜欢其回答的那一列。"),
    "chat.vote.worse": ("Worse answer", "更差的回答"),
    "chat.vote.worse.info": ("The column it is better than.", "被比下去的那一列。"),
    "chat.vote.record": ("Record vote", "记录投票"),
    "chat.vote.blind": ("Blind mode", "盲评模式"),
    "chat.vote.blind.info": (
        "Columns shuffled and named Model A, B, ... until you vote; the next message then starts a new round.",
        "各列随机排列并命名为模型 A、B……，投票后揭晓；之后的下一条消息开始新一轮。",
    ),
    "chat.vote.file": ("Vote file", "投票文件"),
    "chat.vote.file.info": (
        "Each vote appends one pair (prompt, chosen, rejected) to this .jsonl file; the Data tab lists it and a "
        "DPO run trains on it.",
        "每次投票向此 .jsonl 文件追加一条偏好对（提示、更好、更差）；数据页会列出它，DPO 训练可直接使用。",
    ),
    "chat.blind_column": ("Model {letter}", "模型 {letter}"),
    "chat.vote.recorded": (
        "Recorded: **{better}** better than **{worse}**. Pairs in `{file}`: {n}.",
        "已记录：**{better}** 优于 **{worse}**。`{file}` 中的偏好对：{n} 条。",
    ),
    "chat.vote.generating": (
        "Wait until every column has finished its answer, then vote.",
        "请等待每一列都回答完毕后再投票。",
    ),
    "chat.vote.nothing": (
        "Send a message first: a vote compares the columns' answers to it.",
        "请先发送消息：投票比较的是各列对它的回答。",
    ),
    "chat.vote.need_two": (
        "Load two or more models (a base and an adapter) to compare their answers.",
        "请加载两个或更多模型（基础模型和适配器）以比较回答。",
    ),
    "chat.vote.pick": (
        "Pick the better and the worse answer: two different columns.",
        "请选出更好和更差的回答：两列不同的列。",
    ),
    "chat.vote.again": ("This vote is already recorded for these answers.", "这组回答的这一票已经记录过了。"),
    "chat.vote.error": ("Vote not recorded: {msg}", "未记录投票：{msg}"),
    "chat.vote.busy_blind": (
        "Blind mode changes once the answers have finished.",
        "请在回答结束后再切换盲评模式。",
    ),
}
i18n.add(STRINGS)

MAX_COLUMNS = 1 + pickers.MAX_ADAPTERS
THROTTLE_S = 0.05  # at most ~20 redraws a second: per-token yields of 5 columns would flood the websocket


@dataclass
class ChatHandles:
    picker: pickers.ModelPicker
    load: gr.Button
    unload: gr.Button
    status: gr.Markdown
    panes: list[gr.Column]
    chatbots: list[gr.Chatbot]
    speeds: list[gr.Markdown]
    histories: gr.State
    prompt: gr.Textbox
    send: gr.Button
    clear: gr.Button
    settings: dict[str, Any]
    prompt_file: gr.File
    prompt_lines: gr.Textbox
    run_set: gr.Button
    set_status: gr.Markdown
    set_table: gr.Dataframe
    set_csv: gr.File
    ballot: gr.State
    vote_two: gr.Row
    vote_a: gr.Button
    vote_b: gr.Button
    vote_many: gr.Row
    better: gr.Dropdown
    worse: gr.Dropdown
    vote_record: gr.Button
    blind: gr.Checkbox
    vote_file: gr.Textbox
    vote_status: gr.Markdown


# ---- the loaded session: one per app ---------------------------------------------------------------------------
class SessionHolder:
    """The app's one ChatSession; loading another closes the previous first (its memory is freed before the next
    model loads, so peak memory is one session, not two)."""

    def __init__(self) -> None:
        self.session: chat.ChatSession | None = None
        self.lock = threading.Lock()

    def load(self, base: str | None, adapters: list[str], device: str, progress: Any = None) -> chat.ChatSession:
        with self.lock:
            self._close()
            self.session = chat.ChatSession(base, adapters, device=device, progress=progress)
            return self.session

    def close(self) -> None:
        with self.lock:
            self._close()

    def _close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


HOLDER = SessionHolder()


# ---- build -------------------------------------------------------------------------------------------------------
def build(ctx: AppContext) -> ChatHandles:
    tr = ctx.tr
    picker = pickers.build(tr, ctx.defaults.model.name_or_path, "chat")
    with gr.Row():
        load = tr.text(gr.Button, "chat.load", variant="primary", elem_id="chat-load")
        unload = tr.text(gr.Button, "chat.unload", elem_id="chat-unload")
    # not bound to a key: a language switch must not reset "Loaded on cpu" to the idle text (see _wire)
    status = gr.Markdown(tr("chat.idle"), elem_classes="td-status", elem_id="chat-status")
    columns = _build_columns(tr)
    ballot = _build_votes(tr)
    talk = _build_prompt(tr)
    settings = _build_settings(tr)
    prompt_set = _build_prompt_set(tr)
    h = ChatHandles(
        picker=picker,
        load=load,
        unload=unload,
        status=status,
        **columns,
        **talk,
        settings=settings,
        **prompt_set,
        **ballot,
    )
    _wire(ctx, h)
    return h


def _build_columns(tr: i18n.Translator) -> dict[str, Any]:
    panes, chatbots, speeds = [], [], []
    with gr.Row(equal_height=True):
        for i in range(MAX_COLUMNS):
            with gr.Column(min_width=220, visible=i == 0) as pane:
                chatbots.append(
                    gr.Chatbot(
                        value=[],
                        label=i18n.t("chat.column", tr.lang, n=i + 1),
                        # grows with the conversation: at a fixed 420 px, three narrow columns wrapped an answer
                        # so tall that the view scrolled to its end and hid the user's message above it
                        height=None,
                        min_height=320,
                        max_height=900,
                        buttons=["copy"],
                        elem_id=f"chat-col-{i}",
                    )
                )
                speeds.append(gr.Markdown("", elem_id=f"chat-speed-{i}"))
            panes.append(pane)
    return {"panes": panes, "chatbots": chatbots, "speeds": speeds, "histories": gr.State({})}


def _build_votes(tr: i18n.Translator) -> dict[str, Any]:
    """ "Which is better?": one click per side with two columns, a better/worse pair with more; blind mode and the
    vote file. The buttons name the columns they vote for (set by the handlers), so they show once two load."""
    with gr.Group(elem_id="chat-vote"):
        tr.text(gr.Markdown, "chat.vote.title", elem_id="chat-vote-title")
        with gr.Row(visible=False, elem_id="chat-vote-two") as vote_two:
            vote_a = gr.Button(i18n.t("chat.vote.left", tr.lang, name="A"), elem_id="chat-vote-a")
            vote_b = gr.Button(i18n.t("chat.vote.right", tr.lang, name="B"), elem_id="chat-vote-b")
        with gr.Row(visible=False, equal_height=True, elem_id="chat-vote-many") as vote_many:
            better = tr.labelled(gr.Dropdown, "chat.vote.better", info=True, choices=[], elem_id="chat-vote-better")
            worse = tr.labelled(gr.Dropdown, "chat.vote.worse", info=True, choices=[], elem_id="chat-vote-worse")
            vote_record = tr.text(gr.Button, "chat.vote.record", elem_id="chat-vote-record")
        with gr.Row(equal_height=True):
            blind = tr.labelled(gr.Checkbox, "chat.vote.blind", info=True, value=False, elem_id="chat-blind")
            vote_file = tr.labelled(
                gr.Textbox,
                "chat.vote.file",
                info=True,
                value=str(votes.default_path()),
                scale=3,
                elem_id="chat-vote-file",
            )
        vote_status = gr.Markdown("", elem_classes="td-status", elem_id="chat-vote-status")
    return {
        "ballot": gr.State({}),
        "vote_two": vote_two,
        "vote_a": vote_a,
        "vote_b": vote_b,
        "vote_many": vote_many,
        "better": better,
        "worse": worse,
        "vote_record": vote_record,
        "blind": blind,
        "vote_file": vote_file,
        "vote_status": vote_status,
    }


def _build_prompt(tr: i18n.Translator) -> dict[str, Any]:
    with gr.Row(equal_height=True):
        prompt = tr.labelled(
            gr.Textbox, "chat.prompt", info=True, lines=2, max_lines=8, scale=6, elem_id="chat-prompt"
        )
        with gr.Column(scale=1, min_width=110):
            send = tr.text(gr.Button, "chat.send", variant="primary", elem_id="chat-send")
            clear = tr.text(gr.Button, "chat.clear", elem_id="chat-clear")
    return {"prompt": prompt, "send": send, "clear": clear}


def _slider(tr: i18n.Translator, key: str, lo: float, hi: float, step: float, value: float) -> gr.Slider:
    widget = tr.labelled(
        gr.Slider, f"chat.{key}", info=True, minimum=lo, maximum=hi, step=step, value=value, elem_id=f"chat-{key}"
    )
    return widget


def _build_settings(tr: i18n.Translator) -> dict[str, Any]:
    d = modelset.GenSettings()
    with tr.labelled(gr.Accordion, "chat.section.sampling", open=False):
        with gr.Row():
            s = {
                "max_new_tokens": _slider(tr, "max_new_tokens", 1, 2048, 1, d.max_new_tokens),
                "temperature": _slider(tr, "temperature", 0.0, 2.0, 0.05, d.temperature),
                "top_p": _slider(tr, "top_p", 0.05, 1.0, 0.05, d.top_p),
            }
        with gr.Row():
            s["top_k"] = _slider(tr, "top_k", 0, 200, 1, d.top_k)
            s["repetition_penalty"] = _slider(tr, "repetition_penalty", 0.8, 2.0, 0.05, d.repetition_penalty)
            s["seed"] = tr.labelled(
                gr.Number, "chat.seed", info=True, value=d.seed, precision=0, minimum=0, elem_id="chat-seed"
            )
        s["system_prompt"] = tr.labelled(
            gr.Textbox, "chat.system_prompt", info=True, value=d.system_prompt, elem_id="chat-system"
        )
    return s


def _build_prompt_set(tr: i18n.Translator) -> dict[str, Any]:
    with tr.labelled(gr.Accordion, "chat.section.prompt_set", open=False):
        with gr.Row(equal_height=False):
            prompt_file = tr.labelled(
                gr.File, "chat.prompt_file", file_types=[".txt", ".json", ".jsonl"], elem_id="chat-prompt-file"
            )
            prompt_lines = tr.labelled(
                gr.Textbox, "chat.prompt_lines", info=True, lines=5, elem_id="chat-prompt-lines"
            )
        tr.text(gr.Markdown, "chat.prompt_file.info", elem_classes="td-info")
        run_set = tr.text(gr.Button, "chat.run_set", elem_id="chat-run-set")
        set_status = gr.Markdown("", elem_classes="td-status", elem_id="chat-set-status")
        # hidden until it has answers: an empty Dataframe shows a bare "1 | 2 | 3" header
        set_table = gr.Dataframe(interactive=False, wrap=True, max_height=420, visible=False, elem_id="chat-set-table")
        set_csv = tr.labelled(gr.File, "chat.csv", interactive=False, elem_id="chat-set-csv")
    return {
        "prompt_file": prompt_file,
        "prompt_lines": prompt_lines,
        "run_set": run_set,
        "set_status": set_status,
        "set_table": set_table,
        "set_csv": set_csv,
    }


def _wire(ctx: AppContext, h: ChatHandles) -> None:
    p = h.picker
    lang = {ctx.lang_selector} if ctx.lang_selector is not None else set()
    views = [h.status, *h.panes, *h.chatbots, *h.speeds, h.histories, *_vote_outputs(h)]
    i18n.keep_result_on_switch(ctx.lang_selector, h.status, "chat.idle")

    def load_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return load_models(ctx, values, progress)

    def set_event(values: dict[Any, Any], progress: Any = gr.Progress()) -> dict[Any, Any]:  # noqa: B008
        return run_prompt_set(ctx, values, progress)

    h.load.click(
        load_event,
        inputs={p.base, p.adapters, p.device, h.blind, *lang},
        outputs=views,
        api_name="chat_load",
        concurrency_id="chat-model",
        concurrency_limit=1,
    )
    h.unload.click(lambda values=None: unload(ctx, values), inputs=lang or None, outputs=views, api_name="chat_unload")

    def send_event(values: dict[Any, Any]) -> Any:
        yield from send(ctx, values)

    talk_inputs = {h.prompt, h.histories, h.ballot, *h.settings.values(), *lang}
    gr.on(
        [h.send.click, h.prompt.submit],
        send_event,
        inputs=talk_inputs,
        outputs=[*views, h.prompt],
        api_name="chat_send",
        concurrency_id="chat-model",
        concurrency_limit=1,
        show_progress="hidden",
    )
    h.clear.click(
        lambda values: clear(ctx, values),
        inputs={h.ballot, *lang},
        outputs=[*h.chatbots, *h.speeds, h.histories, *_vote_outputs(h)],
        api_name="chat_clear",
    )
    pickers.follow_runs(p, "chat", ctx.lang_selector)
    if ctx.lang_selector is not None:  # column labels name the models in the page's language
        ctx.lang_selector.change(
            lambda values: relabel(ctx, values),
            inputs={h.ballot, *lang},
            outputs=[*h.chatbots, *_vote_outputs(h)],
            show_progress="hidden",
            api_name="chat_relabel",
            api_visibility="private",
        )
    h.run_set.click(
        set_event,
        inputs={h.prompt_file, h.prompt_lines, *h.settings.values(), *lang},
        outputs=[h.set_status, h.set_table, h.set_csv],
        api_name="chat_prompt_set",
        concurrency_id="chat-model",
        concurrency_limit=1,
    )
    _wire_votes(ctx, h, lang)


def _wire_votes(ctx: AppContext, h: ChatHandles, lang: set[Any]) -> None:
    """The vote buttons (A better, B better, the better/worse pair) and the blind-mode switch."""
    outputs = [*h.chatbots, *_vote_outputs(h)]
    voting = {h.ballot, h.vote_file, *lang}
    h.vote_a.click(lambda values: vote(ctx, values, 0, 1), inputs=voting, outputs=outputs, api_name="chat_vote_a")
    h.vote_b.click(lambda values: vote(ctx, values, 1, 0), inputs=voting, outputs=outputs, api_name="chat_vote_b")
    h.vote_record.click(
        lambda values: vote(ctx, values), inputs=voting | {h.better, h.worse}, outputs=outputs, api_name="chat_vote"
    )
    h.blind.input(
        lambda values: set_blind(ctx, values),
        inputs={h.blind, h.histories, h.ballot, *lang},
        outputs=[*outputs, *h.speeds, h.blind],
        api_name="chat_blind",
    )


# ---- handlers -------------------------------------------------------------------------------------------------------
def _lang(ctx: AppContext, values: dict[Any, Any] | None) -> str:
    return ctx.lang(values) if values is not None else ctx.tr.lang


def _progress(progress: Any) -> Any:
    return (lambda frac, msg: progress(frac, desc=msg)) if progress is not None else None


def load_models(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Load: the base and chosen adapters into one ChatSession; shows a column per model. Never raises."""
    h = ctx.chat
    lang = _lang(ctx, values)
    base = str(values.get(h.picker.base) or "").strip() or None
    adapters = pickers.selected(values.get(h.picker.adapters))
    device = values.get(h.picker.device) or "auto"
    if len(adapters) > pickers.MAX_ADAPTERS:
        return {h.status: "❌ " + i18n.t("chat.too_many", lang, n=len(adapters), max=pickers.MAX_ADAPTERS)}
    blocked, note = pickers.busy_note(device, lang)
    if blocked:
        return {h.status: "⏳ " + note}
    try:
        session = HOLDER.load(base, adapters, device, _progress(progress))
    except (RuntimeError, OSError, ValueError) as exc:  # ChatError, DeviceBusy, ModelError, torch OOM
        error = "❌ " + i18n.t("chat.error", lang, msg=_one_line(exc))
        return {h.status: error, **_column_views(h, [], lang), **_vote_views(h, [], lang), h.ballot: {}}
    labels = column_labels(session, lang)
    lines = [i18n.t("chat.loaded", lang, device=session.device, columns=", ".join(labels))]
    lines += [f"⚠️ {w}" for w in session.warnings] + ([note] if note else [])
    ballot = new_ballot(session, bool(values.get(h.blind)))
    shown = _shown(session, ballot, lang)  # in blind mode shuffled and unnamed: the status names no column
    return {
        h.status: "✅ " + "\n\n".join(lines),
        **_column_views(h, shown, lang),
        h.histories: {},
        **_vote_views(h, shown, lang),
        h.ballot: ballot,
        h.vote_status: "",
    }


def unload(ctx: AppContext, values: dict[Any, Any] | None = None) -> dict[Any, Any]:
    h = ctx.chat
    HOLDER.close()
    lang = _lang(ctx, values)
    return {
        h.status: i18n.t("chat.unloaded", lang),
        **_column_views(h, [], lang),
        h.histories: {},
        **_vote_views(h, [], lang),
        h.ballot: {},
        h.vote_status: "",
    }


def column_labels(session: chat.ChatSession, lang: str) -> list[str]:
    """Each column as a person names it: the base by the model's name, an adapter by its run's name (a
    checkpoint with its step; the creation time only where two runs share a name), never a folder's timestamp."""
    members = session.models.members if session.models is not None else {}
    out, folders = [], []
    for column in session.columns:
        member = members.get(column)
        if member is None or member.path is None:
            out.append(i18n.t("pick.base_column", lang, name=pickers.model_name(session.base_label)))
            folders.append("")
        else:
            out.append(pickers.folder_name(member.path))
            folders.append(str(member.path))
    return pickers.unique_names(out, folders)


def _column_views(h: ChatHandles, labels: list[str], lang: str) -> dict[Any, Any]:
    """One visible Chatbot per loaded column (the first stays visible, empty, when none is loaded)."""
    out: dict[Any, Any] = {}
    for i, (pane, bot, speed) in enumerate(zip(h.panes, h.chatbots, h.speeds, strict=True)):
        label = labels[i] if i < len(labels) else i18n.t("chat.column", lang, n=i + 1)
        out[pane] = gr.update(visible=i < len(labels) or i == 0)
        out[bot] = gr.update(value=[], label=label)
        out[speed] = ""
    return out


def relabel(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """The column labels in the language just chosen (the loaded models' names, Model A, B, ... while blind, else
    "Column N") and the vote buttons that name them."""
    h, lang, session = ctx.chat, _lang(ctx, values), HOLDER.session
    labels = _shown(session, values.get(h.ballot) or {}, lang) if session is not None else []
    bots = {
        bot: gr.update(label=labels[i] if i < len(labels) else i18n.t("chat.column", lang, n=i + 1))
        for i, bot in enumerate(h.chatbots)
    }
    return {**bots, **_vote_views(h, labels, lang)}


def gen_settings(h: ChatHandles, values: dict[Any, Any]) -> modelset.GenSettings:
    """The shared sampling widgets as GenSettings (numbers arrive as float from sliders)."""
    s, d = h.settings, modelset.GenSettings()

    def num(key: str, kind: type) -> Any:
        value = values.get(s[key])
        value = getattr(d, key) if value is None or value == "" else value
        return int(round(float(value))) if kind is int else float(value)

    return modelset.GenSettings(
        max_new_tokens=num("max_new_tokens", int),
        temperature=num("temperature", float),
        top_p=num("top_p", float),
        top_k=num("top_k", int),
        repetition_penalty=num("repetition_penalty", float),
        seed=num("seed", int),
        system_prompt=str(values.get(s["system_prompt"]) or ""),
    )


def settings_problems(settings: modelset.GenSettings, lang: str) -> str:
    """GenSettings' problems ("top_p: 0 must be in (0, 1]") with each setting named by its label on screen
    ("Top-p: 0 must be in (0, 1]")."""
    out = []
    for problem in settings.problems():
        key, sep, rest = problem.partition(": ")
        label = f"chat.{key}"
        out.append(f"{i18n.t(label, lang)}{sep}{rest}" if sep and label in i18n.STRINGS else problem)
    return "; ".join(out)


def send(ctx: AppContext, values: dict[Any, Any]) -> Any:
    """Send the prompt to every column; yields updates as the answers stream in, then the new histories."""
    h = ctx.chat
    lang = _lang(ctx, values)
    session = HOLDER.session
    prompt = str(values.get(h.prompt) or "").strip()
    settings = gen_settings(h, values)
    problem = (
        i18n.t("chat.not_loaded", lang)
        if session is None
        else i18n.t("chat.empty_prompt", lang)
        if not prompt
        else i18n.t("chat.bad_settings", lang, msg=settings_problems(settings, lang))
        if settings.problems()
        else None
    )
    if problem:
        yield {h.status: "❌ " + problem}
        return
    ballot, fresh = _next_round(session, values.get(h.ballot) or {})
    columns = ballot["order"]  # the order the panes show them in (shuffled in blind mode)
    old = {} if fresh else values.get(h.histories) or {}
    histories = {c: list(old.get(c, [])) for c in columns}
    state = {c: ("", 0.0) for c in columns}
    # Panes and labels follow the loaded session: another browser tab may have loaded a different one.
    panes = {pane: gr.update(visible=i < len(columns) or i == 0) for i, pane in enumerate(h.panes)}
    shown = _shown(session, ballot, lang)
    labels = {bot: gr.update(label=c) for bot, c in zip(h.chatbots, shown, strict=False)}
    waiting = {**ballot, "turn": None, "generating": True}  # a vote now is refused: the answers are not final
    yield {h.prompt: "", **panes, **labels, **_vote_views(h, shown, lang), h.ballot: waiting, h.vote_status: ""}
    yield _chat_views(h, columns, histories, prompt, state, lang)
    last = time.monotonic()
    try:
        for state in session.stream_all(histories, prompt, settings):
            if time.monotonic() - last >= THROTTLE_S:
                last = time.monotonic()
                yield _chat_views(h, columns, histories, prompt, state, lang)
    except (RuntimeError, ValueError) as exc:  # ChatError (a closed session), torch errors (OOM)
        error = "❌ " + i18n.t("chat.gen_error", lang, msg=_one_line(exc))
        yield {h.status: error, h.ballot: {**ballot, "turn": None, "generating": False}}
        return
    turn = {c: _answered(session, c, histories[c], prompt, state[c][0], settings) for c in columns}
    for c in columns:
        histories[c] += [{"role": "user", "content": prompt}, {"role": "assistant", "content": state[c][0]}]
    final = {**ballot, "turn": turn, "generating": False, "voted": []}
    yield {**_chat_views(h, columns, histories, None, state, lang), h.histories: histories, h.ballot: final}


def _chat_views(
    h: ChatHandles,
    columns: list[str],
    histories: dict[str, list[dict]],
    prompt: str | None,
    state: dict[str, tuple[str, float]],
    lang: str,
) -> dict[Any, Any]:
    """Each column's Chatbot: its history, then (while streaming) the prompt and the answer so far."""
    out: dict[Any, Any] = {}
    for i, column in enumerate(columns[:MAX_COLUMNS]):
        text, tps = state.get(column, ("", 0.0))
        turn = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}] if prompt else []
        out[h.chatbots[i]] = histories.get(column, []) + turn
        out[h.speeds[i]] = i18n.t("chat.tok_s", lang, tps=tps) if tps else ""
    return out


def clear(ctx: AppContext, values: dict[Any, Any] | None = None) -> dict[Any, Any]:
    """Empty every column; in blind mode a new round: the columns shuffled again and unnamed."""
    h, session, lang = ctx.chat, HOLDER.session, _lang(ctx, values)
    out = {**{bot: [] for bot in h.chatbots}, **{s: "" for s in h.speeds}, h.histories: {}}
    if session is None:
        return {**out, h.ballot: {}, h.vote_status: ""}
    ballot = new_ballot(session, bool(((values or {}).get(h.ballot) or {}).get("blind")))
    shown = _shown(session, ballot, lang)
    if ballot["blind"]:
        out.update({bot: gr.update(value=[], label=label) for bot, label in zip(h.chatbots, shown, strict=False)})
    return {**out, **_vote_views(h, shown, lang), h.ballot: ballot, h.vote_status: ""}


# ---- votes: which answer is better ---------------------------------------------------------------------------
def _vote_outputs(h: ChatHandles) -> list[Any]:
    return [h.ballot, h.vote_two, h.vote_many, h.vote_a, h.vote_b, h.better, h.worse, h.vote_status]


def new_ballot(session: chat.ChatSession, blind: bool) -> dict[str, Any]:
    """A fresh round: the panes' order (shuffled when blind), names hidden while blind, no answers yet. `names`
    are the models as a vote file records them: in English whatever the page's language."""
    order = list(session.columns)
    if blind:
        random.shuffle(order)  # the identity order too: any fixed rule would tell which column is which
    names = dict(zip(session.columns, column_labels(session, "en"), strict=True))
    return {"order": order, "blind": blind, "revealed": False, "names": names, "turn": None, "voted": []}


def _next_round(session: chat.ChatSession, ballot: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the ballot a new message is answered under, whether it starts a fresh conversation): the same one, a new
    one when the loaded models changed (another browser tab loaded others), a fresh shuffled round after a blind
    vote revealed the names."""
    if sorted(ballot.get("order") or []) != sorted(session.columns):
        return new_ballot(session, bool(ballot.get("blind"))), False
    if ballot.get("blind") and ballot.get("revealed"):
        return new_ballot(session, True), True
    return ballot, False


def _shown(session: chat.ChatSession | None, ballot: dict[str, Any], lang: str) -> list[str]:
    """The panes' labels in order: Model A, B, ... while blind and not yet voted, else the models' names."""
    order = ballot.get("order") or (session.columns if session is not None else [])
    if ballot.get("blind") and not ballot.get("revealed"):
        return [i18n.t("chat.blind_column", lang, letter=chr(ord("A") + i)) for i in range(len(order))]
    named = dict(zip(session.columns, column_labels(session, lang), strict=True)) if session is not None else {}
    names = ballot.get("names") or {}
    return [named.get(c) or names.get(c, c) for c in order]


def _vote_views(h: ChatHandles, labels: list[str], lang: str) -> dict[Any, Any]:
    """One click per side for two columns, the better/worse pair for more, nothing to click for fewer."""
    n, choices = len(labels), [(label, i) for i, label in enumerate(labels)]
    return {
        h.vote_two: gr.update(visible=n == 2),
        h.vote_many: gr.update(visible=n > 2),
        h.vote_a: i18n.t("chat.vote.left", lang, name=labels[0] if n else "A"),
        h.vote_b: i18n.t("chat.vote.right", lang, name=labels[1] if n > 1 else "B"),
        h.better: gr.update(choices=choices, value=None),
        h.worse: gr.update(choices=choices, value=None),
    }


def _answered(
    session: Any, column: str, history: list[dict], prompt: str, answer: str, settings: modelset.GenSettings
) -> list[dict]:
    """A column's conversation as it answered (chat.ChatSession.messages: the system prompt it was given, its
    history, the prompt), then its answer."""
    return [*session.messages(column, history, prompt, settings), {"role": "assistant", "content": answer}]


def _vote_problem(ballot: dict[str, Any], better: Any, worse: Any) -> str | None:
    """The key of the message that refuses this vote, or None."""
    order = ballot.get("order") or []
    picks = [better, worse]
    if len(order) < 2:
        return "chat.vote.need_two"
    if ballot.get("generating"):
        return "chat.vote.generating"
    if not ballot.get("turn"):
        return "chat.vote.nothing"
    if any(p is None or not 0 <= int(p) < len(order) for p in picks) or int(better) == int(worse):
        return "chat.vote.pick"
    if [order[int(better)], order[int(worse)]] in ballot.get("voted", []):
        return "chat.vote.again"
    return None


def vote(ctx: AppContext, values: dict[Any, Any], better: int | None = None, worse: int | None = None) -> dict:
    """Record "the answer in pane `better` beats the one in pane `worse`" (the better/worse dropdowns when not
    given) in the vote file; reveals the names in blind mode. Never raises: a refused vote is a status line."""
    h, lang = ctx.chat, _lang(ctx, values)
    ballot = values.get(h.ballot) or {}
    if better is None:
        better, worse = values.get(h.better), values.get(h.worse)
    problem = _vote_problem(ballot, better, worse)
    if problem:
        return {h.vote_status: "❌ " + i18n.t(problem, lang)}
    order = ballot["order"]
    pair = [order[int(better)], order[int(worse)]]
    chosen, rejected = (votes.Side(ballot["names"][c], ballot["turn"].get(c, [])) for c in pair)
    try:
        file, count = votes.record_vote(values.get(h.vote_file), chosen, rejected)
    except votes.VoteError as exc:
        return {h.vote_status: "❌ " + i18n.t("chat.vote.error", lang, msg=_one_line(exc))}
    ballot = {**ballot, "revealed": True, "voted": [*ballot.get("voted", []), pair]}
    shown = _shown(HOLDER.session, ballot, lang)
    text = i18n.t("chat.vote.recorded", lang, better=shown[int(better)], worse=shown[int(worse)], file=file, n=count)
    labels = {bot: gr.update(label=label) for bot, label in zip(h.chatbots, shown, strict=False)}
    return {h.vote_status: "✅ " + text, h.ballot: ballot, **labels, **_vote_views(h, shown, lang)}


def set_blind(ctx: AppContext, values: dict[Any, Any]) -> dict[Any, Any]:
    """Blind mode on: the panes shuffled and named Model A, B, ...; off: in load order with their names. The
    conversation and the last answers stay (each pane shows its model's history)."""
    h, lang, session = ctx.chat, _lang(ctx, values), HOLDER.session
    blind, ballot = bool(values.get(h.blind)), values.get(h.ballot) or {}
    if session is None:  # Load reads the box
        return {h.ballot: ballot}
    if ballot.get("generating"):  # the streaming answers are drawn in the current order
        return {h.blind: not blind, h.vote_status: "⏳ " + i18n.t("chat.vote.busy_blind", lang)}
    ballot = {**new_ballot(session, blind), "turn": ballot.get("turn"), "voted": ballot.get("voted", [])}
    shown, histories = _shown(session, ballot, lang), values.get(h.histories) or {}
    bots = {
        h.chatbots[i]: gr.update(value=histories.get(c, []), label=shown[i])
        for i, c in enumerate(ballot["order"][:MAX_COLUMNS])
    }
    speeds = {s: "" for s in h.speeds}  # a speed would say which model a pane shows
    return {**bots, **speeds, **_vote_views(h, shown, lang), h.ballot: ballot, h.vote_status: ""}


# ---- prompt sets ---------------------------------------------------------------------------------------------------
def prompts_from(h: ChatHandles, values: dict[Any, Any]) -> list[Any]:
    """The uploaded prompt file's prompts, else the pasted lines. Raises ChatError for a bad file."""
    path = values.get(h.prompt_file)
    if path:
        return prompt_sets.load_prompt_set(path)
    return [line.strip() for line in str(values.get(h.prompt_lines) or "").splitlines() if line.strip()]


def run_prompt_set(ctx: AppContext, values: dict[Any, Any], progress: Any = None) -> dict[Any, Any]:
    """Every prompt through every column: a table (prompt, reference, one answer column each) and its CSV."""
    h = ctx.chat
    lang = _lang(ctx, values)
    session = HOLDER.session
    settings = gen_settings(h, values)
    try:
        prompts = prompts_from(h, values)
        if session is None or not prompts or settings.problems():
            msg = "chat.not_loaded" if session is None else "chat.no_prompts" if not prompts else None
            text = (
                i18n.t(msg, lang) if msg else i18n.t("chat.bad_settings", lang, msg=settings_problems(settings, lang))
            )
            return {h.set_status: "❌ " + text}
        raw = session.run_prompt_set(prompts, settings, _progress(progress))
        speeds_by_column = raw.attrs.get("tokens_per_s", {})
        table = raw.rename(columns=_set_headers(session, lang))
        csv = prompt_sets.save_table(table, pickers.fresh_dir() / f"prompt-set-{time.strftime('%Y%m%d-%H%M%S')}.csv")
    except (RuntimeError, OSError, ValueError) as exc:
        return {h.set_status: "❌ " + i18n.t("chat.gen_error", lang, msg=_one_line(exc))}
    names = _set_headers(session, lang)
    speeds = ", ".join(f"{names.get(c, c)} {v}" for c, v in speeds_by_column.items())
    return {
        h.set_status: "✅ " + i18n.t("chat.set_done", lang, n=len(table), speeds=speeds),
        h.set_table: gr.update(value=pd.DataFrame(table), visible=True),
        h.set_csv: str(csv),
    }


def _set_headers(session: chat.ChatSession, lang: str) -> dict[str, str]:
    """The prompt set's column names as headers: Prompt, Reference, then each column's label."""
    fixed = {"prompt": i18n.t("chat.col.prompt", lang), "reference": i18n.t("chat.col.reference", lang)}
    return fixed | dict(zip(session.columns, column_labels(session, lang), strict=True))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
