import datetime as dt

from dagster import SkipReason, build_schedule_context

from capstone_assets import partitions
from capstone_assets.partitions import (
    EXCHANGE_TZ,
    START_DATE,
    is_trading_day,
    last_completed_trading_day,
    previous_trading_day,
    trading_day_partitions,
)
from capstone_assets.schedules import preprocessing_schedule


def test_partitions_skip_weekends_and_holidays():
    keys = trading_day_partitions.get_partition_keys(
        current_time=dt.datetime(2020, 8, 12, tzinfo=EXCHANGE_TZ)
    )
    assert keys[0] == "2020-01-02"  # 2020-01-01 is a holiday
    assert "2020-07-03" not in keys and "2020-08-08" not in keys and "2020-08-09" not in keys
    # Today's partition exists from the start of the trading day (end_offset=1).
    assert keys[-1] == "2020-08-12"
    assert trading_day_partitions.get_next_partition_key("2020-08-07") == "2020-08-10"
    assert trading_day_partitions.get_next_partition_key("2020-07-02") == "2020-07-06"


def test_previous_and_last_completed_trading_day():
    assert previous_trading_day(dt.date(2020, 8, 10)) == dt.date(2020, 8, 7)  # Monday -> Friday
    assert previous_trading_day(dt.date(2020, 7, 6)) == dt.date(2020, 7, 2)  # over a holiday
    assert not is_trading_day(dt.date(2020, 11, 26))  # Thanksgiving
    before_close = dt.datetime(2020, 8, 10, 16, 59, tzinfo=EXCHANGE_TZ)
    after_close = dt.datetime(2020, 8, 10, 17, 0, tzinfo=EXCHANGE_TZ)
    assert last_completed_trading_day(before_close) == dt.date(2020, 8, 7)
    assert last_completed_trading_day(after_close) == dt.date(2020, 8, 10)
    assert last_completed_trading_day(dt.datetime(2020, 8, 9, 12, tzinfo=EXCHANGE_TZ)) == dt.date(2020, 8, 7)


# Closures past the end of the old hand-written list (2027), and a one-off one.
GOOD_FRIDAY_2028 = dt.date(2028, 4, 14)
JUNETEENTH_2030 = dt.date(2030, 6, 19)
MOURNING_DAY_2025 = dt.date(2025, 1, 9)  # national day of mourning for President Carter


def test_the_calendar_comes_from_a_maintained_exchange_calendar():
    for closed in (GOOD_FRIDAY_2028, JUNETEENTH_2030, MOURNING_DAY_2025):
        assert not is_trading_day(closed), closed
    assert previous_trading_day(dt.date(2028, 4, 17)) == dt.date(2028, 4, 13)  # Monday -> Thursday
    assert previous_trading_day(dt.date(2030, 6, 20)) == dt.date(2030, 6, 18)
    assert previous_trading_day(dt.date(2025, 1, 10)) == dt.date(2025, 1, 8)
    # Early closes (13:00) are trading days.
    for early_close in (dt.date(2025, 7, 3), dt.date(2028, 11, 24), dt.date(2030, 12, 24)):
        assert is_trading_day(early_close), early_close
    at = dt.datetime(2030, 7, 1, tzinfo=EXCHANGE_TZ)
    keys = trading_day_partitions.get_partition_keys(current_time=at)
    for closed in (GOOD_FRIDAY_2028, JUNETEENTH_2030, MOURNING_DAY_2025):
        assert closed.isoformat() not in keys
    assert "2028-11-24" in keys and "2030-12-24" not in keys  # not a partition yet on 2030-07-01
    next_keys = {"2025-01-08": "2025-01-10", "2028-04-13": "2028-04-17", "2030-06-18": "2030-06-20"}
    for before, after in next_keys.items():
        assert keys[keys.index(before) + 1] == after


def test_partitions_and_the_gate_agree_on_every_day_of_the_horizon():
    end = partitions.CALENDAR_HORIZON_END
    assert end.year >= dt.date.today().year + 3 and (end.month, end.day) == (12, 31)
    at_end = dt.datetime(end.year, 12, 31, 12, tzinfo=EXCHANGE_TZ)
    keys = set(trading_day_partitions.get_partition_keys(current_time=at_end))
    day = dt.date.fromisoformat(START_DATE)
    while day <= end:
        assert (day.isoformat() in keys) == is_trading_day(day), day
        day += dt.timedelta(days=1)


def test_a_closure_has_no_partition_and_the_schedule_skips_it():
    def last_key(*at: int) -> str:
        keys = trading_day_partitions.get_partition_keys(current_time=dt.datetime(*at, tzinfo=EXCHANGE_TZ))
        return keys[-1]

    # end_offset=1: a trading day's partition exists from midnight New York. Dagster's exclusions
    # drop the closure's own window, so on a closure the next trading day's partition is there already.
    assert last_key(2025, 1, 8, 23, 59) == "2025-01-08"
    assert last_key(2025, 1, 9, 0, 0) == last_key(2025, 1, 9, 12) == "2025-01-10"
    assert last_key(2025, 1, 10, 0, 0) == "2025-01-10"
    assert last_completed_trading_day(dt.datetime(2025, 1, 9, 18, tzinfo=EXCHANGE_TZ)) == dt.date(2025, 1, 8)
    for closed in (GOOD_FRIDAY_2028, JUNETEENTH_2030, MOURNING_DAY_2025):
        at_five = dt.datetime.combine(closed, dt.time(17), tzinfo=EXCHANGE_TZ)
        context = build_schedule_context(scheduled_execution_time=at_five)
        assert isinstance(preprocessing_schedule(context), SkipReason), closed
    open_day = build_schedule_context(
        scheduled_execution_time=dt.datetime(2028, 4, 13, 17, tzinfo=EXCHANGE_TZ)
    )
    assert preprocessing_schedule(open_day).partition_key == "2028-04-13"
