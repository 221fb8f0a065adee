"""Ingestion: one Spark pass over a day's landing files -> raw_trades, raw_quotes, raw_rejects.

The identity `lines read = trades + quotes + rejects` is then checked per
exchange, before the staged outputs are swapped in: a day that breaks it fails
and leaves the previous version of its data.
"""

from functools import reduce

from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from capstone_assets import schemas
from capstone_assets.assets.common import SPARK_KINDS, dataset_metadata
from capstone_assets.jobs import PREPROCESSING
from capstone_assets.partitions import trading_day_partitions
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.resources.lake import StagedDay, landing_exchange
from capstone_assets.tracking import tracked_step
from capstone_assets.transforms import parsing

OUTPUTS = {
    "raw_trades": (parsing.select_trades, schemas.RAW_TRADES, "trades"),
    "raw_quotes": (parsing.select_quotes, schemas.RAW_QUOTES, "quotes"),
    "raw_rejects": (parsing.select_rejects, schemas.RAW_REJECTS, "rejects"),
}
DESCRIPTIONS = {
    "raw_trades": "Valid trade (T) records of the day's landing files, every batch and exchange, "
    "in the common event schema. Corrections are not applied yet.",
    "raw_quotes": "Valid quote (Q) records of the day's landing files, every batch and exchange.",
    "raw_rejects": "Every landing line that does not parse or follow the schema, verbatim, "
    "with its source file and a machine-readable reason (SPEC.md §2).",
}


COUNTED = ("lines", "trades", "quotes", "rejects")


class IngestionIdentityError(Exception):
    """Lines read != trades + quotes + rejects: something was lost or duplicated."""


def read_landing_lines(spark: SparkSession, lake: LakeResource, day: str, log) -> tuple[DataFrame, int]:
    """The day's non-blank landing lines, every batch file of every exchange, each in its format."""
    files = lake.landing_files(spark, day)
    for path in files.skipped:
        log.info(f"Skipping {path}: not a data file (hidden, marker or folder)")
    frames = [
        spark.read.option("lineSep", "\n")
        .text(paths)
        .select("value", F.col("_metadata.file_path").alias("source_file"), F.lit(fmt).alias("format"))
        for fmt, paths in files.by_format.items()
        if paths
    ]
    if not frames:
        log.warning(f"No landing files for {day} under {lake.landing_root}: writing empty datasets")
        frames = [spark.createDataFrame([], "value string, source_file string, format string")]
    return parsing.clean_lines(reduce(DataFrame.unionByName, frames)), files.count


def exchange_counts(
    spark: SparkSession, lines: DataFrame, staged: dict[str, StagedDay]
) -> dict[str, dict[str, int]]:
    """Per landing exchange: lines read and each staged output's rows, in one Spark job.

    The lines are counted from the landing files themselves (a second, parser-free
    read), the outputs from what was written: the identity checks both ends."""
    counted = [parsing.rows_by_source_file(lines, "lines")] + [
        parsing.rows_by_source_file(
            spark.read.schema(OUTPUTS[asset][1]).parquet(staged_day.path), OUTPUTS[asset][2]
        )
        for asset, staged_day in staged.items()
    ]
    per_exchange: dict[str, dict[str, int]] = {}
    for row in reduce(DataFrame.unionByName, counted).collect():  # one row per file and dataset
        counts = per_exchange.setdefault(landing_exchange(row["source_file"]), dict.fromkeys(COUNTED, 0))
        counts[row["dataset"]] += row["rows"]
    return dict(sorted(per_exchange.items()))


@multi_asset(
    specs=[
        AssetSpec(name, description=DESCRIPTIONS[name], group_name="preprocessing", kinds=SPARK_KINDS)
        for name in OUTPUTS
    ],
    partitions_def=trading_day_partitions,
)
def ingestion(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
):
    with tracked_step(context, tracker, PREPROCESSING):
        results = list(_ingest(context, spark.spark_session, lake))
    yield from results


def _ingest(context: AssetExecutionContext, session: SparkSession, lake: LakeResource):
    day = context.partition_key
    lines, file_count = read_landing_lines(session, lake, day, context.log)
    # Each line is read and parsed once: the three outputs are written from this
    # cached copy (spilled to disk when it does not fit in memory).
    parsed = parsing.parse_lines(lines, day).persist(StorageLevel.MEMORY_AND_DISK)
    staged = {}
    try:
        for asset, (select, _, _) in OUTPUTS.items():
            staged[asset] = lake.stage(session, select(parsed), asset, day)
            context.log.info(f"{day}: {asset} written to staging")
        per_exchange = exchange_counts(session, lines, staged)
        totals = {k: sum(c[k] for c in per_exchange.values()) for k in COUNTED}
        unbalanced = {
            ex: c for ex, c in per_exchange.items() if c["lines"] != c["trades"] + c["quotes"] + c["rejects"]
        }
        if unbalanced:
            raise IngestionIdentityError(f"{day}: lines read != trades + quotes + rejects for {unbalanced}")
        paths = {asset: lake.commit(session, staged_day) for asset, staged_day in staged.items()}
    except BaseException:
        for staged_day in staged.values():
            lake.discard(session, staged_day)
        raise
    finally:
        parsed.unpersist()

    identity = (
        f"lines read {totals['lines']} = trades {totals['trades']} + quotes {totals['quotes']}"
        f" + rejects {totals['rejects']}"
    )
    context.log.info(f"{day}: {file_count} files; {identity}")
    shared = {
        "landing_files": MetadataValue.int(file_count),
        "lines_read": MetadataValue.int(totals["lines"]),
        "identity": MetadataValue.text(identity),
        "per_exchange": MetadataValue.json(per_exchange),
    }
    for asset, (_, schema, count_name) in OUTPUTS.items():
        yield MaterializeResult(
            asset_key=asset,
            metadata=dataset_metadata(paths[asset], totals[count_name], schema, **shared),
        )
