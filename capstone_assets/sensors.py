"""Sensors: new landing batches re-run a day's preprocessing; loaded days get their report.

* `landing_sensor` fingerprints each day's landing files (path, size, mtime).
  A day whose files changed gets a preprocessing run; while that day's
  preprocessing is running its old fingerprint is kept, so a batch landing
  mid-run is picked up by the next tick. The first tick only records what is
  already there (files present before the sensor starts are the schedule's or
  a backfill's).
* `analytical_sensor` watches `trades` and `quotes` materializations. When
  preprocessing of day D is `success` it requests D's report; when D's trades
  changed and the next trading day was already reported, that report is
  re-run too, since its previous close may have changed.
"""

import datetime as dt
import hashlib
import json
from pathlib import Path

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from capstone_assets.jobs import PREPROCESSING, analytical_job, preprocessing_job
from capstone_assets.partitions import is_trading_day, trading_day_partitions
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.resources.lake import FORMATS, absolute, is_url
from capstone_assets.resources.tracker import RUNNING, SUCCESS, job_id


def landing_fingerprints(landing_root: str) -> dict[str, str]:
    """Per landing day folder, a short hash of its data files' names, sizes and mtimes."""
    files: dict[str, list[str]] = {}
    for fmt in FORMATS:
        for day_dir in sorted(Path(landing_root, fmt).glob("????-??-??")):
            for path in sorted(day_dir.glob("*/*")):
                if path.is_file() and not path.name.startswith((".", "_")):
                    stat = path.stat()
                    files.setdefault(day_dir.name, []).append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}")
    return {day: hashlib.sha1("\n".join(entries).encode()).hexdigest()[:16] for day, entries in files.items()}


@sensor(job=preprocessing_job, minimum_interval_seconds=60)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource, tracker: TrackerResource):
    root = absolute(lake.landing_root)
    if is_url(root):
        return SkipReason(
            f"landing_sensor watches local landing roots; {root} is remote: rely on the schedule"
        )
    current = landing_fingerprints(root)
    if context.cursor is None:
        return SensorResult(
            skip_reason=f"Recorded {len(current)} landing days as the baseline", cursor=json.dumps(current)
        )
    seen = json.loads(context.cursor)
    changed = [
        d
        for d, fp in sorted(current.items())
        if seen.get(d) != fp and is_trading_day(dt.date.fromisoformat(d))
    ]
    requests, cursor = [], dict(current)
    for day in changed:
        if tracker.get_status(job_id(PREPROCESSING, day)) == RUNNING:
            cursor[day] = seen.get(day, "")  # retried once the running one ends
            continue
        requests.append(RunRequest(run_key=f"landing:{day}:{current[day]}", partition_key=day))
    return SensorResult(run_requests=requests, cursor=json.dumps(cursor))


def _materialized_days(context: SensorEvaluationContext, asset: str, after: int) -> tuple[set[str], int]:
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), after_storage_id=after), limit=1000, ascending=True
    ).records
    days = {r.partition_key for r in records if r.partition_key}
    return days, max((r.storage_id for r in records), default=after)


@sensor(job=analytical_job, minimum_interval_seconds=30)
def analytical_sensor(context: SensorEvaluationContext, tracker: TrackerResource):
    after = int(context.cursor or 0)
    trade_days, last_trades = _materialized_days(context, "trades", after)
    quote_days, last_quotes = _materialized_days(context, "quotes", after)
    newest = max(last_trades, last_quotes)
    requests = []
    for day in sorted(trade_days | quote_days):
        if tracker.get_status(job_id(PREPROCESSING, day)) == SUCCESS:
            requests.append(RunRequest(run_key=f"analytical:{day}:{newest}", partition_key=day))
        next_day = trading_day_partitions.get_next_partition_key(day)
        if day in trade_days and next_day:
            reported = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey("eod_quote_report"), asset_partitions=[next_day]),
                limit=1,
            ).records
            if reported:
                requests.append(RunRequest(run_key=f"analytical:{next_day}:{newest}", partition_key=next_day))
    return SensorResult(run_requests=requests, cursor=str(newest))
