"""An independent reading of SPEC.md §1–§2 in plain Python: the oracle of the hostile-input tests.

It shares no code with `capstone_assets` (not even its regular expressions or
reason names) and works on the bytes of a landing file, line by line, the way
SPEC.md describes it rather than the way Spark reads it: `bytes.decode` with
U+FFFD for each maximal ill-formed subpart, `str.split("\n")`, Python's `json`
(a repeated key keeps its last value) with the number tokens kept as text.

Where SPEC.md is silent, the generators of `test_hostile_input.py` stay away
and the choice made here is only a guess:
* a year 0000 (`0000-08-05`) is `bad_timestamp` here (Python has no year 0;
  Spark accepts it);
* a JSON float, array or object where text belongs (symbol, exchange,
  execution_id) raises `Unspecified`;
* JSON nested deeper than Python's recursion limit is `bad_json` here, and so
  it is for Spark's JSON reader beyond 1,000 levels; keys of over 50,000
  characters are not generated (Spark's JSON reader rejects them).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # sizes and event_seq_nb are 32-bit ints (schemas)
# re.ASCII: `\d` and friends would accept ١٢٣; the patterns below spell [0-9] anyway.
_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
# `[0-9]+(\.[0-9]*)?`, not `[0-9]+\.?[0-9]*` (the same strings): the latter tries every split of
# a digit run before it fails, quadratic in a line of 100,000 digits and a letter.
_PRICE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?", re.ASCII
)
CSV_FIELDS = {"T": 9, "Q": 11}


class Unspecified(Exception):
    """Input on which SPEC.md does not rule; the generators must not produce it."""


class JsonNumber(str):
    """A JSON number, kept as its token: SPEC.md judges the token, not a float of it."""


@dataclass(frozen=True)
class Fate:
    """Where one non-blank line lands: `trade`, `quote` or `reject` (with its reason)."""

    kind: str
    reason: str | None = None
    values: tuple = ()


class Rejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------ files, lines
def is_hidden(file_name: str) -> bool:
    return file_name.startswith((".", "_"))


def file_format(file_name: str, folder_format: str) -> str:
    name = file_name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".json", ".jsonl")):
        return "json"
    return folder_format


def non_blank_lines(data: bytes) -> list[str]:
    """A landing file's bytes -> its non-blank lines, as SPEC.md §1–§2 define them."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    text = data.decode("utf-8", errors="replace")  # each maximal ill-formed subpart -> U+FFFD
    lines = text.split("\n")  # LF only: a lone CR is data
    if lines[-1] == "":
        lines.pop()  # the LF that ends the last line does not start another
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return [line for line in lines if line.strip(" \t") != ""]


# ------------------------------------------------------------------ values
def parse_date(text) -> dt.date:
    match = _DATE.fullmatch(text) if isinstance(text, str) and not isinstance(text, JsonNumber) else None
    if not match:
        raise Rejected("bad_timestamp")
    try:
        return dt.date(*(int(g) for g in match.groups()))
    except ValueError:  # 2020-02-30, month 13, and year 0000 (SPEC-silent, see above)
        raise Rejected("bad_timestamp") from None


def parse_timestamp(text) -> dt.datetime:
    match = _TIMESTAMP.fullmatch(text) if isinstance(text, str) and not isinstance(text, JsonNumber) else None
    if not match:
        raise Rejected("bad_timestamp")
    *fields, fraction = match.groups()
    micros = int((fraction or "")[:6].ljust(6, "0"))  # 7 to 9 digits are truncated, never rounded
    try:
        return dt.datetime(*(int(f) for f in fields), micros)  # hour 24, second 60, 02-30 raise
    except ValueError:
        raise Rejected("bad_timestamp") from None


def parse_int(value) -> int:
    if not isinstance(value, str) or not _INT.fullmatch(value):  # bool, list, dict, null
        raise Rejected("bad_number")
    number = int(value)
    if not INT_MIN <= number <= INT_MAX:
        raise Rejected("bad_number")
    return number


def parse_price(value) -> float:
    if not isinstance(value, str) or not _PRICE.fullmatch(value):
        raise Rejected("bad_number")
    number = float(value)
    if math.isinf(number):  # 1e400: too large for a double
        raise Rejected("bad_number")
    return number


def text_of(value) -> str | None:
    """A JSON value where SPEC.md wants text (symbol, exchange, execution_id)."""
    if value is None or isinstance(value, str) and not isinstance(value, JsonNumber):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, JsonNumber) and re.fullmatch(r"-?[1-9][0-9]*|0", value):
        return str(value)
    # SPEC-silent: a float, an array or an object where text belongs.
    raise Unspecified(f"{value!r} where SPEC.md expects text")


# ------------------------------------------------------------------ records
def _judge(rec_type: str, raw: dict, day: dt.date) -> Fate:
    """SPEC.md §2's checks after the record type, in its order."""
    for key in ("symbol", "exchange", "event_tm", "event_seq_nb"):
        if raw[key] is None or raw[key] == "":
            raise Rejected("missing_key")
    trade_dt = parse_date(raw["trade_dt"])
    arrival_tm = parse_timestamp(raw["arrival_tm"])
    event_tm = parse_timestamp(raw["event_tm"])
    event_seq_nb = parse_int(raw["event_seq_nb"])
    amounts = [parse_price(raw["price_1"]), parse_int(raw["size_1"])]
    if rec_type == "Q":
        amounts += [parse_price(raw["price_2"]), parse_int(raw["size_2"])]
    if any(a < 0 for a in amounts):  # -0.0 < 0 is False: not negative
        raise Rejected("negative_value")
    if trade_dt != day:
        raise Rejected("trade_dt_mismatch")
    key = (raw["symbol"], raw["exchange"], event_tm, event_seq_nb, arrival_tm)
    if rec_type == "T":
        return Fate("trade", None, (*key, *amounts, raw["execution_id"]))
    return Fate("quote", None, (*key, *amounts))


def judge_csv(line: str, day: dt.date) -> Fate:
    fields = line.split(",")  # no quoting in the feed: a quote is a character like any other
    if len(fields) < 3:
        raise Rejected("field_count")
    rec_type = fields[2]
    if rec_type not in CSV_FIELDS:
        raise Rejected("bad_rec_type")
    if len(fields) != CSV_FIELDS[rec_type]:
        raise Rejected("field_count")
    names = ["trade_dt", "arrival_tm", "rec_type", "symbol", "event_tm", "event_seq_nb", "exchange",
             "price_1", "size_1", "price_2", "size_2", "execution_id"]  # fmt: skip
    return _judge(rec_type, {name: fields[i] if i < len(fields) else None for i, name in enumerate(names)}, day)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def judge_json(line: str, day: dt.date) -> Fate:
    try:
        record = json.loads(
            line, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=_reject_constant
        )  # a repeated key keeps its last value; anything after the object raises
    except (ValueError, RecursionError):
        raise Rejected("bad_json") from None
    if not isinstance(record, dict):
        raise Rejected("bad_json")
    rec_type = record.get("event_type")
    if rec_type not in ("T", "Q") or isinstance(rec_type, JsonNumber):
        raise Rejected("bad_rec_type")
    is_trade = rec_type == "T"
    raw = {
        "trade_dt": record.get("trade_dt"),
        "arrival_tm": record.get("file_tm"),
        "symbol": text_of(record.get("symbol")),
        "event_tm": record.get("event_tm"),
        "event_seq_nb": record.get("event_seq_nb"),
        "exchange": text_of(record.get("exchange")),
        "execution_id": text_of(record.get("execution_id")) if is_trade else None,
        "price_1": record.get("price" if is_trade else "bid_pr"),
        "size_1": record.get("size" if is_trade else "bid_size"),
        "price_2": record.get("ask_pr"),
        "size_2": record.get("ask_size"),
    }
    return _judge(rec_type, raw, day)


def judge(line: str, fmt: str, day: str) -> Fate:
    """One non-blank line's fate under SPEC.md §2."""
    try:
        return (judge_csv if fmt == "csv" else judge_json)(line, dt.date.fromisoformat(day))
    except Rejected as rejected:
        return Fate("reject", rejected.reason, (line,))
