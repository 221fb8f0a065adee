"""The run launcher of dagster.yaml (capstone_assets/launcher.py) on a real Dagster instance.

Runs launched through it execute in real forked run workers and report to the instance's
storage; the UI's *Terminate* cancels a run cleanly, and run monitoring's health check tells
a live worker from one that was killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
import yaml
from capstone_assets.launcher import WORKER_TAG, PreloadedRunLauncher, process_start_time
from capstone_assets_tests import launcher_jobs
from capstone_assets_tests.conftest import REPO
from dagster import DagsterInstance, reconstructable
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRunStatus

TIMEOUT_SECONDS = 120


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
        yield inst, out


def launch(instance: DagsterInstance, job_fn, out):
    """A run created as the UI creates one (with its code origin), launched by the instance's launcher.
    The op writes into `out`: run config, since a worker has the fork server's environment."""
    recon = reconstructable(job_fn)
    op_name = next(iter(job_fn.graph.node_dict))
    run = instance.create_run_for_job(
        job_def=job_fn,
        run_config={"ops": {op_name: {"config": {"out": str(out)}}}},
        job_code_origin=recon.get_python_origin(),
    )
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return instance.get_run_by_id(run.run_id)


def wait_for(instance: DagsterInstance, run_id: str, statuses) -> DagsterRunStatus:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while (status := instance.get_run_by_id(run_id).status) not in statuses and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def wait_for_file(path, timeout=TIMEOUT_SECONDS):
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"{path} never appeared"
    return path.read_text()


def test_the_repo_dagster_yaml_uses_the_preloaded_launcher(instance):
    inst, _ = instance
    assert isinstance(inst.run_launcher, PreloadedRunLauncher)


def test_a_launched_run_succeeds_in_a_forked_worker_that_found_the_libraries_imported(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.quick_job, out)
    assert (
        wait_for(inst, run.run_id, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
        == DagsterRunStatus.SUCCESS
    )
    pid, pandas_preloaded = wait_for_file(out / "worker.txt").split()
    worker = inst.get_run_by_id(run.run_id).tags[WORKER_TAG]
    assert f'"pid": {pid}' in worker
    assert int(pid) != os.getpid()
    assert pandas_preloaded == "True"  # PySpark's Connect client's pandas came with the fork
    events = [e.message for e in inst.all_logs(run.run_id) if e.message]
    assert any(f"Started process for run (pid: {pid})" in m for m in events)


def test_terminate_cancels_the_run_and_the_worker_ends(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.waiting_job, out)
    pid = int(wait_for_file(out / "waiting.txt"))
    assert (
        inst.run_launcher.check_run_worker_health(inst.get_run_by_id(run.run_id)).status
        == WorkerStatus.RUNNING
    )
    assert inst.run_launcher.terminate(run.run_id)
    assert (
        wait_for(
            inst, run.run_id, {DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE, DagsterRunStatus.SUCCESS}
        )
        == DagsterRunStatus.CANCELED
    )
    deadline = time.monotonic() + 30
    while process_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_start_time(pid) is None
    assert not inst.run_launcher.terminate(run.run_id)  # finished: nothing to do


def test_a_killed_worker_is_reported_failed_to_run_monitoring(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.waiting_job, out)
    pid = int(wait_for_file(out / "waiting.txt"))
    assert wait_for(inst, run.run_id, {DagsterRunStatus.STARTED}) == DagsterRunStatus.STARTED
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process_start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    health = inst.run_launcher.check_run_worker_health(inst.get_run_by_id(run.run_id))
    assert health.status == WorkerStatus.FAILED, health
    assert str(pid) in health.msg


def test_a_worker_pid_reused_by_another_process_is_not_taken_for_the_worker(instance):
    inst, out = instance
    run = launch(inst, launcher_jobs.quick_job, out)
    assert (
        wait_for(inst, run.run_id, {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE})
        == DagsterRunStatus.SUCCESS
    )
    # This test process is alive, but it started at another time than the worker recorded.
    forged = run.with_tags(
        {**run.tags, WORKER_TAG: json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": "1"})}
    )
    assert inst.run_launcher.check_run_worker_health(forged).status == WorkerStatus.FAILED
