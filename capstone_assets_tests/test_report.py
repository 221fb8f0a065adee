"""SPEC.md §4 on hand-computed timelines."""

import datetime as dt
import random
from fractions import Fraction

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from capstone_assets import schemas
from capstone_assets.assets import analytics
from capstone_assets.resources import LakeResource
from capstone_assets.transforms import report

DAY = "2020-08-10"  # a Monday
FRIDAY = "2020-08-07"


def at(day: str, clock: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day} {clock}")


def trades(spark, rows, day=DAY):
    """rows: (symbol, exchange, clock, seq, price)."""
    return spark.createDataFrame(
        [(s, e, at(day, c), q, at(day, "09:00:00"), p, 100, None, "f") for s, e, c, q, p in rows],
        schemas.TRADES,
    )


def quotes(spark, rows, day=DAY):
    """rows: (symbol, exchange, clock, seq, bid, ask)."""
    return spark.createDataFrame(
        [(s, e, at(day, c), q, at(day, "09:00:00"), b, 100, a, 200, "f") for s, e, c, q, b, a in rows],
        schemas.QUOTES,
    )


def report_row(symbol, exchange, clock, seq, bid, ask, last, mov, close):
    return Row(
        trade_dt=dt.date.fromisoformat(DAY), symbol=symbol, exchange=exchange, event_tm=at(DAY, clock),
        event_seq_nb=seq, bid_pr=bid, bid_size=100, ask_pr=ask, ask_size=200, last_trade_pr=last,
        last_mov_avg_pr=mov, close_pr=close,
        bid_pr_mv=None if close is None else bid - close, ask_pr_mv=None if close is None else ask - close,
    )  # fmt: skip


def test_moving_average_includes_exactly_thirty_minutes_earlier(spark):
    day_trades = trades(spark, [
        ("A", "X", "10:00:00.000", 1, 10.0),
        ("A", "X", "10:29:59.999", 2, 20.0),  # 30 min + 1 ms before 11:00: out
        ("A", "X", "10:30:00.000", 3, 30.0),  # exactly 30 min before 11:00: in
        ("A", "X", "11:00:00.000", 4, 60.0),
        ("B", "X", "10:45:00.000", 1, 1000.0),  # another pair never mixes in
    ])  # fmt: skip
    averages = report.with_moving_average(day_trades).select("symbol", "event_seq_nb", "mov_avg_pr")
    assertDataFrameEqual(
        averages,
        [
            Row(symbol="A", event_seq_nb=1, mov_avg_pr=10.0),
            Row(symbol="A", event_seq_nb=2, mov_avg_pr=15.0),
            Row(symbol="A", event_seq_nb=3, mov_avg_pr=20.0),
            Row(symbol="A", event_seq_nb=4, mov_avg_pr=45.0),  # (30 + 60) / 2
            Row(symbol="B", event_seq_nb=1, mov_avg_pr=1000.0),
        ],
    )


def test_moving_average_equals_the_exact_mean_of_each_window(spark):
    """Seeded trades at window edges (exactly 30 min, 1 µs over, same instant) and prices of
    every size, the running sums' and (pair C: 1e300, 1e-9) the sliding frame's, against the
    exact mean of each trade's window."""
    rng = random.Random(7)
    steps = [0, 1, 1_000, 60_000_000, 1_800_000_000, 1_799_999_999, 1_800_000_001, 600_000_000]
    prices = {"A": [0.0, 0.1, 12.34, 99.99, 1e-4, 123456.789], "C": [1e300, 1.0, 1e-9, 5.5]}
    rows, clock = [], dt.datetime.fromisoformat(f"{DAY} 09:30:00")
    for symbol, exchange in [("A", "X"), ("A", "Y"), ("C", "X")]:
        t = clock
        for seq in range(60):
            t += dt.timedelta(microseconds=rng.choice(steps))
            rows.append((symbol, exchange, t, seq, clock, rng.choice(prices[symbol]), 100, None, "f"))
    got = {
        (r["symbol"], r["exchange"], r["event_seq_nb"]): r["mov_avg_pr"]
        for r in report.with_moving_average(spark.createDataFrame(rows, schemas.TRADES)).collect()
    }
    assert len(got) == len(rows)
    for symbol, exchange, t, seq, _, *_ in rows:
        window = [
            Fraction(r[5]) for r in rows
            if (r[0], r[1]) == (symbol, exchange) and t - dt.timedelta(minutes=30) <= r[2] <= t
        ]  # fmt: skip
        exact = float(sum(window) / len(window))
        assert got[(symbol, exchange, seq)] == pytest.approx(exact, rel=1e-15, abs=0), (symbol, exchange, seq)


def test_closing_trade_and_its_average_match_the_last_trade_of_each_pair(spark):
    """Seeded previous days: each pair's close is its trade with the greatest (event_tm,
    event_seq_nb), several trades sharing the last instant, and the close's average is the exact
    mean of the pair's trades from 30 minutes before it (window edges at exactly 30 min and
    1 µs over; pair C with prices the decimal sums cannot carry)."""
    rng = random.Random(11)
    steps = [0, 1, 1_000, 60_000_000, 1_800_000_000, 1_799_999_999, 1_800_000_001, 600_000_000]
    prices = {"A": [0.0, 0.1, 12.34, 99.99, 1e-4, 123456.789], "C": [1e300, 1.0, 1e-9, 5.5]}
    rows, clock = [], dt.datetime.fromisoformat(f"{FRIDAY} 09:30:00")
    for symbol, exchange, count in [("A", "X", 40), ("A", "Y", 3), ("C", "X", 40), ("D", "X", 1)]:
        t, seqs = clock, rng.sample(range(-1000, 1000), count)
        for seq in seqs:
            t += dt.timedelta(microseconds=rng.choice(steps))
            rows.append(
                (symbol, exchange, t, seq, clock, rng.choice(prices.get(symbol, [7.0])), 100, None, "f")
            )
        # The last instant again, with sequence numbers above and below all others (the close is
        # the one above: its price is the pair's only 2.5).
        rows += [(symbol, exchange, t, n, clock, p, 100, None, "f") for n, p in ((5000, 2.5), (-5000, 3.5))]
    got = {
        (r["symbol"], r["exchange"]): (r["close_pr"], r["close_mov_avg_pr"])
        for r in report.closing_trades(spark.createDataFrame(rows, schemas.TRADES)).collect()
    }
    assert set(got) == {(r[0], r[1]) for r in rows}
    for pair, (close, average) in got.items():
        mine = [r for r in rows if (r[0], r[1]) == pair]
        last = max(mine, key=lambda r: (r[2], r[3]))
        window = [Fraction(r[5]) for r in mine if last[2] - dt.timedelta(minutes=30) <= r[2]]
        assert last[3] == 5000 and close == last[5] == 2.5, pair
        assert average == pytest.approx(float(sum(window) / len(window)), rel=1e-15, abs=0), pair


def test_latest_trade_previous_close_and_same_time_ordering(spark):
    friday = trades(spark, [
        ("A", "X", "15:00:00", 1, 8.0),
        ("A", "X", "15:59:00", 2, 9.0),  # Friday's close; 15:00 is 59 min earlier, so its average is 9.0
        ("B", "X", "15:00:00", 1, 50.0),
    ], day=FRIDAY)  # fmt: skip
    monday_trades = trades(spark, [
        ("A", "X", "10:00:00", 5, 10.0),
        ("A", "X", "10:00:00", 6, 12.0),  # same event_tm, greater seq: the latest
        ("A", "X", "10:20:00", 7, 14.0),
    ])  # fmt: skip
    monday_quotes = quotes(spark, [
        ("A", "X", "09:45:00", 1, 9.5, 9.7),  # before the day's first trade: Friday's last
        ("A", "X", "10:00:00", 2, 11.5, 11.7),  # same time as trades 5 and 6: they count as before
        ("A", "X", "10:30:00", 3, 13.5, 13.7),
        ("B", "X", "10:00:00", 1, 49.0, 51.0),  # no trade today: Friday's for the pair
        ("C", "X", "10:00:00", 1, 5.0, 6.0),  # no trade today nor Friday: nulls
    ])  # fmt: skip
    # Friday is Monday's previous trading day (the weekend has no folder).
    result = report.eod_quote_report(monday_trades, monday_quotes, friday, DAY)
    assertDataFrameEqual(
        result,
        [
            report_row("A", "X", "09:45:00", 1, 9.5, 9.7, last=9.0, mov=9.0, close=9.0),
            report_row("A", "X", "10:00:00", 2, 11.5, 11.7, last=12.0, mov=11.0, close=9.0),
            report_row("A", "X", "10:30:00", 3, 13.5, 13.7, last=14.0, mov=12.0, close=9.0),
            report_row("B", "X", "10:00:00", 1, 49.0, 51.0, last=50.0, mov=50.0, close=50.0),
            report_row("C", "X", "10:00:00", 1, 5.0, 6.0, last=None, mov=None, close=None),
        ],
    )
    assert result.schema.fieldNames() == schemas.EOD_QUOTE_REPORT.fieldNames()


def test_previous_trading_day_is_the_latest_day_with_trades_for_any_pair(spark, tmp_path):
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
    thursday, friday, saturday = "2020-08-06", FRIDAY, "2020-08-08"
    lake.write_day(spark, trades(spark, [("A", "X", "15:00:00", 1, 7.0), ("B", "X", "15:00:00", 1, 70.0)],
                                 day=thursday), "trades", thursday)  # fmt: skip
    lake.write_day(spark, trades(spark, [("A", "X", "15:00:00", 1, 8.0)], day=FRIDAY), "trades", FRIDAY)
    lake.write_day(spark, trades(spark, []), "trades", saturday)  # loaded, without a trade: skipped
    day, previous = analytics.previous_trading_day_trades(spark, lake, DAY)
    assert day == FRIDAY
    # Decided per date: B has no Friday trade, so B gets nothing (Thursday is not searched).
    assertDataFrameEqual(
        report.closing_trades(previous), [Row(symbol="A", exchange="X", close_pr=8.0, close_mov_avg_pr=8.0)]
    )
    # Seven days back at most: from 2020-08-14, Friday the 7th is out of reach, Saturday has no trade.
    day, previous = analytics.previous_trading_day_trades(spark, lake, "2020-08-15")
    assert (day, previous.count()) == (None, 0)
    # A day before the others, with Thursday alone in reach.
    assert analytics.previous_trading_day_trades(spark, lake, FRIDAY)[0] == thursday


def test_no_previous_day_gives_nulls(spark):
    empty = spark.createDataFrame([], schemas.TRADES)
    result = report.eod_quote_report(
        trades(spark, [("A", "X", "10:00:00", 1, 10.0)]),
        quotes(spark, [("A", "X", "09:59:00", 1, 9.0, 9.5), ("A", "X", "10:01:00", 2, 9.8, 10.2)]),
        empty,
        DAY,
    )
    assertDataFrameEqual(
        result,
        [
            report_row("A", "X", "09:59:00", 1, 9.0, 9.5, last=None, mov=None, close=None),
            report_row("A", "X", "10:01:00", 2, 9.8, 10.2, last=10.0, mov=10.0, close=None),
        ],
    )
