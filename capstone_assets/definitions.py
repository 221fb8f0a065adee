"""The one assembly point: every asset, job, schedule, sensor and resource."""

from dagster import Definitions, in_process_executor

from capstone_assets import assets, jobs, schedules, sensors, settings
from capstone_assets.resources import LakeResource, TrackerResource, spark_resource

defs = Definitions(
    assets=[assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report],
    jobs=[jobs.preprocessing_job, jobs.analytical_job],
    schedules=[schedules.preprocessing_schedule],
    sensors=[sensors.landing_sensor, sensors.analytical_sensor],
    resources={
        "spark": spark_resource(settings.value("SPARK_MASTER")),
        "lake": LakeResource(
            landing_root=settings.setting("CAPSTONE_LANDING_ROOT"),
            lake_root=settings.setting("CAPSTONE_LAKE_ROOT"),
        ),
        "tracker": TrackerResource(
            url=settings.setting("CAPSTONE_TRACKER_URL"),
            table=settings.setting("CAPSTONE_TRACKER_TABLE"),
        ),
    },
    # Ad-hoc UI runs too: one Spark session per run, not a JVM per step.
    executor=in_process_executor,
)
