"""Trading-day partitions shared by every asset.

One partition per NYSE trading day, in New York time: weekends and the
holidays below are not partitions, so the "previous partition" of a day is its
previous trading day. `end_offset=1` makes today's partition exist from the
start of the trading day (midnight New York), so the 17:00 schedule and the
landing sensor can target it.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import TimeWindowPartitionsDefinition

EXCHANGE_TZ = ZoneInfo("America/New_York")
START_DATE = "2020-01-01"

# Full-day NYSE closures. To extend: add the ISO date; nothing else changes.
# Early closes (13:00) are trading days and are not listed.
NYSE_HOLIDAYS: tuple[str, ...] = (
    # 2020
    "2020-01-01",
    "2020-01-20",
    "2020-02-17",
    "2020-04-10",
    "2020-05-25",
    "2020-07-03",
    "2020-09-07",
    "2020-11-26",
    "2020-12-25",
    # 2021
    "2021-01-01",
    "2021-01-18",
    "2021-02-15",
    "2021-04-02",
    "2021-05-31",
    "2021-07-05",
    "2021-09-06",
    "2021-11-25",
    "2021-12-24",
    # 2022
    "2022-01-17",
    "2022-02-21",
    "2022-04-15",
    "2022-05-30",
    "2022-06-20",
    "2022-07-04",
    "2022-09-05",
    "2022-11-24",
    "2022-12-26",
    # 2023
    "2023-01-02",
    "2023-01-16",
    "2023-02-20",
    "2023-04-07",
    "2023-05-29",
    "2023-06-19",
    "2023-07-04",
    "2023-09-04",
    "2023-11-23",
    "2023-12-25",
    # 2024
    "2024-01-01",
    "2024-01-15",
    "2024-02-19",
    "2024-03-29",
    "2024-05-27",
    "2024-06-19",
    "2024-07-04",
    "2024-09-02",
    "2024-11-28",
    "2024-12-25",
    # 2025 (01-09: national day of mourning)
    "2025-01-01",
    "2025-01-09",
    "2025-01-20",
    "2025-02-17",
    "2025-04-18",
    "2025-05-26",
    "2025-06-19",
    "2025-07-04",
    "2025-09-01",
    "2025-11-27",
    "2025-12-25",
    # 2026
    "2026-01-01",
    "2026-01-19",
    "2026-02-16",
    "2026-04-03",
    "2026-05-25",
    "2026-06-19",
    "2026-07-03",
    "2026-09-07",
    "2026-11-26",
    "2026-12-25",
    # 2027
    "2027-01-01",
    "2027-01-18",
    "2027-02-15",
    "2027-03-26",
    "2027-05-31",
    "2027-06-18",
    "2027-07-05",
    "2027-09-06",
    "2027-11-25",
    "2027-12-24",
)

_HOLIDAY_DATES = frozenset(dt.date.fromisoformat(d) for d in NYSE_HOLIDAYS)

trading_day_partitions = TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5",
    start=START_DATE,
    timezone=str(EXCHANGE_TZ),
    fmt="%Y-%m-%d",
    end_offset=1,
    exclusions=[dt.datetime.combine(day, dt.time(), tzinfo=EXCHANGE_TZ) for day in sorted(_HOLIDAY_DATES)],
)


def is_trading_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _HOLIDAY_DATES


def previous_trading_day(day: dt.date) -> dt.date:
    candidate = day - dt.timedelta(days=1)
    while not is_trading_day(candidate):
        candidate -= dt.timedelta(days=1)
    return candidate


def last_completed_trading_day(now: dt.datetime | None = None, close: dt.time = dt.time(17)) -> dt.date:
    """The latest trading day whose end-of-day time (17:00 New York) has passed."""
    now_ny = (now or dt.datetime.now(tz=EXCHANGE_TZ)).astimezone(EXCHANGE_TZ)
    today = now_ny.date()
    if is_trading_day(today) and now_ny.time() >= close:
        return today
    return previous_trading_day(today)


def parse_day(value: str) -> dt.date:
    """A partition key or CLI argument as a date, with a message a user can act on."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a date in the form YYYY-MM-DD") from None
