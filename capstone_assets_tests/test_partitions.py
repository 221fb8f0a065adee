import datetime as dt

from capstone_assets.partitions import (
    EXCHANGE_TZ,
    is_trading_day,
    last_completed_trading_day,
    previous_trading_day,
    trading_day_partitions,
)


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
