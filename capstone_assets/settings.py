"""Configuration from the environment, with defaults that work on a laptop.

Only `definitions.py` calls this, at assembly: a variable that is set reaches
the resources as an `EnvVar` (the UI shows where the value came from), an
unset one falls back to the local default under `./var`.
"""

from __future__ import annotations

import os

from dagster import EnvVar

DEFAULTS = {
    "CAPSTONE_LANDING_ROOT": "var/landing",
    "CAPSTONE_LAKE_ROOT": "var/lake",
    "CAPSTONE_TRACKER_URL": "sqlite:///var/tracker.db",
    "CAPSTONE_TRACKER_TABLE": "job_tracker",
    "SPARK_MASTER": "local[*]",
}


def setting(name: str) -> str | EnvVar:
    return EnvVar(name) if os.environ.get(name) else DEFAULTS[name]


def value(name: str) -> str:
    """The plain value, for what is not a resource field (the Spark config dict)."""
    return os.environ.get(name) or DEFAULTS[name]
