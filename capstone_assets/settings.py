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
}


def setting(name: str) -> str | EnvVar:
    return EnvVar(name) if os.environ.get(name) else DEFAULTS[name]


def value(name: str) -> str:
    """The plain value, for what is not a resource field (the Spark config, the CLI)."""
    return os.environ.get(name) or DEFAULTS[name]
