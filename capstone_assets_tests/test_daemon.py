"""`capstone-daemon`: dagster-daemon with the backfill loop's interval from the environment."""

from __future__ import annotations

import subprocess

import pytest

from capstone_assets import daemon
from capstone_assets_tests.conftest import REPO


@pytest.mark.parametrize(("text", "seconds"), [("", 30), ("5", 5), (" 12 ", 12), ("3600", 3600)])
def test_the_interval_comes_from_the_environment(text, seconds):
    assert daemon.interval_seconds({daemon.ENV: text}) == seconds


@pytest.mark.parametrize("text", ["0", "-5", "2.5", "five", "3601"])
def test_a_bad_interval_is_refused_naming_the_variable(text):
    with pytest.raises(SystemExit, match=f"{daemon.ENV}='{text}': expected a whole number of seconds"):
        daemon.interval_seconds({daemon.ENV: text})


def test_the_command_is_dagster_daemon_and_refuses_a_bad_interval_before_starting():
    command = str(REPO / ".venv" / "bin" / "capstone-daemon")
    help_text = subprocess.run([command, "run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Run any daemons configured on the DagsterInstance" in help_text
    refused = subprocess.run(
        [command, "run"], capture_output=True, text=True, env={daemon.ENV: "soon", "PATH": "/usr/bin:/bin"}
    )
    assert refused.returncode == 1
    assert f"{daemon.ENV}='soon'" in refused.stderr
