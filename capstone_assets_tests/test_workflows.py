"""The two workflow scripts end to end through `dagster job execute`, tracker on PostgreSQL."""

import multiprocessing
import os
import signal
import subprocess
import time
import uuid

import pytest
import sqlalchemy as sa

from capstone_assets.resources import LakeResource, QualityResource, TrackerResource
from capstone_assets_tests.conftest import REPO

pytestmark = pytest.mark.e2e
SCRIPTS = REPO / "scripts"


@pytest.fixture
def env(tmp_path, sample_dir, postgres_url):
    table = f"job_tracker_e2e_{uuid.uuid4().hex[:10]}"
    values = {
        **os.environ,
        "CAPSTONE_LANDING_ROOT": str(sample_dir),
        "CAPSTONE_LAKE_ROOT": str(tmp_path / "lake"),
        "CAPSTONE_TRACKER_URL": postgres_url,
        "CAPSTONE_TRACKER_TABLE": table,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "SPARK_MASTER": "local[2]",
    }
    yield values
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def tracker_of(env) -> TrackerResource:
    return TrackerResource(url=env["CAPSTONE_TRACKER_URL"], table=env["CAPSTONE_TRACKER_TABLE"])


def run_script(name, day, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / name), day], env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


def start_script(name, day, env, log_path) -> subprocess.Popen:
    """In the background, output to a file (a pipe read at the end could fill up and block)."""
    log = open(log_path, "w")
    process = subprocess.Popen([str(SCRIPTS / name), day], env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path
    return process


def day_files(lake_root, day) -> dict[str, list[str]]:
    from pathlib import Path

    return {
        asset.name: sorted(p.name for p in (asset / f"trade_dt={day}").glob("*.parquet"))
        for asset in sorted(Path(lake_root).iterdir())
    }


def test_preprocessing_then_gated_analytical(env, spark, tmp_path):
    done = run_script("run_preprocessing.sh", "2020-08-05", env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "job id: preprocessing_2020-08-05" in done.stdout
    assert tracker_of(env).get_status("preprocessing_2020-08-05") == "success"

    refused = run_script("run_analytical.sh", "2020-08-06", env)
    assert refused.returncode != 0
    assert "preprocessing_2020-08-06 is not run, not success" in refused.stdout + refused.stderr
    assert not (tmp_path / "lake" / "eod_quote_report").exists()
    assert tracker_of(env).get_status("analytical_2020-08-06") is None

    # Two preprocessing runs of the same day started together: exactly one runs.
    started = time.monotonic()
    pair = [
        start_script("run_preprocessing.sh", "2020-08-06", env, tmp_path / f"run-{i}.log") for i in range(2)
    ]
    finished = {}
    while len(finished) < 2:
        for index, process in enumerate(pair):
            if index not in finished and process.poll() is not None:
                output = process.log_path.read_text()
                finished[index] = (process.returncode, time.monotonic() - started, output)
        time.sleep(0.2)
    codes = sorted(code for code, _, _ in finished.values())
    assert codes[0] == 0 and codes[1] != 0, finished
    loser = next(v for v in finished.values() if v[0] != 0)
    winner = next(v for v in finished.values() if v[0] == 0)
    assert "Refusing to start preprocessing_2020-08-06" in loser[2]
    assert loser[1] < winner[1], "the refused run must end before the running one"
    concurrent_output = sorted(
        spark.read.parquet(str(tmp_path / "lake" / "trades" / "trade_dt=2020-08-06")).collect()
    )

    single = run_script("run_preprocessing.sh", "2020-08-06", env)
    assert single.returncode == 0, single.stdout + single.stderr
    assert (
        sorted(spark.read.parquet(str(tmp_path / "lake" / "trades" / "trade_dt=2020-08-06")).collect())
        == concurrent_output
    )
    assert not list((tmp_path / "lake" / "trades" / "_staging").glob("*"))

    reported = run_script("run_analytical.sh", "2020-08-06", env)
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert tracker_of(env).get_status("analytical_2020-08-06") == "success"
    report = spark.read.parquet(str(tmp_path / "lake" / "eod_quote_report" / "trade_dt=2020-08-06"))
    assert report.count() == 540


def test_a_killed_run_is_taken_over_by_the_next(env, tmp_path):
    tracker = tracker_of(env)
    process = start_script("run_preprocessing.sh", "2020-08-05", env, tmp_path / "killed.log")
    deadline = time.monotonic() + 300
    holder = None
    while time.monotonic() < deadline and process.poll() is None:
        holder = tracker.get_job("preprocessing_2020-08-05")
        if holder is not None and (tmp_path / "lake" / "raw_trades" / "_staging").exists():
            break  # Spark is writing: mid-way
        time.sleep(0.2)
    assert holder is not None and holder.status == "running", process.log_path.read_text()
    os.kill(holder.pid, signal.SIGKILL)
    assert process.wait(timeout=60) != 0
    assert tracker.get_status("preprocessing_2020-08-05") == "running"  # the dead run's claim

    again = run_script("run_preprocessing.sh", "2020-08-05", env)
    assert again.returncode == 0, again.stdout + again.stderr
    record = tracker.get_job("preprocessing_2020-08-05")
    assert (record.status, record.attempts) == ("success", 2)
    # What the killed run had staged is gone; the day is complete.
    assert not list((tmp_path / "lake" / "raw_trades" / "_staging").glob("*"))
    assert set(day_files(tmp_path / "lake", "2020-08-05")) == {
        "raw_trades",
        "raw_quotes",
        "raw_rejects",
        "trades",
        "quotes",
    }


def test_a_failing_run_records_failed_and_a_rerun_succeeds(env, tmp_path):
    # A file where raw_trades' folder must go: the configuration is valid, the run's write fails.
    (tmp_path / "broken_lake").mkdir()
    (tmp_path / "broken_lake" / "raw_trades").write_text("a file where a folder must go")
    broken = {**env, "CAPSTONE_LAKE_ROOT": str(tmp_path / "broken_lake")}
    failed = run_script("run_preprocessing.sh", "2020-08-05", broken)
    assert failed.returncode != 0
    record = tracker_of(env).get_job("preprocessing_2020-08-05")
    assert record.status == "failed" and "ingestion" in record.error

    rerun = run_script("run_preprocessing.sh", "2020-08-05", env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert tracker_of(env).get_status("preprocessing_2020-08-05") == "success"


def test_scripts_refuse_a_day_that_is_not_a_trading_day(env):
    weekend = run_script("run_preprocessing.sh", "2020-08-08", env)
    assert weekend.returncode == 2 and "not a trading day" in weekend.stderr
    garbage = run_script("run_analytical.sh", "yesterday", env)
    assert garbage.returncode == 2 and "YYYY-MM-DD" in garbage.stderr


def _materialize_preprocessing(env, barrier, results):
    os.environ.update(env)
    from dagster import DagsterInstance, materialize

    from capstone_assets import assets
    from capstone_assets.resources import spark_resource

    resources = {
        "spark": spark_resource("local[1]"),
        "lake": LakeResource(landing_root=env["CAPSTONE_LANDING_ROOT"], lake_root=env["CAPSTONE_LAKE_ROOT"]),
        "tracker": TrackerResource(url=env["CAPSTONE_TRACKER_URL"], table=env["CAPSTONE_TRACKER_TABLE"]),
        "quality": QualityResource(),
    }
    barrier.wait()
    result = materialize(
        [assets.ingestion, assets.trades, assets.quotes], partition_key="2020-08-05",
        resources=resources, instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip
    results.put(result.success)


def test_eight_processes_race_one_runs_and_the_others_leave_no_trace(env, tmp_path):
    tracker_of(env).get_status("preprocessing_2020-08-05")  # the table exists before the race
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(8), context.Queue()
    processes = [
        context.Process(target=_materialize_preprocessing, args=(env, barrier, results)) for _ in range(8)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sorted(outcomes) == [False] * 7 + [True]
    files = day_files(tmp_path / "lake", "2020-08-05")
    assert set(files) == {"raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes"}
    assert all(len(names) >= 1 for names in files.values())
    for asset in files:
        assert not list((tmp_path / "lake" / asset / "_staging").glob("*")), f"{asset} has staging leftovers"
    assert tracker_of(env).get_status("preprocessing_2020-08-05") == "success"
