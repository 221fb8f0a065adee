"""Landing-zone surprises (issue 8): each gets one clear message in the run's log and a
deliberate outcome, never a bare stack trace. The README's "What happens when things go
wrong" lists them.

The preprocessing assets run in-process through `dagster.materialize` on real files,
with the test session's Spark; a run's log is read from its Dagster instance.
"""

from __future__ import annotations

import gzip
import shutil
import threading
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from capstone_assets import assets
from capstone_assets.resources import TrackerResource
from capstone_assets_tests.conftest import platform_resources

DAY, PREVIOUS = "2020-08-06", "2020-08-05"
PREPROCESSING = [assets.ingestion, assets.trades, assets.quotes]


class Run:
    def __init__(self, result, instance):
        self.result = result
        self.success = result.success
        events = instance.all_logs(result.run_id)
        self.log = "\n".join(e.user_message for e in events)
        self.warnings = [e.user_message for e in events if e.level >= 30]  # logging.WARNING
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        # What the UI shows first for a failed step: the Failure's description.
        data = failures[0].step_failure_data if failures else None
        self.failure = data.user_failure_data.description if data and data.user_failure_data else None
        self.error = data.error.to_string() if data else ""


@pytest.fixture
def zone(tmp_path, sample_dir) -> Path:
    """A landing zone holding the sample's two days."""
    root = tmp_path / "landing"
    shutil.copytree(sample_dir, root)
    return root


def preprocess(zone: Path, workdir: Path, day: str = DAY) -> Run:
    instance = DagsterInstance.ephemeral()
    resources = platform_resources(zone, workdir / "lake", workdir / "tracker.db")
    result = materialize(
        PREPROCESSING, partition_key=day, resources=resources, instance=instance, raise_on_error=False
    )
    return Run(result, instance)


def rows(spark, workdir: Path, asset: str, day: str = DAY) -> list:
    return sorted(spark.read.parquet(str(workdir / "lake" / asset / f"trade_dt={day}")).collect())


def tracker_status(workdir: Path, day: str = DAY) -> tuple[str, str | None]:
    record = TrackerResource(url=f"sqlite:///{workdir / 'tracker.db'}").get_job(f"preprocessing_{day}")
    return record.status, record.error


def nyse_file(zone: Path, day: str = DAY) -> Path:
    [path] = (zone / "csv" / day / "NYSE").iterdir()
    return path


def test_a_day_without_landing_files_is_written_empty_with_a_warning(spark, zone, tmp_path):
    for fmt in ("csv", "json"):
        shutil.rmtree(zone / fmt / DAY)
    run = preprocess(zone, tmp_path)
    assert run.success, run.failure
    assert f"No landing files for {DAY} under" in run.log
    assert any("landing_files_present" in w and "written empty" in w for w in run.warnings), run.warnings
    assert rows(spark, tmp_path, "raw_trades") == [] and rows(spark, tmp_path, "quotes") == []
    assert tracker_status(tmp_path) == ("success", None)


def test_an_exchange_folder_without_files_is_named_and_the_rest_is_ingested(spark, zone, tmp_path):
    nyse_file(zone).unlink()
    (zone / "json" / DAY / "NASDAQ" / "_SUCCESS").write_text("")  # a marker is not a data file
    run = preprocess(zone, tmp_path)
    assert run.success, run.failure
    assert any(f"csv/{DAY}/NYSE holds no data file: nothing of exchange NYSE" in w for w in run.warnings)
    assert any("NYSE delivered on 2020-08-05 but not today" in w for w in run.warnings), run.warnings
    assert {r["exchange"] for r in rows(spark, tmp_path, "raw_quotes")} == {"NASDAQ"}


def test_a_folder_of_another_format_is_named_and_not_read(spark, zone, tmp_path):
    other = zone / "xml" / DAY / "NYSE"
    other.mkdir(parents=True)
    shutil.copy(nyse_file(zone), other / "batch.txt")
    run = preprocess(zone, tmp_path)
    assert run.success, run.failure
    assert any(f"xml/{DAY} is not read: 'xml' is not a landing format" in w for w in run.warnings), run.warnings
    assert len(rows(spark, tmp_path, "raw_quotes")) == 540  # the sample's own, nothing from xml/


def test_records_of_another_date_are_rejected_and_their_file_named(spark, zone, tmp_path):
    misplaced = zone / "csv" / DAY / "NYSE" / "batch-2.txt"
    shutil.copy(nyse_file(zone, PREVIOUS), misplaced)
    run = preprocess(zone, tmp_path)
    assert run.success, run.failure
    [warning] = [w for w in run.warnings if "dated other than" in w]
    assert f"300 line(s) of file:{misplaced} are dated other than {DAY}" in warning
    assert "wrong day's folder" in warning
    rejects = rows(spark, tmp_path, "raw_rejects")
    assert len(rejects) == 300 and {r["reason"] for r in rejects} == {"trade_dt_mismatch"}


def test_an_unreadable_file_fails_the_run_in_one_sentence_and_the_day_keeps_its_version(
    spark, zone, tmp_path
):
    assert preprocess(zone, tmp_path).success
    before = rows(spark, tmp_path, "raw_quotes")
    truncated = zone / "csv" / DAY / "NYSE" / "batch-2.txt.gz"
    truncated.write_bytes(gzip.compress(nyse_file(zone).read_bytes())[:200])  # an upload cut short

    run = preprocess(zone, tmp_path)
    assert not run.success
    assert run.failure.startswith(f"Cannot read landing file file:///{str(truncated).lstrip('/')}: ")
    assert "Unexpected end of input stream" in run.failure
    assert "Nothing was committed: the day keeps its previous version" in run.failure
    assert "Traceback" not in run.failure and "Py4J" not in run.failure
    assert rows(spark, tmp_path, "raw_quotes") == before
    status, error = tracker_status(tmp_path)
    assert status == "failed" and "Cannot read landing file" in error


class Writer(threading.Thread):
    """Changes the landing zone every few milliseconds until stopped."""

    def __init__(self, change):
        super().__init__(daemon=True)
        self.change, self.stop, self.changes = change, threading.Event(), 0

    def run(self):
        while not self.stop.wait(0.02):
            self.change(self.changes)
            self.changes += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


def test_a_file_growing_while_the_day_is_read_fails_the_run_and_commits_nothing(spark, zone, tmp_path):
    assert preprocess(zone, tmp_path).success
    before = rows(spark, tmp_path, "raw_quotes")
    growing = nyse_file(zone)
    line = growing.read_text().splitlines()[0]

    def append(n):
        with growing.open("a") as f:
            f.write(line.replace(",1,NYSE,", f",{1000 + n},NYSE,") + "\n")

    size = growing.stat().st_size
    with Writer(append) as writer:
        run = preprocess(zone, tmp_path)
    assert writer.changes > 10 and growing.stat().st_size > size, "the file did not grow during the run"
    assert not run.success
    assert run.failure.startswith(f"The landing files of {DAY} changed while they were read: file:{growing} (changed)")
    assert "Nothing was committed: the day keeps its previous version" in run.failure
    assert rows(spark, tmp_path, "raw_quotes") == before
    assert tracker_status(tmp_path)[0] == "failed"


def test_files_appearing_while_the_day_is_read_wait_for_the_next_run(spark, zone, tmp_path):
    folder = zone / "csv" / DAY / "NYSE"
    template = nyse_file(zone).read_text()

    def deliver(n):  # whole files only: written under a hidden name, then renamed
        hidden = folder / f".batch-{n}.txt"
        hidden.write_text(template)
        hidden.rename(folder / f"batch-{n}.txt")

    with Writer(deliver) as writer:
        run = preprocess(zone, tmp_path)
    delivered = writer.changes
    assert delivered > 10, "no file appeared during the run"
    assert run.success, run.failure
    [warning] = [w for w in run.warnings if "appeared while the day was read" in w]
    assert "are not in this run" in warning and "the landing sensor runs the day again" in warning
    # What was read is whole files: 270 quotes each of the files listed at the start, never a part.
    nyse_quotes = [r for r in rows(spark, tmp_path, "raw_quotes") if r["exchange"] == "NYSE"]
    assert len(nyse_quotes) % 270 == 0 and len(nyse_quotes) < 270 * (delivered + 1)
    assert tracker_status(tmp_path) == ("success", None)
