"""The app's last form: the RunConfig the page showed when a value last changed, so a page refresh and an app
restart open with the same settings (the data path, placeholders, max steps, run name, sample prompts, ...).

One YAML file, the same format as a run's config.yaml (`RunConfig.to_yaml`), so it also trains as it is:
`python -m app train <path()>`. No gradio here: app/ui/app.py saves it on every change and shows it on load.
"""

from __future__ import annotations

import os
from pathlib import Path

from app import paths
from app.config import ConfigError, RunConfig

FILE = "last-form.yaml"


def path() -> Path:
    """$TUNEDESK_HOME/last-form.yaml; where only $TUNEDESK_RUNS is set (the tests' apps, a second app with its own
    runs), beside those runs, so such an app neither reads nor overwrites the user's own form."""
    if os.environ.get("TUNEDESK_RUNS") and not os.environ.get("TUNEDESK_HOME"):
        return paths.runs_dir() / f".{FILE}"
    return paths.home() / FILE


def save(cfg: RunConfig) -> Path:
    """Write `cfg` as the last form (atomically: a page may read it while another saves)."""
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    cfg.save(target)
    return target


def load() -> tuple[RunConfig | None, str]:
    """(the last form, "") or (None, why not): None without a message when none was saved yet; a file that no
    longer loads (edited by hand, written by an older version) gives its problems, and the defaults are used."""
    target = path()
    if not target.is_file():
        return None, ""
    try:
        return RunConfig.from_yaml(target), ""
    except ConfigError as exc:
        return None, f"{target}: not restored ({'; '.join(exc.problems) or exc})"


def clear() -> None:
    """Forget the last form (the next page opens with the defaults)."""
    path().unlink(missing_ok=True)
