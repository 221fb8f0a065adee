"""Column contracts of every dataset, declared once (SPEC.md §2–§4).

Timestamps are naive exchange wall-clock times (TIMESTAMP_NTZ, microsecond
precision). Prices are doubles: 15 significant digits survive a round trip.
`trade_dt` is not stored in the files: it is the `trade_dt=` folder, and the
lake reader puts it back as a DATE column.
"""

from pyspark.sql import types as T

TRADE_DT = T.StructField("trade_dt", T.DateType(), False)

_EVENT_KEY = [
    T.StructField("symbol", T.StringType(), False),
    T.StructField("exchange", T.StringType(), False),
    T.StructField("event_tm", T.TimestampNTZType(), False),
    T.StructField("event_seq_nb", T.IntegerType(), False),
    T.StructField("arrival_tm", T.TimestampNTZType(), False),
]
_SOURCE = T.StructField("source_file", T.StringType(), False)

RAW_TRADES = T.StructType(
    [
        *_EVENT_KEY,
        T.StructField("trade_pr", T.DoubleType(), False),
        T.StructField("trade_size", T.IntegerType(), False),
        T.StructField("execution_id", T.StringType(), True),  # JSON only
        _SOURCE,
    ]
)

RAW_QUOTES = T.StructType(
    [
        *_EVENT_KEY,
        T.StructField("bid_pr", T.DoubleType(), False),
        T.StructField("bid_size", T.IntegerType(), False),
        T.StructField("ask_pr", T.DoubleType(), False),
        T.StructField("ask_size", T.IntegerType(), False),
        _SOURCE,
    ]
)

RAW_REJECTS = T.StructType(
    [
        T.StructField("line", T.StringType(), False),
        _SOURCE,
        T.StructField("reason", T.StringType(), False),
    ]
)

# The end-of-day tables keep the raw columns: one row per record key.
TRADES = RAW_TRADES
QUOTES = RAW_QUOTES

EOD_QUOTE_REPORT = T.StructType(
    [
        TRADE_DT,
        T.StructField("symbol", T.StringType(), False),
        T.StructField("exchange", T.StringType(), False),
        T.StructField("event_tm", T.TimestampNTZType(), False),
        T.StructField("event_seq_nb", T.IntegerType(), False),
        T.StructField("bid_pr", T.DoubleType(), False),
        T.StructField("bid_size", T.IntegerType(), False),
        T.StructField("ask_pr", T.DoubleType(), False),
        T.StructField("ask_size", T.IntegerType(), False),
        T.StructField("last_trade_pr", T.DoubleType(), True),
        T.StructField("last_mov_avg_pr", T.DoubleType(), True),
        T.StructField("close_pr", T.DoubleType(), True),
        T.StructField("bid_pr_mv", T.DoubleType(), True),
        T.StructField("ask_pr_mv", T.DoubleType(), True),
    ]
)

# Each lake dataset's columns, by asset name (`trade_dt` is the folder).
BY_DATASET = {
    "raw_trades": RAW_TRADES,
    "raw_quotes": RAW_QUOTES,
    "raw_rejects": RAW_REJECTS,
    "trades": TRADES,
    "quotes": QUOTES,
}

# Every JSON field is read as a string so that SPEC.md's grammar decides, not
# Spark's coercion (`from_json` with numeric types nulls a quoted number). The
# parser reads each line as the value of `record` in an outer object, so a line
# with a key `_corrupt_record` is still read as data.
JSON_FIELDS = (
    "trade_dt",
    "file_tm",
    "event_type",
    "symbol",
    "event_tm",
    "event_seq_nb",
    "exchange",
    "execution_id",
    "price",
    "size",
    "bid_pr",
    "bid_size",
    "ask_pr",
    "ask_size",
)
JSON_LINE = T.StructType(
    [
        T.StructField("record", T.StructType([T.StructField(f, T.StringType()) for f in JSON_FIELDS])),
        T.StructField("_corrupt_record", T.StringType()),
    ]
)

REJECT_REASONS = (
    "field_count",
    "bad_rec_type",
    "missing_key",
    "bad_timestamp",
    "bad_number",
    "negative_value",
    "trade_dt_mismatch",
    "bad_json",
)
