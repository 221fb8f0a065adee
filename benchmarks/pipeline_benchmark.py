"""Throughput of each stage on a synthetic landing zone; prints its numbers.

    .venv/bin/python benchmarks/pipeline_benchmark.py --records 2000000

Writes two trading days (the second needs the first as its previous day) of N
records each, spread over three exchanges (two CSV, one JSON), about one trade
per four quotes, with Spark itself so that generation is not the bottleneck.
Then materializes, day by day, ingestion, the end-of-day load and the report
through `dagster.materialize`, and prints seconds and records per second for
each stage of the second day (the first day warms the JVM up).
"""

from __future__ import annotations

import argparse
import calendar
import tempfile
import time
from pathlib import Path

from dagster import DagsterInstance, materialize
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from capstone_assets import assets
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.spark import spark_config

DAYS = ("2020-08-06", "2020-08-07")
EXCHANGES = {"NYSE": "csv", "CBOE": "csv", "NASDAQ": "json"}
STAGES = {
    "ingestion": ["raw_trades", "raw_quotes", "raw_rejects"],
    "eod_load": ["trades", "quotes"],
    "report": ["eod_quote_report"],
}


def write_landing(spark: SparkSession, root: Path, day: str, records: int) -> None:
    per_exchange = records // len(EXCHANGES)
    for exchange, fmt in EXCHANGES.items():
        ids = spark.range(per_exchange)
        symbol = F.concat(F.lit("SYM"), (F.col("id") % 500).cast("string"))
        seq = (F.col("id") / 500).cast("int")
        # 09:30 plus up to 6.5 hours, in milliseconds, increasing with seq per symbol.
        millis = (seq.cast("long") * 23_400_000 / (per_exchange // 500 + 1)).cast("long")
        open_millis = calendar.timegm(time.strptime(f"{day} 09:30:00", "%Y-%m-%d %H:%M:%S")) * 1000
        # The session is pinned to UTC, so the formatted text is the wall-clock time.
        event_tm = F.date_format(F.timestamp_millis(F.lit(open_millis) + millis), "yyyy-MM-dd HH:mm:ss.SSS")
        is_trade = (F.col("id") % 4) == 0
        price = F.format_number(100 + F.sin(F.col("id") / 1000) * 5, 6)
        price = F.regexp_replace(price, ",", "")
        if fmt == "csv":
            line = F.concat_ws(
                ",", F.lit(day), F.lit(f"{day} 16:30:00.000"), F.when(is_trade, "T").otherwise("Q"), symbol,
                event_tm, seq.cast("string"), F.lit(exchange), price, F.lit("100"),
            )  # fmt: skip
            line = F.when(is_trade, line).otherwise(F.concat(line, F.lit(","), price, F.lit(",200")))
        else:
            head = F.concat(
                F.lit(f'{{"trade_dt":"{day}","file_tm":"{day} 16:30:00.000","event_type":"'),
                F.when(is_trade, "T").otherwise("Q"), F.lit('","symbol":"'), symbol,
                F.lit('","event_tm":"'), event_tm, F.lit('","event_seq_nb":'), seq.cast("string"),
                F.lit(f',"exchange":"{exchange}",'),
            )  # fmt: skip
            body = F.when(is_trade, F.concat(F.lit('"price":'), price, F.lit(',"size":100}'))).otherwise(
                F.concat(
                    F.lit('"bid_pr":'),
                    price,
                    F.lit(',"bid_size":100,"ask_pr":'),
                    price,
                    F.lit(',"ask_size":200}'),
                )
            )
            line = F.concat(head, body)
        ids.select(line.alias("value")).write.mode("overwrite").text(str(root / fmt / day / exchange))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000, help="records per day (default 2,000,000)")
    parser.add_argument("--master", default="local[*]")
    args = parser.parse_args()

    builder = SparkSession.builder
    for key, value in {**spark_config(args.master), "spark.ui.enabled": "false"}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")

    with tempfile.TemporaryDirectory(prefix="capstone-bench-") as workdir:
        work = Path(workdir)
        started = time.perf_counter()
        for day in DAYS:
            write_landing(spark, work / "landing", day, args.records)
        print(
            f"generated {len(DAYS)} days x {args.records:,} records in {time.perf_counter() - started:.1f} s"
        )

        resources = {
            "spark": spark_resource(args.master),
            "lake": LakeResource(landing_root=str(work / "landing"), lake_root=str(work / "lake")),
            "tracker": TrackerResource(url=f"sqlite:///{work / 'tracker.db'}"),
            "quality": QualityResource(),
        }
        instance = DagsterInstance.ephemeral()
        all_assets = [assets.ingestion, assets.trades, assets.quotes, assets.eod_quote_report]
        timings = {}
        for day in DAYS:
            for stage, selection in STAGES.items():
                started = time.perf_counter()
                result = materialize(
                    all_assets,
                    selection=selection,
                    partition_key=day,
                    resources=resources,
                    instance=instance,
                    run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                )
                assert result.success, f"{stage} failed for {day}"
                timings[(day, stage)] = time.perf_counter() - started

        day = DAYS[-1]
        report_rows = spark.read.parquet(str(work / "lake" / "eod_quote_report" / f"trade_dt={day}")).count()
        print(f"cores: {spark.sparkContext.defaultParallelism}, master: {args.master}")
        print(f"{'stage':<10} {'seconds':>8} {'records/s':>12}   (day {day}, {args.records:,} records)")
        for stage in STAGES:
            seconds = timings[(day, stage)]
            print(f"{stage:<10} {seconds:>8.1f} {args.records / seconds:>12,.0f}")
        total = sum(timings[(day, stage)] for stage in STAGES)
        print(f"{'total':<10} {total:>8.1f} {args.records / total:>12,.0f}")
        print(f"report rows: {report_rows:,}")


if __name__ == "__main__":
    main()
