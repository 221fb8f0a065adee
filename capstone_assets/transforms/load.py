"""End-of-day load: corrections applied (SPEC.md §3).

For each record key the row with the latest `arrival_tm` wins; ties go to the
greatest values (trades: `trade_pr, trade_size`; quotes: `bid_pr, bid_size,
ask_pr, ask_size`), then to the trade's `execution_id`, then to `source_file`,
so the winner never depends on file or line order. A null loses to any value, as in `max`.

One shuffle by record key and one sort within each shuffle partition: the first
row of each key in that order is kept (`row_number`), no join, never the whole
day in one order (test_plans.py). Spark's top-k rewrite of `row_number() = 1`
would sort every task's rows once more before the shuffle (a map-side
`WindowGroupLimit`), work that pays only when most keys come many times; a day
re-sends a small share of its records, so `spark_config` turns the rewrite off.
(A `max` over a struct of the record, the form before, aggregates sort-based and
so also sorted on both sides of the shuffle: the load of a 4 M-event day's
trades and quotes, written to Spark's `noop` sink, took 9.8–10.2 s that way,
8.2–8.4 s by `row_number` with the rewrite on, 6.1–7.1 s with it off.)
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

RECORD_KEY = ("symbol", "exchange", "event_tm", "event_seq_nb")


def _latest_per_key(records: DataFrame, tie_breakers: tuple[str, ...]) -> DataFrame:
    # Descending, nulls last: the order in which `max` would pick the winner.
    order = [F.col(c).desc_nulls_last() for c in ("arrival_tm", *tie_breakers)]
    latest_first = Window.partitionBy(*RECORD_KEY).orderBy(*order)
    return (
        records.select("*", F.row_number().over(latest_first).alias("_rank"))
        .where(F.col("_rank") == 1)
        .select(*records.columns)
    )


def latest_trades(raw_trades: DataFrame) -> DataFrame:
    return _latest_per_key(raw_trades, ("trade_pr", "trade_size", "execution_id", "source_file"))


def latest_quotes(raw_quotes: DataFrame) -> DataFrame:
    return _latest_per_key(raw_quotes, ("bid_pr", "bid_size", "ask_pr", "ask_size", "source_file"))
