"""Who may call the running app: a token made at each start, a Host allowlist, and a brake on password guessing.

Without a gate, anything that reaches the port owns the app: another account on the machine, and any web page the
user visits, through DNS rebinding (a name the attacker controls, re-pointed at 127.0.0.1, sends `Host: evil.example`
to the app from the victim's own browser). The app can read files, run a model's code and delete runs, so every
request, the page, the API, the queue and its event stream alike, passes `GateMiddleware` first:

- `Host` must name this machine: localhost, 127.0.0.1, ::1 and, with `--listen`, the machine's own names and
  addresses, plus any the user adds (`--allow-host`). A rebinding page sends its own name and is refused.
- Without a password (`--auth`), a request must carry the start's token: `?token=...` in the URL the app prints
  and opens (the answer sets a cookie and redirects to the same page without it), the cookie afterwards, or the
  `X-TuneDesk-Token` header for scripts (`gradio_client.Client(url, headers={"X-TuneDesk-Token": token})`).
  Jupyter has worked this way since 2016. With `--auth`, Gradio's login is the gate instead (a remote user has no
  access to the terminal the token is printed in), and wrong passwords are braked per client address.

Plain ASGI (no Starlette base class) so that streamed answers (the queue's server-sent events) pass untouched.
This module imports neither gradio nor torch.
"""

from __future__ import annotations

import fnmatch
import hmac
import os
import secrets
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TOKEN_ENV = "TUNEDESK_TOKEN"
"""Set it to choose the token yourself (a script that starts the app and then calls it); else one is drawn."""
HEADER = "x-tunedesk-token"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SHARE_HOSTS = ("*.gradio.live",)
"""Gradio's share tunnel forwards requests with its own host name; `--share` always needs `--auth` as well."""
MIN_TOKEN_CHARS = 16

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def new_token() -> str:
    """$TUNEDESK_TOKEN when set, else 43 random URL-safe characters (256 bits). Raises ValueError on a short one."""
    chosen = os.environ.get(TOKEN_ENV, "").strip()
    if not chosen:
        return secrets.token_urlsafe(32)
    if len(chosen) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"{TOKEN_ENV} is {len(chosen)} characters long; use at least {MIN_TOKEN_CHARS} random characters "
            "(or unset it and TuneDesk draws one)"
        )
    return chosen


def machine_hosts() -> list[str]:
    """This machine's own names and interface addresses: the names a browser elsewhere uses with `--listen`."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            names.update(a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    except Exception:  # psutil missing or refused: the names above and --allow-host still work
        pass
    return sorted(n for n in names if n)


def allowed_hosts(listen: bool = False, share: bool = False, extra: Iterable[str] = ()) -> list[str]:
    """Host names (patterns like `*.example.org` allowed) that requests may name."""
    hosts = list(LOCAL_HOSTS)
    if listen:
        hosts += machine_hosts()
    if share:
        hosts += SHARE_HOSTS
    hosts += [h.strip().lower() for h in extra if h.strip()]
    return list(dict.fromkeys(h.lower() for h in hosts))


def host_name(host_header: str) -> str:
    """'Example.org:7860' -> 'example.org'; '[::1]:7860' -> '::1'; '' stays ''."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    name = host_name(host_header or "")
    return bool(name) and any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)


@dataclass
class LoginBrake:
    """A growing wait per client address after `free` wrong passwords: 1 s, 2 s, 4 s ... up to `most_s`.

    While a client waits, its login attempts are answered 429 with Retry-After, so guessing in parallel gains
    nothing. A right password clears the count. 50 guesses then take ~15 minutes instead of 0.4 s."""

    free: int = 5
    most_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, int] = field(default_factory=dict)
    _next: dict[str, float] = field(default_factory=dict)

    def wait_s(self, client: str) -> float:
        return max(0.0, self._next.get(client, 0.0) - self.clock())

    def record(self, client: str, ok: bool) -> None:
        if ok:
            self._failures.pop(client, None)
            self._next.pop(client, None)
            return
        n = self._failures.get(client, 0) + 1
        self._failures[client] = n
        if n >= self.free:
            self._next[client] = self.clock() + min(2.0 ** (n - self.free), self.most_s)
        if len(self._failures) > 10_000:  # a flood of addresses must not grow memory without bound
            oldest = next(iter(self._failures))
            self._failures.pop(oldest, None)
            self._next.pop(oldest, None)


@dataclass
class Gate:
    """The decisions: `token` None means no token is required (a password guards the app instead)."""

    token: str | None
    hosts: list[str]
    port: int
    brake: LoginBrake = field(default_factory=LoginBrake)
    starting: bool = True
    """While True, Gradio's own start-up call (GET /gradio_api/startup-events, made by launch() itself, without
    our token) passes; the app sets it False as soon as launch() returns. That route only runs the start-up
    events, once, and answers nothing else."""

    @property
    def cookie(self) -> str:
        return f"tunedesk-token-{self.port}"  # browsers share cookies across ports: one name per app

    def url(self, base: str) -> str:
        """The address to open: `base` with the token, when one is required."""
        return f"{base.rstrip('/')}/?token={self.token}" if self.token else base

    def token_ok(self, presented: str | None) -> bool:
        return self.token is None or (bool(presented) and hmac.compare_digest(presented.encode(), self.token.encode()))


class GateMiddleware:
    """ASGI middleware enforcing a `Gate` on every HTTP and websocket request."""

    def __init__(self, app: Callable, gate: Gate):
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        gate = self.gate
        if not host_allowed(headers.get("host"), gate.hosts):
            return await _refuse(scope, send, 403, _host_message(headers.get("host")))
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_url = (query.get("token") or [None])[0]
        if gate.token is not None and from_url is not None and scope["type"] == "http":
            if gate.token_ok(from_url):
                return await _redirect_with_cookie(scope, send, gate, query)
            return await _refuse(scope, send, 401, WRONG_TOKEN)
        presented = headers.get(HEADER) or _bearer(headers) or _cookie(headers, gate.cookie)
        if not gate.token_ok(presented) and not (gate.starting and scope["path"] == STARTUP_ROUTE):
            return await _refuse(scope, send, 401, NEEDS_TOKEN)
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/login"):
            return await self._login(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.gate.brake.wait_s(client)
        if wait > 0:
            message = f"Too many wrong passwords from {client}: wait {wait:.0f} s before the next try."
            return await _refuse(scope, send, 429, message, {"retry-after": str(int(wait) + 1)})
        status: list[int] = []

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status and status[0] < 500:
            self.gate.brake.record(client, ok=status[0] < 400)


STARTUP_ROUTE = "/gradio_api/startup-events"
NEEDS_TOKEN = (
    "This TuneDesk app needs its access token. Open the address it printed when it started "
    "(http://127.0.0.1:PORT/?token=...), or send the header X-TuneDesk-Token from a script."
)
WRONG_TOKEN = "That access token is not this app's. Open the address TuneDesk printed when it started."


def _host_message(host: str | None) -> str:
    return (
        f"Host {host!r} is not one of this app's names, so the request was refused (this stops web pages from "
        "reaching the app through DNS rebinding). If you reach TuneDesk by that name on purpose, start it with "
        "--allow-host NAME (or TUNEDESK_ALLOWED_HOSTS=NAME,...)."
    )


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _refuse(scope: Scope, send: Send, status: int, message: str, extra: dict[str, str] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = (message + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(scope: Scope, send: Send, gate: Gate, query: dict[str, list[str]]) -> None:
    """Set the cookie and send the browser to the same page without the token in its address bar and history."""
    rest = urllib.parse.urlencode({k: v for k, v in query.items() if k != "token"}, doseq=True)
    location = (scope.get("root_path", "") + scope["path"]) + (f"?{rest}" if rest else "")
    cookie = f"{gate.cookie}={gate.token}; Path=/; HttpOnly; SameSite=Strict"
    headers = [(b"location", location.encode()), (b"set-cookie", cookie.encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
