"""The report freshness check: which day it expects, its verdict, and the job that runs it."""

import datetime as dt

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetMaterialization,
    Definitions,
    MetadataValue,
    RunRequest,
    SkipReason,
    asset,
    build_schedule_context,
    instance_for_test,
)

from capstone_assets.freshness import (
    expected_report_day,
    freshness_result,
    parse_deadline,
    report_freshness,
)
from capstone_assets.partitions import EXCHANGE_TZ, last_completed_trading_day, trading_day_partitions

DEADLINE = dt.time(18, 30)


def ny(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=EXCHANGE_TZ)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (ny(2020, 8, 7, 18, 29), "2020-08-06"),  # Friday before the deadline: Thursday
        (ny(2020, 8, 7, 18, 30), "2020-08-07"),  # at the deadline: the day itself
        (ny(2020, 8, 7, 23, 59), "2020-08-07"),
        (ny(2020, 8, 8, 12, 0), "2020-08-07"),  # Saturday
        (ny(2020, 8, 10, 9, 0), "2020-08-07"),  # Monday morning: Friday
        (ny(2020, 9, 7, 19, 0), "2020-09-04"),  # Labor Day (a holiday), after the deadline
        (ny(2020, 9, 8, 8, 0), "2020-09-04"),  # the morning after the holiday
        (dt.datetime(2020, 8, 7, 22, 31, tzinfo=dt.timezone.utc), "2020-08-07"),  # 18:31 EDT
    ],
)
def test_the_expected_day_is_the_latest_trading_day_past_its_deadline(now, expected):
    assert expected_report_day(now, DEADLINE).isoformat() == expected


def test_a_deadline_is_hh_mm_and_a_malformed_one_says_so():
    assert parse_deadline("18:30") == DEADLINE
    assert parse_deadline("7:05") == dt.time(7, 5)
    for bad in ("25:00", "18:60", "6pm", "18.30", ""):
        with pytest.raises(ValueError) as error:
            report_freshness(bad)
        assert str(error.value) == (
            f"CAPSTONE_REPORT_DEADLINE must be a New York time as HH:MM (e.g. 18:30), not '{bad}'"
        )


def test_the_verdict_names_the_day_and_what_to_do():
    day = dt.date(2020, 8, 7)
    missing = freshness_result(day, DEADLINE, "missing")
    assert (missing.passed, missing.severity) == (False, AssetCheckSeverity.WARN)
    assert missing.description == (
        "eod_quote_report for 2020-08-07 is not materialized by 18:30 New York: "
        "run analytical for that day / check the failed runs"
    )
    assert {key: value.value for key, value in missing.metadata.items()} == {
        "trading_day": "2020-08-07", "deadline": "18:30 New York", "report_state": "missing"
    }  # fmt: skip
    deferred = freshness_result(day, DEADLINE, "deferred")
    assert not deferred.passed and "deferred and wrote no data" in deferred.description
    assert freshness_result(day, DEADLINE, "materialized").passed


@asset(name="eod_quote_report", partitions_def=trading_day_partitions)
def report_stand_in():
    pass  # never materialized here: the tests report materializations themselves


def run_check(instance, now):
    freshness = report_freshness("18:30", now=lambda: now)
    defs = Definitions(assets=[report_stand_in], asset_checks=[freshness.check], jobs=[freshness.job])
    result = defs.resolve_job_def("report_freshness_job").execute_in_process(instance=instance)
    assert result.success  # a WARN never fails the run
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def report(instance, day, **metadata):
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key="eod_quote_report", partition=day, metadata=metadata)
    )


def test_the_check_job_runs_the_check_against_the_instance(tmp_path):
    friday_evening = ny(2020, 8, 7, 18, 31)
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        report(instance, "2020-08-06")  # only Thursday's report is in
        missing = run_check(instance, friday_evening)
        assert (missing.passed, missing.check_name) == (False, "materialized_by_deadline")
        assert missing.metadata["trading_day"] == MetadataValue.text("2020-08-07")
        assert missing.description.startswith("eod_quote_report for 2020-08-07 is not materialized by 18:30")
        assert run_check(instance, ny(2020, 8, 7, 18, 29)).passed  # before the deadline: Thursday counts

        report(instance, "2020-08-07", status=MetadataValue.text("deferred"))
        deferred = run_check(instance, friday_evening)
        assert not deferred.passed
        assert deferred.metadata["report_state"] == MetadataValue.text("deferred")

        report(instance, "2020-08-07", status=MetadataValue.text("computed"))
        report(instance, "2020-08-07", status="deferred")  # a later deferral keeps the data
        assert run_check(instance, friday_evening).passed
        assert not run_check(instance, ny(2020, 8, 10, 18, 30)).passed  # Monday's is due now


def test_the_definitions_run_the_check_at_the_deadline_on_trading_days(tmp_path):
    from capstone_assets.definitions import defs

    schedule = defs.resolve_schedule_def("report_freshness_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 18 * * 1-5", "America/New_York")
    assert schedule.job_name == "report_freshness_job"
    friday = build_schedule_context(scheduled_execution_time=ny(2020, 8, 7, 18, 30))
    assert isinstance(schedule(friday), RunRequest)
    labor_day = build_schedule_context(scheduled_execution_time=ny(2020, 9, 7, 18, 30))
    assert isinstance(schedule(labor_day), SkipReason)

    # The wired job runs only the check (no Spark) and judges the latest day due now.
    job = defs.resolve_job_def("report_freshness_job")
    assert [node.name for node in job.graph.node_defs] == ["eod_quote_report_materialized_by_deadline"]
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        due = last_completed_trading_day(dt.datetime.now(tz=EXCHANGE_TZ), close=DEADLINE)
        result = job.execute_in_process(instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["trading_day"] == MetadataValue.text(due.isoformat())
