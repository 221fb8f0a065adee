"""The Spark session every asset shares, started lazily (after the tracker's claim).

`dagster_pyspark.LazyPySparkResource` creates the session on first use with
`SparkSession.builder.getOrCreate()`, so all steps of a run (in-process
executor) and a test session's fixture share one JVM.

A standalone master (`spark://host:port`) that cannot be reached would cost a
JVM start and Spark's three 20-second registration attempts before a "stopped
SparkContext" error that does not name the cause. The resource first opens a
TCP connection to the master and fails within seconds, naming SPARK_MASTER.

On PySpark's persistent local Spark Connect server (`SPARK_API_MODE=connect`,
`SPARK_LOCAL_CONNECT_REUSE=1`) every process joins one server-side session (see
`shared_local_connect_session`).
"""

from __future__ import annotations

import atexit
import os
import socket
import tempfile
import threading
import uuid
from pathlib import Path

from dagster_pyspark import LazyPySparkResource
from dagster_pyspark.resources import spark_session_from_config
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession

JARS_DIR = Path(__file__).resolve().parents[2] / "jars"
PROBE_TIMEOUT_SECONDS = 5.0
# Local mode runs every task in the driver's JVM, whose heap Spark sizes at 1 GiB: a day of
# 16 M events then fails ingestion with "Java heap space" (make bench). 2 GiB carries it
# (measured on the shared server: 180 s, 3.3x the 4 M day), and the JVM's own memory beyond its
# heap (code, metaspace, buffers: about 0.7 GiB) comes on top: a 4 M day then peaks under 3 GiB.
LOCAL_DRIVER_MEMORY = "2g"
# One machine, so CPU is what runs short, not memory or network (JFR profiles of a 4 M-event
# day, benchmarks/bench.py): ingestion's cache of the parsed lines is kept uncompressed (its
# compression statistics box every value into a hash map: a sixth of ingestion's CPU), and
# shuffle files stay on the local disk uncompressed. The settings of a cluster are its own.
# A JVM that runs many days (the shared Connect server, `capstone_assets.run` over a range) keeps
# every query's generated classes: Spark's cache of them holds 100 by default, fewer than one day
# of both workflows makes (about 90 on the driver and in its tasks, more at other data sizes),
# so days of different sizes in turn evicted each other's and every run compiled 40-70 classes
# again, and the JIT their code after them. A class is some kilobytes.
CODEGEN_CACHE_ENTRIES = 2000
LOCAL_SPEEDUPS = {
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    "spark.shuffle.compress": "false",
    "spark.sql.codegen.cache.maxEntries": str(CODEGEN_CACHE_ENTRIES),
}


# Beside PySpark's discovery file of the persistent local Connect server: the id of the
# server-side session every process joins.
SHARED_SESSION_FILE = "capstone-shared-session"
SESSION_CLOSED = "INVALID_HANDLE.SESSION_CLOSED"


class SparkMasterUnreachable(RuntimeError):
    """No host of a `spark://` master accepts connections."""


def jar_paths(jars_dir: Path = JARS_DIR) -> list[str]:
    return sorted(str(p) for p in jars_dir.glob("*.jar")) if jars_dir.is_dir() else []


def driver_memory_configured(environ=os.environ) -> bool:
    """Whether the operator sized the driver: `SPARK_DRIVER_MEMORY`, or `spark.driver.memory`
    in the `spark-defaults.conf` of `SPARK_CONF_DIR` (else of `SPARK_HOME/conf`)."""
    if environ.get("SPARK_DRIVER_MEMORY"):
        return True
    conf_dir = environ.get("SPARK_CONF_DIR") or (
        str(Path(environ["SPARK_HOME"]) / "conf") if environ.get("SPARK_HOME") else None
    )
    defaults = Path(conf_dir) / "spark-defaults.conf" if conf_dir else None
    if defaults is None or not defaults.is_file():
        return False
    return any(line.split()[:1] == ["spark.driver.memory"] for line in defaults.read_text().splitlines())


def spark_config(master: str, jars_dir: Path = JARS_DIR) -> dict[str, str]:
    config = {
        "spark.master": master,
        "spark.app.name": "capstone_assets",
        # Exchange times are naive wall-clock times: nothing may shift them.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.ansi.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        # The end-of-day load keeps each record key's first row (`row_number() = 1`); Spark's
        # top-k rewrite would sort every task's rows once more before the shuffle, which pays
        # only when keys repeat a lot, not for a day's few corrections (transforms/load.py).
        "spark.sql.optimizer.windowGroupLimitThreshold": "-1",
    }
    if uses_spark_connect():
        # A Connect session caches the plans of data source reads: a path read again after its
        # day was rewritten (a day run again, in a session shared by runs) would be read as
        # listed before, its files gone. Every read lists its files again.
        config["spark.connect.session.planCache.enabled"] = "false"
    if os.environ.get("SPARK_REMOTE"):
        # A Spark Connect server of the operator's (SPARK_REMOTE=sc://…) has its master, jars and
        # memory already; PySpark refuses a master beside it. The SQL settings above still apply.
        del config["spark.master"]
        return config
    jars = jar_paths(jars_dir)
    if jars:
        config["spark.jars"] = ",".join(jars)
    if master.startswith("local"):
        # Small local data: 200 shuffle partitions would be 200 tiny files a day.
        config["spark.sql.shuffle.partitions"] = "8"
        config.update(LOCAL_SPEEDUPS)
        if not driver_memory_configured():  # a setting here would override the operator's
            config["spark.driver.memory"] = LOCAL_DRIVER_MEMORY
    return config


def check_master(master: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Raises SparkMasterUnreachable unless some host of a `spark://h1:p1,h2:p2` master accepts a
    connection; other masters (local, yarn, k8s) are left to Spark."""
    if not master.startswith("spark://"):
        return
    failures = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return
        except (OSError, ValueError) as error:
            failures.append(f"{address}: {error}")
    raise SparkMasterUnreachable(
        f"SPARK_MASTER={master} is not reachable ({'; '.join(failures)}): start the Spark master, "
        "or set SPARK_MASTER to a reachable spark://host:port (or local[*])"
    )


def uses_spark_connect(environ=os.environ) -> bool:
    """Whether sessions go to a Spark Connect server: `SPARK_REMOTE`, or `SPARK_API_MODE=connect`
    (with `SPARK_LOCAL_CONNECT_REUSE=1`, PySpark's shared local server)."""
    return bool(environ.get("SPARK_REMOTE")) or environ.get("SPARK_API_MODE", "").lower() == "connect"


def shares_local_connect_session(master: str, environ=os.environ) -> bool:
    """Whether a session for `master` goes to PySpark's persistent local Connect server
    (`SPARK_API_MODE=connect`, `SPARK_LOCAL_CONNECT_REUSE=1`, a local master, no `SPARK_REMOTE`),
    to share its session: not when each process releases its session at exit."""
    return (
        not environ.get("SPARK_REMOTE")
        and environ.get("SPARK_CONNECT_RELEASE_SESSION_ON_EXIT", "").lower() not in ("1", "true")
        and environ.get("SPARK_API_MODE", "").lower() == "connect"
        and environ.get("SPARK_LOCAL_CONNECT_REUSE", "").lower() in ("1", "true")
        and master.startswith("local")
    )


def session_from_config(config: dict[str, str]) -> SparkSession:
    """The process's Spark session for `config` (see `spark_config`)."""
    if shares_local_connect_session(config.get("spark.master", "")):
        return shared_local_connect_session(config)
    return spark_session_from_config(config)


def shared_local_connect_session(config: dict[str, str]) -> SparkSession:
    """A session on PySpark's persistent local Connect server (started with `config` if none
    runs), joining the one server-side session every process on that server shares.

    The server isolates each Connect session's classes in a class loader of its own, and Spark
    caches the code it generates per class loader: a session per run would compile and JIT
    every query's code again, per run (measured: the sample day took 11-20 CPU-seconds of the
    server; in the shared session 4-5). Runs set the same SQL settings and keep no state of
    their own in the session (no temporary views, no settings changed while running). The
    server closes a session idle past its timeout (60 minutes) and then refuses its id: a new
    one is made and recorded."""
    from pyspark.sql.connect.local_server import Discovery, reuse_or_start_local_connect_server
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    opts = {key: value for key, value in config.items() if key != "spark.master"}
    url = reuse_or_start_local_connect_server(config["spark.master"], dict(opts))  # sets the token
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"  # as PySpark's builder does: Connect's functions
    id_file = Path(Discovery().directory) / SHARED_SESSION_FILE

    def builder(session_id: str):
        return RemoteSparkSession.builder.remote(f"{url}/;session_id={session_id}").config(map=opts)

    try:
        session = builder(_recorded_session_id(id_file) or _new_session_id(id_file)).getOrCreate()
    except PySparkException as error:
        if error.getCondition() != SESSION_CLOSED:
            raise
        # The closed session is still this process's default session (and this thread's active
        # one): stopped without a release (the server has closed it), it leaves both, and its
        # channel is closed now, not in its finalizer. `create` then makes the new one both.
        for closed in {RemoteSparkSession.getActiveSession(), RemoteSparkSession._get_default_session()} - {None}:
            closed.release_session_on_close = False
            closed.stop()
        session = builder(_new_session_id(id_file)).create()
    # Closed at exit, while gRPC's threads still run: a session left to its finalizer can wait
    # forever in gRPC's close (seen once a closed session had been replaced). Once per client:
    # a code server's sensors join the session again on every tick.
    with _CLOSED_AT_EXIT_LOCK:
        if session.client not in _CLOSED_AT_EXIT:
            _CLOSED_AT_EXIT.add(session.client)
            atexit.register(session.client.close)
    return session


_CLOSED_AT_EXIT: set = set()
_CLOSED_AT_EXIT_LOCK = threading.Lock()


def _recorded_session_id(id_file: Path) -> str | None:
    try:
        return str(uuid.UUID(id_file.read_text().strip()))
    except (OSError, ValueError):
        return None


def _new_session_id(id_file: Path) -> str:
    session_id = str(uuid.uuid4())
    descriptor, partial = tempfile.mkstemp(dir=id_file.parent, prefix=f".{id_file.name}.")
    with os.fdopen(descriptor, "w") as out:
        out.write(session_id)
    os.replace(partial, id_file)  # whole or absent to a concurrent reader
    return session_id


class SparkResource(LazyPySparkResource):
    """`LazyPySparkResource` that checks a standalone master before starting the JVM."""

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def _init_session(self) -> None:
        if self._spark_session is None:
            from pyspark import SparkContext

            if SparkContext._active_spark_context is None:  # an existing session is reused as is
                check_master(self.spark_config.get("spark.master", ""))
            self._spark_session = session_from_config(self.spark_config)


def spark_resource(master: str) -> SparkResource:
    return SparkResource(spark_config=spark_config(master))
