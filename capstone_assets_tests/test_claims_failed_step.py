"""A failed step does not release the day while its run goes on (issue 7, case 1).

Dagster keeps running a run's independent steps after one fails: a failed
`quotes` does not stop `trades`. The day stays held by the run until the run
ends, and the final status is written however it ends.
"""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from capstone_assets import assets, schemas
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.tracker import FAILED, RUNNING, JobRefused

DAY = "2020-08-05"
JOB = f"preprocessing_{DAY}"


def wait_for(path, seconds=300, process=None):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process is None or process.is_alive(), f"the run ended before {path.name}"
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.1)


class PausingLake(LakeResource):
    """The lake, except that reading `raw_trades` waits for the test: the `trades` step stops half way."""

    marks: str

    def read_day(self, spark, asset, day, schema):
        if asset == "raw_trades":
            (Path(self.marks) / "paused").touch()
            wait_for(Path(self.marks) / "go")
        return super().read_day(spark, asset, day, schema)


def _run_trades_and_quotes(landing, lake_root, tracker_url, tracker_table, marks, results):
    resources = {
        "spark": spark_resource("local[1]"),
        "lake": PausingLake(landing_root=landing, lake_root=lake_root, marks=marks),
        "tracker": TrackerResource(url=tracker_url, table=tracker_table),
        "quality": QualityResource(),
    }
    result = materialize(
        [assets.trades, assets.quotes], partition_key=DAY, resources=resources,
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip
    results.put((result.run_id, result.success))


@pytest.mark.parametrize("ending", ["ends", "is stopped"])
def test_the_day_stays_held_while_the_run_goes_on_after_a_failed_step(ending, spark, tracker, tmp_path):
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
    # raw_trades is there, raw_quotes is not: `quotes` fails (it runs first), `trades` goes on.
    lake.write_day(spark, spark.createDataFrame([], schemas.RAW_TRADES), "raw_trades", DAY)
    marks = tmp_path / "marks"
    marks.mkdir()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    run = context.Process(
        target=_run_trades_and_quotes,
        args=(lake.landing_root, lake.lake_root, tracker.url, tracker.table, str(marks), results),
    )
    run.start()
    wait_for(marks / "paused", process=run)

    record = tracker.get_job(JOB)
    assert record.status == RUNNING, f"the day was released while its run goes on: {record}"
    assert record.error.startswith("quotes: ") and "raw_quotes has no data" in record.error
    with pytest.raises(JobRefused, match=rf"Refusing to start {JOB} .*a step failed"):
        tracker.claim("preprocessing", DAY, "another-run")

    if ending == "ends":
        (marks / "go").touch()
    else:  # what stopping the run from the UI does to the run's process
        os.kill(run.pid, signal.SIGINT)
    run.join(timeout=300)
    record = tracker.get_job(JOB)
    assert record.status == FAILED and record.error.startswith("quotes: "), record
    if ending == "ends":
        run_id, success = results.get(timeout=10)
        assert not success and record.run_id == run_id and "; trades: " not in record.error
        assert lake.day_exists(spark, "trades", DAY)  # the run's other step went on
    else:
        assert "trades: " in record.error and "Interrupt" in record.error
    assert tracker.claim("preprocessing", DAY, "another-run").run_id == "another-run"


def test_a_run_ending_with_skipped_steps_or_between_steps_frees_the_day(spark, tmp_path):
    instance = DagsterInstance.ephemeral()
    tracker = TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}")
    (tmp_path / "not-a-folder").write_text("a file where the lake should be")
    broken = {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(landing_root=str(tmp_path), lake_root=str(tmp_path / "not-a-folder" / "lake")),
        "tracker": tracker,
        "quality": QualityResource(),
    }
    preprocessing = [assets.ingestion, assets.trades, assets.quotes]
    failed = materialize(
        preprocessing, partition_key=DAY, resources=broken, instance=instance, raise_on_error=False
    )
    assert not failed.success
    # Dagster does not run the steps downstream of the failed one: ingestion was the run's last.
    assert {e.step_key for e in failed.all_events if e.event_type_value == "STEP_START"} == {"ingestion"}
    record = tracker.get_job(JOB)
    assert record.status == FAILED and record.error.startswith("ingestion: "), record

    # A run stopped between two steps leaves its claim running, in a process that lives on
    # (a run executed in process). Its Dagster run has ended: the next run takes the day over.
    assert tracker.update_status(JOB, RUNNING)  # what such a run leaves: its claim, running
    lake = LakeResource(landing_root=str(tmp_path), lake_root=str(tmp_path / "lake"))
    for asset, schema in (("raw_trades", schemas.RAW_TRADES), ("raw_quotes", schemas.RAW_QUOTES)):
        lake.write_day(spark, spark.createDataFrame([], schema), asset, DAY)
    done = materialize(
        [assets.trades, assets.quotes], partition_key=DAY, resources={**broken, "lake": lake},
        instance=instance, raise_on_error=False,
    )  # fmt: skip
    assert done.success
    record = tracker.get_job(JOB)
    assert (record.run_id, record.attempts) == (done.run_id, 2)
    # Ended by its last step; failed only because the raw data was not written by a tracked run.
    assert record.status == FAILED and record.error.startswith(
        "incomplete: raw_quotes, raw_rejects, raw_trades"
    )
