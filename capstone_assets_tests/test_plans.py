"""Physical plans that stay scalable: the report, the end-of-day load and what ingestion runs.

Automatic broadcasts are off while these tests run (`autoBroadcastJoinThreshold=-1`), so
that tiny test data cannot hide a missing hint: a join broadcasts only when the code says so.
A plan fails on a cartesian product, a nested-loop join, a global sort (the whole day in
one order: a `Sort …, true` and its range shuffle), raw rows gathered into one partition or
a sliding window frame (Spark adds up a row's whole frame again for every row: quadratic in
one hot pair's rows) outside the branch of pairs with prices the running sums cannot carry;
the report must broadcast the previous close; ingestion must read each landing file at most
twice (the parse, whose result is cached, and the parser-free count of lines).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import pytest
from dagster import DagsterInstance, materialize
from pyspark.sql import Window as W
from pyspark.sql import functions as F

from capstone_assets import assets, schemas
from capstone_assets.assets.analytics import previous_trading_day_trades
from capstone_assets.generate import Options, write_landing
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.landing import LandingZone
from capstone_assets.transforms import load, report

DAY, PREVIOUS = "2020-08-06", "2020-08-05"
TEMPORARY_CONF = {
    "spark.sql.autoBroadcastJoinThreshold": "-1",
    # Plan strings list every file of a scan (Spark cuts them at 100 characters by default).
    "spark.sql.maxMetadataStringLength": "1000000",
}
GLOBAL_SORT = re.compile(r"\bSort \[.*\], true, \d+$", re.MULTILINE)
PAIR_SORT = re.compile(r"\bSort \[symbol#\d+ ASC NULLS FIRST, exchange#\d+ ASC NULLS FIRST")
CLOSE_JOIN = re.compile(
    r"BroadcastHashJoin \[symbol#\d+, exchange#\d+\], \[symbol#\d+, exchange#\d+\], LeftOuter, BuildRight"
)
# A frame with a bounded start: `RangeFrame, -1800000000, currentrow$()` (not `unboundedpreceding$()`).
SLIDING_FRAME = re.compile(r"specifiedwindowframe\((?:RangeFrame|RowFrame), -?\d+")
SCAN_LOCATION = re.compile(r"Location: InMemoryFileIndex\(\d+ paths\)\[(.*?)\], PartitionFilters")


@pytest.fixture
def no_auto_broadcast(spark):
    """The settings above for one test; the session is shared, so each is put back afterwards."""
    before = {key: spark.conf.get(key, None) for key in TEMPORARY_CONF}
    for key, value in TEMPORARY_CONF.items():
        spark.conf.set(key, value)
    yield spark
    for key, value in before.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


def plan_of(df) -> str:
    """The physical plan Spark would run (with AQE on: its initial plan, before any statistics)."""
    return df._jdf.queryExecution().executedPlan().toString()


def scalability_problems(plan: str) -> list[str]:
    problems = []
    for operator in ("CartesianProduct", "NestedLoopJoin"):  # also BroadcastNestedLoopJoin
        if operator in plan:
            problems.append(f"a {operator}: rows paired with every row of the other side")
    if GLOBAL_SORT.search(plan) or "rangepartitioning" in plan:
        problems.append("a global sort: the whole day in one order, where per-key work would do")
    lines = plan.splitlines()
    for index, line in enumerate(lines):
        # One partition is fine for partial aggregates (a row per task), not for raw rows.
        if "Exchange SinglePartition" in line and "partial_" not in lines[index + 1]:
            problems.append(f"raw rows gathered into one partition: {lines[index + 1].strip()[:120]}")
        if SLIDING_FRAME.search(line) and "LeftSemi" not in "\n".join(subtree(lines, index)):
            problems.append(f"a sliding window frame, each row's frame added up again: {line.strip()[:120]}")
    return problems


def subtree(lines: list[str], index: int) -> list[str]:
    """The lines of the plan node at `index` and of every node under it (deeper `+-`)."""
    depth = lines[index].find("+-")
    below = []
    for line in lines[index + 1 :]:
        if line.find("+-") <= depth:
            break
        below.append(line)
    return [lines[index], *below]


def close_broadcast_problems(plan: str) -> list[str]:
    """The previous close joins every quote by pair: hinted, it is a broadcast hash join."""
    lines = plan.splitlines()
    broadcasts_close = any(
        "BroadcastExchange" in line and "AS close_mov_avg_pr" in lines[i + 1]
        for i, line in enumerate(lines[:-1])
    )
    problems = [] if CLOSE_JOIN.search(plan) and broadcasts_close else ["the previous close is not broadcast"]
    for join in ("SortMergeJoin", "ShuffledHashJoin"):
        if join in plan:
            problems.append(f"a {join}: a shuffle of the day where a broadcast would do")
    return problems


def ts(hms: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{DAY} {hms}")


@pytest.fixture(scope="module")
def plan_lake(spark, tmp_path_factory) -> LakeResource:
    """A lake with a few rows of each dataset the report and the load read, in the real layout."""
    root = tmp_path_factory.mktemp("plans")
    trade = ("SYMA", "NYSE", ts("10:00:00"), 1, ts("16:30:00"), 77.5, 100, None, "f")
    quote = ("SYMA", "NYSE", ts("10:00:01"), 2, ts("16:30:00"), 77.4, 100, 77.6, 200, "f")
    datasets = {
        ("trades", PREVIOUS): [trade],
        ("trades", DAY): [trade],
        ("quotes", DAY): [quote],
        ("raw_trades", DAY): [trade, trade],
        ("raw_quotes", DAY): [quote],
    }
    for (asset, day), records in datasets.items():
        frame = spark.createDataFrame(records, schemas.BY_DATASET[asset])
        frame.write.parquet(str(root / asset / f"trade_dt={day}"))
    return LakeResource(landing_root=str(root / "landing"), lake_root=str(root))


def report_of(spark, lake: LakeResource):
    """The report's DataFrame, read as the analytical asset reads it."""
    trades = lake.read_day(spark, "trades", DAY, schemas.TRADES)
    quotes = lake.read_day(spark, "quotes", DAY, schemas.QUOTES)
    _, previous = previous_trading_day_trades(spark, lake, DAY)
    return report.eod_quote_report(trades, quotes, previous, DAY)


def test_report_plan_is_per_pair_and_broadcasts_the_previous_close(no_auto_broadcast, plan_lake):
    plan = plan_of(report_of(no_auto_broadcast, plan_lake))
    assert scalability_problems(plan) == [], plan
    assert close_broadcast_problems(plan) == [], plan
    # Every sort is a window's, within one (symbol, exchange): no ordering of the whole day.
    sorts = [line for line in plan.splitlines() if re.search(r"\bSort \[", line)]
    assert sorts and all(PAIR_SORT.search(line) for line in sorts), plan
    # Shuffles of rows by pair, all of D: the moving average's running sums, the sliding frame of
    # the pairs with unusual prices, the timeline. (The distinct pairs with unusual prices and the
    # previous day's aggregates per pair are shuffled too: a row per pair and task.)
    lines = plan.splitlines()
    row_shuffles = [
        line for line, below in zip(lines, lines[1:])
        if "Exchange hashpartitioning(symbol#" in line and "functions=[]" not in below and "partial_" not in below
    ]  # fmt: skip
    assert len(row_shuffles) <= 3, plan
    # The previous day's close and its average are aggregates per pair: no window sorts D-1.
    [close] = [
        i
        for i, line in enumerate(lines[:-1])
        if "BroadcastExchange" in line and "AS close_mov_avg_pr" in lines[i + 1]
    ]
    assert not any("Window" in line or "Sort [" in line for line in subtree(lines, close)), plan


def test_the_checks_catch_what_they_look_for(no_auto_broadcast, plan_lake, monkeypatch):
    spark = no_auto_broadcast
    quotes = plan_lake.read_day(spark, "quotes", DAY, schemas.QUOTES)
    trades = plan_lake.read_day(spark, "trades", DAY, schemas.TRADES)
    assert scalability_problems(plan_of(trades.crossJoin(quotes)))
    assert scalability_problems(plan_of(report_of(spark, plan_lake).orderBy("event_tm")))
    everything = W.orderBy("event_tm").rowsBetween(W.unboundedPreceding, W.currentRow)
    assert scalability_problems(plan_of(quotes.select("*", F.count("*").over(everything).alias("n"))))
    # The moving average as Spark's sliding range frame, for every pair.
    sliding = W.partitionBy("symbol", "exchange").orderBy(F.unix_micros(F.col("event_tm").cast("timestamp")))
    moving = F.avg("trade_pr").over(sliding.rangeBetween(-report.MOVING_AVERAGE_MICROS, 0))
    assert scalability_problems(plan_of(trades.select("*", moving.alias("mov_avg_pr"))))
    # Without the hint, the close is shuffled and sort-merge joined, with the threshold at -1.
    monkeypatch.setattr(report.F, "broadcast", lambda frame: frame)
    assert close_broadcast_problems(plan_of(report_of(spark, plan_lake)))


@pytest.mark.parametrize(
    "asset, transform, source",
    [("trades", load.latest_trades, "raw_trades"), ("quotes", load.latest_quotes, "raw_quotes")],
)
def test_eod_load_plan_is_one_shuffle_by_record_key(no_auto_broadcast, plan_lake, asset, transform, source):
    raw = plan_lake.read_day(no_auto_broadcast, source, DAY, schemas.BY_DATASET[source])
    plan = plan_of(transform(raw))
    assert scalability_problems(plan) == [], plan
    # One shuffle by record key, then one sort within each shuffle partition, never of the
    # whole day, and none before the shuffle (no map-side top-k or partial aggregate); no join.
    key_shuffle = (
        r"Exchange hashpartitioning\(symbol#\d+, exchange#\d+, event_tm#\d+, event_seq_nb#\d+, \d+\)"
    )
    assert len(re.findall(key_shuffle, plan)) == plan.count("Exchange ") == 1, plan
    # The plan lists a node before its children: a sort above the shuffle is printed before it.
    sorts = [line for line in plan.splitlines() if re.search(r"\bSort \[", line)]
    assert len(sorts) == 1 and plan.index(sorts[0]) < plan.index("Exchange "), plan
    assert not any(node in plan for node in ("WindowGroupLimit", "partial_", "Join")), plan


def node_problems(spark, execution_id) -> list[str]:
    """`scalability_problems` of one recorded query, from its nodes (the final plan, after AQE)."""
    nodes = spark._jsparkSession.sharedState().statusStore().planGraph(execution_id).allNodes()
    described = "\n".join(nodes.apply(i).desc() for i in range(nodes.size()))
    return [p for p in scalability_problems(described) if "one partition" not in p]


def executions(spark) -> dict[int, object]:
    """Spark's record of every SQL query the session ran (kept even with the UI off)."""
    spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty()
    listed = spark._jsparkSession.sharedState().statusStore().executionsList()
    return {listed.apply(i).executionId(): listed.apply(i) for i in range(listed.size())}


def landing_scans(spark, execution_ids) -> dict[tuple, list[str]]:
    """The landing-file scans those queries ran, each once: a scan inside a cached plan
    appears in every query that reads the cache, with the same metrics (accumulators)."""
    store = spark._jsparkSession.sharedState().statusStore()
    scans = {}
    for execution_id in execution_ids:
        nodes = store.planGraph(execution_id).allNodes()
        for node in (nodes.apply(i) for i in range(nodes.size())):
            if node.name().startswith("Scan text"):
                metrics = node.metrics()
                identity = tuple(sorted(metrics.apply(i).accumulatorId() for i in range(metrics.size())))
                scans[identity] = SCAN_LOCATION.search(node.desc()).group(1).split(", ")
    return scans


def test_ingestion_reads_each_landing_file_at_most_twice(no_auto_broadcast, tmp_path):
    spark = no_auto_broadcast
    options = Options(days=(DAY,), events=900, batches=2, symbols=3, bad_rates=(("bad_json", 0.01),))
    write_landing(tmp_path / "landing", options, workers=1)
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
    before = set(executions(spark))
    result = materialize(
        [assets.ingestion],
        partition_key=DAY,
        resources={
            "spark": spark_resource("local[2]"),
            "lake": lake,
            "tracker": TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}"),
            "quality": QualityResource(),
        },
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    ran = {i: e for i, e in executions(spark).items() if i not in before}
    assert ran, "no Spark query was recorded"
    for execution_id, execution in ran.items():
        assert node_problems(spark, execution_id) == [], execution.physicalPlanDescription()

    files = {f.path for f in LandingZone(spark, lake.landing_root).listing(DAY).files}
    assert len(files) == 6  # 3 exchanges x 2 batches
    reads = Counter(path for paths in landing_scans(spark, ran).values() for path in paths)
    assert set(reads) == files
    assert max(reads.values()) <= 2, reads
