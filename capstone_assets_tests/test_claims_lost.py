"""A run that lost its claim can no longer commit, and stops (issue 7, case 4).

A run on another host loses touch with the database for longer than the stale
limit; a second run takes the day over, stages its own copy (removing the first
one's) and commits. When the first run gets to its commit, it is refused: the
lake keeps the day as the second run wrote it.
"""

import multiprocessing
import time
from pathlib import Path

from dagster import DagsterInstance, materialize

from capstone_assets import assets, schemas
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.tracker import FAILED, utcnow

DAY = "2020-08-05"
JOB = f"preprocessing_{DAY}"


def wait_for(path, seconds=300, process=None):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process is None or process.is_alive(), f"the run ended before {path.name}"
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.1)


class PausingLake(LakeResource):
    """The lake, except that a commit waits for the test: the run stops just before its swap."""

    marks: str

    def commit(self, spark, staged, *args, **kwargs):
        (Path(self.marks) / "staged").touch()
        wait_for(Path(self.marks) / "go")
        return super().commit(spark, staged, *args, **kwargs)


def _run_trades_on_another_host(landing, lake_root, tracker_url, tracker_table, marks, results):
    import socket

    socket.gethostname = lambda: "host-a"
    resources = {
        "spark": spark_resource("local[1]"),
        "lake": PausingLake(landing_root=landing, lake_root=lake_root, marks=marks),
        # Its heartbeat never reaches the database: an outage longer than the stale limit.
        "tracker": TrackerResource(url=tracker_url, table=tracker_table, heartbeat_seconds=3600),
        "quality": QualityResource(),
    }
    result = materialize(
        [assets.trades], partition_key=DAY, resources=resources, instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )  # fmt: skip
    failures = [e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure]
    results.put((result.run_id, result.success, failures))


def day_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_a_run_that_lost_its_claim_cannot_commit_and_the_day_stays_as_the_new_run_wrote_it(
    spark, tracker, tmp_path
):
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
    lake.write_day(spark, spark.createDataFrame([], schemas.RAW_TRADES), "raw_trades", DAY)
    marks = tmp_path / "marks"
    marks.mkdir()
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    first = context.Process(
        target=_run_trades_on_another_host,
        args=(lake.landing_root, lake.lake_root, tracker.url, tracker.table, str(marks), results),
    )
    first.start()
    wait_for(marks / "staged", process=first)
    holder = tracker.get_job(JOB)
    assert holder.host == "host-a"
    deadline = time.monotonic() + 60
    while (utcnow() - tracker.get_job(JOB).heartbeat_time).total_seconds() <= tracker.stale_after_seconds:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # Its heartbeat has lapsed: this run takes the day over and writes it.
    resources = {
        "spark": spark_resource("local[2]"),
        "lake": lake,
        "tracker": tracker,
        "quality": QualityResource(),
    }
    second = materialize([assets.trades], partition_key=DAY, resources=resources, raise_on_error=False)
    assert second.success
    live = Path(lake.day_path("trades", DAY))
    written = day_files(live)

    (marks / "go").touch()
    run_id, success, failures = results.get(timeout=300)
    first.join(timeout=60)
    # The day is as the second run wrote it, and the first run failed saying why.
    assert day_files(live) == written
    assert not success
    assert len(failures) == 1 and f"run {run_id} lost its claim" in failures[0], failures
    assert second.run_id in failures[0] and JOB in failures[0]
    assert not list((Path(lake.asset_root("trades")) / "_staging").iterdir())
    record = tracker.get_job(JOB)
    assert (record.run_id, record.attempts) == (second.run_id, 2)
    # Ended by the second run; failed only because the raw data was not written by a tracked run.
    assert record.status == FAILED and record.error.startswith("incomplete: ")
