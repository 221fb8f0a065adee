"""The analytical EOD quote report (SPEC.md §4).

Trades and quotes of day D go on one timeline per (symbol, exchange), a trade
sorting before a quote at the same `event_tm`; a running `last(..., ignorenulls)`
window carries the latest trade forward to every quote. The previous trading
day contributes one row per pair (its last trade), broadcast-joined: no join
grows with the number of trades times quotes. The 30-minute moving average is a
running sum that trades enter and leave: no window is added up again per trade.
"""

from __future__ import annotations

import decimal

from pyspark.sql import DataFrame
from pyspark.sql import Window as W
from pyspark.sql import functions as F

PAIR = ("symbol", "exchange")
MOVING_AVERAGE_MICROS = 30 * 60 * 1_000_000


def _micros(column: str) -> F.Column:
    # A NTZ timestamp as a number, without going through any time zone.
    epoch = F.lit("1970-01-01 00:00:00").cast("timestamp_ntz")
    return F.timestamp_diff("MICROSECOND", epoch, F.col(column))


# Prices the running sums of `with_moving_average` carry exactly enough: decimal(38,18) holds them
# to within 5e-19 (a relative 5e-15 at the smallest, as exact as a double's own sum of a window),
# and a window of 10^8 of the largest still fits its 20 integer digits.
EXACT_PRICE = decimal.Decimal("1e-4"), decimal.Decimal("1e12")
_SUM = "decimal(38,18)"


def _exact_price(price: F.Column) -> F.Column:
    """Whether the decimal sums carry `price` exactly: 0, or within `EXACT_PRICE`."""
    low, high = (F.lit(bound) for bound in EXACT_PRICE)
    return (price == 0) | ((price >= low) & (price < high))


def with_moving_average(trades: DataFrame) -> DataFrame:
    """Adds `mov_avg_pr`: the mean `trade_pr` of the pair's trades in [t − 30 min, t].

    Linear in the trades: each trade enters its pair's running sum and count at its `event_tm`
    and leaves them (an exit row) 30 minutes and 1 µs later, so at a trade the running values
    are those of its window, with every trade of the same instant in (a range frame from
    the start). Spark's sliding range frame would add up a trade's whole window again for
    every trade: one hot pair with 10,000 trades in 30 minutes is then 10,000 additions per
    trade. A pair with a price outside `EXACT_PRICE` (0 aside) takes that sliding frame: its
    window sums are too large or too fine for the decimal running sum."""
    exact = _exact_price(F.col("trade_pr"))
    # Typically empty; a pair is in it or not for the whole day, so each trade is on one side.
    unusual = F.broadcast(trades.where(~exact).select(*PAIR).distinct())
    running = _running_moving_average(trades.join(unusual, on=list(PAIR), how="left_anti"))
    sliding = _sliding_moving_average(trades.join(unusual, on=list(PAIR), how="left_semi"))
    return running.unionByName(sliding)


def _running_moving_average(trades: DataFrame) -> DataFrame:
    micros = _micros("event_tm")
    counted = F.when(F.col("trade_pr").isNotNull(), 1).otherwise(0)  # `avg` skips nulls
    # Entries at odd keys, exits at even ones: an exit of the instant t' − 30 min − 1 µs or
    # earlier sorts before a trade at t', an exit of a later instant after it.
    entries = trades.select(
        "*",
        (micros * 2 + 1).alias("_at"),
        F.col("trade_pr").cast(_SUM).alias("_amount"),
        counted.alias("_count"),
        F.lit(True).alias("_entry"),
    )
    exits = trades.select(
        *PAIR,
        ((micros + MOVING_AVERAGE_MICROS + 1) * 2).alias("_at"),
        (-F.col("trade_pr").cast(_SUM)).alias("_amount"),
        (-counted).alias("_count"),
        F.lit(False).alias("_entry"),
    )
    so_far = W.partitionBy(*PAIR).orderBy("_at").rangeBetween(W.unboundedPreceding, W.currentRow)
    count, amount = F.col("_in_window"), F.col("_window_amount")
    return (
        entries.unionByName(exits, allowMissingColumns=True)
        .select(
            "*",
            F.sum("_count").over(so_far).alias("_in_window"),
            F.sum("_amount").over(so_far).alias("_window_amount"),
        )
        .where("_entry")
        .select(*trades.columns, F.when(count > 0, amount.cast("double") / count).alias("mov_avg_pr"))
    )


def _sliding_moving_average(trades: DataFrame) -> DataFrame:
    window = W.partitionBy(*PAIR).orderBy(_micros("event_tm")).rangeBetween(-MOVING_AVERAGE_MICROS, 0)
    return trades.select("*", F.avg("trade_pr").over(window).alias("mov_avg_pr"))


def closing_trades(previous_day_trades: DataFrame) -> DataFrame:
    """Per pair, the last trade of the previous trading day: close and its moving average.

    The close's average needs only the pair's trades of the 30 minutes up to it, so no window
    runs over the day: one aggregate finds each pair's last `event_tm`, a second (the day's
    trades joined to it by pair, broadcast) keeps the trades from 30 minutes before it and
    takes the close (the greatest `event_seq_nb` at that instant) and their mean, the same
    decimal sum as `with_moving_average` (a double's when a price lies outside `EXACT_PRICE`).
    Both are hash aggregates of fixed-width values: no sort of the day's trades."""
    last = previous_day_trades.groupBy(*PAIR).agg(F.max("event_tm").alias("_last_tm"))
    in_window = previous_day_trades.join(F.broadcast(last), on=list(PAIR), how="inner").where(
        _micros("event_tm") >= _micros("_last_tm") - MOVING_AVERAGE_MICROS
    )
    price = F.col("trade_pr")
    exact = _exact_price(price)
    at_close = F.col("event_tm") == F.col("_last_tm")
    count, amount = F.col("_count"), F.col("_amount")
    return (
        in_window.groupBy(*PAIR)
        .agg(
            # `max_by` skips null orderings: only the trades of the last instant compete.
            F.max_by(F.when(at_close, price), F.when(at_close, F.col("event_seq_nb"))).alias("close_pr"),
            F.sum(F.when(exact, price.cast(_SUM))).alias("_amount"),
            F.count(price).alias("_count"),
            F.count(F.when(~exact, 1)).alias("_unusual"),
            F.avg(price).alias("_double_mean"),
        )
        .select(
            *PAIR,
            "close_pr",
            F.when(F.col("_unusual") > 0, F.col("_double_mean"))
            .when(count > 0, amount.cast("double") / count)
            .alias("close_mov_avg_pr"),
        )
    )


def eod_quote_report(
    trades: DataFrame, quotes: DataFrame, previous_day_trades: DataFrame, trade_dt: str
) -> DataFrame:
    """One row per loaded quote of `trade_dt`, with the latest trade and the previous close."""
    trade_events = with_moving_average(trades).select(
        *PAIR,
        "event_tm",
        "event_seq_nb",
        F.lit(0).alias("sort_kind"),  # trades first at equal event_tm
        F.struct("trade_pr", "mov_avg_pr").alias("trade"),
        *(F.lit(None).cast("double").alias(c) for c in ("bid_pr", "ask_pr")),
        *(F.lit(None).cast("int").alias(c) for c in ("bid_size", "ask_size")),
    )
    quote_events = quotes.select(
        *PAIR,
        "event_tm",
        "event_seq_nb",
        F.lit(1).alias("sort_kind"),
        F.lit(None).cast("struct<trade_pr:double,mov_avg_pr:double>").alias("trade"),
        "bid_pr",
        "ask_pr",
        "bid_size",
        "ask_size",
    )
    timeline = (
        W.partitionBy(*PAIR)
        .orderBy("event_tm", "sort_kind", "event_seq_nb")
        .rowsBetween(W.unboundedPreceding, W.currentRow)
    )
    is_quote = F.col("sort_kind") == 1
    quotes_with_last_trade = (
        trade_events.unionByName(quote_events)
        .select("*", F.last("trade", ignorenulls=True).over(timeline).alias("last_trade"))
        .where(is_quote)
    )
    close = closing_trades(previous_day_trades)
    return quotes_with_last_trade.join(F.broadcast(close), on=list(PAIR), how="left").select(
        F.lit(trade_dt).cast("date").alias("trade_dt"),
        *PAIR,
        "event_tm",
        "event_seq_nb",
        "bid_pr",
        "bid_size",
        "ask_pr",
        "ask_size",
        F.coalesce("last_trade.trade_pr", "close_pr").alias("last_trade_pr"),
        F.coalesce("last_trade.mov_avg_pr", "close_mov_avg_pr").alias("last_mov_avg_pr"),
        "close_pr",
        (F.col("bid_pr") - F.col("close_pr")).alias("bid_pr_mv"),
        (F.col("ask_pr") - F.col("close_pr")).alias("ask_pr_mv"),
    )
