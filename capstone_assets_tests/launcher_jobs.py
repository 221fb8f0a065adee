"""Jobs the launcher tests run in real run workers (importable by module path in a fork)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dagster import in_process_executor, job, op


@op(config_schema={"out": str})
def note_the_worker(context) -> None:
    """Writes the worker's pid and whether it found pandas already imported, then finishes."""
    out = Path(context.op_config["out"])
    (out / "worker.txt").write_text(f"{os.getpid()}\n{'pandas' in sys.modules}\n")


@op(config_schema={"out": str})
def wait_for_release(context) -> None:
    """Writes its pid, then waits (up to 5 minutes) for a file the test never writes."""
    out = Path(context.op_config["out"])
    (out / "waiting.txt").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not (out / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


@job(executor_def=in_process_executor)  # as the project's jobs: the steps in the run worker
def quick_job():
    note_the_worker()


@job(executor_def=in_process_executor)  # as the project's jobs: the steps in the run worker
def waiting_job():
    wait_for_release()
