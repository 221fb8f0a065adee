"""The two daily workflows of the course, as partitioned asset jobs.

Both run in-process: every step of a run shares one Spark session (one JVM)
instead of starting one per step.
"""

from dagster import AssetCheckKey, AssetSelection, define_asset_job, in_process_executor

from capstone_assets.freshness import CHECK_NAME, REPORT

PREPROCESSING = "preprocessing"
ANALYTICAL = "analytical"
WORKFLOWS = (PREPROCESSING, ANALYTICAL)

preprocessing_job = define_asset_job(
    "preprocessing_job",
    selection=AssetSelection.groups(PREPROCESSING),
    executor_def=in_process_executor,
    description="Ingestion and end-of-day load of one trading day.",
    tags={"capstone/workflow": PREPROCESSING},
)

analytical_job = define_asset_job(
    "analytical_job",
    # The freshness check looks at the latest due day, not the run's: it runs on its schedule.
    selection=AssetSelection.groups(ANALYTICAL) - AssetSelection.checks(AssetCheckKey(REPORT, CHECK_NAME)),
    executor_def=in_process_executor,
    description="The EOD quote report of one trading day.",
    tags={"capstone/workflow": ANALYTICAL},
)
