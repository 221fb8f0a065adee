"""A multi-day backfill launched as the UI launches it, timed end to end.

    .venv/bin/python benchmarks/backfill_bench.py [--days 20] [--events 8000] [--spark-server] \\
        [--workdir var/bench-backfill] [--postgres-url URL]

It lands `--days` consecutive trading days of `--events` events each
(`capstone-generate`), starts the production setup (`dagster-webserver` and
`capstone-daemon` on a fresh PostgreSQL database, the repo's `dagster.yaml`: the
run queue, at most 4 runs at once, one per day), launches one backfill of all six
assets over the whole range through the UI's GraphQL mutation (what *Materialize*
sends), and waits until it has finished. It prints the wall time from launch to
the end, the number of runs, and the peak memory of every process (webserver,
daemon, code servers, runs, and the shared Spark server if any), and checks the
per-day rules: every asset materialized once per day, both workflows of every
day `success` in the job tracker, and the report of the day after the range
(which Dagster adds) deferred. The daemon's backfill loop runs every 5 s
(`CAPSTONE_BACKFILL_INTERVAL_SECONDS`, as in the end-to-end tests).

`--spark-server` gives every run the same Spark Connect server (PySpark's
persistent local server): a run then pays no JVM start. The server is stopped at
the end. PostgreSQL: `CAPSTONE_TEST_POSTGRES_URL`, or the machine's default.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench  # noqa: E402

from capstone_assets_tests.conftest import POSTGRES_URL  # noqa: E402
from capstone_assets_tests.servers import DagsterServers  # noqa: E402

ASSETS = ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes", "eod_quote_report")
FIRST_DAY = "2020-08-03"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--spark-server", action="store_true")
    parser.add_argument("--workdir", type=Path, default=bench.REPO / "var" / "bench-backfill")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)

    work = args.workdir.resolve()
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    landing, lake = work / "landing", work / "lake"
    days = [FIRST_DAY, *bench.trading_days_after(FIRST_DAY, args.days - 1)]
    print(f"Generating {len(days)} trading days of {args.events:,} events: {days[0]} .. {days[-1]}", flush=True)
    subprocess.run([str(bench.BIN / "capstone-generate"), "--root", str(landing), "--days", *days, "--events",
                    str(args.events), "--seed", "7", "--bad-rate", "0.0005", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip

    server = bench.SharedServer(work) if args.spark_server else None
    extra = {"SPARK_MASTER": "local[*]", **(server.env if server else {})}
    peak, done = 0, threading.Event()
    try:
        with DagsterServers(args.postgres_url, landing, lake, work / "servers", extra_env=extra) as servers:

            def sample() -> None:
                nonlocal peak
                while not done.wait(0.1):
                    roots = [p.pid for p in servers._processes.values()]
                    server_pid = server.pid() if server else None
                    peak = max(peak, bench.tree_rss(*roots, *([server_pid] if server_pid else [])))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            backfill_id = servers.launch_backfill(days, list(ASSETS))
            result = servers.wait_for_backfill(backfill_id, timeout=args.timeout, poll=1)
            seconds = time.monotonic() - started
            done.set()
            sampler.join()
            problems = []
            if result.status != "COMPLETED_SUCCESS":
                problems.append(f"backfill {result.status}: {result.error}")
            # Dagster adds the report of the day after the range (its previous trading day is in
            # it); that day is not preprocessed, so its report is deferred, not computed (README).
            after = bench.trading_days_after(days[-1], 1)[0]
            for asset in ASSETS:
                expected = days + ([after] if asset == "eod_quote_report" else [])
                if servers.materialized_partitions(asset) != expected:
                    problems.append(f"{asset}: materialized {servers.materialized_partitions(asset)}")
            status = servers.materialization_metadata("eod_quote_report", after).get("status")
            if status != "deferred":
                problems.append(f"eod_quote_report {after}: {status}, not deferred")
            once = {asset: [d for d in days if len(servers.materializations(asset, d)) != 1] for asset in ASSETS}
            problems += [f"{a}: not one materialization on {d}" for a, ds in once.items() for d in ds]
            tracker = servers.tracker()
            for day in days:
                for workflow in ("preprocessing", "analytical"):
                    status = tracker.get_status(f"{workflow}_{day}")
                    if status != "success":
                        problems.append(f"{workflow}_{day}: {status}")
            if problems:
                print("The backfill broke the per-day rules:\n" + "\n".join(problems[:20]), file=sys.stderr)
                print(servers.log_tails(), file=sys.stderr)
                return 1
    finally:
        done.set()
        if server:
            server.stop()
    mode = "one shared Spark Connect server (--spark-server)" if server else "a JVM per run"
    print(
        f"\nSpark: {mode}\n\n| days | events a day | runs | backfill s | s a day | peak memory |\n|---:|---:|---:|---:|---:|---:|\n"
        f"| {len(days)} | {args.events:,} | {len(result.runs)} | {seconds:.1f} | {seconds / len(days):.1f} | "
        f"{peak / 2**30:.2f} GiB |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
