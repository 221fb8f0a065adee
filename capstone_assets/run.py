"""Runs both workflows for every landed day through Dagster (`make run`).

    python -m capstone_assets.run [DAY ...]
    python -m capstone_assets.run --from 2020-08-05 --to 2020-08-11

Without days, every trading day with landing files under the landing root
(any root Spark reads, listed as ingestion lists it; files dated on a weekend
or holiday are named and left out); with `--from`/`--to`, every trading day in
that range; always in date order, so each day's report runs after its previous
trading day is loaded.

The jobs run in this one process against the Dagster instance in `DAGSTER_HOME`
(the runs show in the UI afterwards) and share one Spark session, so the JVM
starts once, not once per day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from dagster import DagsterInstance
from pyspark.sql import SparkSession

from capstone_assets import settings
from capstone_assets.cli import partition_day
from capstone_assets.partitions import is_trading_day
from capstone_assets.resources.lake import absolute
from capstone_assets.resources.landing import LandingZone
from capstone_assets.resources.spark import (
    SparkMasterUnreachable,
    check_master,
    session_from_config,
    spark_config,
)

# INFO, not Dagster's DEBUG event stream: the steps' own progress lines stay readable.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def landed_days(landing_root: str, spark: SparkSession) -> list[str]:
    """The trading days with data files, as ingestion lists them."""
    days = LandingZone(spark, landing_root).listing().days()
    for day in days:
        if not is_trading_day(dt.date.fromisoformat(day)):
            print(f"Landing files for {day} are ignored: it is not a trading day", file=sys.stderr)
    return [day for day in days if is_trading_day(dt.date.fromisoformat(day))]


def spark_session() -> SparkSession:
    """The session the jobs' `spark` resource would start: created here first, they reuse it."""
    return session_from_config(spark_config(settings.value("SPARK_MASTER")))


def run_days(days: list[str], instance: DagsterInstance) -> bool:
    from capstone_assets.definitions import defs  # after main's settings.check()

    for day in days:
        for job_name in ("preprocessing_job", "analytical_job"):
            print(f"==> {job_name} {day}", flush=True)
            result = defs.resolve_job_def(job_name).execute_in_process(
                partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET
            )
            if not result.success:
                print(
                    f"{job_name} failed for {day} (run {result.run_id}); see the log above", file=sys.stderr
                )
                return False
    return True


def show_report(days: list[str]) -> None:
    lake_root = absolute(settings.value("CAPSTONE_LAKE_ROOT"))
    spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    report_root = f"{lake_root}/eod_quote_report"
    report = spark.read.parquet(report_root)
    print(f"\nThe EOD quote report is at {report_root}/trade_dt=<day>/ ({', '.join(days)})")
    counts = report.groupBy("trade_dt").count().orderBy("trade_dt").collect()  # one row per day
    for row in counts:
        print(f"  trade_dt={row['trade_dt']}: {row['count']} rows")
    print(f"\nFirst rows of {days[-1]}:")
    (
        report.where(f"trade_dt = '{days[-1]}'")
        .orderBy("symbol", "exchange", "event_tm", "event_seq_nb")
        .show(10, truncate=False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capstone_assets.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("days", nargs="*", help="trading days (default: every landed day)")
    parser.add_argument("--from", dest="first", metavar="DAY", help="first day of a range")
    parser.add_argument("--to", dest="last", metavar="DAY", help="last day of a range (default: --from)")
    args = parser.parse_args(argv)
    try:
        settings.check()
        check_master(settings.value("SPARK_MASTER"))
    except (settings.ConfigError, SparkMasterUnreachable) as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    try:
        named = [partition_day(d) for d in args.days]
        first, last = (
            (partition_day(args.first, trading=False), partition_day(args.last or args.first, trading=False))
            if args.first
            else (None, None)
        )
    except ValueError as error:
        parser.error(str(error))
    landing_root = absolute(settings.value("CAPSTONE_LANDING_ROOT"))
    if first:
        span = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
        named += [d for d in span if is_trading_day(d)]
    if named:
        days = sorted({d.isoformat() for d in named})
    else:
        days = landed_days(landing_root, spark_session())
    if not days:
        print(f"No landing files under {landing_root}: nothing to run", file=sys.stderr)
        return 1
    print(f"Running {len(days)} trading days from {landing_root}: {', '.join(days)}")
    if not run_days(days, DagsterInstance.get()):
        return 1
    show_report(days)
    return 0


if __name__ == "__main__":
    sys.exit(main())
