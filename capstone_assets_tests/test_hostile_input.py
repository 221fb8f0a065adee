"""Hostile landing files, property-tested against an independent validator (SPEC.md §1–§2).

Each Hypothesis example is a whole landing zone (several files, formats,
exchanges, many lines) read through the real path: `read_landing_lines`,
`parsing.parse_lines` and the three `select_*`, in one Spark job on the shared
session. Every non-blank line must land exactly where `validator.py` (plain
Python, no code shared with the package) says, with the same reason, and every
accepted value must equal its token.

CI runs the `ci` profile: 200 derandomized examples (from a fixed seed; about 2,500
non-blank lines), no example database; about 4 minutes on 2 cores, most of it a fixed
cost per example (building `parse_lines`' plan takes ~0.5 s). Hypothesis can still go on to
larger mutations of an example (lines of ~100,000 characters): the validator's patterns
must be linear too, or one such line costs minutes. To
search harder locally, with new random examples each run:

    CAPSTONE_HYPOTHESIS_PROFILE=dev CAPSTONE_HYPOTHESIS_EXAMPLES=2000 \
        .venv/bin/python -m pytest capstone_assets_tests/test_hostile_input.py -k every_line

(`dev` remembers failing examples under var/hypothesis and replays them first.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from functools import reduce
from pathlib import Path
from urllib.parse import urlparse

import pytest
from dagster import DagsterInstance, materialize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from capstone_assets import assets
from capstone_assets.assets.ingestion import read_landing_lines
from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.landing import LandingZone
from capstone_assets.transforms import parsing
from capstone_assets_tests import validator

REPO = Path(__file__).resolve().parents[1]
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=_QUIET
)
settings.register_profile(
    "dev",
    max_examples=int(os.environ.get("CAPSTONE_HYPOTHESIS_EXAMPLES", "2000")),
    deadline=None,
    database=DirectoryBasedExampleDatabase(REPO / "var" / "hypothesis"),
    suppress_health_check=_QUIET,
)
PROFILE = settings.get_profile(os.environ.get("CAPSTONE_HYPOTHESIS_PROFILE", "ci"))

DAYS = ("2020-08-05", "2020-02-28", "2021-03-01")
EXCHANGES = ("NYSE", "NASDAQ", "ARCA")
# Bytes that are not UTF-8: lone continuation, overlong, surrogate, truncated, out of range.
NOT_UTF8 = (b"\x80", b"\xbf", b"\xc0\x80", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xe2\x82",
            b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xf5", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xff")  # fmt: skip


# ------------------------------------------------------------------ tokens
def mostly(good: st.SearchStrategy, *bad: st.SearchStrategy, weight: int = 12) -> st.SearchStrategy:
    """`good` `weight` times as often as each `bad` (most lines must have a chance to be valid);
    shrinks towards `good`. (`one_of` would not weigh: it picks a branch, repeated or not.)"""
    return st.sampled_from([good] * weight + list(bad)).flatmap(lambda strategy: strategy)


def digits(min_size: int = 1, max_size: int = 4) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=min_size, max_size=max_size)


# Years 0001-9999 only: SPEC.md does not say whether 0000 exists (see validator.parse_date).
valid_dates = st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(dt.date.isoformat)
impossible_dates = st.sampled_from(["2020-02-30", "2021-02-29", "2020-13-01", "2020-00-10", "2020-04-31",
                                    "2020-08-00", "2020-08-32", "1900-02-29"])  # fmt: skip
malformed_dates = st.sampled_from(["2020-8-05", "20200805", "2020/08/05", " 2020-08-05", "2020-08-05 ", "",
                                   "٢٠٢٠-٠٨-٠٥", "+2020-08-05", "2020-08-05T", "2020-08", "２０２０-08-05"])  # fmt: skip


def dates(day: str) -> st.SearchStrategy[str]:
    return mostly(st.just(day), valid_dates, impossible_dates, malformed_dates)


@st.composite
def valid_timestamps(draw, day: str) -> str:
    """`yyyy-MM-dd HH:mm:ss` with 0 to 9 fraction digits."""
    date = draw(mostly(st.just(day), valid_dates, weight=3))
    time = draw(st.times()).strftime("%H:%M:%S")
    return f"{date} {time}{draw(st.one_of(st.just(''), digits(1, 9).map('.{}'.format)))}"


@st.composite
def damaged_timestamps(draw, day: str) -> str:
    """Impossible dates and times, one-digit fields, 10 fraction digits, a `T`, a zone, blanks."""
    date = draw(st.one_of(st.just(day), impossible_dates, malformed_dates))
    field = st.one_of(st.integers(0, 99).map("{:02d}".format), st.sampled_from(["9", "٠٩", "-1", "1 ", ""]))
    hour, minute, second = draw(field), draw(field), draw(field)
    fraction = draw(st.one_of(st.just(""), digits(0, 10).map(".{}".format), st.just(".")))
    separator = draw(st.sampled_from([" "] * 4 + ["T", "  ", ""]))
    suffix = draw(st.sampled_from([""] * 4 + ["Z", "+00:00", " ", "\t"]))
    return f"{date}{separator}{hour}:{minute}:{second}{fraction}{suffix}"


def timestamps(day: str) -> st.SearchStrategy[str]:
    return mostly(valid_timestamps(day), damaged_timestamps(day), weight=8)


ODD_NUMBERS = ["1e400", "-1e400", "1E309", "1e-400", "NaN", "nan", "Infinity", "-Infinity", "inf", "_",
               "", " 5", "5 ", "12,3", "١٢٣", "٣", "５", "1d", "1f", "0x10", "1_0", "-0", "-0.0", "+0",
               "+.5e-3", "5e", "e5", ".", "-", ".e1", "1e+", "½", "1.0", "100.0", "1e2", "5\r", "--5",
               "2147483648", "-2147483649", "2147483647", "-2147483648", "9" * 40, "0" * 30 + "7"]  # fmt: skip
prices = mostly(
    st.one_of(
        st.floats(0, 1e9).map(repr),
        st.tuples(st.sampled_from(["", "+"]), digits(0, 20), st.sampled_from(["", "."]), digits(0, 20),
                  st.sampled_from(["", "", "e", "E-", "e+"]), digits(0, 3)).map("".join),  # fmt: skip
        st.integers(0, 10**6).map(str),
    ),
    st.floats(-1e6, 0, allow_nan=False).map(repr),  # negative_value, or -0.0
    st.sampled_from(ODD_NUMBERS),
    weight=6,
)
ints = mostly(
    st.integers(0, 10**6).map(str),
    st.integers(-(2**31), 2**31 - 1).map(str), st.integers().map(str), st.sampled_from(ODD_NUMBERS),
    weight=6,
)  # fmt: skip
# Text for keys such as symbol: quotes, commas, brackets, blanks, lone CRs, non-ASCII, U+FFFD itself.
names = mostly(
    st.sampled_from(["SYMA", "SYMB", "NYSE", "NASDAQ", " ", "\t", "é€😀", '"Q"']),
    st.text(st.sampled_from(list('AZaz09 \t",\'\\{}[]:é€😀\ufffd\r\x00\x1f\x7f\u2028\u0085')), max_size=6),
    weight=4,
)
rec_types = mostly(st.sampled_from(["T", "Q"]), st.sampled_from(["t", "q", "X", "", "TQ", " T", "Q ", "T\r", "Ｔ"]))


# ------------------------------------------------------------------ CSV lines
@st.composite
def csv_lines(draw, day: str) -> str:
    rec_type = draw(rec_types)
    fields = [draw(dates(day)), draw(timestamps(day)), rec_type, draw(names), draw(timestamps(day)),
              draw(ints), draw(names), draw(prices), draw(ints)]  # fmt: skip
    if rec_type.startswith("Q") or draw(st.booleans()) and draw(st.booleans()):
        fields += [draw(prices), draw(ints)]
    damage = draw(st.sampled_from([None] * 12 + ["drop", "extra", "quote", "cut"]))
    if damage == "drop":
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif damage == "extra":
        fields.insert(draw(st.integers(0, len(fields))), draw(st.sampled_from(["", "x", "1", '"a,b"'])))
    elif damage == "quote":  # CSV quoting is not part of the feed: the quotes are data
        i = draw(st.integers(0, len(fields) - 1))
        fields[i] = f'"{fields[i]}"'
    line = ",".join(fields)
    return line[: draw(st.integers(0, len(line)))] if damage == "cut" else line


# ------------------------------------------------------------------ JSON lines
def json_text(value: str, escape: list[bool]) -> str:
    """A JSON string literal, some characters written as \\u escapes (`pr\\u0069ce` is `price`)."""
    out = []
    for char, escaped in zip(value, escape + [False] * len(value)):
        out.append(f"\\u{ord(char):04x}" if escaped and ord(char) < 0x10000 else json.dumps(char)[1:-1])
    return '"' + "".join(out) + '"'


@st.composite
def strings(draw, values: st.SearchStrategy[str]) -> str:
    value = draw(values)
    return json_text(value, draw(st.lists(st.booleans(), max_size=len(value))))


json_numbers = st.one_of(
    st.integers().map(str),
    st.floats(-1e6, 1e9, allow_nan=False).map(lambda f: json.dumps(f)),
    st.sampled_from(["-0", "-0.0", "1e400", "-1e400", "1.50", "100.0", "1e2", "1E+2", "0.1e-5", "5e-324",
                     "123456789012345678901234567890", "0.30000000000000004", "2147483648"]),
)  # fmt: skip
wrong_types = st.sampled_from(["true", "false", "null", "[]", "[1]", "{}", '{"v":1}', '"12,3"', '""',
                               '" 5"', '"1e400"', '"NaN"', '[[{"a":[]}]]', '{"price":{"price":1}}'])  # fmt: skip
any_json = st.recursive(
    st.one_of(json_numbers, wrong_types, strings(names)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(strings(names), inner), max_size=3).map(
            lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=6,
)
json_prices = mostly(st.one_of(strings(prices), json_numbers), wrong_types, weight=10)
json_ints = mostly(st.one_of(strings(ints), st.integers(0, 10**6).map(str)), json_numbers, wrong_types, weight=10)
# SPEC.md says what a wrong type is where a number belongs, not where text belongs: text
# fields get strings, null, integers and booleans only (validator.Unspecified).
json_names = mostly(strings(names), st.sampled_from(["null", "true", "false", "0", "17"]), weight=6)
TEXT_KEYS = ("symbol", "exchange", "execution_id")
EXTRA_KEYS = ["x", "meta", "trade_pr", "PRICE", "Symbol", "event_Type", "_corrupt_record", "record", "", "é"]


@st.composite
def json_lines(draw, day: str) -> str:
    rec_type = draw(rec_types)
    pairs = [
        ("trade_dt", draw(strings(dates(day)))), ("file_tm", draw(strings(timestamps(day)))),
        ("event_type", draw(mostly(strings(st.just(rec_type)), wrong_types))),
        ("symbol", draw(json_names)), ("event_tm", draw(strings(timestamps(day)))),
        ("event_seq_nb", draw(json_ints)), ("exchange", draw(json_names)),
    ]  # fmt: skip
    if rec_type == "T":
        pairs += [("execution_id", draw(json_names)), ("price", draw(json_prices)), ("size", draw(json_ints))]
    else:
        pairs += [("bid_pr", draw(json_prices)), ("bid_size", draw(json_ints)),
                  ("ask_pr", draw(json_prices)), ("ask_size", draw(json_ints))]  # fmt: skip
    some = mostly(st.just(0), st.integers(1, 2), weight=3)
    for _ in range(draw(some)):  # drop a key
        del pairs[draw(st.integers(0, len(pairs) - 1))]
    for _ in range(draw(some)):  # repeat a key with another value: the last one counts
        key, _value = pairs[draw(st.integers(0, len(pairs) - 1))]
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(json_names if key in TEXT_KEYS else any_json)))
    for _ in range(draw(some)):  # unknown keys, nested objects and arrays
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(st.sampled_from(EXTRA_KEYS)), draw(any_json)))
    space = st.sampled_from(["", "", "", " ", "\t", "\r", "  \r "])
    members = [
        f"{draw(space)}{json_text(key, draw(st.lists(st.booleans(), max_size=3)))}{draw(space)}:"
        f"{draw(space)}{value}{draw(space)}"
        for key, value in pairs
    ]
    line = f"{draw(space)}{{{','.join(members)}}}{draw(space)}"
    damage = draw(st.sampled_from([None] * 18 + ["cut", "trailing_comma", "after", "single", "array", "nan"]))
    if damage == "cut":
        return line[: draw(st.integers(0, len(line)))]
    if damage == "trailing_comma":
        return line.rstrip()[:-1] + ",}"
    if damage == "after":  # the other engineer's check: anything after the object
        return line + draw(st.sampled_from([" x", "}", "{}", ' ,"x":1}', "]", " //", "\u00a0"]))
    if damage == "single":
        return line.replace('"', "'")
    if damage == "array":
        return f"[{line}]"
    if damage == "nan":
        return line.replace(pairs[-1][1], "NaN", 1) if pairs else line
    return line


# ------------------------------------------------------------------ huge lines, files
@st.composite
def huge_lines(draw, fmt: str, day: str) -> str:
    """One very long line (SPEC.md: no line length limit), valid or not, in 1 of 4 shapes."""
    n = draw(st.integers(1_000, 100_000))
    record = {"trade_dt": day, "file_tm": f"{day} 09:30:00", "event_type": "T", "symbol": "S", "event_tm":
              f"{day} 10:00:00", "event_seq_nb": 1, "exchange": "X", "price": 1.5, "size": 10}  # fmt: skip
    shape = draw(st.sampled_from(["long_symbol", "long_bad_price", "long_price", "long_extra"]))
    if fmt == "csv":
        symbol, price = {"long_symbol": ("S" * n, "1.5"), "long_bad_price": ("S", "1" * n + "x"),
                         "long_price": ("S", "1" * n), "long_extra": ("S", f"0.{'0' * n}5")}[shape]  # fmt: skip
        return f"{day},{day} 09:30:00,T,{symbol},{day} 10:00:00,1,X,{price},10"
    head = json.dumps(record)[:-1]
    value = {"long_symbol": f'"symbol":"{"S" * n}"', "long_bad_price": f'"price":{"1" * n}',
             "long_price": f'"price":0.{"0" * n}5', "long_extra": f'"x":"{"x" * n}"'}[shape]  # fmt: skip
    return f"{head},{value}}}"


@st.composite
def landing_file(draw, index: int, day: str) -> tuple[str, str, str, bytes]:
    """(folder format, exchange, file name, bytes) of one batch file, damaged at the byte level too."""
    folder_format = draw(st.sampled_from(["csv", "json"]))
    exchange = draw(st.sampled_from(EXCHANGES))
    name = f"{draw(st.sampled_from([''] * 12 + ['_', '.']))}part-{index}"
    name += draw(st.sampled_from([".txt"] * 4 + [".csv", ".json", ".jsonl", ""]))
    fmt = validator.file_format(name, folder_format)
    own, other = (csv_lines(day), json_lines(day)) if fmt == "csv" else (json_lines(day), csv_lines(day))
    huge = [huge_lines(fmt, day)] if draw(st.integers(0, 4)) == 0 else []
    line = mostly(own, other, *huge, weight=16)
    ends = st.sampled_from(["\n"] * 8 + ["\r\n", "\r\r\n", "\n\n", "\n \t\n", "\n\r\n", "\r\n\t\r\n"])
    size = draw(st.sampled_from([0, 6, 16, 30]))  # 0: an empty file
    lines = draw(st.lists(st.tuples(line, ends), min_size=size // 2, max_size=size))
    text = "".join(line + end for line, end in lines)
    if draw(st.booleans()):  # no LF after the last line
        text = text.rstrip("\n")
    data = text.encode()
    for _ in range(draw(st.integers(0, 3))):  # a byte sequence that is not UTF-8, or a lone CR
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([*NOT_UTF8, b"\r", "\ufeff".encode()])) + data[at:]
    if draw(st.integers(0, 3)) == 0:
        data = validator.BOM + data
    return folder_format, exchange, name, data


@st.composite
def landing_zones(draw):
    day = draw(st.sampled_from(DAYS))
    files = [draw(landing_file(i, day)) for i in range(draw(st.sampled_from([1, 2, 3, 4, 5])))]
    return day, files


# ------------------------------------------------------------------ the pipeline and the oracle
def write_zone(root: Path, day: str, files) -> list[tuple[Path, str, bytes]]:
    """Writes the files; returns (path, format, bytes) of those ingestion must read."""
    read = []
    for folder_format, exchange, name, data in files:
        path = root / folder_format / day / exchange / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if not validator.is_hidden(name):
            read.append((path, validator.file_format(name, folder_format), data))
    return read


def expected_fates(day: str, files: list[tuple[Path, str, bytes]]) -> tuple[Counter, Counter]:
    fates, read = Counter(), Counter()
    for path, fmt, data in files:
        for line in validator.non_blank_lines(data):
            fate = validator.judge(line, fmt, day)
            fates[(fate.kind, str(path), fate.reason, fate.values)] += 1
            read[str(path)] += 1
    return fates, read


TRADE_VALUES = ["symbol", "exchange", "event_tm", "event_seq_nb", "arrival_tm", "trade_pr", "trade_size",
                "execution_id"]  # fmt: skip
QUOTE_VALUES = ["symbol", "exchange", "event_tm", "event_seq_nb", "arrival_tm", "bid_pr", "bid_size",
                "ask_pr", "ask_size"]  # fmt: skip


def tagged(kind: str, frame: DataFrame) -> DataFrame:
    """The rows of one output with their `kind` and whether all their text is UTF-8.

    Spark hands text to Python through Java strings, which would hide bytes that are not UTF-8."""
    text = [F.coalesce(F.is_valid_utf8(c), F.lit(True)) for c, t in frame.dtypes if t == "string"]
    return frame.select("*", F.lit(kind).alias("kind"), reduce(lambda a, b: a & b, text).alias("utf8"))


def ingest(spark, landing_root: Path, day: str) -> list:
    """Ingestion's reading and parsing of the day: every output row and every line read, in one Spark job."""
    listing = LandingZone(spark, str(landing_root)).listing(day)
    lines = read_landing_lines(spark, listing)
    parsed = parsing.parse_lines(lines, day)
    # As the asset does, the lines read are counted from a second read that leaves bytes as they are.
    counted = read_landing_lines(spark, listing, repair_utf8=False)

    outputs = [
        tagged("trade", parsing.select_trades(parsed)),
        tagged("quote", parsing.select_quotes(parsed)),
        tagged("reject", parsing.select_rejects(parsed)),
        tagged("read", counted.select("source_file")),
    ]
    # As the asset does, the lines are parsed once for the three outputs.
    parsed.persist(StorageLevel.MEMORY_ONLY)
    try:
        return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), outputs).collect()
    finally:
        parsed.unpersist()


def actual_fates(rows) -> tuple[Counter, Counter]:
    fates, read = Counter(), Counter()
    for row in rows:
        assert row["utf8"], f"text that is not UTF-8 was written: {row}"
        path = urlparse(row["source_file"]).path
        if row["kind"] == "read":
            read[path] += 1
        elif row["kind"] == "reject":
            fates[("reject", path, row["reason"], (row["line"],))] += 1
        else:
            columns = TRADE_VALUES if row["kind"] == "trade" else QUOTE_VALUES
            fates[(row["kind"], path, None, tuple(row[c] for c in columns))] += 1
    return fates, read


def describe(counter: Counter, limit: int = 8) -> str:
    shown = [f"  {n} x {kind} {reason or ''} {Path(path).name} {str(values)[:300]}"
             for (kind, path, reason, values), n in list(counter.items())[:limit]]  # fmt: skip
    return "\n".join(shown + ([f"  ... {len(counter) - limit} more"] if len(counter) > limit else []))


def check_zone(spark, day: str, files) -> None:
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        root = Path(folder)
        read = write_zone(root, day, files)
        expected, expected_read = expected_fates(day, [(p.resolve(), fmt, data) for p, fmt, data in read])
        actual, actual_read = actual_fates(ingest(spark, root, day))
    # The identity, counted without the parser: non-blank lines read per file.
    assert actual_read == expected_read, f"lines read per file: {actual_read} != {expected_read}"
    missing, unexpected = expected - actual, actual - expected
    assert not missing and not unexpected, (
        f"the validator expects, the parser did not give:\n{describe(missing)}\n"
        f"the parser gave, the validator does not expect:\n{describe(unexpected)}"
    )


@settings(PROFILE)
@given(zone=landing_zones())
def test_every_line_lands_where_the_validator_says(spark, zone):
    day, files = zone
    check_zone(spark, day, files)


# ------------------------------------------------------------------ regressions, one per parser bug found
DAY = "2020-08-05"
CSV_TRADE = f"{DAY},{DAY} 09:30:00,T,{{symbol}},{DAY} 10:00:00.5,1,NYSE,{{price}},100"
JSON_TRADE = (
    f'{{{{"trade_dt":"{DAY}","file_tm":"{DAY} 09:30:00","event_type":"T","symbol":"S",'
    f'"event_tm":"{DAY} 10:00:00","event_seq_nb":1,"exchange":"NASDAQ","price":{{price}},"size":100{{extra}}}}}}'
)


def outcomes(spark, files: list[tuple[str, str, bytes]], day: str = DAY) -> list[tuple]:
    """(kind, reason, symbol, price or line) of every output row, for files given as (format, name, bytes)."""
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        zone = [(fmt, "NYSE" if fmt == "csv" else "NASDAQ", name, data) for fmt, name, data in files]
        write_zone(Path(folder), day, zone)
        rows = ingest(spark, Path(folder), day)
    return sorted(
        (r["kind"], r["reason"], r["symbol"], r["trade_pr"] if r["kind"] == "trade" else r["line"])
        for r in rows
        if r["kind"] != "read"
    )


def test_bytes_that_are_not_utf8_become_one_replacement_per_maximal_subpart(spark):
    # A UTF-16 surrogate (ED A0 80) is three ill-formed bytes: three U+FFFD, as Python and the
    # Unicode Standard read it; Java's decoder (Spark's old path) made one of it.
    trade = CSV_TRADE.format(symbol="S{}", price="1.5").encode().replace(b"{}", b"\xed\xa0\x80")
    reject = b"\xc0\x80," + b"x" * 3
    got = outcomes(spark, [("csv", "a.txt", trade + b"\n" + reject + b"\n")])
    assert got == [("reject", "field_count", None, "\ufffd\ufffd,xxx"), ("trade", None, "S\ufffd\ufffd\ufffd", 1.5)]


def test_json_numbers_of_more_than_1000_digits_are_numbers_not_bad_json(spark):
    # RFC 8259 numbers have no length limit, nor have lines (SPEC.md §2); Jackson's default stops at 1,000.
    lines = [
        JSON_TRADE.format(price="1.5", extra=',"note":1' + "0" * 1200),  # valid: the extra key is ignored
        JSON_TRADE.format(price="1" + "0" * 1200, extra=""),  # too large for a double
        JSON_TRADE.format(price="0." + "0" * 1200 + "25", extra=""),  # a (tiny) double
    ]
    got = outcomes(spark, [("json", "a.txt", "\n".join(lines).encode())])
    assert [(kind, reason, price if kind == "trade" else None) for kind, reason, _, price in got] == [
        ("reject", "bad_number", None), ("trade", None, 0.0), ("trade", None, 1.5)
    ]


def test_a_huge_invalid_price_is_rejected_in_linear_time(spark):
    """A price of 200,000 digits and a letter: the old price pattern backtracked quadratically (minutes)."""
    line = CSV_TRADE.format(symbol="S", price="1" * 200_000 + "x")
    group = "hostile-huge-price"
    spark.sparkContext.setJobGroup(group, "a huge invalid price", interruptOnCancel=True)
    watchdog = threading.Timer(60, spark.sparkContext.cancelJobGroup, [group])
    watchdog.start()
    try:
        got = outcomes(spark, [("csv", "a.txt", line.encode())])
    except Py4JJavaError as error:
        if "cancel" not in str(error).lower():
            raise
        pytest.fail("a 200,000-digit invalid price took over 60 s: the price check backtracks")
    finally:
        watchdog.cancel()
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    assert got == [("reject", "bad_number", None, line)]


def test_the_validator_judges_a_huge_invalid_price_in_linear_time():
    """The oracle's own price pattern must not backtrack either: `[0-9]+\\.?[0-9]*` tried every split
    of a digit run, so 100,000 digits and a letter took minutes per line (and CI an hour)."""
    line = CSV_TRADE.format(symbol="S", price="1" * 200_000 + "x")
    script = ("import sys; from capstone_assets_tests import validator; "
              "print(validator.judge(sys.stdin.read(), 'csv', sys.argv[1]).reason)")  # fmt: skip
    try:
        done = subprocess.run([sys.executable, "-c", script, DAY], input=line, capture_output=True, text=True,
                              cwd=REPO, timeout=60, check=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the validator took over 60 s on a 200,000-digit invalid price: its pattern backtracks")
    assert done.stdout.strip() == "bad_number"


# ------------------------------------------------------------------ the asset itself on one hostile day
def hostile_day() -> list[tuple[str, str, str, bytes]]:
    """Every kind of damage at least once, in the files of one day (2020-08-05)."""
    trade = CSV_TRADE.format(symbol="SYMA", price="77.5")
    quote = f"{DAY},{DAY} 09:30:00,Q,SYMA,{DAY} 10:00:00.123456789,2,NYSE,77.25,100,77.75,200"
    csv = [
        trade, quote, trade[:40], trade + ",1", trade.rsplit(",", 1)[0], trade.replace("SYMA", '"SY,MA"'),
        trade.replace(",T,", ",X,"), trade.replace(f"{DAY},", "2020-02-30,", 1),
        trade.replace("10:00:00.5", "10:00:00.1234567891"), trade.replace("10:00:00.5", "24:00:00"),
        trade.replace("77.5", "1e400"), trade.replace("77.5", "NaN"), trade.replace("77.5", "-0"),
        trade.replace("77.5", "١٢٣"), trade.replace("SYMA", "SY\rMA"), trade.replace(",1,", ",-7,"),
    ]  # fmt: skip
    json_trade = JSON_TRADE.format(price="77.5", extra="")
    json_lines = [
        json_trade, JSON_TRADE.format(price='"12,3"', extra=""), JSON_TRADE.format(price="true", extra=""),
        json_trade.replace('"size":100', '"size":1.5'), JSON_TRADE.format(price="[77.5]", extra=""),
        JSON_TRADE.format(price="77.5", extra=',"meta":{"a":[1,{"b":null}]},"price":"80"'),
        json_trade[:-1] + ",}", json_trade + " x", JSON_TRADE.format(price="77.5", extra=',"x":"' + "x" * 1_000_000 + '"'),
    ]  # fmt: skip
    return [
        ("csv", "NYSE", "batch-1.txt", validator.BOM + "\r\n".join(csv).encode().replace(b"SYMA,2", b"SY\xffMA,2", 1)),
        ("csv", "NYSE", "batch-2.txt", b""),
        ("csv", "NYSE", "_SUCCESS", b"not data\n"),
        ("json", "NASDAQ", "batch-1.txt", "\n \t\n".join(json_lines).encode() + b"\n\xed\xa0\x80\n"),
        ("json", "NASDAQ", "batch-2.csv", (trade.replace("NYSE", "NASDAQ") + "\r\r\n").encode()),
    ]


def test_the_ingestion_asset_writes_a_hostile_day_as_the_validator_says(spark, tmp_path):
    files = hostile_day()
    read = write_zone(tmp_path / "landing", DAY, files)
    expected, expected_read = expected_fates(DAY, [(p.resolve(), fmt, data) for p, fmt, data in read])
    assert {kind for kind, *_ in expected} == {"trade", "quote", "reject"}
    lake = LakeResource(landing_root=str(tmp_path / "landing"), lake_root=str(tmp_path / "lake"))
    resources = {
        "spark": spark_resource("local[2]"), "lake": lake, "quality": QualityResource(),
        "tracker": TrackerResource(url=f"sqlite:///{tmp_path / 'tracker.db'}"),
    }  # fmt: skip
    result = materialize([assets.ingestion], partition_key=DAY, resources=resources, instance=DagsterInstance.ephemeral())
    assert result.success
    written = [
        tagged(kind, spark.read.parquet(lake.day_path(asset, DAY))).collect()
        for kind, asset in (("trade", "raw_trades"), ("quote", "raw_quotes"), ("reject", "raw_rejects"))
    ]
    actual, _ = actual_fates([row for rows in written for row in rows])
    assert actual == expected, f"missing:\n{describe(expected - actual)}\nunexpected:\n{describe(actual - expected)}"
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "raw_rejects"]
    lines_per_exchange = Counter()
    for path, lines in expected_read.items():
        lines_per_exchange[Path(path).parent.name] += lines
    assert {ex: c["lines"] for ex, c in event.materialization.metadata["per_exchange"].value.items()} == dict(
        lines_per_exchange
    )
