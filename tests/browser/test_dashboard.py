"""The dashboard in headless Chromium, against a running machinery: its API, its embedded worker, and the
example services on loopback.

Debian's Chromium is used, as Playwright cannot download its own here. Each page's screenshot is written to
a temporary folder, or with MACHINERY_SCREENSHOTS=1 to docs/images/ for the README. Every wait is one of
Playwright's assertions, which poll at short intervals.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from werkzeug.serving import make_server

from examples.services import DEFINITIONS, EXAMPLES, JsonService
from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from machinery.engine.model import HttpEndpoint, Service
from machinery.engine.state import StepStatus
from machinery.render import STATE_LOOKS
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.support import ScriptedService, free_port

pytestmark = pytest.mark.browser

IMAGES = (
    Path(__file__).parents[2] / "docs" / "images"
    if os.environ.get("MACHINERY_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "machinery-screenshots"
)
MESSAGE = "The Sun will rise in the morning !"

# Workflows that only some tests use, so that the screenshots show the examples alone.
FORM = {
    "name": "typed-form",
    "description": "Takes one input of each kind of form control",
    "services": ["upper"],
    "inputs": [
        {"name": "message", "type": "string", "description": "The text to shout"},
        {"name": "times", "type": "int", "description": "How many times"},
        {"name": "loud", "type": "bool", "required": False, "default": True},
        {"name": "tags", "type": "array", "items": "string", "required": False},
    ],
    "outputs": [{"name": "message", "type": "string"}],
}
APPROVAL = json.loads((DEFINITIONS / "workflow-approval.json").read_text())
FLAKY = {
    "name": "flaky",
    "description": "Refuses its first call, then answers",
    "services": ["refuses-once"],
    "inputs": [{"name": "message", "type": "string"}],
    "outputs": [{"name": "message", "type": "string"}],
}


def definition(name: str) -> dict[str, Any]:
    return dict(json.loads((DEFINITIONS / name).read_text()))


def service_at(name: str, url: str) -> Service:
    service: Service = ServiceSchema().load(definition(f"service-{name}.json"))
    return replace(service, endpoint=HttpEndpoint(url))


@pytest.fixture(scope="module")
def machinery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machinery]:
    """A machinery with its workers in this process, and the example services (on loopback) and workflow."""
    servers = [JsonService("127.0.0.1", free_port(), handle).start() for _, handle in EXAMPLES.values()]
    machinery = Machinery(Config(data_dir=tmp_path_factory.mktemp("data")))
    for name, server in zip(EXAMPLES, servers, strict=True):
        machinery.registry.add_service(service_at(name, server.url))
    machinery.registry.add_workflow(WorkflowSchema().load(definition("workflow-process-text.json")))
    # Each test registers its own "refuses-once" at a new address: the workers must not call the one before
    # from the definitions they otherwise cache for two seconds.
    machinery.runner.services.ttl = 0
    machinery.start_embedded_worker()
    yield machinery
    machinery.stop()
    machinery.store.close()
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def base_url(machinery: Machinery) -> Iterator[str]:
    """Where ``machinery`` serves its API and the dashboard."""
    server = make_server("127.0.0.1", free_port(), create_app(machinery), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()


@pytest.fixture
def more_workflows(machinery: Machinery) -> Iterator[None]:
    """The workflows above, and the service refusing its first call, for one test; removed afterwards."""
    refuses_once = ScriptedService([(400, {"message": "not now"}), (200, {"message": "now"})]).start()
    registry = machinery.registry
    registry.add_service(replace(service_at("upper", refuses_once.url), name="refuses-once", concurrency=2))
    for workflow in (FORM, APPROVAL, FLAKY):
        registry.add_workflow(WorkflowSchema().load(workflow))
    yield
    for workflow in (FORM, APPROVAL, FLAKY):
        registry.delete_workflow(workflow["name"])
    registry.delete_service("refuses-once")
    refuses_once.stop()


class Shouter:
    """A service shouting each word, but refusing those of ``refused`` until it is fixed. The refused words (two,
    in the first lane of a map) wait for each other to be called, so that both have failed by the time the
    event has."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.together = threading.Barrier(len(refused), timeout=10)
        self.fixed = False
        self.service = ScriptedService([self.answer]).start()

    def answer(self, payload: dict[str, Any]) -> tuple[int, Any]:
        if payload["message"] in self.refused and not self.fixed:
            self.together.wait()
            return 400, {"message": f"cannot shout {payload['message']}"}
        return 200, {"message": payload["message"].upper()}


@pytest.fixture
def shouter(machinery: Machinery) -> Iterator[Shouter]:
    """A workflow "shout-all" mapping "shout" over its words, 4 at once; the service refuses "w1" and "w2"."""
    shouter = Shouter({"w1", "w2"})
    text = [{"name": "message", "type": "string"}]
    machinery.registry.add_service(
        ServiceSchema().load({"name": "shout", "address": shouter.service.url, "inputs": text, "outputs": text})
    )
    step = {"id": "each", "kind": "map", "service": "shout", "items": "$.input.words", "item": "message"}
    machinery.registry.add_workflow(
        WorkflowSchema().load(
            {
                "name": "shout-all",
                "inputs": [{"name": "words", "type": "array", "items": "string"}],
                "steps": [step | {"concurrency": 4}],
            }
        )
    )
    yield shouter
    machinery.registry.delete_workflow("shout-all")
    machinery.registry.delete_service("shout")
    shouter.service.stop()


def screenshot(page: Page, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky top bar is drawn where the page was scrolled to
    page.screenshot(path=IMAGES / name, full_page=True)


def send_from_form(page: Page, **values: str) -> None:
    """On a workflow's page, fill the form with ``values`` and send the event; the event's page opens."""
    for name, value in values.items():
        page.fill(f"#input-{name}", value)
    page.get_by_role("button", name="Send event").click()
    expect(page).to_have_url(re.compile(r"#/events/[0-9a-f]{32}$"))


def graph_node(page: Page, step: str) -> Locator:
    return page.locator(f"#event-graph svg g#step-{step}")


def expect_painted(page: Page, step: str, status: StepStatus) -> None:
    """The step's node on the event's graph says ``status`` and has its colour."""
    node = graph_node(page, step)
    expect(node).to_have_class(re.compile(rf"\b{status}\b"))
    expect(node.locator("path, polygon").first).to_have_attribute("fill", STATE_LOOKS[status].fill)


def test_the_services_page_shows_each_service_with_its_typed_contract(page: Page) -> None:
    page.goto("/#/services")
    expect(page.locator(".service h2")).to_have_text(["reverse", "space-counter", "upper"])
    counter = page.locator("#service-space-counter")
    expect(counter).to_contain_text("Counts the spaces in a text")
    expect(counter.locator("code").filter(has_text="message")).to_be_visible()
    expect(counter.locator(".badge.type")).to_have_text(["string", "int"])
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Services")
    screenshot(page, "dashboard-services.png")


def test_the_workflows_page_lists_each_workflow_with_its_steps_and_typed_signature(page: Page) -> None:
    page.goto("/#/workflows")
    row = page.locator("table.list tbody tr").filter(has_text="process-text")
    expect(row.locator("td")).to_have_text(
        [re.compile(r"^process-text v1"), "3", "message: string", "message: string, space_count: int"]
    )
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Workflows")


def test_every_page_loads_without_an_error_in_the_browsers_console(page: Page, console_errors: list[str]) -> None:
    """A module the server does not find, or a name a page uses but does not import, shows up here."""
    event_id = page.request.post("/e/process-text", data={"data": {"message": "quiet"}}).json()["event_id"]
    pages = {
        "#/services": ".service",
        "#/executables": ".empty",
        "#/workflows": "table.list",
        "#/workflows/process-text": "#workflow-graph svg",
        "#/events": "table.list tbody tr",
        f"#/events/{event_id}": "#event-graph svg",
    }
    for fragment, shown in pages.items():
        page.goto(f"/{fragment}")
        expect(page.locator(shown).first).to_be_visible()
    assert console_errors == []


def test_an_event_sent_from_the_workflow_page_runs_to_completion_on_its_live_graph(page: Page) -> None:
    page.goto("/")
    page.get_by_role("link", name="process-text").click()
    expect(page.locator("#workflow-graph svg g#step-upper")).to_contain_text("message: string")

    send_from_form(page, message=MESSAGE)
    expect(page.locator("#event-status")).to_have_text("completed")
    for step in ("upper", "reverse", "space-counter"):
        expect_painted(page, step, StepStatus.COMPLETED)
    expect(page.locator(".timeline .badge.status")).to_have_text(["completed"] * 3)
    expect(page.locator("#event-outputs")).to_contain_text('"space_count": 7')
    expect(page.locator(".page-header .lead")).to_have_text(
        re.compile(r"^workflow process-text v1 · created .+ · took \d+(\.\d+)? m?s$")
    )
    expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
    upper = page.locator("#timeline-upper")
    upper.locator("summary", has_text="outputs").click()
    expect(upper.locator("details[open] pre")).to_have_text(json.dumps({"message": MESSAGE.upper()}, indent=2))
    screenshot(page, "dashboard-event.png")

    page.go_back()
    expect(page.locator(".card").filter(has_text="Recent events").locator(".badge.status").first).to_have_text(
        "completed"
    )
    screenshot(page, "dashboard-workflow.png")


@pytest.mark.usefixtures("more_workflows")
def test_the_form_has_a_control_for_each_type_and_shows_why_an_event_is_refused(page: Page) -> None:
    page.goto("/#/workflows/typed-form")
    expect(page.locator("#input-message")).to_have_attribute("type", "text")
    expect(page.locator("#input-times")).to_have_attribute("type", "number")
    expect(page.locator("#input-loud")).to_be_checked()
    expect(page.locator("#input-tags")).to_have_attribute("placeholder", "JSON")

    page.fill("#input-tags", "[not json")
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#input-tags-error")).to_have_text("not JSON: write [1, 2]")

    page.fill("#input-tags", '["a", "b"]')
    page.get_by_role("button", name="Send event").click()
    expect(page.get_by_role("alert")).to_contain_text("the data does not match the inputs of workflow 'typed-form'")
    expect(page.locator("#input-times-error")).to_have_text("'times' is required")
    expect(page.locator("#input-times")).to_have_attribute("aria-invalid", "true")

    page.fill("#input-times", "3")
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#event-status")).to_have_text("completed")


@pytest.mark.usefixtures("more_workflows")
def test_a_waiting_event_goes_on_once_its_signal_is_sent_from_its_page(page: Page) -> None:
    page.goto("/#/workflows/approval")
    send_from_form(page, document="plan")
    expect(page.locator("#event-status")).to_have_text("waiting")
    expect_painted(page, "review", StepStatus.WAITING)

    page.fill("#signal-name", "reviewed")
    page.fill("#signal-body", '{"approved": true}')
    page.get_by_role("button", name="Send signal").click()
    expect(page.locator("#event-status")).to_have_text("completed")
    expect_painted(page, "verdict", StepStatus.COMPLETED)
    expect(page.locator("#event-outputs")).to_contain_text('"verdict": "plan approved"')


@pytest.mark.usefixtures("more_workflows")
def test_an_unfinished_event_can_be_cancelled_from_its_page(page: Page) -> None:
    page.goto("/#/workflows/approval")
    send_from_form(page, document="draft")
    expect(page.locator("#event-status")).to_have_text("waiting")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#event-status")).to_have_text("cancelled")
    expect_painted(page, "review", StepStatus.CANCELLED)
    expect(page.get_by_role("button", name="Retry")).to_be_disabled()


def test_a_finished_event_can_be_run_again_from_its_page_as_a_new_event(page: Page) -> None:
    first = page.request.post("/e/process-text", data={"data": {"message": "once more"}}).json()["event_id"]
    page.goto(f"/#/events/{first}")
    expect(page.locator("#event-status")).to_have_text("completed")

    page.get_by_role("button", name="Rerun").click()

    expect(page).not_to_have_url(re.compile(rf"#/events/{first}$"))
    expect(page).to_have_url(re.compile(r"#/events/[0-9a-f]{32}$"))
    expect(page.locator("#event-status")).to_have_text("completed")
    expect(page.locator("#event-outputs")).to_contain_text('"space_count": 1')


@pytest.mark.usefixtures("more_workflows")
def test_an_event_can_be_paused_and_resumed_from_its_page(page: Page) -> None:
    page.goto("/#/workflows/approval")
    send_from_form(page, document="memo")
    expect(page.locator("#event-status")).to_have_text("waiting")
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()

    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#event-status")).to_have_text("paused")
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()

    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#event-status")).to_have_text("waiting")
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()


@pytest.mark.usefixtures("more_workflows")
def test_a_failed_event_shows_why_and_can_be_retried_from_its_page(page: Page) -> None:
    page.goto("/#/workflows/flaky")
    send_from_form(page, message="hello")
    expect(page.locator("#event-status")).to_have_text("failed")
    expect_painted(page, "refuses-once", StepStatus.FAILED)
    expect(page.get_by_role("alert").first).to_contain_text("step 'refuses-once' failed")
    expect(graph_node(page, "refuses-once")).to_contain_text("answered 400")

    page.get_by_role("button", name="Retry").click()
    expect(page.locator("#event-status")).to_have_text("completed")
    expect_painted(page, "refuses-once", StepStatus.COMPLETED)
    expect(page.locator("#timeline-refuses-once")).to_contain_text("2 attempts")
    page.goto("/#/services")
    expect(page.locator("#service-refuses-once footer")).to_contain_text("at most 2 calls at once")


def test_the_events_page_filters_by_workflow_and_status(page: Page) -> None:
    assert page.request.post("/e/process-text", data={"data": {"message": "a b"}}).status == 202
    page.goto("/#/events")
    page.select_option("#filter-workflow", "process-text")
    expect(page).to_have_url(re.compile(r"#/events\?workflow=process-text$"))
    page.select_option("#filter-status", "completed")
    expect(page).to_have_url(re.compile(r"#/events\?workflow=process-text&status=completed$"))
    rows = page.locator("table.list tbody tr")
    expect(rows).not_to_have_count(0)
    expect(rows.filter(has_not_text="process-text")).to_have_count(0)
    expect(rows.filter(has_not=page.locator(".status-completed"))).to_have_count(0)


def test_the_events_page_goes_to_older_events_by_cursor_and_back(page: Page, machinery: Machinery) -> None:
    for n in range(41):
        machinery.events.submit("process-text", {"message": f"page {n}"})
    page.goto("/#/events")
    pager = page.locator(".pager")
    expect(pager).to_contain_text("page 1 of")
    first = page.locator("table.list tbody tr td a.mono").first
    newest = first.inner_text()

    page.get_by_role("button", name="Older →").click()
    expect(page).to_have_url(re.compile(r"#/events\?cursor=[^&]+&n=2$"))
    expect(pager).to_contain_text("page 2 of")
    expect(first).not_to_have_text(newest)

    page.get_by_role("button", name="← Newer").click()
    expect(pager).to_contain_text("page 1 of")
    expect(first).to_have_text(newest)


def test_the_events_page_finds_events_by_their_data_and_says_why_a_filter_is_refused(page: Page) -> None:
    marked = page.request.post("/e/process-text", data={"data": {"message": "find me"}}).json()["event_id"]
    assert page.request.post("/e/process-text", data={"data": {"message": "not me"}}).status == 202
    page.goto("/#/events")
    page.fill("#filter-data", '{"message": "find me"}')
    page.press("#filter-data", "Enter")

    rows = page.locator("table.list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(marked[:12])
    page.fill("#filter-data", "[1]")
    page.press("#filter-data", "Enter")
    expect(page.get_by_role("alert")).to_contain_text("should be a JSON object, not array")


@pytest.mark.usefixtures("more_workflows")
def test_the_failed_events_of_a_workflow_can_be_retried_at_once_from_the_events_page(page: Page) -> None:
    event_id = page.request.post("/e/flaky", data={"data": {"message": "hi"}}).json()["event_id"]
    page.goto("/#/events?workflow=flaky&status=failed")
    expect(page.locator("table.list tbody tr").filter(has_text=event_id[:8])).to_have_count(1)

    page.get_by_role("button", name="Retry them all").click()

    expect(page.locator("#events-feedback")).to_have_text("Retried 1 event.")
    expect(page.locator("table.list tbody tr").filter(has_text=event_id[:8])).to_have_count(0)
    page.goto(f"/#/events/{event_id}")
    expect(page.locator("#event-status")).to_have_text("completed")


def test_a_map_shows_the_progress_and_failed_items_of_its_step_and_a_retry_runs_only_those(
    page: Page, shouter: Shouter
) -> None:
    words = [f"w{i}" for i in range(20)]
    event_id = page.request.post("/e/shout-all", data={"data": {"words": words}}).json()["event_id"]
    page.goto(f"/#/events/{event_id}")
    expect(page.locator("#event-status")).to_have_text("failed")
    step = page.locator("#timeline-each")
    expect(step.locator(".items-done")).to_have_text(re.compile(r"^\d+ of 20 items done, 2 failed$"))
    expect(step.locator(".items-bar .status-failed")).to_have_attribute("style", "width: 10%;")
    expect(step.locator(".items-counts .status-failed")).to_have_text("2 failed")
    expect(step.locator(".failed-items li")).to_have_text(
        [re.compile(rf"^#{i} .*cannot shout w{i}.* · 1 attempt$") for i in (1, 2)]
    )
    expect(step.locator(".failed-items")).to_contain_text("Retry runs only the failed items again.")
    screenshot(page, "dashboard-map.png")

    shouter.fixed = True
    page.get_by_role("button", name="Retry").click()

    expect(page.locator("#event-status")).to_have_text("completed")
    expect(step.locator(".items-done")).to_have_text("20 of 20 items done")
    expect(step.locator(".items-bar > span")).to_have_count(1)
    expect(step.locator(".items-bar .status-completed")).to_have_attribute("style", "width: 100%;")
    expect(step.locator(".items-counts .badge")).to_have_text(["20 completed"])
    expect(step.locator(".failed-items")).to_have_count(0)
    calls = Counter(call["message"] for call in shouter.service.calls)
    assert calls == Counter(words + ["w1", "w2"]), "a retry runs the failed items again, and only those"


@pytest.fixture
def child_workflow(machinery: Machinery) -> Iterator[None]:
    """``shout-summary``, which runs ``process-text`` as a child event, for one test."""
    machinery.registry.add_workflow(WorkflowSchema().load(definition("workflow-shout-summary.json")))
    yield
    machinery.registry.delete_workflow("shout-summary")


@pytest.mark.usefixtures("child_workflow")
def test_a_parent_links_to_its_child_event_and_the_child_back_to_its_parent(page: Page) -> None:
    parent_id = page.request.post("/e/shout-summary", data={"data": {"headline": "a b c"}}).json()["event_id"]
    page.goto(f"/#/events/{parent_id}")
    expect(page.locator("#event-status")).to_have_text("completed")
    expect(page.locator("#event-outputs")).to_contain_text('"spaces": 2')
    expect(page.locator("#timeline-process")).to_contain_text("workflow · process-text")

    page.locator("#timeline-process a.child-link").click()

    expect(page).not_to_have_url(re.compile(rf"#/events/{parent_id}$"))
    expect(page.locator("#event-status")).to_have_text("completed")
    expect(page.locator(".lead")).to_contain_text("child of event")
    expect(page.locator("#event-outputs")).to_contain_text('"space_count": 2')
    page.locator("#event-parent").click()
    expect(page).to_have_url(re.compile(rf"#/events/{parent_id}$"))
