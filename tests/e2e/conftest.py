"""Real-browser fixtures: the app in a subprocess on a free port, Debian's chromium driven by Playwright.

Where chromium or Playwright is missing, the tests skip with the reason printed (never a silent pass).
Screenshots go to test-artifacts/e2e/ (full page); `shot(page, name, readme=True)` also writes the viewport to the
README's docs/screenshots/ when TUNEDESK_README_SHOTS=1.

To iterate on a test without waiting for an app start each time, point the fixtures at an app you started yourself:
TUNEDESK_E2E_URL=http://127.0.0.1:7860 TUNEDESK_E2E_RUNS=<the TUNEDESK_RUNS folder that app uses>.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from apprunner import page_url, running_app

from app import paths
from e2e.pages import app_home, last_form_file

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("TUNEDESK_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        reason = f"chromium not found at {CHROMIUM} (make test installs Debian's chromium with apt-get where it can)"
        print(f"\nE2E SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        print(f"\nE2E SKIPPED: playwright not importable: {exc}", file=sys.stderr)
        pytest.skip(f"playwright not importable: {exc}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """`python -m app ui` on a free port with its own runs folder; yields (base_url, runs_dir)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if os.environ.get("TUNEDESK_E2E_URL"):
        yield os.environ["TUNEDESK_E2E_URL"].rstrip("/"), Path(os.environ["TUNEDESK_E2E_RUNS"])
        return
    runs = tmp_path_factory.mktemp("e2e-runs")
    # a home of its own (its last form, recent files and uploads), the model cache linked in
    home = app_home(runs)
    home.mkdir()
    (home / "models").symlink_to(paths.models_dir(), target_is_directory=True)
    # 240 s: the first page waits for gradio, pandas and plotly imports, 60+ s on 2 cores busy with other tests
    log = ARTIFACTS / "app.log"
    env = {"TUNEDESK_RUNS": str(runs), "TUNEDESK_HOME": str(home)}
    with running_app(env=env, log_path=log, timeout=240) as (url, _proc):
        yield url, runs


@pytest.fixture(scope="module")
def hub_app(tmp_path_factory, tiny_model_dir):
    """A second app pointed at a stand-in Hub (tests/hubstub.py: the tiny model and the other standard repos) with a
    Hugging Face cache, runs folder and home of its own; yields (base_url, stub). The shared app stays offline, so
    no other browser test depends on what the Hub journey downloads."""
    from hubstub import HubStub, add_standard_repos, standard_sources, subprocess_env

    root = tmp_path_factory.mktemp("e2e-hub")
    runs = root / "runs"
    home = app_home(runs)
    home.mkdir(parents=True)
    (home / "models").symlink_to(paths.models_dir(), target_is_directory=True)  # the default model, not fetched
    with HubStub() as stub:
        add_standard_repos(stub, standard_sources(tmp_path_factory, tiny_model_dir))
        env = subprocess_env(stub.url, root / "hf")
        env.update({"HF_HUB_OFFLINE": "0", "TUNEDESK_RUNS": str(runs), "TUNEDESK_HOME": str(home)})
        with running_app(env=env, log_path=ARTIFACTS / "app-hub.log", timeout=240) as (url, _proc):
            yield url, stub


@pytest.fixture(scope="module")
def default_form(browser, app_server):
    """Every module starts from the default settings: the app keeps the last form across pages (issue 14 item 3),
    so what one module typed would otherwise be what the next one opens with. Pressed through the Train tab's
    Reset all settings, as a user would."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(page_url(app_server[0]))
    pg.locator("#tab-train-button").click()
    pg.locator("#train-reset-form").click()
    from playwright.sync_api import expect

    expect(pg.locator("#train-status [data-testid=markdown]")).to_contain_text("back to its default", timeout=60_000)
    # the change events that follow save the form (app.last_form, beside this app's runs): wait for the defaults
    from app.config import ConfigError, RunConfig

    saved, deadline = last_form_file(app_server[1]), time.monotonic() + 120
    while saved.is_file() and time.monotonic() < deadline:
        try:
            if RunConfig.from_yaml(saved) == RunConfig():
                break
        except (ConfigError, OSError):  # being replaced right now
            pass
        time.sleep(0.5)
    context.close()


@pytest.fixture()
def page(browser, app_server, default_form):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(page_url(app_server[0]))
    yield pg
    context.close()


@pytest.fixture(scope="session")
def shot():
    """shot(page, name, readme=False): save a full-page screenshot as a test artifact; with readme=True and
    TUNEDESK_README_SHOTS=1, also the viewport as docs/screenshots/<name>.png (a 1440x1000 view stays ~100-300 KB
    where a full page of a long tab is several MB)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    readme_dir = ROOT / "docs" / "screenshots" if os.environ.get("TUNEDESK_README_SHOTS") == "1" else None

    def take(pg, name: str, readme: bool = False) -> Path:
        if readme and readme_dir is not None:  # the viewport first: a full-page capture may move the view
            readme_dir.mkdir(parents=True, exist_ok=True)
            tmp = readme_dir / f".{name}.part.png"  # a temp name, then rename
            pg.screenshot(path=str(tmp))
            tmp.replace(readme_dir / f"{name}.png")
        path = ARTIFACTS / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path

    return take
