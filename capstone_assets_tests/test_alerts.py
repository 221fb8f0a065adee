"""Alert sensors against a real webhook (an HTTP server on 127.0.0.1) and real failed runs.

Each test runs on Dagster's default SQLite storage (one file per run, as `make
dev` has it) and on PostgreSQL (the production dagster.yaml): they store check
evaluations differently.
"""

import json
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import sqlalchemy as sa
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    DefaultSensorStatus,
    Definitions,
    MetadataValue,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    build_sensor_context,
    define_asset_job,
    instance_for_test,
)

from capstone_assets import alerts
from capstone_assets.alerts import AlertWebhookResource, scrub
from capstone_assets.partitions import trading_day_partitions
from capstone_assets_tests.conftest import REPO

SECRET_URL = "postgresql+psycopg2://postgres:secret@127.0.0.1:5432/db"
SCRUBBED_URL = "postgresql+psycopg2://postgres:***@127.0.0.1:5432/db"
UI = "http://dagster.example:3000"


class Webhook:
    """A real HTTP endpoint. `answers` scripts the next responses' statuses (then 204)."""

    def __init__(self):
        self.received: list[dict] = []
        self.answers: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = hook.answers.pop(0) if hook.answers else 204
                if status >= 300:
                    self.send_response(status)
                else:
                    assert self.headers["Content-Type"] == "application/json"
                    hook.received.append({"path": self.path, "raw": body.decode(), "json": json.loads(body)})
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/capstone"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def payloads(self) -> list[dict]:
        return [r["json"] for r in self.received]


@pytest.fixture
def webhook():
    hook = Webhook()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


@pytest.fixture(params=["sqlite", "postgresql"])
def instance(request, tmp_path):
    if request.param == "sqlite":
        with instance_for_test(temp_dir=str(tmp_path)) as sqlite_instance:
            yield sqlite_instance
        return
    postgres_url = request.getfixturevalue("postgres_url")
    name = f"capstone_alerts_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) as pg_instance:
            yield pg_instance
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


# Toy stand-ins named like the real steps: no Spark needed to fail a run.
@asset(name="quotes", partitions_def=trading_day_partitions)
def failing_quotes():
    raise RuntimeError(f"tracker unreachable at {SECRET_URL}")


@asset(name="eod_quote_report", partitions_def=trading_day_partitions)
def failing_report():
    raise ValueError("no quotes for the day")


@asset(partitions_def=trading_day_partitions)
def checked():
    pass


@asset_check(asset=checked, name="looks_right")
def looks_right():
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.WARN,
        description=f"3 rejects; source {SECRET_URL}",
        metadata={"rejects": 3, "rate": 0.25, "source": MetadataValue.url(SECRET_URL), "ok": False},
    )


toy_defs = Definitions(
    assets=[failing_quotes, failing_report, checked],
    asset_checks=[looks_right],
    jobs=[
        define_asset_job(
            "analytical_job", selection=["eod_quote_report"], tags={"capstone/workflow": "analytical"}
        )
    ],
)
other_defs = Definitions(
    assets=[failing_report], jobs=[define_asset_job("other_job", selection=["eod_quote_report"])]
)


def tick(sensor, instance, cursor, url, definitions=None):
    resources = {"alert_webhook": AlertWebhookResource(url=url, ui_url=UI, timeout_seconds=2)}
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=definitions
    )
    return sensor(context)


def sensors_by_name(enabled=True):
    return {s.name: s for s in alerts.alert_sensors(enabled=enabled)}


def test_a_failed_run_is_posted_once_with_its_workflow_day_step_and_scrubbed_error(instance, webhook):
    sensor = sensors_by_name()["run_failure_alert_sensor"]
    started = tick(sensor, instance, None, webhook.url, toy_defs)
    assert isinstance(started, SensorResult) and started.cursor is not None and webhook.received == []

    # What the UI's Materialize and backfills run: the hidden asset job, no workflow tag.
    asset_job = toy_defs.resolve_implicit_global_asset_job_def()
    failed = asset_job.get_subset(asset_selection={AssetKey("quotes")}).execute_in_process(
        instance=instance, partition_key="2020-08-05", raise_on_error=False
    )
    tagged = toy_defs.resolve_job_def("analytical_job").execute_in_process(
        instance=instance, partition_key="2020-08-06", raise_on_error=False
    )
    elsewhere = other_defs.resolve_job_def("other_job").execute_in_process(
        instance=instance, partition_key="2020-08-06", raise_on_error=False
    )  # a job that is not in this code location: no alert
    assert not (failed.success or tagged.success or elsewhere.success)

    result = tick(sensor, instance, started.cursor, webhook.url, toy_defs)
    assert webhook.payloads() == [
        {
            "kind": "run_failure",
            "run_id": failed.run_id,
            "job": "__ASSET_JOB",
            "workflow": "preprocessing",
            "trading_day": "2020-08-05",
            "failed_step": "quotes",
            "error": f"RuntimeError: tracker unreachable at {SCRUBBED_URL}",
            "run_url": f"{UI}/runs/{failed.run_id}",
        },
        {
            "kind": "run_failure",
            "run_id": tagged.run_id,
            "job": "analytical_job",
            "workflow": "analytical",
            "trading_day": "2020-08-06",
            "failed_step": "eod_quote_report",
            "error": "ValueError: no quotes for the day",
            "run_url": f"{UI}/runs/{tagged.run_id}",
        },
    ]
    assert webhook.received[0]["path"] == "/hooks/capstone"
    assert "secret" not in webhook.received[0]["raw"]

    again = tick(sensor, instance, result.cursor, webhook.url, toy_defs)
    assert again.cursor == result.cursor and len(webhook.received) == 2  # each failure once


def test_a_failed_check_is_posted_with_plain_metadata_and_runless_ones_too(instance, webhook):
    sensor = sensors_by_name()["check_failure_alert_sensor"]
    started = tick(sensor, instance, None, webhook.url)
    run = (
        toy_defs.resolve_implicit_global_asset_job_def()
        .get_subset(asset_selection={AssetKey("checked")}, asset_check_selection={looks_right.check_key})
        .execute_in_process(instance=instance, partition_key="2020-08-07")
    )
    instance.report_runless_asset_event(
        AssetCheckEvaluation(asset_key=AssetKey("checked"), check_name="passes", passed=True, metadata={})
    )
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=AssetKey(["lake", "trades"]),
            check_name="external_audit",
            passed=False,
            metadata={"rows": MetadataValue.int(7)},
            severity=AssetCheckSeverity.ERROR,
            description="7 rows missing",
            partition="2020-08-07",
        )
    )

    tick(sensor, instance, started.cursor, webhook.url)
    assert webhook.payloads() == [
        {
            "kind": "check_failure",
            "asset_key": "checked",
            "check_name": "looks_right",
            "partition": None,
            "severity": "WARN",
            "description": f"3 rejects; source {SCRUBBED_URL}",
            "metadata": {"rejects": 3, "rate": 0.25, "source": SCRUBBED_URL, "ok": False},
            "run_id": run.run_id,
            "run_url": f"{UI}/runs/{run.run_id}",
        },
        {
            "kind": "check_failure",
            "asset_key": "lake/trades",
            "check_name": "external_audit",
            "partition": "2020-08-07",
            "severity": "ERROR",
            "description": "7 rows missing",
            "metadata": {"rows": 7},
            "run_id": None,
            "run_url": None,
        },
    ]
    assert "secret" not in "".join(r["raw"] for r in webhook.received)


def test_a_failed_post_is_retried_next_tick_and_nothing_is_skipped(instance, webhook):
    sensor = sensors_by_name()["check_failure_alert_sensor"]
    started = tick(sensor, instance, None, webhook.url)
    for n in range(3):
        instance.report_runless_asset_event(
            AssetCheckEvaluation(asset_key=AssetKey("a"), check_name=f"c{n}", passed=False, metadata={})
        )
    webhook.answers = [503]  # the webhook is down for one request
    first = tick(sensor, instance, started.cursor, webhook.url)
    assert first.cursor == started.cursor and webhook.received == []

    second = tick(sensor, instance, first.cursor, webhook.url)
    assert [p["check_name"] for p in webhook.payloads()] == ["c0", "c1", "c2"]

    # Down again after one post: the cursor stops right after the one delivered.
    for n in range(3, 5):
        instance.report_runless_asset_event(
            AssetCheckEvaluation(asset_key=AssetKey("a"), check_name=f"c{n}", passed=False, metadata={})
        )
    webhook.answers = [204, 500]
    third = tick(sensor, instance, second.cursor, webhook.url)
    assert int(second.cursor) < int(third.cursor) and len(webhook.received) == 4
    tick(sensor, instance, third.cursor, webhook.url)
    assert [p["check_name"] for p in webhook.payloads()] == ["c0", "c1", "c2", "c3", "c4"]


def test_an_unreachable_webhook_does_not_crash_the_sensor(instance):
    sensor = sensors_by_name()["check_failure_alert_sensor"]
    closed = "http://127.0.0.1:9/unreachable"  # the discard port: nothing listens
    started = tick(sensor, instance, None, closed)
    instance.report_runless_asset_event(
        AssetCheckEvaluation(asset_key=AssetKey("a"), check_name="c", passed=False, metadata={})
    )
    result = tick(sensor, instance, started.cursor, closed)
    assert result.cursor == started.cursor and result.skip_reason


def test_without_a_webhook_url_alerts_are_off():
    context = build_sensor_context(resources={"alert_webhook": AlertWebhookResource(url="")})
    for sensor in alerts.alert_sensors(enabled=False):
        assert sensor.default_status == DefaultSensorStatus.STOPPED
        assert isinstance(sensor(context), SkipReason)
    assert {s.default_status for s in alerts.alert_sensors(enabled=True)} == {DefaultSensorStatus.RUNNING}


def test_definitions_start_the_alert_sensors_only_when_a_webhook_is_set(monkeypatch):
    script = (
        "from capstone_assets.definitions import defs; "
        "print(*(defs.resolve_sensor_def(n).default_status.value "
        "for n in ('run_failure_alert_sensor', 'check_failure_alert_sensor')))"
    )

    def statuses(**env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        run = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, cwd=REPO
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert statuses(CAPSTONE_ALERT_WEBHOOK_URL="") == ["STOPPED", "STOPPED"]
    assert statuses(CAPSTONE_ALERT_WEBHOOK_URL="http://127.0.0.1:1/hook") == ["RUNNING", "RUNNING"]


def test_every_password_in_a_url_is_masked():
    assert (
        scrub(f"could not connect: {SECRET_URL} (timeout)") == f"could not connect: {SCRUBBED_URL} (timeout)"
    )
    assert scrub("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert scrub("'abfss://u:p@ss@acct.dfs'") == "'abfss://u:***@acct.dfs'"  # unescaped @: all masked
    assert scrub("postgresql://postgres@127.0.0.1/db and http://host:8080/x") == (
        "postgresql://postgres@127.0.0.1/db and http://host:8080/x"  # no password: unchanged
    )


def test_step_and_asset_workflows_agree_with_the_asset_groups():
    from capstone_assets.definitions import defs

    for assets_def in defs.resolve_asset_graph().assets_defs:
        for key, group in assets_def.group_names_by_key.items():
            assert alerts.ASSET_WORKFLOWS[key.to_user_string()] == group
            assert alerts.STEP_WORKFLOWS[assets_def.node_def.name] == group
