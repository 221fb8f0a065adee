"""The analytical EOD quote report."""

import datetime as dt
import warnings

from dagster import (
    AssetDep,
    AssetExecutionContext,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import functions as F

from capstone_assets import schemas
from capstone_assets.assets.common import SPARK_KINDS, dataset_metadata
from capstone_assets.jobs import ANALYTICAL
from capstone_assets.partitions import trading_day_partitions
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.tracking import tracked_step
from capstone_assets.transforms import report

# SPEC.md §4: the previous trading day is searched back this many calendar days.
PREVIOUS_DAY_SEARCH_DAYS = 7


def previous_days(day: str) -> list[str]:
    d = dt.date.fromisoformat(day)
    return [(d - dt.timedelta(days=n)).isoformat() for n in range(PREVIOUS_DAY_SEARCH_DAYS, 0, -1)]


with warnings.catch_warnings():
    # allow_nonexistent_upstream_partitions is beta; the first trading day has no D-1.
    warnings.simplefilter("ignore", BetaWarning)
    _TRADES_OF_D_AND_PREVIOUS_DAY = AssetDep(
        "trades",
        partition_mapping=TimeWindowPartitionMapping(
            start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
        ),
    )


@asset(
    deps=[
        # D's trades and the previous trading day's: in a backfill, D is reported
        # only after D-1 is loaded (analytical_sensor re-reports D when D-1 changes).
        _TRADES_OF_D_AND_PREVIOUS_DAY,
        "quotes",
    ],
    partitions_def=trading_day_partitions,
    group_name="analytical",
    kinds=SPARK_KINDS,
    description="One row per loaded quote of the day with the latest trade price, its 30-minute "
    "moving average and the bid/ask move from the previous trading day's close (SPEC.md §4).",
)
def eod_quote_report(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
) -> MaterializeResult:
    day = context.partition_key
    landed = lambda d: lake.has_landing_files(d, lambda: spark.spark_session)  # noqa: E731
    with tracked_step(context, tracker, ANALYTICAL, has_landing_files=landed):
        session = spark.spark_session
        trades = lake.read_day(session, "trades", day, schemas.TRADES)
        quotes = lake.read_day(session, "quotes", day, schemas.QUOTES)
        recent = lake.read_days(session, "trades", previous_days(day), schemas.TRADES)
        previous = report.previous_trading_day_trades(recent)
        rows = report.eod_quote_report(trades, quotes, previous, day)
        path = lake.write_day(session, rows, "eod_quote_report", day)
        row_count = session.read.parquet(path).count()  # from Parquet footers
        previous_day = recent.agg(F.max("trade_dt")).first()[0]  # one value
    context.log.info(f"eod_quote_report {day}: {row_count} rows; previous trading day {previous_day}")
    return MaterializeResult(
        metadata=dataset_metadata(
            path,
            row_count,
            schemas.EOD_QUOTE_REPORT,
            previous_trading_day=MetadataValue.text(str(previous_day) if previous_day else "none"),
        )
    )
