"""A stand-in for the Hugging Face Hub: a real HTTP server on 127.0.0.1 that answers the routes the installed
huggingface_hub (2.4) and datasets (5.2) call, serving repos from local folders. Tests point the real clients at it
(HF_ENDPOINT plus the constants those libraries read at import), so the same download, resume, cache and token code
a user's machine runs is exercised without a network.

Routes (as the Hub answers them, checked against the clients' source):
  GET  /api/whoami-v2                                   the user of a valid token, else 401
  GET  /api/models, /api/datasets                       search (search, author, filter, sort, limit, full, expand)
  GET  /api/{models|datasets}/NS/NAME[/revision/REV]    repo info (blobs=true adds sizes and LFS info)
  GET  /api/{type}s/NS/NAME/tree/REV[/PATH]             file listing (recursive=true for the whole tree)
  POST /api/{type}s/NS/NAME/paths-info/REV              info on given paths (form field `paths`, repeated)
  GET  /api/{type}s/NS/NAME/refs                        branches (main only)
  HEAD/GET [/datasets]/NS/NAME/resolve/REV/PATH         file metadata and bytes (Range: 206), ETag, X-Repo-Commit,
                                                        X-Linked-Size/-Etag for LFS files; never X-Xet-Hash
  GET  /_cdn/SHA256                                     LFS bytes when `lfs_redirect` sends them "off the Hub"
Uploads (what HfApi.create_repo / create_commit / upload_folder call, with Xet off):
  POST /api/repos/create                                json name, organization, type, visibility|private -> url;
                                                        401 without a valid token, 403 for a read token or an
                                                        owner the user cannot write to, 409 (with url) when it exists
  POST /api/validate-yaml                               the README.md front matter: 400 with errors when not yaml
  POST /api/{type}s/NS/NAME/preupload/REV               uploadMode per file: lfs by suffix, size or binary sample,
                                                        else regular; oid of the file already there (unchanged ones
                                                        are skipped by the client)
  POST [/datasets]/NS/NAME.git/info/lfs/objects/batch   LFS batch API, basic transfer: upload (PUT /_lfs/SHA256 on
                                                        the stand-in) and verify actions; none for a known object
  POST [/datasets]/NS/NAME.git/info/lfs/objects/verify  200 when the object arrived whole, else 404
  PUT  /_lfs/SHA256                                     the bytes (checked against the sha256)
  POST /api/{type}s/NS/NAME/commit/REV                  ndjson: header, file (base64), lfsFile (oid), deletedFile
                                                        -> commitUrl, commitOid; the repo then serves the new files
Every write needs a token whose user may write to the repo's owner (`add_user(token, name, role="read")` makes a
read-only one; `orgs` names the organizations a user may write to); `hub.writes()` lists the write requests with
the token each used.
Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) and X-Error-Message, so
huggingface_hub raises RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError and GatedRepoError.

Use it through the `hub` fixture (a started server with the standard repos below and every client pointed at it,
with a fresh HF_HOME), e.g. in a test module:

    from hubstub import TINY_MODEL, hub_fixture  # noqa: F401  (registers the `hub` fixture in this module)

    def test_download(hub):
        path = snapshot_download(TINY_MODEL)
        assert not hub.requested("pytorch_model.bin")

Faults and checks: `hub.cut_after(path, n)` drops a transfer after n bytes, `hub.throttle(bps)` slows transfers,
`hub.requests` logs every request (method, path, headers incl. Authorization and Range, status, bytes sent),
`hub.token` opens gated repos, `closed_port_endpoint()` is an unreachable Hub. A subprocess (the app, its CLI)
gets the same setup from `subprocess_env(stub.url, hf_home)`; a stand-in living longer than one test is
`HubStub()` + `add_standard_repos(stub, standard_sources(tmp_path_factory, tiny_model_dir))`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import struct
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

# The standard repos the `hub` fixture serves. Ids have a namespace: huggingface_hub 2.4 rejects bare names.
TINY_MODEL = "tunedesk-test/tiny-llama"  # safetensors + junk a download must skip
GATED_MODEL = "tunedesk-test/tiny-llama-gated"  # the same files, gated ("manual")
PICKLE_MODEL = "tunedesk-test/tiny-llama-pickle"  # weights only as pytorch_model.bin
ALPACA_DATASET = "tunedesk-test/tiny-alpaca"  # train.json + test.json (splits from the file names)
CONFIGS_DATASET = "tunedesk-test/tiny-alpaca-configs"  # configs "en" and "zh" declared in README.md yaml
PARQUET_DATASET = "tunedesk-test/tiny-parquet"  # data/train-00000-of-00001.parquet

# What training needs from TINY_MODEL, and what is in the repo besides (a download must leave it out).
TINY_NEEDED = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
)
TINY_JUNK = ("pytorch_model.bin", "model.gguf", "onnx/model.onnx", "README.md", ".gitattributes")

# Records per split, by dataset and config (None: the only config).
DATASET_ROWS = {
    (ALPACA_DATASET, None): {"train": 8, "test": 2},
    (CONFIGS_DATASET, "en"): {"train": 6, "test": 2},
    (CONFIGS_DATASET, "zh"): {"train": 4, "test": 2},
    (PARQUET_DATASET, None): {"train": 5},
}

# Stored with Git LFS on the Hub (as a repo's .gitattributes usually says): the Hub lists them with `lfs` info and
# answers HEAD with X-Linked-Size / X-Linked-Etag (the sha256), as it does for real weights.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack", ".parquet")
LFS_MIN_BYTES = 10 * 1024 * 1024  # any bigger file is LFS too
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES)
DATE = "2025-01-15T10:00:00.000Z"


# ----------------------------------------------------------------------------------------------------------- repos
@dataclass(frozen=True)
class RepoFileEntry:
    """One file of a repo, read into memory when the repo is added (later edits of the folder do not leak in)."""

    path: str
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def pointer(self) -> bytes:
        """The Git LFS pointer git stores instead of the bytes."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @cached_property
    def blob_id(self) -> str:
        """The git blob sha1 of what git stores (the pointer for LFS files): the Hub's `oid` and non-LFS ETag."""
        stored = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def tree_entry(self) -> dict:
        entry = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Repo:
    """A model or dataset repo served from a folder, at one commit (`sha`, fixed: 40 hex from the content)."""

    repo_id: str
    repo_type: str
    files: dict[str, RepoFileEntry]
    sha: str
    gated: bool | str = False  # False | "auto" | "manual"
    private: bool = False
    gate_api: bool = False  # the real Hub shows a gated repo's info and file list to all; True gates those too
    granted: set[str] | None = None  # user names with access to a gated repo; None: every valid token
    downloads: int = 0
    likes: int = 0

    @property
    def card(self) -> dict:
        """The README.md yaml header (the Hub's cardData)."""
        readme = self.files.get("README.md")
        if readme is None:
            return {}
        match = re.match(r"^---\n(.*?)\n---", readme.data.decode("utf-8"), re.S)
        if not match:
            return {}
        import yaml

        return yaml.safe_load(match.group(1)) or {}

    def folders(self) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}

    def folder_entry(self, path: str) -> dict:
        oid = hashlib.sha1(f"{self.sha}:{path}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    def entry(self, path: str) -> dict | None:
        if path in self.files:
            return self.files[path].tree_entry()
        return self.folder_entry(path) if path in self.folders() else None


def read_repo_files(folder: Path) -> dict[str, RepoFileEntry]:
    """Every file under `folder` (forward-slash paths), LFS by suffix or size as .gitattributes would say."""
    folder = Path(folder)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and ".git" not in p.relative_to(folder).parts:
            rel = p.relative_to(folder).as_posix()
            data = p.read_bytes()
            files[rel] = RepoFileEntry(rel, data, rel.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_BYTES)
    return files


def safetensors_totals(files: dict[str, RepoFileEntry]) -> dict | None:
    """Parameters per dtype over the *.safetensors files, read from their headers (the Hub's `safetensors`)."""
    params: dict[str, int] = {}
    for f in files.values():
        if f.path.endswith(".safetensors"):
            (n,) = struct.unpack("<Q", f.data[:8])
            for name, t in json.loads(f.data[8 : 8 + n]).items():
                if name != "__metadata__":
                    count = 1
                    for dim in t["shape"]:
                        count *= dim
                    params[t["dtype"]] = params.get(t["dtype"], 0) + count
    return {"parameters": params, "total": sum(params.values())} if params else None


# ------------------------------------------------------------------------------------------------------ request log
@dataclass
class Request:
    """One request as the server saw it: tests assert on it (what was fetched, with which token and Range)."""

    method: str
    path: str  # unquoted, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    status: int | None = None
    body_bytes: int = 0  # bytes of body actually sent (a cut or a cancelled transfer sends fewer)

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


class HubError(Exception):
    """An error answer: status, X-Error-Code, message (also the JSON body's `error`)."""

    def __init__(
        self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None, **body: object
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.body = body  # more fields of the JSON answer (a 409 on create carries the repo's url)


# ------------------------------------------------------------------------------------------------------------ server
class HubStub:
    """The stand-in server. `with HubStub() as hub:` starts it on a free port; `hub.url` is the endpoint.

    Everything is switchable while it runs: `add_repo`, `cut_after`, `throttle`, `lfs_redirect`, and the users
    (`token` is valid and granted every gated repo; `add_user` makes others)."""

    def __init__(self, token: str = "hf_stubTokenForTuneDeskTests0123456789", user: str = "tunedesk-tester"):
        self.token, self.user = token, user
        self.users: dict[str, str] = {token: user}
        self.roles: dict[str, str] = {token: "write"}  # token -> "read" | "write"
        self.orgs: dict[str, set[str]] = {}  # user -> organizations the user may write to
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes uploaded through the LFS batch API
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.lfs_redirect = False  # True: LFS files 302 to /_cdn on "localhost" (another host, as the Hub's CDN)
        self._cuts: dict[str, int] = {}
        self._bps: float | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # lifecycle
    def start(self) -> HubStub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="hubstub", daemon=True)
        serve.start()  # polls for shutdown every 50 ms: stop() returns at once
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the stand-in is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # setup
    def add_repo(
        self, repo_id: str, folder: Path, repo_type: str = "model", *, sha: str | None = None, **options
    ) -> Repo:
        """Serve `folder` as `repo_id`. options: gated, private, gate_api, granted, downloads, likes."""
        assert repo_id.count("/") == 1, "Hub ids are namespace/name"
        files = read_repo_files(folder)
        if sha is None:
            digest = hashlib.sha1(f"{repo_type}:{repo_id}".encode())
            for f in files.values():
                digest.update(f"{f.path}:{f.etag}".encode())
            sha = digest.hexdigest()
        repo = Repo(repo_id, repo_type, files, sha, **options)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def add_user(self, token: str, name: str, role: str = "write") -> None:
        """A token for user `name`: role "write" may create repos and push under the user's name (and its `orgs`),
        "read" only reads (writes get 403, as a read token's do on the Hub)."""
        self.users[token] = name
        self.roles[token] = role

    def writes(self) -> list[Request]:
        """The write requests (create, preupload, LFS batch and upload, commit), in arrival order."""
        kinds = ("/api/repos/create", "/preupload/", "/commit/", ".git/info/lfs/", "/_lfs/")
        return [r for r in self.requests if r.method in ("POST", "PUT") and any(k in r.path for k in kinds)]

    def cut_after(self, path: str, nbytes: int) -> None:
        """The next GET of a file whose repo path is `path` announces its full length, sends `nbytes` and drops
        the connection (a real mid-transfer cut); later GETs (Range: bytes=N-) are served whole (206)."""
        with self._lock:
            self._cuts[path] = nbytes

    def throttle(self, bytes_per_second: float | None) -> None:
        """Send file bytes at this rate (None: full speed), so a test can cancel mid-download."""
        self._bps = bytes_per_second

    # log
    def file_requests(self, method: str = "GET") -> list[Request]:
        """File transfers (resolve and CDN) with this method, in arrival order."""
        return [r for r in self.requests if r.method == method and ("/resolve/" in r.path or "/_cdn/" in r.path)]

    def requested(self, filename: str, method: str = "GET") -> bool:
        """Whether a file whose repo path ends with `filename` was requested with `method`."""
        return any(r.path.endswith("/" + filename) for r in self.file_requests(method))

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    # internals used by the handler
    def _log(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _take_cut(self, path: str) -> int | None:
        with self._lock:
            return self._cuts.pop(path, None)


# -------------------------------------------------------------------------------------------------------- handler
class _Handler(BaseHTTPRequestHandler):
    """Routes one request; every answer has a Content-Length (HTTP/1.1 keep-alive, as httpx expects)."""

    hub: HubStub
    protocol_version = "HTTP/1.1"
    record: Request | None = None

    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's name; silence the access log
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def send_response(self, code, message=None) -> None:
        if self.record is not None:  # None: the stdlib answering a malformed request line
            self.record.status = code
        super().send_response(code, message)

    # dispatch
    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.body = self._read_body()
        self.record = Request(
            self.command, unquote(split.path), parse_qs(split.query), {k.lower(): v for k, v in self.headers.items()}
        )
        self.hub._log(self.record)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        query = parse_qs(split.query)
        if self.command == "POST" and "form-urlencoded" in (self.headers.get("Content-Type") or ""):
            query.update(parse_qs(self.body.decode()))
        try:
            self._route(segments, query)
        except HubError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a cancelled download)

    def _read_body(self) -> bytes:
        """The request body, sent with a Content-Length or chunked (httpx streams a file object chunked)."""
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _route(self, seg: list[str], query: dict) -> None:
        user = self._user()
        if seg[:2] == ["api", "whoami-v2"]:
            return self._whoami(user)
        if self.command == "PUT" and seg[0] == "_lfs" and len(seg) == 2:
            return self._send_json(lfs_put(self.hub, seg[1], self.body))
        if self.command == "POST" and seg[:3] == ["api", "repos", "create"]:
            return self._send_json(create_repo(self.hub, json.loads(self.body or b"{}"), self._token(), user))
        if self.command == "POST" and seg[:2] == ["api", "validate-yaml"]:
            return self._send_json(validate_yaml(json.loads(self.body or b"{}").get("content", "")))
        if self.command == "POST" and len(seg) >= 6 and seg[-4:-1] == ["info", "lfs", "objects"]:
            repo_type = "dataset" if seg[0] == "datasets" else "model"
            rest = seg[1:] if seg[0] == "datasets" else seg
            repo_id = f"{rest[0]}/{rest[1].removesuffix('.git')}"
            return self._lfs_api(repo_type, repo_id, seg[-1], user)
        if seg[0] == "api" and len(seg) == 2 and seg[1] in ("models", "datasets"):
            return self._send_json(search(self.hub, seg[1][:-1], query, user))
        if seg[0] == "api" and len(seg) >= 4 and seg[1] in ("models", "datasets"):
            return self._api_repo(seg[1][:-1], f"{seg[2]}/{seg[3]}", seg[4:], query, user)
        if seg[0] == "_cdn" and len(seg) == 2:
            return self._cdn(seg[1])
        repo_type = "dataset" if seg[0] == "datasets" else "model"
        rest = seg[1:] if seg[0] == "datasets" else seg
        if len(rest) >= 5 and rest[2] == "resolve":
            return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]), user)
        raise HubError(404, None, f"Not found (the Hub stand-in has no route for {self.command} {self.path})")

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth[7:] if auth.lower().startswith("bearer ") else auth
        if token not in self.hub.users:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return self.hub.users[token]

    # routes
    def _whoami(self, user: str | None) -> None:
        role = self.hub.roles.get(self._token() or "", "read")
        if user is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user.replace("-", " ").title(),
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "tunedesk-test", "role": role}},
            }
        )

    def _api_repo(self, repo_type: str, repo_id: str, rest: list[str], query: dict, user: str | None) -> None:
        repo = find_repo(self.hub, repo_type, repo_id, user)
        if repo.gate_api:
            check_access(self.hub, repo, user)
        if not rest or rest[0] == "revision":
            check_revision(repo, rest[1] if len(rest) > 1 else "main")
            return self._send_json(repo_info(self.hub, repo, query))
        if rest[0] == "tree" and len(rest) >= 2:
            check_revision(repo, rest[1])
            return self._send_json(tree(repo, "/".join(rest[2:]).strip("/"), _flag(query, "recursive"), rest[1]))
        if rest[0] == "paths-info" and len(rest) == 2:
            check_revision(repo, rest[1])
            entries = [repo.entry(p.strip("/")) for p in query.get("paths", [])]
            return self._send_json([e for e in entries if e is not None])
        if rest == ["refs"]:
            branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}
            return self._send_json({"branches": [branch], "converts": [], "tags": []})
        if self.command == "POST" and rest[0] in ("preupload", "commit") and len(rest) == 2:
            check_revision(repo, rest[1])
            check_write(self.hub, repo, self._token(), user)
            if rest[0] == "preupload":
                return self._send_json(preupload(repo, json.loads(self.body or b"{}")))
            return self._send_json(commit(self.hub, repo, self.body))
        raise HubError(404, None, f"Not found (the Hub stand-in has no route for {self.command} {self.path})")

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return (auth[7:] if auth.lower().startswith("bearer ") else auth) or None

    def _lfs_api(self, repo_type: str, repo_id: str, action: str, user: str | None) -> None:
        repo = find_repo(self.hub, repo_type, repo_id, user)
        check_write(self.hub, repo, self._token(), user)
        payload = json.loads(self.body or b"{}")
        if action == "batch":
            return self._send_json(lfs_batch(self.hub, repo, payload))
        if action == "verify":
            data = self.hub.lfs_objects.get(payload.get("oid", ""))
            if data is None or len(data) != payload.get("size"):
                raise HubError(404, None, f"LFS object {payload.get('oid')} was not uploaded whole")
            return self._send_json({"message": "Object verified"})
        raise HubError(404, None, f"Not found (the Hub stand-in has no route for {self.command} {self.path})")

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, user: str | None) -> None:
        repo = find_repo(self.hub, repo_type, repo_id, user)
        check_revision(repo, revision)
        check_access(self.hub, repo, user)
        entry = repo.files.get(path)
        if entry is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision!r}", {"X-Repo-Commit": repo.sha})
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers.update({"X-Linked-Size": str(entry.size), "X-Linked-Etag": f'"{entry.sha256}"'})
            if self.hub.lfs_redirect:
                headers["Location"] = f"http://localhost:{self.hub.port}/_cdn/{entry.sha256}"
                return self._send(302, b"", headers)
        self._send_file(entry, headers)

    def _cdn(self, sha256: str) -> None:
        for repo in self.hub.repos.values():
            for entry in repo.files.values():
                if entry.lfs and entry.sha256 == sha256:
                    return self._send_file(entry, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})
        raise HubError(404, None, "No such object")

    # sending
    def _send_file(self, entry: RepoFileEntry, headers: dict[str, str]) -> None:
        start, end = self._byte_range(entry.size)
        status = 200
        if (start, end) != (0, entry.size):
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["Content-Type"] = "application/octet-stream"
        if self.command == "HEAD":
            return self._send(status, b"", headers, length=end - start)
        cut = self.hub._take_cut(entry.path)
        self._send(status, entry.data[start:end], headers, cut=cut)

    def _byte_range(self, size: int) -> tuple[int, int]:
        """(start, end) of the Range header (a-b, a-, -n), else the whole file; past the end -> 416."""
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (self.headers.get("Range") or "").strip())
        if not match or match.groups() == ("", ""):
            return 0, size
        first, last = match.groups()
        if first == "":
            return max(size - int(last), 0), size
        start, end = int(first), min(int(last) + 1 if last else size, size)
        if start >= size:
            raise HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
        return start, end

    def _send(
        self, status: int, body: bytes, headers: dict[str, str], length: int | None = None, cut: int | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if cut is not None:
            body = body[:cut]
            self.close_connection = True  # after the handler: close, leaving the announced length unmet
        self._write(body)

    def _write(self, body: bytes) -> None:
        bps = self.hub._bps
        step = max(1024, int(bps / 20)) if bps else max(len(body), 1)  # ~20 writes a second when throttled
        for i in range(0, len(body), step):
            chunk = body[i : i + step]
            self.wfile.write(chunk)
            self.record.body_bytes += len(chunk)
            if bps:
                time.sleep(len(chunk) / bps)

    def _send_json(self, data) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json; charset=utf-8"})

    def _send_error(self, e: HubError) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": e.message}
        if e.code:
            headers["X-Error-Code"] = e.code
        headers.update(e.headers)
        body = json.dumps({"error": e.message, **e.body}).encode()
        self._send(e.status, b"" if self.command == "HEAD" else body, headers, length=len(body))


# ------------------------------------------------------------------------------------------ what the Hub answers
def _flag(query: dict, name: str) -> bool:
    return (query.get(name) or ["false"])[-1].lower() in ("1", "true")


def find_repo(hub: HubStub, repo_type: str, repo_id: str, user: str | None) -> Repo:
    """The repo, or the Hub's RepoNotFound (also for a private repo without a granted token)."""
    repo = hub.repos.get((repo_type, repo_id))
    if repo is None or (repo.private and not _granted(repo, user)):
        raise HubError(404, "RepoNotFound", "Repository not found")
    return repo


def check_revision(repo: Repo, revision: str) -> None:
    if revision not in ("main", repo.sha):
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


def _granted(repo: Repo, user: str | None) -> bool:
    return user is not None and (repo.granted is None or user in repo.granted)


def check_access(hub: HubStub, repo: Repo, user: str | None) -> None:
    """A gated repo's files: 401 without a token, 403 for a token not granted (what the Hub says, word for word)."""
    if not repo.gated or _granted(repo, user):
        return
    kind = "dataset" if repo.repo_type == "dataset" else "model"
    page = f"{hub.url}/{'datasets/' if kind == 'dataset' else ''}{repo.repo_id}"
    if user is None:
        raise HubError(
            401,
            "GatedRepo",
            f"Access to {kind} {repo.repo_id} is restricted. You must have access to it and be authenticated to "
            "access it. Please log in.",
        )
    raise HubError(
        403,
        "GatedRepo",
        f"Access to {kind} {repo.repo_id} is restricted and you are not in the authorized list. "
        f"Visit {page} to ask for access.",
    )


def repo_tags(repo: Repo) -> list[str]:
    card = repo.card
    tags = list(card.get("tags") or [])
    if repo.repo_type == "model":
        tags += ["transformers"] + (["safetensors"] if any(p.endswith(".safetensors") for p in repo.files) else [])
        if card.get("pipeline_tag"):
            tags.append(card["pipeline_tag"])
    else:
        tags += sorted({f"format:{Path(p).suffix[1:]}" for p in repo.files if Path(p).suffix in (".json", ".parquet")})
    if card.get("license"):
        tags.append(f"license:{card['license']}")
    return tags + ["region:us"]


def repo_info(hub: HubStub, repo: Repo, query: dict) -> dict:
    """GET /api/{type}s/{id}: the fields huggingface_hub's ModelInfo / DatasetInfo read."""
    blobs = _flag(query, "blobs")
    siblings = []
    for f in repo.files.values():
        sibling: dict = {"rfilename": f.path}
        if blobs:
            sibling.update(size=f.size, blobId=f.blob_id)
            if f.lfs:
                sibling["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(f.pointer)}
        siblings.append(sibling)
    info = {
        "_id": repo.sha[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": repo.sha,
        "lastModified": DATE,
        "createdAt": DATE,
        "private": repo.private,
        "gated": repo.gated,
        "disabled": False,
        "downloads": repo.downloads,
        "likes": repo.likes,
        "tags": repo_tags(repo),
        "cardData": repo.card or None,
        "siblings": siblings,
        "usedStorage": sum(f.size for f in repo.files.values()),
    }
    if repo.repo_type == "model":
        info.update(model_fields(repo))
    expand = query.get("expand")
    if expand:
        info = {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
    return info


def model_fields(repo: Repo) -> dict:
    fields: dict = {"modelId": repo.repo_id, "library_name": "transformers"}
    fields["pipeline_tag"] = repo.card.get("pipeline_tag")
    config = repo.files.get("config.json")
    if config is not None:
        full = json.loads(config.data)
        fields["config"] = {k: full[k] for k in ("architectures", "model_type") if k in full}
    totals = safetensors_totals(repo.files)
    if totals:
        fields["safetensors"] = totals
    return fields


def search(hub: HubStub, repo_type: str, query: dict, user: str | None) -> list[dict]:
    """GET /api/models|datasets: substring match on the id, like the Hub's `search`, then its other filters."""
    text = (query.get("search") or [""])[-1].lower()
    hits = [
        r
        for r in hub.repos.values()
        if r.repo_type == repo_type and text in r.repo_id.lower() and (not r.private or _granted(r, user))
    ]
    if query.get("author"):
        hits = [r for r in hits if r.repo_id.split("/")[0] == query["author"][-1]]
    for tag in query.get("filter", []):
        hits = [r for r in hits if tag in repo_tags(r)]
    sort = (query.get("sort") or [""])[-1]
    if sort in ("downloads", "likes"):
        hits.sort(key=lambda r: getattr(r, sort), reverse=True)
    limit = int((query.get("limit") or ["1000"])[-1])
    return [search_hit(hub, r, query) for r in hits[:limit]]


def search_hit(hub: HubStub, repo: Repo, query: dict) -> dict:
    """The Hub's short listing by default; `full` adds files and sha, `cardData` the card, `expand` picks fields."""
    info = repo_info(hub, repo, {"expand": query.get("expand")} if query.get("expand") else {})
    if query.get("expand"):
        return info
    keys = ["_id", "id", "likes", "private", "downloads", "tags", "createdAt"]
    keys += ["pipeline_tag", "library_name", "modelId"] if repo.repo_type == "model" else []
    if _flag(query, "full"):
        keys += ["siblings", "sha", "lastModified", "gated", "disabled", "author"]
    if _flag(query, "cardData") or (_flag(query, "full") and repo.repo_type == "dataset"):
        keys.append("cardData")
    return {k: info[k] for k in keys if k in info}


def tree(repo: Repo, path: str, recursive: bool, revision: str) -> list[dict]:
    """GET .../tree/REV/PATH: folders first, like the Hub; a missing folder is EntryNotFound."""
    if path and path not in repo.folders():
        raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision!r}", {"X-Repo-Commit": repo.sha})
    prefix = path + "/" if path else ""
    names = sorted(repo.folders() | set(repo.files))
    inside = [n for n in names if n.startswith(prefix) and (recursive or "/" not in n[len(prefix) :])]
    entries = [repo.entry(n) for n in inside]
    return sorted(entries, key=lambda e: (e["type"] != "directory", e["path"]))


# --------------------------------------------------------------------------------------------------- writes
def may_write(hub: HubStub, token: str | None, user: str | None, owner: str) -> None:
    """401 without a valid token; 403 for a read token, or an owner that is neither the user nor one of its orgs."""
    if user is None:
        raise HubError(401, None, "Invalid username or password.")
    if hub.roles.get(token or "") != "write":
        raise HubError(403, None, "You don't have the rights to write with this token: it has the read role only")
    if owner != user and owner not in hub.orgs.get(user, set()):
        raise HubError(403, None, f'You don\'t have the rights to create a model under the namespace "{owner}"')


def check_write(hub: HubStub, repo: Repo, token: str | None, user: str | None) -> None:
    may_write(hub, token, user, repo.repo_id.split("/")[0])


def create_repo(hub: HubStub, payload: dict, token: str | None, user: str | None) -> dict:
    """POST /api/repos/create: a new repo holding the .gitattributes the Hub's first commit writes."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    owner = payload.get("organization") or user or ""
    repo_type = payload.get("type") or "model"
    repo_id = f"{owner}/{payload.get('name', '')}"
    may_write(hub, token, user, owner)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(400, None, f"Invalid repo name: {exc}") from None
    url = f"{hub.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    with hub._lock:
        if (repo_type, repo_id) in hub.repos:
            raise HubError(409, None, f"You already created this {repo_type} repo", url=url)
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        attributes = RepoFileEntry(".gitattributes", GITATTRIBUTES.encode(), False)
        sha = hashlib.sha1(f"{repo_type}:{repo_id}:created".encode()).hexdigest()
        repo = Repo(repo_id, repo_type, {".gitattributes": attributes}, sha, private=private, granted={user})
        hub.repos[(repo_type, repo_id)] = repo
    return {"url": url, "name": repo_id, "id": sha[:24]}


def validate_yaml(content: str) -> dict:
    """POST /api/validate-yaml: the README's front matter must be a yaml mapping."""
    import yaml

    match = re.match(r"^---\n(.*?)\n---", content, re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else {}
    except yaml.YAMLError as exc:
        raise HubError(400, None, "Invalid metadata in README.md", {}) from exc
    if meta is not None and not isinstance(meta, dict):
        raise HubError(400, None, "Invalid metadata in README.md: the yaml is not a mapping")
    return {"errors": [], "warnings": []}


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    """What the Hub stores with LFS: by .gitattributes suffix, by size, and binary content (a NUL in the sample)."""
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_BYTES or b"\0" in sample


def preupload(repo: Repo, payload: dict) -> dict:
    import base64

    files = []
    for f in payload.get("files", []):
        lfs = is_lfs(f["path"], int(f["size"]), base64.b64decode(f.get("sample", "")))
        there = repo.files.get(f["path"])
        oid = None if there is None else (there.sha256 if there.lfs else there.blob_id)
        files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
    return {"files": files, "commitOid": repo.sha}


def lfs_batch(hub: HubStub, repo: Repo, payload: dict) -> dict:
    """The LFS batch API (basic transfer): an upload href on the stand-in, plus verify; nothing for a known object."""
    if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
        raise HubError(400, None, "the stand-in answers upload batches with the basic transfer only")
    objects = []
    for obj in payload.get("objects", []):
        entry: dict = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
        if obj["oid"] not in hub.lfs_objects:
            git = f"{hub.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}.git"
            entry["actions"] = {
                "upload": {"href": f"{hub.url}/_lfs/{obj['oid']}", "header": {}},
                "verify": {"href": f"{git}/info/lfs/objects/verify", "header": {}},
            }
        objects.append(entry)
    return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}


def lfs_put(hub: HubStub, oid: str, data: bytes) -> dict:
    if hashlib.sha256(data).hexdigest() != oid:
        raise HubError(400, None, f"the uploaded bytes do not hash to {oid}")
    with hub._lock:
        hub.lfs_objects[oid] = data
    return {}


def commit(hub: HubStub, repo: Repo, body: bytes) -> dict:
    """POST .../commit/REV (ndjson): apply the operations, give the repo a new sha, answer commitUrl/commitOid."""
    import base64

    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, None, "a commit starts with its header line")
    with hub._lock:
        files = dict(repo.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            if key == "file":
                files[value["path"]] = RepoFileEntry(value["path"], base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                data = hub.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, None, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = RepoFileEntry(value["path"], data, True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise HubError(400, None, f"the stand-in does not apply {key!r} operations")
        digest = hashlib.sha1(repo.sha.encode())
        for f in sorted(files.values(), key=lambda f: f.path):
            digest.update(f"{f.path}:{f.etag}".encode())
        repo.files, repo.sha = files, digest.hexdigest()
    url = f"{hub.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"
    return {"commitUrl": f"{url}/commit/{repo.sha}", "commitOid": repo.sha, "pullRequestUrl": None}


# ---------------------------------------------------------------------------------------- pointing clients at it
def closed_port_endpoint() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused at once): the Hub is unreachable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# Variables a user might have set that would send the clients elsewhere, or keep them offline.
_UNSET = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_OIDC_RESOURCE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_DATASETS_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HUGGINGFACE_CO_STAGING",
)


def hub_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    """The variables that point huggingface_hub, datasets and transformers at `endpoint` with `hf_home` as cache
    (set these; unset those in _UNSET). Xet is off: the stand-in serves plain HTTP, as the Hub does for non-Xet
    repos."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(Path(hf_home) / "hub"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }


def subprocess_env(endpoint: str, hf_home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """A full environment for a subprocess (the app, its CLI) that uses the stand-in at `endpoint`."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _UNSET}
    env.update(hub_env(endpoint, hf_home))
    return env


def point_clients_at(endpoint: str, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point this process's clients at `endpoint` with a fresh cache under `hf_home`, and its subprocesses too
    (env). huggingface_hub and datasets read the environment once, at import, into module constants: those are
    patched as well, all through `monkeypatch`, so the test undoes everything."""
    hf_home = Path(hf_home)
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in hub_env(endpoint, hf_home).items():
        monkeypatch.setenv(name, value)
    _patch_huggingface_hub(endpoint, hf_home, monkeypatch)
    _patch_datasets(endpoint, hf_home, monkeypatch)


def _patch_huggingface_hub(endpoint: str, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfFileSystem, constants, hf_api
    from huggingface_hub.utils import _cache_manager, _http

    old_home = constants.HF_HOME
    for name, value in vars(constants).copy().items():  # every path derived from HF_HOME (token, xet, checks...)
        if name.isupper() and isinstance(value, str) and value.startswith(old_home):
            monkeypatch.setattr(constants, name, str(hf_home) + value[len(old_home) :])
    hub_cache = str(hf_home / "hub")
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
    }
    for name, value in values.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # the module-level HfApi behind whoami(), model_info()...
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", hub_cache)  # scan_cache_dir()'s default
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})
    HfFileSystem.clear_instance_cache()  # fsspec keeps instances (and their listings) per endpoint


def _patch_datasets(endpoint: str, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only when datasets is already imported: otherwise it reads the environment set above when it is."""
    import sys

    config = sys.modules.get("datasets.config")
    if config is None:
        return
    datasets_cache = hf_home / "datasets"
    downloads = datasets_cache / "downloads"
    values = {
        "HF_ENDPOINT": endpoint,
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_CACHE_HOME": str(hf_home),
        "HF_DATASETS_CACHE": datasets_cache,
        "HF_MODULES_CACHE": hf_home / "modules",
        "DOWNLOADED_DATASETS_PATH": downloads,
        "EXTRACTED_DATASETS_PATH": downloads / "extracted",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        # The dataset viewer lives on another host (datasets-server.<endpoint host>) the stand-in cannot be:
        # datasets falls back to reading the repo's files, which is what it does for any repo without an export.
        "USE_PARQUET_EXPORT": False,
    }
    for name, value in values.items():
        monkeypatch.setattr(config, name, value)


# ---------------------------------------------------------------------------------------------- repo builders
MODEL_CARD = """---
license: {license}
library_name: transformers
pipeline_tag: text-generation
tags:
- tunedesk-test
---
# {name}

A 2-layer Llama built by the TuneDesk tests (hidden 64, vocab ~512).
"""


def tiny_model_repo(folder: Path, tiny_model_dir: Path, license: str = "apache-2.0") -> Path:  # noqa: A002
    """The tiny model (tests/tiny.py) as the Hub has it: safetensors weights, config, tokenizer, plus what a
    download must skip: a pytorch_model.bin copy of the weights, a model.gguf, an onnx/ folder, a README.md
    with license yaml and a .gitattributes."""
    from safetensors.torch import load_file
    from torch import save

    folder = Path(folder)
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(64 * 1024))
    (folder / "onnx").mkdir(exist_ok=True)
    (folder / "onnx" / "model.onnx").write_bytes(bytes(64 * 1024))
    (folder / "README.md").write_text(MODEL_CARD.format(license=license, name=folder.name))
    (folder / ".gitattributes").write_text(GITATTRIBUTES)
    return folder


def pickle_model_repo(folder: Path, tiny_model_repo_dir: Path) -> Path:
    """The tiny model with its weights only as pytorch_model.bin (pickle): no safetensors at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for p in tiny_model_repo_dir.iterdir():
        if p.is_file() and p.suffix not in (".safetensors", ".gguf"):
            shutil.copy2(p, folder / p.name)
    return folder


DATASET_CARD = """---
license: cc-by-4.0
task_categories:
- text-generation
language:
- en
- zh
tags:
- tunedesk-test
{configs}---
# {name}

Alpaca-style records made by the TuneDesk tests.
"""


def alpaca_records(n: int, lang: str = "en", start: int = 0) -> list[dict]:
    """n Alpaca records, numbered so a test can tell them apart, e.g. {"instruction": "Add 2 and 3.", ...}."""
    ask = "计算 {} 加 {}。" if lang == "zh" else "Add {} and {}."
    numbers = range(start, start + n)
    return [{"instruction": ask.format(i, i + 1), "input": "", "output": str(2 * i + 1)} for i in numbers]


def _write_json(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")


def alpaca_dataset_repo(folder: Path) -> Path:
    """train.json (8 records) and test.json (2): datasets names the splits from the file names."""
    rows = DATASET_ROWS[(ALPACA_DATASET, None)]
    _write_json(Path(folder) / "train.json", alpaca_records(rows["train"]))
    _write_json(Path(folder) / "test.json", alpaca_records(rows["test"], start=100))
    (Path(folder) / "README.md").write_text(DATASET_CARD.format(configs="", name="tiny-alpaca"), encoding="utf-8")
    return Path(folder)


def configs_dataset_repo(folder: Path) -> Path:
    """Two configs declared in README.md yaml (`configs:` with data_files per split): en (6/2) and zh (4/2)."""
    folder = Path(folder)
    yaml_configs = "configs:\n"
    for lang in ("en", "zh"):
        rows = DATASET_ROWS[(CONFIGS_DATASET, lang)]
        yaml_configs += f"- config_name: {lang}\n  data_files:\n"
        for split, n in rows.items():
            _write_json(folder / lang / f"{split}.json", alpaca_records(n, lang, start=0 if split == "train" else 100))
            yaml_configs += f"  - split: {split}\n    path: {lang}/{split}.json\n"
    (folder / "README.md").write_text(DATASET_CARD.format(configs=yaml_configs, name=folder.name), encoding="utf-8")
    return folder


def parquet_dataset_repo(folder: Path) -> Path:
    """data/train-00000-of-00001.parquet with 5 records (the layout the Hub's parquet conversion writes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    records = alpaca_records(DATASET_ROWS[(PARQUET_DATASET, None)]["train"])
    pq.write_table(pa.Table.from_pylist(records), folder / "data" / "train-00000-of-00001.parquet")
    (folder / "README.md").write_text(DATASET_CARD.format(configs="", name="tiny-parquet"), encoding="utf-8")
    return folder


@dataclass(frozen=True)
class RepoSources:
    """The folders the standard repos are served from (built once per test session)."""

    tiny: Path
    pickle: Path
    alpaca: Path
    configs: Path
    parquet: Path


_SOURCES: dict[str, RepoSources] = {}


def build_sources(root: Path, tiny_model_dir: Path) -> RepoSources:
    root = Path(root)
    tiny = tiny_model_repo(root / "tiny-llama", tiny_model_dir)
    return RepoSources(
        tiny=tiny,
        pickle=pickle_model_repo(root / "tiny-llama-pickle", tiny),
        alpaca=alpaca_dataset_repo(root / "tiny-alpaca"),
        configs=configs_dataset_repo(root / "tiny-alpaca-configs"),
        parquet=parquet_dataset_repo(root / "tiny-parquet"),
    )


def standard_sources(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> RepoSources:
    """The standard repos' folders, built once per test session. A longer-lived stand-in (e.g. one module's app
    server in a subprocess) uses these with `HubStub`, `add_standard_repos` and `subprocess_env`."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _SOURCES:
        _SOURCES[key] = build_sources(tmp_path_factory.mktemp("hub-repos"), tiny_model_dir)
    return _SOURCES[key]


def add_standard_repos(hub: HubStub, sources: RepoSources) -> None:
    """TINY_MODEL, GATED_MODEL (manual, license llama3.2), PICKLE_MODEL and the three datasets."""
    hub.add_repo(TINY_MODEL, sources.tiny, downloads=1234, likes=56)
    gated = hub.add_repo(GATED_MODEL, sources.tiny, gated="manual", downloads=321, likes=7)
    gated.files["README.md"] = RepoFileEntry(
        "README.md", MODEL_CARD.format(license="llama3.2", name="tiny-llama-gated").encode(), False
    )
    hub.add_repo(PICKLE_MODEL, sources.pickle, downloads=12, likes=1)
    hub.add_repo(ALPACA_DATASET, sources.alpaca, "dataset", downloads=99, likes=3)
    hub.add_repo(CONFIGS_DATASET, sources.configs, "dataset", downloads=98, likes=2)
    hub.add_repo(PARQUET_DATASET, sources.parquet, "dataset", downloads=97, likes=1)


TINY_CHUNK = 64 * 1024


def scale_chunks_to_tiny_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads a transfer in 10 MB chunks: it reports progress, notices a Cancel (raised from its
    progress bar) and keeps bytes for a resume only per whole chunk. The tiny repos' files (560 KB of weights) are
    to 64 KiB chunks what a real model's gigabytes are to 10 MB ones, so with this a test sees progress move, and a
    cancel or a cut land mid-file, as a user does."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", TINY_CHUNK)


@pytest.fixture(name="hub")
def hub_fixture(tmp_path, tmp_path_factory, tiny_model_dir, monkeypatch):
    """A started stand-in serving the standard repos, with this process's clients (and, through the environment,
    its subprocesses) pointed at it, a fresh HF_HOME (tmp_path/"hf") and 64 KiB transfer chunks (see
    scale_chunks_to_tiny_files). `hub.token` is a valid token with access to GATED_MODEL; nothing is logged in.
    Undone after the test."""
    with HubStub() as stub:
        add_standard_repos(stub, standard_sources(tmp_path_factory, tiny_model_dir))
        point_clients_at(stub.url, tmp_path / "hf", monkeypatch)
        scale_chunks_to_tiny_files(monkeypatch)
        yield stub
