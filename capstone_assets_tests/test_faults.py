"""Faults mid-run (issue 8), each injected for real and first checked to have taken effect:
the tracker's PostgreSQL unreachable at the start or lost after the claim, a lake folder that
cannot be written (a full disk, a file where a folder must go), the JVM killed while it writes.
The README's "What happens when things go wrong" lists them with what the operator does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from capstone_assets import assets
from capstone_assets.resources import LakeResource, TrackerResource
from capstone_assets.resources.tracker import redacted
from capstone_assets_tests.conftest import IN_CI, REPO, platform_resources
from capstone_assets_tests.proxy import Proxy
from capstone_assets_tests.test_workflows import env, run_script, start_script, tracker_of  # noqa: F401

DAY = "2020-08-05"
JOB = f"preprocessing_{DAY}"
PREPROCESSING = [assets.ingestion, assets.trades, assets.quotes]
PASSWORD = "Fault-S3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def files_containing(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# ------------------------------------------------------------- the tracker's database
def test_an_unreachable_tracker_refuses_the_run_names_it_without_password_and_writes_nothing(env, tmp_path):
    port = free_port()
    assert refused(port), "the fault did not take effect: something listens on the tracker's port"
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    down = {**env, "CAPSTONE_TRACKER_URL": url}
    shown = redacted(url)
    assert PASSWORD not in shown and "***" in shown

    # The workflow script refuses before Dagster starts, in one line.
    script = run_script("run_preprocessing.sh", DAY, down)
    assert script.returncode == 2
    assert script.stderr.startswith(f"capstone-jobs: the job tracker database {shown} is not reachable (")
    assert script.stderr.rstrip().endswith("start it or fix CAPSTONE_TRACKER_URL")
    assert len(script.stderr.strip().splitlines()) == 1

    # `dagster job execute` (no script before it) is refused by the step, before Spark starts.
    direct = subprocess.run(
        [str(REPO / ".venv" / "bin" / "dagster"), "job", "execute", "-m", "capstone_assets.definitions",
         "-j", "preprocessing_job", "--tags", f'{{"dagster/partition": "{DAY}"}}'],
        env=down, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = direct.stdout + direct.stderr
    assert direct.returncode != 0
    assert f"Refusing to start {JOB}: the job tracker database {shown} is not reachable" in output
    assert "Nothing was run or written." in output
    assert PASSWORD not in output + script.stdout + script.stderr
    assert not files_containing(Path(env["DAGSTER_HOME"]), PASSWORD)
    lake = tmp_path / "lake"
    assert not lake.exists() or not any(lake.iterdir()), "the refused run wrote to the lake"


def test_postgres_lost_after_the_claim_fails_the_run_clearly_and_the_claim_is_taken_over(env, tmp_path):
    from sqlalchemy.engine import make_url

    real = make_url(env["CAPSTONE_TRACKER_URL"])
    proxy = Proxy(real.port or 5432)
    through_proxy = real.set(port=proxy.port).render_as_string(hide_password=False)
    tracker = tracker_of(env)  # straight to PostgreSQL: what the test sees

    run = start_script("run_preprocessing.sh", DAY, {**env, "CAPSTONE_TRACKER_URL": through_proxy},
                       tmp_path / "lost.log")  # fmt: skip
    # The cut comes once the step has its claim: the row says running and the run has logged it
    # (the row alone could be read while the claim's commit was still on its way back).
    deadline, claimed = time.monotonic() + 300, f"{JOB}: claimed by run"
    while time.monotonic() < deadline and run.poll() is None and claimed not in run.log_path.read_text():
        time.sleep(0.05)
    proxy.cut()
    record = tracker.get_job(JOB)
    assert claimed in run.log_path.read_text(), run.log_path.read_text()
    assert record is not None and record.status == "running", run.log_path.read_text()
    assert refused(proxy.port), "the fault did not take effect: the tracker is still reachable"
    assert run.wait(timeout=300) != 0
    output = run.log_path.read_text()
    shown = make_url(through_proxy).render_as_string(hide_password=True)
    assert f"{JOB} lost its tracker while running: the job tracker database {shown} is not reachable" in output
    assert "The day was not committed (its previous version stays)" in output
    assert not (tmp_path / "lake" / "raw_trades" / f"trade_dt={DAY}").exists(), "a run without tracker committed"
    after = tracker.get_job(JOB)
    assert (after.status, after.run_id) == ("running", record.run_id)  # its row could not be written

    # Later, with the database back: the dead run's claim is taken over at once (same host, pid gone).
    again = run_script("run_preprocessing.sh", DAY, env)
    assert again.returncode == 0, again.stdout + again.stderr
    final = tracker.get_job(JOB)
    assert (final.status, final.attempts) == ("success", 2) and final.run_id != record.run_id


# ------------------------------------------------------------------ the lake
def preprocess(landing: Path, lake_root: Path, tracker_db: Path):
    resources = platform_resources(landing, lake_root, tracker_db)
    result = materialize(
        PREPROCESSING, partition_key=DAY, resources=resources,
        instance=DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip
    failures = [e.step_failure_data for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    failure = failures[0].user_failure_data.description if failures and failures[0].user_failure_data else None
    return result.success, failure, resources["lake"]


def day_rows(spark, lake: LakeResource) -> dict[str, list]:
    from capstone_assets import schemas

    return {
        asset: sorted(lake.read_day(spark, asset, DAY, schema).collect())
        for asset, schema in (("raw_quotes", schemas.RAW_QUOTES), ("quotes", schemas.QUOTES))
    }


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a full disk that binds root too."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_fails_the_write_clearly_and_the_day_keeps_its_version(spark, sample_dir, small_disk, tmp_path):
    lake_root, tracker_db = small_disk / "lake", tmp_path / "tracker.db"
    ok, failure, lake = preprocess(sample_dir, lake_root, tracker_db)
    assert ok, failure
    before = day_rows(spark, lake)

    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last block
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    stats = os.statvfs(small_disk)
    assert stats.f_bavail * stats.f_frsize < 8192, "the fault did not take effect: the disk has room"

    ok, failure, _ = preprocess(sample_dir, lake_root, tracker_db)
    assert not ok
    assert failure.startswith(f"Cannot write raw_trades for {DAY} to {lake_root}/raw_trades/_staging/"), failure
    assert "No space left on device" in failure and "the day keeps its previous version" in failure
    assert day_rows(spark, lake) == before
    record = TrackerResource(url=f"sqlite:///{tracker_db}").get_job(JOB)
    assert record.status == "failed" and "No space left on device" in record.error
    assert not list((lake_root / "raw_trades" / "_staging").glob("trade_dt=*")), "the failed write was left"

    filler.unlink()  # the operator frees space and runs the day again
    ok, failure, _ = preprocess(sample_dir, lake_root, tracker_db)
    assert ok, failure
    assert day_rows(spark, lake) == before
    assert not list((lake_root / "raw_trades" / "_staging").glob("*")), "the failed run's staging was left"


def test_a_file_where_a_lake_folder_must_go_fails_clearly_and_the_day_keeps_its_version(spark, sample_dir, tmp_path):
    lake_root, tracker_db = tmp_path / "lake", tmp_path / "tracker.db"
    ok, failure, lake = preprocess(sample_dir, lake_root, tracker_db)
    assert ok, failure
    before = day_rows(spark, lake)

    staging = lake_root / "raw_quotes" / "_staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.write_text("not a folder")  # e.g. a mistaken copy
    assert staging.is_file(), "the fault did not take effect"

    ok, failure, _ = preprocess(sample_dir, lake_root, tracker_db)
    assert not ok
    assert failure.startswith(f"Cannot write raw_quotes for {DAY} to {staging}/"), failure
    assert "is not a directory" in failure and "the day keeps its previous version" in failure
    assert day_rows(spark, lake) == before
    assert not list((lake_root / "raw_trades" / "_staging").glob("*")), "the other outputs' staging was left"

    staging.unlink()
    ok, failure, _ = preprocess(sample_dir, lake_root, tracker_db)
    assert ok, failure
    assert day_rows(spark, lake) == before


# ------------------------------------------------------------------ the JVM
def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_java(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"java")
    except OSError:
        return False


def test_the_jvm_killed_while_writing_leaves_the_previous_version_and_the_next_run_repairs(env, spark, tmp_path):
    first = run_script("run_preprocessing.sh", DAY, env)
    assert first.returncode == 0, first.stdout + first.stderr
    lake = LakeResource(landing_root=env["CAPSTONE_LANDING_ROOT"], lake_root=env["CAPSTONE_LAKE_ROOT"])
    before = day_rows(spark, lake)
    staging = Path(env["CAPSTONE_LAKE_ROOT"]) / "raw_trades" / "_staging"

    run = start_script("run_preprocessing.sh", DAY, env, tmp_path / "killed.log")
    tracker = tracker_of(env)
    deadline, killed = time.monotonic() + 300, []
    while time.monotonic() < deadline and run.poll() is None and not killed:
        record = tracker.get_job(JOB)
        if record and record.status == "running" and record.attempts == 2 and list(staging.glob("trade_dt=*")):
            killed = [pid for pid in descendants(record.pid) if is_java(pid)]
            for pid in killed:
                os.kill(pid, signal.SIGKILL)  # Spark is writing the day: its JVM dies
        time.sleep(0.05)
    assert killed, "the fault did not take effect: no JVM was killed while writing\n" + run.log_path.read_text()
    assert run.wait(timeout=300) != 0
    assert day_rows(spark, lake) == before, "the previous version of the day is not whole"
    record = tracker.get_job(JOB)
    assert record.status in ("failed", "running"), record  # failed, or running under a dead run

    again = run_script("run_preprocessing.sh", DAY, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert tracker.get_status(JOB) == "success"
    assert day_rows(spark, lake) == before
    assert not list(staging.glob("trade_dt=*")), "the killed run's staging was not cleaned up"
