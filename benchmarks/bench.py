"""`make bench`: one day end to end through Dagster, against a DuckDB reference, at several sizes.

    .venv/bin/python benchmarks/bench.py [--sizes 1000000 4000000 16000000] [--repeat 3] \\
        [--workdir var/bench] [--json var/bench/results.json] [--spark-server] [--sample DIR]

For each size N it lands (with `capstone-generate`) a trading day of N events
whose previous trading day is loaded first, then, `--repeat` times:

* runs the day's six assets as a user would, `dagster asset materialize
  --select '*' --partition DAY` in a process of its own (cold: a new Python, a
  new JVM), and measures its wall time, the seconds of each stage (from the
  run's step events), and the peak memory of its whole process tree (Python,
  the JVM, any worker: the sum of their resident sets, sampled every 50 ms);
* runs `duckdb_reference.py` (SPEC.md §2–§4 in DuckDB SQL) on the same files.

The table shows medians; the ratio is the platform's time over DuckDB's in the
same benchmark run, a fair measure on a shared machine whose speed drifts.
Before any number is printed, the platform's six datasets are checked to hold
the same rows as the reference's. The fixed cost is the same run on a day of
100 events. When the exchange sample is there (`--sample`, by default
`../shared/data/sample` or `CAPSTONE_SAMPLE_DIR`), its second day is measured
the same way, its first day loaded before. `--json` writes every measurement.

`--spark-server` runs everything on one shared Spark Connect server (PySpark's
persistent local server, `SPARK_API_MODE=connect SPARK_LOCAL_CONNECT_REUSE=1`):
the first run starts it and is reported apart, every later run connects to the
warm server, whose resident memory is counted in each run's peak. The server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import duckdb_reference  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# A tiny day for the fixed cost, then one trading day per size, each the previous trading
# day of the next: the day before each measured day is loaded.
FIXED_DAY, FIRST_PREVIOUS = "2020-08-03", "2020-08-04"
STAGE_STEPS = {"ingestion": ["ingestion"], "eod_load": ["trades", "quotes"], "report": ["eod_quote_report"]}
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_SAMPLE = Path(os.environ.get("CAPSTONE_SAMPLE_DIR", REPO.parent / "shared" / "data" / "sample"))
SAMPLE_DAYS = ("2020-08-05", "2020-08-06")


def trading_days_after(day: str, count: int) -> list[str]:
    days, date = [], dt.date.fromisoformat(day)
    while len(days) < count:
        date += dt.timedelta(days=1)
        if date.weekday() < 5:
            days.append(date.isoformat())
    return days


# -------------------------------------------------------------------------------- memory
def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss(*roots: int) -> int:
    """Bytes resident in the `roots` and all their descendants, each process counted once."""
    children, seen, total, stack = _children(), set(), 0, list(roots)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class SharedServer:
    """PySpark 4.3's persistent local Spark Connect server, shared by every run (`--spark-server`):
    the first run starts it, the others connect to it. Its memory counts in every run's peak."""

    def __init__(self, work: Path):
        self.discovery = work / "connect" / "discovery.json"
        self.env = {"SPARK_API_MODE": "connect", "SPARK_LOCAL_CONNECT_REUSE": "1",
                    "SPARK_LOCAL_CONNECT_DISCOVERY": str(self.discovery)}  # fmt: skip

    def pid(self) -> int | None:
        try:
            return json.loads(self.discovery.read_text()).get("pid")
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        subprocess.run([str(BIN / "python"), "-m", "pyspark.sql.connect.local_server", "--stop"],
                       env={**os.environ, **self.env}, capture_output=True, timeout=120)  # fmt: skip


def run_measured(
    command: list[str], env: dict[str, str], log: Path, server: SharedServer | None = None
) -> tuple[float, int]:
    """Runs `command`; its wall seconds and the peak resident bytes of its process tree (and of
    the shared Spark server's, when the run uses one)."""
    peak = 0
    started = time.perf_counter()
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.05):
                server_pid = server.pid() if server else None
                peak = max(peak, tree_rss(process.pid, *([server_pid] if server_pid else [])))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"{' '.join(command)} failed with exit code {code}:\n{tail}")
    return seconds, peak


# -------------------------------------------------------------------------------- the platform
class Platform:
    """Runs days through Dagster's CLI on a SQLite instance, tracker and lake of its own."""

    def __init__(self, work: Path, landing: Path, server: SharedServer | None = None):
        self.work, self.server = work, server
        self.lake = work / "lake"
        home = work / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "CAPSTONE_LANDING_ROOT": str(landing),
            "CAPSTONE_LAKE_ROOT": str(self.lake),
            "CAPSTONE_TRACKER_URL": f"sqlite:///{work / 'tracker.db'}",
            "SPARK_MASTER": os.environ.get("SPARK_MASTER", "local[*]"),
            **(server.env if server else {}),
        }

    def run_day(self, day: str) -> dict:
        log = self.work / f"run-{day}-{time.time_ns()}.log"
        command = [str(BIN / "dagster"), "asset", "materialize", "-m", "capstone_assets.definitions",
                   "--select", "*", "--partition", day]  # fmt: skip
        seconds, peak = run_measured(command, self.env, log, self.server)
        return {"seconds": seconds, "peak_bytes": peak, "stages": self.stage_seconds(), "log": str(log)}

    def stage_seconds(self) -> dict[str, float]:
        """Seconds of each stage in the latest run, from its step start and success events."""
        from dagster import DagsterEventType, DagsterInstance

        os.environ["DAGSTER_HOME"] = self.env["DAGSTER_HOME"]
        with DagsterInstance.get() as instance:
            [run] = instance.get_runs(limit=1)
            started, ended = {}, {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type == DagsterEventType.STEP_START:
                    started[event.step_key] = entry.timestamp
                elif event.event_type == DagsterEventType.STEP_SUCCESS:
                    ended[event.step_key] = entry.timestamp
        return {
            stage: sum(ended[step] - started[step] for step in steps) for stage, steps in STAGE_STEPS.items()
        }


# -------------------------------------------------------------------------------- same rows
COMPARED = {
    "raw_trades": "symbol, exchange, event_tm, event_seq_nb, arrival_tm, trade_pr, trade_size, execution_id, SRC",
    "raw_quotes": "symbol, exchange, event_tm, event_seq_nb, arrival_tm, bid_pr, bid_size, ask_pr, ask_size, SRC",
    "raw_rejects": "line, SRC, reason",
    # Which file a fully equal correction came from is not part of SPEC.md §3's rule.
    "trades": "symbol, exchange, event_tm, event_seq_nb, arrival_tm, trade_pr, trade_size, execution_id",
    "quotes": "symbol, exchange, event_tm, event_seq_nb, arrival_tm, bid_pr, bid_size, ask_pr, ask_size",
}
# The report, matched on its key (one row per loaded quote): its averages and differences may
# differ in the last bits with the order of summation, so these agree within 1e-9, relatively.
REPORT_KEY = ("symbol", "exchange", "event_tm", "event_seq_nb")
REPORT_EXACT = ("bid_pr", "bid_size", "ask_pr", "ask_size")
REPORT_COMPUTED = ("last_trade_pr", "last_mov_avg_pr", "close_pr", "bid_pr_mv", "ask_pr_mv")


def _day_files(root: Path, asset: str, day: str) -> str:
    return f"read_parquet('{root}/{asset}/trade_dt={day}/*.parquet', hive_partitioning=false)"


def differences(lake: Path, reference: Path, day: str) -> dict[str, tuple[int, int, int]]:
    """Per asset whose rows differ: (rows only in the platform's, only in the reference's, total)."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    found = {}
    for asset, columns in COMPARED.items():
        # The platform keeps Spark's `file:` URIs; the reference, paths.
        select = columns.replace("SRC", "regexp_replace(source_file, '^file:(//)?', '') AS source_file")
        mine = f"SELECT {select} FROM {_day_files(lake, asset, day)}"
        ref = f"SELECT {select} FROM {_day_files(reference, asset, day)}"
        [(only_mine,)] = con.execute(f"SELECT count(*) FROM ({mine} EXCEPT ALL {ref})").fetchall()
        [(only_ref,)] = con.execute(f"SELECT count(*) FROM ({ref} EXCEPT ALL {mine})").fetchall()
        [(total,)] = con.execute(f"SELECT count(*) FROM ({mine})").fetchall()
        if only_mine or only_ref:
            found[asset] = (only_mine, only_ref, total)
    same = " AND ".join(
        [f"a.{c} IS NOT DISTINCT FROM b.{c}" for c in REPORT_EXACT]
        + [f"((a.{c} IS NULL AND b.{c} IS NULL) OR abs(a.{c} - b.{c}) <= 1e-9 * greatest(1, abs(b.{c})))"
           for c in REPORT_COMPUTED]
    )  # fmt: skip
    [(only_mine, only_ref, total)] = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE a.here AND (b.here IS NULL OR NOT ({same}))),
               count(*) FILTER (WHERE b.here AND (a.here IS NULL OR NOT ({same}))),
               count(*) FILTER (WHERE a.here)
        FROM (SELECT *, true AS here FROM {_day_files(lake, "eod_quote_report", day)}) a
        FULL JOIN (SELECT *, true AS here FROM {_day_files(reference, "eod_quote_report", day)}) b
        USING ({", ".join(REPORT_KEY)})
        """
    ).fetchall()
    if only_mine or only_ref:
        found["eod_quote_report"] = (only_mine, only_ref, total)
    con.close()
    return found


# -------------------------------------------------------------------------------- main
def generate(landing: Path, day: str, events: int, seed: int) -> None:
    command = [str(BIN / "capstone-generate"), "--root", str(landing), "--days", day, "--events", str(events),
               "--seed", str(seed), "--bad-rate", "0.0005"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def reference_day(landing: Path, out: Path, day: str) -> dict:
    started = time.perf_counter()
    stages = duckdb_reference.run_day(landing, out, day)
    return {"seconds": time.perf_counter() - started, "stages": stages}


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--json", type=Path, default=None, help="default: WORKDIR/results.json")
    parser.add_argument("--spark-server", action="store_true",
                        help="every run on one shared Spark Connect server (PySpark's persistent local server)")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                        help="the exchange sample: its second day is measured too (default: %(default)s)")
    args = parser.parse_args(argv)
    server = SharedServer(args.workdir.resolve()) if args.spark_server else None
    try:
        return measure(args, server)
    finally:
        if server:
            server.stop()


def measure(args: argparse.Namespace, server: SharedServer | None) -> int:

    work = args.workdir.resolve()
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    landing, reference = work / "landing", work / "reference"
    work.mkdir(parents=True)
    platform_ = Platform(work, landing, server)
    days = trading_days_after(FIRST_PREVIOUS, len(args.sizes))
    print(f"Generating: {FIXED_DAY} (100 events), {FIRST_PREVIOUS} (previous day, {args.sizes[0]:,} events), "
          + ", ".join(f"{day} ({n:,})" for day, n in zip(days, args.sizes)), flush=True)  # fmt: skip
    generate(landing, FIXED_DAY, 100, 1)
    generate(landing, FIRST_PREVIOUS, args.sizes[0], 2)
    for seed, (day, events) in enumerate(zip(days, args.sizes), start=3):
        generate(landing, day, events, seed)

    results = {"machine": {"cores": os.cpu_count(), "platform": platform.platform()}, "fixed": [], "sizes": {},
               "spark_server": bool(server), "sample": []}  # fmt: skip
    if server:  # the first run starts the shared server: measured apart, the fixed cost is a warm run's
        results["server_start"] = platform_.run_day(FIXED_DAY)
        print(f"first run, starting the shared Spark server: {results['server_start']['seconds']:.1f} s", flush=True)
    if args.sample and (args.sample / "csv").is_dir():
        sample = Platform(work / "sample", args.sample, server)
        sample.run_day(SAMPLE_DAYS[0])  # its previous trading day, loaded
        for _ in range(args.repeat):
            results["sample"].append(sample.run_day(SAMPLE_DAYS[1]))
        print(f"sample day {SAMPLE_DAYS[1]}: {median([r['seconds'] for r in results['sample']]):.1f} s", flush=True)
    for _ in range(args.repeat):
        results["fixed"].append(platform_.run_day(FIXED_DAY))
    print(f"fixed cost (100 events): {median([r['seconds'] for r in results['fixed']]):.1f} s", flush=True)
    platform_.run_day(FIRST_PREVIOUS)
    reference_day(landing, reference, FIRST_PREVIOUS)
    for day, events in zip(days, args.sizes):
        runs, refs = [], []
        for _ in range(args.repeat):
            refs.append(reference_day(landing, reference, day))
            runs.append(platform_.run_day(day))
            print(f"{events:>11,} events: platform {runs[-1]['seconds']:.1f} s, DuckDB {refs[-1]['seconds']:.1f} s",
                  flush=True)  # fmt: skip
        different = differences(platform_.lake, reference, day)
        if different:
            print(f"The platform and the reference differ on {day}: {different}", file=sys.stderr)
            return 1
        results["sizes"][str(events)] = {"day": day, "platform": runs, "duckdb": refs}

    args.json = args.json or work / "results.json"
    args.json.write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    print(f"\nEvery measurement: {args.json}")
    return 0


def table(results: dict) -> str:
    fixed = median([r["seconds"] for r in results["fixed"]])
    lines = [
        "| events | ingestion s | load s | report s | total s | events/s | peak memory | DuckDB s | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for events, found in results["sizes"].items():
        runs, refs = found["platform"], found["duckdb"]
        stage = {s: median([r["stages"][s] for r in runs]) for s in STAGE_STEPS}
        total, ref = median([r["seconds"] for r in runs]), median([r["seconds"] for r in refs])
        peak = median([r["peak_bytes"] for r in runs]) / 2**30
        lines.append(
            f"| {int(events):,} | {stage['ingestion']:.1f} | {stage['eod_load']:.1f} | {stage['report']:.1f} | "
            f"{total:.1f} | {int(events) / total:,.0f} | {peak:.2f} GiB | {ref:.1f} | {total / ref:.2f} |"
        )
    mode = "one shared Spark Connect server (--spark-server)" if results.get("spark_server") else "a JVM per run"
    lines.insert(0, f"Spark: {mode}\n")
    lines.append(f"\nFixed cost (a day of 100 events, whole run): {fixed:.1f} s")
    if results.get("sample"):
        sample = results["sample"]
        lines.append(
            f"Sample day {SAMPLE_DAYS[1]} (the exchange sample), all six assets from the command line: "
            f"{median([r['seconds'] for r in sample]):.1f} s, peak {median([r['peak_bytes'] for r in sample]) / 2**30:.2f} GiB"
        )
    if results.get("server_start"):
        lines.append(f"First run, starting the shared server: {results['server_start']['seconds']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
