"""A run launcher whose run workers start warm: forks of a process that has imported the libraries.

Dagster's `DefaultRunLauncher` asks the code server to start each run, and the code server
*spawns* a fresh Python for it: every run imports Dagster, its PostgreSQL storage, PySpark's
Connect client and pandas again, about 4 CPU-seconds, before its first step. On a backfill
of short days that is most of the runs' Python time. This launcher starts each run worker
instead as a fork of a `multiprocessing` fork server (a process started once per daemon,
from a fresh interpreter) that imported those libraries once.

The run worker then does what `dagster api execute_run` does, the worker of Dagster's own
container launchers: it loads the job from the run's code origin and executes the run,
reporting to the instance. The project's code (`capstone_assets`) is not preloaded: each run
imports it afresh, so a run executes the code as it is when it starts, as with the default
launcher. Libraries upgraded under a running daemon need a daemon restart, as they need a
code-server restart. A worker has the environment of the fork server, which is the
launching process's environment at its first launch (the daemon's, as for its code server).

The worker records itself (run, host, pid and process start time) in the run's tag
`capstone/run_worker`, and the launching process watches it: a worker that ends before its
run has finished (killed, out of memory, the project's code failing to import) fails the run
at once with its exit code, as the code server does for the processes it starts. From the tag:

* `terminate` (the UI's *Terminate*) sends the worker SIGINT, which Dagster's run worker
  turns into a clean cancellation, as the code server's cancel does;
* run monitoring (`run_monitoring` in dagster.yaml) asks `check_run_worker_health`: a run
  still `STARTED` whose worker is gone is marked failed, and the queue moves on.

Both work from any process on the worker's host (the daemon launches, the webserver
terminates). Configured in dagster.yaml:

    run_launcher:
      module: capstone_assets.launcher
      class: PreloadedRunLauncher
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading

from dagster import DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

WORKER_TAG = "capstone/run_worker"

# Imported once by the fork server; each run worker is a fork of it. Libraries only: never the
# project's code, which a run must load as it is when the run starts.
PRELOAD = (
    "dagster",
    "dagster._cli.api",
    "dagster._core.execution.api",
    "dagster_postgres",
    "dagster_pyspark",
    "pyspark.sql.connect.session",
    "pyspark.sql.functions",
    "sqlalchemy",
    "psycopg2",
)

_context_lock = threading.Lock()
_context = None


def fork_server_context():
    """This process's fork-server context with the preloads (one fork server per process)."""
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _context = context
        return _context


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), which
    tells a worker from a later process that reuses its pid; None when there is no such process
    (or it has ended and is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[19] if fields[0] != "Z" else None  # field 3 is the state


def process_alive(pid: int, start: str | None) -> bool:
    """Whether the process `pid` that started at `start` still runs. Without /proc (macOS) only
    whether some process has that pid."""
    if os.path.isdir("/proc/self"):
        now = process_start_time(pid)
        return now is not None and now == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def execute_run_in_worker(run_id: str, serialized_instance_ref: str) -> None:
    """The run worker: `dagster api execute_run` without a new interpreter. It records itself in
    the run's tags first, before it starts the run (so no status update of its own can race the
    tag's write and lose it), then
    runs the interpreter's exit handlers at the end, as a normal exit would (a forked worker ends
    with `os._exit`)."""
    import atexit

    from dagster._cli.api import _execute_run_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts

    try:
        with capture_interrupts():
            instance_ref = deserialize_value(serialized_instance_ref)
            with get_instance_for_cli(instance_ref=instance_ref) as instance:
                worker = {"run": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                          "start": process_start_time(os.getpid())}  # fmt: skip
                instance.add_run_tags(run_id, {WORKER_TAG: json.dumps(worker)})
                _execute_run_command_body(
                    run_id, instance, lambda event: None, set_exit_code_on_failure=False
                )
    finally:
        atexit._run_exitfuncs()


def watch_worker(worker, run_id: str, instance_ref) -> None:
    """Waits for the worker to end; if its run has not finished, fails it at once with the exit
    code, as Dagster's code server does for the processes it starts. (Run monitoring catches
    the same later, from the tag, if the launching process is gone.)"""
    from dagster import DagsterInstance
    from dagster._utils import get_run_crash_explanation

    worker.join()
    with DagsterInstance.from_ref(instance_ref) as instance:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        message = get_run_crash_explanation(f"Run worker pid {worker.pid} of run {run_id}", worker.exitcode)
        instance.report_engine_event(message, run, cls=PreloadedRunLauncher)
        if run.status == DagsterRunStatus.CANCELING:  # terminated before it started the run
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)


class PreloadedRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose run workers are forks of a preloaded fork server (module doc)."""

    def launch_run(self, context: LaunchRunContext) -> None:
        from dagster._serdes import serialize_value

        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no code origin to load its job from")
        instance_ref = self._instance.get_ref()
        worker = fork_server_context().Process(
            target=execute_run_in_worker,
            args=(run.run_id, serialize_value(instance_ref)),
            name=f"dagster-run-{run.run_id}",
        )
        worker.start()
        # Not one of this process's children for multiprocessing's exit handler, which would
        # make the daemon's exit wait for every run: runs outlive a daemon restart, as with the
        # code server. The fork server reaps the worker; the watcher reports its end.
        multiprocessing.process._children.discard(worker)
        threading.Thread(
            target=watch_worker,
            args=(worker, run.run_id, instance_ref),
            name=f"watch-{run.run_id}",
            daemon=True,
        ).start()
        self._run_ids.add(run.run_id)

    @staticmethod
    def _worker(run: DagsterRun) -> dict | None:
        """The worker the run's tag names, if the tag is this run's own (a re-execution copies
        its parent's tags)."""
        try:
            worker = json.loads(run.tags.get(WORKER_TAG, ""))
        except ValueError:
            return None
        if (
            not isinstance(worker, dict)
            or worker.get("run") != run.run_id
            or not isinstance(worker.get("pid"), int)
        ):
            return None
        return worker

    def terminate(self, run_id: str) -> bool:
        if not self.has_instance:
            return False
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        worker = self._worker(run)
        if worker is None:
            if GRPC_INFO_TAG in run.tags:  # launched through a code server (Dagster's launcher)
                return super().terminate(run_id)
            # Its worker has not tagged it yet: a worker finds the run CANCELING, does not start
            # it and ends, and the watcher then marks it canceled.
            self._instance.report_run_canceling(run)
            return True
        self._instance.report_run_canceling(run)
        if worker.get("host") != socket.gethostname() or not process_alive(
            worker["pid"], worker.get("start")
        ):
            self._instance.report_engine_event(
                f"Cannot send the termination request: run worker pid {worker['pid']} on "
                f"{worker.get('host')} is not a live process on this host ({socket.gethostname()}).",
                dagster_run=run,
                cls=self.__class__,
            )
            return False
        try:
            os.kill(worker["pid"], signal.SIGINT)  # the worker cancels the run cleanly
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        # Run monitoring fails a STARTED run on any answer but RUNNING or SUCCESS. A run without
        # its own tag was not launched here (`dagster job execute` runs in its own process);
        # one on another host cannot be checked here.
        worker = self._worker(run)
        if worker is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"no {WORKER_TAG} tag of this run: not checked")
        if worker.get("host") != socket.gethostname():
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"the run worker is on {worker.get('host')}: not checked"
            )
        if process_alive(worker["pid"], worker.get("start")):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(worker["pid"]))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker pid {worker['pid']} is gone", run_worker_id=str(worker["pid"])
        )
