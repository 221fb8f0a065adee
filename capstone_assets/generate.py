"""A synthetic landing zone of any size (`capstone-generate`), grown from the demo generator.

    capstone-generate --root DIR --days 2020-08-06 2020-08-07 --events 4000000 --seed 1 \\
        [--bad-rate 0.001] [--hot-symbols 3 --hot-share 0.8] [--exchanges NYSE:csv NASDAQ:json] [--batches 3]

`--events` is the number of distinct records (keys) per day, over all exchanges.
Each (symbol, exchange) pair walks its price through the session (09:30–16:00),
its events seconds apart or, for a thin pair, minutes; one stretch of 31 to 60
minutes per pair has quotes only, so trades lie from seconds to over 30 minutes
apart. An exchange's day is delivered in `--batches` files (`batch-1.txt` …), each
holding the events of its slice of the session, arriving 30 minutes after the slice
ends (the last at 16:30). A `--correction-rate` share of the records is re-sent,
with changed prices, in a later batch: same key, later `arrival_tm`. So

    lines per day = events + corrections     (bad records are among the events)

and `--bad-rate` (each kind; `--bad KIND=RATE` for one) turns that share of the
events into lines that ingestion rejects with that reason (SPEC.md §2). The same
seed writes the same bytes, whatever `--workers`: each pair has a random stream of
its own. Lines of a batch file are grouped by symbol, in event order per symbol.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import random
import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Iterable, Iterator

from capstone_assets import settings

OPEN_MS, CLOSE_MS = (9 * 3600 + 30 * 60) * 1000, 16 * 3600 * 1000
SESSION_MS = CLOSE_MS - OPEN_MS
ARRIVAL_DELAY_MS = 30 * 60 * 1000
QUIET_MS = (31 * 60 * 1000, 60 * 60 * 1000)  # a quote-only stretch per pair
CORRECTION_FACTOR = 1.001
SIZES = ("100", "200", "300", "500")
CSV_KINDS = ("field_count", "bad_rec_type", "missing_key", "bad_timestamp", "bad_number",
             "negative_value", "trade_dt_mismatch")  # fmt: skip
JSON_KINDS = ("bad_json", *CSV_KINDS[1:])  # a JSON line has keys, not a field count
KINDS = ("bad_json", *CSV_KINDS)
DEFAULT_EXCHANGES = ("NYSE:csv", "NASDAQ:json", "CBOE:csv")
# Below this many events in all, worker processes cost more than they save.
PARALLEL_FROM_EVENTS = 200_000


@dataclass(frozen=True)
class Options:
    days: tuple[str, ...]
    events: int
    seed: int = 1
    exchanges: tuple[tuple[str, str], ...] = tuple(tuple(e.split(":")) for e in DEFAULT_EXCHANGES)
    batches: int = 3
    symbols: int = 100
    hot_symbols: int = 0
    hot_share: float = 0.8
    trade_share: float = 0.25
    correction_rate: float = 0.001
    bad_rates: tuple[tuple[str, float], ...] = ()  # (kind, rate of the events)


@dataclass
class Stats:
    """What was written, per landing file (path relative to the root)."""

    events: dict[str, int] = field(default_factory=dict)
    corrections: dict[str, int] = field(default_factory=dict)
    bad: dict[tuple[str, str], int] = field(default_factory=dict)  # (file, kind) -> lines

    def add(self, other: Stats) -> None:
        for mine, theirs in ((self.events, other.events), (self.corrections, other.corrections),
                             (self.bad, other.bad)):  # fmt: skip
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count

    def lines(self, file: str | None = None) -> int:
        keep = lambda f: file is None or f == file  # noqa: E731
        return sum(n for f, n in self.events.items() if keep(f)) + sum(
            n for f, n in self.corrections.items() if keep(f)
        )


def symbol_names(count: int) -> list[str]:
    return [f"SYM{i:0{max(3, len(str(count - 1)))}d}" for i in range(count)]


def split_evenly(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, largest remainders first (deterministic)."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def symbol_weights(options: Options) -> list[float]:
    hot = min(options.hot_symbols, options.symbols)
    if hot == 0 or hot == options.symbols:
        return [1.0] * options.symbols
    cold_share = (1 - options.hot_share) / (options.symbols - hot)
    return [options.hot_share / hot] * hot + [cold_share] * (options.symbols - hot)


def file_name(fmt: str, day: str, exchange: str, batch: int) -> str:
    return f"{fmt}/{day}/{exchange}/batch-{batch + 1}.txt"


@dataclass(frozen=True)
class Task:
    """One (day, exchange, symbol): the unit of work and of randomness."""

    day: str
    exchange: str
    fmt: str
    symbol: str
    events: int
    options: Options


def tasks(options: Options) -> list[Task]:
    names = symbol_names(options.symbols)
    weights = symbol_weights(options)
    out = []
    for day in options.days:
        per_exchange = split_evenly(options.events, [1.0] * len(options.exchanges))
        for (exchange, fmt), events in zip(options.exchanges, per_exchange, strict=True):
            for symbol, n in zip(names, split_evenly(events, weights), strict=True):
                if n:
                    out.append(Task(day, exchange, fmt, symbol, n, options))
    return out


_CLOCK: dict[str, list[str]] = {}
MILLIS = [f"{i:03d}" for i in range(1000)]


def _clock(day: str) -> list[str]:
    """`YYYY-MM-DD HH:MM:SS.` for every second of the day: timestamps by lookup, not strftime."""
    if day not in _CLOCK:
        _CLOCK[day] = [f"{day} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}." for s in range(86400)]
    return _CLOCK[day]


def _price_text(price: float) -> str:
    return f"{price:.2f}"


def _line(fmt: str, day: str, arrival: str, rec: tuple, exchange: str) -> str:
    """One record as the exchange writes it (as demo.py does): CSV fields or a compact JSON object."""
    rec_type, symbol, event_tm, seq, p1, s1, p2, s2 = rec  # p2, s2: None for a trade
    if fmt == "csv":
        tail = f"{p1},{s1}" if p2 is None else f"{p1},{s1},{p2},{s2}"
        return f"{day},{arrival},{rec_type},{symbol},{event_tm},{seq},{exchange},{tail}"
    head = (f'{{"trade_dt":"{day}","file_tm":"{arrival}","event_type":"{rec_type}","symbol":"{symbol}",'
            f'"event_tm":"{event_tm}","event_seq_nb":{seq},"exchange":"{exchange}",')  # fmt: skip
    if p2 is None:  # a trade's fields, whatever its (perhaps spoiled) rec_type
        return head + f'"execution_id":"{exchange}-{symbol}-{seq}","price":{p1},"size":{s1}}}'
    return head + f'"bid_pr":{p1},"bid_size":{s1},"ask_pr":{p2},"ask_size":{s2}}}'


def _bad_line(kind: str, fmt: str, day: str, arrival: str, rec: tuple, exchange: str) -> str:
    """The record spoiled so that ingestion's first failing check is `kind` (SPEC.md §2 order)."""
    rec_type, symbol, event_tm, seq, p1, s1, p2, s2 = rec
    if kind == "bad_rec_type":
        return _line(fmt, day, arrival, ("X", *rec[1:]), exchange)
    if kind == "missing_key":
        return _line(fmt, day, arrival, (rec_type, "", *rec[2:]), exchange)
    if kind == "bad_timestamp":
        # Hour 24 in CSV; the ISO `T` separator in JSON: neither is the feed's format.
        bad_tm = event_tm[:11] + "24" + event_tm[13:] if fmt == "csv" else event_tm.replace(" ", "T")
        return _line(fmt, day, arrival, (rec_type, symbol, bad_tm, *rec[3:]), exchange)
    if kind == "negative_value":
        return _line(fmt, day, arrival, (rec_type, symbol, event_tm, seq, f"-{p1}", s1, p2, s2), exchange)
    if kind == "trade_dt_mismatch":
        other = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        return _line(fmt, other, arrival, rec, exchange)
    good = _line(fmt, day, arrival, rec, exchange)
    if kind == "field_count":  # CSV: one field short for its type
        return good.rsplit(",", 1)[0]
    if kind == "bad_json":  # a trailing comma (RFC 8259)
        return good[:-1] + ",}"
    if kind == "bad_number":
        if fmt == "csv":
            return _line(fmt, day, arrival, (rec_type, symbol, event_tm, seq, "NaN", s1, p2, s2), exchange)
        # JSON: a trade that sends `trade_pr` instead of `price`; a quote's size as a float.
        return good.replace('"price":', '"trade_pr":') if rec_type == "T" else good.replace(
            f'"bid_size":{s1},', f'"bid_size":{s1}.0,'
        )
    raise ValueError(f"unknown bad record kind {kind!r}; known: {', '.join(KINDS)}")


def generate_pair(task: Task) -> tuple[list[bytes], Stats]:
    """The lines of one (day, exchange, symbol), per batch file, and what they hold."""
    o, day, exchange, fmt, symbol = task.options, task.day, task.exchange, task.fmt, task.symbol
    rng = random.Random(f"{o.seed}/{day}/{exchange}/{symbol}")
    rnd = rng.random
    base = 10 + 290 * random.Random(f"{o.seed}/{symbol}").random()  # a symbol's level, every day
    price = base * (1 + rng.uniform(-0.03, 0.03))
    n, batches = task.events, o.batches
    # Sorted event times: cumulative random gaps scaled onto the session.
    gaps = list(accumulate(rnd() for _ in range(n + 1)))
    scale = (SESSION_MS - 1) / gaps[-1]
    times = [int(g * scale) for g in gaps[:-1]]
    quiet_start = int(rnd() * (SESSION_MS - QUIET_MS[1]))
    quiet_end = quiet_start + rng.randrange(*QUIET_MS)
    clock = _clock(day)
    arrivals = [
        clock[(OPEN_MS + (b + 1) * SESSION_MS // batches + ARRIVAL_DELAY_MS) // 1000] + "000"
        for b in range(batches)
    ]
    kinds = [(k, r) for k, r in o.bad_rates if r > 0 and k in (CSV_KINDS if fmt == "csv" else JSON_KINDS)]
    thresholds = list(accumulate(r for _, r in kinds))
    bad_total = thresholds[-1] if thresholds else 0.0
    # Only records of an earlier batch can be corrected: scaled so the share is of all events.
    correct_below = bad_total + (o.correction_rate * batches / (batches - 1) if batches > 1 else 0.0)
    trade_share, step = o.trade_share, 0.004 / (1 + n / 5000) ** 0.5

    out: list[list[str]] = [[] for _ in range(batches)]
    names = [file_name(fmt, day, exchange, b) for b in range(batches)]
    stats = Stats()
    csv = fmt == "csv"
    if csv:
        heads = [f"{day},{a},T,{symbol}," for a in arrivals], [f"{day},{a},Q,{symbol}," for a in arrivals]
        middle = f",{exchange},"
    else:
        heads = tuple(
            [f'{{"trade_dt":"{day}","file_tm":"{a}","event_type":"{t}","symbol":"{symbol}","event_tm":"'
             for a in arrivals]
            for t in "TQ"
        )  # fmt: skip
        middle = f',"exchange":"{exchange}",'
    trade_heads, quote_heads = heads
    for seq, t in enumerate(times, start=1):
        price *= 1 + (rnd() - 0.5) * step
        b = t * batches // SESSION_MS
        ms = OPEN_MS + t
        event_tm = clock[ms // 1000] + MILLIS[ms % 1000]
        is_trade = rnd() < trade_share and not quiet_start <= t < quiet_end
        if is_trade:
            p1, s1, p2, s2 = _price_text(price), SIZES[int(rnd() * 4)], None, None
            if csv:
                line = f"{trade_heads[b]}{event_tm},{seq}{middle}{p1},{s1}"
            else:
                line = (f'{trade_heads[b]}{event_tm}","event_seq_nb":{seq}{middle}"execution_id":"'
                        f'{exchange}-{symbol}-{seq}","price":{p1},"size":{s1}}}')  # fmt: skip
        else:
            half_spread = price * (0.0002 + 0.001 * rnd())
            p1, p2 = _price_text(price - half_spread), _price_text(price + half_spread)
            s1, s2 = SIZES[int(rnd() * 4)], SIZES[int(rnd() * 4)]
            if csv:
                line = f"{quote_heads[b]}{event_tm},{seq}{middle}{p1},{s1},{p2},{s2}"
            else:
                line = (f'{quote_heads[b]}{event_tm}","event_seq_nb":{seq}{middle}"bid_pr":{p1},'
                        f'"bid_size":{s1},"ask_pr":{p2},"ask_size":{s2}}}')  # fmt: skip
        u = rnd()
        if u < correct_below:
            rec = ("T" if is_trade else "Q", symbol, event_tm, seq, p1, s1, p2, s2)
            if u < bad_total:
                kind = kinds[bisect_right(thresholds, u)][0]
                line = _bad_line(kind, fmt, day, arrivals[b], rec, exchange)
                stats.bad[(names[b], kind)] = stats.bad.get((names[b], kind), 0) + 1
            elif b < batches - 1:
                later = b + 1 + int(rnd() * (batches - 1 - b))
                fixed = (*rec[:4], _price_text(float(p1) * CORRECTION_FACTOR), rec[5],
                         p2 and _price_text(float(p2) * CORRECTION_FACTOR), rec[7])  # fmt: skip
                out[later].append(_line(fmt, day, arrivals[later], fixed, exchange))
                stats.corrections[names[later]] = stats.corrections.get(names[later], 0) + 1
        out[b].append(line)
        stats.events[names[b]] = stats.events.get(names[b], 0) + 1
    return [("\n".join(lines) + "\n").encode() if lines else b"" for lines in out], stats


def _pairs(options: Options, workers: int) -> Iterator[tuple[Task, list[bytes], Stats]]:
    work = tasks(options)
    if workers <= 1:
        for task in work:
            yield (task, *generate_pair(task))
        return
    # spawn: safe in a process that also runs a JVM or threads (fork would copy their locks).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for task, (chunks, stats) in zip(work, pool.imap(generate_pair, work, chunksize=1), strict=True):
            yield task, chunks, stats


def write_landing(
    root: Path, options: Options, workers: int | None = None, progress: bool | None = None
) -> Stats:
    """Writes the landing files of `options.days` under `root`; returns what they hold.

    Earlier `batch-*.txt` files of the exchanges written are removed first, so a run
    with fewer batches leaves no stale ones behind."""
    root = Path(root)
    if workers is None:
        total = options.events * len(options.days)
        workers = 1 if total < PARALLEL_FROM_EVENTS else (os.cpu_count() or 1)
    folders = {(fmt, day, ex) for day in options.days for ex, fmt in options.exchanges}
    for fmt, day, ex in sorted(folders):
        folder = root / fmt / day / ex
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("batch-*.txt"):
            stale.unlink()
    stats = Stats()
    handles = {}
    try:
        with _progress_bar(options.events * len(options.days), progress) as bar:
            for task, chunks, pair_stats in _pairs(options, workers):
                for batch, chunk in enumerate(chunks):
                    if not chunk:
                        continue
                    name = file_name(task.fmt, task.day, task.exchange, batch)
                    if name not in handles:
                        handles[name] = open(root / name, "wb")
                    handles[name].write(chunk)
                stats.add(pair_stats)
                bar.update(task.events)
    finally:
        for handle in handles.values():
            handle.close()
    return stats


def _progress_bar(total: int, enabled: bool | None):
    """A bar on stderr (tqdm comes with Dagster); by default only on a terminal and for big runs."""
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty() and total >= PARALLEL_FROM_EVENTS
    return tqdm(total=total, unit=" events", unit_scale=True, disable=not enabled, file=sys.stderr)


def _exchange(text: str) -> tuple[str, str]:
    name, _, fmt = text.partition(":")
    fmt = fmt or "csv"
    if not name or fmt not in ("csv", "json"):
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME or NAME:csv or NAME:json")
    return name, fmt


def _bad(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{kind!r} is not a bad record kind: {', '.join(KINDS)}")
    return kind, _rate(rate)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate between 0 and 1")
    return rate


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def parse_args(argv: Iterable[str] | None = None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(prog="capstone-generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("--root", default=settings.value("CAPSTONE_LANDING_ROOT"), help="landing root to write")
    p.add_argument("--days", nargs="+", type=_day, default=["2020-08-06", "2020-08-07"])
    p.add_argument("--events", type=int, default=100_000, help="distinct records per day, all exchanges")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--exchanges", nargs="+", type=_exchange, metavar="NAME[:csv|json]",
                   default=[_exchange(e) for e in DEFAULT_EXCHANGES])  # fmt: skip
    p.add_argument("--batches", type=int, default=3, help="files per exchange and day")
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--hot-symbols", type=int, default=0, help="this many symbols carry --hot-share of events")
    p.add_argument("--hot-share", type=_rate, default=0.8)
    p.add_argument("--trade-share", type=_rate, default=0.25, help="share of trades among events")
    p.add_argument("--correction-rate", type=_rate, default=0.001, help="share of events re-sent later")
    p.add_argument("--bad-rate", type=_rate, default=0.0, help="share of events spoiled, for each bad kind")
    p.add_argument("--bad", type=_bad, action="append", default=[], metavar="KIND=RATE",
                   help=f"rate of one kind, overriding --bad-rate ({', '.join(KINDS)})")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, help="processes (default: one per core on big runs)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: on a terminal, for big runs)")  # fmt: skip
    args = p.parse_args(argv)
    if args.events < 0 or args.batches < 1 or args.symbols < 1 or not 0 <= args.hot_symbols <= args.symbols:
        p.error("--events ≥ 0, --batches ≥ 1, --symbols ≥ 1 and 0 ≤ --hot-symbols ≤ --symbols")
    rates = {kind: args.bad_rate for kind in KINDS} | dict(args.bad)
    options = Options(
        days=tuple(args.days), events=args.events, seed=args.seed, exchanges=tuple(args.exchanges),
        batches=args.batches, symbols=args.symbols, hot_symbols=args.hot_symbols, hot_share=args.hot_share,
        trade_share=args.trade_share, correction_rate=args.correction_rate,
        bad_rates=tuple((k, r) for k, r in rates.items() if r > 0),
    )  # fmt: skip
    return args, options


def main(argv: list[str] | None = None) -> int:
    args, options = parse_args(argv)
    stats = write_landing(Path(args.root), options, workers=args.workers, progress=args.progress)
    corrections, bad = sum(stats.corrections.values()), sum(stats.bad.values())
    print(
        f"Wrote {len(stats.events)} files under {args.root} for {', '.join(options.days)}: "
        f"{sum(stats.events.values()):,} events ({bad:,} of them bad lines) + {corrections:,} corrections "
        f"= {stats.lines():,} lines"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
