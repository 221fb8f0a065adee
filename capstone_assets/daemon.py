"""`capstone-daemon`: `dagster-daemon` with a backfill loop of a chosen interval.

    CAPSTONE_BACKFILL_INTERVAL_SECONDS=5 capstone-daemon run -w workspace.yaml

Dagster's backfill daemon looks at its backfills every 30 seconds, a constant
(`dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS` in Dagster 1.13)
that no configuration reaches. A backfill launches a day's report only on the
loop after the day's preprocessing ended, so each wave of runs waits up to
that long: on short days most of a backfill's time. This command sets the
interval from `CAPSTONE_BACKFILL_INTERVAL_SECONDS` (default 30, Dagster's own)
and then is `dagster-daemon`, with the same arguments.
"""

from __future__ import annotations

import os
import sys

ENV = "CAPSTONE_BACKFILL_INTERVAL_SECONDS"
DEFAULT_SECONDS = 30


def interval_seconds(environ=os.environ) -> int:
    text = environ.get(ENV, "").strip() or str(DEFAULT_SECONDS)
    if not text.isdecimal() or not 1 <= int(text) <= 3600:
        raise SystemExit(f"{ENV}={text!r}: expected a whole number of seconds from 1 to 3600")
    return int(text)


def main() -> None:
    seconds = interval_seconds()
    from dagster._daemon import controller
    from dagster._daemon.cli import main as dagster_daemon

    # Read by the backfill loop at its start (`from ... import` inside the function), so set first.
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = seconds
    sys.argv[0] = "dagster-daemon"
    sys.exit(dagster_daemon())


if __name__ == "__main__":
    main()
