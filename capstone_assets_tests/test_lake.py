"""Lake writes: a day replaces only that day; a failed write leaves the old day readable."""

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from capstone_assets.resources import LakeResource
from capstone_assets.resources.lake import file_format

SCHEMA = "symbol string, n int"


@pytest.fixture
def lake(tmp_path):
    return LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))


def test_rewriting_a_day_replaces_that_day_only(spark, lake):
    lake.write_day(spark, spark.createDataFrame([("A", 1)], SCHEMA), "t", "2020-08-05")
    lake.write_day(spark, spark.createDataFrame([("B", 2)], SCHEMA), "t", "2020-08-06")
    lake.write_day(spark, spark.createDataFrame([("C", 3)], SCHEMA), "t", "2020-08-06")
    both = spark.read.parquet(lake.asset_root("t")).select("symbol", "n", F.col("trade_dt").cast("string"))
    assertDataFrameEqual(both, [("A", 1, "2020-08-05"), ("C", 3, "2020-08-06")])


def test_a_failing_write_leaves_the_previous_version(spark, lake, tmp_path):
    lake.write_day(spark, spark.createDataFrame([("A", 1)], SCHEMA), "t", "2020-08-05")
    failing = spark.createDataFrame([("1",), ("x",)], "v string").select(
        F.lit("B").alias("symbol"),
        F.col("v").cast("int").alias("n"),  # ANSI: 'x' fails mid-write
    )
    with pytest.raises(Exception, match="CAST_INVALID_INPUT"):
        lake.write_day(spark, failing, "t", "2020-08-05")
    assertDataFrameEqual(lake.read_day(spark, "t", "2020-08-05", SCHEMA), [("A", 1)])


def test_an_interrupted_swap_is_recovered(spark, lake):
    lake.write_day(spark, spark.createDataFrame([("A", 1)], SCHEMA), "t", "2020-08-05")
    # A run killed between the two renames leaves the old version aside.
    staged = lake.stage(spark, spark.createDataFrame([("B", 2)], SCHEMA), "t", "2020-08-05")
    fs, final = lake._fs(spark, lake.day_path("t", "2020-08-05"))
    fs.rename(final, lake._path(spark, lake._backup_path("t", "2020-08-05")))
    assertDataFrameEqual(lake.read_day(spark, "t", "2020-08-05", SCHEMA), [("A", 1)])
    lake.commit(spark, staged)
    assertDataFrameEqual(lake.read_day(spark, "t", "2020-08-05", SCHEMA), [("B", 2)])


def test_an_empty_day_gets_a_schema_only_file(spark, lake):
    path = lake.write_day(spark, spark.createDataFrame([], SCHEMA), "t", "2020-08-05")
    assert spark.read.parquet(path).schema.simpleString() == "struct<symbol:string,n:int>"
    assert spark.read.parquet(path).count() == 0


def test_read_days_returns_only_existing_days_with_trade_dt(spark, lake):
    lake.write_day(spark, spark.createDataFrame([("A", 1)], SCHEMA), "t", "2020-08-05")
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("symbol", T.StringType()), T.StructField("n", T.IntegerType())])
    days = lake.read_days(spark, "t", ["2020-08-04", "2020-08-05"], schema)
    assertDataFrameEqual(days.select("symbol", F.col("trade_dt").cast("string")), [("A", "2020-08-05")])


def test_landing_files_by_format_skip_hidden_and_markers(spark, lake, tmp_path):
    folder = tmp_path / "landing" / "csv" / "2020-08-05" / "NYSE"
    folder.mkdir(parents=True)
    for name in ("a.txt", "b.json", "_SUCCESS", ".hidden"):
        (folder / name).write_text("x\n")
    files = lake.landing_files(spark, "2020-08-05")
    assert [p.rsplit("/", 1)[1] for p in files.by_format["csv"]] == ["a.txt"]
    assert [p.rsplit("/", 1)[1] for p in files.by_format["json"]] == ["b.json"]
    assert sorted(p.rsplit("/", 1)[1] for p in files.skipped) == [".hidden", "_SUCCESS"]
    assert lake.has_landing_files("2020-08-05", lambda: spark)
    assert not lake.has_landing_files("2020-08-06", lambda: spark)
    assert file_format("x.JSONL", "csv") == "json" and file_format("x.txt", "json") == "json"


def test_staging_left_by_a_dead_run_is_removed_by_the_next_write(spark, lake, tmp_path):
    abandoned = lake.stage(spark, spark.createDataFrame([("X", 9)], SCHEMA), "t", "2020-08-05")
    other_day = lake.stage(spark, spark.createDataFrame([("Y", 8)], SCHEMA), "t", "2020-08-06")
    lake.write_day(spark, spark.createDataFrame([("A", 1)], SCHEMA), "t", "2020-08-05")
    staging = sorted(p.name for p in (tmp_path / "lake" / "t" / "_staging").iterdir())
    assert staging == [other_day.path.rsplit("/", 1)[1]]
    assert abandoned.path.rsplit("/", 1)[1] not in staging
