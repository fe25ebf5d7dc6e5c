"""One source of UI strings, English and Simplified Chinese.

Each tab module declares its own strings and registers them at import:

    STRINGS = {"train.start": ("Start", "开始训练")}
    i18n.add(STRINGS)

`Translator` remembers which component shows which key (label, info, value, placeholder), so one language switch
updates every visible label; `tr.labelled(gr.X, key, info=True, ...)` and `tr.text(gr.X, key, ...)` build a
component and bind it in one call. A test checks that every key has both languages and every tab's text is bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

LANGS = ("en", "zh")
STRINGS: dict[str, dict[str, str]] = {}


def add(strings: dict[str, tuple[str, str]]) -> None:
    """Register {key: (english, chinese)}; a key registered twice with other text is a programming error."""
    for key, (en, zh) in strings.items():
        entry = {"en": en, "zh": zh}
        if key in STRINGS and STRINGS[key] != entry:
            raise ValueError(f"i18n key {key!r} registered twice with different text")
        STRINGS[key] = entry


def t(key: str, lang: str = "en", **fmt: Any) -> str:
    """The text of `key` in `lang` (English when that language lacks it), formatted with `fmt`."""
    entry = STRINGS.get(key)
    if entry is None:
        raise KeyError(f"missing i18n key {key!r}")
    text = entry.get(lang) or entry["en"]
    return text.format(**fmt) if fmt else text


# An UploadButton shows its `label` (its value is the uploaded file): a binding of its text as "value" would send
# the caption as a file path, which fails the whole language switch. Bound as value, updated as label.
_LABEL_IS_TEXT = {("UploadButton", "value"): "label"}


@dataclass
class _Binding:
    component: Any
    label: str | None = None
    info: str | None = None
    value: str | None = None
    placeholder: str | None = None


@dataclass
class Translator:
    """Per-app registry of translated components; `updates(lang)` gives the gr.update for each."""

    lang: str = "en"
    bindings: list[_Binding] = field(default_factory=list)

    def __call__(self, key: str, **fmt: Any) -> str:
        return t(key, self.lang, **fmt)

    def bind(
        self,
        component: Any,
        label: str | None = None,
        info: str | None = None,
        value: str | None = None,
        placeholder: str | None = None,
    ) -> Any:
        """Record which keys `component` shows; returns the component for chaining."""
        self.bindings.append(_Binding(component, label, info, value, placeholder))
        return component

    def labelled(self, make: Callable[..., Any], key: str, info: bool = False, **kwargs: Any) -> Any:
        """`make(label=tr(key), info=tr(key + ".info"), **kwargs)`, bound to those keys, in one call: a widget
        (`tr.labelled(gr.Number, "data.page", info=True, value=1)`), a Tab or an Accordion
        (`with tr.labelled(gr.Tab, "data.tab.records", id="data-records"):`)."""
        info_key = f"{key}.info" if info else None
        if info_key:
            kwargs["info"] = self(info_key)
        return self.bind(make(label=self(key), **kwargs), label=key, info=info_key)

    def text(self, make: Callable[..., Any], key: str, **kwargs: Any) -> Any:
        """`make(tr(key), **kwargs)` bound as the text it shows, in one call: a Markdown, a Button, an
        UploadButton's caption (`tr.text(gr.Button, "data.load", variant="primary")`)."""
        return self.bind(make(self(key), **kwargs), value=key)

    def components(self) -> list[Any]:
        return [b.component for b in self.bindings]

    def updates(self, lang: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for b in self.bindings:
            kw: dict[str, Any] = {}
            for attr in ("label", "info", "value", "placeholder"):
                key = getattr(b, attr)
                if key is not None:
                    kw[_LABEL_IS_TEXT.get((type(b.component).__name__, attr), attr)] = t(key, lang)
            out[b.component] = gr.update(**kw)
        return out


def keep_result(key: str) -> Any:
    """Language-switch handler `(lang, shown) -> update` for a status line that starts with `key`'s text and later
    shows a result: the idle text follows the language; a result ("Merged into ...", "Loaded on cpu") stays as it
    is, where binding the line to `key` would reset it to the idle text on every switch."""
    idle = {t(key, lang) for lang in LANGS}

    def switch(lang: str, shown: Any) -> Any:
        return t(key, lang) if shown is None or str(shown) in idle else gr.skip()

    return switch


def keep_result_on_switch(lang_selector: Any, status: Any, key: str) -> None:
    """Register `keep_result(key)` for `status` on the language selector (absent in tab-only test builds)."""
    if lang_selector is not None:
        lang_selector.change(
            keep_result(key),
            inputs=[lang_selector, status],
            outputs=status,
            show_progress="hidden",
            api_visibility="private",
        )


def missing_keys() -> list[str]:
    """Keys lacking a non-empty text in some language (the coverage test asserts this is empty)."""
    return [f"{key} [{lang}]" for key, entry in STRINGS.items() for lang in LANGS if not entry.get(lang, "").strip()]
