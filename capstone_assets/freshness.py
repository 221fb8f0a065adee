"""Report freshness: a warning when a trading day's report is not in by its deadline.

At evaluation time the check looks at the latest trading day D whose deadline
(D at CAPSTONE_REPORT_DEADLINE, default 18:30, New York) has passed, and
passes iff `eod_quote_report` has a materialization for D that wrote data: a
materialization whose metadata says `status: deferred` (the report waited for
preprocessing and wrote nothing) does not count.

Dagster's `build_time_partition_freshness_checks` expects the *previous*
partition at the deadline, so this is a custom, unpartitioned check on the
partitioned asset. `report_freshness_schedule` evaluates it at the deadline on
trading days; it also runs after every report materialization (jobs that
select the analytical group include the checks of its assets), which clears
the warning as soon as a late report lands.
"""

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterInstance,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    asset_check,
    define_asset_job,
    schedule,
)

from capstone_assets.partitions import EXCHANGE_TZ, is_trading_day, last_completed_trading_day

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

REPORT = AssetKey("eod_quote_report")
CHECK_NAME = "materialized_by_deadline"
DEFERRED = "deferred"  # the report's `status` metadata when it waited and wrote nothing

ReportState = Literal["materialized", "deferred", "missing"]


def parse_deadline(text: str) -> dt.time:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(
            f"CAPSTONE_REPORT_DEADLINE must be a New York time as HH:MM (e.g. 18:30), not '{text}'"
        )
    return dt.time(int(match[1]), int(match[2]))


def expected_report_day(now: dt.datetime, deadline: dt.time) -> dt.date:
    """The latest trading day whose deadline (that day at `deadline`, New York) has passed."""
    return last_completed_trading_day(now, close=deadline)


def report_state(instance: DagsterInstance, day: str) -> ReportState:
    """Whether the day's report has a materialization with data, only deferred ones, or none."""
    state: ReportState = "missing"
    cursor = None
    while True:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=REPORT, asset_partitions=[day]), limit=100, cursor=cursor
        )
        for record in result.records:
            status = record.asset_materialization.metadata.get("status")
            if getattr(status, "value", status) != DEFERRED:
                return "materialized"
            state = "deferred"
        if not result.has_more:
            return state
        cursor = result.cursor


def freshness_result(day: dt.date, deadline: dt.time, state: ReportState) -> AssetCheckResult:
    """The check's verdict on `day`'s report, worded for the operator who gets the alert."""
    by = f"{deadline:%H:%M} New York"
    if state == "materialized":
        description = f"eod_quote_report for {day} is materialized (deadline {by})"
    else:
        deferred = " (its runs were deferred and wrote no data)" if state == "deferred" else ""
        description = (
            f"eod_quote_report for {day} is not materialized by {by}{deferred}: "
            "run analytical for that day / check the failed runs"
        )
    return AssetCheckResult(
        check_name=CHECK_NAME,
        passed=state == "materialized",
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata={"trading_day": day.isoformat(), "deadline": by, "report_state": state},
    )


@dataclass(frozen=True)
class ReportFreshness:
    check: AssetChecksDefinition
    job: "UnresolvedAssetJobDefinition"
    schedule: ScheduleDefinition


def _now() -> dt.datetime:
    return dt.datetime.now(tz=EXCHANGE_TZ)


def report_freshness(deadline_text: str, now: Callable[[], dt.datetime] = _now) -> ReportFreshness:
    """The check, a job that runs only it, and its schedule at the deadline on weekdays.

    Built from the deadline at assembly: the schedule's cron is the deadline."""
    deadline = parse_deadline(deadline_text)

    @asset_check(
        asset=REPORT,
        name=CHECK_NAME,
        blocking=False,
        description=f"Warns when the latest trading day's eod_quote_report is not materialized by "
        f"{deadline:%H:%M} New York (CAPSTONE_REPORT_DEADLINE); a deferred report does not count.",
    )
    def materialized_by_deadline(context: AssetCheckExecutionContext) -> AssetCheckResult:
        day = expected_report_day(now(), deadline)
        return freshness_result(day, deadline, report_state(context.instance, day.isoformat()))

    job = define_asset_job(
        "report_freshness_job",
        selection=AssetSelection.checks(materialized_by_deadline),
        description="Evaluates whether the latest trading day's report is in by its deadline.",
    )

    @schedule(
        name="report_freshness_schedule",
        cron_schedule=f"{deadline.minute} {deadline.hour} * * 1-5",
        execution_timezone=str(EXCHANGE_TZ),
        job=job,
        description=f"The report freshness check at {deadline:%H:%M} New York on trading days.",
    )
    def report_freshness_schedule(context: ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(EXCHANGE_TZ).date()
        if not is_trading_day(day):
            return SkipReason(f"{day} is an NYSE holiday: the previous trading day was checked then")
        return RunRequest(run_key=f"report_freshness:{day}")

    return ReportFreshness(materialized_by_deadline, job, report_freshness_schedule)
