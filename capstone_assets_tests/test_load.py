"""SPEC.md §3: corrections by latest arrival, deterministic ties on values."""

import datetime as dt

from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from capstone_assets import schemas
from capstone_assets.transforms import load

T0 = dt.datetime(2020, 8, 5, 10, 0, 0)
EARLY, LATE = dt.datetime(2020, 8, 5, 9, 30), dt.datetime(2020, 8, 5, 16, 30)


def trade_row(seq, arrival, price, size, event_tm=T0, source="f1", execution_id=None, symbol="SYMA"):
    return Row(symbol=symbol, exchange="NYSE", event_tm=event_tm, event_seq_nb=seq, arrival_tm=arrival,
               trade_pr=price, trade_size=size, execution_id=execution_id, source_file=source)  # fmt: skip


def quote_row(seq, arrival, bid, bid_size, ask, ask_size, source="f1"):
    return Row(symbol="SYMA", exchange="NYSE", event_tm=T0, event_seq_nb=seq, arrival_tm=arrival,
               bid_pr=bid, bid_size=bid_size, ask_pr=ask, ask_size=ask_size, source_file=source)  # fmt: skip


def test_a_correction_replaces_the_earlier_record(spark):
    raw = spark.createDataFrame(
        [
            trade_row(1, EARLY, 10.0, 100, source="batch-1"),
            trade_row(1, LATE, 10.5, 100, source="batch-2"),  # the correction
            trade_row(2, EARLY, 11.0, 100),  # another key: kept
            trade_row(1, EARLY, 99.0, 100, symbol="SYMB"),  # another symbol: kept
        ],
        schemas.RAW_TRADES,
    )
    assertDataFrameEqual(
        load.latest_trades(raw),
        [
            trade_row(1, LATE, 10.5, 100, source="batch-2"),
            trade_row(2, EARLY, 11.0, 100),
            trade_row(1, EARLY, 99.0, 100, symbol="SYMB"),
        ],
    )


def test_key_uses_parsed_times_and_ties_go_to_the_greatest_values(spark):
    same_time = T0.replace(microsecond=500000)  # '.5' and '.500' parse to this one value
    rows = [
        trade_row(1, LATE, 10.0, 300, event_tm=same_time, source="a"),
        trade_row(1, LATE, 10.5, 100, event_tm=same_time, source="b"),  # greatest price wins
        trade_row(1, LATE, 10.5, 50, event_tm=same_time, source="c"),
        trade_row(1, EARLY, 99.0, 999, event_tm=same_time, source="d"),  # older arrival loses
    ]
    expected = [trade_row(1, LATE, 10.5, 100, event_tm=same_time, source="b")]
    # Whatever the input order, the same winner.
    for ordering in (rows, rows[::-1], rows[1:] + rows[:1]):
        assertDataFrameEqual(
            load.latest_trades(spark.createDataFrame(ordering, schemas.RAW_TRADES)), expected
        )


def test_quote_ties_compare_bid_then_ask(spark):
    rows = [
        quote_row(1, LATE, 10.0, 100, 10.2, 100, source="a"),
        quote_row(1, LATE, 10.0, 100, 10.3, 100, source="b"),  # same bid, greater ask
        quote_row(1, LATE, 9.9, 500, 11.0, 900, source="c"),
    ]
    for ordering in (rows, rows[::-1]):
        assertDataFrameEqual(
            load.latest_quotes(spark.createDataFrame(ordering, schemas.RAW_QUOTES)),
            [quote_row(1, LATE, 10.0, 100, 10.3, 100, source="b")],
        )
    assert (
        load.latest_quotes(spark.createDataFrame(rows, schemas.RAW_QUOTES)).columns
        == schemas.QUOTES.fieldNames()
    )


def test_a_null_loses_a_tie_to_any_value_and_a_nan_wins_it(spark):
    """The order of `max`: a null below every value, NaN above every number (Spark's ordering).
    Each winner has the smaller `source_file`, the last tie-breaker: only the null or NaN decides."""
    rows = [
        trade_row(1, LATE, 10.0, 100, source="b", execution_id=None),
        trade_row(1, LATE, 10.0, 100, source="a", execution_id="X1"),  # a value beats a null
        trade_row(2, LATE, 10.0, 100, source="d"),
        trade_row(2, LATE, float("nan"), 100, source="c"),  # NaN is the greatest double
    ]
    for ordering in (rows, rows[::-1]):
        assertDataFrameEqual(
            load.latest_trades(spark.createDataFrame(ordering, schemas.RAW_TRADES)),
            [
                trade_row(1, LATE, 10.0, 100, source="a", execution_id="X1"),
                trade_row(2, LATE, float("nan"), 100, source="c"),
            ],
        )
