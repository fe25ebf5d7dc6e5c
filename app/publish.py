"""Push an export to the Hugging Face Hub: a merged model folder, a LoRA adapter or GGUF files, with a model card.

    python -m app push exports/X --repo you/my-model                  # merged (private by default)
    python -m app push runs/X/adapter --repo you/my-adapter --what adapter
    python -m app push exports/X-gguf --repo you/my-model-GGUF --what gguf --no-private

How: huggingface_hub's own upload API (HfApi.create_repo, preupload_lfs_files per file so progress and Cancel come
between files, then one create_commit with every file), with the token from huggingface_hub's store (`get_token()`:
what `hf auth login` or the Model tab's token field saved, or HF_TOKEN). TuneDesk never writes the token anywhere.

What is uploaded: the folder's files less TuneDesk's private records (tunedesk_export.json, tunedesk_merge.json,
tunedesk_source.json: they hold local paths), hidden and .tmp files and a checkpoint's trainer state; README.md is
the model card built here (base model, method, data, hyper-parameters, final losses, the run's latest Evaluate
table, usage). Local absolute paths never reach the Hub: the card names files, not /home/... paths; an adapter's
base_model_name_or_path that is a local folder becomes the base's Hub id (or its folder name when it has none), and
the Modelfile names "." where it named the export folder (its `cd FOLDER` comment).

No gradio, no torch.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import hub
from app.adapters import AdapterError
from app.commands import PushConfig
from app.config import ConfigError
from app.hub import HubError

Progress = Callable[[float, str], None]

PRIVATE_FILES = ("tunedesk_export.json", "tunedesk_merge.json", "tunedesk_source.json")
"""TuneDesk's own records in an export folder (app.export.EXPORT_MARKER, MERGE_INFO, app.modeling.SOURCE_FILE):
they name local folders, so they stay here."""
SKIPPED = ("*.tmp", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin")
"""Never uploaded: unfinished writes, and the trainer state a checkpoint folder carries beside its adapter."""
CARD = "README.md"
NAME_RULE = "letters, digits, '-', '_' and '.' only, up to 96 characters, no '--' or '..'"
WRITE_HELP = "save a token with WRITE access in the Model tab or `hf auth login`"


@dataclass(frozen=True)
class PushResult:
    url: str
    """The repo's page on the Hub."""
    repo_id: str
    files: tuple[str, ...]
    """Paths in the repo that this push sent (README.md included), sorted."""
    created: bool
    """True when the push created the repo, False when it reused an existing one."""
    private: bool
    commit_url: str | None = None


@dataclass
class Upload:
    """What a push sends: repo path -> a local file, or bytes made here (the card, rewritten files)."""

    folder: Path
    files: dict[str, Path | bytes] = field(default_factory=dict)

    def size(self, path: str) -> int:
        src = self.files[path]
        return len(src) if isinstance(src, bytes) else src.stat().st_size


# ---- the folder ----------------------------------------------------------------------------------------------
def check_folder(folder: Path, what: str) -> list[str]:
    """Every reason `folder` is not the `what` (merged | adapter | gguf) a push was told it is; [] when it is."""
    if not folder.is_dir():
        return [f"{folder}: not found or not a folder; choose the folder an export or a run wrote"]
    names = {p.name for p in folder.iterdir() if p.is_file()}
    problems = []
    if what == "merged":
        if "config.json" not in names:
            problems.append(f"{folder}: no config.json, so it is not a model folder")
        if not any(n.endswith(".safetensors") for n in names):
            problems.append(f"{folder}: no *.safetensors weights (TuneDesk pushes safetensors only)")
    elif what == "adapter":
        if "adapter_config.json" not in names:
            problems.append(f"{folder}: no adapter_config.json, so it is not a LoRA adapter folder")
        if "adapter_model.safetensors" not in names:
            problems.append(f"{folder}: no adapter_model.safetensors (TuneDesk pushes safetensors adapters only)")
    elif not any(n.endswith(".gguf") for n in names):
        problems.append(f"{folder}: no .gguf file; export one first (python -m app export gguf ...)")
    return problems + _kind_hint(names, what) if problems else []


def _kind_hint(names: set[str], what: str) -> list[str]:
    """Which --what the folder looks like, when it is not the one given."""
    looks = (
        "adapter" if "adapter_config.json" in names else "gguf" if any(n.endswith(".gguf") for n in names) else None
    )
    if looks is None and "config.json" in names:
        looks = "merged"
    return [f"the folder holds {looks} files: push it with --what {looks}"] if looks and looks != what else []


def _skipped(rel: Path) -> bool:
    return (
        any(part.startswith(".") for part in rel.parts)
        or rel.name in PRIVATE_FILES
        or any(fnmatch.fnmatch(rel.name, p) for p in SKIPPED)
        or "__pycache__" in rel.parts
    )


def plan_upload(folder: Path, what: str, card: str) -> Upload:
    """The files a push of `folder` sends, with the card as README.md and local paths rewritten."""
    up = Upload(folder)
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not _skipped(rel):
            up.files[rel.as_posix()] = p
    up.files[CARD] = card.encode("utf-8")
    if what == "adapter":
        _public_adapter_config(up)
    if "Modelfile" in up.files and isinstance(up.files["Modelfile"], Path):
        text = up.files["Modelfile"].read_text(encoding="utf-8")
        for local in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
            text = text.replace(local, ".")
        up.files["Modelfile"] = text.encode("utf-8")
    return up


def _public_adapter_config(up: Upload) -> None:
    """base_model_name_or_path as a Hub id: a local folder means nothing on another machine (and names this one's
    folders). PeftModel/AutoPeftModel then load the base from the Hub."""
    cfg = json.loads((up.folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if isinstance(base, str) and _is_local(base):
        cfg["base_model_name_or_path"] = _public_name(base)
        up.files["adapter_config.json"] = (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _is_local(value: str) -> bool:
    return value.startswith(("/", "~", "\\")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/")


def _public_name(base: str) -> str:
    """The Hub id of a base model (the default model's, or an owner/name id), else its folder's name."""
    from app.export import hub_id

    return hub_id(base) or Path(base).name


# ---- the model card ------------------------------------------------------------------------------------------
@dataclass
class Facts:
    """What the card says, gathered from the folder, its merge record, the run and its saved evaluations."""

    what: str
    base: str | None = None
    dtype: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    adapter_config: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    train_examples: int | None = None
    gguf_files: list[tuple[str, int]] = field(default_factory=list)
    modelfile: bool = False
    license: str | None = None


def gather(folder: Path, what: str, source: Path | None = None) -> Facts:
    """The card's facts for `folder`. `source`: the adapter or merged folder a GGUF folder was exported from (a
    GGUF folder does not record it; without it the card has the GGUF files' facts only)."""
    from app.adapters import base_of, read_adapter_config
    from app.export import read_run

    facts = Facts(what)
    if what == "gguf":
        facts.gguf_files = [(p.name, p.stat().st_size) for p in sorted(folder.glob("*.gguf"))]
        facts.modelfile = (folder / "Modelfile").is_file()
    origin = source if what == "gguf" and source else folder
    adapter, merge = _adapter_of(origin, what), _merge_record(origin)
    if adapter is not None:
        facts.adapter_config, facts.base = read_adapter_config(adapter), base_of(adapter)
        facts.run = read_run(adapter)
    elif what != "gguf" or source:
        facts.run = read_run(origin)  # a full/freeze run's model/ folder
    run_base = ((facts.run.get("config") or {}).get("model") or {}).get("name_or_path")
    facts.base = merge.get("base_name") or facts.base or run_base or (_gguf_base(folder) if what == "gguf" else None)
    facts.dtype = merge.get("dtype")
    facts.license = _license(merge.get("base") or facts.base)
    if facts.run.get("run_dir"):
        facts.evaluation, facts.train_examples = _latest_evaluation(Path(facts.run["run_dir"])), _examples(facts.run)
    return facts


def _merge_record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / "tunedesk_merge.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _adapter_of(origin: Path, what: str) -> Path | None:
    """The adapter behind a folder: itself, or the one its merge record names."""
    if what == "adapter":
        return origin
    if (origin / "adapter_config.json").is_file():
        return origin
    named = _merge_record(origin).get("adapter")
    return Path(named) if named and (Path(named) / "adapter_config.json").is_file() else None


def _gguf_base(folder: Path) -> str | None:
    """The base model a GGUF names (general.base_model.0.repo_url, as llama.cpp's converter writes it)."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(next(iter(sorted(folder.glob("*.gguf")))))
        found = reader.fields.get("general.base_model.0.repo_url")
        url = bytes(found.parts[found.data[0]]).decode("utf-8") if found is not None else ""
    except Exception:  # an unreadable or foreign GGUF: the card says "unknown"
        return None
    parts = url.rstrip("/").split("/")
    return "/".join(parts[-2:]) if url.startswith("http") and len(parts) >= 5 else None


def _license(base: str | None) -> str | None:
    """The license in the base model's README.md front matter (its folder, or the Hub cache's copy), if any."""
    if not base:
        return None
    card = Path(base).expanduser() / CARD
    if not card.is_file():
        card = hub.cached_file(base, CARD) or card
    meta = _front_matter(card)
    value = meta.get("license")
    return str(value) if value else None


def _front_matter(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        meta = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
    except (OSError, IndexError, yaml.YAMLError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _latest_evaluation(run_dir: Path) -> dict[str, Any] | None:
    from app import eval_report

    found = [e for e in eval_report.list_evaluations(run_dir) if e.get("table")]
    return found[0] if found else None


def _examples(run: dict[str, Any]) -> int | None:
    """Training records the run's last session counted (its `started`/`resumed` event's train_examples)."""
    from app import history

    sessions = history.read(run["run_dir"]).sessions
    value = sessions[-1].train_examples if sessions else None
    return value if isinstance(value, int) else None


def model_card(facts: Facts, repo_id: str) -> str:
    """README.md for the Hub: yaml front matter, then training facts, evaluation, files and usage."""
    method = _method(facts)
    base_id = _public_name(facts.base) if facts.base else None
    meta = [
        "---",
        *([f"base_model: {base_id}"] if base_id and "/" in base_id else []),
        *([f"license: {facts.license}"] if facts.license else []),
    ]
    meta += {"adapter": ["library_name: peft"], "merged": ["library_name: transformers"], "gguf": []}[facts.what]
    kind_tag = {"adapter": "lora", "merged": "merged", "gguf": "gguf"}[facts.what]
    tags = ["tunedesk", *([method] if method else []), kind_tag]
    meta += ["tags:", *[f"- {t}" for t in dict.fromkeys(tags)], "---", ""]
    title = {"adapter": "a LoRA adapter", "merged": "a merged model", "gguf": "GGUF files"}[facts.what]
    lines = [f"# {repo_id.split('/')[1]}", "", f"{title[0].upper()}{title[1:]} trained with TuneDesk."]
    lines += _training_section(facts, method, base_id) + _evaluation_section(facts.evaluation)
    lines += _files_section(facts) + _usage_section(facts, repo_id, base_id)
    return "\n".join(meta + lines) + "\n"


def _method(facts: Facts) -> str | None:
    """The run's method; for an adapter without a run, what its config says; None when nothing says."""
    cfg = facts.run.get("config") or {}
    if cfg.get("method"):
        return str(cfg["method"])
    return ("dora" if facts.adapter_config.get("use_dora") else "lora") if facts.adapter_config else None


def _training_section(facts: Facts, method: str, base_id: str | None) -> list[str]:
    from app.export import loss_text

    cfg = facts.run.get("config") or {}
    train, data, acfg = cfg.get("train") or {}, cfg.get("data") or {}, facts.adapter_config
    targets = acfg.get("target_modules")
    targets = ", ".join(sorted(targets)) if isinstance(targets, list) else targets
    detail = f" (r={acfg.get('r')}, alpha={acfg.get('lora_alpha')}, targets: {targets})" if acfg else ""
    rows = [("Base model", f"`{base_id}`" if base_id else "unknown"), ("Method", f"{method or 'unknown'}{detail}")]
    from app import methods

    if method in methods.TABLE and methods.TABLE[method].quantized:
        rows.append(("Quantization", f"QLoRA: trained on {(cfg.get('quant') or {}).get('bits')}-bit base weights"))
    if data.get("path"):
        count = f" ({facts.train_examples} training records)" if facts.train_examples else ""
        rows.append(("Data", f"`{_public_path(str(data['path']))}`{count}"))
    if train:
        steps = f"max {train['max_steps']} steps" if train.get("max_steps") else f"{train.get('epochs')} epochs"
        rows += [("Learning rate", train.get("learning_rate")), ("Length", steps)]
        batch = f"{train.get('batch_size')} x {train.get('grad_accum')} gradient accumulation"
        rows += [("Batch", batch), ("Sequence length", data.get("max_seq_len"))]
    if facts.run:
        rows += [("Steps trained", facts.run.get("steps", "unknown"))]
        rows += [
            ("Final train loss", loss_text(facts.run.get("train_loss"))),
            ("Final eval loss", loss_text(facts.run.get("eval_loss"))),
        ]
    if facts.dtype:
        rows.append(("Merged in", facts.dtype))
    return ["", "## Training", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _evaluation_section(ev: dict[str, Any] | None) -> list[str]:
    """The run's latest saved evaluation (the Evaluate tab's table), base model row included."""
    if not ev:
        return []
    from app.eval_report import METRIC_LABELS, METRICS

    shown = [m for m in METRICS if any(row.get(m) is not None for row in ev["table"])]
    head = ["Model", *(METRIC_LABELS.get(m, m.capitalize()) for m in shown), "Examples"]
    where = f" of `{_public_path(str(ev['data']))}`" if ev.get("data") else ""
    split = f" ({ev['split']})" if ev.get("split") else ""
    lines = ["", "## Evaluation", "", f"{ev.get('n_examples')} examples{where}{split}, evaluated with TuneDesk:", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ev["table"]:
        cells = [str(row.get("model")), *(_metric(m, row.get(m)) for m in shown), str(row.get("n_examples", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    if ev.get("cancelled"):
        lines += ["", "The evaluation was cancelled: partial results."]
    return lines


def _files_section(facts: Facts) -> list[str]:
    if not facts.gguf_files:
        return []
    lines = ["", "## Files", "", "| File | Size |", "|---|---|"]
    return lines + [f"| {name} | {hub.fmt_bytes(size)} |" for name, size in facts.gguf_files]


def _usage_section(facts: Facts, repo_id: str, base_id: str | None) -> list[str]:
    lines = ["", "## Use", ""]
    if facts.what == "adapter":
        lines += [
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
        ]
        lines += [f'base = AutoModelForCausalLM.from_pretrained("{base_id or "BASE_MODEL"}")']
        lines += [f'model = PeftModel.from_pretrained(base, "{repo_id}")']
        lines += [f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', "```"]
    elif facts.what == "merged":
        lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
        lines += [f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")']
        lines += [f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', "```"]
    else:
        lines += _gguf_usage(facts, repo_id)
    return lines


def _gguf_usage(facts: Facts, repo_id: str) -> list[str]:
    names = [n for n, _ in facts.gguf_files]
    base = next((n for n in names if n.startswith("base-")), None)
    lora = next((n for n in names if n.startswith("adapter-")), None)
    if base and lora:  # a LoRA as GGUF: llama.cpp applies it over the base at load time
        run = [f"hf download {repo_id} {base} {lora} --local-dir .", f"llama-cli -m {base} --lora {lora} -cnv"]
    else:  # the smallest file: the most quantized one
        first = min(facts.gguf_files, key=lambda f: f[1])[0] if facts.gguf_files else "model.gguf"
        run = [f"hf download {repo_id} {first} --local-dir .", f"llama-cli -m {first} -cnv"]
        run.append(f"ollama run hf.co/{repo_id}")
    lines = ["```sh", *run, "```"]
    if facts.modelfile:
        lines += ["", "Or with the Modelfile in this repo, beside the GGUF files:"]
        lines += ["", "```sh", "ollama create my-model -f Modelfile && ollama run my-model", "```"]
    return lines


def _public_path(value: str) -> str:
    """A file named by its name alone when it is a local absolute path (a card never shows /home/... paths)."""
    return Path(value).name if _is_local(value) else value


def _metric(name: str, value: Any) -> str:
    """Loss in nats to 4 places, perplexity to 2, the 0-100 text scores to 1."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.4f}" if name == "loss" else f"{value:.2f}" if name == "perplexity" else f"{value:.1f}"


# ---- the push ------------------------------------------------------------------------------------------------
def push(
    folder: str | Path,
    cfg: PushConfig,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    *,
    source: str | Path | None = None,
) -> PushResult:
    """Upload `folder` (what cfg.what says it is) to the Hub repo cfg.repo_id with a model card; created private
    unless cfg.private is False (an existing repo is reused as it is). Raises HubError with one line saying what
    to do: "invalid" (every problem with the folder and the options), "auth" (no token, or the Hub refused it),
    "forbidden" (a read token, or an owner the token cannot write to), "cancelled", "unreachable", "failed"."""
    say = progress or (lambda frac, msg: None)
    folder = Path(folder).expanduser()
    say(0.0, f"checking {folder} ({cfg.what})")
    problems = cfg.validate() + check_folder(folder, cfg.what)
    if not cfg.repo_id.strip():
        problems.insert(0, "repo_id: empty; name the Hub repo to push to as owner/name (--repo you/my-model)")
    elif not any(p.startswith("repo_id") for p in problems) and hub.valid_id(cfg.repo_id) is None:
        problems.insert(0, f"repo_id: {cfg.repo_id.strip()!r} is not a valid Hub name: {NAME_RULE}")
    if problems:
        raise HubError("invalid", "cannot push: " + "; ".join(problems))
    repo_id = cfg.repo_id.strip()
    token = _token()
    try:
        facts = gather(folder, cfg.what, Path(source).expanduser() if source else None)
        upload = plan_upload(folder, cfg.what, model_card(facts, repo_id))
    except (AdapterError, OSError, ValueError) as exc:  # a damaged adapter_config.json, an unreadable file
        raise HubError("invalid", f"cannot push {folder}: {hub.first_line(exc)}") from None
    hub.require_reachable()
    try:
        return _send(upload, repo_id, cfg, token, say, cancel)
    except HubError:
        raise
    except Exception as exc:
        raise push_error(exc, repo_id) from None


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError("auth", f"no Hugging Face token is saved here: {WRITE_HELP}")
    return token


def _send(
    up: Upload, repo_id: str, cfg: PushConfig, token: str, say: Progress, cancel: threading.Event | None
) -> PushResult:
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi(endpoint=hub.endpoint(), token=token)
    say(0.05, f"creating repo {repo_id} ({'private' if cfg.private else 'public'}) unless it exists")
    try:
        existing = api.repo_info(repo_id)
    except RepositoryNotFoundError:
        existing = None
    api.create_repo(repo_id, private=cfg.private, exist_ok=True)
    paths = sorted(up.files)
    total = sum(up.size(p) for p in paths)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=up.files[p]) for p in paths]
    done = 0
    for i, op in enumerate(ops):
        if cancel is not None and cancel.is_set():
            raise HubError("cancelled", f"push cancelled before {op.path_in_repo}: nothing was committed to {repo_id}")
        size = up.size(op.path_in_repo)
        frac = 0.1 + 0.8 * done / max(total, 1)
        what = f"{i + 1}/{len(ops)} {op.path_in_repo} ({hub.fmt_bytes(size)})"
        say(frac, f"uploading {len(ops)} files ({hub.fmt_bytes(total)}): {what}")
        api.preupload_lfs_files(repo_id, [op], free_memory=False)
        done += size
    say(0.92, f"committing {len(ops)} files to {repo_id}")
    info = api.create_commit(repo_id, ops, commit_message=cfg.message or PushConfig.message)
    url = hub.repo_url(repo_id)
    say(1.0, f"done: {url}")
    private = bool(existing.private) if existing is not None else cfg.private
    return PushResult(url, repo_id, tuple(paths), existing is None, private, getattr(info, "commit_url", None))


def push_error(exc: BaseException, repo_id: str) -> HubError:
    """The one-line message for a failed write to `repo_id` (reads go through hub.as_hub_error)."""
    from huggingface_hub.errors import BadRequestError, HfHubHTTPError

    owner = repo_id.split("/")[0]
    status = getattr(getattr(exc, "response", None), "status_code", None)
    said = hub.first_line(exc)
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return HubError("auth", f"the Hub did not accept the saved token for pushing to {repo_id} (401): {WRITE_HELP}")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return HubError(
            "forbidden",
            f"the saved token cannot write to {owner} (403): a read-only token, or a repo/org you cannot write to; "
            f"{WRITE_HELP}, or push to a repo under your own name",
        )
    if isinstance(exc, BadRequestError) or (isinstance(exc, HfHubHTTPError) and status in (400, 409, 422)):
        return HubError("failed", f"the Hub refused the push to {repo_id} ({status}): {_server_message(exc, said)}")
    return hub.as_hub_error(exc, repo_id)


def _server_message(exc: BaseException, fallback: str) -> str:
    message = getattr(exc, "server_message", None)
    return str(message).strip().splitlines()[0] if message else fallback


# ---- CLI: python -m app push FOLDER --repo owner/name ------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from app import commands

    parser.add_argument("folder", help="a merged model folder, an adapter folder or a folder of GGUF files")
    commands.add_options(parser, PushConfig)
    parser.add_argument(
        "--source", default=None, help="for --what gguf: the adapter or merged folder the GGUF was exported from "
        "(its run's facts and evaluation go into the model card)"
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    from app import commands

    cancel = threading.Event()

    def show(frac: float, msg: str) -> None:
        print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)

    try:
        cfg = commands.from_args(PushConfig, args)
        result = push(args.folder, cfg, show, cancel, source=getattr(args, "source", None))
    except (HubError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: push cancelled: nothing was committed to {args.repo_id}", file=sys.stderr)
        return 130
    state = "created" if result.created else "updated"
    print(f"{state} {'private' if result.private else 'public'} repo {result.repo_id}: {len(result.files)} files")
    print(result.url)
    return 0
