"""The Spark session every asset shares, started lazily (after the tracker's claim).

`dagster_pyspark.LazyPySparkResource` creates the session on first use with
`SparkSession.builder.getOrCreate()`, so all steps of a run (in-process
executor) and a test session's fixture share one JVM.
"""

from __future__ import annotations

from pathlib import Path

from dagster_pyspark import LazyPySparkResource

JARS_DIR = Path(__file__).resolve().parents[2] / "jars"


def jar_paths(jars_dir: Path = JARS_DIR) -> list[str]:
    return sorted(str(p) for p in jars_dir.glob("*.jar")) if jars_dir.is_dir() else []


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
    jars = jar_paths(jars_dir)
    if jars:
        config["spark.jars"] = ",".join(jars)
    if master.startswith("local"):
        # Small local data: 200 shuffle partitions would be 200 tiny files a day.
        config["spark.sql.shuffle.partitions"] = "8"
    return config


def spark_resource(master: str) -> LazyPySparkResource:
    return LazyPySparkResource(spark_config=spark_config(master))
