"""The Dagster UI in headless Chromium, as an operator uses it: launch a backfill, then read the results.

Runs on the production setup of servers.py over the demo landing zone. Chromium
is Debian's (`apt-get install chromium`, as .ci/run does) driven by Playwright;
set `CAPSTONE_CHROMIUM` to use another binary. Screenshots go to
`CAPSTONE_SCREENSHOT_DIR` (default: the test's tmp dir); `CAPSTONE_UPDATE_SCREENSHOT=1`
also refreshes docs/ui-backfill.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from capstone_assets.demo import write_demo_landing
from capstone_assets_tests.conftest import IN_CI, REPO
from capstone_assets_tests.servers import dagster_servers_fixture, ui_backfill_params

pytestmark = pytest.mark.e2e

GROUPS = {
    "preprocessing": ("raw_trades", "raw_quotes", "raw_rejects", "trades", "quotes"),
    "analytical": ("eod_quote_report",),
}
# What the operator materializes: one group's assets, or None for *Materialize all…*.
SELECTED_GROUP = None
DAYS = ["2020-08-06", "2020-08-07"]  # Thursday, Friday
# Monday's report is added by Dagster (Friday's loaded tables feed it) and deferred:
# Monday has landing files but is not preprocessed.
DEFERRED_DAY = "2020-08-10"
RESULT_ASSET = "eod_quote_report"
REPORT_CHECKS = ["close_pr_present", "materialized_by_deadline", "one_row_per_quote"]
TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

servers = dagster_servers_fixture(write_demo_landing, scope="module")


@pytest.fixture(scope="module")
def browser():
    executable = os.environ.get("CAPSTONE_CHROMIUM") or shutil.which("chromium")
    if not executable:
        message = "Chromium is not installed (apt-get install chromium, or set CAPSTONE_CHROMIUM)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Page:
    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("CAPSTONE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def screenshot_on_failure(page: Page, path: Path):
    try:
        yield
    except Exception as error:
        page.screenshot(path=str(path), full_page=True)
        raise AssertionError(f"{error}\nThe page at the failure: {path} ({page.url})") from error


def open_ui(page: Page, servers) -> None:
    """The first visit of an instance shows *Join the Dagster community*: skip it."""
    first_visit = servers.graphql("{ shouldShowNux }")["shouldShowNux"]
    page.goto(servers.url + "/", wait_until="domcontentloaded")
    if first_visit:
        community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
        community.get_by_role("button", name="Skip").click()
        expect(community).to_be_hidden()


def open_lineage(page: Page, servers) -> None:
    page.goto(servers.url + "/asset-groups", wait_until="domcontentloaded")
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()


def shown(scope, text: str):
    """The visible element showing exactly `text` (the UI also keeps hidden copies to measure text)."""
    return scope.get_by_text(text, exact=True).filter(visible=True)


def graph_node(page: Page, name: str):
    """The asset-graph node (an asset, or an expanded group's frame) labelled `name`."""
    return page.locator("svg foreignObject").filter(has=page.get_by_text(name, exact=True)).first


def open_materialize_dialog(page: Page, group: str | None):
    """From the lineage page: a group's *Materialize assets (n)* menu, or *Materialize all…*."""
    if group is None:
        page.get_by_role("button", name="Materialize all…").click()
    else:
        shown(page.locator("svg foreignObject"), group).click(button="right")  # the collapsed group
        page.get_by_role("menuitem", name=f"Materialize assets ({len(GROUPS[group])})").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog).to_be_visible()
    return dialog


def choose_partitions(dialog, first: str, last: str, count: int) -> None:
    """Types the range into the partition box, as the box's own placeholder suggests."""
    # The dialog starts on the last 90 days, which 2020 is not in.
    dialog.get_by_role("button", name="Show all partitions").click()
    box = dialog.get_by_role("textbox").first
    box.fill(f"[{first}...{last}]")
    box.press("Enter")
    expect(dialog.get_by_text(f"{count} partitions", exact=True)).to_be_visible()


def launch_backfill(page: Page, dialog) -> tuple[str, dict]:
    """Clicks *Launch backfill*: the backfill id and the `backfillParams` the UI sent."""

    def is_launch(response):
        return "/graphql" in response.url and "LaunchPartitionBackfill" in (response.request.post_data or "")

    with page.expect_response(is_launch) as answer:
        dialog.get_by_role("button", name="Launch backfill").click()
    sent = json.loads(answer.value.request.post_data)["variables"]["backfillParams"]
    result = answer.value.json()["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    expect(dialog).to_be_hidden()
    return result["backfillId"], sent


def test_an_operator_backfills_two_days_in_the_ui_and_sees_the_results(page, servers, screenshots):
    selected = GROUPS[SELECTED_GROUP] if SELECTED_GROUP else sum(GROUPS.values(), ())
    with screenshot_on_failure(page, screenshots / "failure.png"):
        open_ui(page, servers)
        open_lineage(page, servers)
        dialog = open_materialize_dialog(page, SELECTED_GROUP)
        choose_partitions(dialog, DAYS[0], DAYS[-1], count=len(DAYS))
        backfill_id, sent = launch_backfill(page, dialog)
        # The harness's launch_backfill sends exactly this.
        assert sent == ui_backfill_params(DAYS, sorted(selected))

        result = servers.wait_for_backfill(backfill_id, timeout=900)
        assert result.status == "COMPLETED_SUCCESS", f"{result}\n{result.error}\n{servers.log_tails()}"

        # The global lineage: every asset drawn inside its group's frame.
        open_lineage(page, servers)
        page.keyboard.press("Alt+e")  # the graph's shortcut for *Expand all groups*
        for names in GROUPS.values():
            for name in names:
                expect(graph_node(page, name)).to_be_visible()
        assert _drawn_in_their_groups(page), "an asset is not drawn inside its group's frame"
        expect(page.get_by_text("Loading...", exact=True)).to_have_count(0)  # live data in the nodes
        page.screenshot(path=str(screenshots / "ui-backfill.png"))
        if os.environ.get("CAPSTONE_UPDATE_SCREENSHOT") == "1":
            (REPO / "docs").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "docs" / "ui-backfill.png"))

        # The report's partitions: the backfilled days, and Monday's deferred report.
        page.goto(f"{servers.url}/assets/{RESULT_ASSET}?view=partitions", wait_until="domcontentloaded")
        expect(page.get_by_text(f"Materialized ({len(DAYS) + 1})", exact=True)).to_be_visible()
        page.get_by_text(re.compile(r"^Missing \(\d[\d,]*\)$")).click()  # list the materialized days only
        expect(page.get_by_role("checkbox", name=re.compile(r"^Missing \("))).not_to_be_checked()
        for day in [*DAYS, DEFERRED_DAY]:
            expect(shown(page, day)).to_be_visible()
        expect(shown(page, "2020-08-11")).to_have_count(0)  # landed, not backfilled: not listed
        shown(page, DAYS[-1]).click()
        expect(shown(page, "dagster/row_count")).to_be_visible()
        expect(shown(page, "preview")).to_be_visible()  # the report's first rows
        page.screenshot(path=str(screenshots / "ui-partitions.png"))
        assert servers.materialization_metadata(RESULT_ASSET, DEFERRED_DAY)["status"] == "deferred"

        # The report's checks: each day's blocking and warning checks passed.
        page.get_by_role("tab", name="Checks").click()
        expect(page).to_have_url(re.compile(r"view=checks"))
        assert servers.check_names(RESULT_ASSET) == REPORT_CHECKS
        for name in REPORT_CHECKS:
            expect(shown(page, name).first).to_be_visible()
        for name in ("one_row_per_quote", "close_pr_present"):
            for day in DAYS:
                [execution] = servers.check_executions(RESULT_ASSET, name, partition=day)
                assert execution["evaluation"]["success"], (name, day, execution)
        shown(page, "one_row_per_quote").first.click()
        expect(page.get_by_text("Passed").first).to_be_visible()
        page.screenshot(path=str(screenshots / "ui-checks.png"))


def _drawn_in_their_groups(page: Page, attempts: int = 20) -> bool:
    """Whether every asset's node lies inside its group's frame (polled: the layout animates)."""
    for _ in range(attempts):
        frames = {group: graph_node(page, group).bounding_box() for group in GROUPS}
        if all(
            _inside(graph_node(page, name).bounding_box(), frames[group])
            for group, names in GROUPS.items()
            for name in names
        ):
            return True
        page.wait_for_timeout(500)
    return False


def _inside(inner: dict | None, outer: dict | None) -> bool:
    if inner is None or outer is None:
        return False
    return (
        outer["x"] <= inner["x"]
        and outer["y"] <= inner["y"]
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"]
    )
