"""The one assembly point: every asset, job, schedule, sensor and resource."""

from dagster import Definitions, in_process_executor

from capstone_assets import alerts, assets, freshness, jobs, schedules, sensors, settings
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource

settings.check()  # a malformed setting stops the load here, with one sentence naming it
report_freshness = freshness.report_freshness(settings.value("CAPSTONE_REPORT_DEADLINE"))

defs = Definitions(
    assets=[assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report],
    asset_checks=[report_freshness.check],
    jobs=[jobs.preprocessing_job, jobs.analytical_job, report_freshness.job],
    schedules=[schedules.preprocessing_schedule, report_freshness.schedule],
    sensors=[
        sensors.landing_sensor,
        sensors.analytical_sensor,
        sensors.tracker_closing_sensor,
        *alerts.alert_sensors(enabled=bool(settings.value("CAPSTONE_ALERT_WEBHOOK_URL"))),
    ],
    resources={
        "alert_webhook": alerts.AlertWebhookResource(
            url=settings.setting("CAPSTONE_ALERT_WEBHOOK_URL"), ui_url=settings.setting("CAPSTONE_UI_URL")
        ),
        "spark": spark_resource(settings.value("SPARK_MASTER")),
        "lake": LakeResource(
            landing_root=settings.setting("CAPSTONE_LANDING_ROOT"),
            lake_root=settings.setting("CAPSTONE_LAKE_ROOT"),
        ),
        "tracker": TrackerResource(
            url=settings.setting("CAPSTONE_TRACKER_URL"),
            table=settings.setting("CAPSTONE_TRACKER_TABLE"),
        ),
        "quality": QualityResource(
            reject_rate_threshold=settings.fraction("CAPSTONE_REJECT_RATE_THRESHOLD")
        ),
    },
    # Ad-hoc UI runs too: one Spark session per run, not a JVM per step.
    executor=in_process_executor,
)
