"""The sample days in local mode, in the test process: what other ways of running Spark must equal."""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance, materialize
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from capstone_assets import assets
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource

DATASETS = ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes", "eod_quote_report")


def materialize_locally(sample_dir: Path, workdir: Path, days: tuple[str, ...]) -> Path:
    """All six assets of `days`, in order, on the test session's local Spark: the lake folder."""
    local_lake = workdir / "local_lake"
    resources = {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(landing_root=str(sample_dir), lake_root=str(local_lake)),
        "tracker": TrackerResource(url=f"sqlite:///{workdir / 'local_tracker.db'}"),
        "quality": QualityResource(),
    }
    instance = DagsterInstance.ephemeral()
    for day in days:
        result = materialize(
            [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report],
            partition_key=day, resources=resources, instance=instance,
        )  # fmt: skip
        assert result.success
    return local_lake


def assert_same_datasets(spark: SparkSession, lake: Path, local_lake: Path, days: tuple[str, ...]) -> None:
    for dataset in DATASETS:
        for day in days:
            assertDataFrameEqual(
                spark.read.parquet(str(lake / dataset / f"trade_dt={day}")),
                spark.read.parquet(str(local_lake / dataset / f"trade_dt={day}")),
            )
