"""What the data-quality checks and the materialization summaries count (no Dagster, no actions).

Each function returns a small DataFrame (one row, or one row per exchange and
symbol) for the asset step to collect; `capstone_assets.checks` judges it.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from capstone_assets.transforms.load import RECORD_KEY
from capstone_assets.transforms.report import PAIR


def _key_text(columns: tuple[str, ...]) -> F.Column:
    return F.concat_ws(" | ", *(F.col(c).cast("string") for c in columns))


def landing_exchange(source_file: str = "source_file") -> F.Column:
    """The exchange a landing file came from: the folder it lies in."""
    return F.element_at(F.split(F.col(source_file), "/"), -2)


def key_stats(records: DataFrame, key: tuple[str, ...] = RECORD_KEY) -> DataFrame:
    """One row: `rows`, `duplicate_keys` (keys with more than one row), `example` (the smallest)."""
    per_key = records.groupBy(*key).agg(F.count(F.lit(1)).alias("n"))
    is_duplicate = F.col("n") > 1
    return per_key.agg(
        F.coalesce(F.sum("n"), F.lit(0)).cast("long").alias("rows"),
        F.count(F.when(is_duplicate, 1)).alias("duplicate_keys"),
        F.min(F.when(is_duplicate, _key_text(key))).alias("example"),
    )


def key_hash_stats(records: DataFrame, key: tuple[str, ...] = RECORD_KEY) -> DataFrame:
    """One row: `rows` and `shared_hashes`, the 64-bit hashes (xxhash64) of the key that more than
    one row has. A duplicate key shares its hash, so none shared means every key is unique, and
    grouping one long per row is cheaper than grouping the key's four columns; `key_stats`
    (exact) is needed only when some hash is shared."""
    per_hash = records.groupBy(F.xxhash64(*key).alias("h")).agg(F.count(F.lit(1)).alias("n"))
    return per_hash.agg(
        F.coalesce(F.sum("n"), F.lit(0)).cast("long").alias("rows"),
        F.count(F.when(F.col("n") > 1, 1)).alias("shared_hashes"),
    )


def key_fingerprint(rows: str, keys: str, where: F.Column | None = None) -> list[F.Column]:
    """Aggregates of the record keys of a frame's rows (those `where` holds): the row count (`rows`)
    and the sum over the rows of two hashes of the key, 64-bit xxhash64 plus 32-bit Murmur3 (`keys`).

    Equal multisets of keys give equal sums; a missing, extra or changed key changes them (short
    of a hash collision). For `agg` as well as `DataFrame.observe`."""
    where = F.lit(True) if where is None else where
    # Decimal sums: ANSI mode would fail a long sum that overflows.
    hashes = F.xxhash64(*RECORD_KEY).cast("decimal(38,0)") + F.hash(*RECORD_KEY).cast("decimal(38,0)")
    return [
        F.count(F.when(where, 1)).alias(rows),
        F.coalesce(F.sum(F.when(where, hashes)), F.lit(0).cast("decimal(38,0)")).alias(keys),
    ]


def key_fingerprints(report: DataFrame, quotes: DataFrame) -> DataFrame:
    """One row: `report_rows`, `quotes` and each side's `key_fingerprint` (`report_keys`, `quote_keys`).

    One pass over both sides, no shuffle: `quote_coverage`, which groups every key, is only
    needed when the fingerprints differ."""
    tagged = report.select(*RECORD_KEY, F.lit(True).alias("_report")).unionByName(
        quotes.select(*RECORD_KEY, F.lit(False).alias("_report"))
    )
    return tagged.agg(
        *key_fingerprint("report_rows", "report_keys", F.col("_report")),
        *key_fingerprint("quotes", "quote_keys", ~F.col("_report")),
    ).select("report_rows", "quotes", "report_keys", "quote_keys")


def quote_coverage(report: DataFrame, quotes: DataFrame) -> DataFrame:
    """One row: `report_rows`, `quotes`, `mismatched_keys` (keys whose report rows != quotes), `example`."""
    tagged = report.select(*RECORD_KEY, F.lit(1).alias("r"), F.lit(0).alias("q")).unionByName(
        quotes.select(*RECORD_KEY, F.lit(0).alias("r"), F.lit(1).alias("q"))
    )
    per_key = tagged.groupBy(*RECORD_KEY).agg(F.sum("r").alias("r"), F.sum("q").alias("q"))
    mismatched = F.col("r") != F.col("q")
    return per_key.agg(
        F.coalesce(F.sum("r"), F.lit(0)).cast("long").alias("report_rows"),
        F.coalesce(F.sum("q"), F.lit(0)).cast("long").alias("quotes"),
        F.count(F.when(mismatched, 1)).alias("mismatched_keys"),
        F.min(F.when(mismatched, _key_text(RECORD_KEY))).alias("example"),
    )


def pairs_without_close(report: DataFrame, previous_day_trades: DataFrame) -> DataFrame:
    """One row: pairs with a null `close_pr` in the report that traded on the previous trading day."""
    traded = previous_day_trades.select(*PAIR).distinct()
    missing = report.where(F.col("close_pr").isNull()).select(*PAIR).distinct()
    return missing.join(F.broadcast(traded), on=list(PAIR), how="inner").agg(
        F.count(F.lit(1)).alias("pairs"), F.min(_key_text(PAIR)).alias("example")
    )


def exchange_summary(lines: DataFrame, trades: DataFrame, quotes: DataFrame, rejects: DataFrame) -> DataFrame:
    """Rows per (exchange, dataset, symbol, reason, source_file): lines read, trades and quotes by
    symbol, rejects by reason, in one Spark job.

    `lines` are counted from the landing text (no parser), the outputs from what was written.
    `source_file` is set for `trade_dt_mismatch` rejects only: which files hold lines of another
    date (a delivery into the wrong day's folder?); it is null on every other row.
    """
    no_text = F.lit(None).cast("string")
    other_date_file = F.when(F.col("reason") == "trade_dt_mismatch", F.col("source_file"))
    labelled = [
        lines.select(landing_exchange().alias("exchange"), F.lit("lines").alias("dataset"),
                     no_text.alias("symbol"), no_text.alias("reason"), no_text.alias("file")),
        trades.select(landing_exchange().alias("exchange"), F.lit("trades").alias("dataset"),
                      "symbol", no_text.alias("reason"), no_text.alias("file")),
        quotes.select(landing_exchange().alias("exchange"), F.lit("quotes").alias("dataset"),
                      "symbol", no_text.alias("reason"), no_text.alias("file")),
        rejects.select(landing_exchange().alias("exchange"), F.lit("rejects").alias("dataset"),
                       no_text.alias("symbol"), "reason", other_date_file.alias("file")),
    ]  # fmt: skip
    return (
        reduce(DataFrame.unionByName, labelled)
        .groupBy("exchange", "dataset", "symbol", "reason", "file")
        .agg(F.count(F.lit(1)).alias("rows"))
        .withColumnRenamed("file", "source_file")
    )
