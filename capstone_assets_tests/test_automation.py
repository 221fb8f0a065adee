"""The schedule and the sensors, evaluated with Dagster's test contexts."""

import datetime as dt

from dagster import (
    AssetMaterialization,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from capstone_assets.partitions import EXCHANGE_TZ
from capstone_assets.resources import LakeResource
from capstone_assets.schedules import preprocessing_schedule
from capstone_assets.sensors import analytical_sensor, landing_sensor


def test_schedule_runs_the_days_preprocessing_at_17_new_york():
    monday = build_schedule_context(scheduled_execution_time=dt.datetime(2020, 8, 10, 17, tzinfo=EXCHANGE_TZ))
    request = preprocessing_schedule(monday)
    assert isinstance(request, RunRequest) and request.partition_key == "2020-08-10"
    thanksgiving = build_schedule_context(
        scheduled_execution_time=dt.datetime(2020, 11, 26, 17, tzinfo=EXCHANGE_TZ)
    )
    assert isinstance(preprocessing_schedule(thanksgiving), SkipReason)


def _land(root, day, exchange, name, text="x\n"):
    folder = root / "csv" / day / exchange
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_landing_sensor_reruns_a_day_when_a_batch_arrives(tmp_path, tracker):
    landing = tmp_path / "landing"
    _land(landing, "2020-08-05", "NYSE", "batch-1.txt")
    lake = LakeResource(landing_root=str(landing), lake_root=str(tmp_path / "lake"))
    resources = {"lake": lake, "tracker": tracker}

    first = landing_sensor(build_sensor_context(resources=resources))
    assert first.run_requests == [] and first.cursor  # the baseline: no storm of runs
    unchanged = landing_sensor(build_sensor_context(cursor=first.cursor, resources=resources))
    assert unchanged.run_requests == []

    _land(landing, "2020-08-05", "NASDAQ", "batch-2.txt")  # a new batch
    _land(landing, "2020-08-06", "NYSE", "batch-1.txt")  # a new day
    _land(landing, "2020-08-08", "NYSE", "batch-1.txt")  # a Saturday: not a partition
    _land(landing, "2020-08-05", "NYSE", "_SUCCESS")  # a marker: ignored
    tracker.claim("preprocessing", "2020-08-06", "run-busy")  # 2020-08-06 is running now
    result = landing_sensor(build_sensor_context(cursor=first.cursor, resources=resources))
    assert [r.partition_key for r in result.run_requests] == ["2020-08-05"]

    # Once 2020-08-06's run has ended, the next tick requests it.
    tracker.update_status("preprocessing_2020-08-06", "success", run_id="run-busy")
    later = landing_sensor(build_sensor_context(cursor=result.cursor, resources=resources))
    assert [r.partition_key for r in later.run_requests] == ["2020-08-06"]


def test_analytical_sensor_reports_loaded_days_and_rereports_the_next_day(tracker):
    instance = DagsterInstance.ephemeral()
    context = lambda cursor=None: build_sensor_context(  # noqa: E731
        instance=instance, cursor=cursor, resources={"tracker": tracker}
    )
    for day in ("2020-08-06", "2020-08-07"):
        tracker.claim("preprocessing", day, f"run-{day}")
        tracker.update_status(f"preprocessing_{day}", "success", run_id=f"run-{day}")
        for asset in ("trades", "quotes"):
            instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, partition=day))
    tracker.claim("preprocessing", "2020-08-10", "run-still-going")
    instance.report_runless_asset_event(AssetMaterialization(asset_key="trades", partition="2020-08-10"))

    result = analytical_sensor(context())
    assert sorted(r.partition_key for r in result.run_requests) == ["2020-08-06", "2020-08-07"]
    assert analytical_sensor(context(result.cursor)).run_requests == []

    # 2020-08-07 was reported; then 2020-08-06's trades change: both reports are re-run.
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key="eod_quote_report", partition="2020-08-07")
    )
    instance.report_runless_asset_event(AssetMaterialization(asset_key="trades", partition="2020-08-06"))
    again = analytical_sensor(context(result.cursor))
    assert sorted(r.partition_key for r in again.run_requests) == ["2020-08-06", "2020-08-07"]
