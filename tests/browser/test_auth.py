"""The dashboard in headless Chromium, against an API that asks for a bearer token.

Every wait is one of Playwright's assertions, which poll at short intervals.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery, Role
from machinery.validation import WorkflowSchema
from tests.browser.test_dashboard import definition, service_at
from tests.support import free_port

pytestmark = pytest.mark.browser

TOKEN = "the-right-token"
READER_TOKEN = "a-readers-token"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where a machinery configured with an admin's ``TOKEN`` and ``READER_TOKEN`` serves its API and the
    dashboard; it runs no worker, and its one event stays accepted."""
    tokens = {TOKEN: Role.ADMIN, READER_TOKEN: Role.READER}
    machinery = Machinery(Config(data_dir=tmp_path_factory.mktemp("data"), api_tokens=tokens))
    for name in ("upper", "reverse", "space-counter"):
        machinery.registry.add_service(service_at(name, f"http://127.0.0.1:9/{name}"))
    machinery.registry.add_workflow(WorkflowSchema().load(definition("workflow-process-text.json")))
    machinery.events.submit("process-text", {"message": "a b"}, None)
    server = make_server("127.0.0.1", free_port(), create_app(machinery), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    machinery.store.close()


def sign_in(page: Page, token: str) -> None:
    page.fill("#api-token", token)
    page.get_by_role("button", name="Sign in").click()


def test_the_dashboard_asks_for_a_token_refuses_a_wrong_one_and_forgets_it_on_sign_out(page: Page) -> None:
    sign_out = page.get_by_role("link", name="Sign out")
    page.goto("/#/services")
    expect(page.locator("#api-token")).to_have_attribute("type", "password")
    expect(sign_out).to_be_hidden()

    sign_in(page, "a-wrong-token")
    expect(page.get_by_role("alert")).to_have_text("the bearer token is not valid")
    expect(page.locator("#api-token")).to_be_visible()
    expect(sign_out).to_be_hidden()

    sign_in(page, TOKEN)
    expect(page.locator(".service h2")).to_have_text(["reverse", "space-counter", "upper"])
    expect(sign_out).to_be_visible()
    page.reload()
    expect(page.locator(".service h2")).to_have_text(["reverse", "space-counter", "upper"])

    page.get_by_role("link", name="Workflows").click()
    page.get_by_role("link", name="process-text").click()
    expect(page.locator("#workflow-graph svg g#step-upper")).to_contain_text("message: string")

    sign_out.click()
    expect(page.locator("#api-token")).to_be_visible()
    expect(sign_out).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.parametrize(("token", "acts"), [(READER_TOKEN, False), (TOKEN, True)], ids=["reader", "admin"])
def test_the_dashboard_shows_the_actions_of_the_tokens_role_only(page: Page, token: str, acts: bool) -> None:
    def expect_buttons(*names: str) -> None:
        for name in names:
            expect(page.get_by_role("button", name=name, exact=True)).to_have_count(1 if acts else 0)

    page.goto("/#/events?workflow=process-text&status=failed")
    sign_in(page, token)
    expect(page.locator(".pager")).to_contain_text("page 1 of 1")
    expect_buttons("Retry them all")

    page.goto("/#/events")
    page.locator("td a.mono").click()
    expect(page.locator("#event-status")).to_have_text("accepted")
    expect_buttons("Cancel", "Pause", "Resume", "Retry", "Rerun", "Send signal")

    page.goto("/#/workflows/process-text")
    expect(page.locator("#workflow-graph svg")).to_be_visible()
    expect_buttons("Send event")
