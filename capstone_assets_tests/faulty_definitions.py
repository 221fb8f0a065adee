"""The real definitions with one fault that a test switches on: duplicated trades for one day.

A test serves this module as its code location (the webserver, the daemon and the
runs they launch all load it) and writes a trading day into the file named by
`CAPSTONE_TEST_FAULT_FILE`: from then on, the end-of-day load of that day emits
every trade twice, so the blocking check `unique_record_key_trades` fails. The
production code has no fault hooks; only this test module patches it.
"""

import os
from pathlib import Path

from capstone_assets.transforms import load

_latest_trades = load.latest_trades


def _faulty_latest_trades(raw_trades):
    trades = _latest_trades(raw_trades)
    fault = Path(os.environ.get("CAPSTONE_TEST_FAULT_FILE", "/nonexistent"))
    if not fault.is_file():
        return trades
    day = fault.read_text().strip()
    return trades.unionByName(trades.where(f"cast(event_tm as date) = date'{day}'"))


load.latest_trades = _faulty_latest_trades

from capstone_assets.definitions import defs  # noqa: E402  (after the patch: the assets read load.*)

__all__ = ["defs"]
