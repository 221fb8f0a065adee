"""Preprocessing at the course's end-of-day time, 17:00 New York, on trading days.

The cron fires on weekdays; the NYSE calendar (`partitions.is_trading_day`)
skips the closures among them.
"""

from dagster import RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from capstone_assets.jobs import preprocessing_job
from capstone_assets.partitions import EXCHANGE_TZ, is_trading_day


@schedule(
    cron_schedule="0 17 * * 1-5",
    execution_timezone=str(EXCHANGE_TZ),
    job=preprocessing_job,
    description="Ingestion and end-of-day load of the day, at 17:00 New York on trading days.",
)
def preprocessing_schedule(context: ScheduleEvaluationContext):
    day = context.scheduled_execution_time.astimezone(EXCHANGE_TZ).date()
    if not is_trading_day(day):
        return SkipReason(f"{day} is not a trading day: the NYSE is closed")
    return RunRequest(run_key=f"preprocessing:{day}", partition_key=day.isoformat())
