"""Claims and gates shared by every asset, whatever launched the run (SPEC.md §6).

Ad-hoc UI runs and backfills run as Dagster's `__ASSET_JOB`, which has no job
hooks, so each asset step goes through `tracked_step`:

* before Spark starts, the step claims `<workflow>_<day>` for its run (later
  steps of the same run pass through), and the analytical workflow checks its
  gate: preprocessing `success` for the day and for its previous trading day
  when that day has landing files;
* the claim is the run's until the run ends: a failing step notes its error and
  re-raises, but the day stays held while the run's other steps go on (Dagster
  runs the steps that do not depend on the failed one);
* the run's last step of the workflow (the last that will run: Dagster skips the
  steps downstream of a failed one) ends the claim: `failed` with every failed
  step's error, or, if none failed, `success` only if every asset of the workflow
  for the day is now up to date with the day's latest ingestion; otherwise
  `failed`, naming what is out of date. A step stopped (from the UI, by a signal)
  ends it at once: the run does not go on. A run that ends without a step to say so
  (stopped between steps, crashed) leaves its claim `running`: the next claimant
  takes it over at once when the run has ended in Dagster or its process is dead
  here, else once its heartbeat lapses;
* the step writes the lake only under its claim (`Claim.holding`, the lake's
  commit guard). A run that lost its claim (taken over after its heartbeat
  lapsed) cannot commit, and its later steps are refused: the run stops.
"""

from __future__ import annotations

import datetime as dt
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    Failure,
)
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.storage.tags import BACKFILL_ID_TAG

from capstone_assets.jobs import ANALYTICAL, PREPROCESSING
from capstone_assets.partitions import previous_trading_day
from capstone_assets.resources.tracker import (
    FAILED,
    SUCCESS,
    Claim,
    ClaimLost,
    JobRefused,
    TrackerResource,
    TrackerUnreachable,
    job_id,
)

WORKFLOW_ASSETS = {
    PREPROCESSING: ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes"),
    ANALYTICAL: ("eod_quote_report",),
}
# The step (op) that materializes each asset.
STEP_OF_ASSET = {
    "raw_trades": "ingestion", "raw_quotes": "ingestion", "raw_rejects": "ingestion",
    "trades": "trades", "quotes": "quotes", "eod_quote_report": "eod_quote_report",
}  # fmt: skip
# What each asset must be newer than to be up to date with the day's ingestion.
UPSTREAM = {"trades": "raw_trades", "quotes": "raw_quotes"}
# A step that raises one of these is being stopped (from the UI, by a signal): its run does not go on.
STOPPED = (DagsterExecutionInterruptedError, KeyboardInterrupt, SystemExit)


def analytical_gate(
    tracker: TrackerResource, day: str, has_landing_files: Callable[[str], bool]
) -> list[str]:
    """Raises JobRefused unless D and its previous trading day are preprocessed (SPEC.md §6).

    The previous trading day is waited for only when it has landing files. Returns
    warnings for landing folders dated on weekends or holidays in between: they
    are not partitions, so they are reported and never waited for."""
    d = dt.date.fromisoformat(day)
    previous = previous_trading_day(d)
    statuses = tracker.statuses(PREPROCESSING, [day, previous.isoformat()])
    if statuses.get(day) != SUCCESS:
        raise JobRefused(
            f"Refusing to run {job_id(ANALYTICAL, day)}: {job_id(PREPROCESSING, day)} is "
            f"{statuses.get(day, 'not run')}, not success. Run preprocessing for {day} first."
        )
    if statuses.get(previous.isoformat()) != SUCCESS and has_landing_files(previous.isoformat()):
        raise JobRefused(
            f"Refusing to run {job_id(ANALYTICAL, day)}: its previous trading day {previous} has landing "
            f"files but {job_id(PREPROCESSING, previous.isoformat())} is "
            f"{statuses.get(previous.isoformat(), 'not run')}, not success; the previous close must be "
            f"final before {day} is analysed. Run preprocessing for {previous} first."
        )
    between = (previous + dt.timedelta(days=n) for n in range(1, (d - previous).days))
    return [
        f"Landing files for {other} are ignored: it is not a trading day (weekend or NYSE holiday)"
        for other in map(dt.date.isoformat, between)
        if has_landing_files(other)
    ]


def added_beyond_backfill(context: AssetExecutionContext, day: str) -> bool:
    """Whether a backfill targets D's report only because it loads D's previous trading day.

    A UI backfill of a range also targets the report of the day after the range
    (the partition mapping from D-1's trades and quotes reaches it). Such a report
    is deferred, not refused, when D is not preprocessed: see `eod_quote_report`."""
    backfill_id = context.run.tags.get(BACKFILL_ID_TAG)
    backfill = context.instance.get_backfill(backfill_id) if backfill_id else None
    if backfill is None or not backfill.is_asset_backfill:
        return False
    target = backfill.get_asset_backfill_data(context.job_def.asset_layer.asset_graph).target_subset
    previous = previous_trading_day(dt.date.fromisoformat(day)).isoformat()

    def loads(partition: str) -> bool:
        return any(
            AssetKeyPartitionKey(AssetKey(asset), partition) in target for asset in ("trades", "quotes")
        )

    return loads(previous) and not loads(day)


def _materialized_in_run(context: AssetExecutionContext) -> set[str]:
    records = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records}


def _planned_in_run(context: AssetExecutionContext, workflow: str) -> set[str]:
    """The workflow's assets this run will materialize."""
    # A run's selection is empty or None when it runs its whole job.
    selection = context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys
    planned = set(WORKFLOW_ASSETS[workflow]) & {key.to_user_string() for key in selection}
    steps = context.run.step_keys_to_execute  # set when re-executing a run from its failure
    if steps is not None:
        planned = {asset for asset in planned if STEP_OF_ASSET[asset] in steps}
    return planned


def _latest_storage_id(context: AssetExecutionContext, asset: str, day: str) -> int | None:
    result = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[day]), limit=1, ascending=False
    )
    return result.records[0].storage_id if result.records else None


def out_of_date(context: AssetExecutionContext, workflow: str, day: str, this_step: set[str]) -> list[str]:
    """The workflow's assets for `day` not rebuilt since their inputs last changed."""
    newest = float("inf")  # this step's outputs are not in the event log yet
    stored = {
        asset: newest if asset in this_step else _latest_storage_id(context, asset, day)
        for asset in WORKFLOW_ASSETS[workflow]
    }
    stale = [a for a, sid in stored.items() if sid is None]
    for asset, upstream in UPSTREAM.items():
        if asset in stored and stored[asset] is not None and stored.get(upstream) is not None:
            if stored[asset] < stored[upstream]:
                stale.append(asset)
    return sorted(stale)


def _failed_steps(context: AssetExecutionContext) -> set[str]:
    records = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records
    return {r.event_log_entry.step_key for r in records}


def still_to_run(
    context: AssetExecutionContext, workflow: str, this_step: set[str], failed: bool
) -> set[str]:
    """The workflow's assets that later steps of this run will still materialize.

    Not those of steps that failed (this one, if `failed`), nor those downstream of
    them: Dagster skips those."""
    failed_steps = _failed_steps(context) | ({context.op_execution_context.op.name} if failed else set())
    lost = {asset for asset, step in STEP_OF_ASSET.items() if step in failed_steps}
    lost |= {asset for asset, upstream in UPSTREAM.items() if upstream in lost}
    return _planned_in_run(context, workflow) - _materialized_in_run(context) - this_step - lost


def _error_text(error: BaseException) -> str:
    """The exception's type and message, without the Java stack frames a Spark error carries."""
    lines = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()
    return "\n".join(line for line in lines if not line.startswith("\tat "))


def run_ended(instance: DagsterInstance) -> Callable[[str], bool]:
    """Whether a Dagster run of this instance has ended (its claim can be taken over at once)."""

    def ended(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.is_finished

    return ended


def _unrecorded_failures(
    tracker: TrackerResource, job: str, context: AssetExecutionContext, workflow: str
) -> str | None:
    """Steps of the workflow that failed in this run before they could note it (e.g. refused)."""
    steps = {STEP_OF_ASSET[asset] for asset in WORKFLOW_ASSETS[workflow]} & _failed_steps(context)
    noted = (tracker.get_job(job).error or "") if steps else ""
    missing = sorted(step for step in steps if f"{step}: " not in noted)
    return "; ".join(f"{step}: step failed" for step in missing) or None


@contextmanager
def tracked_step(
    context: AssetExecutionContext,
    tracker: TrackerResource,
    workflow: str,
    has_landing_files: Callable[[str], bool] | None = None,
) -> Iterator[Claim]:
    """Runs a step under its run's claim on the workflow and day; yields the Claim, whose
    `holding` is the lake's commit guard."""
    day, run_id = context.partition_key, context.run.run_id
    job = job_id(workflow, day)
    try:
        warnings = (
            analytical_gate(tracker, day, has_landing_files or (lambda _: False))
            if workflow == ANALYTICAL
            else []
        )
        tracker.claim(workflow, day, run_id, run_ended=run_ended(context.instance))
    except JobRefused as refusal:
        raise Failure(description=str(refusal), allow_retries=False) from None
    except TrackerUnreachable as unreachable:
        raise Failure(
            description=f"Refusing to start {job}: {unreachable}. Nothing was run or written.",
            allow_retries=False,
        ) from None
    context.log.info(f"{job}: claimed by run {run_id}")
    for warning in warnings:
        context.log.warning(warning)
    this_step = {key.to_user_string() for key in context.selected_asset_keys}
    step = context.op_execution_context.op.name
    try:
        with tracker.heartbeating(job, run_id, on_lost=context.log.error) as claim:
            yield claim
            claim.check()  # lost while the step ran: the run stops here
    except ClaimLost as lost:
        # The day is another run's now: its row is not touched.
        context.log.error(str(lost))
        raise Failure(description=str(lost), allow_retries=False) from None
    except TrackerUnreachable as unreachable:
        # Its row cannot be written: it stays `running` under this run, whose process ends
        # with the failure, so the next run of the day takes the claim over.
        message = (
            f"{job} lost its tracker while running: {unreachable}. The day was not committed (its "
            "previous version stays) and its row stays running until the next run takes it over: "
            "at once on this host once this run's process has ended, else after the heartbeat lapses"
        )
        context.log.error(message)
        raise Failure(description=message, allow_retries=False) from None
    except BaseException as error:
        text = f"{step}: " + _error_text(error)
        try:
            if isinstance(error, STOPPED) or not still_to_run(context, workflow, this_step, failed=True):
                status = tracker.finish(job, run_id, error=text)
                context.log.error(f"{job}: {status or 'not held by this run any more'}")
            elif tracker.note_failure(job, run_id, text):
                context.log.error(
                    f"{job}: step {step} failed; the day stays held by run {run_id} until its other "
                    f"steps of the {workflow} workflow end"
                )
        except Exception as unrecorded:  # the step's own error matters more
            context.log.error(f"{job}: could not record the failure of {step}: {unrecorded}")
        raise
    if still_to_run(context, workflow, this_step, failed=False):
        return  # a later step of this run finishes the job
    stale = out_of_date(context, workflow, day, this_step)
    incomplete = (
        f"incomplete: {', '.join(stale)} not up to date with the latest ingestion of {day}" if stale else None
    )
    try:
        error = "; ".join(filter(None, (_unrecorded_failures(tracker, job, context, workflow), incomplete)))
        status = tracker.finish(job, run_id, error=error or None)
    except TrackerUnreachable as unreachable:
        message = (
            f"{job}: the day was written but its status could not be recorded: {unreachable}. Its row "
            "stays running until the next run takes it over; run the day again once the tracker is back"
        )
        context.log.error(message)
        raise Failure(description=message, allow_retries=False) from None
    if status == SUCCESS:
        context.log.info(f"{job}: success")
    elif status == FAILED:
        record = tracker.get_job(job)
        context.log.warning(
            f"{job}: failed ({record.error if record else error}); status failed until it is re-run"
        )
    else:
        raise Failure(
            description=f"{job}: run {run_id} lost its claim before it could record the day's status",
            allow_retries=False,
        )
