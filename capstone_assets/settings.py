"""Configuration from the environment, with defaults that work on a laptop.

Only `definitions.py` and the command-line tools call this. A variable that is
set reaches the resources as an `EnvVar` (the UI shows where the value came
from); an unset one falls back to a local default under the project's `var/`
folder, the same whatever the current directory (cron, the scripts, the UI).
"""

from __future__ import annotations

import os
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
        raise ValueError(f"{name}='{text}' must be a fraction between 0 and 1, e.g. 0.05 for 5%")
    return number
