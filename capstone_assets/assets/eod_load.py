"""End-of-day load: trades and quotes with the exchanges' corrections applied."""

from dagster import AssetExecutionContext, MaterializeResult, asset
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, Row

from capstone_assets import checks, schemas
from capstone_assets.assets.common import SPARK_KINDS, dataset_metadata, tracked_results
from capstone_assets.jobs import PREPROCESSING
from capstone_assets.partitions import trading_day_partitions
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.transforms import load, quality

# Bump when the correction rules change: the UI then shows which days older code computed.
CODE_VERSION = "load-1"


def unique_key_stats(written: DataFrame) -> Row:
    """`rows`, `duplicate_keys` and an `example` for the unique_record_key check: grouped by the
    key's hash (one long per row), and by the key itself only when some hash is shared."""
    hashed = quality.key_hash_stats(written).first()
    if hashed["shared_hashes"] == 0:
        return Row(rows=hashed["rows"], duplicate_keys=0, example=None)
    return quality.key_stats(written).first()


def _load(context, spark, lake, tracker, *, source: str, target: str, transform):
    """Reads the day's raw records, keeps the latest per key, checks the key is unique, swaps the day in."""

    def compute(claim):
        day, schema, session = context.partition_key, schemas.BY_DATASET[target], spark.spark_session
        raw = lake.read_day(session, source, day, schemas.BY_DATASET[source])
        staged = lake.stage(session, transform(raw), target, day)
        try:
            stats = unique_key_stats(session.read.schema(schema).parquet(staged.path))
            unique = checks.require(
                checks.unique_record_key(target, stats["rows"], stats["duplicate_keys"], stats["example"]), day
            )
            path = lake.commit(session, staged, guard=claim.holding)
        except BaseException:
            lake.discard(session, staged)
            raise
        context.log.info(f"{target} {day}: {stats['rows']} rows")
        yield MaterializeResult(metadata=dataset_metadata(path, stats["rows"], schema))
        yield unique.result()

    return tracked_results(context, tracker, PREPROCESSING, compute)


@asset(
    deps=["raw_trades"],
    partitions_def=trading_day_partitions,
    group_name="preprocessing",
    kinds=SPARK_KINDS,
    code_version=CODE_VERSION,
    check_specs=checks.specs_for("trades"),
    description="The day's trades, one row per (symbol, exchange, event_tm, event_seq_nb): "
    "the latest arrival wins, ties go to the greatest (trade_pr, trade_size).",
)
def trades(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
):
    yield from _load(
        context, spark, lake, tracker, source="raw_trades", target="trades", transform=load.latest_trades
    )


@asset(
    deps=["raw_quotes"],
    partitions_def=trading_day_partitions,
    group_name="preprocessing",
    kinds=SPARK_KINDS,
    code_version=CODE_VERSION,
    check_specs=checks.specs_for("quotes"),
    description="The day's quotes, one row per record key: the latest arrival wins, "
    "ties go to the greatest (bid_pr, bid_size, ask_pr, ask_size).",
)
def quotes(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
):
    yield from _load(
        context, spark, lake, tracker, source="raw_quotes", target="quotes", transform=load.latest_quotes
    )
