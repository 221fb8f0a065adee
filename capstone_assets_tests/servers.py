"""The production setup for end-to-end tests: `dagster-webserver` and `capstone-daemon` as subprocesses.

`capstone-daemon` is `dagster-daemon` with the backfill loop's interval set
(`CAPSTONE_BACKFILL_INTERVAL_SECONDS`, here 5 s instead of Dagster's 30 s).

Dagster's storage is a fresh PostgreSQL database configured by the repo's own
`dagster.yaml` (QueuedRunCoordinator, run monitoring), the tracker is a fresh
table on the same server, and Spark runs `local[2]`. Nothing is mocked: runs go
through the queue, the backfill daemon and the run workers as in production.

In a test module::

    from capstone_assets.demo import write_demo_landing
    from capstone_assets_tests.servers import dagster_servers_fixture

    servers = dagster_servers_fixture(write_demo_landing, scope="module")

    def test_backfill(servers):
        backfill_id = servers.launch_backfill(["2020-08-06"], [["trades"]])
        result = servers.wait_for_backfill(backfill_id, timeout=900)
        assert result.status == "COMPLETED_SUCCESS", servers.log_tails()
        assert servers.materialized_partitions(["trades"]) == ["2020-08-06"]

Or by hand: `with DagsterServers(postgres_url, landing_root, lake_root, workdir) as servers: ...`.
`servers.url` is the UI, `servers.tracker()` the job tracker the runs write to.
When a test of the module failed, the fixture prints the tail of both logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from capstone_assets.resources import TrackerResource
from capstone_assets_tests.conftest import REPO

BIN = REPO / ".venv" / "bin"
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
# What the UI's `LaunchPartitionBackfill` mutation (BackfillUtils.tsx) asks back.
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on NoModeProvidedError { message }
    ... on RunConfigValidationInvalid { pipelineName errors { message path reason } }
    ... on PythonError { message stack }
  }
}
"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status partitionNames numPartitions isAssetBackfill
      error { message stack }
      runs { runId status tags { key value } }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message stack }
  }
}
"""
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
PARTITION_STATUSES = """
query PartitionStatuses($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { startKey endKey status } }
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}
"""
METADATA_ENTRY = """
fragment Entry on MetadataEntry {
  __typename label
  ... on IntMetadataEntry { intValue intRepr }
  ... on FloatMetadataEntry { floatValue floatRepr }
  ... on TextMetadataEntry { text }
  ... on MarkdownMetadataEntry { mdStr }
  ... on JsonMetadataEntry { jsonString }
  ... on BoolMetadataEntry { boolValue }
  ... on PathMetadataEntry { path }
  ... on UrlMetadataEntry { url }
  ... on TimestampMetadataEntry { timestamp }
  ... on TableSchemaMetadataEntry { schema { columns { name type } } }
}
"""
MATERIALIZATIONS = (
    """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      assetMaterializations(partitions: $partitions) {
        runId partition timestamp metadataEntries { ...Entry }
      }
    }
  }
}
"""
    + METADATA_ENTRY
)
CHECK_EXECUTIONS = (
    """
query CheckExecutions($key: AssetKeyInput!, $check: String!, $partition: String, $limit: Int!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: $limit) {
    runId status partition timestamp
    evaluation { partition success severity description metadataEntries { ...Entry } }
  }
}
"""
    + METADATA_ENTRY
)
CHECK_NAMES = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { assetChecksOrError { __typename ... on AssetChecks { checks { name } } } }
  }
}
"""


class GraphQLError(AssertionError):
    """The webserver answered with GraphQL errors, or with an error member of a result union."""


@dataclass(frozen=True)
class BackfillRun:
    run_id: str
    status: str
    tags: dict[str, str]

    @property
    def partition(self) -> str | None:
        return self.tags.get("dagster/partition")


@dataclass(frozen=True)
class BackfillResult:
    backfill_id: str
    status: str
    seconds: float  # from wait_for_backfill's start
    runs: list[BackfillRun]
    error: str | None

    def __str__(self) -> str:
        runs = ", ".join(f"{r.partition}:{r.status}" for r in self.runs)
        return f"backfill {self.backfill_id} {self.status} after {self.seconds:.0f}s; runs [{runs}]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return f"({path} is missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _key(path: str | Sequence[str]) -> dict:
    return {"path": [path] if isinstance(path, str) else list(path)}


def _metadata(entries: list[dict]) -> dict:
    """`label -> value`: the typed value of each entry (a table schema as `{column: type}`)."""
    values = {}
    for entry in entries:
        fields = {k: v for k, v in entry.items() if k not in ("__typename", "label", "intRepr", "floatRepr")}
        if "schema" in fields:
            values[entry["label"]] = {c["name"]: c["type"] for c in fields["schema"]["columns"]}
        elif "jsonString" in fields:
            values[entry["label"]] = json.loads(fields["jsonString"])
        elif entry["__typename"] == "IntMetadataEntry" and fields["intValue"] is None:
            values[entry["label"]] = int(entry["intRepr"])  # over 32 bits
        else:
            values[entry["label"]] = next(iter(fields.values()), None)
    return values


def ui_backfill_params(
    partition_names: Sequence[str], asset_selection: Sequence[str | Sequence[str]]
) -> dict:
    """The `backfillParams` the UI's partition dialog sends for assets and a set of partitions.

    As `onLaunchAsBackfill` in LaunchAssetChoosePartitionsDialog.tsx (Dagster 1.13) builds them
    from the asset graph or the catalog: the dialog's job is the first job common to the
    assets, the hidden `__ASSET_JOB` (first in every asset's `jobNames`), so there is no
    `selector` (only a job's own page sends its partition set), never `partitionsByAssets`,
    and no `runConfigData` without a saved launchpad config. test_browser.py compares these
    with what the real UI sends. `asset_selection` holds asset names or key paths.
    """
    return {
        "tags": [{"key": "dagster/from_ui", "value": "true"}],
        "assetSelection": [_key(key) for key in asset_selection],
        "partitionNames": list(partition_names),
        "fromFailure": False,
    }


class DagsterServers:
    """A webserver and a daemon on a fresh PostgreSQL instance; `start()` or `with`, then `stop()`."""

    def __init__(
        self,
        postgres_url: str,
        landing_root: Path,
        lake_root: Path,
        workdir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        start_timeout: float = 180,
        workspace: Path = REPO / "workspace.yaml",
    ):
        self.postgres_url = postgres_url
        self.workdir = Path(workdir)
        self.dagster_home = self.workdir / "dagster_home"
        self.webserver_log = self.workdir / "webserver.log"
        self.daemon_log = self.workdir / "daemon.log"
        self.database = f"capstone_dagster_{uuid.uuid4().hex[:8]}"
        self.database_url = postgres_url.rsplit("/", 1)[0] + f"/{self.database}"
        self.tracker_table = f"job_tracker_ui_{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.workspace = Path(workspace)  # the repo's own, or a test's code location
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_POSTGRES_URL": self.database_url,
            "CAPSTONE_LANDING_ROOT": str(landing_root),
            "CAPSTONE_LAKE_ROOT": str(lake_root),
            "CAPSTONE_TRACKER_URL": postgres_url,
            "CAPSTONE_TRACKER_TABLE": self.tracker_table,
            "CAPSTONE_UI_URL": self.url,
            "CAPSTONE_ALERT_WEBHOOK_URL": "",
            "SPARK_MASTER": "local[2]",
            # capstone-daemon: dagster-daemon with a 5-second backfill loop instead of 30.
            "CAPSTONE_BACKFILL_INTERVAL_SECONDS": "5",
            **(extra_env or {}),
        }
        self._processes: dict[str, subprocess.Popen] = {}
        self._database_created = False

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> DagsterServers:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> DagsterServers:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", self.dagster_home / "dagster.yaml")
        self._admin(f"CREATE DATABASE {self.database}")
        self._database_created = True
        try:
            workspace = str(self.workspace)
            self._spawn(
                "webserver",
                [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(self.port)],
                self.webserver_log,
            )
            self._spawn("daemon", [str(BIN / "capstone-daemon"), "run", "-w", workspace], self.daemon_log)
            self._wait_until_ready()
        except BaseException as error:
            tails = self.log_tails()
            self.stop()
            if isinstance(error, Exception):
                raise RuntimeError(f"Dagster did not start: {error}\n{tails}") from error
            raise
        return self

    def _spawn(self, name: str, command: list[str], log: Path) -> None:
        with open(log, "wb") as output:  # the child keeps its own descriptor
            self._processes[name] = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends the code servers and runs too
            )  # fmt: skip

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        unhealthy: list[str] = ["(no answer yet)"]
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"dagster {name} exited with code {process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                    pass
                statuses = self.graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
                unhealthy = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
                if statuses and not unhealthy:
                    return
            except (OSError, GraphQLError):
                pass
            time.sleep(1)
        raise TimeoutError(f"not ready after {self.start_timeout:.0f}s; daemons not healthy: {unhealthy}")

    def stop(self) -> None:
        """Ends both process groups (runs included), then drops the database. Safe to call twice."""
        for process in self._processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=30)
            _signal_group(process, signal.SIGKILL)  # children left behind by a clean exit
        self._processes.clear()
        if self._database_created:
            self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            self._database_created = False
            engine = sa.create_engine(self.postgres_url)
            with engine.begin() as connection:
                connection.execute(sa.text(f"DROP TABLE IF EXISTS {self.tracker_table}"))
            engine.dispose()

    def _admin(self, statement: str) -> None:
        engine = sa.create_engine(self.postgres_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(statement))
        finally:
            engine.dispose()

    def log_tails(self, lines: int = 60) -> str:
        return (
            f"--- webserver log ({self.webserver_log}) ---\n{_tail(self.webserver_log, lines)}\n"
            f"--- daemon log ({self.daemon_log}) ---\n{_tail(self.daemon_log, lines)}"
        )

    def tracker(self) -> TrackerResource:
        return TrackerResource(url=self.postgres_url, table=self.tracker_table)

    # -- GraphQL -----------------------------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        """The `data` of the answer; raises `GraphQLError` with the errors when there are any."""
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:  # a query the schema rejects comes back as a 400
            answer = json.loads(error.read() or b"{}")
            if not answer.get("errors"):
                raise
        if answer.get("errors"):
            raise GraphQLError(json.dumps(answer["errors"], indent=2))
        return answer["data"]

    def launch_backfill(
        self, partition_names: Sequence[str], asset_selection: Sequence[str | Sequence[str]]
    ) -> str:
        """Launches a backfill as the UI's *Materialize* dialog does (see `ui_backfill_params`):
        the backfill id, or `GraphQLError` with the error member the mutation answered."""
        params = ui_backfill_params(partition_names, asset_selection)
        result = self.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"launchPartitionBackfill: {json.dumps(result, indent=2)}")
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        result = self.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"partitionBackfillOrError: {json.dumps(result, indent=2)}")
        return result

    def wait_for_backfill(self, backfill_id: str, timeout: float = 1200, poll: float = 5) -> BackfillResult:
        """Polls until the backfill's status is terminal; raises `TimeoutError` with both logs' tails."""
        started = time.monotonic()
        while True:
            backfill = self.backfill(backfill_id)
            if backfill["status"] in TERMINAL:
                break
            if time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"backfill {backfill_id} still {backfill['status']} after {timeout:.0f}s; runs "
                    f"{[(r['runId'], r['status']) for r in backfill['runs']]}\n{self.log_tails()}"
                )
            time.sleep(poll)
        runs = [
            BackfillRun(r["runId"], r["status"], {t["key"]: t["value"] for t in r["tags"]})
            for r in backfill["runs"]
        ]
        error = backfill["error"] and backfill["error"]["message"]
        return BackfillResult(backfill_id, backfill["status"], time.monotonic() - started, runs, error)

    def _asset_node(self, query: str, key: str | Sequence[str], **variables) -> dict:
        node = self.graphql(query, {"key": _key(key), **variables})["assetNodeOrError"]
        if node.get("__typename") != "AssetNode":
            raise GraphQLError(f"assetNodeOrError({key}): {node}")
        return node

    def partition_statuses(self, key: str | Sequence[str]) -> list[dict]:
        """The asset's time-partition ranges: `[{"startKey", "endKey", "status"}]`, status
        MATERIALIZED or MATERIALIZING (unmaterialized and failed days are not ranges)."""
        statuses = self._asset_node(PARTITION_STATUSES, key)["assetPartitionStatuses"]
        if statuses["__typename"] != "TimePartitionStatuses":
            raise GraphQLError(f"{key} is not time-partitioned: {statuses}")
        return statuses["ranges"]

    def materialized_partitions(self, key: str | Sequence[str]) -> list[str]:
        """The materialized partition keys, in order (ranges expanded over the asset's partitions)."""
        from capstone_assets.partitions import trading_day_partitions

        days = trading_day_partitions.get_partition_keys()
        found = []
        for r in self.partition_statuses(key):
            if r["status"] == "MATERIALIZED":
                found += days[days.index(r["startKey"]) : days.index(r["endKey"]) + 1]
        return found

    def materializations(self, key: str | Sequence[str], partition: str) -> list[dict]:
        """The partition's materializations, newest first: `{"runId", "timestamp", "metadata"}`
        with `metadata` as `label -> value` (e.g. `dagster/row_count -> 1234`)."""
        events = self._asset_node(MATERIALIZATIONS, key, partitions=[partition])["assetMaterializations"]
        return [
            {"runId": e["runId"], "timestamp": e["timestamp"], "metadata": _metadata(e["metadataEntries"])}
            for e in events
        ]

    def materialization_metadata(self, key: str | Sequence[str], partition: str) -> dict:
        """The metadata of the partition's latest materialization (`{}` when there is none)."""
        events = self.materializations(key, partition)
        return events[0]["metadata"] if events else {}

    def check_names(self, key: str | Sequence[str]) -> list[str]:
        checks = self._asset_node(CHECK_NAMES, key)["assetChecksOrError"]
        if checks["__typename"] != "AssetChecks":
            raise GraphQLError(f"assetChecksOrError({key}): {checks}")
        return sorted(c["name"] for c in checks["checks"])

    def check_executions(
        self, key: str | Sequence[str], check_name: str, partition: str | None = None, limit: int = 100
    ) -> list[dict]:
        """The check's executions, newest first (of one partition when given): `{"runId", "status",
        "partition", "evaluation": {"partition", "success", "severity", "description", "metadata"}}`."""
        executions = self.graphql(
            CHECK_EXECUTIONS, {"key": _key(key), "check": check_name, "partition": partition, "limit": limit}
        )["assetCheckExecutions"]
        for execution in executions:
            evaluation = execution["evaluation"]
            if evaluation is not None:
                evaluation["metadata"] = _metadata(evaluation.pop("metadataEntries"))
        return executions


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the leader's pid
    except ProcessLookupError:
        pass


def dagster_servers_fixture(
    landing: Callable[[Path], object] | None = None, *, scope: str = "module", **options
):
    """A pytest fixture of `DagsterServers`; `landing(path)` writes the landing zone first.

    Needs the `postgres_url` fixture (conftest.py). The folders live under pytest's
    temporary directory; the logs stay there. `options` go to `DagsterServers`.
    """

    @pytest.fixture(scope=scope)
    def servers(request, postgres_url, tmp_path_factory):
        base = tmp_path_factory.mktemp("dagster_servers")
        landing_root = base / "landing"
        landing_root.mkdir()
        if landing is not None:
            landing(landing_root)
        failed_before = request.session.testsfailed
        with DagsterServers(postgres_url, landing_root, base / "lake", base, **options) as running:
            yield running
            if request.session.testsfailed > failed_before:
                reporter = request.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(f"\n{running.log_tails()}")

    return servers
