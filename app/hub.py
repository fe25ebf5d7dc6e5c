"""The one home for talking to the Hugging Face Hub: search, what a download will fetch, the disk check, the
download itself (progress, cancel, resume), what the local cache holds, the token, and readable errors.

Everything goes through huggingface_hub: `HfApi` for search and repo facts, `snapshot_download` for the transfer
(its cache, its files-that-arrived-whole resume, its tree cache that tells a complete snapshot from a partial one),
`login`/`get_token` for the token store `hf auth login` writes. No HTTP code of our own. A download a page shows
runs as a `Transfer` the app owns (`start`/`current`, one at a time for both tabs, `Busy` otherwise), so a refreshed
page finds it again and nothing says "downloading" after its thread ended.

The endpoint, the cache folder and the token path are read from `huggingface_hub.constants` at call time, so
`HF_ENDPOINT`/`HF_HOME` (and the tests' stand-in Hub) apply to every call.

The token is only ever handed to `login()`: never written into a config, a run folder, a log or an event.

No gradio, no torch.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REACH_TIMEOUT_S = 3.0

# What training a transformers model needs from a model repo, top-level files only. Weights are safetensors;
# pickle weights (.bin) only with the user's consent; everything else (GGUF, ONNX, TF/Flax, original checkpoints,
# images) is left on the Hub.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
    "*.py",  # remote code: fetched, but only run after the app's trust_remote_code consent
    "*.safetensors",
    "model.safetensors.index.json",
)
PICKLE_FILES = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
DATA_FILES = ("*.json", "*.jsonl", "*.csv", "*.parquet", "*.txt", "*.arrow", "*.json.gz", "*.jsonl.gz", "README.md")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "*.tiktoken")
DISK_MARGIN = 0.10
DISK_RESERVE = 256 * 2**20
"""Free space a download must leave: 10% of its size plus 256 MiB, so a run's checkpoints, the cache's own files
and the system are not starved by a disk filled to the last byte."""


class HubError(Exception):
    """A Hub problem said in one line (what, where, what to do); `kind` lets callers react."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ---- where ----------------------------------------------------------------------------------------------------
def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    return f"{endpoint()}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the endpoint's host accepts a TCP connection within `timeout` seconds, name lookup included
    (False in offline mode). Behind a proxy the host is not dialled directly: True, and the client's own
    timeouts decide."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True
    parts = urllib.parse.urlsplit(endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answer: list[bool] = []

    def dial() -> None:
        try:
            socket.create_connection((parts.hostname or "huggingface.co", port), timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=dial, name="hub-reachable", daemon=True)  # getaddrinfo has no timeout
    probe.start()
    probe.join(timeout)
    return bool(answer and answer[0])


def unreachable_message() -> str:
    return (
        f"The Hugging Face Hub ({endpoint()}) cannot be reached: no network, a firewall, or HF_HUB_OFFLINE is set. "
        "Models and datasets already downloaded keep working."
    )


def require_reachable(timeout: float = REACH_TIMEOUT_S) -> None:
    if not reachable(timeout):
        raise HubError("unreachable", unreachable_message())


# ---- errors ---------------------------------------------------------------------------------------------------
def as_hub_error(exc: BaseException, repo_id: str, repo_type: str = "model") -> HubError:
    """The one-line message for an exception from huggingface_hub (or the network) about `repo_id`."""
    from huggingface_hub import errors

    if isinstance(exc, HubError):
        return exc
    url = repo_url(repo_id, repo_type)
    if isinstance(exc, errors.GatedRepoError):
        return gated_error(repo_id, repo_type)
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError("revision", f"{repo_id} has no revision by that name: check the branch, tag or commit")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return not_found_error(repo_id, repo_type)
    if isinstance(exc, errors.HFValidationError):
        return require_id_error(repo_id)
    if isinstance(exc, errors.OfflineModeIsEnabled) or _is_connection_error(exc):
        return HubError("unreachable", unreachable_message())
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(
                "auth", f"the Hub refused access to {repo_id} ({status}): save a token with read access to {url}"
            )
        return HubError("failed", f"the Hub answered an error for {repo_id}: {first_line(exc)}")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return HubError("disk", f"the disk holding {cache_dir()} is full: free space and press Download again")
    return HubError("failed", f"{repo_id} could not be fetched: {type(exc).__name__}: {first_line(exc)}")


def gated_error(repo_id: str, repo_type: str = "model") -> HubError:
    how = "the token saved here has no access yet" if saved_token_name() else "no token is saved here"
    return HubError(
        "gated",
        f"{repo_id} is gated and {how}: accept its license at {repo_url(repo_id, repo_type)} while logged in to the "
        "Hub, then save a read token in the Model tab's token field (or run `hf auth login`).",
    )


def not_found_error(repo_id: str, repo_type: str = "model") -> HubError:
    kind = "dataset" if repo_type == "dataset" else "model"
    return HubError(
        "not_found",
        f"{kind} {repo_id!r} was not found on the Hub ({endpoint()}): check the spelling (owner/name); a private "
        "repo also needs a token with access.",
    )


def chain(exc: BaseException) -> list[BaseException]:
    """An exception and its causes, outermost first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return out


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text (its type name when it has none), cut at `limit` characters."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    import httpx

    kinds = (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError, socket.timeout)
    return any(isinstance(e, kinds) for e in chain(exc))


# ---- token ----------------------------------------------------------------------------------------------------
def login(token: str) -> str:
    """Check `token` with the Hub and store it where `hf auth login` does; return the account name."""
    import huggingface_hub

    token = (token or "").strip()
    if not token:
        raise HubError("auth", "the token field is empty: paste a read token from the Hub settings (Access Tokens)")
    try:
        user = _api().whoami(token=token)["name"]
        huggingface_hub.login(token=token, add_to_git_credential=False, skip_if_logged_in=False)
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise HubError(
                "auth", "the Hub did not accept this token: copy it again from your Access Tokens page"
            ) from None
        raise as_hub_error(exc, "(token check)") from None
    return str(user)


def saved_token_name() -> str | None:
    """The name of the token in huggingface_hub's store (the name it was given on the Hub's Access Tokens page;
    "saved token" when the store does not say); None without a token. No network: it says a token is there, not
    which account it belongs to (`login` returns that)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        return None
    try:
        from huggingface_hub.utils import _auth

        for name, value in _auth.get_stored_tokens().items():
            if value == token:
                return name
    except Exception:  # older/newer layouts of the stored-tokens file: the token itself is what matters
        pass
    return "saved token"


def logout() -> None:
    """Forget the token TuneDesk saved (huggingface_hub's logout of that token alone: other stored tokens and git
    credentials stay). A token from the environment cannot be forgotten here: HubError says so."""
    import huggingface_hub

    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        raise HubError(
            "auth", "the token comes from the HF_TOKEN environment variable: unset it where TuneDesk is started"
        )
    name = saved_token_name()
    if name is None:
        return
    try:
        huggingface_hub.logout(token_name=None if name == "saved token" else name)
    except Exception as exc:  # a store it cannot change: said, not swallowed
        raise HubError("auth", f"the saved token could not be removed: {first_line(exc)}") from None


# ---- what is on the Hub ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None


@dataclass(frozen=True)
class RepoSummary:
    """A search hit or one repo's card."""

    id: str
    repo_type: str
    downloads: int | None
    likes: int | None
    license: str | None
    gated: bool
    sha: str | None
    files: tuple[RepoFile, ...]
    weights_bytes: int | None
    state: str
    """"ready" | "partial" | "absent": what the local Hugging Face cache holds."""


def _license(info: Any) -> str | None:
    card = getattr(info, "card_data", None) or getattr(info, "cardData", None)
    value = None
    if card is not None:
        value = card.get("license") if hasattr(card, "get") else getattr(card, "license", None)
    if not value:
        value = next((t.split(":", 1)[1] for t in getattr(info, "tags", None) or [] if t.startswith("license:")), None)
    return str(value) if value else None


def _files(info: Any) -> tuple[RepoFile, ...]:
    return tuple(RepoFile(s.rfilename, getattr(s, "size", None)) for s in getattr(info, "siblings", None) or [])


def _summary(info: Any, repo_type: str) -> RepoSummary:
    files = _files(info)
    weights = None
    if files and repo_type == "model":
        chosen, _ = select_model_files(files, allow_pickle=True)
        sized = [f for f in chosen if _is_weight(f.path)]
        weights = sum(f.size or 0 for f in sized) if sized and all(f.size is not None for f in sized) else None
    return RepoSummary(
        id=info.id,
        repo_type=repo_type,
        downloads=getattr(info, "downloads", None),
        likes=getattr(info, "likes", None),
        license=_license(info),
        gated=bool(getattr(info, "gated", False)),
        sha=getattr(info, "sha", None),
        files=files,
        weights_bytes=weights,
        state=cached_state(info.id, repo_type),
    )


def repo_summary(repo_id: str, repo_type: str = "model", revision: str | None = None) -> RepoSummary:
    """One repo's facts with its file list and sizes. Raises HubError (not found, gated, unreachable...)."""
    repo_id = require_id(repo_id)
    require_reachable()
    try:
        info = _api().repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
    except Exception as exc:
        raise as_hub_error(exc, repo_id, repo_type) from None
    return _summary(info, repo_type)


def search_models(query: str, limit: int = 20, sizes: int = 8) -> list[RepoSummary]:
    """Models matching `query` (a name or an exact id), most downloaded first; the first `sizes` hits carry their
    file list so the weights size shows (one small request each, in parallel). An exact id comes first."""
    from concurrent.futures import ThreadPoolExecutor

    query = query.strip().strip("/")
    if not query:
        return []
    require_reachable()
    api = _api()
    try:
        expand = ["downloads", "likes", "gated", "tags", "sha"]  # the default listing lacks gated
        hits = {h.id: h for h in api.list_models(search=query, limit=limit, sort="downloads", expand=expand)}
    except Exception as exc:
        raise as_hub_error(exc, query) from None
    ids = list(hits)
    if "/" in query and query not in hits:
        ids.insert(0, query)  # an exact id the search did not return (private, or search lag): ask directly

    def card(repo_id: str) -> RepoSummary | None:
        try:
            return _summary(api.repo_info(repo_id, files_metadata=True), "model")
        except Exception:  # gated card, gone, not found: the listing's facts below (none for an unknown exact id)
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        detailed = dict(zip(ids[:sizes], pool.map(card, ids[:sizes]), strict=True))
    out = []
    for repo_id in ids:
        summary = detailed.get(repo_id)
        if summary is None and repo_id in hits:
            summary = _summary(hits[repo_id], "model")
        if summary is not None:
            out.append(summary)
    return out


def fetch_config(repo_id: str, revision: str | None = None) -> dict:
    """A model's config.json (one small file, kept in the Hugging Face cache): what the estimate needs to say
    whether a run fits before the weights are downloaded."""
    import json

    from huggingface_hub import hf_hub_download

    require_reachable()
    try:
        path = hf_hub_download(repo_id, "config.json", revision=revision, endpoint=endpoint(), etag_timeout=5)
    except Exception as exc:
        raise as_hub_error(exc, repo_id) from None
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---- what a download fetches ------------------------------------------------------------------------------------
def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _is_weight(path: str) -> bool:
    return path.endswith(".safetensors") or _matches(path, ("pytorch_model*.bin",))


def select_model_files(files: Iterable[RepoFile], allow_pickle: bool = False) -> tuple[list[RepoFile], list[RepoFile]]:
    """(files training needs, files left on the Hub). Top-level files only; safetensors weights (a sharded set wins
    over a single-file copy; `consolidated*` originals are left); pickle weights only when there are no safetensors
    and `allow_pickle`."""
    files = list(files)
    top = [f for f in files if "/" not in f.path]
    safetensors = [f for f in top if f.path.endswith(".safetensors") and not f.path.startswith("consolidated")]
    names = {f.path for f in top}
    if "model.safetensors.index.json" in names and any(f.path.startswith("model-") for f in safetensors):
        safetensors = [f for f in safetensors if f.path != "model.safetensors"]
    keep = [f for f in top if _matches(f.path, MODEL_FILES) and not f.path.endswith(".safetensors")]
    keep += safetensors
    if not safetensors and allow_pickle:
        keep += [f for f in top if _matches(f.path, PICKLE_FILES)]
    chosen = {f.path for f in keep}
    return [f for f in files if f.path in chosen], [f for f in files if f.path not in chosen]


@dataclass(frozen=True)
class Plan:
    """Exactly what a download fetches."""

    repo_id: str
    repo_type: str
    revision: str | None
    sha: str
    files: tuple[RepoFile, ...]
    skipped: tuple[RepoFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def patterns(self) -> list[str]:
        return [f.path for f in self.files]


def plan_download(
    repo_id: str,
    repo_type: str = "model",
    revision: str | None = None,
    allow_pickle: bool = False,
    patterns: list[str] | None = None,
) -> Plan:
    """What `download` will fetch from `repo_id`. Raises HubError: not found, gated, unreachable, or a model repo
    whose only weights are pickle files (kind "consent") or that has no weights transformers can load."""
    summary = repo_summary(repo_id, repo_type, revision)
    files = summary.files
    if repo_type == "model":
        chosen, skipped = select_model_files(files, allow_pickle)
        if not any(_is_weight(f.path) for f in chosen):
            if any(_matches(f.path, PICKLE_FILES) for f in files if "/" not in f.path):
                raise HubError(
                    "consent",
                    f"{summary.id} has only pickle weights (pytorch_model*.bin), which can run code when loaded. "
                    "Allow it (the Model tab's 'Allow pickle weights', `download model --allow-pickle`, or "
                    "model.allow_pickle: true in a run config) only if you trust its author.",
                )
            ggufs = [f.path for f in files if f.path.endswith(".gguf")]
            hint = f" It has GGUF files ({ggufs[0]}, ...): download one and open it as a .gguf file." if ggufs else ""
            raise HubError("failed", f"{summary.id} has no safetensors weights that transformers can load.{hint}")
        if not any(f.path == "config.json" for f in chosen):
            raise HubError("failed", f"{summary.id} has no config.json: it is not a transformers model repo")
    else:
        wanted = patterns or list(DATA_FILES)
        chosen = [f for f in files if _matches(f.path, wanted) or f.path in wanted]
        skipped = [f for f in files if f not in chosen]
        if not chosen:
            raise HubError("failed", f"dataset {summary.id} has no data files matching {', '.join(wanted[:4])}")
    if summary.gated:
        _check_access(summary.id, repo_type, chosen[0].path, summary.sha)
    return Plan(summary.id, repo_type, revision, summary.sha or "", tuple(chosen), tuple(skipped))


def _check_access(repo_id: str, repo_type: str, filename: str, revision: str | None) -> None:
    """A gated repo shows its card to anyone and its files only to those who accepted the license: ask for one
    file's metadata (a HEAD) so a missing grant is said before the download starts."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, filename, repo_type=repo_type, revision=revision, endpoint=endpoint())
    try:
        get_hf_file_metadata(url, timeout=REACH_TIMEOUT_S * 3, endpoint=endpoint())
    except Exception as exc:
        raise as_hub_error(exc, repo_id, repo_type) from None


# ---- disk ---------------------------------------------------------------------------------------------------------
def free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (its nearest existing parent). Tests replace this function to
    simulate a small disk."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _cached_bytes(plan: Plan) -> int:
    """Bytes of the plan's files already whole in the cache: a new download skips them."""
    snapshot = _repo_folder(plan.repo_id, plan.repo_type) / "snapshots" / plan.sha
    return sum(f.size or 0 for f in plan.files if (snapshot / f.path).is_file())


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_disk(plan: Plan) -> None:
    """Refuse (HubError "disk", with the figures) when the rest of the download plus a margin does not fit."""
    folder = cache_dir()
    remaining = max(plan.total_bytes - _cached_bytes(plan), 0)
    if remaining == 0:
        return
    needed = int(remaining * (1 + DISK_MARGIN)) + DISK_RESERVE
    free = free_bytes(folder)
    if free < needed:
        raise HubError(
            "disk",
            f"not enough disk space for {plan.repo_id}: the download needs {fmt_bytes(remaining)} plus a margin "
            f"({fmt_bytes(needed)} in all) and {folder} has {fmt_bytes(free)} free. Free some space or set HF_HOME "
            "to a bigger disk, then press Download again.",
        )


# ---- download -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    done_bytes: int
    total_bytes: int
    speed_bps: float | None
    eta_s: float | None
    files_done: int
    files_total: int

    @property
    def fraction(self) -> float:
        return min(self.done_bytes / self.total_bytes, 1.0) if self.total_bytes else 0.0

    def parts(self) -> dict[str, str | None]:
        """The figures of `line()` as text, for a caller that words them in its own language (the UI's English and
        Chinese): done and total ("312.0 MB"), speed ("45.0 MB/s"; None while unknown), eta ("20 s"; None while
        unknown or once every byte is here) and files ("3/7")."""
        return {
            "done": fmt_bytes(self.done_bytes),
            "total": fmt_bytes(self.total_bytes),
            "speed": f"{fmt_bytes(self.speed_bps)}/s" if self.speed_bps else None,
            "eta": _fmt_eta(self.eta_s) if self.eta_s is not None and self.done_bytes < self.total_bytes else None,
            "files": f"{self.files_done}/{self.files_total}",
        }

    def line(self) -> str:
        """e.g. "312.0 MB of 1.2 GB · 45.0 MB/s · 20 s left · 3/7 files"."""
        p = self.parts()
        out = [f"{p['done']} of {p['total']}"]
        if p["speed"]:
            out.append(p["speed"])
        if p["eta"]:
            out.append(f"{p['eta']} left")
        out.append(f"{p['files']} files")
        return " · ".join(out)


def _fmt_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _Cancelled(Exception):
    """Raised inside huggingface_hub's transfer loop when the user pressed Cancel."""


class _Meter:
    """Bytes and files seen through huggingface_hub's progress bars; speed over the last few seconds."""

    WINDOW_S = 5.0

    def __init__(self, plan: Plan, on_progress: Callable[[Progress], None] | None, cancel: threading.Event | None):
        self.total = plan.total_bytes
        self.files_total = len(plan.files)
        self.on_progress = on_progress
        self.cancel = cancel
        self.lock = threading.Lock()
        self.done = 0
        self.files_done = 0
        self.samples: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.transferred = 0
        self.last_report = 0.0

    def add(self, n: int, fresh: bool = True) -> None:
        with self.lock:
            self.done += n
            if fresh:
                self.transferred += n
                now = time.monotonic()
                self.samples.append((now, self.transferred))
                while len(self.samples) > 2 and now - self.samples[0][0] > self.WINDOW_S:
                    self.samples.pop(0)
        self.report()

    def file_done(self) -> None:
        with self.lock:
            self.files_done += 1
        self.report(force=True)

    def progress(self) -> Progress:
        with self.lock:
            (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
            speed = (b1 - b0) / (t1 - t0) if t1 - t0 > 0.2 and b1 > b0 else None
            done = min(self.done, self.total) if self.total else self.done
            eta = (self.total - done) / speed if speed else None
            return Progress(done, self.total, speed, eta, self.files_done, self.files_total)

    def report(self, force: bool = False) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise _Cancelled()
        now = time.monotonic()
        if self.on_progress is None or (not force and now - self.last_report < 0.25):
            return
        self.last_report = now
        self.on_progress(self.progress())


def _bar_class(meter: _Meter) -> type:
    """A tqdm class for snapshot_download: it draws nothing; the bytes bar feeds `meter`, the files bar counts
    finished files, and any update raises once Cancel is pressed (which stops the transfer mid-file; the partial
    blob stays for the resume)."""
    from tqdm.std import tqdm

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            desc = str(kwargs.get("desc") or "")
            self._role = "files" if desc.startswith("Fetching") else "bytes" if desc.startswith("Reconstruct") else ""
            kwargs.pop("name", None)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if self._role == "bytes":
                meter.add(int(n or 0))
            elif self._role == "files":
                meter.file_done()
            else:
                meter.report()
            return super().update(n)

    return _Bar


def download(
    plan: Plan,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Fetch the plan's files into the Hugging Face cache and return the snapshot folder. Checks the disk first.

    Resume, as huggingface_hub 2.4 does it: a connection cut mid-file is resumed from the last byte written (a
    Range request, up to 5 times); after Cancel or a crash the files that arrived whole stay (a big model's
    shards) and the next call fetches only the rest; the file in flight starts over, since the library deletes a
    partial file rather than trust it. Cancel -> HubError("cancelled"); the repo then reads "partial" in
    `cached_state`, never "ready"."""
    from huggingface_hub import snapshot_download

    check_disk(plan)
    meter = _Meter(plan, on_progress, cancel)
    try:
        meter.add(_cached_bytes(plan), fresh=False)  # reports, so a Cancel pressed already lands here
        folder = snapshot_download(
            plan.repo_id,
            repo_type=plan.repo_type,
            revision=plan.revision,
            allow_patterns=plan.patterns,
            tqdm_class=_bar_class(meter),
            endpoint=endpoint(),
            max_workers=4,
        )
    except _Cancelled:
        raise HubError(
            "cancelled",
            f"download of {plan.repo_id} cancelled; the files that arrived whole are kept: download again "
            "to fetch the rest",
        ) from None
    except Exception as exc:
        if any(isinstance(e, _Cancelled) for e in chain(exc)):
            raise HubError("cancelled", f"download of {plan.repo_id} cancelled") from None
        raise as_hub_error(exc, plan.repo_id, plan.repo_type) from None
    path = Path(folder)
    missing = [f.path for f in plan.files if not (path / f.path).is_file()]
    if missing:
        raise HubError("failed", f"download of {plan.repo_id} ended without {', '.join(missing[:3])}: try again")
    if on_progress is not None:
        p = meter.progress()
        on_progress(Progress(plan.total_bytes, plan.total_bytes, p.speed_bps, 0.0, len(plan.files), len(plan.files)))
    return path


# ---- what the cache holds -----------------------------------------------------------------------------------------
def _repo_folder(repo_id: str, repo_type: str = "model") -> Path:
    """The cache folder of `repo_id`; the Hub matches ids without regard to case (and stores them as the repo
    spells them), so a folder spelled otherwise is found too."""
    from huggingface_hub.file_download import repo_folder_name

    folder = cache_dir() / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    if not folder.is_dir() and cache_dir().is_dir():
        wanted = folder.name.lower()
        folder = next((f for f in cache_dir().iterdir() if f.name.lower() == wanted), folder)
    return folder


def valid_id(name: str) -> str | None:
    """`name` as a Hub id (owner/name or a bare legacy name, surrounding spaces and slashes dropped) when
    huggingface_hub accepts it; None otherwise."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = (name or "").strip().strip("/")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id


def require_id(name: str) -> str:
    """valid_id, or HubError("not_found") saying what a Hub id looks like."""
    repo_id = valid_id(name)
    if repo_id is None:
        raise require_id_error(name)
    return repo_id


def require_id_error(name: str) -> HubError:
    return HubError(
        "not_found", f"{name.strip()!r} is not a Hub id: use owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def _snapshot(repo_id: str, repo_type: str, revision: str | None) -> Path | None:
    folder = _repo_folder(repo_id, repo_type)
    rev = revision or "main"
    ref = folder / "refs" / rev
    sha = ref.read_text().strip() if ref.is_file() else rev
    snapshot = folder / "snapshots" / sha
    return snapshot if snapshot.is_dir() else None


def folder_repo_id(folder: Path) -> str:
    """The Hub id a cache folder (models--Org--Name) or a snapshot in it holds, spelled as the Hub spells it:
    what a download of a renamed or differently cased id really fetched."""
    folder = Path(folder)
    if folder.parent.name == "snapshots":
        folder = folder.parent.parent
    return folder.name.split("--", 1)[1].replace("--", "/", 1)


def _cached_tree(folder: Path, repo_type: str, sha: str) -> list[RepoFile] | None:
    """huggingface_hub's tree listing of the repo cached in `folder` at commit `sha` (None when none was
    written: no snapshot_download began there). The id comes from the folder, as the Hub spells it."""
    from huggingface_hub import get_cached_repo_tree

    repo_id = folder_repo_id(folder)
    try:
        return [RepoFile(f.path, f.size) for f in get_cached_repo_tree(repo_id, repo_type=repo_type, revision=sha)]
    except Exception:  # CachedRepoTreeNotFoundError, or an unreadable listing: as if there were none
        return None


def _complete(folder: Path, repo_type: str, snapshot: Path) -> bool:
    """Every file a download of this repo fetches is in the snapshot. With huggingface_hub's tree cache (written
    by every snapshot_download) the expected list is exact; without it (a folder made by other tools) a model
    needs config.json, a tokenizer and every weight shard its index names."""
    tree = _cached_tree(folder, repo_type, snapshot.name)
    if repo_type == "dataset":
        if tree is None:
            return any(p.is_file() for p in snapshot.rglob("*") if _matches(p.name, DATA_FILES))
        expected = [f for f in tree if _matches(f.path, DATA_FILES)]
        present = [f for f in expected if (snapshot / f.path).is_file()]
        return bool(present)  # a dataset download fetches the files of one config: any data file counts
    if tree is not None:
        pickle_present = any((snapshot / f.path).is_file() for f in tree if _matches(f.path, PICKLE_FILES))
        expected, _ = select_model_files(tree, allow_pickle=pickle_present)
        if any(not (snapshot / f.path).is_file() for f in expected):
            return False
    return _model_files_whole(snapshot)


def _model_files_whole(snapshot: Path) -> bool:
    import json

    if not (snapshot / "config.json").is_file():
        return False
    if not any(snapshot.glob(p) for p in TOKENIZER_FILES):
        return False
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = snapshot / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
            except (OSError, ValueError):
                return False
            return bool(shards) and all((snapshot / s).is_file() for s in shards)
    return any(snapshot.glob("*.safetensors")) or any(snapshot.glob("pytorch_model*.bin"))


def cached_file(repo_id: str, filename: str, repo_type: str = "model") -> Path | None:
    """One file of `repo_id` in the cache (the main snapshot first, else any), complete or not the repo; None when
    the id is not a Hub id or the file is not here. No network."""
    repo_id = valid_id(repo_id) if "/" in (repo_id or "") else None
    if repo_id is None:
        return None
    main = _snapshot(repo_id, repo_type, None)
    if main is not None and (main / filename).is_file():
        return main / filename
    found = sorted((_repo_folder(repo_id, repo_type) / "snapshots").glob(f"*/{filename}"))
    return found[-1] if found else None


def downloaded(repo_type: str = "model") -> list[str]:
    """Ids of the repos the Hugging Face cache holds completely (partial downloads are left out), sorted. No
    network."""
    prefix = "datasets--" if repo_type == "dataset" else "models--"
    root = cache_dir()
    if not root.is_dir():
        return []
    ids = []
    for folder in root.glob(prefix + "*--*"):
        repo_id = folder.name[len(prefix) :].replace("--", "/", 1)
        if cached_path(repo_id, repo_type) is not None:
            ids.append(repo_id)
    return sorted(ids, key=str.lower)


def cached_path(repo_id: str, repo_type: str = "model", revision: str | None = None) -> Path | None:
    """The snapshot folder of `repo_id` when the cache holds all of it; None when absent, only partly there, or
    not a Hub id."""
    repo_id = valid_id(repo_id)
    snapshot = _snapshot(repo_id, repo_type, revision) if repo_id else None
    if snapshot is None or not _complete(_repo_folder(repo_id, repo_type), repo_type, snapshot):
        return None
    return snapshot


def cached_state(repo_id: str, repo_type: str = "model", revision: str | None = None) -> str:
    """ "ready" (every needed file is here), "partial" (a cancelled or cut download left some of it) or "absent"
    (nothing, or only the config.json the estimate fetched)."""
    if cached_path(repo_id, repo_type, revision) is not None:
        return "ready"
    repo_id = valid_id(repo_id)
    snapshot = _snapshot(repo_id, repo_type, revision) if repo_id else None
    if snapshot is None:
        return "absent"
    if _cached_tree(_repo_folder(repo_id, repo_type), repo_type, snapshot.name) is not None:
        return "partial"  # a snapshot download began here (it writes the tree listing first) and did not finish
    # no listing: at most the config.json the estimate fetched, or files another tool left
    data = (lambda p: _matches(p.name, DATA_FILES) and p.name != "README.md") if repo_type == "dataset" else None
    return "partial" if any((data or (lambda p: _is_weight(p.name)))(p) for p in snapshot.rglob("*")) else "absent"


# ---- a download the app runs in the background --------------------------------------------------------------------
Work = Callable[[Callable[[Progress], None], threading.Event], Any]
"""`work(on_progress, cancel) -> result`: a download (`download`, hub_data.download_dataset) that reports its
Progress and stops with HubError("cancelled") once `cancel` is set."""


class Busy(HubError):
    """Another download is running: one at a time, models and datasets alike, since they share the disk and the
    bandwidth. `key` and `repo_type` name the running one."""

    def __init__(self, key: str, repo_type: str):
        super().__init__(
            "busy", f"the {repo_type} {key} is downloading now (one download at a time): wait for it or cancel it"
        )
        self.key = key
        self.repo_type = repo_type


@dataclass
class Transfer:
    """One download running in a daemon thread of the app, not of a page: a page that goes away leaves it running,
    and the next page finds it with `current()`. It keeps the last Progress `work` reported and how it ended
    (`result`, or `error` as a one-line HubError), both set before the thread ends, so whoever sees the thread gone
    sees the outcome. "Downloading" is the thread being alive, never a stored flag that could outlive it."""

    key: str
    """What is downloading, as people read it: a repo id, or a dataset's id with its config and split."""
    repo_type: str
    work: Work
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    result: Any = None
    error: HubError | None = None
    thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the end; True once it has ended."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.alive()

    def _run(self) -> None:
        try:
            self.result = self.work(self._report, self.cancel)
        except Exception as exc:  # a thread's exception would vanish: every failure becomes the line a page shows
            self.error = as_hub_error(exc, self.key, self.repo_type)

    def _report(self, progress: Progress) -> None:
        self.progress = progress


_TRANSFER_LOCK = threading.Lock()
_TRANSFERS: list[Transfer] = []  # the last transfer started (running or ended); at most one


def current() -> Transfer | None:
    """The download running now, if any."""
    with _TRANSFER_LOCK:
        return next((t for t in _TRANSFERS if t.alive()), None)


def start(key: str, work: Work, repo_type: str = "model") -> Transfer:
    """Run `work` in a daemon thread as the app's one download, named `key`. The same key (and repo type) already
    running: that transfer, so a second press or another page follows it instead of starting again. Another one
    running: Busy."""
    with _TRANSFER_LOCK:
        running = next((t for t in _TRANSFERS if t.alive()), None)
        if running is not None:
            if (running.key, running.repo_type) == (key, repo_type):
                return running
            raise Busy(running.key, running.repo_type)
        transfer = Transfer(key, repo_type, work)
        transfer.thread = threading.Thread(target=transfer._run, name=f"hub-download-{key}", daemon=True)
        _TRANSFERS[:] = [transfer]
        transfer.thread.start()
        return transfer
