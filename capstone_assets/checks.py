"""Data-quality checks: what each one decides, and their specs on the assets.

Every check is a pure function of numbers that the asset step computed from
what it wrote (the staged Parquet read back, landing lines counted without the
parser), never of the asset's own metadata. The steps run them:

* **blocking** checks run on the staged day, before it is swapped in. When one
  fails, the step yields the failed result and then fails: the day keeps its
  previous version, the partition is not materialized (so a backfill holds
  back everything downstream of it), and the tracker records `failed` naming
  the check;
* **warning** checks run after the swap and never stop anything.

Partitioned asset checks are a preview in Dagster 1.13 (`partitions_def` on an
`AssetCheckSpec`): this module is the one place that uses that API, and
`test_checks.py` fails if per-day results stop appearing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from capstone_assets.partitions import trading_day_partitions

DEFAULT_REJECT_RATE_THRESHOLD = 0.05

# name -> (asset, blocking, what it means)
CHECKS: dict[str, tuple[str, bool, str]] = {
    "lines_accounted_for": (
        "raw_rejects", True,
        "Per exchange, non-blank landing lines read = trades + quotes + rejects written.",
    ),
    "reject_rate": (
        "raw_rejects", False,
        "The day's reject rate, and each exchange's, is at most the threshold (default 5%).",
    ),
    "landing_files_present": ("raw_rejects", False, "The day has landing files."),
    "exchanges_delivered": (
        "raw_rejects", False,
        "Every exchange that delivered on the previous trading day delivered today.",
    ),
    "unique_record_key_trades": (
        "trades", True, "One row per record key (symbol, exchange, event_tm, event_seq_nb).",
    ),
    "unique_record_key_quotes": (
        "quotes", True, "One row per record key (symbol, exchange, event_tm, event_seq_nb).",
    ),
    "one_row_per_quote": (
        "eod_quote_report", True, "The report has exactly one row per loaded quote of the day.",
    ),
    "close_pr_present": (
        "eod_quote_report", False,
        "No null close_pr for a pair that traded on the previous trading day.",
    ),
}  # fmt: skip


def specs_for(asset: str) -> list[AssetCheckSpec]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return [
            AssetCheckSpec(
                name,
                asset=owner,
                blocking=blocking,
                description=description,
                partitions_def=trading_day_partitions,
            )
            for name, (owner, blocking, description) in CHECKS.items()
            if owner == asset
        ]


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: passed or not, one sentence for the operator, numbers for the UI."""

    check: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        return CHECKS[self.check][1]

    def result(self) -> AssetCheckResult:
        return AssetCheckResult(
            asset_key=CHECKS[self.check][0],
            check_name=self.check,
            passed=self.passed,
            severity=AssetCheckSeverity.ERROR if self.blocking else AssetCheckSeverity.WARN,
            description=self.description,
            metadata=self.metadata,
        )


class BlockingCheckFailed(Exception):
    """A blocking check failed on the staged day: nothing was swapped in."""

    def __init__(self, outcome: Outcome, day: str):
        self.outcome = outcome
        super().__init__(
            f"blocking check {outcome.check} failed for {CHECKS[outcome.check][0]} {day}: "
            f"{outcome.description}. The previous version of the day is kept."
        )


def require(outcome: Outcome, day: str) -> Outcome:
    """Raises BlockingCheckFailed when a blocking check did not pass."""
    if outcome.blocking and not outcome.passed:
        raise BlockingCheckFailed(outcome, day)
    return outcome


# --------------------------------------------------------------------- blocking
def lines_accounted_for(per_exchange: dict[str, dict[str, int]]) -> Outcome:
    """`per_exchange`: exchange -> {"lines", "trades", "quotes", "rejects"}."""
    unbalanced = {
        exchange: counts
        for exchange, counts in per_exchange.items()
        if counts["lines"] != counts["trades"] + counts["quotes"] + counts["rejects"]
    }
    totals = {k: sum(c[k] for c in per_exchange.values()) for k in ("lines", "trades", "quotes", "rejects")}
    identity = (
        f"lines read {totals['lines']} = trades {totals['trades']} + quotes {totals['quotes']}"
        f" + rejects {totals['rejects']}"
    )
    if unbalanced:
        detail = "; ".join(
            f"{ex}: {c['lines']} lines, {c['trades'] + c['quotes'] + c['rejects']} written"
            for ex, c in sorted(unbalanced.items())
        )
        return Outcome(
            "lines_accounted_for", False, f"lines lost or duplicated ({detail})", {"unbalanced": unbalanced}
        )
    return Outcome("lines_accounted_for", True, identity, {**totals, "exchanges": len(per_exchange)})


def unique_record_key(dataset: str, rows: int, duplicate_keys: int, example: str | None) -> Outcome:
    name = f"unique_record_key_{dataset}"
    if duplicate_keys:
        return Outcome(
            name,
            False,
            f"{duplicate_keys} record keys occur more than once in {rows} rows (e.g. {example})",
            {"rows": rows, "duplicate_keys": duplicate_keys, "example": example or ""},
        )
    return Outcome(name, True, f"{rows} rows, every record key once", {"rows": rows, "duplicate_keys": 0})


def one_row_per_quote(report_rows: int, quotes: int, mismatched_keys: int, example: str | None) -> Outcome:
    """`mismatched_keys`: record keys whose number of report rows differs from their number of quotes."""
    numbers = {"report_rows": report_rows, "quotes": quotes, "mismatched_keys": mismatched_keys}
    if mismatched_keys or report_rows != quotes:
        return Outcome(
            "one_row_per_quote",
            False,
            f"{report_rows} report rows for {quotes} loaded quotes; "
            f"{mismatched_keys} quote keys without exactly one row (e.g. {example})",
            {**numbers, "example": example or ""},
        )
    return Outcome("one_row_per_quote", True, f"{report_rows} rows for {quotes} loaded quotes", numbers)


# ---------------------------------------------------------------------- warning
def reject_rate(per_exchange: dict[str, dict[str, int]], threshold: float) -> Outcome:
    def rate(counts: dict[str, int]) -> float:
        return counts["rejects"] / counts["lines"] if counts["lines"] else 0.0

    lines = sum(c["lines"] for c in per_exchange.values())
    rejects = sum(c["rejects"] for c in per_exchange.values())
    day_rate = rejects / lines if lines else 0.0
    rates = {ex: round(rate(c), 6) for ex, c in sorted(per_exchange.items())}
    over = [f"{ex} {r:.1%}" for ex, r in rates.items() if r > threshold]
    if day_rate > threshold:
        over.insert(0, f"the day {day_rate:.1%}")
    metadata = {"reject_rate": round(day_rate, 6), "threshold": threshold, "by_exchange": rates}
    if over:
        return Outcome(
            "reject_rate",
            False,
            f"reject rate above {threshold:.1%}: {', '.join(over)}; see raw_rejects for the reasons",
            metadata,
        )
    return Outcome("reject_rate", True, f"{rejects} rejects in {lines} lines ({day_rate:.2%})", metadata)


def landing_files_present(day: str, file_count: int, landing_root: str) -> Outcome:
    if file_count == 0:
        return Outcome(
            "landing_files_present",
            False,
            f"no landing files for {day} under {landing_root}: the day was written empty",
            {"landing_files": 0},
        )
    return Outcome("landing_files_present", True, f"{file_count} landing files", {"landing_files": file_count})


def exchanges_delivered(previous_day: str, previous: set[str], today: set[str]) -> Outcome:
    missing = sorted(previous - today)
    metadata = {"previous_trading_day": previous_day, "today": sorted(today), "missing": missing}
    if missing:
        return Outcome(
            "exchanges_delivered",
            False,
            f"{', '.join(missing)} delivered on {previous_day} but not today: a batch may be late",
            metadata,
        )
    return Outcome("exchanges_delivered", True, f"{len(today)} exchanges delivered", metadata)


def close_pr_present(previous_day: str | None, null_close_pairs: int, example: str | None) -> Outcome:
    metadata = {"previous_trading_day": previous_day or "none", "pairs_without_close": null_close_pairs}
    if null_close_pairs:
        return Outcome(
            "close_pr_present",
            False,
            f"{null_close_pairs} (symbol, exchange) pairs traded on {previous_day} but have a null "
            f"close_pr (e.g. {example})",
            {**metadata, "example": example or ""},
        )
    return Outcome("close_pr_present", True, "every pair that traded the day before has its close", metadata)
