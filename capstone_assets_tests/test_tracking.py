"""Claims, gates and partial runs as the assets apply them (SPEC.md §6)."""

import uuid

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from capstone_assets import assets
from capstone_assets.resources import QualityResource, TrackerResource
from capstone_assets.resources.tracker import JobRefused
from capstone_assets.tracking import analytical_gate

ALL_ASSETS = [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report]


def finish(tracker, workflow, day, status):
    """A whole run of the workflow for the day, ending in `status`."""
    run_id = uuid.uuid4().hex
    tracker.claim(workflow, day, run_id)
    assert tracker.update_status(f"{workflow}_{day}", status, run_id=run_id)


def test_analytical_gate_needs_the_day_and_its_previous_trading_day(tracker):
    landed = {"2020-08-06", "2020-08-07", "2020-08-10"}.__contains__  # not the weekend
    with pytest.raises(JobRefused, match="preprocessing_2020-08-10 is not run"):
        analytical_gate(tracker, "2020-08-10", landed)
    finish(tracker, "preprocessing", "2020-08-10", "success")
    finish(tracker, "preprocessing", "2020-08-07", "failed")
    with pytest.raises(JobRefused, match=r"previous trading day 2020-08-07 .* is failed, not success"):
        analytical_gate(tracker, "2020-08-10", landed)
    finish(tracker, "preprocessing", "2020-08-07", "success")
    # Thursday 2020-08-06 has landing files and was never preprocessed: SPEC.md §6
    # gates Monday on Friday only.
    assert analytical_gate(tracker, "2020-08-10", landed) == []


def test_analytical_gate_skips_a_previous_trading_day_without_landing_files(tracker):
    finish(tracker, "preprocessing", "2020-08-10", "success")
    assert analytical_gate(tracker, "2020-08-10", lambda day: False) == []


def test_files_on_a_weekend_or_holiday_warn_and_never_block(tracker):
    landed = {"2020-08-07", "2020-08-08", "2020-08-09", "2020-08-10"}.__contains__
    finish(tracker, "preprocessing", "2020-08-07", "success")
    finish(tracker, "preprocessing", "2020-08-10", "success")
    warnings = analytical_gate(tracker, "2020-08-10", landed)
    assert warnings == [
        "Landing files for 2020-08-08 are ignored: it is not a trading day (weekend or NYSE holiday)",
        "Landing files for 2020-08-09 are ignored: it is not a trading day (weekend or NYSE holiday)",
    ]
    # Thanksgiving 2020-11-26: Friday's report waits for Wednesday only.
    finish(tracker, "preprocessing", "2020-11-25", "success")
    finish(tracker, "preprocessing", "2020-11-27", "success")
    holiday = analytical_gate(tracker, "2020-11-27", {"2020-11-25", "2020-11-26", "2020-11-27"}.__contains__)
    assert holiday == [
        "Landing files for 2020-11-26 are ignored: it is not a trading day (weekend or NYSE holiday)"
    ]


def test_partial_runs_mark_success_only_when_the_workflow_is_up_to_date(spark, resources):
    instance = DagsterInstance.ephemeral()
    tracker: TrackerResource = resources["tracker"]
    day, job = "2020-08-05", "preprocessing_2020-08-05"

    def run(*selection):
        return materialize(
            ALL_ASSETS, selection=list(selection), partition_key=day, resources=resources,
            instance=instance, raise_on_error=False,
        )  # fmt: skip

    assert run("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes").success
    assert tracker.get_status(job) == "success"

    # Ingestion alone: the loaded tables are now older than the raw data.
    assert run("raw_trades", "raw_quotes", "raw_rejects").success
    record = tracker.get_job(job)
    assert record.status == "failed" and "quotes, trades not up to date" in record.error
    refused = run("eod_quote_report")
    assert not refused.success and tracker.get_status("analytical_2020-08-05") is None

    assert run("trades").success
    assert "incomplete: quotes not up to date" in tracker.get_job(job).error
    assert run("quotes").success
    assert tracker.get_status(job) == "success"
    assert run("eod_quote_report").success
    assert tracker.get_status("analytical_2020-08-05") == "success"


def reexecutable_preprocessing_job():
    """The preprocessing job on the test's lake (from the environment), reconstructable by Dagster."""
    import os

    from dagster import Definitions, in_process_executor

    from capstone_assets.jobs import preprocessing_job
    from capstone_assets.resources import LakeResource, spark_resource

    resources = {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(
            landing_root=os.environ["CAPSTONE_LANDING_ROOT"], lake_root=os.environ["CAPSTONE_LAKE_ROOT"]
        ),
        "tracker": TrackerResource(url=os.environ["CAPSTONE_TRACKER_URL"]),
        "quality": QualityResource(),
    }
    definitions = Definitions(
        assets=ALL_ASSETS, jobs=[preprocessing_job], resources=resources, executor=in_process_executor
    )
    return definitions.resolve_job_def("preprocessing_job")


def test_reexecuting_a_failed_run_from_its_failure_finishes_the_day(spark, sample_dir, tmp_path, monkeypatch):
    import shutil

    from dagster import ReexecutionOptions, execute_job, reconstructable

    monkeypatch.setenv("CAPSTONE_LANDING_ROOT", str(sample_dir))
    monkeypatch.setenv("CAPSTONE_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("CAPSTONE_TRACKER_URL", f"sqlite:///{tmp_path / 'tracker.db'}")
    tracker = TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}")
    job, day, tags = (
        reconstructable(reexecutable_preprocessing_job),
        "2020-08-05",
        {"dagster/partition": "2020-08-05"},
    )
    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        assert execute_job(job, instance, tags=tags).success
        raw_quotes = tmp_path / "lake" / "raw_quotes" / f"trade_dt={day}"
        shutil.move(raw_quotes, tmp_path / "aside")
        failed = execute_job(
            job, instance, tags=tags, asset_selection=[AssetKey("trades"), AssetKey("quotes")]
        )
        assert not failed.success
        assert "quotes" in tracker.get_job("preprocessing_2020-08-05").error

        shutil.move(tmp_path / "aside", raw_quotes)
        retried = execute_job(  # the UI's "re-execute from failure" keeps the run's partition tag
            job,
            instance,
            tags=tags,
            reexecution_options=ReexecutionOptions.from_failure(failed.run_id, instance),
        )
        assert retried.success
        assert instance.get_run_by_id(retried.run_id).step_keys_to_execute == ["quotes"]
    record = tracker.get_job("preprocessing_2020-08-05")
    assert (record.status, record.run_id) == ("success", retried.run_id)
