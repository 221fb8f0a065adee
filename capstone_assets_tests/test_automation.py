"""The schedule and the sensors, evaluated with Dagster's test contexts."""

import datetime as dt
import uuid

from dagster import (
    AssetMaterialization,
    DagsterInstance,
    MetadataValue,
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from capstone_assets.partitions import EXCHANGE_TZ, trading_day_partitions
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


def test_landing_sensor_reruns_a_day_when_a_batch_arrives(spark, tmp_path, tracker):
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


def test_analytical_sensor_reports_loaded_days_and_rereports_the_next_day(spark, tracker, tmp_path):
    instance = DagsterInstance.ephemeral()
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
    context = lambda cursor=None: build_sensor_context(  # noqa: E731
        instance=instance, cursor=cursor, resources={"tracker": tracker, "lake": lake}
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


# ---------------------------------------------------------------- analytical_sensor converges


class Platform:
    """An ephemeral Dagster instance and a tracker, driven by hand, and analytical_sensor's ticks."""

    def __init__(self, tracker, tmp_path):
        self.instance = DagsterInstance.ephemeral()
        self.tracker = tracker
        self.lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
        self.cursor = None
        self.requested: list[RunRequest] = []

    def finish(self, workflow, day, status="success"):
        run_id = uuid.uuid4().hex
        self.tracker.claim(workflow, day, run_id)
        assert self.tracker.update_status(f"{workflow}_{day}", status, run_id=run_id)

    def start(self, workflow, day):
        self.tracker.claim(workflow, day, f"{workflow}-{day}-running")

    def end(self, workflow, day, status="success"):
        assert self.tracker.update_status(f"{workflow}_{day}", status, run_id=f"{workflow}-{day}-running")

    def load(self, day, trades=1):
        """What preprocessing of the day materializes: its trades (with their row count) and quotes."""
        rows = {"dagster/row_count": MetadataValue.int(trades)}
        self.instance.report_runless_asset_event(AssetMaterialization("trades", partition=day, metadata=rows))
        self.instance.report_runless_asset_event(AssetMaterialization("quotes", partition=day))

    def report(self, day):
        """A report run of the day: materialized, then the tracker says success."""
        self.instance.report_runless_asset_event(AssetMaterialization("eod_quote_report", partition=day))
        self.finish("analytical", day)

    def tick(self) -> list[str]:
        context = build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"tracker": self.tracker, "lake": self.lake}
        )
        result = analytical_sensor(context)
        self.cursor = result.cursor
        used = {r.run_key for r in self.requested}
        assert not used & {r.run_key for r in result.run_requests}, "Dagster drops a run key used before"
        self.requested += result.run_requests
        return [r.partition_key for r in result.run_requests]

    def reported_week(self, days, quote_only=()):
        """Every day loaded and reported, as the sensor asked; the tracker says success throughout."""
        for day in days:
            self.finish("preprocessing", day)
            self.load(day, trades=0 if day in quote_only else 1)
        assert self.tick() == days
        for day in days:
            self.report(day)
        assert self.tick() == []

    def error(self, job):
        return self.tracker.get_job(job).error or ""


def test_a_reload_marks_the_next_report_stale_and_reruns_it_once_the_day_is_final(tracker, tmp_path):
    platform = Platform(tracker, tmp_path)
    platform.finish("preprocessing", "2020-08-03")  # the first day's previous trading day
    platform.reported_week(["2020-08-04", "2020-08-05", "2020-08-06", "2020-08-07"])

    # 2020-08-05 is reloaded (a late batch): its trades are rewritten while the run goes on.
    platform.start("preprocessing", "2020-08-05")
    platform.load("2020-08-05")
    assert platform.tick() == []  # neither report may run before 2020-08-05 is final
    assert tracker.get_status("analytical_2020-08-06") == "failed"
    assert platform.error("analytical_2020-08-06").startswith("stale: previous close changed")
    assert tracker.get_status("analytical_2020-08-07") == "success"  # its close is 2020-08-06's
    assert platform.tick() == []  # still waiting: nothing is dropped

    platform.end("preprocessing", "2020-08-05")
    platform.start("analytical", "2020-08-06")  # someone re-runs that report by hand meanwhile
    assert platform.tick() == ["2020-08-05"]
    platform.end("analytical", "2020-08-06")
    assert platform.tick() == ["2020-08-06"]  # once the run in flight has ended
    assert platform.tick() == []


def test_a_reload_reaches_every_report_whose_previous_close_it_gives(tracker, tmp_path):
    platform = Platform(tracker, tmp_path)
    platform.finish("preprocessing", "2020-08-04")
    week = ["2020-08-05", "2020-08-06", "2020-08-07", "2020-08-10", "2020-08-11"]
    platform.reported_week(week, quote_only={"2020-08-07"})

    # 2020-08-06 changes: Friday has no trades, so Monday's close is Thursday's too.
    platform.finish("preprocessing", "2020-08-06")
    platform.load("2020-08-06")
    assert platform.tick() == ["2020-08-06", "2020-08-07", "2020-08-10"]
    for day in ("2020-08-07", "2020-08-10"):
        assert tracker.get_status(f"analytical_{day}") == "failed"
        assert platform.error(f"analytical_{day}").startswith("stale: previous close changed")
    assert tracker.get_status("analytical_2020-08-11") == "success"  # Monday has trades
    assert platform.tick() == []


def test_a_day_loaded_before_its_preprocessing_was_final_is_reported_later(tracker, tmp_path):
    platform = Platform(tracker, tmp_path)
    platform.finish("preprocessing", "2020-08-06")
    platform.start("preprocessing", "2020-08-07")
    platform.load("2020-08-07")  # materialized, but the run has not ended yet
    assert platform.tick() == []
    platform.end("preprocessing", "2020-08-07")
    assert platform.tick() == ["2020-08-07"]  # no new materialization: the cursor kept the day
    assert platform.tick() == []


def test_analytical_sensor_misses_nothing_in_a_backlog_of_over_a_thousand_records(tracker, tmp_path):
    platform = Platform(tracker, tmp_path)
    days = trading_day_partitions.get_partition_keys()[:52]
    for day in days:
        platform.finish("preprocessing", day)
    days = days[1:]  # the first one is only the previous trading day of the second
    # A backlog: trades of 50 days re-loaded 21 times each (1,050 records), then one day's quotes.
    for day in days[:50]:
        for _ in range(21):
            platform.instance.report_runless_asset_event(AssetMaterialization("trades", partition=day))
    platform.instance.report_runless_asset_event(AssetMaterialization("quotes", partition=days[50]))

    requested = []
    for _ in range(10):
        requested += platform.tick()
    assert sorted(requested) == days  # each day once, none skipped
