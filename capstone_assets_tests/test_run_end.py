"""A run that ends with no step left to record it (issue 7, case 1: "the final status is
written however it ends"): `tracker_closing_sensor` turns its row `failed`.

The runs are real records in a real Dagster instance (on disk), whose end is reported the
way the daemon's run monitoring and the UI's *Terminate* report it; the tracker is real.
"""

from __future__ import annotations

from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.test_utils import create_run_for_test

from capstone_assets.jobs import ANALYTICAL, PREPROCESSING
from capstone_assets.sensors import tracker_closing_sensor

DAY = "2020-08-06"


def started_run(instance, workflow: str, day: str = DAY):
    return create_run_for_test(
        instance,
        job_name=f"{workflow}_job",
        status=DagsterRunStatus.STARTED,
        tags={PARTITION_NAME_TAG: day, "capstone/workflow": workflow},
    )


def tick(instance, tracker, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"tracker": tracker})
    result = tracker_closing_sensor(context)
    return result, result.cursor


def test_rows_of_runs_that_failed_or_were_canceled_between_steps_turn_failed(tracker, tmp_path):
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        died = started_run(instance, PREPROCESSING)
        stopped = started_run(instance, ANALYTICAL, "2020-08-05")
        tracker.claim(PREPROCESSING, DAY, died.run_id)
        tracker.claim(ANALYTICAL, "2020-08-05", stopped.run_id)
        # A run whose row another run took over: that row is the other run's, untouched.
        replaced = started_run(instance, PREPROCESSING, "2020-08-07")
        tracker.claim(PREPROCESSING, "2020-08-07", "the-run-that-took-over")

        result, cursor = tick(instance, tracker)
        assert result.skip_reason is not None  # nothing has ended yet
        assert tracker.get_status(f"preprocessing_{DAY}") == "running"

        instance.report_run_failed(died)  # what run monitoring reports for a dead worker
        instance.report_run_canceled(stopped)  # the UI's Terminate between two steps
        instance.report_run_failed(replaced)
        result, cursor = tick(instance, tracker, cursor)

        record = tracker.get_job(f"preprocessing_{DAY}")
        assert record.status == "failed"
        assert record.error == f"run {died.run_id} failed before a step recorded the day"
        canceled = tracker.get_job("analytical_2020-08-05")
        assert canceled.status == "failed" and "canceled before a step recorded the day" in canceled.error
        other = tracker.get_job("preprocessing_2020-08-07")
        assert (other.status, other.run_id) == ("running", "the-run-that-took-over")

        # The cursor moved past them: a re-run of the day that succeeds is not touched again.
        tracker.claim(PREPROCESSING, DAY, "a-later-run")
        tracker.finish(f"preprocessing_{DAY}", "a-later-run")
        result, _ = tick(instance, tracker, cursor)
        assert result.skip_reason is not None
        assert tracker.get_status(f"preprocessing_{DAY}") == "success"


def test_a_run_that_succeeded_is_never_touched(tracker, tmp_path):
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        run = started_run(instance, PREPROCESSING)
        tracker.claim(PREPROCESSING, DAY, run.run_id)
        instance.report_run_canceled(started_run(instance, PREPROCESSING, "2020-08-07"))  # no row
        tick(instance, tracker)
        assert tracker.get_status(f"preprocessing_{DAY}") == "running"
