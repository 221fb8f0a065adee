"""Claims and gates shared by every asset, whatever launched the run (SPEC.md §6).

Ad-hoc UI runs and backfills run as Dagster's `__ASSET_JOB`, which has no job
hooks, so each asset step goes through `tracked_step`:

* before Spark starts, the step claims `<workflow>_<day>` for its run (later
  steps of the same run pass through), and the analytical workflow checks its
  gate: preprocessing `success` for the day and for every earlier day within
  7 calendar days that has landing files;
* a failing step records `failed` with the error text and re-raises;
* the run's last step of the workflow records `success` only if every asset
  of the workflow for the day is now up to date with the day's latest
  ingestion; otherwise `failed`, naming what is out of date.
"""

from __future__ import annotations

import datetime as dt
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, DagsterEventType, Failure

from capstone_assets.jobs import ANALYTICAL, PREPROCESSING
from capstone_assets.resources.tracker import FAILED, SUCCESS, JobRefused, TrackerResource, job_id

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
GATE_DAYS = 7


def analytical_gate(tracker: TrackerResource, day: str, has_landing_files: Callable[[str], bool]) -> None:
    """Raises JobRefused unless D and its recent landed days are preprocessed."""
    d = dt.date.fromisoformat(day)
    earlier = [(d - dt.timedelta(days=n)).isoformat() for n in range(1, GATE_DAYS + 1)]
    statuses = tracker.statuses(PREPROCESSING, [day, *earlier])
    if statuses.get(day) != SUCCESS:
        raise JobRefused(
            f"Refusing to run {job_id(ANALYTICAL, day)}: {job_id(PREPROCESSING, day)} is "
            f"{statuses.get(day, 'not run')}, not success. Run preprocessing for {day} first."
        )
    pending = sorted(e for e in earlier if statuses.get(e) != SUCCESS and has_landing_files(e))
    if pending:
        listed = ", ".join(f"{e}: {statuses.get(e, 'not run')}" for e in pending)
        raise JobRefused(
            f"Refusing to run {job_id(ANALYTICAL, day)}: earlier days with landing files are not "
            f"preprocessed ({listed}); "
            f"the previous trading day must be final before {day} is analysed."
        )


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


@contextmanager
def tracked_step(
    context: AssetExecutionContext,
    tracker: TrackerResource,
    workflow: str,
    has_landing_files: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    day = context.partition_key
    job = job_id(workflow, day)
    try:
        if workflow == ANALYTICAL:
            analytical_gate(tracker, day, has_landing_files or (lambda _: False))
        tracker.claim(workflow, day, context.run.run_id)
    except JobRefused as refusal:
        raise Failure(description=str(refusal), allow_retries=False) from None
    context.log.info(f"{job}: claimed by run {context.run.run_id}")
    this_step = {key.to_user_string() for key in context.selected_asset_keys}
    try:
        with tracker.heartbeating(job, context.run.run_id):
            yield job
    except BaseException as error:
        text = "".join(traceback.format_exception_only(type(error), error)).strip()
        step = context.op_execution_context.op.name
        tracker.update_status(job, FAILED, run_id=context.run.run_id, error=f"{step}: {text}"[:4000])
        context.log.error(f"{job}: failed")
        raise
    remaining = _planned_in_run(context, workflow) - _materialized_in_run(context) - this_step
    if remaining:
        return  # a later step of this run finishes the job
    stale = out_of_date(context, workflow, day, this_step)
    if stale:
        message = f"incomplete: {', '.join(stale)} not up to date with the latest ingestion of {day}"
        tracker.update_status(job, FAILED, run_id=context.run.run_id, error=message)
        context.log.warning(f"{job}: {message}; status failed until they are materialized")
    elif tracker.update_status(job, SUCCESS, run_id=context.run.run_id):
        context.log.info(f"{job}: success")
