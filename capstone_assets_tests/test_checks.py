"""Data-quality checks: the pure verdicts, what Spark counts for them, and per-day results in Dagster."""

import datetime as dt
import time

import pytest
from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, DagsterInstance, materialize
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from pyspark.sql import Observation, Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from capstone_assets import assets, checks
from capstone_assets.assets import analytics, eod_load
from capstone_assets.definitions import defs
from capstone_assets.demo import write_demo_landing
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.transforms import load, quality
from capstone_assets.transforms import report as report_transform

ALL_ASSETS = [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report]
TS = dt.datetime(2020, 8, 6, 10, 0)


# ------------------------------------------------------------------ pure verdicts
def counts(lines, trades, quotes, rejects):
    return {"lines": lines, "trades": trades, "quotes": quotes, "rejects": rejects}


def test_lines_accounted_for_per_exchange():
    good = checks.lines_accounted_for({"NYSE": counts(10, 3, 6, 1), "NASDAQ": counts(5, 1, 4, 0)})
    assert good.passed and good.description == "lines read 15 = trades 4 + quotes 10 + rejects 1"
    bad = checks.lines_accounted_for({"NYSE": counts(10, 3, 6, 1), "NASDAQ": counts(5, 1, 3, 0)})
    assert not bad.passed and bad.blocking
    assert bad.description == "lines lost or duplicated (NASDAQ: 5 lines, 4 written)"
    with pytest.raises(checks.BlockingCheckFailed, match="blocking check lines_accounted_for failed"):
        checks.require(bad, "2020-08-06")


def test_reject_rate_of_the_day_and_of_each_exchange():
    calm = checks.reject_rate({"NYSE": counts(100, 50, 45, 5), "NASDAQ": counts(100, 50, 46, 4)}, 0.05)
    assert calm.passed and calm.metadata["reject_rate"] == 0.045
    # The day is at 4.5%, but one exchange is above 5%.
    noisy = checks.reject_rate({"NYSE": counts(100, 50, 44, 6), "NASDAQ": counts(100, 50, 47, 3)}, 0.05)
    assert not noisy.passed and not noisy.blocking
    assert noisy.description.startswith("reject rate above 5.0%: NYSE 6.0%")
    assert not checks.reject_rate({"NYSE": counts(100, 0, 0, 100)}, 0.05).description.find("the day 100.0%") < 0
    assert checks.reject_rate({}, 0.05).passed  # no lines, no rate
    assert checks.reject_rate({"NYSE": counts(100, 50, 44, 6)}, 0.10).passed  # configurable


def test_landing_files_and_exchanges_delivered():
    assert checks.landing_files_present("2020-08-06", 3, "/landing").passed
    empty = checks.landing_files_present("2020-08-06", 0, "/landing")
    assert not empty.passed and "no landing files for 2020-08-06 under /landing" in empty.description
    late = checks.exchanges_delivered("2020-08-05", {"NYSE", "NASDAQ", "CBOE"}, {"NYSE"})
    assert not late.passed and late.metadata["missing"] == ["CBOE", "NASDAQ"]
    assert late.description.startswith("CBOE, NASDAQ delivered on 2020-08-05 but not today")
    assert checks.exchanges_delivered("2020-08-05", {"NYSE"}, {"NYSE", "CBOE"}).passed


def test_key_and_report_verdicts():
    assert checks.unique_record_key("trades", 10, 0, None).passed
    dup = checks.unique_record_key("trades", 10, 2, "A | NYSE | 2020-08-06 10:00:00 | 1")
    assert not dup.passed and dup.check == "unique_record_key_trades" and dup.blocking
    assert checks.one_row_per_quote(5, 5, 0, None).passed
    assert not checks.one_row_per_quote(6, 5, 1, "k").passed
    assert not checks.one_row_per_quote(5, 5, 2, "k").passed  # one quote twice, another missing
    assert checks.close_pr_present("2020-08-05", 0, None).passed
    missing = checks.close_pr_present("2020-08-05", 2, "SYMA | NYSE")
    assert not missing.passed and not missing.blocking and "traded on 2020-08-05" in missing.description


def test_every_check_is_declared_on_its_asset_with_the_trading_day_partitions():
    graph = defs.resolve_asset_graph()
    declared = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert {(asset, name) for name, (asset, _, _) in checks.CHECKS.items()} <= declared
    for spec in checks.specs_for("raw_rejects") + checks.specs_for("eod_quote_report"):
        assert spec.partitions_def is not None and spec.blocking == checks.CHECKS[spec.name][1]


# ---------------------------------------------------------------- Spark counting
def event(symbol, seq, exchange="NYSE"):
    return Row(symbol=symbol, exchange=exchange, event_tm=TS, event_seq_nb=seq)


def test_the_coverage_fast_path_agrees_with_grouping_every_key(spark, tmp_path):
    quotes = spark.createDataFrame([event("A", 1), event("A", 2), event("B", 1)])
    reports = {
        "same": [event("B", 1), event("A", 2), event("A", 1)],
        "one twice, one missing": [event("A", 1), event("A", 2), event("A", 2)],
        "one changed": [event("A", 1), event("A", 2), event("B", 2)],
        "one extra": [event("A", 1), event("A", 2), event("B", 1), event("C", 1)],
        "empty": [],
    }
    for name, rows in reports.items():
        report = spark.createDataFrame(rows, quotes.schema)
        slow = quality.quote_coverage(report, quotes).first()
        assert analytics.quote_coverage(report, quotes) == slow, name
        prints = quality.key_fingerprints(report, quotes).first()
        assert (prints["report_keys"] == prints["quote_keys"]) == (name == "same"), name
        # The same fingerprints, observed while a job writes both sides (as the report asset does).
        seen = {"quotes": Observation(), "report": Observation()}
        both = quotes.observe(seen["quotes"], *quality.key_fingerprint("quotes", "quote_keys")).unionByName(
            report.observe(seen["report"], *quality.key_fingerprint("report_rows", "report_keys"))
        )
        both.write.parquet(str(tmp_path / name))
        observed = {**analytics.observed(seen["quotes"]), **analytics.observed(seen["report"])}
        assert observed == prints.asDict(), name
        assert analytics.quote_coverage(report, quotes, observed) == slow, name


def test_an_observation_without_metrics_is_none_at_once(spark):
    assert analytics.observed(Observation()) is None  # never observed
    unrun = Observation()
    spark.range(3).observe(unrun, F.count(F.lit(1)).alias("n"))  # observed, never run
    assert analytics.observed(unrun) is None


def test_key_stats_counts_duplicate_keys(spark):
    records = spark.createDataFrame([event("A", 1), event("A", 1), event("A", 1), event("B", 1), event("B", 2)])
    assertDataFrameEqual(
        quality.key_stats(records),
        [Row(rows=5, duplicate_keys=1, example="A | NYSE | 2020-08-06 10:00:00 | 1")],
    )
    none = quality.key_stats(records.where("symbol = 'B'"))
    assertDataFrameEqual(none, [Row(rows=2, duplicate_keys=0, example=None)])
    # The load's check groups hashes first, keys only when a hash is shared: the same answers.
    assert eod_load.unique_key_stats(records) == quality.key_stats(records).first()
    assert eod_load.unique_key_stats(records.where("symbol = 'B'")) == none.first()
    assertDataFrameEqual(quality.key_hash_stats(records), [Row(rows=5, shared_hashes=1)])
    assertDataFrameEqual(quality.key_hash_stats(records.limit(0)), [Row(rows=0, shared_hashes=0)])


def test_quote_coverage_finds_missing_and_extra_rows(spark):
    quotes = spark.createDataFrame([event("A", 1), event("A", 2), event("B", 1)])
    report = spark.createDataFrame([event("A", 1), event("A", 2), event("A", 2)])  # A/2 twice, B/1 missing
    assertDataFrameEqual(
        quality.quote_coverage(report, quotes),
        [Row(report_rows=3, quotes=3, mismatched_keys=2, example="A | NYSE | 2020-08-06 10:00:00 | 2")],
    )
    assertDataFrameEqual(
        quality.quote_coverage(quotes, quotes), [Row(report_rows=3, quotes=3, mismatched_keys=0, example=None)]
    )


def test_pairs_without_close_only_counts_pairs_that_traded(spark):
    report = spark.createDataFrame(
        [("A", "NYSE", None), ("A", "NYSE", None), ("B", "NYSE", None), ("C", "NYSE", 1.0)],
        "symbol string, exchange string, close_pr double",
    )
    previous = spark.createDataFrame([("A", "NYSE"), ("C", "NYSE")], "symbol string, exchange string")
    assertDataFrameEqual(quality.pairs_without_close(report, previous), [Row(pairs=1, example="A | NYSE")])


def test_exchange_summary_counts_by_exchange_symbol_and_reason(spark):
    lines = spark.createDataFrame([("/l/csv/2020-08-06/NYSE/b1.txt",)] * 4, "source_file string")
    trades = spark.createDataFrame([("A", "/l/csv/2020-08-06/NYSE/b1.txt")], "symbol string, source_file string")
    quotes = spark.createDataFrame(
        [("A", "/l/csv/2020-08-06/NYSE/b1.txt"), ("B", "/l/csv/2020-08-06/NYSE/b1.txt")],
        "symbol string, source_file string",
    )
    rejects = spark.createDataFrame(
        [("bad_number", "/l/csv/2020-08-06/NYSE/b1.txt"), ("bad_number", "/l/csv/2020-08-06/NYSE/b2.txt")]
        + [("trade_dt_mismatch", "/l/csv/2020-08-06/NYSE/b2.txt")] * 2,
        "reason string, source_file string",
    )
    assertDataFrameEqual(
        quality.exchange_summary(lines, trades, quotes, rejects),
        [
            Row(exchange="NYSE", dataset="lines", symbol=None, reason=None, source_file=None, rows=4),
            Row(exchange="NYSE", dataset="trades", symbol="A", reason=None, source_file=None, rows=1),
            Row(exchange="NYSE", dataset="quotes", symbol="A", reason=None, source_file=None, rows=1),
            Row(exchange="NYSE", dataset="quotes", symbol="B", reason=None, source_file=None, rows=1),
            Row(exchange="NYSE", dataset="rejects", symbol=None, reason="bad_number", source_file=None, rows=2),
            # The files holding lines of another date are named, for the operator's warning.
            Row(exchange="NYSE", dataset="rejects", symbol=None, reason="trade_dt_mismatch",
                source_file="/l/csv/2020-08-06/NYSE/b2.txt", rows=2),
        ],
    )  # fmt: skip


# ------------------------------------------------------- per-day results in Dagster
@pytest.fixture
def demo(spark, tmp_path):
    write_demo_landing(tmp_path / "landing")
    resources = {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake")),
        "tracker": TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}"),
        "quality": QualityResource(),
    }
    return resources, DagsterInstance.ephemeral(), tmp_path


def executions(instance, asset, check):
    return instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset), check), limit=20
    )


def latest_storage_id(instance, asset, day):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[day]), limit=1
    ).records
    return records[0].storage_id


def test_check_results_appear_per_day(demo):
    """Guards the preview API for partitioned checks: each day gets its own results."""
    resources, instance, _ = demo
    for day in ("2020-08-06", "2020-08-07"):
        assert materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance).success
    for name, (asset, _, _) in checks.CHECKS.items():
        records = executions(instance, asset, name)
        assert sorted(r.partition for r in records) == ["2020-08-06", "2020-08-07"], name
        assert {r.status for r in records} == {AssetCheckExecutionRecordStatus.SUCCEEDED}, name
    [reject_rate] = [r for r in executions(instance, "raw_rejects", "reject_rate") if r.partition == "2020-08-06"]
    evaluation = reject_rate.event.dagster_event.event_specific_data
    assert evaluation.metadata["threshold"].value == 0.05


def test_a_failed_blocking_check_keeps_the_previous_day_and_fails_the_run(demo, spark, monkeypatch):
    resources, instance, tmp_path = demo
    day = "2020-08-06"
    assert materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance).success
    before = spark.read.parquet(str(tmp_path / "lake" / "trades" / f"trade_dt={day}")).collect()
    stored_before = latest_storage_id(instance, "trades", day)

    # A fault in the end-of-day load: every trade comes out twice.
    latest_trades = load.latest_trades
    monkeypatch.setattr(load, "latest_trades", lambda raw: latest_trades(raw).unionByName(latest_trades(raw)))
    failed = materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance, raise_on_error=False)

    assert not failed.success
    [record] = [r for r in executions(instance, "trades", "unique_record_key_trades") if r.run_id == failed.run_id]
    assert (record.partition, record.status) == (day, AssetCheckExecutionRecordStatus.FAILED)
    # Not materialized: a backfill holds back what depends on it; the report did not run.
    assert latest_storage_id(instance, "trades", day) == stored_before
    assert "eod_quote_report" not in {
        e.asset_key.to_user_string() for e in failed.get_asset_materialization_events()
    }
    after = spark.read.parquet(str(tmp_path / "lake" / "trades" / f"trade_dt={day}")).collect()
    assert sorted(after) == sorted(before)
    job = resources["tracker"].get_job(f"preprocessing_{day}")
    assert job.status == "failed" and "blocking check unique_record_key_trades failed" in job.error


def test_the_report_check_takes_its_observed_fingerprints(demo, monkeypatch):
    """A report that matches its quotes is settled by the fingerprints its write job observed:
    neither a second read of both sides nor the grouping of every key runs."""
    resources, instance, _ = demo

    def not_needed(*args):
        raise AssertionError("the observed fingerprints should have settled the check")

    monkeypatch.setattr(quality, "key_fingerprints", not_needed)
    monkeypatch.setattr(quality, "quote_coverage", not_needed)
    for day in ("2020-08-06", "2020-08-07"):
        assert materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance).success
    records = executions(instance, "eod_quote_report", "one_row_per_quote")
    assert {r.status for r in records} == {AssetCheckExecutionRecordStatus.SUCCEEDED} and len(records) == 2


def test_a_report_with_a_quote_twice_fails_one_row_per_quote(demo, spark, monkeypatch):
    """The report's fingerprints are observed while it is written: a fault in the report still
    fails the blocking check, named by the grouped count of the written rows, and nothing is
    committed."""
    resources, instance, tmp_path = demo
    day = "2020-08-06"
    computed = report_transform.eod_quote_report
    monkeypatch.setattr(
        report_transform,
        "eod_quote_report",
        lambda *args: computed(*args).unionByName(computed(*args).orderBy("symbol", "event_tm").limit(1)),
    )
    failed = materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance, raise_on_error=False)

    assert not failed.success
    [record] = executions(instance, "eod_quote_report", "one_row_per_quote")
    assert (record.partition, record.status) == (day, AssetCheckExecutionRecordStatus.FAILED)
    metadata = record.event.dagster_event.event_specific_data.metadata
    assert metadata["report_rows"].value == metadata["quotes"].value + 1
    assert metadata["mismatched_keys"].value == 1
    assert not (tmp_path / "lake" / "eod_quote_report" / f"trade_dt={day}").exists()


def test_report_of_the_day_after_a_backfill_is_deferred_not_refused(demo):
    resources, instance, tmp_path = demo
    tracker = resources["tracker"]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="bf1", asset_graph=defs.resolve_asset_graph(), partition_names=["2020-08-06"],
        asset_selection=[AssetKey(a) for a in ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes",
                                               "eod_quote_report")],
        backfill_timestamp=time.time(), tags={}, dynamic_partitions_store=instance, all_partitions=False,
        title=None, description=None, run_config=None,
    )  # fmt: skip
    instance.add_backfill(backfill)
    tags = {"dagster/backfill": "bf1"}
    assert materialize(ALL_ASSETS, partition_key="2020-08-06", resources=resources, instance=instance, tags=tags).success

    # Dagster adds 2020-08-07's report (its previous trading day is in the range): 08-07 is not preprocessed.
    report = [assets.eod_quote_report]
    deferred = materialize(ALL_ASSETS, selection=report, partition_key="2020-08-07", resources=resources,
                           instance=instance, tags=tags)  # fmt: skip
    assert deferred.success
    [event] = deferred.get_asset_materialization_events()
    assert event.materialization.metadata["status"].value == "deferred"
    assert "preprocessing_2020-08-07 is not run" in event.materialization.metadata["reason"].value
    assert not (tmp_path / "lake" / "eod_quote_report" / "trade_dt=2020-08-07").exists()
    assert tracker.get_status("analytical_2020-08-07") is None

    # The same report run by hand, or by a backfill that did not load 08-06, is refused by the gate.
    by_hand = materialize(ALL_ASSETS, selection=report, partition_key="2020-08-07", resources=resources,
                          instance=instance, raise_on_error=False)  # fmt: skip
    assert not by_hand.success
    assert tracker.get_status("analytical_2020-08-07") is None
