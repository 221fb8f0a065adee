"""The two workflows on a real Spark standalone cluster: a master and one worker on 127.0.0.1.

`python -m capstone_assets.run` (what `make run` runs) runs two sample days, both workflows,
through Dagster with `SPARK_MASTER=spark://127.0.0.1:<port>`, as an operator would. Executors on the worker write the Parquet files themselves, so the lake is a folder
the worker reaches (this machine's tmp). The six datasets must equal those of local mode
(the same days materialized in this test process, on the session's local Spark, while the
cluster works), and the worker's work folder must hold the executors' logs of the runs.
Without a cluster (no Java, ports refused) the test is skipped on a laptop and fails in CI.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
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


# What the master logs once it has bound its ports (Spark's Master and Utils.startServiceOnPort).
MASTER_URL_LINE = re.compile(r"Starting Spark master at (spark://\S+)")
MASTER_UI_LINE = re.compile(r"Successfully started service 'MasterUI' on port (\d+)")


def bound_master(master: Daemon) -> tuple[str, int] | None:
    text = master.log.read_text(errors="replace") if master.log.exists() else ""
    url, ui = MASTER_URL_LINE.search(text), MASTER_UI_LINE.search(text)
    return (url.group(1), int(ui.group(1))) if url and ui else None


def has_a_live_worker(state) -> bool:
    return isinstance(state, dict) and any(w["state"] == "ALIVE" for w in state.get("workers", []))


def wait_for_a_live_worker(web_port: int, daemons: list[Daemon], deadline: float) -> dict | str | None:
    """The master's state once a worker is ALIVE; else, at the deadline or once a daemon has
    exited, the last state seen: None while the UI does not answer yet (the master logs the UI's
    port before its pages answer), a text when something else answered on the port."""
    state = None
    while time.monotonic() < deadline and not any(d.process.poll() is not None for d in daemons):
        try:
            state = master_state(web_port)
        except OSError:  # refused, or no answer within the timeout: not up yet
            state = None
        except ValueError as error:  # not the master's JSON: then something else holds the port
            return f"port {web_port} did not answer the master's JSON: {error}"
        if has_a_live_worker(state):
            return state
        time.sleep(0.5)
    return state


@pytest.fixture
def cluster(tmp_path):
    """(master URL, master web UI port, worker work folder, daemons); both daemons stopped afterwards.

    Every port is 0: the daemons bind free ones themselves and the master's log says which.
    A port picked here and handed over could be taken in between (another module's Dagster
    webserver picks its port the same way), and Spark would then quietly move to the next one.
    """
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        # No REST submission server: it would take the fixed port 6066.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
    }
    work = tmp_path / "worker"
    work.mkdir()
    daemons, state, bound = [], None, None
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        master = Daemon("master", [
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "0", "--webui-port", "0",
        ], tmp_path / "master.log", env)  # fmt: skip
        daemons.append(master)
        while time.monotonic() < deadline and master.process.poll() is None:
            if bound := bound_master(master):
                break
            time.sleep(0.2)
        if bound:
            daemons.append(Daemon("worker", [
                "org.apache.spark.deploy.worker.Worker", bound[0], "--host", "127.0.0.1", "--port", "0",
                "--cores", "1", "--memory", "1g", "--webui-port", "0", "--work-dir", str(work),
            ], tmp_path / "worker.log", env))  # fmt: skip
        if bound:
            state = wait_for_a_live_worker(bound[1], daemons, deadline)
        if not has_a_live_worker(state):
            cluster_unavailable(
                f"the Spark standalone cluster did not start within {START_TIMEOUT_SECONDS} s "
                f"(master bound to {bound}; master state: {state})\n" + "\n".join(d.tail() for d in daemons)
            )
        yield bound[0], bound[1], work, daemons
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


def answering(body: bytes, content_type: str) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler that answers every GET with `body`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


# Spark's default ports: the master, its web UI, the worker's web UI, the REST submission server.
SPARK_DEFAULT_PORTS = (7077, 8080, 8081, 6066)


@pytest.fixture
def ports_taken_by_a_web_server(monkeypatch):
    """A web server that answers any path with an HTML page (as another module's Dagster
    webserver does) on a free port, handed out as the one the fixture picks (the fixture once
    picked its ports and let the daemons bind them later: a race), and on Spark's default ports
    that are free here."""

    Page = answering(b"<!doctype html><html><body>not Spark</body></html>", "text/html")
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)]
    for port in SPARK_DEFAULT_PORTS:
        try:
            servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", port), Page))
        except OSError:
            pass  # taken already: by something that is not this cluster either
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = [server.server_address[1] for server in servers]
    monkeypatch.setitem(globals(), "free_port", lambda: ports[0])
    try:
        yield ports
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_cluster_comes_up_when_other_servers_hold_ports_first(ports_taken_by_a_web_server, cluster):
    master, web, _, _ = cluster
    taken = set(ports_taken_by_a_web_server)
    assert web not in taken
    assert int(master.rsplit(":", 1)[1]) not in taken
    state = master_state(web)
    assert state["url"] == master
    assert [w["state"] for w in state["workers"]] == ["ALIVE"]


def test_the_wait_for_the_worker_outlasts_a_master_ui_that_does_not_answer_yet():
    """The master logs its UI's port before the UI answers: a refused connection means "wait",
    not a failed fixture (the error of a clean-clone `make test`)."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    alive = json.dumps({"url": "spark://127.0.0.1:1", "workers": [{"state": "ALIVE"}]}).encode()
    Master = answering(alive, "application/json")
    with pytest.raises(OSError):
        master_state(port)  # the fault holds: nothing answers yet
    servers: list[http.server.ThreadingHTTPServer] = []

    def start_late():
        servers.append(http.server.ThreadingHTTPServer(("127.0.0.1", port), Master))
        threading.Thread(target=servers[0].serve_forever, daemon=True).start()

    late = threading.Timer(2, start_late)
    late.start()
    try:
        state = wait_for_a_live_worker(port, [], time.monotonic() + 60)
    finally:
        late.cancel()
        late.join()
        for server in servers:
            server.shutdown()
            server.server_close()
    assert servers, "the late master UI never started"
    assert has_a_live_worker(state), state
