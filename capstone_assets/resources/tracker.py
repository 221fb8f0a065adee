"""The job status tracker (SPEC.md §6): one row per workflow and trading day.

SQLAlchemy Core gives one code path for PostgreSQL (production) and the
embedded SQLite default. A claim is one `INSERT … ON CONFLICT DO UPDATE …
WHERE` statement: it takes the row only when no live run holds it, so two runs
racing for the same day cannot both win.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.dialects import postgresql, sqlite

RUNNING, SUCCESS, FAILED = "running", "success", "failed"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()
_CREATED: set[tuple[str, str]] = set()


class JobRefused(Exception):
    """A run may not start: another live run holds the day, or a gate is closed."""


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    workflow: str
    trade_dt: str
    status: str
    updated_time: dt.datetime
    run_id: str | None
    host: str | None
    pid: int | None
    pid_started: str | None
    heartbeat_time: dt.datetime | None
    started_time: dt.datetime | None
    attempts: int
    error: str | None

    def describe(self) -> str:
        return (
            f"{self.job_id} is {self.status}: run {self.run_id} on {self.host} pid {self.pid}, "
            f"started {self.started_time:%Y-%m-%d %H:%M:%S} UTC, "
            f"last heartbeat {self.heartbeat_time:%Y-%m-%d %H:%M:%S} UTC"
        )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in () may hold spaces


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether the process that made a claim still runs: the pid exists and, where the
    start time was recorded, it is the same process (not a later one given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or process_start(pid) in (None, started)


def job_id(workflow: str, day: str) -> str:
    return f"{workflow}_{day}"


def _engine(url: str) -> sa.Engine:
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs = (
                {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
            )
            engine = sa.create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            _ENGINES[url] = engine
        return _ENGINES[url]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (the UI, the operator command) in while a run writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


class TrackerResource(ConfigurableResource):
    """Records the status of every workflow run per trading day, and arbitrates claims."""

    url: str = Field(description="SQLAlchemy URL: postgresql+psycopg2://… or sqlite:///path")
    table: str = Field(default="job_tracker", description="Table name (an SQL identifier)")
    heartbeat_seconds: float = Field(default=15.0, description="How often a running job proves it is alive")
    stale_after_seconds: float = Field(
        default=180.0, description="A claim from another host whose heartbeat is older than this is stale"
    )

    def check_config(self) -> None:
        """Raises ValueError with a message an operator can act on. Called on first use:
        at definition time the fields may still be unresolved `EnvVar`s."""
        if not _IDENTIFIER.match(self.table):
            raise ValueError(
                f"tracker table '{self.table}' is not a valid SQL identifier ([A-Za-z_][A-Za-z0-9_]*)"
            )
        if self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "CAPSTONE_TRACKER_URL must name the driver: use postgresql+psycopg2://… "
                "(SQLAlchemy maps postgresql:// to psycopg 3, which is not installed)"
            )
        if not self.url.startswith(("postgresql+psycopg2://", "sqlite:///")):
            raise ValueError(
                f"unsupported CAPSTONE_TRACKER_URL '{self.url}': use postgresql+psycopg2://… or sqlite:///…"
            )

    # ------------------------------------------------------------------ schema
    def _table(self) -> sa.Table:
        return sa.Table(
            self.table,
            sa.MetaData(),
            sa.Column("job_id", sa.String(64), primary_key=True),
            sa.Column("workflow", sa.String(32), nullable=False),
            sa.Column("trade_dt", sa.String(10), nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("updated_time", sa.DateTime, nullable=False),
            sa.Column("run_id", sa.String(64)),
            sa.Column("host", sa.String(255)),
            sa.Column("pid", sa.Integer),
            sa.Column("pid_started", sa.String(32)),
            sa.Column("heartbeat_time", sa.DateTime),
            sa.Column("started_time", sa.DateTime),
            sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
            sa.Column("error", sa.Text),
        )

    @contextmanager
    def _transaction(self) -> Iterator[tuple[sa.Connection, sa.Table]]:
        """One transaction: commit on success, roll back on error, connection returned."""
        self.check_config()
        table = self._table()
        engine = _engine(self.url)
        if (self.url, self.table) not in _CREATED:
            try:
                table.metadata.create_all(engine, checkfirst=True)
            except sa.exc.DBAPIError:
                # Another process created it between the check and the CREATE.
                if not sa.inspect(engine).has_table(self.table):
                    raise
            _CREATED.add((self.url, self.table))
        with engine.begin() as connection:
            yield connection, table

    def _insert(self, table: sa.Table):
        dialect = postgresql if self.url.startswith("postgresql") else sqlite
        return dialect.insert(table)

    # ------------------------------------------------------------------- reads
    def get_job(self, job: str) -> JobRecord | None:
        with self._transaction() as (conn, table):
            row = conn.execute(sa.select(table).where(table.c.job_id == job)).mappings().first()
        return JobRecord(**row) if row else None

    def get_status(self, job: str) -> str | None:
        record = self.get_job(job)
        return record.status if record else None

    def list_jobs(self, first_day: str, last_day: str, workflow: str | None = None) -> list[JobRecord]:
        with self._transaction() as (conn, table):
            query = sa.select(table).where(table.c.trade_dt.between(first_day, last_day))
            if workflow:
                query = query.where(table.c.workflow == workflow)
            rows = conn.execute(query.order_by(table.c.trade_dt, table.c.workflow)).mappings().all()
        return [JobRecord(**row) for row in rows]

    def statuses(self, workflow: str, days: list[str]) -> dict[str, str]:
        with self._transaction() as (conn, table):
            rows = conn.execute(
                sa.select(table.c.trade_dt, table.c.status).where(
                    table.c.workflow == workflow, table.c.trade_dt.in_(days)
                )
            ).all()
        return {day: status for day, status in rows}

    # ------------------------------------------------------------------ writes
    def assign_job_id(self, workflow: str, day: str) -> str:
        return job_id(workflow, day)

    def is_live(self, record: JobRecord, now: dt.datetime | None = None) -> bool:
        """Whether a running claim may still belong to a live process (SPEC.md §6)."""
        if record.status != RUNNING:
            return False
        if record.host == socket.gethostname() and record.pid is not None:
            return pid_alive(record.pid, record.pid_started)
        lapsed = (now or utcnow()) - dt.timedelta(seconds=self.stale_after_seconds)
        return record.heartbeat_time is not None and record.heartbeat_time >= lapsed

    def claim(self, workflow: str, day: str, run_id: str) -> JobRecord:
        """Marks the job running for `run_id`, or raises JobRefused naming the live holder.

        Re-entrant: the later steps of the run that holds the claim pass.
        """
        job = job_id(workflow, day)
        current = self.get_job(job)
        if current is not None and current.run_id == run_id:
            return current
        now = utcnow()
        claim = {
            "status": RUNNING,
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_started": process_start(os.getpid()),
            "heartbeat_time": now,
            "started_time": now,
            "updated_time": now,
            "error": None,
        }
        with self._transaction() as (conn, table):
            statement = self._insert(table).values(
                job_id=job, workflow=workflow, trade_dt=day, attempts=1, **claim
            )
            lapsed = now - dt.timedelta(seconds=self.stale_after_seconds)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.job_id],
                    set_={**claim, "attempts": table.c.attempts + 1},
                    # On this host the pid decides (below); elsewhere the heartbeat.
                    where=(table.c.status != RUNNING)
                    | ((table.c.heartbeat_time < lapsed) & (table.c.host != claim["host"])),
                )
            )
        holder = self.get_job(job)
        if holder.run_id == run_id:
            return holder
        same_host = holder.host == socket.gethostname() and holder.pid is not None
        if same_host and not pid_alive(holder.pid, holder.pid_started):
            # The holder died on this host (killed, OOM): take over at once, but only
            # if nobody else did first (compare-and-set on its run id).
            with self._transaction() as (conn, table):
                taken = conn.execute(
                    sa.update(table)
                    .where(table.c.job_id == job, table.c.run_id == holder.run_id, table.c.status == RUNNING)
                    .values(**claim, attempts=table.c.attempts + 1)
                ).rowcount
            if taken == 1:
                return self.get_job(job)
            holder = self.get_job(job)
        raise JobRefused(
            f"Refusing to start {job} for run {run_id}: {holder.describe()}. "
            "Two runs of the same workflow and day never run at once."
        )

    def heartbeat(self, job: str, run_id: str) -> bool:
        with self._transaction() as (conn, table):
            return (
                conn.execute(
                    sa.update(table)
                    .where(table.c.job_id == job, table.c.run_id == run_id, table.c.status == RUNNING)
                    .values(heartbeat_time=utcnow())
                ).rowcount
                == 1
            )

    @contextmanager
    def heartbeating(self, job: str, run_id: str) -> Iterator[None]:
        """Refreshes the claim's heartbeat in the background while the body runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    self.heartbeat(job, run_id)
                except Exception:  # a missed beat is retried; the run goes on
                    pass

        thread = threading.Thread(target=beat, name=f"heartbeat-{job}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def update_status(
        self, job: str, status: str, run_id: str | None = None, error: str | None = None
    ) -> bool:
        """Sets the final status; with `run_id`, only while that run holds a running claim."""
        if status not in (RUNNING, SUCCESS, FAILED):
            raise ValueError(f"unknown status '{status}'")
        with self._transaction() as (conn, table):
            statement = sa.update(table).where(table.c.job_id == job)
            if run_id is not None:
                statement = statement.where(table.c.run_id == run_id, table.c.status == RUNNING)
            changed = conn.execute(
                statement.values(status=status, error=error, updated_time=utcnow())
            ).rowcount
        return changed == 1

    def mark_stale(self, job: str, reason: str) -> bool:
        """Turns a `success` row `failed` because its inputs changed; a running or failed row is left."""
        with self._transaction() as (conn, table):
            changed = conn.execute(
                sa.update(table)
                .where(table.c.job_id == job, table.c.status == SUCCESS)
                .values(status=FAILED, error=reason, updated_time=utcnow())
            ).rowcount
        return changed == 1

    def release(self, job: str, reason: str) -> JobRecord:
        """Releases a stuck claim by hand; refuses a live one."""
        record = self.get_job(job)
        if record is None:
            raise LookupError(f"no job {job} in {self.table}")
        if record.status != RUNNING:
            raise JobRefused(f"{job} is {record.status}, not running: nothing to release")
        if self.is_live(record):
            raise JobRefused(f"Refusing to release a live run: {record.describe()}")
        with self._transaction() as (conn, table):
            conn.execute(
                sa.update(table)
                .where(table.c.job_id == job, table.c.run_id == record.run_id, table.c.status == RUNNING)
                .values(status=FAILED, error=reason, updated_time=utcnow())
            )
        return self.get_job(job)
