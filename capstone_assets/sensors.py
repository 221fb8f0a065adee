"""Sensors: new landing batches re-run a day's preprocessing; loaded days get their report.

* `landing_sensor` fingerprints each day's landing files (path, size and
  modification time from Hadoop's FileStatus, through the one landing lister,
  so any root Spark reads: local, `file://`, HDFS, `s3a://`, `abfss://`). A
  trading day whose files changed gets a preprocessing run; while that day's
  preprocessing is running its old fingerprint is kept, so a batch landing
  mid-run is picked up by the next tick. The first tick only records what is
  already there (files present before the sensor starts are the schedule's or
  a backfill's). A change on a weekend or holiday is a warning, never a run.
* `analytical_sensor` reads `trades` and `quotes` materializations in storage
  order, a bounded batch per tick, and keeps in its cursor the days whose
  report is due: a day newly loaded, and, when a day D's trades change, every
  later report whose previous close comes from D (the following trading days
  up to the first one with trades, within SPEC.md §4's seven days) that was
  already reported; those turn `failed` in the tracker ("stale: previous close
  changed"). A due day leaves the cursor only when its report run is
  requested, which is when the analytical gate passes, D is `success`, and no
  report run of that day is in flight; or when a report computed after the
  change already exists.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    EventLogRecord,
    RunRequest,
    RunsFilter,
    RunStatusChangeRecordsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster._core.storage.tags import PARTITION_NAME_TAG

from capstone_assets.assets.analytics import DEFERRED, PREVIOUS_DAY_SEARCH_DAYS
from capstone_assets.jobs import ANALYTICAL, PREPROCESSING, analytical_job, preprocessing_job
from capstone_assets.partitions import is_trading_day
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.resources.landing import LandingZone, local_session
from capstone_assets.resources.tracker import RUNNING, SUCCESS, JobRefused, job_id
from capstone_assets.tracking import WORKFLOW_ASSETS, analytical_gate

# Records of trades and quotes read per tick: a backlog takes several ticks, none is skipped.
BATCH = 500
REPORT = AssetKey("eod_quote_report")
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
STALE = "stale: previous close changed"


def _day(day: str) -> dt.date:
    return dt.date.fromisoformat(day)


# --------------------------------------------------------------------------- landing
@sensor(job=preprocessing_job, minimum_interval_seconds=60)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource, tracker: TrackerResource):
    # Hadoop's FileSystem lives in the JVM: the first tick starts a small local Spark
    # session in this process (seconds, a few hundred MB), kept for the later ticks.
    listing = LandingZone(local_session(), lake.landing_root).listing()
    current = listing.fingerprints()
    if context.cursor is None:
        return SensorResult(
            skip_reason=f"Recorded {len(current)} landing days as the baseline",
            cursor=json.dumps({"days": current}),
        )
    seen = _seen_fingerprints(json.loads(context.cursor), current)
    changed = [d for d, fp in sorted(current.items()) if seen.get(d) != fp]
    requests, cursor = [], dict(current)
    for day in changed:
        if not is_trading_day(_day(day)):
            context.log.warning(f"Landing files for {day} are ignored: it is not a trading day")
            continue
        if tracker.get_status(job_id(PREPROCESSING, day)) == RUNNING:
            cursor[day] = seen.get(day, "")  # retried once the running one ends
            continue
        for path in (p for p in listing.skipped if f"/{day}/" in p):
            context.log.info(f"Skipping {path}: not a data file (hidden, marker or out of the layout)")
        requests.append(RunRequest(run_key=f"landing:{day}:{current[day]}", partition_key=day))
    return SensorResult(run_requests=requests, cursor=json.dumps({"days": cursor}))


def _seen_fingerprints(state: dict, current: dict[str, str]) -> dict[str, str]:
    if "days" in state:
        return state["days"]
    # A cursor from before the Hadoop lister hashed other path forms and times: the
    # days it knew count as seen, a day it did not know is new.
    return {day: current.get(day, fp) for day, fp in state.items()}


# ------------------------------------------------------------------------ analytical
@dataclass
class Due:
    """A day whose report is due because of the change at storage id `since`."""

    since: int
    changed_by: str  # the run that made the change
    changed_at: float  # when
    waits_for: list[str] = field(default_factory=list)  # days whose preprocessing must be success

    def merge(self, other: Due) -> None:
        if other.since > self.since:
            self.since, self.changed_by, self.changed_at = other.since, other.changed_by, other.changed_at
        self.waits_for = sorted(set(self.waits_for) | set(other.waits_for))


def _new_loads(instance: DagsterInstance, after: int) -> tuple[list[EventLogRecord], int]:
    """The trades and quotes materializations after `after`, in storage order, at most a batch."""
    batches = [
        instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), after_storage_id=after), limit=BATCH, ascending=True
        ).records
        for asset in ("trades", "quotes")
    ]
    merged = sorted((r for batch in batches for r in batch), key=lambda r: r.storage_id)
    full = [batch[-1].storage_id for batch in batches if len(batch) == BATCH]
    if full:
        # A full batch may stop short of the other asset's records: process only up to
        # where both are complete, so the cursor never passes a record not read.
        merged = [r for r in merged if r.storage_id <= min(full)]
    return merged, merged[-1].storage_id if merged else after


class _EventLog:
    """What the event log says about days' reports and loads, cached for one tick."""

    def __init__(self, instance: DagsterInstance):
        self.instance = instance
        self._latest: dict[tuple[str, str], EventLogRecord | None] = {}
        runs = instance.get_runs(RunsFilter(statuses=IN_FLIGHT))
        self.in_flight = {
            run.tags.get(PARTITION_NAME_TAG)
            for run in runs
            if run.job_name == analytical_job.name or REPORT in (run.asset_selection or ())
        }

    def latest(self, asset: str, day: str) -> EventLogRecord | None:
        if (asset, day) not in self._latest:
            records = self.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[day]), limit=1
            ).records
            self._latest[(asset, day)] = records[0] if records else None
        return self._latest[(asset, day)]

    def reported(self, day: str) -> bool:
        return day in self.in_flight or self.latest(REPORT.to_user_string(), day) is not None

    def fresh(self, day: str, due: Due) -> bool:
        """Whether a report computed after the change exists (and none is in flight)."""
        report = self.latest(REPORT.to_user_string(), day)
        if day in self.in_flight or report is None or report.storage_id < due.since:
            return False
        status = report.asset_materialization.metadata.get("status")
        if status is not None and status.value == DEFERRED:
            return False
        if report.run_id == due.changed_by:
            return True  # the run that loaded the day reported it afterwards
        run = self.instance.get_run_record_by_id(report.run_id) if report.run_id else None
        return bool(run and run.start_time and run.start_time > due.changed_at)

    def has_trades(self, day: str) -> bool:
        """Whether the day's loaded trades have rows: a later day's close comes from it then."""
        record = self.latest("trades", day)
        rows = record.asset_materialization.metadata.get("dagster/row_count") if record else None
        return bool(rows and rows.value)


def _following_days(day: str) -> list[str]:
    """The trading days whose previous close may come from `day` (SPEC.md §4)."""
    following = (_day(day) + dt.timedelta(days=n) for n in range(1, PREVIOUS_DAY_SEARCH_DAYS + 1))
    return [d.isoformat() for d in following if is_trading_day(d)]


def _mark_due(context, tracker: TrackerResource, events: _EventLog, records: list[EventLogRecord], due: dict):
    """Adds the days whose report the new loads make due; marks stale reports failed."""
    changes: dict[str, EventLogRecord] = {}
    trade_changes: dict[str, EventLogRecord] = {}
    for record in records:  # in storage order: the last one of a day wins
        if not record.partition_key:
            continue
        changes[record.partition_key] = record
        if record.asset_key.to_user_string() == "trades":
            trade_changes[record.partition_key] = record

    def add(day: str, change: EventLogRecord, reason: str, waits_for: list[str]) -> None:
        entry = Due(change.storage_id, change.run_id, change.timestamp, waits_for)
        if events.fresh(day, entry):
            return
        if tracker.mark_stale(job_id(ANALYTICAL, day), reason):
            context.log.warning(f"{job_id(ANALYTICAL, day)}: {reason}")
        if day in due:
            due[day].merge(entry)
        else:
            due[day] = entry

    for day, change in sorted(changes.items()):
        rerun = f"analytical_sensor re-runs the report once preprocessing of {day} is success"
        add(day, change, f"stale: the trades or quotes of {day} were reloaded; {rerun}", [])
    for day, change in sorted(trade_changes.items()):
        rerun = f"analytical_sensor re-runs the report once preprocessing of {day} is success"
        for later in _following_days(day):
            if events.reported(later):
                add(later, change, f"{STALE}: the trades of {day} were reloaded; {rerun}", [day])
            if events.has_trades(later):
                break


def _blocked(tracker: TrackerResource, lake: LakeResource, events: _EventLog, day: str, entry: Due):
    """Why the day's report may not be requested yet, or None."""
    statuses = tracker.statuses(PREPROCESSING, entry.waits_for) if entry.waits_for else {}
    for other in entry.waits_for:
        if statuses.get(other) != SUCCESS:
            return f"{job_id(PREPROCESSING, other)} is {statuses.get(other, 'not run')}, not success"
    if day in events.in_flight or tracker.get_status(job_id(ANALYTICAL, day)) == RUNNING:
        return "a report run of the day is in flight"

    def landed(other: str) -> bool:
        # Files on weekends only make warnings in the gate: the run itself logs them.
        return is_trading_day(_day(other)) and lake.has_landing_files(other, local_session)

    try:
        analytical_gate(tracker, day, landed)
    except JobRefused as refusal:
        return str(refusal)
    return None


def _read_cursor(cursor: str | None) -> tuple[int, dict[str, Due]]:
    if not cursor:
        return 0, {}
    if cursor.isdigit():  # written before the cursor kept the due days
        return int(cursor), {}
    state = json.loads(cursor)
    return state["after"], {day: Due(**entry) for day, entry in state["due"].items()}


@sensor(job=analytical_job, minimum_interval_seconds=30)
def analytical_sensor(context: SensorEvaluationContext, tracker: TrackerResource, lake: LakeResource):
    after, due = _read_cursor(context.cursor)
    records, after = _new_loads(context.instance, after)
    events = _EventLog(context.instance)
    _mark_due(context, tracker, events, records, due)
    requests, waiting = [], []
    for day in sorted(due):
        entry = due[day]
        if events.fresh(day, entry):
            del due[day]  # a report computed after the change exists already
            continue
        if any((r := events.latest(a, day)) and r.storage_id > after for a in ("trades", "quotes")):
            continue  # later loads of the day are in the backlog: a later tick reads them first
        reason = _blocked(tracker, lake, events, day, entry)
        if reason:
            waiting.append(f"{day}: {reason}")
            continue
        requests.append(RunRequest(run_key=f"analytical:{day}:{entry.since}", partition_key=day))
        del due[day]
    for line in waiting:
        context.log.info(f"Report waits: {line}")
    cursor = json.dumps({"after": after, "due": {day: asdict(entry) for day, entry in sorted(due.items())}})
    if requests:
        return SensorResult(run_requests=requests, cursor=cursor)
    return SensorResult(skip_reason="; ".join(waiting) or "No report due", cursor=cursor)


# --------------------------------------------------------------------------- ended runs
ENDED = (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED)


def _workflows_of(run) -> list[str]:
    """The workflows whose assets the run targeted (its whole job when it names no selection)."""
    if run.asset_selection is None:
        tagged = run.tags.get("capstone/workflow")
        return [tagged] if tagged in WORKFLOW_ASSETS else list(WORKFLOW_ASSETS)
    names = {key.to_user_string() for key in run.asset_selection}
    return [workflow for workflow, assets in WORKFLOW_ASSETS.items() if names & set(assets)]


def close_ended_runs(instance: DagsterInstance, tracker: TrackerResource, after: int) -> tuple[list[str], int]:
    """Marks `failed` the rows still held by runs that failed or were canceled after storage id
    `after`; returns the job ids closed and the new cursor."""
    records = sorted(
        (
            record
            for event_type in ENDED
            for record in instance.fetch_run_status_changes(
                RunStatusChangeRecordsFilter(event_type, after_storage_id=after), limit=BATCH, ascending=True
            ).records
        ),
        key=lambda record: record.storage_id,
    )[:BATCH]  # both lists are complete up to the smallest of their last ids: keep what is below
    closed = []
    for record in records:
        run = instance.get_run_by_id(record.run_id)
        day = run.tags.get(PARTITION_NAME_TAG) if run is not None else None
        if day is None:
            continue
        ended = "canceled" if record.event_log_entry.dagster_event_type == DagsterEventType.RUN_CANCELED else "failed"
        for workflow in _workflows_of(run):
            job = job_id(workflow, day)
            if tracker.finish(job, run.run_id, error=f"run {run.run_id} {ended} before a step recorded the day"):
                closed.append(job)
        after = record.storage_id
    return closed, after


@sensor(minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def tracker_closing_sensor(context: SensorEvaluationContext, tracker: TrackerResource):
    """Writes `failed` for a day whose run ended (failed, canceled) while its row still said `running`."""
    closed, cursor = close_ended_runs(context.instance, tracker, int(context.cursor or 0))
    for job in closed:
        context.log.info(f"{job}: failed (its run ended before a step recorded the day)")
    return SensorResult(
        skip_reason=None if closed else "No running row of an ended run", cursor=str(cursor)
    )
