"""`capstone-jobs`: the operator's view of the job tracker.

capstone-jobs list [--from DAY] [--to DAY] [--workflow W]
capstone-jobs show JOB_ID
capstone-jobs status JOB_ID          # the status word, for scripts
capstone-jobs release JOB_ID [--yes] # a stuck claim; never a live run
capstone-jobs last-trading-day
capstone-jobs check-day DAY          # exit 2 unless DAY is a trading day with a partition
capstone-jobs check-config           # exit 2 on a malformed setting, an unreachable Spark master or tracker

Every refusal is one line on stderr that says what to fix.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys

import sqlalchemy as sa

from capstone_assets import settings
from capstone_assets.partitions import (
    is_trading_day,
    last_completed_trading_day,
    parse_day,
    trading_day_partitions,
)
from capstone_assets.resources.spark import SparkMasterUnreachable, check_master
from capstone_assets.resources.tracker import (
    JobRecord,
    JobRefused,
    TrackerResource,
    TrackerUnreachable,
    redacted,
    utcnow,
)


def tracker_from_env() -> TrackerResource:
    return TrackerResource(
        url=settings.value("CAPSTONE_TRACKER_URL"), table=settings.value("CAPSTONE_TRACKER_TABLE")
    )


def partition_day(text: str, trading: bool = True) -> dt.date:
    """`text` as a day of the partitions (a trading day, unless `trading` is off: the ends of a
    range), or ValueError with one sentence that says what to fix."""
    day = parse_day(text)
    first = dt.date.fromisoformat(trading_day_partitions.get_first_partition_key())
    last = dt.date.fromisoformat(trading_day_partitions.get_last_partition_key())
    if day < first:
        raise ValueError(
            f"{day} is before the first trading-day partition, {first}: pick a day from {first} on"
        )
    if day > last:
        raise ValueError(
            f"{day} is after the last trading-day partition, {last} (a day's partition exists from "
            f"midnight New York that day): pick a day up to {last}"
        )
    if trading and not is_trading_day(day):
        raise ValueError(
            f"{day} is not a trading day (weekend or NYSE holiday): pick a weekday the NYSE was open"
        )
    return day


def _fmt(value) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


def _print_table(records: list[JobRecord]) -> None:
    columns = ("job_id", "status", "updated_time", "attempts", "run_id", "host", "pid", "error")
    rows = [[_fmt(getattr(r, c)) for c in columns] for r in records]
    rows = [[cell if len(cell) <= 60 else cell[:57] + "..." for cell in row] for row in rows]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _cmd_list(args, tracker: TrackerResource) -> int:
    last = parse_day(args.to) if args.to else dt.date.today()
    first = parse_day(args.from_) if args.from_ else last - dt.timedelta(days=30)
    records = tracker.list_jobs(first.isoformat(), last.isoformat(), args.workflow)
    _print_table(records)
    if not records:
        print(f"(no jobs from {first} to {last} in table {tracker.table})")
    return 0


def _existing_job(tracker: TrackerResource, job: str) -> JobRecord | None:
    record = tracker.get_job(job)
    if record is None:
        print(f"no job {job} in table {tracker.table}", file=sys.stderr)
    return record


def _cmd_show(args, tracker: TrackerResource) -> int:
    record = _existing_job(tracker, args.job_id)
    if record is None:
        return 1
    for name, value in vars(record).items():
        print(f"{name:15} {_fmt(value)}")
    if record.status == "running":
        print(f"{'live':15} {'yes' if tracker.is_live(record) else 'no (stale claim)'}")
    return 0


def _cmd_status(args, tracker: TrackerResource) -> int:
    print(tracker.get_status(args.job_id) or "none")
    return 0


def _cmd_release(args, tracker: TrackerResource) -> int:
    record = _existing_job(tracker, args.job_id)
    if record is None:
        return 1
    if record.status != "running" or tracker.is_live(record):
        reason = "it is a live run" if record.status == "running" else f"it is {record.status}, not running"
        print(f"Refusing to release {args.job_id}: {reason}.", file=sys.stderr)
        return 1
    if not args.yes:
        answer = input(f"Release {record.describe()}? It will be marked failed. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Not released.")
            return 1
    try:
        released = tracker.release(args.job_id, f"released by {getpass.getuser()} at {_fmt(utcnow())} UTC")
    except JobRefused as refusal:
        print(str(refusal), file=sys.stderr)
        return 1
    print(f"{released.job_id}: {released.status} ({released.error})")
    return 0


def _cmd_last_trading_day(args, tracker) -> int:
    print(last_completed_trading_day().isoformat())
    return 0


def _cmd_check_day(args, tracker) -> int:
    partition_day(args.day)
    return 0


def _cmd_check_config(args, tracker) -> int:
    settings.check()
    check_master(settings.value("SPARK_MASTER"))
    tracker_from_env().ping()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capstone-jobs", description="Job statuses of the daily workflows.")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="job statuses for a range of trading days")
    listing.add_argument(
        "--from", dest="from_", metavar="DAY", help="first day (default: 30 days before --to)"
    )
    listing.add_argument("--to", metavar="DAY", help="last day (default: today)")
    listing.add_argument("--workflow", choices=("preprocessing", "analytical"))
    for name, help_text in (("show", "one job in full"), ("status", "a job's status word")):
        sub.add_parser(name, help=help_text).add_argument("job_id")
    release = sub.add_parser("release", help="release a stuck claim (asks for confirmation)")
    release.add_argument("job_id")
    release.add_argument("--yes", action="store_true", help="do not ask")
    sub.add_parser("last-trading-day", help="the latest trading day whose 17:00 New York has passed")
    sub.add_parser("check-day", help="exit 2 unless DAY is a trading day with a partition").add_argument(
        "day"
    )
    sub.add_parser(
        "check-config", help="exit 2 on a malformed setting, an unreachable Spark master or tracker database"
    )
    args = parser.parse_args(argv)
    handlers = {
        "list": _cmd_list, "show": _cmd_show, "status": _cmd_status, "release": _cmd_release,
        "last-trading-day": _cmd_last_trading_day, "check-day": _cmd_check_day,
        "check-config": _cmd_check_config,
    }  # fmt: skip
    needs_tracker = args.command in ("list", "show", "status", "release")
    try:
        return handlers[args.command](args, tracker_from_env() if needs_tracker else None)
    except (ValueError, SparkMasterUnreachable) as error:
        print(f"capstone-jobs: {error}", file=sys.stderr)
        return 2
    except TrackerUnreachable as error:
        print(f"capstone-jobs: {error}: start it or fix CAPSTONE_TRACKER_URL", file=sys.stderr)
        return 2
    except sa.exc.SQLAlchemyError as error:
        # Its message holds the driver's first line, never the URL; the URL is shown without password.
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        url = redacted(settings.value("CAPSTONE_TRACKER_URL"))
        print(f"capstone-jobs: the tracker database {url} failed: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
