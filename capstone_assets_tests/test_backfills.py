"""Backfills as operators launch them: the real webserver and daemon, Dagster's storage on PostgreSQL.

Every backfill is sent exactly as the UI's *Materialize* dialog sends it
(`launchPartitionBackfill` with `assetSelection` and `partitionNames`) and runs
through the run queue, the backfill daemon and run workers. The landing zone is
the demo's: Thu 2020-08-06, Fri 08-07, Mon 08-10, Tue 08-11.

The tests of this module run in order on one pair of servers: each builds on the
lake and the tracker the previous one left.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from pyspark.testing import assertDataFrameEqual

from capstone_assets import assets, checks
from capstone_assets.demo import write_demo_landing
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.sensors import analytical_sensor
from capstone_assets_tests.servers import dagster_servers_fixture

pytestmark = pytest.mark.e2e

ALL_ASSETS = [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report]
ASSETS = ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes", "eod_quote_report")
PREPROCESSING = ASSETS[:5]
RANGE = ["2020-08-07", "2020-08-10", "2020-08-11"]  # Friday, Monday, Tuesday
DAY_AFTER = "2020-08-12"

servers = dagster_servers_fixture(write_demo_landing, scope="module")


def resources_of(servers, lake_root: str | None = None) -> dict:
    """The platform's resources as the servers' runs see them (or with another lake)."""
    return {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(
            landing_root=servers.env["CAPSTONE_LANDING_ROOT"],
            lake_root=lake_root or servers.env["CAPSTONE_LAKE_ROOT"],
        ),
        "tracker": TrackerResource(url=servers.postgres_url, table=servers.tracker_table),
        "quality": QualityResource(),
    }


def backfill(servers, days: list[str], selection=ASSETS):
    result = servers.wait_for_backfill(servers.launch_backfill(days, list(selection)), timeout=900)
    print(result)  # the timing shows in the test log
    return result


def report_status(servers, day: str) -> str | None:
    return servers.materialization_metadata("eod_quote_report", day).get("status")


def test_a_three_day_backfill_of_all_assets_across_a_weekend(servers, spark, tmp_path):
    # The day before the range is preprocessed (here in this process, against the same lake and tracker).
    before = materialize(
        ALL_ASSETS, selection=list(PREPROCESSING), partition_key="2020-08-06", resources=resources_of(servers)
    )
    assert before.success

    result = backfill(servers, RANGE)

    assert result.status == "COMPLETED_SUCCESS", f"{result}\n{servers.log_tails()}"
    assert all(run.status == "SUCCESS" for run in result.runs), result
    # Dagster adds the report of the day after the range: the mapping from Tuesday reaches Wednesday.
    assert {run.partition for run in result.runs} == {*RANGE, DAY_AFTER}
    for asset in PREPROCESSING:
        assert set(RANGE) <= set(servers.materialized_partitions(asset)), asset
    assert servers.materialized_partitions("eod_quote_report") == [*RANGE, DAY_AFTER]
    # Wednesday has no landing files: its report is deferred, not refused.
    deferred = servers.materialization_metadata("eod_quote_report", DAY_AFTER)
    assert deferred["status"] == "deferred"
    assert "preprocessing_2020-08-12 is not run" in deferred["reason"]
    assert [report_status(servers, day) for day in RANGE] == ["computed"] * 3

    # Every check passed, once per day, in the UI's own view of them.
    for name, (asset, _, _) in checks.CHECKS.items():
        for day in RANGE:
            [execution] = servers.check_executions(asset, name, partition=day)
            assert execution["evaluation"]["success"], (name, day, execution)
            assert execution["evaluation"]["partition"] == day

    tracker = servers.tracker()
    for day in RANGE:
        assert tracker.get_status(f"preprocessing_{day}") == "success"
        assert tracker.get_status(f"analytical_{day}") == "success"
    assert tracker.get_status(f"analytical_{DAY_AFTER}") is None
    lake = servers.env["CAPSTONE_LAKE_ROOT"]
    assert not Path(lake, "eod_quote_report", f"trade_dt={DAY_AFTER}").exists()

    # The lake equals three single-day runs (after the same day before).
    single = str(tmp_path / "single_day_lake")
    alone = resources_of(servers, lake_root=single)
    alone["tracker"] = TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}")
    instance = DagsterInstance.ephemeral()
    for day in ["2020-08-06", *RANGE]:
        assert materialize(ALL_ASSETS, partition_key=day, resources=alone, instance=instance).success
    for asset in ASSETS:
        for day in RANGE:
            assertDataFrameEqual(
                spark.read.parquet(f"{lake}/{asset}/trade_dt={day}"),
                spark.read.parquet(f"{single}/{asset}/trade_dt={day}"),
            )


def land_copy(servers, source_day: str, day: str) -> None:
    """Lands `day` as a copy of `source_day`'s files, with the dates inside rewritten."""
    root = Path(servers.env["CAPSTONE_LANDING_ROOT"])
    for source in sorted(root.glob(f"*/{source_day}/*/*")):
        target = root / source.parts[-4] / day / source.parts[-2] / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes().replace(source_day.encode(), day.encode()))


def test_the_day_after_has_landing_files_but_is_not_preprocessed_yet(servers):
    land_copy(servers, "2020-08-11", DAY_AFTER)  # Wednesday's batches arrive during the day
    launched = servers.launch_backfill(["2020-08-11"], list(ASSETS))
    # Meanwhile, as a second operator would: the analytical group alone over two loaded days.
    alone = servers.launch_backfill(["2020-08-07", "2020-08-10"], ["eod_quote_report"])

    result = servers.wait_for_backfill(launched, timeout=900)
    print(result)
    assert result.status == "COMPLETED_SUCCESS", f"{result}\n{servers.log_tails()}"
    assert {run.partition for run in result.runs} == {"2020-08-11", DAY_AFTER}
    assert report_status(servers, DAY_AFTER) == "deferred"
    assert servers.tracker().get_status(f"preprocessing_{DAY_AFTER}") is None

    analytical = servers.wait_for_backfill(alone, timeout=900)
    print(analytical)
    assert analytical.status == "COMPLETED_SUCCESS", f"{analytical}\n{servers.log_tails()}"
    assert {run.partition for run in analytical.runs} == {"2020-08-07", "2020-08-10"}  # nothing added
    assert all(run.status == "SUCCESS" for run in analytical.runs), analytical


def test_the_day_after_is_preprocessed_its_report_is_recomputed(servers, spark, monkeypatch):
    preprocessing = backfill(servers, [DAY_AFTER], PREPROCESSING)  # the preprocessing group alone
    assert preprocessing.status == "COMPLETED_SUCCESS", f"{preprocessing}\n{servers.log_tails()}"
    assert {run.partition for run in preprocessing.runs} == {DAY_AFTER}
    assert servers.tracker().get_status(f"preprocessing_{DAY_AFTER}") == "success"

    # analytical_sensor replaces the deferred report: it asks for Wednesday's report now.
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", servers.database_url)
    with DagsterInstance.from_config(str(servers.dagster_home)) as instance:
        resources = {"tracker": servers.tracker(), "lake": resources_of(servers)["lake"]}
        context = build_sensor_context(instance=instance, resources=resources)
        requested = {r.partition_key for r in analytical_sensor(context).run_requests}
    assert DAY_AFTER in requested

    result = backfill(servers, ["2020-08-11"])
    assert result.status == "COMPLETED_SUCCESS", f"{result}\n{servers.log_tails()}"
    assert report_status(servers, DAY_AFTER) == "computed"
    assert servers.tracker().get_status(f"analytical_{DAY_AFTER}") == "success"
    report = spark.read.parquet(f"{servers.env['CAPSTONE_LAKE_ROOT']}/eod_quote_report/trade_dt={DAY_AFTER}")
    assert report.count() > 0 and report.where("close_pr is null").count() == 0  # Tuesday's closes
