"""Runs through one Spark server shared by every run: PySpark 4.3's persistent local Spark Connect server.

With `SPARK_API_MODE=connect` and `SPARK_LOCAL_CONNECT_REUSE=1` the first run starts
the server (a JVM of its own, with the platform's driver settings) and later runs
connect to it, so a run pays neither a JVM start nor a cold Spark; they also join
one server-side session, whose generated code is then compiled once. Under Connect
the run's Python has no JVM: the lake's and the landing zone's file operations go
through fsspec (`pyfs.py`). Two sample days run through the Dagster CLI, each in a
process of its own: the first starts the shared server, the second reaches it as an
operator's own Connect server (`SPARK_REMOTE=sc://host:port`, its token in
`SPARK_CONNECT_AUTHENTICATE_TOKEN`), then the first day runs again. All must use that one
server, and the six datasets must equal local mode's. The server is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from functools import reduce
from pathlib import Path

import pytest
from pyspark.sql import DataFrame

from capstone_assets.resources.spark import shares_local_connect_session
from capstone_assets_tests.conftest import REPO
from capstone_assets_tests.local_mode import assert_same_datasets, materialize_locally

pytestmark = pytest.mark.e2e
DAYS = ("2020-08-05", "2020-08-06")
PYTHON = str(REPO / ".venv" / "bin" / "python")
RUN_TIMEOUT_SECONDS = 600


def server_pid(discovery: Path) -> int | None:
    if not discovery.exists():
        return None
    return json.loads(discovery.read_text()).get("pid")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def shared_server_env(tmp_path, sample_dir):
    """A run's environment on a shared local Connect server of this test's own (its discovery
    file in tmp_path); the server is stopped afterwards."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    discovery = tmp_path / "connect" / "discovery.json"
    env = {
        **os.environ,
        "SPARK_API_MODE": "connect",
        "SPARK_LOCAL_CONNECT_REUSE": "1",
        "SPARK_LOCAL_CONNECT_DISCOVERY": str(discovery),
        "CAPSTONE_LANDING_ROOT": str(sample_dir),
        "CAPSTONE_LAKE_ROOT": str(tmp_path / "connect_lake"),
        "CAPSTONE_TRACKER_URL": f"sqlite:///{tmp_path / 'tracker.db'}",
        "DAGSTER_HOME": str(home),
    }
    try:
        yield env, discovery
    finally:
        pid = server_pid(discovery)
        subprocess.run([PYTHON, "-m", "pyspark.sql.connect.local_server", "--stop"], env=env, timeout=120,
                       capture_output=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while pid and alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not (pid and alive(pid)), f"the shared Spark server {pid} is still running"


def test_runs_share_one_spark_connect_server_and_equal_local_mode(spark, sample_dir, shared_server_env, tmp_path):
    reuse, discovery = shared_server_env
    pids = []
    # The second day as an operator's own server is reached: SPARK_REMOTE (no master). The first
    # day again, in the session the first run left on the server: it reads the day's datasets
    # that run read, in their versions since.
    for day, operators in ((DAYS[0], False), (DAYS[1], True), (DAYS[0], False)):
        env = reuse
        if operators:
            server = json.loads(discovery.read_text())
            env = {k: v for k, v in env.items() if k not in ("SPARK_API_MODE", "SPARK_LOCAL_CONNECT_REUSE")}
            env.update({"SPARK_REMOTE": f"sc://{server['host']}:{server['port']}",
                        "SPARK_CONNECT_AUTHENTICATE_TOKEN": server["token"]})  # fmt: skip
        command = [str(REPO / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m",
                   "capstone_assets.definitions", "--select", "*", "--partition", day]  # fmt: skip
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_SECONDS)  # fmt: skip
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
        assert "RUN_SUCCESS" in done.stdout + done.stderr
        pids.append(server_pid(discovery))
    # One server for every run, still up after them: no later run started a JVM of its own.
    assert pids[0] is not None and pids == [pids[0]] * len(pids), pids
    assert alive(pids[0])

    local_lake = materialize_locally(sample_dir, tmp_path, DAYS)
    assert_same_datasets(spark, tmp_path / "connect_lake", local_lake, DAYS)
    report = spark.read.parquet(str(tmp_path / "connect_lake" / "eod_quote_report" / "trade_dt=2020-08-06"))
    assert report.count() == 540


SESSION_PROBE = """
from capstone_assets.resources.spark import spark_resource
session = spark_resource("local[*]").spark_session  # as a run's steps get it
print(session.session_id, session.range(5).count())
"""


REPLACEMENT_PROBE = """
import atexit, threading
from pyspark.sql import SparkSession
from capstone_assets.resources.spark import spark_resource
held = spark_resource("local[*]").spark_session
held.client.release_session()  # the server closes it, as once it has been idle for its timeout
callbacks = atexit._ncallbacks()
replacement = spark_resource("local[*]").spark_session
sessions = [replacement, spark_resource("local[*]").spark_session, SparkSession.getActiveSession()]
for _ in range(3):
    worker = threading.Thread(target=lambda: sessions.append(spark_resource("local[*]").spark_session))
    worker.start()
    worker.join()
print(held.session_id, replacement.session_id, all(s is replacement for s in sessions),
      atexit._ncallbacks() - callbacks, replacement.range(3).count())
"""


def test_processes_join_one_server_side_session_and_replace_it_once_closed(shared_server_env):
    """Each run's Python joins one session of the shared server, so the code the server
    generated for a query is reused (a session per run would compile it again). A session the
    server closed (idle past its timeout, or released) is replaced by a new one."""
    env, discovery = shared_server_env

    def session_of_a_new_process(code: str = SESSION_PROBE) -> tuple[str, str]:
        done = subprocess.run([PYTHON, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_SECONDS)  # fmt: skip
        assert done.returncode == 0, done.stderr[-4000:]
        session_id, count = done.stdout.split()
        return session_id, count

    first = session_of_a_new_process()
    pid = server_pid(discovery)
    assert session_of_a_new_process() == first and first[1] == "5"
    # The server closes the session, as it does once the session has been idle for its timeout.
    session_of_a_new_process(SESSION_PROBE + "session.stop()\n")
    replaced = session_of_a_new_process()
    assert replaced[0] != first[0] and replaced[1] == "5"
    assert session_of_a_new_process() == replaced
    # In one process, as in a code server: the server closes the session the process holds; the
    # next session asked for replaces it for every thread, and is closed at exit once.
    done = subprocess.run([PYTHON, "-c", REPLACEMENT_PROBE], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_SECONDS)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    held, replacement, one_session, closed_at_exit, count = done.stdout.split()
    assert held == replaced[0] and replacement != held, done.stdout
    # Two exit hooks for the replacement: its client's own (PySpark's) and its close; none more
    # for the five later joins.
    assert (one_session, closed_at_exit, count) == ("True", "2", "3"), done.stdout
    assert session_of_a_new_process() == (replacement, "5")
    assert server_pid(discovery) == pid


def test_a_long_running_jvm_keeps_the_generated_classes_of_more_than_a_days_queries(spark):
    """The shared server (and `capstone_assets.run` over a range) runs many days in one JVM:
    a query run again must find its generated classes, not compile them again. Spark's default
    cache keeps 100 classes, fewer than one day of both workflows makes, so days of other sizes
    in between evicted them and every run compiled 40-70 classes again (bench, 2026-11-28)."""
    compilations = spark.sparkContext._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()

    def query(n: int):
        return spark.range(3).selectExpr(f"id * {n} + {n} AS x")  # the constant is in the generated code

    assert query(1_000_003).collect()[2]["x"] == 3_000_009
    # More classes than Spark's default cache holds, in one job: a union compiles each part.
    assert len(reduce(DataFrame.unionAll, [query(n) for n in range(120)]).collect()) == 360
    compiled = compilations.getCount()
    assert query(1_000_003).collect()[2]["x"] == 3_000_009
    assert compilations.getCount() == compiled


def test_only_the_persistent_local_server_shares_a_session():
    reuse = {"SPARK_API_MODE": "connect", "SPARK_LOCAL_CONNECT_REUSE": "1"}
    assert shares_local_connect_session("local[*]", reuse)
    assert shares_local_connect_session("local[2]", {**reuse, "SPARK_LOCAL_CONNECT_REUSE": "true"})
    # Not an operator's server, a Connect server started in the process, a standalone master,
    # classic Spark, nor sessions released at each process's exit.
    assert not shares_local_connect_session("local[*]", {**reuse, "SPARK_REMOTE": "sc://h:15002"})
    assert not shares_local_connect_session("local[*]", {"SPARK_API_MODE": "connect"})
    assert not shares_local_connect_session("spark://127.0.0.1:7077", reuse)
    assert not shares_local_connect_session("local[*]", {"SPARK_LOCAL_CONNECT_REUSE": "1"})
    assert not shares_local_connect_session(
        "local[*]", {**reuse, "SPARK_CONNECT_RELEASE_SESSION_ON_EXIT": "true"}
    )
