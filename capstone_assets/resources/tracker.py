"""The job status tracker (SPEC.md §6): one row per workflow and trading day.

SQLAlchemy Core gives one code path for PostgreSQL (production) and the
embedded SQLite default. A claim is one `INSERT … ON CONFLICT DO UPDATE …
WHERE` statement: it takes the row only when no live run holds it, so two runs
racing for the same day cannot both win.

A claim is held until its run ends, not its first failed step: a failed step
notes its error and the run's last step of the workflow writes the final status.
A run writes to the lake only under `holding`, which locks its row: a takeover
waits until that write is done, and a run that lost its claim cannot write.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import sqlalchemy as sa
from dagster import ConfigurableResource
from pydantic import Field
from sqlalchemy.dialects import postgresql, sqlite

RUNNING, SUCCESS, FAILED = "running", "success", "failed"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()
_CREATED: set[tuple[str, str]] = set()
# Claims that runs of this process lost to a takeover: their later steps may not claim again.
_LOST: dict[tuple[str, str, str, str], str] = {}
_ERROR_CHARS = 4000
CONNECT_TIMEOUT_SECONDS = 10
# The claims each thread holds locked (`holding`): a nested `holding` of the same claim reuses the lock.
_HELD = threading.local()


class JobRefused(Exception):
    """A run may not start: another live run holds the day, or a gate is closed."""


class TrackerUnreachable(RuntimeError):
    """The tracker's PostgreSQL cannot be reached, or its connection was lost. The message
    names the URL without its password and the driver's first line, never a secret."""

    def __init__(self, url: str, error: BaseException):
        lines = str(getattr(error, "orig", None) or error).strip().splitlines()
        reason = f" ({lines[0].strip()})" if lines else ""
        super().__init__(f"the job tracker database {redacted(url)} is not reachable{reason}")


class ClaimLost(JobRefused):
    """A run no longer holds its claim (another run took the day over, or it was released):
    it may not write the day, and it stops."""


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
    boot_id: str | None = None
    pid_namespace: str | None = None

    def describe(self) -> str:
        text = (
            f"{self.job_id} is {self.status}: run {self.run_id} on {self.host} pid {self.pid}, "
            f"started {self.started_time:%Y-%m-%d %H:%M:%S} UTC, "
            f"last heartbeat {self.heartbeat_time:%Y-%m-%d %H:%M:%S} UTC"
        )
        if self.status == RUNNING and self.error:
            text += f"; a step failed ({self.error}) and the run's other steps go on"
        return text


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


def boot_id() -> str | None:
    """This machine's boot (Linux): a pid is only meaningful within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def pid_namespace() -> str | None:
    """This process's pid namespace (Linux), e.g. `pid:[4026531836]`: containers sharing a
    host name may each have their own, where the same pid is another process."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_space() -> dict[str, str | None]:
    """Where a pid can be checked: the host, its boot and the pid namespace."""
    return {"host": socket.gethostname(), "boot_id": boot_id(), "pid_namespace": pid_namespace()}


def in_this_process_space(record: JobRecord) -> bool:
    """Whether the claim's pid can be checked from here. Rows of older versions, without a
    boot id or pid namespace, cannot: their heartbeat decides."""
    here = process_space()
    return record.pid is not None and (record.host, record.boot_id, record.pid_namespace) == (
        here["host"], here["boot_id"], here["pid_namespace"]
    )  # fmt: skip


@dataclass
class Claim:
    """A run's hold on a workflow and day, as its step sees it while it runs."""

    tracker: "TrackerResource"
    job: str
    run_id: str
    lost_reason: str | None = field(default=None)

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def holding(self):
        """The guard of the lake's commit: the claim, checked and locked while the renames run."""
        if self.lost_reason:
            raise ClaimLost(self.lost_reason)
        return self.tracker.holding(self.job, self.run_id)

    def check(self) -> None:
        if self.lost_reason:
            raise ClaimLost(self.lost_reason)


def job_id(workflow: str, day: str) -> str:
    return f"{workflow}_{day}"


def redacted(url: str) -> str:
    """The database URL with its password masked, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing of it is safe to show
        return "(not a URL)"


def _engine(url: str) -> sa.Engine:
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            kwargs = (
                {"connect_args": {"timeout": 60}}
                if url.startswith("sqlite")
                # A server that accepts but never answers fails the connection in seconds too.
                else {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}}
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
        default=180.0,
        description="A claim from another host, boot or pid namespace whose heartbeat is older than this is stale",
    )

    def check_config(self) -> None:
        """Raises ValueError with a message an operator can act on. Called on first use:
        at definition time the fields may still be unresolved `EnvVar`s."""
        if not _IDENTIFIER.match(self.table):
            raise ValueError(
                f"CAPSTONE_TRACKER_TABLE='{self.table}' is not a valid SQL identifier: use letters, digits and "
                "underscores, not starting with a digit, at most 63 characters (e.g. job_tracker)"
            )
        if self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "CAPSTONE_TRACKER_URL must name the driver: use postgresql+psycopg2://… "
                "(SQLAlchemy maps postgresql:// to psycopg 3, which is not installed)"
            )
        if not self.url.startswith(("postgresql+psycopg2://", "sqlite:///")):
            raise ValueError(
                f"unsupported CAPSTONE_TRACKER_URL '{redacted(self.url)}': use postgresql+psycopg2://… or sqlite:///…"
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
            # Added after the first version: `_upgrade` adds them to an existing table.
            sa.Column("boot_id", sa.String(64)),
            sa.Column("pid_namespace", sa.String(64)),
        )

    @property
    def _postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def _create_or_upgrade(self, engine: sa.Engine, table: sa.Table) -> None:
        try:
            table.metadata.create_all(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created it between the check and the CREATE.
            if not sa.inspect(engine).has_table(self.table):
                raise
        self._upgrade(engine, table)

    def _upgrade(self, engine: sa.Engine, table: sa.Table) -> None:
        """Adds the columns a table created by an older version lacks; nothing is dropped.

        Safe when several processes start at once: PostgreSQL skips a column another
        added first (IF NOT EXISTS, under the table's lock); SQLite reports a duplicate,
        and the column is then checked for."""
        existing = {column["name"] for column in sa.inspect(engine).get_columns(self.table)}
        for column in table.columns:
            if column.name in existing:
                continue
            assert column.nullable, f"a new tracker column must be nullable: {column.name}"
            kind = column.type.compile(dialect=engine.dialect)
            if_absent = "IF NOT EXISTS " if self._postgres else ""
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql(
                        f"ALTER TABLE {self.table} ADD COLUMN {if_absent}{column.name} {kind}"
                    )
            except sa.exc.DBAPIError:
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(self.table)}:
                    raise

    @contextmanager
    def _transaction(self, lock: bool = False) -> Iterator[tuple[sa.Connection, sa.Table]]:
        """One transaction: commit on success, roll back on error, connection returned.

        With `lock`, on SQLite a write transaction from its first statement (no other
        writer can commit until it ends); on PostgreSQL the caller locks its rows."""
        self.check_config()
        table = self._table()
        engine = _engine(self.url)
        try:
            if (self.url, self.table) not in _CREATED:
                self._create_or_upgrade(engine, table)
                _CREATED.add((self.url, self.table))
            with engine.begin() as connection:
                if lock and not self._postgres:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                yield connection, table
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            # A refused, timed-out or dropped connection to PostgreSQL (on SQLite an
            # OperationalError is a locked or unreadable file: it keeps its own message).
            if not self._postgres:
                raise
            raise TrackerUnreachable(self.url, error) from error

    def ping(self) -> None:
        """Raises TrackerUnreachable unless the tracker's PostgreSQL answers. Writes nothing (no
        table is created); an embedded SQLite file has nothing to reach and is left alone."""
        self.check_config()
        if not self._postgres:
            return
        try:
            with _engine(self.url).connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as error:
            raise TrackerUnreachable(self.url, error) from error

    @contextmanager
    def _locked(self, job: str) -> Iterator[tuple[sa.Connection, sa.Table, JobRecord | None]]:
        """The job's row, locked against every other writer until the transaction ends."""
        with self._transaction(lock=True) as (conn, table):
            query = sa.select(table).where(table.c.job_id == job)
            if self._postgres:
                query = query.with_for_update()
            row = conn.execute(query).mappings().first()
            yield conn, table, JobRecord(**row) if row else None

    def _insert(self, table: sa.Table):
        dialect = postgresql if self._postgres else sqlite
        return dialect.insert(table)

    # ------------------------------------------------------------------- reads
    @staticmethod
    def _read(conn: sa.Connection, table: sa.Table, job: str) -> JobRecord | None:
        row = conn.execute(sa.select(table).where(table.c.job_id == job)).mappings().first()
        return JobRecord(**row) if row else None

    def get_job(self, job: str) -> JobRecord | None:
        with self._transaction() as (conn, table):
            return self._read(conn, table, job)

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

    # ------------------------------------------------------------------ claims
    def assign_job_id(self, workflow: str, day: str) -> str:
        return job_id(workflow, day)

    def is_live(
        self,
        record: JobRecord,
        now: dt.datetime | None = None,
        run_ended: Callable[[str], bool] | None = None,
    ) -> bool:
        """Whether a running claim may still belong to a live run (SPEC.md §6).

        A claim whose Dagster run has ended (`run_ended`) is not; in this host, boot
        and pid namespace, its pid decides; anywhere else its heartbeat."""
        if record.status != RUNNING:
            return False
        if run_ended is not None and record.run_id is not None and run_ended(record.run_id):
            return False
        if in_this_process_space(record):
            return pid_alive(record.pid, record.pid_started)
        lapsed = (now or utcnow()) - dt.timedelta(seconds=self.stale_after_seconds)
        return record.heartbeat_time is not None and record.heartbeat_time >= lapsed

    def _lost_key(self, job: str, run_id: str) -> tuple[str, str, str, str]:
        return (self.url, self.table, job, run_id)

    def _lose(self, job: str, run_id: str, holder: JobRecord | None) -> ClaimLost:
        """Records that `run_id` lost its claim, and says so naming the new holder."""
        if holder is None:
            now = "the row is gone"
        elif holder.run_id == run_id:
            now = f"its claim was ended ({holder.status}: {holder.error})"
        else:
            now = f"{holder.describe()}"
        message = (
            f"{job}: run {run_id} lost its claim to run {holder.run_id if holder else None}; {now}. "
            "It may not write the day and stops; the day is the new holder's."
        )
        _LOST[self._lost_key(job, run_id)] = message
        return ClaimLost(message)

    def claim(
        self, workflow: str, day: str, run_id: str, run_ended: Callable[[str], bool] | None = None
    ) -> JobRecord:
        """Marks the job running for `run_id`, or raises JobRefused naming the live holder.

        Re-entrant: the later steps of the run that holds the claim pass; a run that
        lost its claim gets ClaimLost. `run_ended(run_id)` tells whether a Dagster run
        has ended: its claim is taken over at once, even if its process lives on.
        """
        job = job_id(workflow, day)
        if self._lost_key(job, run_id) in _LOST:
            raise ClaimLost(_LOST[self._lost_key(job, run_id)])
        current = self.get_job(job)
        if current is not None and current.run_id == run_id:
            if current.status == RUNNING:
                return current
            raise self._lose(job, run_id, current)
        now = utcnow()
        here = process_space()
        claim = {
            "status": RUNNING,
            "run_id": run_id,
            **here,
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
            # In this process space the pid decides (below); elsewhere the heartbeat.
            same_space = sa.and_(*(table.c[name].is_not_distinct_from(value) for name, value in here.items()))
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.job_id],
                    set_={**claim, "attempts": table.c.attempts + 1},
                    where=(table.c.status != RUNNING) | ((table.c.heartbeat_time < lapsed) & ~same_space),
                )
            )
            # Read back in the same transaction: once it has committed, the run knows whether
            # it holds the day even if the database is lost straight after.
            holder = self._read(conn, table, job)
        if holder.run_id == run_id:
            return holder
        if not self.is_live(holder, now, run_ended):
            # The holder died in this process space (killed, OOM), or its Dagster run ended:
            # take over at once, unless someone else did first or it proved alive since.
            with self._transaction() as (conn, table):
                taken = conn.execute(
                    sa.update(table)
                    .where(
                        table.c.job_id == job,
                        table.c.run_id == holder.run_id,
                        table.c.status == RUNNING,
                        table.c.heartbeat_time.is_not_distinct_from(holder.heartbeat_time),
                    )
                    .values(**claim, attempts=table.c.attempts + 1)
                ).rowcount
                holder = self._read(conn, table, job)
            if taken == 1:
                return holder
        raise JobRefused(
            f"Refusing to start {job} for run {run_id}: {holder.describe()}. "
            "Two runs of the same workflow and day never run at once."
        )

    @contextmanager
    def holding(self, job: str, run_id: str) -> Iterator[JobRecord]:
        """Checks that `run_id` holds the claim and keeps it locked while the body runs.

        The lake's renames run inside: a takeover's UPDATE waits until they are done, so
        nothing is written under a claim that was lost after it was checked. Raises
        ClaimLost, naming the new holder, when the run no longer holds the claim."""
        key = self._lost_key(job, run_id)
        held = _HELD.__dict__.setdefault("claims", {})
        if key in held:  # already locked by this thread: a second lock would wait for itself
            yield held[key]
            return
        with self._locked(job) as (_, _, record):
            if record is None or record.run_id != run_id or record.status != RUNNING:
                raise self._lose(job, run_id, record)
            held[key] = record
            try:
                yield record
            finally:
                del held[key]

    def heartbeat(self, job: str, run_id: str) -> bool:
        """Refreshes the claim; False when `run_id` no longer holds it."""
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
    def heartbeating(
        self, job: str, run_id: str, on_lost: Callable[[str], None] | None = None
    ) -> Iterator[Claim]:
        """Refreshes the claim's heartbeat in the background while the body runs.

        A beat that finds the claim taken over marks the yielded Claim lost (its
        `holding` then refuses at once) and calls `on_lost` with the reason."""
        claim = Claim(self, job, run_id)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    if self.heartbeat(job, run_id):
                        continue
                    claim.lost_reason = str(self._lose(job, run_id, self.get_job(job)))
                except Exception:  # a missed beat is retried; the run goes on
                    continue
                if on_lost is not None:
                    on_lost(claim.lost_reason)
                return

        thread = threading.Thread(target=beat, name=f"heartbeat-{job}", daemon=True)
        thread.start()
        try:
            yield claim
        finally:
            stop.set()
            thread.join(timeout=5)

    # ------------------------------------------------------------ final status
    def note_failure(self, job: str, run_id: str, error: str) -> bool:
        """Records a failed step's error on the run's claim, which stays `running`: the
        run's other steps go on, and the day stays held until the run ends (`finish`)."""
        with self._locked(job) as (conn, table, record):
            if record is None or record.run_id != run_id or record.status != RUNNING:
                return False
            errors = "; ".join(e for e in (record.error, error) if e)[:_ERROR_CHARS]
            conn.execute(
                sa.update(table).where(table.c.job_id == job).values(error=errors, updated_time=utcnow())
            )
        return True

    def finish(self, job: str, run_id: str, error: str | None = None) -> str | None:
        """Ends the run's claim: `failed` with its steps' noted errors and `error`, else
        `success`. Returns the status written, or None if `run_id` no longer holds it."""
        with self._locked(job) as (conn, table, record):
            if record is None or record.run_id != run_id or record.status != RUNNING:
                return None
            errors = "; ".join(e for e in (record.error, error) if e)[:_ERROR_CHARS] or None
            status = FAILED if errors else SUCCESS
            conn.execute(
                sa.update(table)
                .where(table.c.job_id == job)
                .values(status=status, error=errors, updated_time=utcnow())
            )
        return status

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
