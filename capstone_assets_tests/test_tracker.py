"""The tracker's contract (SPEC.md §6), on PostgreSQL and on the embedded SQLite default."""

import datetime as dt
import multiprocessing
import subprocess
import time

import pytest
import sqlalchemy as sa

from capstone_assets.resources.tracker import FAILED, RUNNING, SUCCESS, JobRefused, TrackerResource, utcnow

DAY = "2020-08-05"
JOB = f"preprocessing_{DAY}"


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def set_columns(tracker, **values):
    engine = sa.create_engine(tracker.url)
    table = sa.Table(tracker.table, sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.job_id == JOB).values(**values))
    engine.dispose()


def test_claim_update_and_get(tracker):
    assert tracker.assign_job_id("preprocessing", DAY) == JOB
    assert tracker.get_status(JOB) is None
    record = tracker.claim("preprocessing", DAY, "run-1")
    assert (record.job_id, record.status, record.run_id, record.attempts) == (JOB, RUNNING, "run-1", 1)
    assert tracker.get_status(JOB) == RUNNING
    assert tracker.update_status(JOB, SUCCESS, run_id="run-1")
    record = tracker.get_job(JOB)
    assert record.status == SUCCESS and record.updated_time >= record.started_time
    assert [r.job_id for r in tracker.list_jobs("2020-08-01", "2020-08-31")] == [JOB]
    assert tracker.list_jobs("2020-09-01", "2020-09-30") == []


def test_a_second_run_is_refused_and_changes_nothing(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    before = tracker.get_job(JOB)
    with pytest.raises(JobRefused, match="run-1"):
        tracker.claim("preprocessing", DAY, "run-2")
    assert tracker.get_job(JOB) == before
    # The holder's later steps pass through (re-entrant), other workflows and days are free.
    assert tracker.claim("preprocessing", DAY, "run-1").run_id == "run-1"
    assert tracker.claim("analytical", DAY, "run-2").status == RUNNING
    assert tracker.claim("preprocessing", "2020-08-06", "run-3").status == RUNNING


def test_failed_and_successful_days_can_be_run_again(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    tracker.update_status(JOB, FAILED, run_id="run-1", error="boom")
    assert tracker.get_job(JOB).error == "boom"
    record = tracker.claim("preprocessing", DAY, "run-2")
    assert (record.run_id, record.attempts, record.error) == ("run-2", 2, None)
    tracker.update_status(JOB, SUCCESS, run_id="run-2")
    assert tracker.claim("preprocessing", DAY, "run-3").attempts == 3


def test_final_status_is_written_only_by_the_holder(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    assert not tracker.update_status(JOB, SUCCESS, run_id="run-other")
    assert tracker.get_status(JOB) == RUNNING


def test_a_dead_process_on_this_host_is_taken_over_at_once(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    set_columns(tracker, pid=dead_pid())  # heartbeat still fresh
    record = tracker.claim("preprocessing", DAY, "run-2")
    assert (record.run_id, record.attempts) == ("run-2", 2)


def test_a_reused_pid_does_not_keep_a_dead_claim_alive(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    # The pid now belongs to a process started at another time: not the holder.
    set_columns(tracker, pid_started="1")
    assert tracker.claim("preprocessing", DAY, "run-2").run_id == "run-2"


def test_a_live_process_on_this_host_is_never_taken_over(tracker):
    tracker.claim("preprocessing", DAY, "run-1")  # this process: alive
    set_columns(tracker, heartbeat_time=utcnow() - dt.timedelta(hours=1))
    with pytest.raises(JobRefused):
        tracker.claim("preprocessing", DAY, "run-2")


def test_another_hosts_claim_is_taken_over_only_after_its_heartbeat_lapses(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    set_columns(tracker, host="another-host", pid=1)
    with pytest.raises(JobRefused, match="another-host"):
        tracker.claim("preprocessing", DAY, "run-2")
    set_columns(tracker, heartbeat_time=utcnow() - dt.timedelta(seconds=tracker.stale_after_seconds + 1))
    assert tracker.claim("preprocessing", DAY, "run-2").run_id == "run-2"


def test_heartbeat_keeps_a_claim_fresh(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    first = tracker.get_job(JOB).heartbeat_time
    with tracker.heartbeating(JOB, "run-1"):
        time.sleep(0.7)
    assert tracker.get_job(JOB).heartbeat_time > first


def test_release_refuses_a_live_run_and_releases_a_dead_one(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    with pytest.raises(JobRefused, match="live run"):
        tracker.release(JOB, "by hand")
    set_columns(tracker, pid=dead_pid())
    released = tracker.release(JOB, "by hand")
    assert (released.status, released.error) == (FAILED, "by hand")
    with pytest.raises(JobRefused, match="not running"):
        tracker.release(JOB, "again")


@pytest.mark.parametrize(
    "url, table, message",
    [
        ("sqlite:///x.db", "job_tracker; DROP TABLE x", "not a valid SQL identifier"),
        ("postgresql://postgres@127.0.0.1/postgres", "job_tracker", "postgresql\\+psycopg2"),
        ("mysql://x", "job_tracker", "unsupported"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(url, table, message):
    with pytest.raises(ValueError, match=message):
        TrackerResource(url=url, table=table).get_status(JOB)


def _race(url, table, run_id, barrier, results):
    tracker = TrackerResource(url=url, table=table)
    barrier.wait()
    try:
        tracker.claim("preprocessing", DAY, run_id)
        results.put((run_id, "claimed"))
    except JobRefused:
        results.put((run_id, "refused"))


def test_eight_processes_race_and_exactly_one_claims(tracker):
    tracker.get_status(JOB)  # creates the table before the race
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(8), context.Queue()
    processes = [
        context.Process(target=_race, args=(tracker.url, tracker.table, f"run-{i}", barrier, results))
        for i in range(8)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    outcomes = sorted(results.get(timeout=5) for _ in processes)
    winners = [run for run, outcome in outcomes if outcome == "claimed"]
    assert len(winners) == 1 and len(outcomes) == 8
    assert tracker.get_job(JOB).run_id == winners[0]
