"""Who may call the running app (issue 20, items 2 and 9): a token drawn at each start on every route, a Host
allowlist against DNS rebinding, and a growing wait after wrong passwords. Real `python -m app ui` processes,
called over HTTP like a script, another account or a rebinding web page would."""

from __future__ import annotations

import http.cookiejar
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from apprunner import running_app

from app import access

TOKEN_WORDS = "access token"


# ---- the decisions, without a server ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:7860", "127.0.0.1"), ("LOCALHOST", "localhost"), ("[::1]:7860", "::1"), ("::1", "::1"),
     ("evil.example:80", "evil.example"), ("", "")],
)  # fmt: skip
def test_host_name_strips_the_port_and_brackets(header, name):
    assert access.host_name(header) == name


def test_host_allowlist_has_local_names_and_what_the_user_adds_only():
    hosts = access.allowed_hosts(extra=["box.lan", "*.corp.example"])
    for ok in ("localhost:7860", "127.0.0.1", "[::1]:1", "box.lan", "a.corp.example:7860"):
        assert access.host_allowed(ok, hosts), ok
    for bad in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "corp.example", "", None):
        assert not access.host_allowed(bad, hosts), bad
    assert "*.gradio.live" not in hosts and "*.gradio.live" in access.allowed_hosts(share=True)


def test_the_login_brake_grows_per_client_and_a_right_password_clears_it():
    now = [1000.0]
    brake = access.LoginBrake(free=3, most_s=10, clock=lambda: now[0])
    for _ in range(2):
        brake.record("1.2.3.4", ok=False)
    assert brake.wait_s("1.2.3.4") == 0  # two wrong: no wait yet
    waits = []
    for _ in range(6):
        brake.record("1.2.3.4", ok=False)
        waits.append(brake.wait_s("1.2.3.4"))
    assert waits == [1, 2, 4, 8, 10, 10]
    assert brake.wait_s("5.6.7.8") == 0  # another client is not braked
    brake.record("1.2.3.4", ok=True)
    assert brake.wait_s("1.2.3.4") == 0


def test_a_short_chosen_token_is_refused(monkeypatch):
    monkeypatch.setenv(access.TOKEN_ENV, "short")
    with pytest.raises(ValueError, match="at least 16"):
        access.new_token()
    monkeypatch.delenv(access.TOKEN_ENV)
    assert len(access.new_token()) >= 40 and access.new_token() != access.new_token()


# ---- a real app ---------------------------------------------------------------------------------------------------
def _call(url: str, method: str = "GET", headers: dict | None = None, opener=None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"{}" if method == "POST" else None)
    try:
        with (opener or _no_redirects()).open(req, timeout=15) as resp:
            return resp.status, resp.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(2000).decode("utf-8", "replace")


def _no_redirects():
    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return urllib.request.build_opener(Keep)


def gradio_routes() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route a Gradio app serves, read from Gradio's own app factory; path parameters
    filled with a harmless value."""
    import gradio as gr
    from gradio.routes import App

    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda s: s, box, box, api_name="echo")  # an API route too
    out = []

    def walk(routes, prefix: str) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router (FastAPI >= 0.130)
                walk(route.original_router.routes, prefix + route.include_context.prefix)
                continue
            path = re.sub(r"\{[^}]+\}", "x", prefix + (getattr(route, "path", "") or "/"))
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                    out.append((method, path))

    walk(App.create_app(demo).routes, "")
    return sorted(set(out))


@pytest.fixture(scope="module")
def app_with_token(tmp_path_factory):
    """The app as a person starts it: no TUNEDESK_TOKEN set, so it draws its own and prints the address."""
    tmp = tmp_path_factory.mktemp("access")
    env = {k: v for k, v in os.environ.items() if k != access.TOKEN_ENV}
    env.update({"TUNEDESK_RUNS": str(tmp / "runs"), "TUNEDESK_TOKEN": ""})
    log = tmp / "app.log"
    with running_app(env=env, log_path=log, timeout=180) as (url, proc):
        deadline = time.monotonic() + 30
        while "?token=" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        printed = re.search(r"Open (http://\S+\?token=\S+)", log.read_text())
        assert printed, log.read_text()[-2000:]
        yield url, printed.group(1)


def test_every_route_refuses_a_caller_without_the_token_and_a_rebinding_host(app_with_token):
    url, printed = app_with_token
    token = urllib.parse.parse_qs(urllib.parse.urlparse(printed).query)["token"][0]
    routes = gradio_routes()
    assert len(routes) > 40 and ("POST", "/gradio_api/queue/join") in routes and ("GET", "/config") in routes
    for method, path in routes:
        status, body = _call(url + path, method)
        assert status == 401 and TOKEN_WORDS in body, (method, path, status, body[:200])
        status, body = _call(url + path, method, {"X-TuneDesk-Token": "x" * 43})
        assert status == 401, (method, path, "wrong token", status)
        status, body = _call(url + path, method, {"X-TuneDesk-Token": token, "Host": "evil.example"})
        assert status == 403 and "rebinding" in body, (method, path, "evil host", status)
    assert _call(url + "/config", headers={"X-TuneDesk-Token": token})[0] == 200
    assert _call(url + "/config", headers={"Authorization": f"Bearer {token}"})[0] == 200


def test_the_printed_address_opens_the_app_and_leaves_the_token_out_of_the_address_bar(app_with_token):
    url, printed = app_with_token
    status, _ = _call(printed)
    assert status == 302
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with browser.open(printed, timeout=30) as resp:
        assert resp.status == 200 and resp.geturl() == url + "/"
        assert "gradio" in resp.read().decode("utf-8", "replace").lower()
    cookie = next(c for c in jar if c.name.startswith("tunedesk-token-"))
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert _call(url + "/config", opener=browser)[0] == 200  # the page's own requests carry the cookie


@pytest.mark.slow
def test_wrong_passwords_are_braked_per_client(tmp_path):
    """With --auth (no token: the password is the gate), 5 wrong passwords, then the next try waits."""
    env = {"TUNEDESK_RUNS": str(tmp_path), "TUNEDESK_AUTH": "alice:s3cret-pass"}
    with running_app(env=env, timeout=180) as (url, _proc):
        assert _call(url + "/config")[0] == 401  # Gradio's login guards it; no token needed
        statuses = [_login(url, "wrong")[0] for _ in range(6)]
        assert statuses[:5] == [400] * 5 and statuses[5] == 429, statuses
        status, headers = _login(url, "s3cret-pass")
        assert status == 429 and int(headers["retry-after"]) >= 1
        time.sleep(int(headers["retry-after"]) + 0.2)
        assert _login(url, "s3cret-pass")[0] == 200


def _login(url: str, password: str) -> tuple[int, dict]:
    body = urllib.parse.urlencode({"username": "alice", "password": password}).encode()
    req = urllib.request.Request(url + "/login", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}
