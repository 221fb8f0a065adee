"""Configuration from the environment, with defaults that work on a laptop.

Only `definitions.py` and the command-line tools call this. A variable that is
set reaches the resources as an `EnvVar` (the UI shows where the value came
from); an unset one falls back to a local default under the project's `var/`
folder, the same whatever the current directory (cron, the scripts, the UI).

`check()` runs when the definitions load and before the scripts start a run:
a malformed value stops everything with one sentence that names the variable
and what to write instead, rather than failing later inside a run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dagster import EnvVar

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VAR = PROJECT_ROOT / "var"

DEFAULTS = {
    "CAPSTONE_LANDING_ROOT": str(VAR / "landing"),
    "CAPSTONE_LAKE_ROOT": str(VAR / "lake"),
    "CAPSTONE_TRACKER_URL": f"sqlite:///{VAR / 'tracker.db'}",
    "CAPSTONE_TRACKER_TABLE": "job_tracker",
    "SPARK_MASTER": "local[*]",
    "CAPSTONE_ALERT_WEBHOOK_URL": "",  # empty: alerts off
    "CAPSTONE_UI_URL": "http://127.0.0.1:3000",
    "CAPSTONE_REPORT_DEADLINE": "18:30",  # HH:MM, New York time
    "CAPSTONE_REJECT_RATE_THRESHOLD": "0.05",
}
MAY_BE_EMPTY = {"CAPSTONE_ALERT_WEBHOOK_URL"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SPARK_MASTER = re.compile(
    r"^(local(\[(\*|[1-9]\d*)(,[1-9]\d*)?\])?|local-cluster\[\d+,\d+,\d+\]"
    r"|spark://[^\s/,]+:\d+(,[^\s/,]+:\d+)*|yarn|k8s://\S+)$"
)
_HTTP = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_CREDENTIALS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@")


class ConfigError(ValueError):
    """A setting the operator must fix; the message is one sentence naming the variable."""


def setting(name: str) -> str | EnvVar:
    return EnvVar(name) if os.environ.get(name) else DEFAULTS[name]


def value(name: str) -> str:
    """The plain value, for what is not a resource field (the Spark config, the CLI)."""
    return os.environ.get(name) or DEFAULTS[name]


def fraction(name: str) -> float:
    """A setting that is a fraction between 0 and 1, e.g. a reject-rate threshold of 0.05 (5%)."""
    text = value(name)
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name}='{text}' must be a fraction between 0 and 1, e.g. 0.05 for 5%")
    return number


def check() -> None:
    """Raises ConfigError on the first malformed setting (see the module's docstring)."""
    from capstone_assets.freshness import parse_deadline
    from capstone_assets.resources.tracker import TrackerResource

    for name in DEFAULTS:
        if name in os.environ and not os.environ[name].strip() and name not in MAY_BE_EMPTY:
            raise ConfigError(f"{name} is set but empty: give it a value, or unset it for the default")
    _check_folder("CAPSTONE_LANDING_ROOT", must_exist="CAPSTONE_LANDING_ROOT" in os.environ)
    _check_folder("CAPSTONE_LAKE_ROOT", must_exist=False)
    try:
        TrackerResource(
            url=value("CAPSTONE_TRACKER_URL"), table=value("CAPSTONE_TRACKER_TABLE")
        ).check_config()
        parse_deadline(value("CAPSTONE_REPORT_DEADLINE"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    fraction("CAPSTONE_REJECT_RATE_THRESHOLD")
    if not _SPARK_MASTER.match(value("SPARK_MASTER")):
        raise ConfigError(
            f"SPARK_MASTER='{value('SPARK_MASTER')}' is not a Spark master URL: "
            "use local[*], spark://host:7077, yarn or k8s://https://host:443"
        )
    for name in ("CAPSTONE_ALERT_WEBHOOK_URL", "CAPSTONE_UI_URL"):
        # Never echoed: a webhook's path is often its secret token.
        if value(name) and not _HTTP.match(value(name)):
            raise ConfigError(f"{name} must be an http:// or https:// URL (e.g. https://host/path)")


def _check_folder(name: str, must_exist: bool) -> None:
    """A local folder setting: a folder where it exists, and present when it must be read. (A file
    further up a lake path is left to the run, which fails writing and keeps the previous day.)"""
    text = value(name)
    if _CREDENTIALS.match(text):  # paths reach logs and metadata; never echo this one
        raise ConfigError(
            f"{name} must not hold credentials (user:secret@): give them to Hadoop's configuration instead"
        )
    if _URL.match(text):  # abfss://, s3a://: Hadoop's FileSystem decides at run time
        return
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={path} is a file, not a folder: point {name} at a folder")
    if must_exist and not path.exists():
        raise ConfigError(f"{name}={path} does not exist: create it, or point {name} at an existing folder")
