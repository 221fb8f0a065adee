"""The lake's swap under concurrency and failure: real threads, a killed process, real files.

Only the point of failure is injected: a Hadoop FileSystem whose `rename` calls a
hook (pause, refuse, stop dead) before or after doing the real rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from capstone_assets import assets, schemas
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.lake import StagedDay

DAY = "2020-08-06"
LIVE = f"trade_dt={DAY}"
SCHEMA = "symbol string, n int"
RAW = ("raw_trades", "raw_quotes", "raw_rejects")
REPO = Path(__file__).resolve().parents[1]


class HookedFs:
    """A Hadoop FileSystem whose `rename` goes through a hook; every other call is the real one."""

    def __init__(self, fs, hook):
        self._fs, self._hook = fs, hook

    def __getattr__(self, name):
        return getattr(self._fs, name)

    def rename(self, src, dst):
        return self._hook(self._fs, src, dst)


def lake_with_rename(hook, lake_root, landing_root="unused") -> LakeResource:
    class HookedLake(LakeResource):
        def _fs(self, spark, path):
            fs, jvm_path = super()._fs(spark, path)
            return HookedFs(fs, hook), jvm_path

    return HookedLake(landing_root=str(landing_root), lake_root=str(lake_root))


def moves_a_staged_day_in(src, dst) -> bool:
    return (
        dst.getName() == LIVE
        and src.getParent().getName() == "_staging"
        and src.getName() != f"{LIVE}.previous"
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def frame(spark, tag: str, n: int = 1):
    return spark.createDataFrame([(tag, n)], SCHEMA)


@pytest.fixture
def lake(tmp_path):
    return LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))


# ------------------------------------------------- case 2: readers never repair
def test_a_reader_during_a_swap_sees_a_whole_version_and_moves_nothing(spark, lake, tmp_path):
    lake.write_day(spark, frame(spark, "old"), "t", DAY)
    staged = lake.stage(spark, frame(spark, "new"), "t", DAY)
    aside, resume = threading.Event(), threading.Event()

    def pause_once_the_live_day_is_aside(fs, src, dst):
        done = fs.rename(src, dst)
        if src.getName() == LIVE:
            aside.set()
            resume.wait(120)
        return done

    writer = lake_with_rename(pause_once_the_live_day_is_aside, tmp_path / "lake")
    errors = []
    thread = threading.Thread(target=lambda: _capture(errors, writer.commit, spark, staged))
    thread.start()
    try:
        assert aside.wait(120), "the writer never set the live day aside"
        before = tree(tmp_path / "lake")
        assert lake.day_exists(spark, "t", DAY)
        seen = lake.read_day(spark, "t", DAY, SCHEMA).collect()
        seen_in_days = lake.read_days(spark, "t", [DAY], lake_schema()).select("symbol", "n").collect()
        after = tree(tmp_path / "lake")
    finally:
        resume.set()
        thread.join(120)
    assert errors == []
    assert after == before, "a reader renamed or deleted something"
    assert seen in ([Row(symbol="old", n=1)], [Row(symbol="new", n=1)]) and seen_in_days == seen
    assertDataFrameEqual(lake.read_day(spark, "t", DAY, SCHEMA), [("new", 1)])
    assert not [p for p in (tmp_path / "lake" / "t" / LIVE).iterdir() if p.is_dir()], "a nested folder"


def test_a_reader_of_a_day_left_aside_reads_the_backup_and_moves_nothing(spark, lake, tmp_path):
    lake.write_day(spark, frame(spark, "old"), "t", DAY)
    fs, final = lake._fs(spark, lake.day_path("t", DAY))  # a writer killed after its first rename
    fs.rename(final, lake._path(spark, lake._backup_path("t", DAY)))
    before = tree(tmp_path / "lake")
    assertDataFrameEqual(lake.read_day(spark, "t", DAY, SCHEMA), [("old", 1)])
    assert lake.day_exists(spark, "t", DAY)
    assert tree(tmp_path / "lake") == before


def test_a_commit_never_renames_into_a_folder_that_appeared(spark, lake, tmp_path):
    lake.write_day(spark, frame(spark, "old"), "t", DAY)
    staged = lake.stage(spark, frame(spark, "new"), "t", DAY)
    final = tmp_path / "lake" / "t" / LIVE

    def outsider_writes_the_day_while_it_is_aside(fs, src, dst):
        done = fs.rename(src, dst)
        if src.getName() == LIVE:
            final.mkdir()
            (final / "part-outsider.parquet").write_bytes(b"PAR1")
        return done

    writer = lake_with_rename(outsider_writes_the_day_while_it_is_aside, tmp_path / "lake")
    with pytest.raises(OSError, match="nest"):
        writer.commit(spark, staged)
    assert sorted(p.name for p in final.iterdir()) == ["part-outsider.parquet"]
    assert Path(staged.path).is_dir(), "the staged day is kept for the next run"


def test_renames_and_repairs_happen_inside_the_guard(spark, lake, tmp_path):
    lake.write_day(spark, frame(spark, "old"), "t", DAY)
    fs, final = lake._fs(spark, lake.day_path("t", DAY))  # leftovers of a killed swap, to repair
    fs.rename(final, lake._path(spark, lake._backup_path("t", DAY)))
    held, renames = [False], []

    @contextlib.contextmanager
    def guard():
        held[0] = True
        try:
            yield
        finally:
            held[0] = False

    def record(fs, src, dst):
        renames.append((src.getName(), held[0]))
        return fs.rename(src, dst)

    lake_with_rename(record, tmp_path / "lake").write_day(spark, frame(spark, "new"), "t", DAY, guard=guard)
    assert (f"{LIVE}.previous", True) in renames, "the repair renames the backup back"
    assert all(inside for _, inside in renames), renames
    assertDataFrameEqual(lake.read_day(spark, "t", DAY, SCHEMA), [("new", 1)])


# ------------------------------------- case 3: a day's outputs switch together
def write_landing(root: Path, batch: str, seq: int) -> None:
    folder = root / "csv" / DAY / "NYSE"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / batch).write_text(
        f"{DAY},{DAY} 09:30:00.000,T,SYMA,{DAY} 09:31:00.000,{seq},NYSE,78.5,100\n"
        f"{DAY},{DAY} 09:30:00.000,Q,SYMA,{DAY} 09:32:00.000,{seq + 1},NYSE,78.4,100,78.6,200\n"
        "not a record\n"
    )


def batches(spark, lake: LakeResource) -> dict[str, set[str]]:
    """Per raw output, the landing batches its rows come from, as a reader sees it."""
    return {
        asset: {
            r.source_file.rsplit("/", 1)[1]
            for r in lake.read_day(spark, asset, DAY, schemas.BY_DATASET[asset]).collect()
        }
        for asset in RAW
    }


def test_ingestion_outputs_switch_together_when_a_swap_fails(spark, tmp_path):
    write_landing(tmp_path / "landing", "b1.txt", 1)
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))

    def refuse_to_move_raw_quotes_in(fs, src, dst):
        if moves_a_staged_day_in(src, dst) and dst.getParent().getName() == "raw_quotes":
            return False  # what Hadoop returns when a rename cannot be done
        return fs.rename(src, dst)

    failing = lake_with_rename(refuse_to_move_raw_quotes_in, tmp_path / "lake", tmp_path / "landing")
    instance = DagsterInstance.ephemeral()

    def run(lake_resource):
        resources = {
            "spark": spark_resource("local[2]"),
            "lake": lake_resource,
            "tracker": TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}"),
            "quality": QualityResource(),
        }
        return materialize(
            [assets.ingestion],
            partition_key=DAY,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )

    assert run(lake).success
    old = {asset: {"b1.txt"} for asset in RAW}
    assert batches(spark, lake) == old
    write_landing(tmp_path / "landing", "b2.txt", 3)
    assert not run(failing).success
    assert batches(spark, lake) == old, "the three outputs of the day switch together or not at all"
    assert run(lake).success
    assert batches(spark, lake) == {asset: {"b1.txt", "b2.txt"} for asset in RAW}
    leftovers = [p.name for asset in RAW for p in (tmp_path / "lake" / asset / "_staging").glob("*")]
    assert leftovers == []


def test_a_switch_killed_half_way_is_completed_by_the_next_run(spark, lake, tmp_path):
    for asset in RAW:
        lake.write_day(spark, frame(spark, "old"), asset, DAY)
    staged = [lake.stage(spark, frame(spark, "new"), asset, DAY) for asset in RAW]
    child = subprocess.Popen(
        [sys.executable, "-m", "capstone_assets_tests.test_lake_swap", str(tmp_path / "lake"),
         json.dumps([dataclasses.asdict(s) for s in staged])],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output = _wait_for_line(child, "swapped", timeout=300)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the child and its JVM stop dead, mid-switch
        child.wait(60)
    assert "swapped" in output, output
    live = {asset: spark.read.parquet(lake.day_path(asset, DAY)).collect() for asset in RAW}
    assert live["raw_trades"] != live["raw_quotes"], "killed between the first and the second swap"

    seen = {asset: lake.read_day(spark, asset, DAY, SCHEMA).collect() for asset in RAW}
    assert len({tuple(rows) for rows in seen.values()}) == 1, f"a reader sees a mix: {seen}"

    # The next run of one of those outputs completes the switch before its own.
    lake.write_day(spark, frame(spark, "next"), "raw_rejects", DAY)
    for asset, tag in (("raw_trades", "new"), ("raw_quotes", "new"), ("raw_rejects", "next")):
        assertDataFrameEqual(lake.read_day(spark, asset, DAY, SCHEMA), [(tag, 1)])
    assert [p.name for asset in RAW for p in (tmp_path / "lake" / asset / "_staging").glob("*")] == []


def test_a_switch_that_cannot_finish_or_undo_is_undone_by_the_next_run(spark, lake, tmp_path):
    for asset in RAW:
        lake.write_day(spark, frame(spark, "old"), asset, DAY)
    staged = [lake.stage(spark, frame(spark, "new"), asset, DAY) for asset in RAW]
    swapped = []

    def storage_lost_after_the_first_swap(fs, src, dst):
        if swapped:
            return False
        done = fs.rename(src, dst)
        if moves_a_staged_day_in(src, dst):
            swapped.append(dst.getParent().getName())
        return done

    with pytest.raises(OSError):
        lake_with_rename(storage_lost_after_the_first_swap, tmp_path / "lake").commit_all(spark, staged)
    assert swapped == ["raw_trades"]
    for asset in RAW:  # the undo could not finish: readers already see the old day everywhere
        assertDataFrameEqual(lake.read_day(spark, asset, DAY, SCHEMA), [("old", 1)])

    lake.write_day(spark, frame(spark, "next"), "raw_trades", DAY)
    for asset, tag in (("raw_trades", "next"), ("raw_quotes", "old"), ("raw_rejects", "old")):
        assertDataFrameEqual(lake.read_day(spark, asset, DAY, SCHEMA), [(tag, 1)])
    assert [p.name for asset in RAW for p in (tmp_path / "lake" / asset / "_staging").glob("*")] == []


# ----------------------------------------------------------------- helpers
def lake_schema():
    from pyspark.sql import types as T

    return T.StructType([T.StructField("symbol", T.StringType()), T.StructField("n", T.IntegerType())])


def _capture(errors: list, function, *args) -> None:
    try:
        function(*args)
    except BaseException as error:  # reported by the test's thread
        errors.append(error)


def _wait_for_line(process, wanted: str, timeout: float) -> str:
    lines = []
    while True:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        lines.append(line)
        if not line or wanted in line:
            return "".join(lines)


def _commit_and_stop_dead_after_the_first_swap(lake_root: str, staged_json: str) -> None:
    """The child process: a JVM with Hadoop (no SparkContext, so it starts in seconds)."""
    from types import SimpleNamespace

    from pyspark.java_gateway import launch_gateway

    jvm = launch_gateway().jvm
    configuration = jvm.org.apache.hadoop.conf.Configuration()
    session = SimpleNamespace(_jvm=jvm, _jsc=SimpleNamespace(hadoopConfiguration=lambda: configuration))

    def stop_after_the_first_swap(fs, src, dst):
        done = fs.rename(src, dst)
        if moves_a_staged_day_in(src, dst):
            print("swapped", flush=True)
            sys.stdin.readline()  # killed here
        return done

    staged = [StagedDay(**s) for s in json.loads(staged_json)]
    lake_with_rename(stop_after_the_first_swap, lake_root).commit_all(session, staged)


if __name__ == "__main__":
    _commit_and_stop_dead_after_the_first_swap(*sys.argv[1:])
