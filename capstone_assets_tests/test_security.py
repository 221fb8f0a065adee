"""Secrets stay secret, and nothing reaches SQL unquoted.

A known password in the tracker URL must not appear in anything a real run writes:
stdout and stderr, Dagster's instance folder (its SQLite run and event logs, compute
logs), the lake, the tracker's rows, or what the UI serves. The database is both
reachable (the run succeeds) and unreachable (the error paths run).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from capstone_assets import settings
from capstone_assets.demo import write_demo_landing
from capstone_assets.resources.tracker import FAILED, SUCCESS, TrackerResource
from capstone_assets_tests.conftest import REPO

BIN = REPO / ".venv" / "bin"
SCRIPTS = REPO / "scripts"
ROLE, SECRET = "capstone_secret_user", "S3cr3t-Pa55"
DAY, JOB = "2020-08-06", "preprocessing_2020-08-06"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin(postgres_url: str, *statements: str) -> None:
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def secret_url(postgres_url) -> str:
    """A database of its own, owned by a role with a known password (trust auth here: the
    password is not checked, the point is that the string never leaks)."""
    database = f"capstone_secret_{uuid.uuid4().hex[:8]}"
    admin(
        postgres_url,
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{SECRET}'; END IF; END $$",
        f"CREATE DATABASE {database} OWNER {ROLE}",
    )
    server = sa.engine.make_url(postgres_url)
    yield f"postgresql+psycopg2://{ROLE}:{SECRET}@{server.host}:{server.port or 5432}/{database}"
    admin(postgres_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


RESOURCES = """query($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    ... on ResourceDetailsList { results { name configuredValues { key value type } } } } }"""
RUNS = "{ runsOrError { ... on Runs { results { runId status runConfigYaml tags { key value } } } } }"
LOGS = """query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename ... on MessageEvent { message }
  ... on ErrorEvent { error { message stack cause { message stack } } }
  ... on MaterializationEvent { metadataEntries { label ... on TextMetadataEntry { text }
    ... on PathMetadataEntry { path } ... on MarkdownMetadataEntry { mdStr } } } } } } }"""


def what_the_ui_serves(env: dict, workdir: Path) -> str:
    """The UI's answers about the runs (their config, tags, logs, errors and metadata), the
    resources' configuration and the instance, from a real webserver on the same instance."""
    port = free_port()
    log = open(workdir / "webserver.log", "w")
    server = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the webserver did not start"
                time.sleep(1)
        repository = graphql(
            port,
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }",
        )["repositoriesOrError"]["nodes"][0]
        selector = {
            "repositoryName": repository["name"],
            "repositoryLocationName": repository["location"]["name"],
        }
        resources = graphql(port, RESOURCES, {"selector": selector})
        tracker = next(
            r for r in resources["allTopLevelResourceDetailsOrError"]["results"] if r["name"] == "tracker"
        )
        # Set, the URL reaches the resource as an EnvVar: the UI shows the variable's name.
        assert {"key": "url", "value": "CAPSTONE_TRACKER_URL", "type": "ENV_VAR"} in tracker[
            "configuredValues"
        ]
        runs = graphql(port, RUNS)["runsOrError"]["results"]
        logs = [graphql(port, LOGS, {"runId": run["runId"]}) for run in runs]
        instance = graphql(port, "{ instance { info } }")
        pages = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        return json.dumps([resources, runs, logs, instance]) + pages
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if needle in path.read_bytes():
            found.append(str(path))
        elif path.suffix == ".db":  # SQLite: also as SQL text, whatever the page layout
            with sqlite3.connect(path) as connection:
                if any(needle.decode() in line for line in connection.iterdump()):
                    found.append(f"{path} (dump)")
    return found


@pytest.mark.e2e
def test_no_password_in_anything_a_run_writes_or_the_ui_shows(secret_url, spark, tmp_path):
    write_demo_landing(tmp_path / "landing")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **{k: v for k, v in os.environ.items() if k not in settings.DEFAULTS},
        "DAGSTER_HOME": str(home),
        "CAPSTONE_LANDING_ROOT": str(tmp_path / "landing"),
        "CAPSTONE_LAKE_ROOT": str(tmp_path / "lake"),
        "CAPSTONE_TRACKER_URL": secret_url,
        "SPARK_MASTER": "local[2]",
    }
    unreachable = sa.engine.make_url(secret_url).set(port=free_port()).render_as_string(hide_password=False)
    assert SECRET in unreachable

    def run(command, **changes):
        return subprocess.run(
            command, env={**env, **changes}, cwd=REPO, capture_output=True, text=True, timeout=900
        )

    outputs = {
        "preprocessing": run([SCRIPTS / "run_preprocessing.sh", DAY]),
        "refused analytical": run([SCRIPTS / "run_analytical.sh", "2020-08-07"]),
        "database unreachable": run(
            [SCRIPTS / "run_preprocessing.sh", "2020-08-07"], CAPSTONE_TRACKER_URL=unreachable
        ),
        "dagster, database unreachable": run(
            [
                BIN / "dagster",
                "job",
                "execute",
                "-m",
                "capstone_assets.definitions",
                "-j",
                "preprocessing_job",
                "--tags",
                '{"dagster/partition": "2020-08-10"}',
            ],
            CAPSTONE_TRACKER_URL=unreachable,
        ),  # fmt: skip
        "operator, database unreachable": run(
            [BIN / "capstone-jobs", "list"], CAPSTONE_TRACKER_URL=unreachable
        ),
        "unsupported URL": run(
            [BIN / "capstone-jobs", "check-config"],
            CAPSTONE_TRACKER_URL=secret_url.replace("postgresql+psycopg2", "mysql"),
        ),
    }
    codes = {name: result.returncode for name, result in outputs.items()}
    assert codes == {
        # An unreachable tracker is refused before anything runs (check-config), in one line: exit 2.
        "preprocessing": 0, "refused analytical": 1, "database unreachable": 2,
        "dagster, database unreachable": 1, "operator, database unreachable": 2, "unsupported URL": 2,
    }, {name: r.stdout[-2000:] + r.stderr[-2000:] for name, r in outputs.items()}  # fmt: skip
    # The error paths ran, and say what failed without the password.
    masked = sa.engine.make_url(unreachable).render_as_string(hide_password=True)
    assert "Connection refused" in outputs["dagster, database unreachable"].stderr
    assert outputs["operator, database unreachable"].stderr.startswith(
        f"capstone-jobs: the job tracker database {masked} is not reachable (connection to server at"
    )
    assert f"{ROLE}:***@" in outputs["unsupported URL"].stderr

    # The search reaches the runs' event logs and compute logs, the error paths' too.
    assert any(p.suffix == ".err" for p in (home / "storage").rglob("*"))
    assert files_containing(home, JOB.encode()) and files_containing(home, b"Connection refused")

    leaks = [name for name, result in outputs.items() if SECRET in result.stdout + result.stderr]
    leaks += files_containing(home, SECRET.encode())
    leaks += files_containing(tmp_path / "lake", SECRET.encode())
    for dataset in sorted(p for p in (tmp_path / "lake").iterdir() if not p.name.startswith("_")):
        if SECRET in str(spark.read.parquet(str(dataset)).collect()):
            leaks.append(f"rows of {dataset.name}")
    tracker = TrackerResource(url=secret_url)
    rows = tracker.list_jobs("2020-01-01", "2020-12-31")
    assert {(r.job_id, r.status) for r in rows} == {(JOB, SUCCESS)}
    leaks += [f"tracker row {r.job_id}" for r in rows if SECRET in str(r)]
    served = what_the_ui_serves(env, tmp_path)
    assert JOB in served and "Connection refused" in served  # the search looks at the runs
    leaks += ["the UI"] * (SECRET in served)
    leaks += files_containing(home, SECRET.encode())  # the webserver's own writes
    leaks += ["webserver log"] * (SECRET in (tmp_path / "webserver.log").read_text())
    assert leaks == []


def test_the_production_instance_shows_its_database_by_variable_name(secret_url, tmp_path, monkeypatch):
    from dagster import DagsterInstance

    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", secret_url)
    with DagsterInstance.get() as instance:  # the UI's Deployment > Configuration page
        info = instance.info_str()
    assert "PostgresRunStorage" in info and SECRET not in info


# ------------------------------------------------------------------------------ SQL injection
INJECTED_TABLES = [
    "job_tracker; DROP TABLE victim; --",
    'job_tracker"; DROP TABLE victim; --',
    "x' OR '1'='1",
    "1job_tracker",
    "job-tracker",
    "jöb_tracker",
    "t" * 64,
]


@pytest.mark.parametrize("table", INJECTED_TABLES)
def test_a_table_name_that_is_not_an_identifier_is_refused(table, tmp_path):
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE victim (x INTEGER)"))
    with pytest.raises(ValueError) as refused:
        TrackerResource(url=url, table=table).get_status(JOB)
    assert str(refused.value) == (
        f"CAPSTONE_TRACKER_TABLE='{table}' is not a valid SQL identifier: use letters, digits and "
        "underscores, not starting with a digit, at most 63 characters (e.g. job_tracker)"
    )
    assert sa.inspect(engine).get_table_names() == ["victim"]
    engine.dispose()


def test_the_operator_command_refuses_an_injected_table_name(tmp_path):
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "CAPSTONE_TRACKER_URL": f"sqlite:///{tmp_path / 'tracker.db'}",
        "CAPSTONE_TRACKER_TABLE": INJECTED_TABLES[0],
    }
    listing = subprocess.run(
        [BIN / "capstone-jobs", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 2
    assert listing.stderr.startswith(
        f"capstone-jobs: CAPSTONE_TRACKER_TABLE='{INJECTED_TABLES[0]}' is not a valid"
    )
    assert not (tmp_path / "tracker.db").exists()


def test_injected_values_round_trip_unchanged_and_the_tables_survive(tracker):
    victim = f"victim_{uuid.uuid4().hex[:10]}"
    evil = f"'; DROP TABLE {victim}; --"
    engine = sa.create_engine(tracker.url)
    victim_table = sa.Table(victim, sa.MetaData(), sa.Column("x", sa.Integer))
    victim_table.create(engine)
    try:
        with engine.begin() as connection:
            connection.execute(victim_table.insert().values(x=1))
        first_run, second_run = f"r1{evil}", f'r2"); DROP TABLE {victim}; --'
        error = f'boom{evil} \\ "quoted" \' %s :x ?; {evil.upper()}'
        assert tracker.claim("preprocessing", DAY, first_run).run_id == first_run
        assert tracker.update_status(JOB, FAILED, run_id=first_run, error=error)
        assert (tracker.get_job(JOB).run_id, tracker.get_job(JOB).error) == (first_run, error)
        assert tracker.claim("preprocessing", DAY, second_run).run_id == second_run
        assert tracker.update_status(JOB, SUCCESS, run_id=second_run)
        assert tracker.mark_stale(JOB, f"stale{evil}") and tracker.get_job(JOB).error == f"stale{evil}"
        # Lookups with injected keys find nothing rather than everything.
        assert tracker.get_job(f"{JOB}' OR '1'='1") is None
        assert tracker.list_jobs(DAY, DAY, workflow="x' OR '1'='1") == []
        assert tracker.statuses("preprocessing", [f"{DAY}' OR '1'='1"]) == {}
        assert [r.job_id for r in tracker.list_jobs(DAY, DAY)] == [JOB]
        with engine.connect() as connection:
            assert connection.execute(sa.select(victim_table.c.x)).scalars().all() == [1]
    finally:
        victim_table.drop(engine, checkfirst=True)
        engine.dispose()


def test_a_reserved_word_is_a_valid_table_name_and_is_quoted(tracker_url):
    tracker = TrackerResource(url=tracker_url, table="order")
    engine = sa.create_engine(tracker_url)
    try:
        tracker.claim("preprocessing", DAY, "run-1")
        assert tracker.get_status(JOB) == "running"
    finally:
        sa.Table("order", sa.MetaData()).drop(engine, checkfirst=True)
        engine.dispose()


# ---------------------------------------------------------------------------------- the UI
def test_make_dev_binds_the_ui_to_this_machine_only():
    dry = subprocess.run(["make", "-n", "dev"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    command = next(line for line in dry.stdout.splitlines() if "dagster dev" in line)
    assert command.endswith("dagster dev -h 127.0.0.1 -w workspace.yaml")
