"""The tracker's contract (SPEC.md §6), on PostgreSQL and on the embedded SQLite default."""

import datetime as dt
import multiprocessing
import subprocess
import time
import uuid
from pathlib import Path

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


# ----------------------------------------------------------- helpers for child processes
def wait_for(path, seconds=120, process=None):
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process is not None and not process.is_alive():
            raise AssertionError(f"the process ended (exit code {process.exitcode}) before {path.name}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {seconds} s")
        time.sleep(0.05)


def another_host(url, table, **settings) -> TrackerResource:
    """A tracker as a run on another host sees it (the host name is the only thing changed)."""
    import socket

    socket.gethostname = lambda: "host-a"
    return TrackerResource(url=url, table=table, **settings)


def _claim_when_told(url, table, run_id, marks):
    tracker = TrackerResource(url=url, table=table, stale_after_seconds=2)
    (marks / "claiming").touch()
    tracker.claim("preprocessing", DAY, run_id)
    (marks / "claimed").write_text(repr(time.time()))


def _commit_under_the_claim(url, table, folder, marks):
    from capstone_assets.resources.tracker import ClaimLost

    # Another host whose heartbeat has stopped (a database outage): its claim can be taken over.
    tracker = another_host(url, table, heartbeat_seconds=3600, stale_after_seconds=2)
    tracker.claim("preprocessing", DAY, "run-A")
    with tracker.holding(JOB, "run-A"):
        (marks / "inside").touch()
        wait_for(marks / "go")
        (folder / "staged").rename(folder / "live")
        (marks / "renamed").write_text(repr(time.time()))  # the transaction commits after this
    wait_for(marks / "claimed")  # the other run has taken the day over
    try:
        with tracker.holding(JOB, "run-A"):
            (folder / "live").rename(folder / "second")
    except ClaimLost as lost:
        (marks / "lost").write_text(str(lost))


# ---------------------------------------------------------------- case 1: failed steps
def test_a_failed_step_keeps_the_day_held_until_its_run_ends(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    assert tracker.note_failure(JOB, "run-1", "trades: ValueError: boom")
    record = tracker.get_job(JOB)
    assert (record.status, record.error) == (RUNNING, "trades: ValueError: boom")
    # The run's other steps go on: the day is still its own.
    with pytest.raises(JobRefused, match=r"run-1 .*a step failed \(trades: ValueError: boom\)"):
        tracker.claim("preprocessing", DAY, "run-2")
    assert tracker.claim("preprocessing", DAY, "run-1").run_id == "run-1"
    assert tracker.note_failure(JOB, "run-1", "quotes: OSError: disk full")
    assert not tracker.note_failure(JOB, "run-other", "nope")
    # Its last step ends it: failed, with every step's error.
    assert tracker.finish(JOB, "run-other") is None
    assert tracker.finish(JOB, "run-1") == FAILED
    record = tracker.get_job(JOB)
    assert (record.status, record.error) == (FAILED, "trades: ValueError: boom; quotes: OSError: disk full")
    assert tracker.claim("preprocessing", DAY, "run-2").run_id == "run-2"
    assert tracker.finish(JOB, "run-2") == SUCCESS and tracker.get_job(JOB).error is None
    tracker.claim("preprocessing", DAY, "run-3")
    assert tracker.finish(JOB, "run-3", error="incomplete: quotes") == FAILED
    assert tracker.get_job(JOB).error == "incomplete: quotes"


def test_a_claim_whose_dagster_run_has_ended_is_taken_over(tracker):
    tracker.claim("preprocessing", DAY, "run-1")  # this process, alive; heartbeat fresh
    with pytest.raises(JobRefused, match="run-1"):
        tracker.claim("preprocessing", DAY, "run-2", run_ended=lambda run_id: False)
    record = tracker.claim("preprocessing", DAY, "run-2", run_ended={"run-1"}.__contains__)
    assert (record.run_id, record.attempts) == ("run-2", 2)


# ------------------------------------------------------------- case 4: losing a claim
def test_a_takeover_waits_while_the_holder_commits_and_the_holder_then_cannot(tracker, tmp_path):
    tracker.get_status(JOB)  # the table exists before the processes start
    folder, marks = tmp_path / "lake", tmp_path / "marks"
    (folder / "staged").mkdir(parents=True)
    marks.mkdir()
    context = multiprocessing.get_context("spawn")
    holder = context.Process(target=_commit_under_the_claim, args=(tracker.url, tracker.table, folder, marks))
    holder.start()
    wait_for(marks / "inside", process=holder)
    deadline = time.monotonic() + 60
    while utcnow() - tracker.get_job(JOB).heartbeat_time < dt.timedelta(seconds=2.5):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # The holder's heartbeat has lapsed: another run takes over, but only once the commit is done.
    taker = context.Process(target=_claim_when_told, args=(tracker.url, tracker.table, "run-B", marks))
    taker.start()
    wait_for(marks / "claiming", process=taker)
    time.sleep(1.0)  # time enough for a claim that does not wait
    assert not (marks / "claimed").exists(), "a takeover went through while the holder was committing"
    (marks / "go").touch()
    taker.join(timeout=120), holder.join(timeout=120)
    assert taker.exitcode == 0 and holder.exitcode == 0
    assert float((marks / "claimed").read_text()) > float((marks / "renamed").read_text())
    assert tracker.get_job(JOB).run_id == "run-B"
    # The commit made under the claim stands; the one tried after the takeover was refused.
    assert (folder / "live").is_dir() and not (folder / "second").exists()
    lost = (marks / "lost").read_text()
    assert f"{JOB}" in lost and "run-A lost its claim" in lost and "run-B" in lost


def _beat_until_lost(url, table, marks):
    from capstone_assets.resources.tracker import ClaimLost

    # Beats rarer than the stale limit: a run whose database was out of reach for a while.
    tracker = another_host(url, table, heartbeat_seconds=3, stale_after_seconds=2)
    tracker.claim("preprocessing", DAY, "run-A")
    (marks / "claimed").touch()
    with tracker.heartbeating(JOB, "run-A", on_lost=(marks / "noticed").write_text) as claim:
        wait_for(marks / "noticed")
        assert claim.lost
        refusals = []
        try:
            with claim.holding():  # what the lake's commit asks for
                pass
        except ClaimLost as lost:
            refusals.append(str(lost))
        try:
            tracker.claim("preprocessing", DAY, "run-A")  # what the run's next step asks for
        except ClaimLost as lost:
            refusals.append(str(lost))
        (marks / "refused").write_text("\n".join(refusals))


def test_the_heartbeat_notices_a_lost_claim_and_the_run_can_no_longer_commit(tracker, tmp_path):
    tracker.get_status(JOB)
    marks = tmp_path / "marks"
    marks.mkdir()
    holder = multiprocessing.get_context("spawn").Process(
        target=_beat_until_lost, args=(tracker.url, tracker.table, marks)
    )
    holder.start()
    wait_for(marks / "claimed", process=holder)
    deadline = time.monotonic() + 60
    while True:  # taken over as soon as a beat is late
        try:
            tracker.claim("preprocessing", DAY, "run-B")
            break
        except JobRefused:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    holder.join(timeout=120)
    assert holder.exitcode == 0
    noticed = (marks / "noticed").read_text()
    assert "run-A lost its claim" in noticed and "run-B" in noticed
    refusals = (marks / "refused").read_text().splitlines()
    assert len(refusals) == 2 and all("run-A lost its claim" in r for r in refusals)
    assert tracker.get_job(JOB).run_id == "run-B"


# ----------------------------------------------------- case 5: processes on one host
@pytest.mark.parametrize(
    "column, value",
    [("pid_namespace", "pid:[4026530000]"), ("boot_id", "00000000-0000-0000-0000-000000000000")],
)
def test_a_claim_from_another_process_space_of_this_host_waits_for_its_heartbeat(tracker, column, value):
    from capstone_assets.resources.tracker import boot_id, pid_namespace

    record = tracker.claim("preprocessing", DAY, "run-1")
    assert (record.boot_id, record.pid_namespace) == (boot_id(), pid_namespace())
    # Same host name, a pid that is dead here, but another container or boot: the pid proves nothing.
    set_columns(tracker, pid=dead_pid(), **{column: value})
    with pytest.raises(JobRefused, match="run-1"):
        tracker.claim("preprocessing", DAY, "run-2")
    assert tracker.is_live(tracker.get_job(JOB))
    set_columns(tracker, heartbeat_time=utcnow() - dt.timedelta(seconds=tracker.stale_after_seconds + 1))
    assert tracker.claim("preprocessing", DAY, "run-2").run_id == "run-2"


NAMESPACED_RUN = """
import pathlib, sys, time
from capstone_assets.resources.tracker import TrackerResource
url, table, marks = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
tracker = TrackerResource(url=url, table=table, heartbeat_seconds=0.2, stale_after_seconds=2)
tracker.claim("preprocessing", "2020-08-05", "run-ns")
with tracker.heartbeating("preprocessing_2020-08-05", "run-ns"):
    (marks / "claimed").touch()
    while not (marks / "stop").exists():
        time.sleep(0.05)
"""


def unshare_pid_works() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not unshare_pid_works(), reason="unshare --pid needs root (CAP_SYS_ADMIN)")
def test_a_live_run_in_another_pid_namespace_is_not_taken_over(tracker, tmp_path):
    import os
    import sys

    tracker.get_status(JOB)
    marks = tmp_path / "marks"
    marks.mkdir()
    # A real process in its own pid namespace (a container on this host): its pid means nothing here.
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", NAMESPACED_RUN,
         tracker.url, tracker.table, str(marks)],
        env=os.environ.copy(),
    )  # fmt: skip
    try:
        wait_for(marks / "claimed")
        with pytest.raises(JobRefused, match="run-ns"):
            tracker.claim("preprocessing", DAY, "run-2")
        assert tracker.get_job(JOB).pid_namespace != os.readlink("/proc/self/ns/pid")
    finally:
        (marks / "stop").touch()
        process.wait(timeout=60)
    deadline = time.monotonic() + 60
    while True:  # the claim is left running; it is taken over once its heartbeat lapses
        try:
            record = tracker.claim("preprocessing", DAY, "run-2")
            break
        except JobRefused:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert (record.run_id, record.attempts) == ("run-2", 2)


# ------------------------------------------------------------ case 12: schema upgrade
def v1_table(name: str) -> sa.Table:
    """The table exactly as the first version of the tracker created it."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(32), nullable=False),
        sa.Column("trade_dt", sa.String(10), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("updated_time", sa.DateTime, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_started", sa.String(32)),
        sa.Column("heartbeat_time", sa.DateTime),
        sa.Column("started_time", sa.DateTime),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
    )


def _open_tracker(url, table, barrier, results):
    barrier.wait()
    try:
        results.put(TrackerResource(url=url, table=table).get_status(JOB))
    except Exception as error:  # reported to the test
        results.put(repr(error))


def test_a_table_from_the_first_version_is_upgraded_in_place(tracker):
    engine = sa.create_engine(tracker.url)
    old = v1_table(tracker.table)
    old.metadata.create_all(engine)
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            old.insert().values(
                job_id=JOB, workflow="preprocessing", trade_dt=DAY, status=SUCCESS, updated_time=now,
                run_id="run-0", host="old-host", pid=1, heartbeat_time=now, started_time=now, attempts=1,
                error="kept",
            )
        )  # fmt: skip
    # Four processes start on it at once: each adds what is missing, or finds it added.
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [
        context.Process(target=_open_tracker, args=(tracker.url, tracker.table, barrier, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == [SUCCESS] * 4
    columns = {c["name"] for c in sa.inspect(engine).get_columns(tracker.table)}
    engine.dispose()
    assert columns == set(old.c.keys()) | {"boot_id", "pid_namespace"}
    record = tracker.get_job(JOB)
    assert (record.status, record.run_id, record.error, record.boot_id) == (SUCCESS, "run-0", "kept", None)
    claimed = tracker.claim("preprocessing", DAY, "run-1")
    assert (claimed.attempts, claimed.boot_id) == (
        2,
        Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
    )


def test_holding_is_reentrant_in_one_thread(tracker):
    tracker.claim("preprocessing", DAY, "run-1")
    # A nested guard (a repair inside a commit) reuses the lock instead of waiting for itself.
    with tracker.holding(JOB, "run-1") as outer, tracker.holding(JOB, "run-1") as inner:
        assert outer == inner and outer.run_id == "run-1"
    with tracker.holding(JOB, "run-1"):
        pass


def test_a_claim_committed_just_before_the_database_is_lost_is_known_to_its_run(postgres_url):
    """The claim's write and its read-back are one transaction: PostgreSQL lost right after the
    claim commits leaves a run that knows it holds the day (it then fails as a run that lost its
    tracker), not a run told "refused" while the day's row says it is running."""
    from sqlalchemy.engine import make_url

    from capstone_assets.resources.tracker import TrackerUnreachable, _engine
    from capstone_assets_tests.proxy import Proxy

    real = make_url(postgres_url)
    proxy = Proxy(real.port or 5432)
    url = real.set(port=proxy.port).render_as_string(hide_password=False)
    table = f"job_tracker_test_{uuid.uuid4().hex[:10]}"
    tracker = TrackerResource(url=url, table=table, heartbeat_seconds=0.2, stale_after_seconds=2)
    direct = TrackerResource(url=postgres_url, table=table)
    try:
        assert tracker.get_job(JOB) is None  # the table exists before the fault is armed
        engine, written = _engine(url), []

        def note_the_claim(_conn, _cursor, statement, *_):
            written.append(statement.lstrip().upper().startswith("INSERT"))

        def cut_once_committed(_dbapi_connection, _record):  # the claim's connection is back in the pool
            if any(written):
                proxy.cut()

        sa.event.listen(engine, "after_cursor_execute", note_the_claim)
        sa.event.listen(engine.pool, "checkin", cut_once_committed)
        try:
            record = tracker.claim("preprocessing", DAY, "run-1")
        finally:
            sa.event.remove(engine, "after_cursor_execute", note_the_claim)
            sa.event.remove(engine.pool, "checkin", cut_once_committed)
        assert any(written) and proxy.cut_done, "the fault did not take effect"
        assert (record.job_id, record.status, record.run_id, record.attempts) == (JOB, RUNNING, "run-1", 1)
        assert (direct.get_job(JOB).status, direct.get_job(JOB).run_id) == (RUNNING, "run-1")
        with pytest.raises(TrackerUnreachable):
            tracker.heartbeat(JOB, "run-1")
    finally:
        cleanup = sa.create_engine(postgres_url)
        with cleanup.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        cleanup.dispose()
