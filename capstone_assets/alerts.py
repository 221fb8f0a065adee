"""Alerts: failed runs and failed asset checks, posted as JSON to a webhook.

Both sensors read the instance's event log after a storage-id cursor and post
one JSON object per event. The cursor only moves past what was delivered (or
needs no alert): a post that fails stops the tick and is retried on the next
one, in order. The first tick records where the log stands, so switching
alerts on does not replay history.

Plain sensors rather than `run_failure_sensor`: that one advances its cursor
even when the handler fails (a lost alert), and in a daemon it matches runs
by their code location, which runs executed in-process (`dagster job execute`,
the scripts, `capstone_assets.run`) do not have, so their failures would go
unreported.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from typing import Any, Mapping, Sequence

from dagster import (
    ConfigurableResource,
    DagsterEventType,
    DagsterRun,
    DefaultSensorStatus,
    EventLogRecord,
    EventRecordsFilter,
    MetadataValue,
    RunsFilter,
    RunStatusChangeRecordsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from pydantic import Field

from capstone_assets.jobs import ANALYTICAL, PREPROCESSING

WORKFLOW_TAG = "capstone/workflow"
PARTITION_TAG = "dagster/partition"
BATCH = 50  # events read per tick
TICK_BUDGET_SECONDS = 30.0  # stop posting well before the daemon's 60 s sensor timeout

# Each asset's workflow (its asset group), and the step that computes it.
ASSET_WORKFLOWS = {
    "raw_trades": PREPROCESSING, "raw_quotes": PREPROCESSING, "raw_rejects": PREPROCESSING,
    "trades": PREPROCESSING, "quotes": PREPROCESSING, "eod_quote_report": ANALYTICAL,
}  # fmt: skip
STEP_WORKFLOWS = {"ingestion": PREPROCESSING, **ASSET_WORKFLOWS}

# scheme://user:password@host -> scheme://user:***@host. Greedy up to the last "@" of the
# token: a password with an unescaped "@" is masked whole (over-masking is the safe side).
_CREDENTIALS = re.compile(r"""(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"/?#@:]*:)[^\s'"]*@""")


def scrub(text: str) -> str:
    return _CREDENTIALS.sub(r"\1***@", text)


def scrubbed(value: Any) -> Any:
    """The payload with every string (keys too) scrubbed of passwords."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrubbed(k): scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrubbed(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """A metadata value as JSON: numbers, text, lists and objects as themselves, anything else as text."""
    if isinstance(value, MetadataValue):
        value = value.value
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


class AlertNotSent(Exception):
    """The webhook did not accept an alert; the sensor retries it next tick."""


class AlertWebhookResource(ConfigurableResource):
    """Where alerts go (an empty URL disables them) and how runs are linked."""

    url: str = Field(default="", description="HTTP(S) URL that receives one JSON POST per alert")
    ui_url: str = Field(default="http://127.0.0.1:3000", description="The Dagster UI, for links to runs")
    timeout_seconds: float = Field(default=5.0, description="Per post; a slow webhook must not stall ticks")

    def enabled(self) -> bool:
        return bool(self.url)

    def run_url(self, run_id: str | None) -> str | None:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}" if run_id else None

    def post(self, payload: Mapping[str, Any]) -> None:
        target = urllib.parse.urlsplit(self.url)
        if target.scheme not in ("http", "https"):
            raise ValueError("CAPSTONE_ALERT_WEBHOOK_URL must be an http:// or https:// URL")
        request = urllib.request.Request(
            self.url,
            data=json.dumps(scrubbed(payload)).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except OSError as error:  # URLError, HTTPError and timeouts are all OSErrors
            # The host only: a webhook URL's path is often its secret token.
            raise AlertNotSent(
                f"webhook at {target.scheme}://{target.hostname} failed: {scrub(str(error))}"
            ) from error


def _error_text(error) -> str:
    """The error's own message chain, without Dagster's 'error while executing op' wrapper."""
    if error.cls_name == "DagsterExecutionStepExecutionError" and error.cause:
        error = error.cause
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause
    return "\ncaused by: ".join(messages)


def _workflow(run: DagsterRun, failed_step: str | None) -> str | None:
    if WORKFLOW_TAG in run.tags:
        return run.tags[WORKFLOW_TAG]
    if failed_step in STEP_WORKFLOWS:
        return STEP_WORKFLOWS[failed_step]
    # A failed check step or a run that failed before any step: the run's selection decides.
    keys = set(run.asset_selection or ()) | {c.asset_key for c in run.asset_check_selection or ()}
    workflows = {ASSET_WORKFLOWS.get(key.to_user_string()) for key in keys}
    return workflows.pop() if len(workflows) == 1 else None


def run_failure_payload(
    record: EventLogRecord, run: DagsterRun, webhook: AlertWebhookResource
) -> dict[str, Any]:
    event = record.event_log_entry
    failure = event.dagster_event.event_specific_data  # JobFailureData
    first_step = getattr(failure, "first_step_failure_event", None)
    failed_step = first_step.step_key if first_step else None
    error = first_step.event_specific_data.error if first_step else getattr(failure, "error", None)
    return {
        "kind": "run_failure",
        "run_id": run.run_id,
        "job": run.job_name,
        "workflow": _workflow(run, failed_step),
        "trading_day": run.tags.get(PARTITION_TAG),
        "failed_step": failed_step,
        "error": _error_text(error) if error else (event.message or "").strip(),
        "run_url": webhook.run_url(run.run_id),
    }


def check_failure_payload(record: EventLogRecord, webhook: AlertWebhookResource) -> dict[str, Any]:
    evaluation = record.event_log_entry.dagster_event.event_specific_data  # AssetCheckEvaluation
    run_id = record.event_log_entry.run_id or None  # runless reports have ""
    return {
        "kind": "check_failure",
        "asset_key": evaluation.asset_key.to_user_string(),
        "check_name": evaluation.check_name,
        "partition": evaluation.partition,
        "severity": evaluation.severity.value,
        "description": evaluation.description,
        "metadata": {key: plain(value) for key, value in evaluation.metadata.items()},
        "run_id": run_id,
        "run_url": webhook.run_url(run_id),
    }


def _in_this_code_location(context: SensorEvaluationContext, run: DagsterRun) -> bool:
    """Runs launched from this code location, and in-process runs (no launch origin) of its jobs."""
    origin = run.remote_job_origin
    if origin is not None and context.code_location_origin is not None:
        if origin.repository_origin.code_location_origin.location_name != (
            context.code_location_origin.location_name
        ):
            return False
    return context.repository_def is None or context.repository_def.has_job(run.job_name)


def _check_evaluations(instance, after: int | None, limit: int, ascending: bool) -> Sequence[EventLogRecord]:
    records_filter = EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after)
    storage = instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage):
        # The default SQLite storage (one file per run) mirrors check evaluations into its
        # index shard but queries that shard for asset events only: ask the index directly.
        return SqlEventLogStorage.get_event_records(storage, records_filter, limit, ascending)
    return storage.get_event_records(records_filter, limit=limit, ascending=ascending)


def _deliver(context, webhook: AlertWebhookResource, cursor: int, items, kind: str) -> SensorResult:
    """Posts `(storage_id, payload or None)` in order; the cursor ends at the last one handled."""
    sent, budget_ends = 0, time.monotonic() + TICK_BUDGET_SECONDS
    for storage_id, payload in items:
        if payload is not None:
            if time.monotonic() > budget_ends:
                break
            try:
                webhook.post(payload)
            except AlertNotSent as error:
                context.log.warning(f"{kind} alert (event {storage_id}) not sent, retried next tick: {error}")
                break
            sent += 1
        cursor = storage_id
    return SensorResult(skip_reason=None if sent else f"No {kind} alert to send", cursor=str(cursor))


def _started(newest: Sequence[EventLogRecord], what: str) -> SensorResult:
    cursor = newest[0].storage_id if newest else 0
    return SensorResult(skip_reason=f"Started: alerts on {what} from now on", cursor=str(cursor))


_DISABLED = "CAPSTONE_ALERT_WEBHOOK_URL is not set: alerts are disabled"


def _run_failure_alerts(context: SensorEvaluationContext, alert_webhook: AlertWebhookResource):
    if not alert_webhook.enabled():
        return SkipReason(_DISABLED)
    instance = context.instance
    if context.cursor is None:
        return _started(
            instance.fetch_run_status_changes(DagsterEventType.RUN_FAILURE, limit=1).records, "runs"
        )
    after = int(context.cursor)
    records = instance.fetch_run_status_changes(
        RunStatusChangeRecordsFilter(DagsterEventType.RUN_FAILURE, after_storage_id=after),
        limit=BATCH,
        ascending=True,
    ).records
    run_ids = list({record.run_id for record in records})
    runs = {run.run_id: run for run in instance.get_runs(RunsFilter(run_ids=run_ids))} if run_ids else {}

    def payload(record: EventLogRecord) -> dict[str, Any] | None:
        run = runs.get(record.run_id)  # None: the run was deleted since
        if run is None or not _in_this_code_location(context, run):
            return None
        return run_failure_payload(record, run, alert_webhook)

    items = ((record.storage_id, payload(record)) for record in records)
    return _deliver(context, alert_webhook, after, items, "run_failure")


def _check_failure_alerts(context: SensorEvaluationContext, alert_webhook: AlertWebhookResource):
    if not alert_webhook.enabled():
        return SkipReason(_DISABLED)
    if context.cursor is None:
        return _started(_check_evaluations(context.instance, None, limit=1, ascending=False), "checks")
    after = int(context.cursor)
    records = _check_evaluations(context.instance, after, limit=BATCH, ascending=True)

    def payload(record: EventLogRecord) -> dict[str, Any] | None:
        passed = record.event_log_entry.dagster_event.event_specific_data.passed
        return None if passed else check_failure_payload(record, alert_webhook)

    items = ((record.storage_id, payload(record)) for record in records)
    return _deliver(context, alert_webhook, after, items, "check_failure")


def alert_sensors(enabled: bool) -> list[SensorDefinition]:
    """The two alert sensors; running from the start when a webhook is configured."""
    status = DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED
    return [
        sensor(
            name="run_failure_alert_sensor",
            minimum_interval_seconds=30,
            default_status=status,
            description="Posts every failed run of this code location to CAPSTONE_ALERT_WEBHOOK_URL.",
        )(_run_failure_alerts),
        sensor(
            name="check_failure_alert_sensor",
            minimum_interval_seconds=30,
            default_status=status,
            description="Posts every failed asset check evaluation to CAPSTONE_ALERT_WEBHOOK_URL.",
        )(_check_failure_alerts),
    ]
