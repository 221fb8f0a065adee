"""The operator's command, `capstone-jobs`."""

import subprocess

import pytest

from capstone_assets import cli
from capstone_assets_tests.conftest import REPO
from capstone_assets_tests.test_tracker import dead_pid, set_columns

JOB = "preprocessing_2020-08-05"


@pytest.fixture
def operator_env(tracker, monkeypatch):
    monkeypatch.setenv("CAPSTONE_TRACKER_URL", tracker.url)
    monkeypatch.setenv("CAPSTONE_TRACKER_TABLE", tracker.table)
    return tracker


def test_list_show_and_status(operator_env, capsys):
    operator_env.claim("preprocessing", "2020-08-05", "run-1")
    operator_env.claim("analytical", "2020-08-06", "run-2")
    operator_env.update_status("analytical_2020-08-06", "failed", run_id="run-2", error="boom")
    assert cli.main(["list", "--from", "2020-08-01", "--to", "2020-08-31"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["job_id", "status", "updated_time"]
    assert [line.split()[:2] for line in lines[1:]] == [[JOB, "running"], ["analytical_2020-08-06", "failed"]]
    assert cli.main(["show", JOB]) == 0
    shown = capsys.readouterr().out
    assert "run-1" in shown and "live            yes" in shown
    assert cli.main(["status", "analytical_2020-08-06"]) == 0
    assert capsys.readouterr().out.strip() == "failed"
    assert cli.main(["show", "analytical_1999-01-01"]) == 1


def test_release_asks_and_refuses_a_live_run(operator_env, monkeypatch, capsys):
    operator_env.claim("preprocessing", "2020-08-05", "run-1")
    assert cli.main(["release", JOB, "--yes"]) == 1  # this process holds it: live
    assert "live run" in capsys.readouterr().err
    set_columns(operator_env, pid=dead_pid())
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["release", JOB]) == 1
    assert operator_env.get_status(JOB) == "running"
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert cli.main(["release", JOB]) == 0
    record = operator_env.get_job(JOB)
    assert record.status == "failed" and record.error.startswith("released by")


def test_console_script_and_bad_configuration(tmp_path):
    env = {"PATH": f"{REPO / '.venv' / 'bin'}:/usr/bin:/bin", "CAPSTONE_TRACKER_URL": "postgresql://x/y"}
    result = subprocess.run(["capstone-jobs", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "postgresql+psycopg2" in result.stderr
    day = subprocess.run(
        ["capstone-jobs", "check-day", "2020-08-08"], env=env, capture_output=True, text=True
    )
    assert day.returncode == 2 and "not a trading day" in day.stderr
