"""End-of-day load: trades and quotes with the exchanges' corrections applied."""

from dagster import AssetExecutionContext, MaterializeResult, asset
from dagster_pyspark import LazyPySparkResource

from capstone_assets import schemas
from capstone_assets.assets.common import SPARK_KINDS, dataset_metadata
from capstone_assets.jobs import PREPROCESSING
from capstone_assets.partitions import trading_day_partitions
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.tracking import tracked_step
from capstone_assets.transforms import load


def _load(context, spark, lake, tracker, *, source: str, target: str, transform) -> MaterializeResult:
    """Reads the day's raw records, keeps the latest per key, writes the day."""
    day, schema = context.partition_key, schemas.BY_DATASET[target]
    with tracked_step(context, tracker, PREPROCESSING):
        session = spark.spark_session
        raw = lake.read_day(session, source, day, schemas.BY_DATASET[source])
        path = lake.write_day(session, transform(raw), target, day)
        row_count = session.read.schema(schema).parquet(path).count()  # from Parquet footers
    context.log.info(f"{target} {day}: {row_count} rows")
    return MaterializeResult(metadata=dataset_metadata(path, row_count, schema))


@asset(
    deps=["raw_trades"],
    partitions_def=trading_day_partitions,
    group_name="preprocessing",
    kinds=SPARK_KINDS,
    description="The day's trades, one row per (symbol, exchange, event_tm, event_seq_nb): "
    "the latest arrival wins, ties go to the greatest (trade_pr, trade_size).",
)
def trades(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
) -> MaterializeResult:
    return _load(
        context, spark, lake, tracker, source="raw_trades", target="trades", transform=load.latest_trades
    )


@asset(
    deps=["raw_quotes"],
    partitions_def=trading_day_partitions,
    group_name="preprocessing",
    kinds=SPARK_KINDS,
    description="The day's quotes, one row per record key: the latest arrival wins, "
    "ties go to the greatest (bid_pr, bid_size, ask_pr, ask_size).",
)
def quotes(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
) -> MaterializeResult:
    return _load(
        context, spark, lake, tracker, source="raw_quotes", target="quotes", transform=load.latest_quotes
    )
