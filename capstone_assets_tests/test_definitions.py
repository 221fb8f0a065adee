"""The definitions load; what the UI shows; the production instance on PostgreSQL; the webserver."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
import yaml
from dagster import AssetKey, DagsterInstance, TimeWindowPartitionMapping

from capstone_assets.definitions import defs
from capstone_assets.partitions import trading_day_partitions
from capstone_assets_tests.conftest import REPO

ASSETS = {
    "raw_trades": "preprocessing", "raw_quotes": "preprocessing", "raw_rejects": "preprocessing",
    "trades": "preprocessing", "quotes": "preprocessing", "eod_quote_report": "analytical",
}  # fmt: skip


def test_every_asset_has_its_group_kind_description_and_partitions():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == set(ASSETS)
    for name, group in ASSETS.items():
        node = graph.get(AssetKey(name))
        assert node.group_name == group
        assert "spark" in node.kinds
        assert node.description and len(node.description) > 40
        assert node.partitions_def == trading_day_partitions


def test_the_report_depends_on_the_previous_trading_days_trades():
    node = defs.resolve_asset_graph().get(AssetKey("eod_quote_report"))
    mapping = node.partition_mappings[AssetKey("trades")]
    assert isinstance(mapping, TimeWindowPartitionMapping)
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
        trading_day_partitions.subset_with_partition_keys(["2020-08-10"]),
        trading_day_partitions,
        trading_day_partitions,
    ).partitions_subset.get_partition_keys()
    assert set(upstream) == {"2020-08-07", "2020-08-10"}  # Monday needs Friday's trades
    first_day = mapping.get_upstream_mapped_partitions_result_for_partitions(
        trading_day_partitions.subset_with_partition_keys(["2020-01-02"]),
        trading_day_partitions,
        trading_day_partitions,
    )
    assert set(first_day.partitions_subset.get_partition_keys()) == {"2020-01-02"}


def test_jobs_schedule_and_sensors_resolve():
    jobs = {job.name: job for job in defs.resolve_all_job_defs()}
    assert {"preprocessing_job", "analytical_job"} <= set(jobs)
    assert jobs["preprocessing_job"].partitions_def == trading_day_partitions
    assert jobs["preprocessing_job"].executor_def.name == "in_process"
    schedule = defs.resolve_schedule_def("preprocessing_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 17 * * 1-5", "America/New_York")
    assert defs.resolve_sensor_def("landing_sensor").job_name == "preprocessing_job"
    assert defs.resolve_sensor_def("analytical_sensor").job_name == "analytical_job"


@pytest.fixture
def postgres_database(postgres_url):
    """A fresh database for Dagster's own storage, dropped afterwards."""
    name = f"capstone_dagster_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_production_instance_keeps_runs_on_postgresql(postgres_database, tmp_path, monkeypatch, resources):
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_database)
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert config["run_monitoring"]["enabled"] is True
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == [{"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        job = defs.resolve_job_def("preprocessing_job")
        result = job.execute_in_process(partition_key="2020-08-05", instance=instance, resources=resources)
        assert result.success
    engine = sa.create_engine(postgres_database)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT run_id, status FROM runs")).all()
    engine.dispose()
    assert stored == [(result.run_id, "SUCCESS")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@pytest.mark.e2e
def test_webserver_serves_the_assets_and_jobs(tmp_path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "CAPSTONE_LAKE_ROOT": str(tmp_path / "lake")}
    server = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "webserver did not start"
                time.sleep(1)
        nodes = _graphql(port, "{ assetNodes { assetKey { path } groupName kinds description } }")[
            "assetNodes"
        ]
        seen = {n["assetKey"]["path"][0]: n for n in nodes}
        assert {k: n["groupName"] for k, n in seen.items()} == ASSETS
        assert all("spark" in n["kinds"] for n in nodes)
        jobs = _graphql(
            port,
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }",
        )["repositoriesOrError"]["nodes"][0]["jobs"]
        assert {"preprocessing_job", "analytical_job"} <= {j["name"] for j in jobs}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_every_jar_in_the_jars_folder_goes_on_spark_jars(tmp_path):
    from capstone_assets.resources.spark import spark_config

    assert "spark.jars" not in spark_config("local[1]", jars_dir=tmp_path)
    for name in ("hadoop-azure-3.4.1.jar", "postgresql-42.7.4.jar", "README.md"):
        (tmp_path / name).write_text("")
    config = spark_config("yarn", jars_dir=tmp_path)
    assert config["spark.jars"] == f"{tmp_path}/hadoop-azure-3.4.1.jar,{tmp_path}/postgresql-42.7.4.jar"
    assert config["spark.master"] == "yarn" and config["spark.sql.session.timeZone"] == "UTC"
    assert "spark.sql.shuffle.partitions" not in config  # a cluster keeps its own


def test_local_mode_gets_a_sized_driver_unless_the_operator_sized_it(tmp_path, monkeypatch):
    from capstone_assets.resources.spark import spark_config

    for name in ("SPARK_DRIVER_MEMORY", "SPARK_CONF_DIR", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert spark_config("local[*]")["spark.driver.memory"] == "2g"
    assert "spark.driver.memory" not in spark_config("spark://127.0.0.1:7077")  # the cluster's own
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "6g")  # Spark reads it itself
    assert "spark.driver.memory" not in spark_config("local[*]")
    monkeypatch.delenv("SPARK_DRIVER_MEMORY")
    (tmp_path / "spark-defaults.conf").write_text("spark.ui.enabled false\nspark.driver.memory   8g\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert "spark.driver.memory" not in spark_config("local[*]")
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.memoryOverhead 1g\n")
    assert spark_config("local[*]")["spark.driver.memory"] == "2g"


def test_analytical_job_runs_the_report_step_not_the_freshness_check():
    # The freshness check looks at the latest due day, whatever the run's day: it runs on its schedule.
    assert defs.resolve_job_def("analytical_job").graph.node_names() == ["eod_quote_report"]
    assert defs.resolve_job_def("report_freshness_job").graph.node_names() == ["eod_quote_report_materialized_by_deadline"]
