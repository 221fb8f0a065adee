"""The run launcher of dagster.yaml (capstone_assets/launcher.py) on a real Dagster instance.

Runs launched through it execute in real forked run workers and report to the instance's
storage; the UI's *Terminate* cancels a run cleanly, and run monitoring's health check tells
a live worker from one that was killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from capstone_assets.launcher import WORKER_TAG, PreloadedRunLauncher, process_start_time
from capstone_assets_tests import launcher_jobs
from capstone_assets_tests.conftest import REPO
from dagster import DagsterInstance, reconstructable
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher.base import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRunStatus

TIMEOUT_SECONDS = 120
FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@pytest.fixture
def instance(tmp_path):
    """A SQLite instance with the run launcher exactly as the repo's dagster.yaml configures it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    launcher = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_launcher"]
    (home / "dagster.yaml").write_text(
        yaml.safe_dump({"run_launcher": launcher, "telemetry": {"enabled": False}})
    )
    out = tmp_path / "out"
    out.mkdir()
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as inst:
        try:
            yield inst, out
        finally:  # a waiting worker that a failed test left behind
            for waiting in out.glob("waiting.txt"):
                try:
                    os.kill(int(waiting.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


def launch(instance: DagsterInstance, job_fn, out):
    """A run created as the UI creates one (with its code origin) and launched as the run queue
    launches it (STARTING, then the instance's launcher). The op writes into `out`, given as run
    config: a worker has the fork server's environment, not this test's."""
    recon = reconstructable(job_fn)
    op_name = next(iter(job_fn.graph.node_dict))
    run = instance.create_run_for_job(
        job_def=job_fn,
        run_config={"ops": {op_name: {"config": {"out": str(out)}}}},
        job_code_origin=recon.get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace=None)
    return instance.get_run_by_id(run.run_id)


def wait_for(instance: DagsterInstance, run_id: str, statuses, timeout=TIMEOUT_SECONDS) -> DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while (status := instance.get_run_by_id(run_id).status) not in statuses and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def wait_for_file(path, timeout=TIMEOUT_SECONDS):
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"{path} never appeared"
    return path.read_text()


def wait_until_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while process_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_start_time(pid) is None, f"pid {pid} still runs"


def messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.message]


def test_the_repo_dagster_yaml_uses_the_preloaded_launcher(instance):
    inst, _ = instance
    assert isinstance(inst.run_launcher, PreloadedRunLauncher)


def test_a_launched_run_succeeds_in_a_forked_worker_that_found_the_libraries_imported(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.quick_job, out)
    assert wait_for(inst, run.run_id, FINISHED) == DagsterRunStatus.SUCCESS
    pid, pandas_preloaded = wait_for_file(out / "worker.txt").split()
    worker = json.loads(inst.get_run_by_id(run.run_id).tags[WORKER_TAG])
    assert (worker["run"], worker["pid"], worker["host"]) == (run.run_id, int(pid), socket.gethostname())
    assert int(pid) != os.getpid()
    assert pandas_preloaded == "True"  # PySpark's Connect client's pandas came with the fork
    assert any(f"Started process for run (pid: {pid})" in m for m in messages(inst, run.run_id))


def test_terminate_cancels_the_run_and_the_worker_ends(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.waiting_job, out)
    pid = int(wait_for_file(out / "waiting.txt"))
    health = inst.run_launcher.check_run_worker_health(inst.get_run_by_id(run.run_id))
    assert (health.status, health.run_worker_id) == (WorkerStatus.RUNNING, str(pid))
    assert inst.run_launcher.terminate(run.run_id)
    assert wait_for(inst, run.run_id, FINISHED) == DagsterRunStatus.CANCELED
    wait_until_gone(pid)
    assert not inst.run_launcher.terminate(run.run_id)  # finished: nothing to do


def test_a_killed_worker_fails_its_run_at_once_and_run_monitoring_sees_it_gone(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.waiting_job, out)
    pid = int(wait_for_file(out / "waiting.txt"))
    assert wait_for(inst, run.run_id, {DagsterRunStatus.STARTED}) == DagsterRunStatus.STARTED
    os.kill(pid, signal.SIGKILL)
    wait_until_gone(pid)
    health = inst.run_launcher.check_run_worker_health(inst.get_run_by_id(run.run_id))
    assert health.status == WorkerStatus.FAILED, health
    assert str(pid) in health.msg
    # The launching process saw its worker end: the run fails now, not at run monitoring's next look.
    assert wait_for(inst, run.run_id, FINISHED, timeout=30) == DagsterRunStatus.FAILURE
    assert any(f"Run worker pid {pid}" in m and "SIGKILL" in m for m in messages(inst, run.run_id))


def test_a_worker_pid_reused_by_another_process_is_not_taken_for_the_worker(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.quick_job, out)
    assert wait_for(inst, run.run_id, FINISHED) == DagsterRunStatus.SUCCESS
    # This test process is alive, but it started at another time than the tag says.
    tag = {"run": run.run_id, "host": socket.gethostname(), "pid": os.getpid(), "start": "1"}
    forged = run.with_tags({**run.tags, WORKER_TAG: json.dumps(tag)})
    assert inst.run_launcher.check_run_worker_health(forged).status == WorkerStatus.FAILED
    tag["start"] = process_start_time(os.getpid())
    alive = run.with_tags({**run.tags, WORKER_TAG: json.dumps(tag)})
    assert inst.run_launcher.check_run_worker_health(alive).status == WorkerStatus.RUNNING


def test_a_tag_copied_from_another_run_is_not_taken_for_the_worker(instance):
    """A re-execution copies its parent's tags, the parent's worker among them."""
    inst, out = instance
    parent = launch(inst, launcher_jobs.quick_job, out)
    assert wait_for(inst, parent.run_id, FINISHED) == DagsterRunStatus.SUCCESS
    parent_tag = inst.get_run_by_id(parent.run_id).tags[WORKER_TAG]
    child = inst.create_run_for_job(
        job_def=launcher_jobs.quick_job, run_config=parent.run_config, tags={WORKER_TAG: parent_tag}
    )
    health = inst.run_launcher.check_run_worker_health(inst.get_run_by_id(child.run_id))
    assert health.status == WorkerStatus.RUNNING and "not checked" in health.msg, health
    assert (
        inst.run_launcher.check_run_worker_health(inst.get_run_by_id(parent.run_id)).status
        == WorkerStatus.FAILED
    )


LAUNCH_AND_EXIT = """
import sys
from dagster import DagsterInstance, reconstructable
from dagster._core.instance.ref import InstanceRef
from capstone_assets_tests import launcher_jobs

with DagsterInstance.from_ref(InstanceRef.from_dir(sys.argv[1])) as instance:
    job = launcher_jobs.waiting_job
    run = instance.create_run_for_job(
        job_def=job, run_config={"ops": {"wait_for_release": {"config": {"out": sys.argv[2]}}}},
        job_code_origin=reconstructable(job).get_python_origin(),
    )
    instance.launch_run(run.run_id, workspace=None)
    print(run.run_id, flush=True)
"""


def test_the_launching_process_exits_without_waiting_for_its_runs(instance, tmp_path):
    """A daemon restarts at once; its runs go on, as those of Dagster's code server do."""
    inst, out = instance
    log = tmp_path / "launcher.log"  # a file: the worker inherits the output, and a pipe would stay open
    with open(log, "w") as output:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCH_AND_EXIT, str(tmp_path / "dagster_home"), str(out)],
            cwd=REPO, stdout=output, stderr=subprocess.STDOUT, timeout=TIMEOUT_SECONDS,
        )  # fmt: skip
    assert done.returncode == 0, log.read_text()[-3000:]
    run_id = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", log.read_text())[0]
    pid = int(wait_for_file(out / "waiting.txt"))
    assert process_start_time(pid) is not None  # the worker outlived the process that launched it
    assert wait_for(inst, run_id, {DagsterRunStatus.STARTED}) == DagsterRunStatus.STARTED
    assert inst.run_launcher.terminate(run_id)  # from another process, as the webserver does
    assert wait_for(inst, run_id, FINISHED) == DagsterRunStatus.CANCELED
    wait_until_gone(pid)
