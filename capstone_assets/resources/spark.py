"""The Spark session every asset shares, started lazily (after the tracker's claim).

`dagster_pyspark.LazyPySparkResource` creates the session on first use with
`SparkSession.builder.getOrCreate()`, so all steps of a run (in-process
executor) and a test session's fixture share one JVM.

A standalone master (`spark://host:port`) that cannot be reached would cost a
JVM start and Spark's three 20-second registration attempts before a "stopped
SparkContext" error that does not name the cause. The resource first opens a
TCP connection to the master and fails within seconds, naming SPARK_MASTER.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dagster_pyspark import LazyPySparkResource

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
LOCAL_SPEEDUPS = {
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    "spark.shuffle.compress": "false",
}


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
    }
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
        super()._init_session()


def spark_resource(master: str) -> SparkResource:
    return SparkResource(spark_config=spark_config(master))
