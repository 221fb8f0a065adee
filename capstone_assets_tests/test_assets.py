"""Assets materialized with dagster.materialize on the real sample and on the demo landing zone."""

from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from pyspark import StorageLevel
from pyspark.sql import functions as F

from capstone_assets import assets, schemas
from capstone_assets.assets.ingestion import read_landing_lines
from capstone_assets.demo import DEMO_DAYS, write_demo_landing
from capstone_assets.resources.landing import LandingZone
from capstone_assets.transforms import parsing
from capstone_assets_tests.conftest import platform_resources

ALL_ASSETS = [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report]
SAMPLE_DAYS = ("2020-08-05", "2020-08-06")


def run_days(days, landing_root, workdir):
    instance = DagsterInstance.ephemeral()
    resources = platform_resources(landing_root, workdir / "lake", workdir / "tracker.db")
    results = {}
    for day in days:
        results[day] = materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance)
        assert results[day].success
    return results, resources


def metadata(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.materialization.metadata


@pytest.fixture(scope="module")
def sample_run(spark, sample_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sample")
    results, resources = run_days(SAMPLE_DAYS, sample_dir, workdir)
    return results, resources, workdir


def test_sample_writes_the_six_assets_for_each_day(sample_run):
    _, _, workdir = sample_run
    for asset in ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes", "eod_quote_report"):
        for day in SAMPLE_DAYS:
            folder = workdir / "lake" / asset / f"trade_dt={day}"
            assert list(folder.glob("*.parquet")), f"{folder} has no Parquet file"


def test_sample_report_of_2020_08_06(spark, sample_run):
    _, _, workdir = sample_run
    report = spark.read.parquet(str(workdir / "lake" / "eod_quote_report")).where("trade_dt = '2020-08-06'")
    assert report.count() == 540
    closes = {(r["symbol"], r["exchange"]): r["close_pr"] for r in
              report.groupBy("symbol", "exchange").agg(F.min("close_pr").alias("close_pr")).collect()}  # fmt: skip
    assert closes[("SYMA", "NYSE")] == pytest.approx(77.78611024375384, abs=1e-12)
    assert closes[("SYMA", "NASDAQ")] == pytest.approx(77.24675705545206, abs=1e-12)
    assert report.where("last_trade_pr is null or last_mov_avg_pr is null or close_pr is null").count() == 0
    # The first day has no previous trading day: its closes are null.
    first = spark.read.parquet(str(workdir / "lake" / "eod_quote_report")).where("trade_dt = '2020-08-05'")
    assert first.where("close_pr is not null").count() == 0


def test_sample_metadata_shows_counts_schema_path_and_identity(sample_run):
    results, _, workdir = sample_run
    raw = metadata(results["2020-08-06"], "raw_quotes")
    assert raw["dagster/row_count"].value == 540
    assert raw["identity"].value == "lines read 600 = trades 60 + quotes 540 + rejects 0"
    assert raw["per_exchange"].value == {
        "NASDAQ": {"lines": 300, "trades": 30, "quotes": 270, "rejects": 0},
        "NYSE": {"lines": 300, "trades": 30, "quotes": 270, "rejects": 0},
    }
    report = metadata(results["2020-08-06"], "eod_quote_report")
    assert [
        c.name for c in report["dagster/column_schema"].value.columns
    ] == schemas.EOD_QUOTE_REPORT.fieldNames()
    assert report["path"].value == str(workdir / "lake" / "eod_quote_report" / "trade_dt=2020-08-06")
    assert report["previous_trading_day"].value == "2020-08-05"


def test_rerunning_a_day_gives_identical_output(spark, sample_run):
    _, resources, workdir = sample_run
    path = str(workdir / "lake" / "eod_quote_report" / "trade_dt=2020-08-06")
    before = sorted(spark.read.parquet(path).collect())
    other_day = sorted(spark.read.parquet(str(workdir / "lake" / "trades" / "trade_dt=2020-08-05")).collect())
    result = materialize(ALL_ASSETS, partition_key="2020-08-06", resources=resources)
    assert result.success
    assert sorted(spark.read.parquet(path).collect()) == before
    assert (
        sorted(spark.read.parquet(str(workdir / "lake" / "trades" / "trade_dt=2020-08-05")).collect())
        == other_day
    )


def test_demo_landing_zone_rejects_and_corrections(spark, tmp_path):
    write_demo_landing(tmp_path / "landing")
    results, _ = run_days(DEMO_DAYS[:3], tmp_path / "landing", tmp_path)
    lake = tmp_path / "lake"
    rejects = spark.read.parquet(str(lake / "raw_rejects" / "trade_dt=2020-08-07"))
    reasons = {r["reason"]: r["count"] for r in rejects.groupBy("reason").count().collect()}
    assert reasons == {
        "field_count": 4, "bad_rec_type": 3, "missing_key": 2, "bad_timestamp": 2,
        "bad_number": 3, "negative_value": 2, "trade_dt_mismatch": 2, "bad_json": 1,
    }  # fmt: skip
    identity = metadata(results["2020-08-07"], "raw_trades")["per_exchange"].value
    assert all(c["lines"] == c["trades"] + c["quotes"] + c["rejects"] for c in identity.values())
    raw_quotes = spark.read.parquet(str(lake / "raw_quotes" / "trade_dt=2020-08-07"))
    loaded = spark.read.parquet(str(lake / "quotes" / "trade_dt=2020-08-07"))
    keys = ["symbol", "exchange", "event_tm", "event_seq_nb"]
    assert loaded.count() == raw_quotes.select(*keys).distinct().count() < raw_quotes.count()
    # Every corrected record carries the later batch's values.
    corrected = raw_quotes.groupBy(*keys).agg(F.max("arrival_tm").alias("arrival_tm"))
    assert loaded.join(corrected, keys + ["arrival_tm"], "left_anti").count() == 0
    # Monday's previous trading day is Friday: the weekend has no trades.
    assert metadata(results["2020-08-10"], "eod_quote_report")["previous_trading_day"].value == "2020-08-07"
    monday = spark.read.parquet(str(lake / "eod_quote_report" / "trade_dt=2020-08-10"))
    friday_close = (
        spark.read.parquet(str(lake / "trades" / "trade_dt=2020-08-07"))
        .where("symbol = 'SYMA' and exchange = 'NYSE'")
        .orderBy(F.desc("event_tm"), F.desc("event_seq_nb"))
        .first()["trade_pr"]
    )
    closes = monday.where("symbol = 'SYMA' and exchange = 'NYSE'").select("close_pr").distinct().collect()
    assert [r["close_pr"] for r in closes] == [friday_close]


def test_demo_generator_is_deterministic(tmp_path):
    first = write_demo_landing(tmp_path / "a")
    second = write_demo_landing(tmp_path / "b")
    assert len(first) == 24  # 4 days x 3 exchanges x 2 batches
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert b"\r\n" in (tmp_path / "a" / "csv" / "2020-08-06" / "NYSE" / "batch-2.txt").read_bytes()


def test_a_parse_left_cached_by_a_killed_run_is_parsed_again(spark, tmp_path):
    """A run killed while ingesting (no `unpersist`) leaves the day's parsed lines in Spark's
    cache, which a shared Spark server keeps for every later run, and the same day's plan
    would find them there. Run again after a file of the day grew, the day reads it anew."""
    write_demo_landing(tmp_path / "landing")
    day = DEMO_DAYS[0]
    listing = LandingZone(spark, str(tmp_path / "landing")).listing(day)
    leftover = parsing.parse_lines(read_landing_lines(spark, listing), day)
    before = leftover.persist(StorageLevel.MEMORY_AND_DISK).count()
    try:
        grown = next(Path(f.path.removeprefix("file:")) for f in listing.files if f.path.endswith(".txt"))
        lines = grown.read_text().splitlines()
        grown.write_text("\n".join([*lines, lines[0]]) + "\n")  # a line sent twice is read twice
        results, _ = run_days([day], tmp_path / "landing", tmp_path)
        assert metadata(results[day], "raw_trades")["lines_read"].value == before + 1
    finally:
        leftover.unpersist()
