"""Trading-day partitions shared by every asset.

One partition per NYSE trading day, in New York time: weekends and the NYSE's
full-day closures are not partitions, so the "previous partition" of a day is
its previous trading day. `end_offset=1` makes today's partition exist from the
start of the trading day (midnight New York), so the 17:00 schedule and the
landing sensor can target it. (On a closure, Dagster's exclusions drop that
day's window, so the next trading day's partition is there from the closure's
midnight.)

The closures come from the NYSE calendar of the `holidays` package: rules for
the regular holidays (any year to 2100) plus the one-off closures the package
has recorded (2025-01-09, a national day of mourning). Early closes (13:00)
are trading days. Nothing is downloaded: the data ships with the package, and
a new one-off closure arrives with a new release of it.

`is_trading_day` asks the calendar for any date. The partitions need their
closures as a list, so they exclude those from START_DATE through the end of
the year CALENDAR_HORIZON_YEARS after the current one, computed when this
module is imported. Past that horizon a closure would be a partition; since
every process (code server, daemon, run worker) recomputes it on start, a
process would have to run for years unrestarted to reach it.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from dagster import TimeWindowPartitionsDefinition
from holidays.constants import PUBLIC
from holidays.financial.ny_stock_exchange import NewYorkStockExchange

EXCHANGE_TZ = ZoneInfo("America/New_York")
START_DATE = "2020-01-01"
CALENDAR_HORIZON_YEARS = 5
CALENDAR_HORIZON_END = dt.date(dt.datetime.now(tz=EXCHANGE_TZ).year + CALENDAR_HORIZON_YEARS, 12, 31)


@lru_cache(maxsize=None)
def _closures(year: int) -> frozenset[dt.date]:
    """The NYSE's full-day closures on weekdays of `year` (the `public` category: no early closes)."""
    closed = NewYorkStockExchange(years=year, categories=(PUBLIC,))
    return frozenset(day for day in closed if day.weekday() < 5)


def is_trading_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _closures(day.year)


def previous_trading_day(day: dt.date) -> dt.date:
    candidate = day - dt.timedelta(days=1)
    while not is_trading_day(candidate):
        candidate -= dt.timedelta(days=1)
    return candidate


def _excluded_days() -> list[dt.datetime]:
    years = range(dt.date.fromisoformat(START_DATE).year, CALENDAR_HORIZON_END.year + 1)
    days = sorted(day for year in years for day in _closures(year))
    return [dt.datetime.combine(day, dt.time(), tzinfo=EXCHANGE_TZ) for day in days]


trading_day_partitions = TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5",
    start=START_DATE,
    timezone=str(EXCHANGE_TZ),
    fmt="%Y-%m-%d",
    end_offset=1,
    exclusions=_excluded_days(),
)


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
