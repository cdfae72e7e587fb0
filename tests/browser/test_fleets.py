"""The fleets pages in headless Chromium, against the running machinery of test_dashboard.py hosting a fleet:
the counts by state, the spread over hosts, the workloads filtered, the events, and a workload's history; a task
run ad hoc from the fleet's page, followed on its event's page by workload, and listed among the fleet's runs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from machinery.bootstrap import Machinery
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Workload, WorkloadState
from machinery.engine.model import Field
from machinery.engine.types import FieldType
from tests.browser.test_dashboard import base_url, machinery, screenshot
from tests.support import wait_for

__all__ = ["base_url", "machinery"]  # the module's fixtures, for pytest

pytestmark = pytest.mark.browser


MESSAGE = "hello, routers"
# The simulated driver's task echoes its arguments.
ECHO = FleetTask(
    "echo",
    inputs=(Field("message", FieldType("string"), "What each router says back"),),
    outputs=(Field("message", FieldType("string")),),
)


@pytest.fixture(scope="module", autouse=True)
def fleet(machinery: Machinery) -> Iterator[None]:
    """Five workloads of a simulated fleet with a task, one of them down, hosted by this process as ``h1``."""
    settings = FleetSettings(ping_interval=0.3, dead_after=1, dead_cooldown=30)
    machinery.fleets.add_fleet(Fleet("routers", "simulated", settings, tasks=(ECHO,)))
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


def test_a_task_run_from_the_fleet_page_shows_each_workload_s_result_or_why_it_was_skipped(
    page: Page, console_errors: list[str]
) -> None:
    page.goto("/#/fleets/routers")
    expect(page.locator("#task-echo")).to_contain_text("message")
    page.fill("#input-message", MESSAGE)
    page.get_by_role("button", name="Run task").click()
    expect(page).to_have_url(re.compile(r"#/events/[0-9a-f]{32}$"))

    expect(page.locator("#event-status")).to_have_text("completed")
    step = page.locator("#timeline-run")
    expect(step.locator(".step-fleet")).to_have_text("routers · task echo")
    rows = step.locator(".fleet-items tbody tr")
    expect(rows).to_have_count(5)
    for name in ("r0", "r1", "r2", "r3"):
        expect(rows.filter(has_text=name).locator(".badge")).to_have_text("completed")
        expect(rows.filter(has_text=name).locator(".item-result")).to_contain_text(MESSAGE)
    down = rows.filter(has_text="r9")
    expect(down.locator(".badge")).to_have_text("skipped")
    expect(down.locator(".item-result")).to_have_text("not up: dead (r9 is down)")
    screenshot(page, "dashboard-fleet-task.png")

    step.locator("select.item-filter").select_option("skipped")
    expect(rows).to_have_count(1)
    step.locator("select.item-filter").select_option("failed")
    expect(rows).to_have_count(0)
    expect(step.locator(".fleet-items")).to_contain_text("No item in this status.")

    step.locator("select.item-filter").select_option("all")
    rows.get_by_role("link", name="r3").click()
    expect(page.locator(".workload-state")).to_contain_text("up on h1")
    assert console_errors == []


def test_the_fleet_page_lists_the_task_s_runs_newest_first_with_their_counts(page: Page) -> None:
    sent = page.request.post("/fleets/routers/tasks", data={"task": "echo", "args": {"message": MESSAGE}})
    assert sent.status == 202, sent.text()
    event_id = sent.json()["event_id"]
    refused = page.request.post("/fleets/routers/tasks", data={"task": "echo", "args": {}})
    assert refused.status == 422, refused.text()

    page.goto("/#/fleets/routers")
    run = page.locator("#fleet-runs tbody tr").first
    expect(run.get_by_role("link")).to_have_text(event_id[:12])
    expect(run).to_contain_text("echo")
    expect(run.locator(".badge")).to_have_text("completed")
    expect(run.locator(".count")).to_have_text(["4", "1", "0"])
    screenshot(page, "dashboard-fleet-tasks.png")

    page.locator("#task-selector").fill("site")
    page.get_by_role("button", name="Run task").click()
    expect(page.locator("#task-selector-error")).to_contain_text("key=value")
    page.locator("#task-selector").fill("-site=oslo")  # a label's key starts with a letter or a digit
    page.get_by_role("button", name="Run task").click()
    expect(page.locator(".form-result .alert")).to_contain_text("selector")
    expect(page).to_have_url(re.compile(r"#/fleets/routers$"))
