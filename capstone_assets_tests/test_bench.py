"""`make bench`'s two halves: the DuckDB reference produces the platform's rows, and the driver runs.

The reference is a second reading of SPEC.md §2–§4 (benchmarks/duckdb_reference.py): the
benchmark's ratio means something only while both produce the same rows. Here on the demo
landing zone (corrections, every kind of reject, a weekend) and on the real sample; the
benchmark itself checks it again on its generated days before it prints a number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from capstone_assets import assets
from capstone_assets.demo import DEMO_DAYS, write_demo_landing
from capstone_assets_tests.conftest import REPO, platform_resources

sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402
import duckdb_reference  # noqa: E402

ALL_ASSETS = [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report]


def run_both(spark, landing: Path, days, tmp_path: Path) -> tuple[Path, Path]:
    lake, reference = tmp_path / "lake", tmp_path / "reference"
    resources = platform_resources(landing, lake, tmp_path / "tracker.db")
    instance = DagsterInstance.ephemeral()
    for day in days:
        assert materialize(ALL_ASSETS, partition_key=day, resources=resources, instance=instance).success
        duckdb_reference.run_day(landing, reference, day)
    return lake, reference


def test_the_reference_and_the_platform_write_the_same_rows_on_the_demo_days(spark, tmp_path):
    landing = tmp_path / "landing"
    write_demo_landing(landing)
    lake, reference = run_both(spark, landing, DEMO_DAYS, tmp_path)
    for day in DEMO_DAYS:
        assert bench.differences(lake, reference, day) == {}, day
    # The comparison can fail: one changed price is found, and one moving average off by 1e-6.
    day = DEMO_DAYS[-1]
    change_first_row(reference, "trades", day, "trade_pr + 1 AS trade_pr", tmp_path)
    change_first_row(reference, "eod_quote_report", day, "last_mov_avg_pr * (1 + 1e-6) AS last_mov_avg_pr", tmp_path)
    assert bench.differences(lake, reference, day) == {
        "trades": (1, 1, bench_rows(lake, "trades", day)),
        "eod_quote_report": (1, 1, bench_rows(lake, "eod_quote_report", day)),
    }


def change_first_row(root: Path, asset: str, day: str, replacement: str, tmp_path: Path) -> None:
    path = root / asset / f"trade_dt={day}" / "data.parquet"
    column = replacement.rsplit(" AS ", 1)[1]
    changed = tmp_path / f"{asset}-changed.parquet"
    duckdb_reference.duckdb.execute(
        f"COPY (SELECT * REPLACE (CASE WHEN row_number() OVER () = 1 THEN {replacement.rsplit(' AS ', 1)[0]} "
        f"ELSE {column} END AS {column}) FROM read_parquet('{path}')) TO '{changed}' (FORMAT parquet)"
    )
    changed.replace(path)


def bench_rows(lake: Path, asset: str, day: str) -> int:
    return duckdb_reference.duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{lake}/{asset}/trade_dt={day}/*.parquet')"
    ).fetchall()[0][0]


def test_the_reference_and_the_platform_write_the_same_rows_on_the_sample(spark, sample_dir, tmp_path):
    days = ("2020-08-05", "2020-08-06")
    lake, reference = run_both(spark, sample_dir, days, tmp_path)
    for day in days:
        assert bench.differences(lake, reference, day) == {}, day


def test_make_bench_runs_end_to_end_on_a_tiny_day(tmp_path):
    """A smoke run of the driver: generation, Dagster's CLI, the reference, the check, the table."""
    out = tmp_path / "results.json"
    command = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--sizes", "2000", "--repeat", "1",
               "--workdir", str(tmp_path / "bench"), "--json", str(out)]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "| 2,000 |" in finished.stdout and "Fixed cost" in finished.stdout
    results = json.loads(out.read_text())
    [run] = results["sizes"]["2000"]["platform"]
    assert run["seconds"] > 0 and run["peak_bytes"] > 100 * 2**20  # at least Python and a JVM
    assert set(run["stages"]) == {"ingestion", "eod_load", "report"}
    assert all(0 < seconds < run["seconds"] for seconds in run["stages"].values())
