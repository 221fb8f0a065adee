"""One lister of the landing zone, Hadoop's, for every caller (SPEC.md §1; issue 7, case 10).

Ingestion reads what Hadoop's FileSystem lists; the gate (`has_landing_files`),
the landing sensor and `capstone_assets.run` must see exactly that, with the
same skip rules, on any root Spark can read.
"""

import json
import uuid
from contextlib import contextmanager
from pathlib import Path

from dagster import SensorResult, build_sensor_context

from capstone_assets import run
from capstone_assets.resources import LakeResource
from capstone_assets.sensors import landing_sensor


def land(root: Path, relative: str, text: str = "x\n") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def names(paths: list[str]) -> list[str]:
    return [p.rsplit("/", 1)[1] for p in paths]


@contextmanager
def default_filesystem_elsewhere(spark, seen: Path, real: Path):
    """Hadoop's default filesystem mounts `real` at the path `seen`, as on a cluster whose
    fs.defaultFS is HDFS: a path without a scheme is no longer the local folder Python sees."""
    conf = spark._jsc.hadoopConfiguration()
    name = f"cluster{uuid.uuid4().hex[:8]}"  # a fresh mount table: Hadoop caches filesystems
    previous = conf.get("fs.defaultFS")
    conf.set(f"fs.viewfs.mounttable.{name}.link.{seen}", real.as_uri())
    conf.set(f"fs.viewfs.mounttable.{name}.linkFallback", "file:///")
    conf.set("fs.defaultFS", f"viewfs://{name}/")
    try:
        yield
    finally:
        conf.set("fs.defaultFS", previous)


def test_every_caller_sees_what_spark_reads_when_the_default_filesystem_is_not_local(
    spark, tmp_path, tracker
):
    seen, real = tmp_path / "landing", tmp_path / "cluster_landing"
    land(seen, "csv/2020-08-05/NYSE/local-disk-only.txt")  # Python would see it, Spark does not
    land(real, "csv/2020-08-06/NYSE/batch-1.txt")
    lake = LakeResource(landing_root=str(seen), lake_root=str(tmp_path / "lake"))
    resources = {"lake": lake, "tracker": tracker}
    with default_filesystem_elsewhere(spark, seen, real):
        assert lake.landing_files(spark, "2020-08-06").count == 1  # what ingestion reads
        assert lake.has_landing_files("2020-08-06", lambda: spark)  # the gate agrees
        assert not lake.has_landing_files("2020-08-05", lambda: spark)
        assert run.landed_days(str(seen), spark) == ["2020-08-06"]

        first = landing_sensor(build_sensor_context(resources=resources))
        land(real, "csv/2020-08-06/NASDAQ/batch-2.txt")  # a batch where Spark reads
        land(seen, "csv/2020-08-07/NYSE/local-disk-only.txt")  # and one it never reads
        later = landing_sensor(build_sensor_context(cursor=first.cursor, resources=resources))
    assert [r.partition_key for r in later.run_requests] == ["2020-08-06"]


def test_the_landing_sensor_watches_a_url_root(spark, tmp_path, tracker):
    landing = tmp_path / "landing"
    land(landing, "csv/2020-08-05/NYSE/batch-1.txt")
    lake = LakeResource(landing_root=landing.as_uri(), lake_root=str(tmp_path / "lake"))
    resources = {"lake": lake, "tracker": tracker}
    assert lake.landing_root.startswith("file:///")

    first = landing_sensor(build_sensor_context(resources=resources))
    assert isinstance(first, SensorResult) and first.run_requests == []  # the baseline

    land(landing, "csv/2020-08-05/NASDAQ/batch-2.txt")  # a batch after 17:00
    land(landing, "json/2020-08-06/NASDAQ/_SUCCESS")  # a marker alone is not a delivery
    result = landing_sensor(build_sensor_context(cursor=first.cursor, resources=resources))
    assert [r.partition_key for r in result.run_requests] == ["2020-08-05"]
    assert landing_sensor(build_sensor_context(cursor=result.cursor, resources=resources)).run_requests == []

    # A batch rewritten in place (same name, new size) is a change too.
    land(landing, "csv/2020-08-05/NYSE/batch-1.txt", "x\ny\n")
    again = landing_sensor(build_sensor_context(cursor=result.cursor, resources=resources))
    assert [r.partition_key for r in again.run_requests] == ["2020-08-05"]
    assert again.run_requests[0].run_key != result.run_requests[0].run_key


def test_a_cursor_of_the_earlier_sensor_starts_no_storm_of_runs(spark, tmp_path, tracker):
    landing = tmp_path / "landing"
    land(landing, "csv/2020-08-05/NYSE/batch-1.txt")
    land(landing, "csv/2020-08-06/NYSE/batch-1.txt")
    lake = LakeResource(landing_root=str(landing), lake_root=str(tmp_path / "lake"))
    earlier = json.dumps({"2020-08-05": "hash-of-local-paths"})  # a day → fingerprint map
    context = build_sensor_context(cursor=earlier, resources={"lake": lake, "tracker": tracker})
    assert [r.partition_key for r in landing_sensor(context).run_requests] == ["2020-08-06"]


def test_one_set_of_skip_rules_for_every_caller(spark, tmp_path):
    landing = tmp_path / "landing"
    land(landing, "csv/2020-08-05/NYSE/a.txt")
    land(landing, "json/2020-08-05/NASDAQ/b.jsonl")
    skipped = [
        "csv/2020-08-05/NYSE/_SUCCESS",  # a marker
        "csv/2020-08-05/NYSE/.a.txt.swp",  # hidden
        "csv/2020-08-05/_temporary/c.txt",  # in a hidden folder (a copy in progress)
        "csv/2020-08-05/NYSE/nested/d.txt",  # below <exchange>/
        "csv/2020-08-05/e.txt",  # no exchange folder
    ]
    for relative in skipped:
        land(landing, relative)
    land(landing, "csv/2020-08-07/NYSE/_SUCCESS")  # a day with a marker only
    land(landing, "csv/2020-08-10/NYSE/f.txt._COPYING_")  # an HDFS copy not finished
    land(landing, "csv/2020-02-30/NYSE/g.txt")  # not a date
    land(landing, "csv/notes/NYSE/h.txt")
    lake = LakeResource(landing_root=str(landing), lake_root=str(tmp_path / "lake"))

    files = lake.landing_files(spark, "2020-08-05")
    assert names(files.by_format["csv"]) == ["a.txt"]
    assert names(files.by_format["json"]) == ["b.jsonl"]
    prefix = f"{landing.as_uri().removeprefix('file://')}/"
    assert sorted(p.split(prefix, 1)[1] for p in files.skipped) == sorted(skipped)
    assert lake.has_landing_files("2020-08-05", lambda: spark)
    assert not lake.has_landing_files("2020-08-07", lambda: spark)
    assert not lake.has_landing_files("2020-08-10", lambda: spark)
    assert run.landed_days(str(landing), spark) == ["2020-08-05"]


def test_the_lister_lists_the_zone_by_day_with_sizes_and_times(spark, tmp_path):
    from capstone_assets.resources.landing import LandingZone

    landing = tmp_path / "landing"
    land(landing, "csv/2020-08-05/NYSE/a.txt", "x\n")
    land(landing, "json/2020-08-08/NASDAQ/b.txt", "{}\n")  # a Saturday: listed, the callers decide
    land(landing, "csv/2020-08-06/NYSE/_SUCCESS")
    zone = LandingZone(spark, landing.as_uri())
    listing = zone.listing()
    assert [(f.relative, f.day, f.read_as, f.size) for f in listing.files] == [
        ("csv/2020-08-05/NYSE/a.txt", "2020-08-05", "csv", 2),
        ("json/2020-08-08/NASDAQ/b.txt", "2020-08-08", "json", 3),
    ]
    assert names(listing.skipped) == ["_SUCCESS"]
    assert listing.days() == ["2020-08-05", "2020-08-08"]
    before = listing.fingerprints()
    land(landing, "csv/2020-08-05/NYSE/a.txt", "x\ny\n")
    after = zone.listing().fingerprints()
    assert after["2020-08-05"] != before["2020-08-05"] and after["2020-08-08"] == before["2020-08-08"]
