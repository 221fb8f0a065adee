"""A backfill whose first day fails a blocking check, through the real webserver and daemon.

The servers load `faulty_definitions` (the real definitions with one switchable
fault: duplicated trades for one day) as their code location, so the fault
reaches the run workers the daemon launches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import materialize
from pyspark.testing import assertDataFrameEqual

from capstone_assets.demo import write_demo_landing
from capstone_assets_tests.conftest import REPO
from capstone_assets_tests.servers import DagsterServers
from capstone_assets_tests.test_backfills import ALL_ASSETS, ASSETS, PREPROCESSING, resources_of

pytestmark = pytest.mark.e2e
FIRST, SECOND = "2020-08-06", "2020-08-07"


@pytest.fixture(scope="module")
def faulty_servers(postgres_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("faulty_servers")
    write_demo_landing(base / "landing")
    workspace = base / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n"
        "      module_name: capstone_assets_tests.faulty_definitions\n"
        f"      working_directory: {REPO}\n"
    )
    fault = base / "fault"
    with DagsterServers(
        postgres_url, base / "landing", base / "lake", base,
        workspace=workspace, extra_env={"CAPSTONE_TEST_FAULT_FILE": str(fault)},
    ) as servers:  # fmt: skip
        servers.fault_file = fault
        yield servers


def test_a_failed_blocking_check_holds_back_the_backfill_and_keeps_the_day(faulty_servers, spark):
    servers = faulty_servers
    lake = Path(servers.env["CAPSTONE_LAKE_ROOT"])
    # A first, good version of the first day.
    assert materialize(ALL_ASSETS, selection=list(PREPROCESSING), partition_key=FIRST,
                       resources=resources_of(servers)).success  # fmt: skip
    good_trades = spark.read.parquet(str(lake / "trades" / f"trade_dt={FIRST}")).collect()

    servers.fault_file.write_text(FIRST)  # from now on, the load of FIRST emits every trade twice
    result = servers.wait_for_backfill(servers.launch_backfill([FIRST, SECOND], list(ASSETS)), timeout=900)
    print(result)

    assert result.status == "COMPLETED_FAILED", f"{result}\n{servers.log_tails()}"
    by_day = {}
    for run in result.runs:
        by_day.setdefault(run.partition, []).append(run.status)
    assert by_day[FIRST] == ["FAILURE"], result
    # The second day is preprocessed, but its report (which needs the first day's trades) never launched.
    assert by_day[SECOND] == ["SUCCESS"], result
    assert SECOND not in servers.materialized_partitions("eod_quote_report")
    assert servers.materialization_metadata("eod_quote_report", SECOND) == {}

    # The failure shows for that day over GraphQL, naming the duplicates.
    [execution] = servers.check_executions("trades", "unique_record_key_trades", partition=FIRST)
    assert execution["evaluation"]["success"] is False
    assert execution["evaluation"]["severity"] == "ERROR"
    assert "record keys occur more than once" in execution["evaluation"]["description"]
    first_run = next(run for run in result.runs if run.partition == FIRST)
    assert execution["runId"] == first_run.run_id

    # The first day keeps its previous version; the tracker names the check.
    assertDataFrameEqual(spark.read.parquet(str(lake / "trades" / f"trade_dt={FIRST}")), good_trades)
    job = servers.tracker().get_job(f"preprocessing_{FIRST}")
    assert job.status == "failed" and "blocking check unique_record_key_trades failed" in job.error
