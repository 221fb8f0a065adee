"""A small, deterministic demo landing zone (`capstone-demo`).

Four trading days around a weekend (Thu 2020-08-06 … Tue 2020-08-11), three
exchanges (NYSE and CBOE in CSV, NASDAQ in JSON), two batches per exchange and
day: the second batch re-sends some morning records with later arrival times
(corrections), and a few bad lines of each kind end up in the rejects. The
same seed always writes the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from pathlib import Path

from capstone_assets import settings

DEMO_DAYS = ("2020-08-06", "2020-08-07", "2020-08-10", "2020-08-11")
EXCHANGES = {"NYSE": "csv", "NASDAQ": "json", "CBOE": "csv"}
SYMBOLS = {"SYMA": 78.0, "SYMB": 34.0, "SYMC": 159.0}
OPEN, CLOSE = dt.time(9, 30), dt.time(16, 0)
SEED = 20200806


def _ts(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _events(rng: random.Random, day: dt.date, exchange: str) -> list[dict]:
    """Trades and quotes of one exchange and day, in event order per symbol."""
    events = []
    start = dt.datetime.combine(day, OPEN)
    session_seconds = (dt.datetime.combine(day, CLOSE) - start).seconds
    for symbol, base in SYMBOLS.items():
        price = base * (1 + rng.uniform(-0.03, 0.03))
        offsets = sorted(rng.sample(range(60, session_seconds), 96))
        for seq, offset in enumerate(offsets, start=1):
            price *= 1 + rng.gauss(0, 0.004)
            event_tm = start + dt.timedelta(seconds=offset, milliseconds=rng.randrange(1000))
            record = {"symbol": symbol, "exchange": exchange, "event_tm": event_tm, "event_seq_nb": seq}
            if seq % 4 == 0:  # one trade for every three quotes
                record.update(rec_type="T", price=round(price, 6), size=rng.choice((100, 200, 500)))
            else:
                spread = price * rng.uniform(0.0005, 0.004)
                record.update(
                    rec_type="Q",
                    bid_pr=round(price - spread, 6),
                    bid_size=rng.choice((100, 200, 300)),
                    ask_pr=round(price + spread, 6),
                    ask_size=rng.choice((100, 200, 300)),
                )
            events.append(record)
    return events


def _csv_line(day: str, arrival: dt.datetime, r: dict) -> str:
    head = [
        day,
        _ts(arrival),
        r["rec_type"],
        r["symbol"],
        _ts(r["event_tm"]),
        str(r["event_seq_nb"]),
        r["exchange"],
    ]
    if r["rec_type"] == "T":
        return ",".join(head + [repr(r["price"]), str(r["size"])])
    return ",".join(head + [repr(r["bid_pr"]), str(r["bid_size"]), repr(r["ask_pr"]), str(r["ask_size"])])


def _json_line(day: str, arrival: dt.datetime, r: dict) -> str:
    obj = {
        "trade_dt": day, "file_tm": _ts(arrival), "event_type": r["rec_type"], "symbol": r["symbol"],
        "event_tm": _ts(r["event_tm"]), "event_seq_nb": r["event_seq_nb"], "exchange": r["exchange"],
    }  # fmt: skip
    if r["rec_type"] == "T":
        obj.update(
            execution_id=f"{r['exchange']}-{r['symbol']}-{r['event_seq_nb']}",
            price=r["price"],
            size=r["size"],
        )
    else:
        obj.update(bid_pr=r["bid_pr"], bid_size=r["bid_size"], ask_pr=r["ask_pr"], ask_size=r["ask_size"])
    return json.dumps(obj, separators=(",", ":"))


def _bad_lines(day: str, fmt: str, exchange: str) -> list[str]:
    """One line per reject reason the format can produce, plus a blank line."""
    if fmt == "csv":
        good = f"{day},{day} 12:00:00.000,T,SYMA,{day} 12:00:00.000,999,{exchange}"
        return [
            "garbage",  # field_count
            f"{day},{day} 12:00:00.000,X,SYMA,{day} 12:00:00.000,1,{exchange},1.0,100",  # bad_rec_type
            f"{good},77.5",  # field_count: 8 fields for a trade
            f"{day},{day} 12:00:00.000,T,,{day} 12:00:00.000,998,{exchange},77.5,100",  # missing_key
            f"{day},{day} 25:00:00.000,T,SYMA,{day} 12:00:00.000,997,{exchange},77.5,100",  # bad_timestamp
            f"{good},NaN,100",  # bad_number
            f"{good},-77.5,100",  # negative_value
            f"2020-01-02,{day} 12:00:00.000,T,SYMA,{day} 12:00:00.000,996,{exchange},77.5,100",  # mismatch
            "   ",  # blank: ignored
        ]
    return [
        '{"trade_dt":"' + day + '","event_type":"T",}',  # bad_json (trailing comma)
        '{"trade_dt":"' + day + '","event_type":"X"}',  # bad_rec_type
        '{"trade_dt":"'
        + day
        + '","file_tm":"'
        + day
        + ' 12:00:00","event_type":"T","symbol":"SYMA","event_tm":"'
        + day
        + ' 12:00:00","event_seq_nb":995,"exchange":"'
        + exchange
        + '","trade_pr":77.5,"size":100}',  # no price
        "",  # blank: ignored
    ]


def write_demo_landing(root: Path, seed: int = SEED) -> list[Path]:
    """Writes the demo landing zone under `root`; returns the files written."""
    rng = random.Random(seed)
    written = []
    for day_text in DEMO_DAYS:
        day = dt.date.fromisoformat(day_text)
        for exchange, fmt in EXCHANGES.items():
            events = _events(rng, day, exchange)
            morning = [e for e in events if e["event_tm"].time() < dt.time(12)]
            afternoon = [e for e in events if e["event_tm"].time() >= dt.time(12)]
            corrections = []
            for record in rng.sample(morning, 5):
                fixed = dict(record)
                for key in ("price", "bid_pr", "ask_pr"):
                    if key in fixed:
                        fixed[key] = round(fixed[key] * 1.001, 6)
                corrections.append(fixed)
            line = _csv_line if fmt == "csv" else _json_line
            batches = {
                "batch-1": [line(day_text, dt.datetime.combine(day, dt.time(12)), e) for e in morning],
                "batch-2": [
                    line(day_text, dt.datetime.combine(day, dt.time(16, 30)), e)
                    for e in afternoon + corrections
                ]
                + _bad_lines(day_text, fmt, exchange),
            }
            folder = root / fmt / day_text / exchange
            folder.mkdir(parents=True, exist_ok=True)
            for name, lines in batches.items():
                path = folder / f"{name}.txt"
                # CRLF in one CSV batch: the reader must take off the CR.
                newline = "\r\n" if (fmt == "csv" and name == "batch-2") else "\n"
                path.write_bytes((newline.join(lines) + newline).encode())
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capstone-demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=settings.value("CAPSTONE_LANDING_ROOT"), help="landing root to write"
    )
    args = parser.parse_args(argv)
    files = write_demo_landing(Path(args.out))
    print(f"Wrote {len(files)} demo landing files for {', '.join(DEMO_DAYS)} under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
