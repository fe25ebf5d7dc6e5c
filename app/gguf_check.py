"""The GGUF parity check: does an exported .gguf answer, in llama.cpp, as the model it came from does in transformers?

"My exported GGUF answers gibberish" is the most common complaint about a fine-tune's export. Its usual causes are a
missing or different chat template, a wrong end-of-sequence token, a wrong pre-tokenizer or a too-coarse
quantization; each has a test here and a problem line naming the cause and the fix.

    report = gguf_check.check("exports/X-gguf/model-q8_0.gguf", against="exports/X")   # or the run's adapter
    print(report.format())            # "first 16 tokens agree on 5/5 prompts (100%)", the answers side by side
    python -m app export check exports/X-gguf/model-q8_0.gguf --against exports/X [--lora A.gguf] [--json]

Each prompt is rendered once with the Hugging Face tokenizer's chat template (one user message and the generation
prompt, as llama-server and Ollama render a chat); transformers decodes greedily from its own tokens of that text
(fp32, CPU), llama.cpp from its OWN tokenization of the same text, so a tokenizer difference shows in the answers as
it would for a user.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app import llamacpp

N_TOKENS = 16
"""Answers agree when their first N generated tokens are equal (later tokens drift with any rounding)."""
MAX_NEW_TOKENS = 48
"""Tokens generated per prompt and side (shown in the side-by-side table)."""

BUILTIN_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "请用一句话介绍一下你自己。",
    "What is 12 times 7?",
    "Give three tips for staying healthy.",
    "Write a haiku about the sea.",
)
"""Used after the run's own sample prompts, up to MIN_PROMPTS: English, Chinese and digits (a wrong pre-tokenizer
splits digits and CJK text differently)."""
MIN_PROMPTS = 5

# A disagreement is a near-tie when, at the first differing token, transformers preferred its own token over the one
# llama.cpp chose by less than this many logits: there, rounding alone can flip the choice. Per llama_ftype
# (general.file_type): F32 differs from fp32 transformers only in summation order (~1e-4 of a logit); F16 rounds
# each weight to 11 bits, 0.1 logit at the first token on SmolLM2-135M (tests/test_export.py), growing along an
# answer, so 0.5; Q8_0 ~4x the F16 error; 4-6-bit types ~4x that again.
NEAR_TIE_LOGITS: dict[int, float] = {0: 0.05, 1: 0.5, 32: 0.5, 7: 1.0}
"""llama_ftype -> threshold; every other (4-6 bit) type: NEAR_TIE_QUANT."""
NEAR_TIE_QUANT = 2.0


class CheckError(RuntimeError):
    """The check cannot run (missing file, no base for an adapter...); the message says what to give instead."""


@dataclass
class Row:
    """One prompt, answered by both sides."""

    prompt: str
    hf_answer: str
    gguf_answer: str
    hf_ids: list[int]
    gguf_ids: list[int]
    first_diff: int | None
    """Index of the first generated token that differs (None: identical answers)."""
    agree: bool
    """The first min(N, length) generated tokens are equal."""
    near_tie: bool
    """At first_diff, transformers' margin for its own token over llama.cpp's was below the threshold."""
    margin: float | None
    """That margin in logits (None when the answers are identical)."""
    tokens_equal: bool
    """llama.cpp's tokens of the rendered prompt equal transformers'."""
    token_diff: str = ""
    """Where the prompt's tokens first differ, e.g. "at token 7: 'x' vs 'y'"."""


@dataclass
class ParityReport:
    gguf: str
    against: str
    lora: str | None
    n_tokens: int
    near_tie_logits: float
    rows: list[Row]
    has_template: bool
    template_equal: bool
    eos_ok: bool
    eos: dict[str, Any]
    """gguf_eos_id/text, gguf_eog_ids, hf_end_ids/texts: what each side ends an answer with."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_warnings: list[str] = field(default_factory=list)
    """WARN/ERROR lines llama.cpp logged while loading the file (a well-formed file has none)."""

    @property
    def agreement(self) -> float:
        """Share of prompts whose first N tokens agree."""
        return sum(r.agree for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def ties(self) -> int:
        """Prompts that disagree at a near-tie."""
        return sum(not r.agree and r.near_tie for r in self.rows)

    @property
    def agreement_excluding_ties(self) -> float:
        """Share of agreeing prompts among those that do not disagree at a near-tie."""
        counted = len(self.rows) - self.ties
        return sum(r.agree for r in self.rows) / counted if counted else 1.0

    @property
    def tokens_equal(self) -> bool:
        return all(r.tokens_equal for r in self.rows)

    def figure(self) -> str:
        """The figure line, e.g. "first 16 tokens agree on 4/5 prompts (80%)" (and the share without near-ties)."""
        agree, total = sum(r.agree for r in self.rows), len(self.rows)
        line = f"first {self.n_tokens} tokens agree on {agree}/{total} prompts ({self.agreement:.0%})"
        n, ties = self.ties, f"near-tie{'s' if self.ties > 1 else ''} (margin < {self.near_tie_logits:g} logits)"
        if n and n == total - agree:
            line += f"; the difference is a {ties}" if n == 1 else f"; all {n} differences are {ties}"
        elif n:
            line += f"; {agree}/{total - n} ({self.agreement_excluding_ties:.0%}) leaving out {n} {ties}"
        return line

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data |= {
            "agreement": self.agreement,
            "agreement_excluding_ties": self.agreement_excluding_ties,
            "tokens_equal": self.tokens_equal,
            "figure": self.figure(),
        }
        return data

    def format(self) -> str:
        lora = f" + LoRA {self.lora}" if self.lora else ""
        lines = [f"GGUF {self.gguf}{lora} (llama.cpp) vs {self.against} (transformers, fp32)", self.figure(), ""]
        for i, r in enumerate(self.rows, 1):
            where = "identical" if r.first_diff is None else f"first difference at token {r.first_diff}"
            if r.first_diff is not None and r.margin is not None:
                where += f" (margin {r.margin:.2f}{', near-tie' if r.near_tie else ''})"
            lines += [f"[{i}] {r.prompt!r}: {'agree' if r.agree else 'DIFFER'}, {where}"]
            lines += [f"    transformers: {_one_line(r.hf_answer)}", f"    llama.cpp:    {_one_line(r.gguf_answer)}"]
        lines += ["", f"chat template in GGUF: {'yes' if self.has_template else 'NO'}"
                  + (", equal to the model's" if self.template_equal else ", DIFFERENT from the model's"
                     if self.has_template else "")]  # fmt: skip
        lines += [f"EOS: {'ok' if self.eos_ok else 'WRONG'} (GGUF {self.eos.get('gguf_eos_text')!r}, model ends "
                  f"answers with {', '.join(map(repr, self.eos.get('hf_end_texts', [])))})"]  # fmt: skip
        lines += [f"prompt tokens equal: {'yes' if self.tokens_equal else 'NO'}"]
        if self.problems:
            lines += ["", "Problems:", *[f"- {p}" for p in self.problems]]
        else:
            lines += ["", "No problems found."]
        if self.load_warnings:
            lines += ["", "llama.cpp warnings while loading:", *[f"  {w}" for w in self.load_warnings]]
        if self.notes:
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines)


def _one_line(text: str, width: int = 160) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


# ---- the check -------------------------------------------------------------------------------------------------
def check(
    gguf_path: str | Path,
    against: str | Path,
    prompts: list[str] | None = None,
    n_tokens: int = N_TOKENS,
    max_new_tokens: int = MAX_NEW_TOKENS,
    lora: str | Path | None = None,
    base: str | None = None,
    *,
    allow_pickle: bool = False,
) -> ParityReport:
    """Compare greedy answers of `gguf_path` (in llama.cpp, with `lora` applied when given) with `against`: a merged
    or full model folder, or an adapter (base + adapter through PEFT, unmerged; `base` overrides its base)."""
    if n_tokens < 1 or max_new_tokens < 1:
        raise CheckError(f"tokens ({n_tokens}) and max new tokens ({max_new_tokens}) must be at least 1")
    n_tokens = min(n_tokens, max_new_tokens)  # "first 16 tokens agree" of 8-token answers would overstate it
    if not llamacpp.available():
        raise CheckError(llamacpp.missing_message())
    try:
        gguf = llamacpp.check_file(Path(gguf_path))
        lora_path = llamacpp.check_file(Path(lora)) if lora is not None else None
    except llamacpp.LlamaCppError as exc:
        raise CheckError(str(exc)) from None
    model, tokenizer, folder = _load_reference(against, base, allow_pickle)
    prompts, source = (list(prompts), "given") if prompts else _default_prompts(folder)
    if not prompts:
        raise CheckError("no prompts to compare: give --prompt or a --prompts file with one prompt per line")
    texts = [_render(tokenizer, p) for p in prompts]
    hf = [_hf_greedy(model, tokenizer, t, max_new_tokens) for t in texts]
    try:
        with llamacpp.open_model(gguf, lora_path) as ll:
            threshold = _threshold(ll.metadata)
            rows = [
                _row(p, t, h, ll, tokenizer, n_tokens, max_new_tokens, threshold)
                for p, t, h in zip(prompts, texts, hf, strict=True)
            ]
            report = ParityReport(
                gguf=str(gguf), against=str(against), lora=str(lora_path) if lora_path else None, n_tokens=n_tokens,
                near_tie_logits=threshold, rows=rows, load_warnings=ll.warnings,
                **_file_checks(ll, tokenizer, model),
            )  # fmt: skip
    except llamacpp.LlamaCppError as exc:
        raise CheckError(str(exc)) from None
    report.problems += _answer_problems(report)
    report.notes += [
        f"prompts: {source}",
        f"near-tie: transformers preferred its token by less than {threshold:g} logits at the first difference "
        "(rounding at this file's precision can flip such a choice)",
        llamacpp.REPACKING_NOTE,
    ]
    return report


def _load_reference(against: str | Path, base: str | None, allow_pickle: bool) -> tuple[Any, Any, Path]:
    """(model, tokenizer, folder) for a merged/full model folder or an adapter (fp32, CPU, PEFT unmerged)."""
    from app.adapters import AdapterError, infer_base, resolve_source
    from app.config import ModelConfig, QuantConfig
    from app.modeling import ModelError, load_model

    try:
        kind, folder = resolve_source(against)
        name = str(folder) if kind == "model" else base or infer_base(folder)
        loaded = load_model(ModelConfig(name_or_path=name, allow_pickle=allow_pickle), QuantConfig(), "cpu", "fp32")
        if kind == "model":
            return loaded.model.eval(), loaded.tokenizer, folder
        return _with_adapter(loaded, folder, name, allow_pickle), _adapter_tokenizer(folder, loaded), folder
    except (AdapterError, ModelError) as exc:
        raise CheckError(f"--against {against}: {exc}") from None
    except ValueError as exc:  # PEFT reports an adapter it cannot load as ValueError
        raise CheckError(f"--against {against}: the adapter does not load: {exc}") from None


def _with_adapter(loaded: Any, adapter: Path, base_name: str, allow_pickle: bool) -> Any:
    from peft import PeftModel

    from app.adapters import check_adapter_files, check_adapter_fits

    check_adapter_files(adapter, allow_pickle)
    check_adapter_fits(adapter, loaded.model, base_name, allow_pickle)
    return PeftModel.from_pretrained(loaded.model, str(adapter)).eval()


def _adapter_tokenizer(adapter: Path, loaded: Any) -> Any:
    """The adapter's tokenizer with the run's system prompt in its template, as merge writes it into the export."""
    from app.adapters import adapter_tokenizer, system_prompt_of
    from app.data_render import template_with_system

    tokenizer = adapter_tokenizer(adapter, loaded.tokenizer)
    template = template_with_system(tokenizer, system_prompt_of(adapter))
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def _default_prompts(folder: Path) -> tuple[list[str], str]:
    """The run's sample prompts (for a merged folder, of the adapter its merge record names), topped up with
    BUILTIN_PROMPTS to MIN_PROMPTS."""
    from app.export import MERGE_INFO, read_run

    adapter = folder
    record = folder / MERGE_INFO
    if record.is_file():
        adapter = Path(json.loads(record.read_text(encoding="utf-8")).get("adapter") or folder)
    train = (read_run(adapter).get("config") or {}).get("train") or {}
    own = [p for p in train.get("sample_prompts") or [] if isinstance(p, str) and p.strip()]
    extra = [p for p in BUILTIN_PROMPTS if p not in own][: max(0, MIN_PROMPTS - len(own))]
    source = f"{len(own)} sample prompt(s) of the run + {len(extra)} built-in" if own else "built-in set"
    return own + extra, source


def _render(tokenizer: Any, prompt: str) -> str:
    """The text a chat front-end sends for one user message: the chat template with the generation prompt (the
    merged tokenizer's template carries the run's system prompt), or Alpaca when there is none."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    from app.chat import ALPACA_PROMPT

    return ALPACA_PROMPT.format(instruction=prompt)


def _hf_greedy(model: Any, tokenizer: Any, text: str, max_new_tokens: int) -> tuple[list[int], list[int], Any]:
    """(prompt ids, generated ids up to and including the first stop token, per-step logits [steps, vocab])."""
    import torch
    from transformers import GenerationConfig

    from app.modelset import stop_ids

    ids = tokenizer(text, add_special_tokens=False).input_ids
    stops = sorted(stop_ids(model, tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    # a fresh GenerationConfig: the model's own may carry a repetition penalty or sampling settings
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops or None,
                           pad_token_id=pad, output_logits=True, return_dict_in_generate=True)  # fmt: skip
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=gen)  # fmt: skip
    new = out.sequences[0, len(ids) :].tolist()
    end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
    return ids, new[:end], torch.cat(out.logits[:end]).float()


def _row(prompt: str, text: str, hf: tuple, ll: Any, tokenizer: Any, n: int, max_new: int, threshold: float) -> Row:
    hf_prompt, hf_ids, logits = hf
    ll_prompt = ll.tokenize(text)
    try:
        gguf_ids = ll.greedy(ll_prompt, max_new)
    except llamacpp.LlamaCppError as exc:
        raise CheckError(f"llama.cpp could not answer {prompt!r}: {exc}") from None
    diff = _first_diff(hf_ids, gguf_ids)
    margin = None
    if diff is not None and diff < len(hf_ids):
        step = logits[diff]
        other = gguf_ids[diff] if diff < len(gguf_ids) and gguf_ids[diff] < step.shape[0] else None
        runner_up = float(step.topk(2).values[1]) if other is None else float(step[other])
        margin = float(step[hf_ids[diff]]) - runner_up
    tdiff = _first_diff(hf_prompt, ll_prompt)
    token_diff = ""
    if tdiff is not None:
        theirs = ll.piece(ll_prompt[tdiff]) if tdiff < len(ll_prompt) else "(end)"
        ours = tokenizer.decode([hf_prompt[tdiff]]) if tdiff < len(hf_prompt) else "(end)"
        token_diff = f"at token {tdiff}: llama.cpp {theirs!r} vs transformers {ours!r}"
    return Row(
        prompt=prompt, hf_answer=tokenizer.decode(hf_ids, skip_special_tokens=True),
        gguf_answer=ll.detokenize(gguf_ids), hf_ids=hf_ids, gguf_ids=gguf_ids, first_diff=diff,
        agree=diff is None or diff >= n, near_tie=margin is not None and margin < threshold, margin=margin,
        tokens_equal=tdiff is None, token_diff=token_diff,
    )  # fmt: skip


def _first_diff(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing element, len of the shorter when one is a prefix of the other, None if equal.

    >>> _first_diff([1, 2, 3], [1, 5]), _first_diff([1, 2], [1, 2, 3]), _first_diff([1], [1])
    (1, 2, None)
    """
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _threshold(metadata: dict[str, str]) -> float:
    try:
        ftype = int(metadata.get("general.file_type", ""))
    except ValueError:
        return NEAR_TIE_QUANT
    return NEAR_TIE_LOGITS.get(ftype, NEAR_TIE_QUANT)


# ---- the file's own facts: template and end of answer ------------------------------------------------------------
def _file_checks(ll: Any, tokenizer: Any, model: Any) -> dict[str, Any]:
    """Chat template present and equal to the model's; EOS where the model ends answers."""
    problems: list[str] = []
    template = ll.metadata.get("tokenizer.chat_template")
    ours = tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else None
    has_template, template_equal = bool(template), template == ours
    if not has_template and ours:
        problems.append(
            "no chat template in the GGUF (tokenizer.chat_template): llama.cpp/Ollama will prompt it with a generic "
            "template and answers will look like gibberish; re-export with TuneDesk (python -m app export gguf) or "
            "give llama.cpp the template with --chat-template / --chat-template-file"
        )
    elif has_template and ours and not template_equal:
        problems.append(
            f"the GGUF's chat template differs from the model's (first difference at character "
            f"{_first_char_diff(template, ours)}): llama.cpp/Ollama will prompt it unlike training and answers may "
            "look like gibberish or ignore the run's system prompt; re-export with TuneDesk"
        )
    eos, eos_ok, eos_problem = _eos_check(ll, tokenizer, model)
    problems += [eos_problem] if eos_problem else []
    return {"has_template": has_template, "template_equal": template_equal or not ours, "eos_ok": eos_ok,
            "eos": eos, "problems": problems}  # fmt: skip


def _first_char_diff(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _eos_check(ll: Any, tokenizer: Any, model: Any) -> tuple[dict[str, Any], bool, str | None]:
    """Does the GGUF end an answer where the model does? The model's end token is generation_config's eos (ChatML
    models: <|im_end|>), else the tokenizer's; the GGUF's is tokenizer.ggml.eos_token_id, with llama.cpp's set of
    end-of-generation tokens (it also stops at tokens it knows by name, such as <|im_end|>; other runtimes read only
    the id)."""
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
    ends = [int(t) for t in ends] or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    raw = ll.metadata.get("tokenizer.ggml.eos_token_id")
    gguf_eos = int(raw) if raw not in (None, "") else None
    eos = {
        "gguf_eos_id": gguf_eos,
        "gguf_eos_text": ll.piece(gguf_eos) if gguf_eos is not None else None,
        "gguf_eog_ids": sorted(ll.eog_ids),
        "hf_end_ids": ends,
        "hf_end_texts": [tokenizer.convert_ids_to_tokens(t) for t in ends],
    }
    if not ends:
        return eos, True, None
    primary = ends[0]
    named = f"{eos['hf_end_texts'][0]} (id {primary})"
    if gguf_eos is None:
        return (
            eos,
            False,
            (
                f"the GGUF names no EOS token (tokenizer.ggml.eos_token_id) but the model ends answers with {named}: "
                "answers will run on past the end; re-export with TuneDesk"
            ),
        )
    if gguf_eos in ends and primary in ll.eog_ids:
        return eos, True, None
    stops_anyway = primary in ll.eog_ids
    return eos, False, (
        f"EOS is {eos['gguf_eos_text']} (id {gguf_eos}) but the model ends answers with {named}: answers will run on "
        "past the end"
        + (f" in runtimes that read only tokenizer.ggml.eos_token_id (llama.cpp itself stops at {named} by its name)"
           if stops_anyway else "")
        + "; re-export with TuneDesk, or set tokenizer.ggml.eos_token_id to "
        f"{primary} (gguf-py's gguf_set_metadata.py)"
    )  # fmt: skip


def _answer_problems(report: ParityReport) -> list[str]:
    problems = []
    if not report.tokens_equal:
        first = next(r for r in report.rows if not r.tokens_equal)
        pre = _pre_name(report)
        problems.append(
            f"llama.cpp tokenizes the prompt differently ({first.token_diff}) on "
            f"{sum(not r.tokens_equal for r in report.rows)} of {len(report.rows)} prompts: the tokenizer's "
            f"pre-tokenizer (tokenizer.ggml.pre{pre}) is likely wrong; re-export with TuneDesk or llama.cpp's "
            "convert_hf_to_gguf.py"
        )
    beyond = [r for r in report.rows if not r.agree and not r.near_tie]
    if beyond:
        problems.append(
            f"answers differ on {len(beyond)} of {len(report.rows)} prompts beyond near-ties: quantization too coarse "
            "(try q6_k/q8_0) or a wrong tensor"
        )
    return problems


def _pre_name(report: ParityReport) -> str:
    try:
        from gguf import GGUFReader

        field_ = GGUFReader(report.gguf).fields.get("tokenizer.ggml.pre")
        return f" = {field_.contents()!r}" if field_ is not None else ": not set"
    except Exception:  # noqa: BLE001 - only decorates the message
        return ""


# ---- CLI: python -m app export check GGUF --against FOLDER ----------------------------------------------------
def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The check's options (no positional, no --base: `export check` shares those with `export gguf`)."""
    parser.add_argument("--against", help="merged/full model folder, or the adapter (run folder) it was exported from")
    parser.add_argument("--lora", help="a LoRA GGUF applied over the GGUF in llama.cpp")
    parser.add_argument("--prompts", metavar="FILE", help="a text file with one prompt per line")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable); default: the run's sample prompts "
                        "and built-in ones")  # fmt: skip
    parser.add_argument("--tokens", type=int, default=N_TOKENS, help=f"compare the first N tokens ({N_TOKENS})")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                        help=f"tokens generated per prompt (default {MAX_NEW_TOKENS})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A standalone command: the GGUF path, --base and the check's options."""
    parser.add_argument("gguf", help="the .gguf file to check")
    parser.add_argument("--base", help="base model of an adapter given to --against (default: adapter_config.json's)")
    add_check_arguments(parser)


def run_check(args: argparse.Namespace, gguf_path: str | None = None) -> int:
    """0: no problem; 1: problems (the report is printed all the same); 2: the check could not run (message)."""
    try:
        report = check(
            gguf_path or args.gguf, _against(args), _prompts(args), args.tokens, args.max_new_tokens, args.lora,
            getattr(args, "base", None), allow_pickle=getattr(args, "allow_pickle", False),
        )  # fmt: skip
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2, ensure_ascii=False) if args.json else report.format())
    return 1 if report.problems else 0


main = run_check


def _against(args: argparse.Namespace) -> str:
    if not args.against:
        raise CheckError("--against is required: the merged model folder or the adapter the GGUF was exported from")
    return args.against


def _prompts(args: argparse.Namespace) -> list[str] | None:
    prompts = list(args.prompt or [])
    if args.prompts:
        path = Path(args.prompts).expanduser()
        if not path.is_file():
            raise CheckError(f"--prompts {path}: no such file; give a text file with one prompt per line")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts or None
