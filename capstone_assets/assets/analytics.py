"""The analytical EOD quote report."""

import datetime as dt
import warnings

from dagster import (
    AssetDep,
    AssetCheckResult,
    AssetExecutionContext,
    BetaWarning,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame, Observation, Row

from capstone_assets import checks, schemas
from capstone_assets.assets.common import SPARK_KINDS, dataset_metadata, markdown_table, tracked_results
from capstone_assets.jobs import ANALYTICAL, PREPROCESSING
from capstone_assets.partitions import trading_day_partitions
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.resources.tracker import SUCCESS, Claim, job_id
from capstone_assets.tracking import added_beyond_backfill
from capstone_assets.transforms import quality, report

# Bump when the report's rules change: the UI then shows which days older code computed.
CODE_VERSION = "report-2"
# SPEC.md §4: the previous trading day is searched back this many calendar days.
PREVIOUS_DAY_SEARCH_DAYS = 7
PREVIEW_ROWS = 10
COMPUTED, DEFERRED = "computed", "deferred"


def previous_days(day: str) -> list[str]:
    d = dt.date.fromisoformat(day)
    return [(d - dt.timedelta(days=n)).isoformat() for n in range(PREVIOUS_DAY_SEARCH_DAYS, 0, -1)]


def _day_and_previous_trading_day(asset: str) -> AssetDep:
    with warnings.catch_warnings():
        # allow_nonexistent_upstream_partitions is beta; the first trading day has no D-1.
        warnings.simplefilter("ignore", BetaWarning)
        return AssetDep(
            asset,
            partition_mapping=TimeWindowPartitionMapping(
                start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        )


@asset(
    # SPEC.md §6: D's report needs D and its previous trading day loaded, and no
    # more, exactly what the analytical gate checks. In a backfill D is reported
    # only after D-1 is loaded, and Dagster adds the report of the day after a
    # range: that one is deferred when its day is not preprocessed yet.
    deps=[_day_and_previous_trading_day("trades"), _day_and_previous_trading_day("quotes")],
    partitions_def=trading_day_partitions,
    group_name="analytical",
    kinds=SPARK_KINDS,
    code_version=CODE_VERSION,
    check_specs=checks.specs_for("eod_quote_report"),
    description="One row per loaded quote of the day with the latest trade price, its 30-minute "
    "moving average and the bid/ask move from the previous trading day's close (SPEC.md §4).",
)
def eod_quote_report(
    context: AssetExecutionContext, spark: LazyPySparkResource, lake: LakeResource, tracker: TrackerResource
):
    day = context.partition_key
    preprocessing = tracker.get_status(job_id(PREPROCESSING, day))
    if preprocessing != SUCCESS and added_beyond_backfill(context, day):
        yield from _deferred(context, tracker, day, preprocessing)
        return
    landed = lambda d: lake.has_landing_files(d, lambda: spark.spark_session)  # noqa: E731
    yield from tracked_results(
        context,
        tracker,
        ANALYTICAL,
        lambda claim: _report(context, spark.spark_session, lake, claim),
        has_landing_files=landed,
    )


def _deferred(context: AssetExecutionContext, tracker: TrackerResource, day: str, preprocessing: str | None):
    """The report of the day after a backfilled range, whose day is not preprocessed yet.

    Nothing is computed or written: the lake keeps whatever version it had. The
    materialization says `deferred`, so the backfill succeeds; analytical_sensor
    requests the real report once preprocessing of the day is `success`. A report
    the tracker held as `success` is now stale (its previous close changed)."""
    reason = (
        f"{job_id(PREPROCESSING, day)} is {preprocessing or 'not run'}: the report of {day} waits for it; "
        f"analytical_sensor runs it once preprocessing of {day} is success"
    )
    if tracker.mark_stale(job_id(ANALYTICAL, day), f"stale: previous close changed; {reason}"):
        context.log.warning(f"{job_id(ANALYTICAL, day)}: stale, marked failed until it is re-run")
    context.log.warning(f"eod_quote_report {day} deferred: {reason}")
    yield MaterializeResult(metadata={"status": MetadataValue.text(DEFERRED), "reason": MetadataValue.text(reason)})
    # Every check's result is required; there is no new report to check.
    for spec in checks.specs_for("eod_quote_report"):
        yield AssetCheckResult(
            check_name=spec.name,
            passed=True,
            description=f"not evaluated: the report of {day} is deferred",
            metadata={"status": DEFERRED},
        )


def previous_trading_day_trades(session, lake: LakeResource, day: str) -> tuple[str | None, DataFrame]:
    """SPEC.md §4's previous trading day of `day` and its trades, or (None, no rows).

    The most recent of D−1 … D−7 whose loaded trades hold at least one row, looked up
    newest first: only that day's trades are read (a Monday finds no folder for Sunday and
    Saturday, then reads Friday), and no Spark job reads seven days to find it."""
    for candidate in reversed(previous_days(day)):
        if not lake.day_exists(session, "trades", candidate):
            continue
        try:
            trades = lake.read_day(session, "trades", candidate, schemas.TRADES)
        except FileNotFoundError:  # removed meanwhile: as if it had never been loaded
            continue
        if not trades.isEmpty():  # a quote-only day has a folder and no trade
            return candidate, trades
    return None, session.createDataFrame([], schemas.TRADES)


def observed(observation: Observation) -> dict | None:
    """The metrics `observation` collected in its frame's first action, or None when Spark
    delivered none. Never waits: the classic API's `get` would wait for ever."""
    pending = getattr(observation, "_jo", None)  # the classic API's JVM object, once observed
    if pending is not None and not pending.future().isCompleted():
        return None
    try:
        # Spark Connect hands out `{}` until the metrics arrive.
        return dict(observation.get) or None
    except Exception:  # not observed
        return None


def quote_coverage(report: DataFrame, quotes: DataFrame, prints: dict | None = None) -> Row:
    """`report_rows`, `quotes`, `mismatched_keys` and an `example` for the one_row_per_quote check.

    The fingerprints of both key sets (`quality.key_fingerprints`: one pass, no shuffle; or
    `prints`, the same observed while the report was written) settle the usual case of a report
    that matches its quotes; only a mismatch pays for grouping every key of the report as
    written to count and name the mismatched ones."""
    prints = prints or quality.key_fingerprints(report, quotes).first().asDict()
    if prints["report_rows"] == prints["quotes"] and prints["report_keys"] == prints["quote_keys"]:
        return Row(report_rows=prints["report_rows"], quotes=prints["quotes"], mismatched_keys=0, example=None)
    return quality.quote_coverage(report, quotes).first()


def _report(context: AssetExecutionContext, session, lake: LakeResource, claim: Claim):
    day = context.partition_key
    trades = lake.read_day(session, "trades", day, schemas.TRADES)
    quotes = lake.read_day(session, "quotes", day, schemas.QUOTES)
    previous_day, previous = previous_trading_day_trades(session, lake, day)
    # The key fingerprints of the quotes as the report reads them and of its rows as they go to
    # the writer, taken by the write's own Spark job: no second read of either. The written files'
    # row count (from their Parquet footers) must agree; whatever does not match (or was not
    # delivered) is settled from the written files.
    quotes_seen, rows_seen = Observation(), Observation()
    computed = report.eod_quote_report(
        trades, quotes.observe(quotes_seen, *quality.key_fingerprint("quotes", "quote_keys")), previous, day
    )
    computed = computed.observe(rows_seen, *quality.key_fingerprint("report_rows", "report_keys"))
    staged = lake.stage(session, computed, "eod_quote_report", day)
    try:
        seen = [observed(quotes_seen), observed(rows_seen)]
        written = session.read.schema(schemas.EOD_QUOTE_REPORT).parquet(staged.path)
        prints = None if None in seen else {**seen[0], **seen[1]}
        if prints is not None and written.count() != prints["report_rows"]:  # a part file lost or doubled
            prints = None
        coverage = quote_coverage(written, quotes, prints)
        one_row_per_quote = checks.require(
            checks.one_row_per_quote(
                coverage["report_rows"], coverage["quotes"], coverage["mismatched_keys"], coverage["example"]
            ),
            day,
        )
        path = lake.commit(session, staged, guard=claim.holding)
    except BaseException:
        lake.discard(session, staged)
        raise
    rows = session.read.schema(schemas.EOD_QUOTE_REPORT).parquet(path)
    no_close = (
        quality.pairs_without_close(rows, previous).first()
        if previous_day
        else Row(pairs=0, example=None)  # no previous trading day: no pair traded on it
    )
    close_pr_present = checks.close_pr_present(previous_day, no_close["pairs"], no_close["example"])
    if not close_pr_present.passed:
        context.log.warning(f"{day}: check close_pr_present: {close_pr_present.description}")
    row_count = coverage["report_rows"]
    context.log.info(f"eod_quote_report {day}: {row_count} rows; previous trading day {previous_day}")
    preview = rows.drop("trade_dt").head(PREVIEW_ROWS)  # `trade_dt` is the folder, not a column
    yield MaterializeResult(
        metadata=dataset_metadata(
            path,
            row_count,
            schemas.EOD_QUOTE_REPORT,
            status=MetadataValue.text(COMPUTED),
            previous_trading_day=MetadataValue.text(previous_day or "none"),
            preview=MetadataValue.md(
                markdown_table(schemas.EOD_QUOTE_REPORT.fieldNames(), [[day, *r] for r in preview])
            ),
        )
    )
    yield one_row_per_quote.result()
    yield close_pr_present.result()
