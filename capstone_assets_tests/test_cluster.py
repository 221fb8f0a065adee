"""The two workflows on a real Spark standalone cluster: a master and one worker on 127.0.0.1.

`python -m capstone_assets.run` (what `make run` runs) runs two sample days, both workflows,
through Dagster with `SPARK_MASTER=spark://127.0.0.1:<port>`, as an operator would. Executors on the worker write the Parquet files themselves, so the lake is a folder
the worker reaches (this machine's tmp). The six datasets must equal those of local mode
(the same days materialized in this test process, on the session's local Spark, while the
cluster works), and the worker's work folder must hold the executors' logs of the runs.
Without a cluster (no Java, ports refused) the test is skipped on a laptop and fails in CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
from capstone_assets_tests.conftest import IN_CI, REPO
from capstone_assets_tests.local_mode import assert_same_datasets, materialize_locally

pytestmark = pytest.mark.e2e
DAYS = ("2020-08-05", "2020-08-06")
SPARK_HOME = Path(pyspark.__file__).parent
START_TIMEOUT_SECONDS = 120
RUN_TIMEOUT_SECONDS = 600  # a loaded CI machine: a sample day took 150 s with load average 5 on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A Spark daemon (`bin/spark-class CLASS ARGS`) in a process group of its own, logging to a file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]):
        self.name, self.log = name, log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        """The whole group: the worker's executors are its children."""
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text.splitlines()[-lines:])


def master_state(web_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/json", timeout=5) as response:
        return json.load(response)


def cluster_unavailable(message: str):
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def cluster(tmp_path):
    """(master URL, master web UI port, worker work folder); both daemons stopped afterwards."""
    port, web, worker_web = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    work = tmp_path / "worker"
    work.mkdir()
    daemons = []
    try:
        daemons.append(Daemon("master", [
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
            "--webui-port", str(web),
        ], tmp_path / "master.log", env))  # fmt: skip
        daemons.append(Daemon("worker", [
            "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1",
            "--cores", "1", "--memory", "1g", "--webui-port", str(worker_web), "--work-dir", str(work),
        ], tmp_path / "worker.log", env))  # fmt: skip
        deadline, state = time.monotonic() + START_TIMEOUT_SECONDS, None
        while time.monotonic() < deadline:
            if any(d.process.poll() is not None for d in daemons):
                break
            try:
                state = master_state(web)
            except OSError:
                state = None
            if state and any(w["state"] == "ALIVE" for w in state.get("workers", [])):
                break
            time.sleep(0.5)
        else:
            state = None
        if not state or not any(w["state"] == "ALIVE" for w in state.get("workers", [])):
            cluster_unavailable(
                f"the Spark standalone cluster did not start within {START_TIMEOUT_SECONDS} s "
                f"(master state: {state})\n" + "\n".join(d.tail() for d in daemons)
            )
        yield f"spark://127.0.0.1:{port}", web, work, daemons
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


class Scripts(threading.Thread):
    """The operator's runner for both days, in the background, in a process group of its own:
    `stop()` ends it with its Dagster and Spark children."""

    def __init__(self, env: dict[str, str], log: Path):
        super().__init__()
        self.env, self.log, self.failures, self.stopped = env, log, [], threading.Event()
        self.current: subprocess.Popen | None = None

    def run(self) -> None:
        # Both days and both workflows in one process (`make run`'s runner): one JVM, one
        # Spark application on the cluster, instead of a JVM and an application per run.
        command = [str(REPO / ".venv" / "bin" / "python"), "-m", "capstone_assets.run",
                   "--from", DAYS[0], "--to", DAYS[-1]]  # fmt: skip
        with open(self.log, "w") as out:
            started = time.monotonic()
            self.current = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = self.current.wait(timeout=RUN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.stop()
                code = "timeout"
            out.write(f"=== {' '.join(command[1:])}: exit {code} in {time.monotonic() - started:.1f} s\n")
            if code != 0:
                self.failures.append(f"capstone_assets.run: exit {code}")

    def stop(self) -> None:
        self.stopped.set()
        if self.current is not None and self.current.poll() is None:
            os.killpg(self.current.pid, signal.SIGKILL)
            self.current.wait()


def test_two_days_on_a_standalone_cluster_equal_local_mode(spark, sample_dir, cluster, tmp_path):
    master, web, work, daemons = cluster
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # Spark settings are configuration, not code: spark-defaults.conf in SPARK_CONF_DIR. A few
    # shuffle partitions suit the sample (the code sets them for local masters only).
    conf = tmp_path / "spark_conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text("spark.sql.shuffle.partitions 4\nspark.ui.enabled false\n")
    python = str(REPO / ".venv" / "bin" / "python")
    env = {
        **os.environ,
        "SPARK_CONF_DIR": str(conf),
        "SPARK_MASTER": master,
        "SPARK_LOCAL_IP": "127.0.0.1",  # the driver, as the executors reach it
        "PYSPARK_PYTHON": python,  # executors and driver on the same Python
        "PYSPARK_DRIVER_PYTHON": python,
        "CAPSTONE_LANDING_ROOT": str(sample_dir),
        "CAPSTONE_LAKE_ROOT": str(tmp_path / "cluster_lake"),
        "CAPSTONE_TRACKER_URL": f"sqlite:///{tmp_path / 'tracker.db'}",
        "DAGSTER_HOME": str(dagster_home),
    }
    scripts = Scripts(env, tmp_path / "scripts.log")
    scripts.start()
    try:
        # Meanwhile local mode: the same days through the same assets, on this session's local Spark.
        local_lake = materialize_locally(sample_dir, tmp_path, DAYS)
        scripts.join()
    finally:
        scripts.stop()
        scripts.join()
    assert not scripts.failures, (
        f"{scripts.failures}\n{scripts.log.read_text()[-6000:]}\n" + "\n".join(d.tail() for d in daemons)
    )

    assert_same_datasets(spark, tmp_path / "cluster_lake", local_lake, DAYS)
    report = spark.read.parquet(str(tmp_path / "cluster_lake" / "eod_quote_report" / "trade_dt=2020-08-06"))
    assert report.count() == 540

    # The work ran on the worker: the runner's one application, with its executor there.
    deadline = time.monotonic() + 30  # the master notes an application's end once its driver is gone
    while len(apps := master_state(web)["completedapps"]) < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(apps) == 1, apps
    executor_logs = sorted(work.glob("app-*/*/stderr"))
    assert {p.parent.parent.name for p in executor_logs} == {a["id"] for a in apps}
    assert any("Finished task" in p.read_text(errors="replace") for p in executor_logs)
