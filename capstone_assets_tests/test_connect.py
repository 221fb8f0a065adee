"""Runs through one Spark server shared by every run: PySpark 4.3's persistent local Spark Connect server.

With `SPARK_API_MODE=connect` and `SPARK_LOCAL_CONNECT_REUSE=1` the first run starts
the server (a JVM of its own, with the platform's driver settings) and later runs
connect to it, so a run pays neither a JVM start nor a cold Spark. Under Connect
the run's Python has no JVM: the lake's and the landing zone's file operations go
through fsspec (`pyfs.py`). Two sample days run through the Dagster CLI, each in a
process of its own: the first starts the shared server, the second reaches it as an
operator's own Connect server (`SPARK_REMOTE=sc://host:port`, its token in
`SPARK_CONNECT_AUTHENTICATE_TOKEN`). Both must use that one server, and the six
datasets must equal local mode's. The server is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

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
    env, discovery = shared_server_env
    pids = []
    for day in DAYS:
        if pids:  # the second day as an operator's own server is reached: SPARK_REMOTE (no master)
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
    # One server for both runs, still up after them: the second run started no JVM of its own.
    assert pids[0] is not None and pids == [pids[0]] * len(DAYS), pids
    assert alive(pids[0])

    local_lake = materialize_locally(sample_dir, tmp_path, DAYS)
    assert_same_datasets(spark, tmp_path / "connect_lake", local_lake, DAYS)
    report = spark.read.parquet(str(tmp_path / "connect_lake" / "eod_quote_report" / "trade_dt=2020-08-06"))
    assert report.count() == 540
