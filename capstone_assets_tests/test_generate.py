"""The landing-zone generator (`capstone-generate`): deterministic bytes, the requested events, bad
lines rejected for the intended reason, corrections that win the end-of-day load."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from pyspark.sql import functions as F

from capstone_assets import assets
from capstone_assets.generate import KINDS, Options, main, write_landing
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource

DAY = "2020-08-06"
EXCHANGES = (("NYSE", "csv"), ("NASDAQ", "json"), ("CBOE", "csv"))
OPTIONS = Options(
    days=(DAY,), events=6000, seed=7, exchanges=EXCHANGES, batches=3, symbols=8, hot_symbols=2,
    hot_share=0.8, correction_rate=0.02, bad_rates=tuple((kind, 0.004) for kind in KINDS),
)  # fmt: skip
KEY = ("symbol", "exchange", "event_tm", "event_seq_nb")


def landing_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fields(line: str) -> dict:
    """The record of a valid CSV line (the tests read only their own CSV files)."""
    f = line.split(",")
    return {"rec_type": f[2], "symbol": f[3], "event_tm": f[4], "seq": int(f[5]), "exchange": f[6]}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated") / "landing"
    return root, write_landing(root, OPTIONS, workers=1)


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, generated, capsys):
    root, _ = generated
    again = tmp_path / "again"
    write_landing(again, OPTIONS, workers=2, progress=True)
    assert landing_bytes(again) == landing_bytes(root)
    assert "events" in capsys.readouterr().err  # the progress bar, on stderr

    # The command line writes the same bytes for the same options.
    argv = ["--root", str(tmp_path / "cli"), "--days", DAY, "--events", "6000", "--seed", "7",
            "--exchanges", "NYSE", "NASDAQ:json", "CBOE:csv", "--batches", "3", "--symbols", "8",
            "--hot-symbols", "2", "--hot-share", "0.8", "--correction-rate", "0.02",
            "--bad-rate", "0.004"]  # fmt: skip
    assert main(argv) == 0
    assert "6,000 events" in capsys.readouterr().out
    assert landing_bytes(tmp_path / "cli") == landing_bytes(root)

    other = tmp_path / "other-seed"
    write_landing(other, Options(**{**OPTIONS.__dict__, "seed": 8}), workers=1)
    assert landing_bytes(other).keys() == landing_bytes(root).keys()
    assert landing_bytes(other) != landing_bytes(root)


def test_lines_are_the_requested_events_plus_corrections(generated):
    root, stats = generated
    files = landing_bytes(root)
    assert sorted(files) == sorted(
        f"{fmt}/{DAY}/{ex}/batch-{b}.txt" for ex, fmt in EXCHANGES for b in (1, 2, 3)
    )
    assert sum(stats.events.values()) == OPTIONS.events
    for name, content in files.items():
        assert content.endswith(b"\n") and b"\r" not in content
        assert content.count(b"\n") == stats.events[name] + stats.corrections.get(name, 0), name
    corrections = sum(stats.corrections.values())
    assert 0.01 * OPTIONS.events < corrections < 0.03 * OPTIONS.events
    assert not any(name.endswith("batch-1.txt") for name in stats.corrections)  # always a later batch
    # Every kind of bad line of each format, at about its rate.
    kinds = Counter()
    for (name, kind), count in stats.bad.items():
        kinds[(name.split("/")[0], kind)] += count
    for fmt, share in (("csv", 2 / 3), ("json", 1 / 3)):
        expected = [k for k in KINDS if (k != "bad_json" if fmt == "csv" else k != "field_count")]
        assert {k for f, k in kinds if f == fmt} == set(expected)
        for kind in expected:
            assert 0.3 < kinds[(fmt, kind)] / (0.004 * OPTIONS.events * share) < 2, (fmt, kind)


def test_hot_symbols_and_trade_gaps(generated):
    root, stats = generated
    lines = [
        line
        for path in sorted(root.glob(f"csv/{DAY}/NYSE/*.txt"))
        for line in path.read_text().splitlines()
    ]
    records = {}
    for line in lines:
        try:
            r = fields(line)
            dt.datetime.fromisoformat(r["event_tm"])
        except (IndexError, ValueError):
            continue  # a bad line
        records[(r["symbol"], r["seq"])] = r  # a correction replaces its record
    by_symbol = Counter(symbol for symbol, _ in records)
    hot = by_symbol["SYM000"] + by_symbol["SYM001"]
    assert 0.75 < hot / sum(by_symbol.values()) < 0.85
    for symbol in ("SYM000", "SYM007"):
        trades = sorted(
            dt.datetime.fromisoformat(r["event_tm"])
            for (s, _), r in records.items()
            if s == symbol and r["rec_type"] == "T"
        )
        gaps = [(b - a).total_seconds() for a, b in zip(trades, trades[1:])]
        assert max(gaps) > 30 * 60, symbol  # the quote-only stretch
        if symbol == "SYM000":
            assert min(gaps) < 60  # a hot symbol trades seconds apart


def test_ingestion_accepts_every_valid_line_and_rejects_each_bad_one_for_its_reason(
    spark, generated, tmp_path
):
    root, stats = generated
    resources = {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(landing_root=str(root), lake_root=str(tmp_path / "lake")),
        "tracker": TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}"),
        "quality": QualityResource(),
    }
    result = materialize(
        [assets.ingestion, assets.trades, assets.quotes],
        partition_key=DAY,
        resources=resources,
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    lake = tmp_path / "lake"

    def read(asset):
        frame = spark.read.parquet(str(lake / asset / f"trade_dt={DAY}"))
        # The landing file relative to the root, as the generator names it.
        return frame.withColumn("file", F.regexp_extract("source_file", r"((csv|json)/.*)$", 1))

    by_reason = read("raw_rejects").groupBy("file", "reason").count().collect()
    rejects = {(r["file"], r["reason"]): r["count"] for r in by_reason}
    assert rejects == stats.bad
    valid = Counter()
    for asset in ("raw_trades", "raw_quotes"):
        for row in read(asset).groupBy("file").count().collect():
            valid[row["file"]] += row["count"]
    bad_per_file = Counter()
    for (name, _), count in stats.bad.items():
        bad_per_file[name] += count
    assert valid == {
        name: events + stats.corrections.get(name, 0) - bad_per_file[name]
        for name, events in stats.events.items()
    }

    # Each correction re-sends a key with a later arrival; the load keeps the correction.
    raw = read("raw_trades").unionByName(
        read("raw_quotes").select(*KEY, "arrival_tm", F.col("bid_pr").alias("trade_pr"), "file"),
        allowMissingColumns=True,
    )
    resent = raw.groupBy(*KEY).agg(F.count(F.lit(1)).alias("n"), F.max("arrival_tm").alias("latest"))
    assert resent.where("n = 2").count() == sum(stats.corrections.values())
    assert resent.where("n > 2").count() == 0
    loaded = spark.read.parquet(str(lake / "trades" / f"trade_dt={DAY}")).unionByName(
        spark.read.parquet(str(lake / "quotes" / f"trade_dt={DAY}")), allowMissingColumns=True
    )
    assert loaded.count() == OPTIONS.events - sum(stats.bad.values())
    later = resent.where("n = 2").join(loaded, on=list(KEY), how="left")
    assert later.where("arrival_tm is null or arrival_tm != latest").count() == 0
    assert later.where(F.col("source_file").rlike("batch-1.txt$")).count() == 0
