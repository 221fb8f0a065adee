"""Ingestion: one Spark pass over a day's landing files -> raw_trades, raw_quotes, raw_rejects."""


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


class IngestionIdentityError(Exception):
    """Lines read != trades + quotes + rejects: something was lost or duplicated."""


def read_landing_lines(spark: SparkSession, lake: LakeResource, day: str, log) -> tuple[DataFrame, int]:
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
        empty = spark.createDataFrame([], "value string, source_file string, format string")
        frames = [empty]
    raw = frames[0]
    for frame in frames[1:]:
        raw = raw.unionByName(frame)
    return parsing.clean_lines(raw), files.count


def exchange_counts(spark: SparkSession, lines: DataFrame, staged: dict) -> dict[str, dict[str, int]]:
    """Per landing exchange: lines read (from the text, not the parser) and each output's rows."""
    counts = parsing.lines_by_exchange(lines)
    for asset, day_path in staged.items():
        written = spark.read.schema(OUTPUTS[asset][1]).parquet(day_path.path)
        counts = counts.join(parsing.count_by_exchange(written, OUTPUTS[asset][2]), "landing_exchange", "full")
    rows = counts.fillna(0).orderBy("landing_exchange").collect()  # one row per exchange
    return {r["landing_exchange"]: {k: int(v) for k, v in r.asDict().items() if k != "landing_exchange"} for r in rows}


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
    # The landing files are read once: the three outputs and the line count all
    # come from this cached copy (spilled to disk when it does not fit in memory).
    lines = lines.persist(StorageLevel.MEMORY_AND_DISK)
    staged = {}
    try:
        parsed = parsing.parse_lines(lines, day)
        for asset, (select, _, _) in OUTPUTS.items():
            staged[asset] = lake.stage(session, select(parsed), asset, day)
            context.log.info(f"{day}: {asset} written to staging")
        per_exchange = exchange_counts(session, lines, staged)
        totals = {k: sum(c.get(k, 0) for c in per_exchange.values()) for k in ("lines", "trades", "quotes", "rejects")}
        unbalanced = {
            ex: c for ex, c in per_exchange.items()
            if c.get("lines", 0) != c.get("trades", 0) + c.get("quotes", 0) + c.get("rejects", 0)
        }  # fmt: skip
        if unbalanced:
            raise IngestionIdentityError(f"{day}: lines read != trades + quotes + rejects for {unbalanced}")
        paths = {asset: lake.commit(session, staged_day) for asset, staged_day in staged.items()}
    except BaseException:
        for staged_day in staged.values():
            lake.discard(session, staged_day)
        raise
    finally:
        lines.unpersist()

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
