"""Shared fixtures: one Spark session for the whole test session, real files, real databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from pyspark.sql import SparkSession

from capstone_assets.resources import LakeResource, QualityResource, TrackerResource, spark_resource
from capstone_assets.resources.spark import spark_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("CAPSTONE_SAMPLE_DIR", REPO.parent / "shared" / "data" / "sample"))
POSTGRES_URL = os.environ.get(
    "CAPSTONE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
IN_CI = bool(os.environ.get("CI"))
@pytest.fixture(scope="session")
def spark() -> SparkSession:
    config = spark_config("local[2]")
    config.update({"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"})
    builder = SparkSession.builder
    for key, value in config.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The course's public sample, read in place (never copied into the repo)."""
    if not (SAMPLE / "csv").is_dir():
        message = f"the exchange sample is not at {SAMPLE} (set CAPSTONE_SAMPLE_DIR)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return SAMPLE


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's PostgreSQL; CI must have it, so an unreachable server fails there."""
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as error:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {error.orig}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def tracker_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tracker.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def tracker(tracker_url) -> TrackerResource:
    """A tracker on a fresh table of its own (the table name is configurable)."""
    table = f"job_tracker_test_{uuid.uuid4().hex[:10]}"
    yield TrackerResource(url=tracker_url, table=table, heartbeat_seconds=0.2, stale_after_seconds=2)
    engine = sa.create_engine(tracker_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


@pytest.fixture
def lake(tmp_path, sample_dir) -> LakeResource:
    return LakeResource(landing_root=str(sample_dir), lake_root=str(tmp_path / "lake"))


def platform_resources(landing_root, lake_root, tracker_db) -> dict:
    """The resources of a run on the test session's Spark, with an SQLite tracker."""
    return {
        "spark": spark_resource("local[2]"),
        "lake": LakeResource(landing_root=str(landing_root), lake_root=str(lake_root)),
        "tracker": TrackerResource(url=f"sqlite:///{tracker_db}"),
        "quality": QualityResource(),
    }


@pytest.fixture
def resources(lake, tmp_path) -> dict:
    return {**platform_resources(lake.landing_root, lake.lake_root, tmp_path / "tracker.db"), "lake": lake}
