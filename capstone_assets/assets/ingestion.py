"""Ingestion: one Spark pass over a day's landing files -> raw_trades, raw_quotes, raw_rejects.

The identity `lines read = trades + quotes + rejects` is then checked per
exchange, before the staged outputs are swapped in: a day that breaks it fails
and leaves the previous version of its data.
"""

import datetime as dt
from functools import reduce

from dagster import AssetExecutionContext, AssetSpec, MaterializeResult, MetadataValue, multi_asset
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from capstone_assets import checks, schemas
from capstone_assets.assets.common import SPARK_KINDS, dataset_metadata, markdown_table, tracked_results
from capstone_assets.jobs import PREPROCESSING
from capstone_assets.partitions import previous_trading_day, trading_day_partitions
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource
from capstone_assets.resources.lake import StagedDay, landing_exchange, unreadable_file
from capstone_assets.resources.landing import Changes, LandingProblem, LandingZone, Listing
from capstone_assets.resources.tracker import Claim
from capstone_assets.transforms import parsing, quality

# Bump when the parsing or the outputs change: the UI then shows which days older code computed.
CODE_VERSION = "ingestion-4"

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
# A day's summary lists the busiest symbols; the rest are counted in the totals.
SUMMARY_SYMBOLS = 50
REJECT_PREVIEW_LINES = 5


def read_landing_lines(spark: SparkSession, listing: Listing, *, repair_utf8: bool = True) -> DataFrame:
    """The day's non-blank landing lines, every batch file of every exchange, each in its format.

    `repair_utf8=False` leaves bytes that are not UTF-8 as they are: enough to count the lines
    (a byte that is not UTF-8 neither makes nor breaks a blank line), and cheaper."""
    by_format: dict[str, list[str]] = {}
    for f in listing.files:
        by_format.setdefault(f.read_as, []).append(f.path)
    frames = [
        spark.read.option("lineSep", "\n")
        .text(paths)
        .select(
            # SPEC.md §2: bytes that are not UTF-8 read as U+FFFD, one per maximal ill-formed
            # subpart (the Unicode Standard, as Python reads them), before any Java string sees
            # them: Java's decoder would merge some (a surrogate's 3 bytes into 1 U+FFFD).
            F.make_valid_utf8("value").alias("value") if repair_utf8 else "value",
            F.col("_metadata.file_path").alias("source_file"),
            F.lit(fmt).alias("format"),
        )
        for fmt, paths in sorted(by_format.items())
    ]
    if not frames:
        frames = [spark.createDataFrame([], "value string, source_file string, format string")]
    return parsing.clean_lines(reduce(DataFrame.unionByName, frames))


def report_surprises(listing: Listing, day: str, root: str, log) -> None:
    """Logs what of the day's landing zone is not read, and why (README: landing-zone surprises)."""
    for path in listing.skipped:
        log.info(f"Skipping {path}: not a data file (hidden, marker, copy in progress or misplaced)")
    for folder in listing.empty_exchanges:
        log.warning(
            f"{root}/{folder} holds no data file: nothing of exchange {folder.rsplit('/', 1)[1]} for "
            f"{day} yet (a late or failed delivery?)"
        )
    for folder in listing.other_formats:
        log.warning(
            f"{root}/{folder} is not read: '{folder.split('/', 1)[0]}' is not a landing format "
            "(csv or json); move its files under csv/ or json/ to ingest them"
        )


def landing_unchanged(zone: LandingZone, day: str, read: Listing, log) -> None:
    """Raises LandingProblem when a file read for the day changed or vanished while it was read:
    what was read may be a half-written file. A file that appeared is not in this run; the
    landing sensor's next tick sees it and runs the day again."""
    changes = Changes.between(read, zone.listing(day))
    if changes.appeared:
        log.warning(
            f"{day}: {len(changes.appeared)} landing file(s) appeared while the day was read and are not "
            f"in this run ({', '.join(changes.appeared[:5])}): the landing sensor runs the day again, "
            "or run it again by hand"
        )
    moved = [f"{p} (changed)" for p in changes.changed] + [f"{p} (vanished)" for p in changes.vanished]
    if moved:
        raise LandingProblem(
            f"The landing files of {day} changed while they were read: {', '.join(moved[:5])}"
            f"{f' and {len(moved) - 5} more' if len(moved) > 5 else ''}. Nothing was committed: the day "
            "keeps its previous version. A delivery still being written? Run the day again once its "
            "files are complete (the landing sensor does so when it sees them change)."
        )


def read_failure(error: BaseException, zone: LandingZone, day: str, read: Listing) -> LandingProblem | None:
    """The error a Spark job's failure to read a landing file means to an operator, if it was one."""
    unreadable = unreadable_file(error)
    if unreadable is None:
        return None
    path, cause = unreadable
    changes = Changes.between(read, zone.listing(day))
    if changes.changed or changes.vanished:
        return LandingProblem(
            f"The landing files of {day} changed while they were read "
            f"({', '.join(changes.changed + changes.vanished)}): reading {path} failed ({cause}). "
            "Nothing was committed: the day keeps its previous version. Run the day again once its "
            "files are complete."
        )
    return LandingProblem(
        f"Cannot read landing file {path}: {cause}. Nothing was committed: the day keeps its previous "
        "version. Repair or remove the file (e.g. re-deliver a truncated upload), then run the day again."
    )


def other_dates(summary: list[Row]) -> list[tuple[str, int]]:
    """Per landing file, its lines rejected for a `trade_dt` other than its folder's date."""
    return sorted((row["source_file"], row["rows"]) for row in summary if row["source_file"] is not None)


def summarize(spark: SparkSession, lines: DataFrame, staged: dict[str, StagedDay]) -> list[Row]:
    """Per exchange: lines read, trades and quotes by symbol, rejects by reason (and the files of
    other dates), in one Spark job.

    The lines are counted from the landing files themselves (a second, parser-free
    read), the outputs from what was written: the identity checks both ends."""
    written = {asset: spark.read.schema(OUTPUTS[asset][1]).parquet(s.path) for asset, s in staged.items()}
    summary = quality.exchange_summary(
        lines, written["raw_trades"], written["raw_quotes"], written["raw_rejects"]
    )
    return summary.collect()  # one row per exchange and symbol or reason


def per_exchange_counts(summary: list[Row]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in summary:
        counts.setdefault(row["exchange"], dict.fromkeys(COUNTED, 0))[row["dataset"]] += row["rows"]
    return dict(sorted(counts.items()))


def summary_markdown(summary: list[Row]) -> str:
    """Trades and quotes per exchange and symbol (the busiest first), then rejects by reason."""
    by_symbol: dict[tuple[str, str], dict[str, int]] = {}
    for row in summary:
        if row["dataset"] in ("trades", "quotes"):
            by_symbol.setdefault((row["exchange"], row["symbol"]), {"trades": 0, "quotes": 0})[
                row["dataset"]
            ] += row["rows"]
    busiest = sorted(by_symbol.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    symbols = markdown_table(
        ["exchange", "symbol", "trades", "quotes"],
        [(ex, sym, c["trades"], c["quotes"]) for (ex, sym), c in busiest[:SUMMARY_SYMBOLS]],
    )
    by_reason: dict[tuple[str, str], int] = {}
    for row in summary:
        if row["dataset"] == "rejects":
            key = (row["exchange"], row["reason"])
            by_reason[key] = by_reason.get(key, 0) + row["rows"]
    rejects = markdown_table(["exchange", "reason", "rejects"], [(*key, n) for key, n in sorted(by_reason.items())])
    shown = f" ({SUMMARY_SYMBOLS} busiest of {len(busiest)})" if len(busiest) > SUMMARY_SYMBOLS else ""
    return f"**Trades and quotes by exchange and symbol{shown}**\n\n{symbols}\n\n**Rejects by reason**\n\n{rejects}"


@multi_asset(
    specs=[
        AssetSpec(name, description=DESCRIPTIONS[name], group_name="preprocessing", kinds=SPARK_KINDS,
                  code_version=CODE_VERSION)
        for name in OUTPUTS
    ],
    check_specs=checks.specs_for("raw_rejects"),
    partitions_def=trading_day_partitions,
)  # fmt: skip
def ingestion(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    lake: LakeResource,
    tracker: TrackerResource,
    quality: QualityResource,
):
    yield from tracked_results(
        context,
        tracker,
        PREPROCESSING,
        lambda claim: _ingest(context, spark.spark_session, lake, quality, claim),
    )


def _ingest(
    context: AssetExecutionContext,
    session: SparkSession,
    lake: LakeResource,
    quality: QualityResource,
    claim: Claim,
):
    day = context.partition_key
    zone = LandingZone(session, lake.landing_root)
    listing = zone.listing(day)
    file_count = len(listing.files)
    report_surprises(listing, day, zone.root, context.log)
    if not listing.files:
        context.log.warning(f"No landing files for {day} under {zone.root}: writing empty datasets")
    lines = read_landing_lines(session, listing)
    # Each line is read and parsed once: the three outputs are written from this
    # cached copy (spilled to disk when it does not fit in memory). A run of the day killed
    # before its `unpersist` left the same plan cached, and a shared Spark server keeps it:
    # that copy is dropped first, since the day's files may have changed since.
    parsed = parsing.parse_lines(lines, day)
    parsed.unpersist()
    parsed.persist(StorageLevel.MEMORY_AND_DISK)
    staged = {}
    try:
        try:
            for asset, (select, _, _) in OUTPUTS.items():
                staged[asset] = lake.stage(session, select(parsed), asset, day)
                context.log.info(f"{day}: {asset} written to staging")
            summary = summarize(session, read_landing_lines(session, listing, repair_utf8=False), staged)
        except Exception as error:
            problem = read_failure(error, zone, day, listing)
            if problem is None:
                raise
            raise problem from error
        landing_unchanged(zone, day, listing, context.log)
        per_exchange = per_exchange_counts(summary)
        identity = checks.require(checks.lines_accounted_for(per_exchange), day)
        for source_file, count in other_dates(summary):
            context.log.warning(
                f"{day}: {count} line(s) of {source_file} are dated other than {day} and were "
                "rejected (trade_dt_mismatch): was the file delivered into the wrong day's folder?"
            )
        paths = lake.commit_all(session, staged, guard=claim.holding)
    except BaseException:
        for staged_day in staged.values():
            lake.discard(session, staged_day)
        raise
    finally:
        parsed.unpersist()
    context.log.info(f"{day}: {file_count} files; {identity.description}")

    previous_day = previous_trading_day(dt.date.fromisoformat(day)).isoformat()
    previous_exchanges = {landing_exchange(f.path) for f in zone.listing(previous_day).files}
    outcomes = [
        identity,
        checks.reject_rate(per_exchange, quality.reject_rate_threshold),
        checks.landing_files_present(day, file_count, lake.landing_root),
        checks.exchanges_delivered(previous_day, previous_exchanges, set(per_exchange)),
    ]
    for outcome in outcomes[1:]:
        if not outcome.passed:
            context.log.warning(f"{day}: check {outcome.check}: {outcome.description}")

    totals = identity.metadata
    shared = {
        "landing_files": MetadataValue.int(file_count),
        "lines_read": MetadataValue.int(totals["lines"]),
        "identity": MetadataValue.text(identity.description),
        "per_exchange": MetadataValue.json(per_exchange),
        "summary": MetadataValue.md(summary_markdown(summary)),
    }
    first_rejects = session.read.parquet(paths["raw_rejects"]).head(REJECT_PREVIEW_LINES)
    rejects_only = {
        "rejects_path": MetadataValue.path(paths["raw_rejects"]),
        "first_rejects": MetadataValue.md(
            markdown_table(["reason", "source_file", "line"],
                           [(r["reason"], r["source_file"], r["line"]) for r in first_rejects])
        ),
    }  # fmt: skip
    for asset, (_, schema, count_name) in OUTPUTS.items():
        extra = {**shared, **(rejects_only if asset == "raw_rejects" else {})}
        yield MaterializeResult(
            asset_key=asset, metadata=dataset_metadata(paths[asset], totals[count_name], schema, **extra)
        )
    for outcome in outcomes:
        yield outcome.result()
