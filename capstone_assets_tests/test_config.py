"""Configuration that explains itself: a malformed setting, a day without a partition or an
unreachable Spark master fails early, through the real entry points, with one sentence that
says what to fix and a non-zero exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from capstone_assets import settings
from capstone_assets.partitions import trading_day_partitions
from capstone_assets.resources.spark import SparkMasterUnreachable, check_master
from capstone_assets_tests.conftest import REPO

BIN = REPO / ".venv" / "bin"
SCRIPT = REPO / "scripts" / "run_preprocessing.sh"
DAY = "2020-08-06"
SECRET = "S3cr3t-Pa55"


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A working configuration on temporary folders; each test breaks one thing."""
    (tmp_path / "landing").mkdir()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    inherited = {k: v for k, v in os.environ.items() if k not in settings.DEFAULTS}
    return {
        **inherited,
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "DAGSTER_HOME": str(home),
        "CAPSTONE_LANDING_ROOT": str(tmp_path / "landing"),
        "CAPSTONE_LAKE_ROOT": str(tmp_path / "lake"),
        "CAPSTONE_TRACKER_URL": f"sqlite:///{tmp_path / 'tracker.db'}",
        "SPARK_MASTER": "local[1]",
    }


def run(command: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Each broken setting and the sentence that names it ({tmp} is the test's folder).
BROKEN = {
    "landing root missing": (
        {"CAPSTONE_LANDING_ROOT": "{tmp}/nowhere"},
        "CAPSTONE_LANDING_ROOT={tmp}/nowhere does not exist: create it, or point CAPSTONE_LANDING_ROOT "
        "at an existing folder",
    ),
    "landing root a file": (
        {"CAPSTONE_LANDING_ROOT": "{tmp}/dagster_home/dagster.yaml"},
        "CAPSTONE_LANDING_ROOT={tmp}/dagster_home/dagster.yaml is a file, not a folder: "
        "point CAPSTONE_LANDING_ROOT at a folder",
    ),
    "lake root a file": (
        {"CAPSTONE_LAKE_ROOT": "{tmp}/dagster_home/dagster.yaml"},
        "CAPSTONE_LAKE_ROOT={tmp}/dagster_home/dagster.yaml is a file, not a folder: "
        "point CAPSTONE_LAKE_ROOT at a folder",
    ),
    "lake root with credentials": (
        {"CAPSTONE_LAKE_ROOT": f"s3a://AKIAEXAMPLE:{SECRET}@bucket/lake"},
        "CAPSTONE_LAKE_ROOT must not hold credentials (user:secret@): "
        "give them to Hadoop's configuration instead",
    ),
    "empty value": (
        {"CAPSTONE_TRACKER_TABLE": ""},
        "CAPSTONE_TRACKER_TABLE is set but empty: give it a value, or unset it for the default",
    ),
    "threshold not a fraction": (
        {"CAPSTONE_REJECT_RATE_THRESHOLD": "5%"},
        "CAPSTONE_REJECT_RATE_THRESHOLD='5%' must be a fraction between 0 and 1, e.g. 0.05 for 5%",
    ),
    "deadline not HH:MM": (
        {"CAPSTONE_REPORT_DEADLINE": "6pm"},
        "CAPSTONE_REPORT_DEADLINE must be a New York time as HH:MM (e.g. 18:30), not '6pm'",
    ),
    "table not an identifier": (
        {"CAPSTONE_TRACKER_TABLE": "job_tracker; DROP TABLE x; --"},
        "CAPSTONE_TRACKER_TABLE='job_tracker; DROP TABLE x; --' is not a valid SQL identifier: use "
        "letters, digits and underscores, not starting with a digit, at most 63 characters (e.g. job_tracker)",
    ),
    "database URL without driver": (
        {"CAPSTONE_TRACKER_URL": "postgresql://postgres@127.0.0.1:5432/postgres"},
        "CAPSTONE_TRACKER_URL must name the driver: use postgresql+psycopg2://… "
        "(SQLAlchemy maps postgresql:// to psycopg 3, which is not installed)",
    ),
    "unsupported database URL": (
        {"CAPSTONE_TRACKER_URL": f"mysql://capstone:{SECRET}@db:3306/capstone"},
        "unsupported CAPSTONE_TRACKER_URL 'mysql://capstone:***@db:3306/capstone': "
        "use postgresql+psycopg2://… or sqlite:///…",
    ),
    "Spark master malformed": (
        {"SPARK_MASTER": "sparc://cluster:7077"},
        "SPARK_MASTER='sparc://cluster:7077' is not a Spark master URL: "
        "use local[*], spark://host:7077, yarn or k8s://https://host:443",
    ),
    "webhook not http": (
        {"CAPSTONE_ALERT_WEBHOOK_URL": f"hooks.example.com/services/{SECRET}"},
        "CAPSTONE_ALERT_WEBHOOK_URL must be an http:// or https:// URL (e.g. https://host/path)",
    ),
}


def broken(env: dict, tmp_path: Path, case: str) -> tuple[dict, str]:
    changes, sentence = BROKEN[case]
    env = {**env, **{k: v.replace("{tmp}", str(tmp_path)) for k, v in changes.items()}}
    return env, sentence.replace("{tmp}", str(tmp_path))


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_setting_stops_the_definitions_from_loading(case, env, tmp_path):
    env, sentence = broken(env, tmp_path, case)
    load = run([sys.executable, "-W", "ignore", "-c", "import capstone_assets.definitions"], env)
    assert load.returncode != 0
    assert last_line(load.stderr) == f"capstone_assets.settings.ConfigError: {sentence}"
    assert SECRET not in load.stdout + load.stderr


@pytest.mark.parametrize("case", BROKEN)
def test_the_operator_command_names_a_broken_setting_in_one_line(case, env, tmp_path):
    env, sentence = broken(env, tmp_path, case)
    check = run([str(BIN / "capstone-jobs"), "check-config"], env)
    assert (check.returncode, check.stderr) == (2, f"capstone-jobs: {sentence}\n")


@pytest.mark.parametrize(
    "case", ["landing root missing", "table not an identifier", "unsupported database URL"]
)
def test_the_script_refuses_a_broken_setting_before_anything_runs(case, env, tmp_path):
    env, sentence = broken(env, tmp_path, case)
    refused = run([str(SCRIPT), DAY], env)
    assert (refused.returncode, refused.stderr, refused.stdout) == (2, f"capstone-jobs: {sentence}\n", "")
    assert not (tmp_path / "lake").exists() and not (tmp_path / "tracker.db").exists()


@pytest.mark.e2e
def test_dagster_refuses_a_missing_landing_root_before_spark(env, tmp_path):
    # It used to run and write an empty day, successfully.
    env, sentence = broken(env, tmp_path, "landing root missing")
    started = time.monotonic()
    execute = run(
        ["dagster", "job", "execute", "-m", "capstone_assets.definitions", "-j", "preprocessing_job",
         "--tags", f'{{"dagster/partition": "{DAY}"}}'],
        env,
    )  # fmt: skip
    assert execute.returncode != 0
    assert last_line(execute.stderr) == f"capstone_assets.settings.ConfigError: {sentence}"
    assert "Spark" not in execute.stderr and time.monotonic() - started < 60
    assert not (tmp_path / "lake").exists() and not (tmp_path / "tracker.db").exists()


def test_the_python_runner_names_a_broken_setting_in_one_line(env, tmp_path):
    env, sentence = broken(env, tmp_path, "landing root missing")
    refused = run([sys.executable, "-W", "ignore", "-m", "capstone_assets.run", DAY], env)
    assert (refused.returncode, refused.stderr) == (2, f"python -m capstone_assets.run: {sentence}\n")


# ------------------------------------------------------------------------------------- days
def bad_days() -> dict[str, str]:
    first = trading_day_partitions.get_first_partition_key()
    last = trading_day_partitions.get_last_partition_key()
    return {
        "2020-08-08": "2020-08-08 is not a trading day (weekend or NYSE holiday): "
        "pick a weekday the NYSE was open",
        "2020-11-26": "2020-11-26 is not a trading day (weekend or NYSE holiday): "
        "pick a weekday the NYSE was open",
        "2019-12-31": f"2019-12-31 is before the first trading-day partition, {first}: pick a day from {first} on",
        "2099-01-05": f"2099-01-05 is after the last trading-day partition, {last} (a day's partition exists "
        f"from midnight New York that day): pick a day up to {last}",
        "2020-13-01": "'2020-13-01' is not a date in the form YYYY-MM-DD",
    }


@pytest.mark.parametrize("day", list(bad_days()))
def test_a_day_without_a_partition_is_refused_in_one_line(day, env, tmp_path):
    sentence = bad_days()[day]
    check = run([str(BIN / "capstone-jobs"), "check-day", day], env)
    assert (check.returncode, check.stderr) == (2, f"capstone-jobs: {sentence}\n")
    script = run([str(SCRIPT), day], env)
    assert (script.returncode, script.stderr, script.stdout) == (2, f"capstone-jobs: {sentence}\n", "")
    runner = run([sys.executable, "-W", "ignore", "-m", "capstone_assets.run", day], env)
    assert (
        runner.returncode == 2
        and last_line(runner.stderr) == f"python -m capstone_assets.run: error: {sentence}"
    )
    assert not (tmp_path / "lake").exists() and not (tmp_path / "tracker.db").exists()


def test_a_range_reaching_outside_the_partitions_is_refused(env):
    first = trading_day_partitions.get_first_partition_key()
    runner = run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-m",
            "capstone_assets.run",
            "--from",
            "2019-12-30",
            "--to",
            "2020-01-03",
        ],
        env,
    )
    assert runner.returncode == 2
    assert last_line(runner.stderr) == (
        "python -m capstone_assets.run: error: 2019-12-30 is before the first trading-day partition, "
        f"{first}: pick a day from {first} on"
    )


# ---------------------------------------------------------------------------- Spark master
def unreachable_sentence(port: int) -> str:
    return (
        f"SPARK_MASTER=spark://127.0.0.1:{port} is not reachable (127.0.0.1:{port}: [Errno 111] Connection "
        "refused): start the Spark master, or set SPARK_MASTER to a reachable spark://host:port (or local[*])"
    )


def test_an_unreachable_spark_master_is_refused_by_the_script_in_seconds(env, tmp_path):
    port = closed_port()
    env = {**env, "SPARK_MASTER": f"spark://127.0.0.1:{port}"}
    started = time.monotonic()
    refused = run([str(SCRIPT), DAY], env)
    assert (refused.returncode, refused.stderr) == (2, f"capstone-jobs: {unreachable_sentence(port)}\n")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "tracker.db").exists()
    runner = run([sys.executable, "-W", "ignore", "-m", "capstone_assets.run"], env)
    assert (runner.returncode, runner.stderr) == (
        2,
        f"python -m capstone_assets.run: {unreachable_sentence(port)}\n",
    )


@pytest.mark.e2e
def test_an_unreachable_spark_master_fails_the_run_in_seconds_not_minutes(env, tmp_path):
    # Before: 101 s of JVM start and three 20-second registration attempts, then
    # "Cannot call methods on a stopped SparkContext". Now the resource probes the master first.
    port = closed_port()
    env = {**env, "SPARK_MASTER": f"spark://127.0.0.1:{port}"}
    started = time.monotonic()
    execute = run(
        ["dagster", "job", "execute", "-m", "capstone_assets.definitions", "-j", "preprocessing_job",
         "--tags", f'{{"dagster/partition": "{DAY}"}}'],
        env,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert execute.returncode != 0 and elapsed < 45, f"{elapsed:.0f} s"
    assert f"SparkMasterUnreachable: {unreachable_sentence(port)}" in execute.stderr
    engine = sa.create_engine(env["CAPSTONE_TRACKER_URL"])
    with engine.connect() as connection:
        status, error = connection.execute(sa.text("SELECT status, error FROM job_tracker")).one()
    engine.dispose()
    assert (status, error) == ("failed", f"ingestion: {SparkMasterUnreachable.__module__}."
                                         f"SparkMasterUnreachable: {unreachable_sentence(port)}")  # fmt: skip


def test_the_master_probe_is_bounded_when_nothing_answers():
    # A listener whose backlog is full drops further connection attempts: they hang, like a
    # firewalled host.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(SparkMasterUnreachable) as refused:
            check_master(f"spark://127.0.0.1:{port}", timeout=1)
        assert time.monotonic() - started < 5
        for filler in fillers:
            filler.close()
    assert str(refused.value) == (
        f"SPARK_MASTER=spark://127.0.0.1:{port} is not reachable (127.0.0.1:{port}: timed out): start the "
        "Spark master, or set SPARK_MASTER to a reachable spark://host:port (or local[*])"
    )
    check_master("local[*]")  # nothing to probe
    check_master("yarn")
