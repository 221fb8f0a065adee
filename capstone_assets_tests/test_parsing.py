"""SPEC.md §1–§2 on hand-written lines: parsing, every reject reason and its precedence."""

import datetime as dt
import json
import math

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from capstone_assets import schemas
from capstone_assets.transforms import parsing

DAY = "2020-08-05"
NYSE_FILE = "file:/landing/csv/2020-08-05/NYSE/part-0.txt"
NASDAQ_FILE = "file:/landing/json/2020-08-05/NASDAQ/part-0.txt"
CSV_TRADE = "2020-08-05,2020-08-05 09:30:00.0,T,SYMA,2020-08-05 10:00:00.123,7,NYSE,77.5,100"
CSV_QUOTE = "2020-08-05,2020-08-05 09:30:00.0,Q,SYMA,2020-08-05 10:00:00.5,8,NYSE,77.25,100,77.75,200"


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def raw_frame(spark, values: list[str], fmt: str = "csv", source: str | None = None):
    source = source or (NYSE_FILE if fmt == "csv" else NASDAQ_FILE)
    return spark.createDataFrame(
        [(v, source, fmt) for v in values], "value string, source_file string, format string"
    )


def parse(spark, values: list[str], fmt: str = "csv"):
    return parsing.parse_lines(parsing.clean_lines(raw_frame(spark, values, fmt)), DAY)


def reasons(spark, values: list[str], fmt: str = "csv") -> list[str | None]:
    """Each value's reject reason (None when valid); each value is a source file of its own."""
    folder = "file:/landing/csv/2020-08-05/NYSE" if fmt == "csv" else "file:/landing/json/2020-08-05/NASDAQ"
    raw = spark.createDataFrame(
        [(v, f"{folder}/line-{i}.txt", fmt) for i, v in enumerate(values)],
        "value string, source_file string, format string",
    )
    parsed = parsing.parse_lines(parsing.clean_lines(raw), DAY)
    by_file = {r["source_file"]: r["reason"] for r in parsed.select("source_file", "reason").collect()}
    return [by_file[f"{folder}/line-{i}.txt"] for i in range(len(values))]


def trade(**fields) -> str:
    values = dict(zip(
        ["trade_dt", "arrival_tm", "rec_type", "symbol", "event_tm", "seq", "exchange", "price", "size"],
        CSV_TRADE.split(","), strict=True,
    ))  # fmt: skip
    values.update(fields)
    return ",".join(values.values())


def test_csv_trade_and_quote_parse_to_the_common_schema(spark):
    parsed = parse(spark, [CSV_TRADE, CSV_QUOTE])
    expected_trade = Row(
        symbol="SYMA", exchange="NYSE", event_tm=ts("2020-08-05 10:00:00.123"), event_seq_nb=7,
        arrival_tm=ts("2020-08-05 09:30:00"), trade_pr=77.5, trade_size=100, execution_id=None,
        source_file=NYSE_FILE,
    )  # fmt: skip
    assertDataFrameEqual(parsing.select_trades(parsed), [expected_trade])
    expected_quote = Row(
        symbol="SYMA", exchange="NYSE", event_tm=ts("2020-08-05 10:00:00.5"), event_seq_nb=8,
        arrival_tm=ts("2020-08-05 09:30:00"), bid_pr=77.25, bid_size=100, ask_pr=77.75, ask_size=200,
        source_file=NYSE_FILE,
    )  # fmt: skip
    assertDataFrameEqual(parsing.select_quotes(parsed), [expected_quote])
    assert parsing.select_trades(parsed).schema.fieldNames() == schemas.RAW_TRADES.fieldNames()
    assert parsing.select_quotes(parsed).schema.fieldNames() == schemas.RAW_QUOTES.fieldNames()
    assert parsing.select_rejects(parsed).count() == 0


def test_json_trade_reads_price_and_size_and_quoted_numbers(spark):
    line = (
        '{"trade_dt":"2020-08-05","file_tm":"2020-08-05 09:30:00.000","event_type":"T","symbol":"SYMA",'
        '"event_tm":"2020-08-05 10:00:00.1","event_seq_nb":"3","exchange":"NASDAQ","execution_id":"X1",'
        '"price":"77.5","size":100}'
    )
    quote = (
        '{"trade_dt":"2020-08-05","file_tm":"2020-08-05 09:30:00","event_type":"Q","symbol":"SYMB",'
        '"event_tm":"2020-08-05 10:00:00","event_seq_nb":4,"exchange":"NASDAQ",'
        '"bid_pr":33.5,"bid_size":100,"ask_pr":1.5e1,"ask_size":"200"}'
    )
    parsed = parse(spark, [line, quote], fmt="json")
    assertDataFrameEqual(
        parsing.select_trades(parsed),
        [Row(symbol="SYMA", exchange="NASDAQ", event_tm=ts("2020-08-05 10:00:00.1"), event_seq_nb=3,
             arrival_tm=ts("2020-08-05 09:30:00"), trade_pr=77.5, trade_size=100, execution_id="X1",
             source_file=NASDAQ_FILE)],
    )  # fmt: skip
    assertDataFrameEqual(
        parsing.select_quotes(parsed),
        [Row(symbol="SYMB", exchange="NASDAQ", event_tm=ts("2020-08-05 10:00:00"), event_seq_nb=4,
             arrival_tm=ts("2020-08-05 09:30:00"), bid_pr=33.5, bid_size=100, ask_pr=15.0, ask_size=200,
             source_file=NASDAQ_FILE)],
    )  # fmt: skip


def test_a_negative_zero_price_is_loaded_as_zero(spark):
    """`-0` is a valid, non-negative price (SPEC.md §2) and the same value as `0`: stored as +0.0,
    so a re-sent record with `-0` and one with `0` are equal, and the load's tie-break never falls
    to line order (SPEC.md §3: values only)."""
    zeros = ["-0", "-0.0", "-.0", "-0e5", "-0.000E-3"]
    quote = CSV_QUOTE.split(",")
    lines = [trade(price=z, seq=str(i)) for i, z in enumerate(zeros)]
    lines += [",".join(quote[:7] + [z, "100", z, "200"]) for z in zeros]
    parsed = parse(spark, lines)
    json_line = json.dumps({"trade_dt": DAY, "file_tm": f"{DAY} 09:30:00", "event_type": "T", "symbol": "S",
                            "event_tm": f"{DAY} 10:00:00", "event_seq_nb": 1, "exchange": "NASDAQ", "size": 1})
    json_lines = [json_line[:-1] + f', "price": {z}}}' for z in ("-0", "-0.0", "-0e1")]
    json_lines.append(json_line[:-1] + ', "price": "-0"}')
    parsed_json = parse(spark, json_lines, fmt="json")
    assert parsing.select_rejects(parsed).count() == parsing.select_rejects(parsed_json).count() == 0
    prices = [r["trade_pr"] for frame in (parsed, parsed_json) for r in parsing.select_trades(frame).collect()]
    prices += [r[c] for r in parsing.select_quotes(parsed).collect() for c in ("bid_pr", "ask_pr")]
    assert len(prices) == len(zeros) * 3 + len(json_lines)
    assert [math.copysign(1.0, p) for p in prices] == [1.0] * len(prices), prices


@pytest.mark.parametrize(
    "fraction, expected",
    [
        ("", "2020-08-05 10:00:00"),
        (".1", "2020-08-05 10:00:00.1"),
        (".12", "2020-08-05 10:00:00.12"),
        (".123", "2020-08-05 10:00:00.123"),
        (".123456", "2020-08-05 10:00:00.123456"),
        (".1234567", "2020-08-05 10:00:00.123456"),  # kept to the microsecond
        (".123456789", "2020-08-05 10:00:00.123456"),
        (".999999999", "2020-08-05 10:00:00.999999"),  # truncated, not rounded
    ],
)
def test_timestamp_fractions_of_one_to_nine_digits(spark, fraction, expected):
    parsed = parse(spark, [trade(event_tm=f"2020-08-05 10:00:00{fraction}")])
    assert [r["event_tm"] for r in parsing.select_trades(parsed).collect()] == [ts(expected)]


def test_crlf_and_blank_lines(spark, tmp_path):
    folder = tmp_path / "csv" / DAY / "NYSE"
    folder.mkdir(parents=True)
    (folder / "batch.txt").write_bytes(
        (CSV_TRADE + "\r\n" + "\n" + "  \t \r\n" + CSV_QUOTE + "\r\r\n").encode()
    )
    raw = (
        spark.read.option("lineSep", "\n")
        .text(str(folder / "batch.txt"))
        .selectExpr("value", "_metadata.file_path as source_file", "'csv' as format")
    )
    lines = parsing.clean_lines(raw)
    # Blank lines are not read; one trailing CR is removed, a second one stays.
    assert sorted(r["line"] for r in lines.collect()) == sorted([CSV_TRADE, CSV_QUOTE + "\r"])
    [counted] = parsing.rows_by_source_file(lines, "lines").collect()
    assert (counted["dataset"], counted["rows"]) == ("lines", 2)
    parsed = parsing.parse_lines(lines, DAY)
    assert parsing.select_trades(parsed).count() == 1
    assert [r["reason"] for r in parsing.select_rejects(parsed).collect()] == ["bad_number"]


CSV_REJECTS = [
    # field_count: fewer than 3 fields comes before everything
    ("2020-08-05,x", "field_count"),
    # bad_rec_type, before the field count for the type
    (trade(rec_type="X"), "bad_rec_type"),
    (trade(rec_type="t"), "bad_rec_type"),
    (CSV_TRADE + ",1", "field_count"),
    (CSV_QUOTE.rsplit(",", 1)[0], "field_count"),
    # missing_key before bad_timestamp
    (trade(symbol="", event_tm="garbage"), "missing_key"),
    (trade(exchange=""), "missing_key"),
    (trade(event_tm=""), "missing_key"),
    (trade(seq=""), "missing_key"),
    # bad_timestamp: trade_dt, arrival_tm, event_tm
    (trade(trade_dt="2020-8-05"), "bad_timestamp"),
    (trade(trade_dt="2020-02-30"), "bad_timestamp"),
    (trade(arrival_tm="2020-08-05T09:30:00"), "bad_timestamp"),
    (trade(event_tm="2020-08-05 24:00:00"), "bad_timestamp"),
    (trade(event_tm="2020-08-05 10:00:00Z"), "bad_timestamp"),
    (trade(event_tm="2020-08-05 10:00:00.1234567890"), "bad_timestamp"),
    (trade(event_tm="2020-08-05 9:00:00"), "bad_timestamp"),
    (trade(event_tm=" 2020-08-05 10:00:00"), "bad_timestamp"),
    (trade(event_tm="2021-02-29 10:00:00"), "bad_timestamp"),
    (trade(event_tm="2020-08-05 10:00:00", price="-1"), "negative_value"),
    # bad_number before negative_value
    (trade(seq="1.0"), "bad_number"),
    (trade(size="100.0"), "bad_number"),
    (trade(size="99999999999"), "bad_number"),
    (trade(price="NaN"), "bad_number"),
    (trade(price="Infinity"), "bad_number"),
    (trade(price="1e400"), "bad_number"),
    (trade(price="_"), "bad_number"),
    (trade(price=" 5"), "bad_number"),
    (trade(price=""), "bad_number"),
    (trade(price="٣"), "bad_number"),
    (trade(price="-5", size="x"), "bad_number"),
    # negative_value before trade_dt_mismatch
    (trade(price="-0.5"), "negative_value"),
    (trade(size="-100"), "negative_value"),
    (trade(price="-1", trade_dt="2020-08-04"), "negative_value"),
    (trade(trade_dt="2020-08-04"), "trade_dt_mismatch"),
    # valid
    (trade(price="-0.0"), None),
    (trade(seq="-3"), None),
    (trade(symbol=" "), None),
    (trade(price="5."), None),
    (trade(price=".5"), None),
    (trade(price="+1.5e2"), None),
]


def test_every_csv_reject_reason_and_its_precedence(spark):
    assert reasons(spark, [line for line, _ in CSV_REJECTS]) == [r for _, r in CSV_REJECTS]


JSON_OK = (
    '{"trade_dt":"2020-08-05","file_tm":"2020-08-05 09:30:00","event_type":"T","symbol":"SYMA",'
    '"event_tm":"2020-08-05 10:00:00","event_seq_nb":1,"exchange":"NASDAQ","price":77.5,"size":100}'
)


def json_trade(drop: tuple[str, ...] = (), **fields) -> str:
    obj = json.loads(JSON_OK)
    for key in drop:
        obj.pop(key)
    obj.update(fields)
    return json.dumps(obj)


JSON_REJECTS = [
    (JSON_OK[:-1] + ",}", "bad_json"),  # trailing comma
    (JSON_OK + " x", "bad_json"),  # trailing content
    (JSON_OK + JSON_OK, "bad_json"),  # two objects on one line
    ("[" + JSON_OK + "]", "bad_json"),
    ('"text"', "bad_json"),
    ("null", "bad_json"),
    (JSON_OK.replace('"', "'"), "bad_json"),
    ('{"event_type":"T", "price": NaN}', "bad_json"),
    (json_trade(drop=("event_type",)), "bad_rec_type"),
    (json_trade(event_type="q"), "bad_rec_type"),
    ("{}", "bad_rec_type"),
    (json_trade(drop=("symbol",), event_tm="bad"), "missing_key"),
    (json_trade(exchange=""), "missing_key"),
    (json_trade(event_seq_nb=None), "missing_key"),
    (json_trade(drop=("trade_dt",)), "bad_timestamp"),
    (json_trade(drop=("file_tm",)), "bad_timestamp"),
    (json_trade(drop=("price",), trade_pr=77.5), "bad_number"),
    (json_trade(price=None), "bad_number"),
    (json_trade(price=True), "bad_number"),
    (json_trade(price=[1]), "bad_number"),
    (json_trade(price={"v": 1}), "bad_number"),
    (json_trade(price="77.5x"), "bad_number"),
    (json_trade(size=100.0), "bad_number"),
    (json_trade(event_seq_nb=1.5), "bad_number"),
    (json_trade(price=-1), "negative_value"),
    (json_trade(trade_dt="2020-08-06"), "trade_dt_mismatch"),
    (json_trade(price="77.5", size="100"), None),
    (json_trade(event_seq_nb=-1), None),
    ("  " + JSON_OK + " ", None),
]


def test_every_json_reject_reason_and_its_precedence(spark):
    assert reasons(spark, [line for line, _ in JSON_REJECTS], fmt="json") == [r for _, r in JSON_REJECTS]


# SPEC.md §2: a line is exactly one JSON object (RFC 8259), whitespace around it allowed.
JSON_ONE_OBJECT = [
    # trailing content that the JSON reader skips once the first object is closed
    (JSON_OK + ' ,"x":1}', "bad_json"),
    ('{"a":1} ,"record":' + JSON_OK + "}", "bad_json"),
    (JSON_OK + " " + JSON_OK, "bad_json"),
    (JSON_OK + "," + JSON_OK, "bad_json"),
    (JSON_OK + "]", "bad_json"),
    (JSON_OK + "] {}", "bad_json"),
    ('{"a":1}] [' + JSON_OK, "bad_json"),
    (JSON_OK + " //x", "bad_json"),
    (JSON_OK + ' {"s":"}"}', "bad_json"),
    (JSON_OK + ' "}"', "bad_json"),
    (JSON_OK + "}", "bad_json"),
    (JSON_OK[:-1] + ',"price":77.5,}', "bad_json"),  # a trailing comma inside
    (JSON_OK[:-1] + ',"note":"unclosed}', "bad_json"),
    (JSON_OK[:-1] + ',"note":"\\\\"}"}', "bad_json"),  # an escaped backslash, then the quote ends it
    # one object: nested values, braces and escaped quotes in strings, a key given twice
    (JSON_OK[:-1] + ',"meta":{"a":[1,{"b":"}"}],"c":{}},"tags":[[],[{}]]}', None),
    (JSON_OK[:-1] + ',"note":"} ,\\"x\\":1} {[","n2":"\\\\"}', None),
    (JSON_OK[:-1] + ',"price":-1,"price":77.5}', None),
    (JSON_OK[:-1] + ',"_corrupt_record":"x","record":{}}', None),  # Spark's own names are keys too
    (JSON_OK[:-1] + ',"price":-1}', "negative_value"),  # the last value counts
    ("\t " + JSON_OK + "\t", None),
]


def test_a_json_line_is_exactly_one_object(spark):
    lines = [line for line, _ in JSON_ONE_OBJECT]
    assert reasons(spark, lines, fmt="json") == [r for _, r in JSON_ONE_OBJECT]


def test_json_strings_keep_braces_and_quotes_and_a_repeated_key_takes_its_last_value(spark):
    line = JSON_OK[:-1] + ',"symbol":"A}\\"{B","price":1,"meta":{"price":2},"price":"77.25"}'
    assert json.loads(line)["symbol"] == 'A}"{B' and json.loads(line)["price"] == "77.25"
    parsed = parse(spark, [line], fmt="json")
    assertDataFrameEqual(
        parsing.select_trades(parsed),
        [Row(symbol='A}"{B', exchange="NASDAQ", event_tm=ts("2020-08-05 10:00:00"), event_seq_nb=1,
             arrival_tm=ts("2020-08-05 09:30:00"), trade_pr=77.25, trade_size=100, execution_id=None,
             source_file=NASDAQ_FILE)],
    )  # fmt: skip


def test_rejects_keep_the_verbatim_line_and_source(spark):
    bad = trade(price="abc")
    parsed = parse(spark, [bad, CSV_TRADE])
    assertDataFrameEqual(
        parsing.select_rejects(parsed), [Row(line=bad, source_file=NYSE_FILE, reason="bad_number")]
    )


def test_conservation_identity_is_counted_without_the_parser(spark):
    values = [line for line, _ in CSV_REJECTS] + [CSV_QUOTE, "   ", "\t"]
    lines = parsing.clean_lines(raw_frame(spark, values))
    parsed = parsing.parse_lines(lines, DAY)
    [read] = parsing.rows_by_source_file(lines, "lines").collect()
    outputs = sum(
        select(parsed).count()
        for select in (parsing.select_trades, parsing.select_quotes, parsing.select_rejects)
    )
    assert read["rows"] == len(values) - 2 == outputs
    assert read["source_file"] == NYSE_FILE


# Strings on both sides of every rule the fast checks stand in for a regex on (and of the flat JSON shape).
TRICKY = [
    "", " ", "\t", " \t ", "\r", " \r", "\r\r", "\r \r", "\n", "\u00a0", "x", " x ", "a\r", "a\r\r", "\ra",
    "{}", " {} ", "\t{\"a\":1}\r\n", "{\n\"a\": 1\n}", "{", "}", "}{", "{}}", "{{}", "{[]}", "{\"a\":\"{\"}",
    "{\"a\":[1]}", " { \"a\" : \"b\" } x", "x{}", "{}x", "{\"é\":\"😀\"}", "\r{}\r", "{} \u00a0",
]


def test_fast_string_checks_agree_with_the_grammars_regexes(spark):
    frame = spark.createDataFrame([(s,) for s in TRICKY], "s string")
    value = F.col("s")
    rows = frame.select(
        "s",
        (parsing.is_blank(value) == value.rlike(parsing.BLANK_RE)).alias("blank"),
        (parsing.without_trailing_cr(value) == F.regexp_replace(value, "\r\\z", "")).alias("cr"),
    ).collect()
    assert [r["s"] for r in rows if not (r["blank"] and r["cr"])] == []
    # Both sides of each rule are in the list.
    assert {r["s"] for r in frame.where(parsing.is_flat_object(value)).collect()} >= {"{}", " {} "}
