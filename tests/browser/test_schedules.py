"""The schedules page in headless Chromium, against the running machinery of test_dashboard.py (its embedded
worker runs the scheduler): each schedule with its next runs and the events it made; pause, resume, delete."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from machinery.bootstrap import Machinery
from machinery.engine.timetable import Overlap
from machinery.schedules import NewSchedule
from tests.browser.test_dashboard import base_url, machinery, screenshot

__all__ = ["base_url", "machinery"]  # the module's fixtures, for pytest

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def schedules(machinery: Machinery) -> Iterator[None]:
    """One schedule every second, and one at 9:30 on weekdays in New York, paused; deleted afterwards."""
    data = {"message": "tick tock"}
    machinery.schedules.create(
        NewSchedule(name="ticker", workflow="process-text", data=data, interval=1, overlap=Overlap.ALLOW)
    )
    machinery.schedules.create(
        NewSchedule(
            name="weekday-mornings",
            workflow="process-text",
            data=data,
            cron="30 9 * * 1-5",
            timezone="America/New_York",
            paused=True,
        )
    )
    yield
    for schedule in machinery.schedules.list_schedules(offset=0, limit=100).items:
        machinery.schedules.delete(schedule.id)


def test_the_schedules_page_shows_each_schedule_its_next_runs_and_the_events_it_made(page: Page) -> None:
    errors: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", note)
    page.goto("/")
    page.get_by_role("link", name="Schedules").click()
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Schedules")
    expect(page.locator(".schedule h2")).to_have_text(["ticker", "weekday-mornings"])

    ticker = page.locator("#schedule-ticker")
    expect(ticker.locator(".recurrence")).to_contain_text("every 1 second")
    expect(ticker.locator(".schedule-state")).to_have_text("running")
    expect(ticker.locator(".next-runs li")).to_have_count(5)
    # The embedded worker's scheduler sends the runs; the page lists their events as they run.
    expect(ticker.locator("table.list tbody tr .status-completed").first).to_be_visible()
    expect(ticker.locator(".tally")).to_contain_text(re.compile(r"^\d+ runs? · 0 skipped"))

    mornings = page.locator("#schedule-weekday-mornings")
    expect(mornings.locator(".recurrence")).to_contain_text("30 9 * * 1-5 (America/New_York)")
    expect(mornings.locator(".schedule-state")).to_have_text("paused")
    expect(mornings).to_contain_text("Next runs once resumed")
    expect(mornings.locator(".next-runs li")).to_have_count(5)
    expect(mornings).to_contain_text("No events yet.")
    screenshot(page, "dashboard-schedules.png")
    assert errors == []


def test_an_admin_pauses_resumes_and_deletes_a_schedule_from_the_page(page: Page, machinery: Machinery) -> None:
    page.goto("/#/schedules")
    ticker = page.locator("#schedule-ticker")
    ticker.get_by_role("button", name="Pause").click()
    expect(ticker.locator(".schedule-state")).to_have_text("paused")
    assert machinery.schedules.get("ticker").paused

    ticker.get_by_role("button", name="Resume").click()
    expect(ticker.locator(".schedule-state")).to_have_text("running")

    page.once("dialog", lambda dialog: dialog.accept())
    ticker.get_by_role("button", name="Delete").click()
    expect(page.locator(".schedule h2")).to_have_text(["weekday-mornings"])
