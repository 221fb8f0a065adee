"""The benchmark's yardstick: SPEC.md §2–§4 in DuckDB SQL, over the same landing files.

    .venv/bin/python benchmarks/duckdb_reference.py LANDING_ROOT OUT_DIR DAY [PREVIOUS_DAY]

Writes `OUT_DIR/<asset>/trade_dt=<DAY>/data.parquet` for the six assets, as the
platform's lake does. It shares no code with `capstone_assets`: it is a second
reading of SPEC.md, and `make bench` checks that both produce the same rows
before it trusts either time. Frozen: tuning the platform never touches it, so
the ratio of the two times stays a fair measure on a machine whose absolute
speed drifts.

What it leaves out of SPEC.md (the benchmark's data never has it): bytes that
are not UTF-8 (DuckDB refuses to read them), a lone CR inside a line (DuckDB's
CSV reader ends the line there), the byte 0x01 in a line (its delimiter), and a
JSON key given twice (DuckDB's parser takes the first value, SPEC.md the last).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import duckdb

ASSETS = ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes", "eod_quote_report")

INT = r"[+-]?[0-9]+"
PRICE = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2} ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"


def _sql_int(column: str) -> str:
    return f"CASE WHEN regexp_full_match({column}, '{INT}') THEN TRY_CAST({column} AS INTEGER) END"


def _sql_price(column: str) -> str:
    value = f"TRY_CAST({column} AS DOUBLE)"
    return f"CASE WHEN regexp_full_match({column}, '{PRICE}') AND NOT isinf({value}) THEN {value} END"


def _sql_timestamp(column: str) -> str:
    return f"CASE WHEN regexp_full_match({column}, '{TIMESTAMP}') THEN TRY_CAST(left({column}, 26) AS TIMESTAMP) END"


def _sql_date(column: str) -> str:
    return f"CASE WHEN regexp_full_match({column}, '{DATE}') THEN TRY_CAST({column} AS DATE) END"


def landing_files(root: Path, day: str) -> list[tuple[str, str]]:
    """(path, format) of the day's data files: `<root>/<format>/<day>/<exchange>/<file>`, the root
    resolved as the platform resolves a local one (links followed), so `source_file` names agree."""
    found, root = [], root.resolve()
    for fmt in ("csv", "json"):
        for path in sorted((root / fmt / day).glob("*/*")):
            if path.is_file() and not path.name.startswith((".", "_")):
                suffix = path.suffix.lower()
                read_as = "csv" if suffix == ".csv" else "json" if suffix in (".json", ".jsonl") else fmt
                found.append((str(path), read_as))
    return found


def ingest(con: duckdb.DuckDBPyConnection, root: Path, day: str) -> None:
    """Tables `raw_trades`, `raw_quotes`, `raw_rejects` of the day (SPEC.md §2)."""
    files = landing_files(root, day)
    con.execute("CREATE OR REPLACE TEMP TABLE landing_files (path VARCHAR, fmt VARCHAR)")
    if files:
        con.executemany("INSERT INTO landing_files VALUES (?, ?)", files)
    # DuckDB's CSV reader as a line reader (one column, no quoting, a delimiter the feed never
    # holds): parallel and fast. It drops a file's UTF-8 BOM and a line's CR before the LF.
    lines = (
        """read_csv($paths, columns = {'value': 'VARCHAR'}, delim = chr(1), quote = '', escape = '',
                    comment = '', header = false, filename = true, new_line = '\\n', auto_detect = false,
                    strict_mode = false, null_padding = false, max_line_size = 2147483647)"""
        if files
        else "(SELECT NULL::VARCHAR AS filename, NULL::VARCHAR AS value WHERE false)"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE lines AS
        SELECT t.filename AS source_file, f.fmt, t.value AS line
        FROM {lines} t JOIN landing_files f ON f.path = t.filename
        WHERE NOT regexp_full_match(t.value, '[ \t]*')
        """,
        {"paths": [p for p, _ in files]} if files else {},
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE fields AS
        WITH split AS (
            SELECT line, source_file, fmt = 'csv' AS is_csv,
                   CASE WHEN fmt = 'csv' THEN string_split(line, ',') END AS f,
                   CASE WHEN fmt = 'json' THEN coalesce(json_valid(line) AND json_type(line) = 'OBJECT'
                       -- DuckDB's parser also takes trailing commas, NaN and Infinity: RFC 8259 does not.
                       AND NOT regexp_matches(regexp_replace(line, '"(?:[^"\\\\]|\\\\.)*"', '""', 'g'),
                                              ',[ \t\r\n]*[}}\\]]|NaN|Infinity'), false) END AS ok_json
            FROM lines
        )
        SELECT line, source_file, is_csv, len(f) AS n, coalesce(NOT ok_json, false) AS bad_json,
            CASE WHEN is_csv THEN f[1] WHEN ok_json THEN json_extract_string(line, '$.trade_dt') END AS s_trade_dt,
            CASE WHEN is_csv THEN f[2] WHEN ok_json THEN json_extract_string(line, '$.file_tm') END AS s_arrival_tm,
            CASE WHEN is_csv THEN f[3] WHEN ok_json THEN json_extract_string(line, '$.event_type') END AS rec_type,
            CASE WHEN is_csv THEN f[4] WHEN ok_json THEN json_extract_string(line, '$.symbol') END AS symbol,
            CASE WHEN is_csv THEN f[5] WHEN ok_json THEN json_extract_string(line, '$.event_tm') END AS s_event_tm,
            CASE WHEN is_csv THEN f[6] WHEN ok_json THEN json_extract_string(line, '$.event_seq_nb') END AS s_seq,
            CASE WHEN is_csv THEN f[7] WHEN ok_json THEN json_extract_string(line, '$.exchange') END AS exchange,
            CASE WHEN ok_json THEN json_extract_string(line, '$.execution_id') END AS execution_id,
            CASE WHEN is_csv THEN f[8] WHEN ok_json AND json_extract_string(line, '$.event_type') = 'T'
                 THEN json_extract_string(line, '$.price') WHEN ok_json THEN json_extract_string(line, '$.bid_pr') END AS s_p1,
            CASE WHEN is_csv THEN f[9] WHEN ok_json AND json_extract_string(line, '$.event_type') = 'T'
                 THEN json_extract_string(line, '$.size') WHEN ok_json THEN json_extract_string(line, '$.bid_size') END AS s_s1,
            CASE WHEN is_csv THEN f[10] WHEN ok_json THEN json_extract_string(line, '$.ask_pr') END AS s_p2,
            CASE WHEN is_csv THEN f[11] WHEN ok_json THEN json_extract_string(line, '$.ask_size') END AS s_s2
        FROM split
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE parsed AS
        WITH typed AS (
            SELECT *, {_sql_date('s_trade_dt')} AS trade_dt, {_sql_timestamp('s_arrival_tm')} AS arrival_tm,
                   {_sql_timestamp('s_event_tm')} AS event_tm, {_sql_int('s_seq')} AS event_seq_nb,
                   {_sql_price('s_p1')} AS p1, {_sql_int('s_s1')} AS s1,
                   {_sql_price('s_p2')} AS p2, {_sql_int('s_s2')} AS s2
            FROM fields
        )
        SELECT *, CASE
            WHEN is_csv AND n < 3 THEN 'field_count'
            WHEN bad_json THEN 'bad_json'
            WHEN rec_type IS NULL OR rec_type NOT IN ('T', 'Q') THEN 'bad_rec_type'
            WHEN is_csv AND ((rec_type = 'T' AND n <> 9) OR (rec_type = 'Q' AND n <> 11)) THEN 'field_count'
            WHEN coalesce(symbol, '') = '' OR coalesce(exchange, '') = '' OR coalesce(s_event_tm, '') = ''
                 OR coalesce(s_seq, '') = '' THEN 'missing_key'
            WHEN trade_dt IS NULL OR arrival_tm IS NULL OR event_tm IS NULL THEN 'bad_timestamp'
            WHEN event_seq_nb IS NULL OR p1 IS NULL OR s1 IS NULL
                 OR (rec_type = 'Q' AND (p2 IS NULL OR s2 IS NULL)) THEN 'bad_number'
            WHEN p1 < 0 OR s1 < 0 OR (rec_type = 'Q' AND (p2 < 0 OR s2 < 0)) THEN 'negative_value'
            WHEN trade_dt <> DATE '{day}' THEN 'trade_dt_mismatch'
        END AS reason
        FROM typed
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE raw_trades AS
        SELECT symbol, exchange, event_tm, event_seq_nb, arrival_tm, p1 AS trade_pr, s1 AS trade_size,
               execution_id, source_file
        FROM parsed WHERE reason IS NULL AND rec_type = 'T'
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE raw_quotes AS
        SELECT symbol, exchange, event_tm, event_seq_nb, arrival_tm, p1 AS bid_pr, s1 AS bid_size,
               p2 AS ask_pr, s2 AS ask_size, source_file
        FROM parsed WHERE reason IS NULL AND rec_type = 'Q'
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE raw_rejects AS SELECT line, source_file, reason FROM parsed WHERE reason IS NOT NULL"
    )


def load(con: duckdb.DuckDBPyConnection) -> None:
    """Tables `trades` and `quotes`: the latest arrival per record key (SPEC.md §3)."""
    key = "symbol, exchange, event_tm, event_seq_nb"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE trades AS
        SELECT * FROM raw_trades
        QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY arrival_tm DESC, trade_pr DESC, trade_size DESC) = 1
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE quotes AS
        SELECT * FROM raw_quotes
        QUALIFY row_number() OVER (PARTITION BY {key}
                                   ORDER BY arrival_tm DESC, bid_pr DESC, bid_size DESC, ask_pr DESC, ask_size DESC) = 1
        """
    )


def previous_day_with_trades(out: Path, day: str) -> str | None:
    """The most recent of D−1 … D−7 whose loaded trades (in `out`) hold a row."""
    date = dt.date.fromisoformat(day)
    for back in range(1, 8):
        candidate = (date - dt.timedelta(days=back)).isoformat()
        folder = out / "trades" / f"trade_dt={candidate}"
        if folder.is_dir() and duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0]:
            return candidate
    return None


def report(con: duckdb.DuckDBPyConnection, out: Path, day: str) -> None:
    """Table `eod_quote_report` of the day (SPEC.md §4): one timeline per pair, forward-filled."""
    previous = previous_day_with_trades(out, day)
    mov_avg = """avg(trade_pr) OVER (PARTITION BY symbol, exchange ORDER BY event_tm
                                     RANGE BETWEEN INTERVAL 30 MINUTES PRECEDING AND CURRENT ROW)"""
    if previous is None:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE previous_close (symbol VARCHAR, exchange VARCHAR, close_pr DOUBLE, close_mov_avg DOUBLE)"
        )
    else:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE previous_close AS
            SELECT symbol, exchange, trade_pr AS close_pr, mov_avg_pr AS close_mov_avg FROM (
                SELECT *, {mov_avg} AS mov_avg_pr FROM read_parquet('{out}/trades/trade_dt={previous}/*.parquet')
            )
            QUALIFY row_number() OVER (PARTITION BY symbol, exchange ORDER BY event_tm DESC, event_seq_nb DESC) = 1
            """
        )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE eod_quote_report AS
        WITH timeline AS (
            SELECT symbol, exchange, event_tm, event_seq_nb, 0 AS is_quote, trade_pr, {mov_avg} AS mov_avg_pr,
                   NULL::DOUBLE AS bid_pr, NULL::INTEGER AS bid_size, NULL::DOUBLE AS ask_pr, NULL::INTEGER AS ask_size
            FROM trades
            UNION ALL
            SELECT symbol, exchange, event_tm, event_seq_nb, 1, NULL, NULL, bid_pr, bid_size, ask_pr, ask_size
            FROM quotes
        ), filled AS (
            SELECT *,
                last_value(trade_pr IGNORE NULLS) OVER w AS last_pr,
                last_value(mov_avg_pr IGNORE NULLS) OVER w AS last_avg
            FROM timeline
            WINDOW w AS (PARTITION BY symbol, exchange ORDER BY event_tm, is_quote, event_seq_nb
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        )
        SELECT f.symbol, f.exchange, f.event_tm, f.event_seq_nb, f.bid_pr, f.bid_size, f.ask_pr, f.ask_size,
               coalesce(f.last_pr, p.close_pr) AS last_trade_pr,
               CASE WHEN f.last_pr IS NULL THEN p.close_mov_avg ELSE f.last_avg END AS last_mov_avg_pr,
               p.close_pr, f.bid_pr - p.close_pr AS bid_pr_mv, f.ask_pr - p.close_pr AS ask_pr_mv
        FROM filled f LEFT JOIN previous_close p USING (symbol, exchange)
        WHERE f.is_quote = 1
        """
    )


def run_day(root: Path, out: Path, day: str, threads: int | None = None) -> dict[str, float]:
    """Ingests, loads and reports one day; seconds per stage (written files included)."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {threads}")
    seconds = {}
    started = time.perf_counter()
    ingest(con, root, day)
    for asset in ASSETS[:3]:
        _copy(con, out, asset, day)
    seconds["ingestion"] = time.perf_counter() - started
    started = time.perf_counter()
    load(con)
    for asset in ("trades", "quotes"):
        _copy(con, out, asset, day)
    seconds["eod_load"] = time.perf_counter() - started
    started = time.perf_counter()
    report(con, out, day)
    _copy(con, out, "eod_quote_report", day)
    seconds["report"] = time.perf_counter() - started
    con.close()
    return seconds


def _copy(con: duckdb.DuckDBPyConnection, out: Path, asset: str, day: str) -> None:
    folder = out / asset / f"trade_dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY {asset} TO '{folder}/data.parquet' (FORMAT parquet)")


def main(argv: list[str]) -> int:
    root, out, *days = argv
    for day in sorted(days):  # the previous day first
        seconds = run_day(Path(root), Path(out), day)
        print(day, {stage: round(s, 2) for stage, s in seconds.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
