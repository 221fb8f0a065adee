"""End-of-day load: corrections applied (SPEC.md §3).

For each record key the row with the latest `arrival_tm` wins; ties go to the
greatest values (trades: `trade_pr, trade_size`; quotes: `bid_pr, bid_size,
ask_pr, ask_size`), then to `execution_id` and `source_file`, so the winner
never depends on file or line order. `max` over a struct is one aggregate, no
join. Spark runs it sort-based (a struct is no fixed-width hash-aggregate buffer):
each shuffle partition of record keys is sorted, never the whole day in one order
(test_plans.py).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

RECORD_KEY = ("symbol", "exchange", "event_tm", "event_seq_nb")


def _latest_per_key(records: DataFrame, tie_breakers: tuple[str, ...], columns: list[str]) -> DataFrame:
    order = ("arrival_tm", *tie_breakers)
    others = [c for c in columns if c not in RECORD_KEY and c not in order]
    latest = F.max(F.struct(*order, *others)).alias("latest")
    return (
        records.groupBy(*RECORD_KEY)
        .agg(latest)
        .select(*RECORD_KEY, *(F.col(f"latest.{c}").alias(c) for c in order + tuple(others)))
        .select(*columns)
    )


def latest_trades(raw_trades: DataFrame) -> DataFrame:
    return _latest_per_key(
        raw_trades,
        ("trade_pr", "trade_size", "execution_id", "source_file"),
        raw_trades.columns,
    )


def latest_quotes(raw_quotes: DataFrame) -> DataFrame:
    return _latest_per_key(
        raw_quotes,
        ("bid_pr", "bid_size", "ask_pr", "ask_size", "source_file"),
        raw_quotes.columns,
    )
