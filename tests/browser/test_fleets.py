"""The fleets pages in headless Chromium, against the running machinery of test_dashboard.py hosting a fleet:
the counts by state, the spread over hosts, the workloads filtered, the events, and a workload's history."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from machinery.bootstrap import Machinery
from machinery.engine.fleets import Fleet, FleetSettings, Workload, WorkloadState
from tests.browser.test_dashboard import base_url, machinery, screenshot
from tests.support import wait_for

__all__ = ["base_url", "machinery"]  # the module's fixtures, for pytest

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def fleet(machinery: Machinery) -> Iterator[None]:
    """Five workloads of a simulated fleet, one of them down, hosted by this process as ``h1``."""
    settings = FleetSettings(ping_interval=0.3, dead_after=1, dead_cooldown=30)
    machinery.fleets.add_fleet(Fleet("routers", "simulated", settings))
    workloads = [Workload("routers", f"r{i}", labels={"site": "lund" if i < 3 else "oslo"}) for i in range(4)]
    machinery.fleets.add_workloads("routers", [*workloads, Workload("routers", "r9", config={"down": True})])
    machinery.start_fleet_host("h1")

    def settled() -> bool:
        counts = machinery.store.count_workloads("routers")
        return counts.get(("routers", "h1", WorkloadState.UP.value)) == 4 and bool(
            counts.get(("routers", "h1", WorkloadState.DEAD.value))
        )

    wait_for(settled, timeout=20, what="four workloads up and one dead")
    yield


def test_the_fleet_pages_show_counts_spread_workloads_events_and_a_workload_s_history(page: Page) -> None:
    page.goto("/")
    page.get_by_role("link", name="Fleets").click()
    routers = page.locator("#fleet-routers")
    expect(routers.locator(".count-up")).to_have_text("4")
    expect(routers.locator(".count-dead")).to_have_text("1")

    routers.get_by_role("link", name="routers").click()
    expect(page.locator(".host-bars .host-name")).to_have_text(["h1"])
    expect(page.locator("table.workloads tbody tr")).to_have_count(5)
    expect(page.locator("table.lifecycle").first).to_contain_text("initialized")
    screenshot(page, "dashboard-fleet.png")

    page.locator("select[name=state]").select_option("dead")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.workloads tbody tr")).to_have_count(1)
    expect(page.locator("table.workloads")).to_contain_text("r9 is down")

    page.locator("select[name=state]").select_option("")
    page.locator("input[name=label]").fill("site=oslo")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.workloads tbody tr")).to_have_count(1)

    page.locator("table.workloads").get_by_role("link", name="r3").click()
    expect(page.locator(".workload-state")).to_contain_text("up on h1")
    expect(page.locator("table.lifecycle tbody tr")).to_have_count(2)  # added, initialized
