"""Landing lines -> typed trade and quote records, or rejects (SPEC.md §1–§2).

Every check is a column expression: SPEC.md's grammar is matched with a
regular expression first and only then cast (`try_cast`, never `cast`, so a
bad line never aborts the job in ANSI mode). The first failing check names the
reject reason, in SPEC.md's order.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from capstone_assets import schemas

# `\z` is the absolute end: Java's `$` would also match before a trailing CR.
INT_RE = r"^[+-]?[0-9]+\z"
# Possessive loops: a long digit string that fails at its end is rejected in linear
# time (greedy ones backtrack quadratically, minutes for 100,000 digits).
PRICE_RE = r"^[+-]?+([0-9]++\.?+[0-9]*+|\.[0-9]++)([eE][+-]?+[0-9]++)?+\z"
DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\z"
TIMESTAMP_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?\z"
BLANK_RE = r"^[ \t]*\z"
# RFC 8259 whitespace around one object (see `_is_one_json_object`); the flat
# shape has no bracket inside, as every record of the feed.
JSON_OBJECT_SHAPE_RE = r"(?s)^[ \t\r\n]*\{.*\}[ \t\r\n]*\z"
JSON_FLAT_OBJECT_SHAPE_RE = r"^[ \t\r\n]*+\{[^\[\]{}]*+\}[ \t\r\n]*+\z"
# A JSON string literal; possessive loops keep Java's regex from recursing per character.
JSON_STRING_RE = r'(?s)"[^"\\]*+(?:\\.[^"\\]*+)*+"'
JSON_BRACKET_RE = r"[\[\]{}]"
JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": "_corrupt_record",
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
    "allowNumericLeadingZeros": "false",
    "allowUnquotedControlChars": "false",
    # RFC 8259 numbers and SPEC.md lines have no length limit (Jackson stops at 1,000 digits).
    "maxNumLen": str(2**31 - 1),
}

CSV_TRADE_FIELDS = 9
CSV_QUOTE_FIELDS = 11


def without_trailing_cr(value: Column) -> Column:
    """The text without one trailing CR (a CRLF line ending); string functions, not a regex."""
    return F.when(F.endswith(value, F.lit("\r")), F.substring(value, F.lit(1), F.length(value) - 1)).otherwise(
        value
    )


def is_blank(line: Column) -> Column:
    """Empty or only spaces and tabs (SPEC.md §2), as `BLANK_RE` says. A line that starts with
    neither is decided on its first byte; only the others meet the regex. (`btrim` with a trim
    string indexes every character of every line into two fresh arrays: a JFR profile of a
    4 M-event day found it the costliest function of ingestion.)"""
    starts_blank = F.startswith(line, F.lit(" ")) | F.startswith(line, F.lit("\t"))
    return F.when(starts_blank, line.rlike(BLANK_RE)).otherwise(line == F.lit(""))


def clean_lines(raw: DataFrame) -> DataFrame:
    """Text-reader rows (`value`, `source_file`, `format`) -> non-blank landing lines.

    One trailing CR is removed; blank lines (empty or only spaces/tabs) are
    dropped and not counted.
    """
    line = without_trailing_cr(F.col("value"))
    return raw.select(line.alias("line"), "source_file", "format").where(~is_blank(F.col("line")))


def rows_by_source_file(dataset: DataFrame, name: str) -> DataFrame:
    """Rows per source file, labelled `name`: lines read (counted without the parser) or an output's rows."""
    return (
        dataset.groupBy("source_file")
        .agg(F.count(F.lit(1)).alias("rows"))
        .select("source_file", F.lit(name).alias("dataset"), "rows")
    )


def _parse_int(raw: Column) -> Column:
    return F.when(raw.rlike(INT_RE), raw.try_cast("int"))


def _parse_price(raw: Column) -> Column:
    value = F.when(raw.rlike(PRICE_RE), raw.try_cast("double"))
    # The grammar admits 1e400, which casts to infinity: too large for a double. `-0` is the
    # value 0 (SPEC.md §2), stored as +0.0: Spark's ordering ties -0.0 with 0.0, and a stored
    # sign would let line order pick which of two re-sent records is loaded (§3: values only).
    return F.when(value == F.lit(0.0), F.lit(0.0)).when(F.abs(value) != F.lit(float("inf")), value)


def _parse_timestamp(raw: Column) -> Column:
    """`yyyy-MM-dd HH:mm:ss[.f{1,9}]` -> TIMESTAMP_NTZ, truncated to the microsecond.

    The regex holds the grammar; the cast then rejects impossible dates (02-30) and drops the
    digits after the sixth of the fraction itself (no `substring` copy of every timestamp).
    A string cast to TIMESTAMP_NTZ involves no time zone.
    """
    return F.when(raw.rlike(TIMESTAMP_RE), raw.try_cast("timestamp_ntz"))


def _parse_date(raw: Column) -> Column:
    return F.when(raw.rlike(DATE_RE), raw.try_cast("date"))


def _is_one_json_object(line: Column) -> Column:
    """Whether a JSON line whose first value is a valid object holds nothing else.

    Spark's JSON reader stops after the first value and ignores the rest, so
    the rest is checked here, without a second parse. The line must end in `}`
    and that `}` must close the object that opens the line: with the string
    literals removed, the brackets left are the structure, and the depth after
    each of them must stay above zero until the last. Anything after the first
    object would hold a bracket of its own or end in something else. A line
    with no bracket inside its braces (every record of the feed) passes on its
    shape alone: its only `}` is its last character.
    """
    brackets = F.regexp_extract_all(F.regexp_replace(line, JSON_STRING_RE, ""), F.lit(JSON_BRACKET_RE), 0)
    after_the_first = F.slice(brackets, 2, F.greatest(F.size(brackets) - 2, F.lit(0)))

    def depth_after(depth: Column, bracket: Column) -> Column:
        # Once the opening object has closed (depth 0), it stays closed.
        return F.when(depth <= 0, 0).when(bracket.isin("{", "["), depth + 1).otherwise(depth - 1)

    closes_at_the_end = F.aggregate(after_the_first, F.lit(1), depth_after) > 0
    # `when` evaluates the fold only for the lines that need it (an `|` would not).
    return F.when(is_flat_object(line), True).otherwise(line.rlike(JSON_OBJECT_SHAPE_RE) & closes_at_the_end)


def is_flat_object(line: Column) -> Column:
    """Around JSON whitespace, `{` first, `}` last and no other of `{}[]`: one possessive regex.
    (String functions did it slower: `translate` looks every character up in a map of boxed
    strings, `btrim` indexes every character; a JFR profile of a 4 M-event day found them the
    two costliest functions of ingestion.)"""
    return line.rlike(JSON_FLAT_OBJECT_SHAPE_RE)


def _raw_fields(lines: DataFrame) -> DataFrame:
    """Each line's fields as strings, from CSV positions or JSON keys."""
    is_csv = F.col("format") == "csv"
    # The line is the value of `record`: Spark's `_corrupt_record` then never
    # meets a key of the line. It is still one parse per line.
    wrapped = F.concat(F.lit('{"record":'), F.col("line"), F.lit("}"))
    # Split or parse each line once, into columns of their own: referenced by
    # every field below, they are not re-evaluated per field.
    split = lines.select(
        "line",
        "source_file",
        is_csv.alias("is_csv"),
        F.when(is_csv, F.split("line", ",", -1)).alias("csv"),
        F.when(~is_csv, F.from_json(wrapped, schemas.JSON_LINE, JSON_OPTIONS)).alias("json"),
    )
    record = F.col("json.record")

    def field(position: int | None, key: str | None) -> Column:
        from_csv = F.get("csv", position) if position is not None else F.lit(None)
        from_json = record[key] if key is not None else F.lit(None)
        return F.when(F.col("is_csv"), from_csv).otherwise(from_json)

    json_is_trade = record["event_type"] == "T"
    bad_json = ~F.col("is_csv") & (
        F.col("json._corrupt_record").isNotNull() | record.isNull() | ~_is_one_json_object(F.col("line"))
    )
    return split.select(
        "line",
        "source_file",
        "is_csv",
        F.size("csv").alias("csv_fields"),
        bad_json.alias("is_bad_json"),
        field(0, "trade_dt").alias("s_trade_dt"),
        field(1, "file_tm").alias("s_arrival_tm"),
        field(2, "event_type").alias("rec_type"),
        field(3, "symbol").alias("symbol"),
        field(4, "event_tm").alias("s_event_tm"),
        field(5, "event_seq_nb").alias("s_event_seq_nb"),
        field(6, "exchange").alias("exchange"),
        field(None, "execution_id").alias("execution_id"),
        F.when(F.col("is_csv"), F.get("csv", 7))
        .when(json_is_trade, record["price"])
        .otherwise(record["bid_pr"])
        .alias("s_price_1"),
        F.when(F.col("is_csv"), F.get("csv", 8))
        .when(json_is_trade, record["size"])
        .otherwise(record["bid_size"])
        .alias("s_size_1"),
        field(9, "ask_pr").alias("s_price_2"),
        field(10, "ask_size").alias("s_size_2"),
    )


def _reject_reason(trade_dt: str) -> Column:
    is_trade = F.col("rec_type") == "T"
    is_quote = F.col("rec_type") == "Q"
    csv_too_short = F.col("is_csv") & (F.col("csv_fields") < 3)
    bad_rec_type = F.col("rec_type").isNull() | ~F.col("rec_type").isin("T", "Q")
    wrong_field_count = F.col("is_csv") & (
        (is_trade & (F.col("csv_fields") != CSV_TRADE_FIELDS))
        | (is_quote & (F.col("csv_fields") != CSV_QUOTE_FIELDS))
    )
    missing_key = F.lit(False)
    for key in ("symbol", "exchange", "s_event_tm", "s_event_seq_nb"):
        missing_key = missing_key | F.col(key).isNull() | (F.col(key) == "")
    bad_timestamp = F.col("trade_dt").isNull() | F.col("arrival_tm").isNull() | F.col("event_tm").isNull()
    bad_number = (
        F.col("event_seq_nb").isNull()
        | F.col("price_1").isNull()
        | F.col("size_1").isNull()
        | (is_quote & (F.col("price_2").isNull() | F.col("size_2").isNull()))
    )
    negative_value = (
        (F.col("price_1") < 0)
        | (F.col("size_1") < 0)
        | (is_quote & ((F.col("price_2") < 0) | (F.col("size_2") < 0)))
    )
    dt_mismatch = F.col("trade_dt") != F.lit(trade_dt).cast("date")
    return (
        F.when(csv_too_short, "field_count")
        .when(F.col("is_bad_json"), "bad_json")
        .when(bad_rec_type, "bad_rec_type")
        .when(wrong_field_count, "field_count")
        .when(missing_key, "missing_key")
        .when(bad_timestamp, "bad_timestamp")
        .when(bad_number, "bad_number")
        .when(negative_value, "negative_value")
        .when(dt_mismatch, "trade_dt_mismatch")
    )


PARSED_COLUMNS = (
    "reason", "rec_type", "line", "source_file", "symbol", "exchange", "event_tm", "event_seq_nb",
    "arrival_tm", "price_1", "size_1", "price_2", "size_2", "execution_id",
)  # fmt: skip


def parse_lines(lines: DataFrame, trade_dt: str) -> DataFrame:
    """Landing lines of one folder date -> one row per line, `reason` null when valid.

    Feed the result to `select_trades`, `select_quotes` and `select_rejects`.
    Only rejects keep their text in `line`: it is all a reject is, and the rest
    do not need it (a smaller frame to cache).
    """
    typed = _raw_fields(lines).select(
        "*",
        _parse_date(F.col("s_trade_dt")).alias("trade_dt"),
        _parse_timestamp(F.col("s_arrival_tm")).alias("arrival_tm"),
        _parse_timestamp(F.col("s_event_tm")).alias("event_tm"),
        _parse_int(F.col("s_event_seq_nb")).alias("event_seq_nb"),
        _parse_price(F.col("s_price_1")).alias("price_1"),
        _parse_int(F.col("s_size_1")).alias("size_1"),
        _parse_price(F.col("s_price_2")).alias("price_2"),
        _parse_int(F.col("s_size_2")).alias("size_2"),
    )
    with_reason = typed.select("*", _reject_reason(trade_dt).alias("reason"))
    reject_text = F.when(F.col("reason").isNotNull(), F.col("line")).alias("line")
    return with_reason.select(*(reject_text if c == "line" else c for c in PARSED_COLUMNS))


def select_trades(parsed: DataFrame) -> DataFrame:
    valid_trade = F.col("reason").isNull() & (F.col("rec_type") == "T")
    return parsed.where(valid_trade).select(
        "symbol", "exchange", "event_tm", "event_seq_nb", "arrival_tm",
        F.col("price_1").alias("trade_pr"),
        F.col("size_1").alias("trade_size"),
        "execution_id",
        "source_file",
    )  # fmt: skip


def select_quotes(parsed: DataFrame) -> DataFrame:
    valid_quote = F.col("reason").isNull() & (F.col("rec_type") == "Q")
    return parsed.where(valid_quote).select(
        "symbol", "exchange", "event_tm", "event_seq_nb", "arrival_tm",
        F.col("price_1").alias("bid_pr"),
        F.col("size_1").alias("bid_size"),
        F.col("price_2").alias("ask_pr"),
        F.col("size_2").alias("ask_size"),
        "source_file",
    )  # fmt: skip


def select_rejects(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNotNull()).select("line", "source_file", "reason")
