"""Prompt sets for side-by-side review: read them from a file, and save the answer table as CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.chat import ChatError


def load_prompt_set(path: str | Path) -> list[dict]:
    """Prompts for side-by-side review: a text file (one prompt per line), a JSON list of strings, of
    {"prompt", "reference"} objects or of Alpaca records (instruction/input/output), or JSON lines of those.

    >>> load_prompt_set("assets/prompts.txt")  # doctest: +SKIP
    [{'prompt': 'What is the capital of France?', 'reference': None}, ...]
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatError(f"prompt set {path}: cannot be read ({exc})") from None
    if path.suffix.lower() == ".json":
        items = _parse_json(path, text)
    elif path.suffix.lower() == ".jsonl":
        items = [_parse_json(path, line, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    prompts = [_prompt_item(path, i, item) for i, item in enumerate(items)]
    if not prompts:
        raise ChatError(f"prompt set {path}: holds no prompts (one per line, or a JSON list)")
    return prompts


def _parse_json(path: Path, text: str, line: int | None = None) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {line}" if line else f"line {exc.lineno}"
        raise ChatError(f"prompt set {path}: {where} is not valid JSON ({exc.msg})") from None
    if line is None and not isinstance(data, list):
        raise ChatError(f"prompt set {path}: expected a JSON list of prompts, got {type(data).__name__}")
    return data


def _prompt_item(path: Path, index: int, item: Any) -> dict:
    if isinstance(item, str) and item.strip():
        return {"prompt": item, "reference": None}
    if isinstance(item, dict):
        prompt = item.get("prompt") or item.get("instruction")
        if isinstance(prompt, str) and prompt.strip():
            if item.get("input") and "prompt" not in item:
                prompt = f"{prompt}\n\n{item['input']}"
            reference = item.get("reference", item.get("output"))
            return {"prompt": prompt, "reference": None if reference is None else str(reference)}
    raise ChatError(
        f"prompt set {path}: item {index + 1} has no text; give a string or an object with a non-empty "
        f'"prompt" (or "instruction") field'
    )


def save_table(df: Any, path: str | Path) -> Path:
    """Write a prompt-set table as CSV (UTF-8 with BOM so spreadsheet apps read Chinese), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False, encoding="utf-8-sig")
    tmp.replace(path)
    return path
