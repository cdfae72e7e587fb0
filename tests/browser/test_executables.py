"""The executables page in headless Chromium: parameters, the drawing of the rules, and the live check of a
combination; and command services on the services page."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from examples.services import DEFINITIONS
from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from machinery.validation import ExecutableSchema, ServiceSchema
from tests.support import free_port

pytestmark = pytest.mark.browser


def definition(name: str) -> dict[str, Any]:
    return dict(json.loads((DEFINITIONS / "commands" / name).read_text()))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API and dashboard of a machinery that knows GNU sort and the service sorting lines with it."""
    config = Config(data_dir=tmp_path_factory.mktemp("data"), commands_allowed=(Path("/usr/bin"),))
    machinery = Machinery(config)
    machinery.registry.add_executable(ExecutableSchema().load(definition("executable-sort.json")))
    machinery.registry.add_service(ServiceSchema().load(definition("service-sort-lines.json")))
    server = make_server("127.0.0.1", free_port(), create_app(machinery), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    machinery.store.close()


def test_the_executables_page_shows_parameters_and_draws_both_kinds_of_rules(
    page: Page, console_errors: list[str]
) -> None:
    page.goto("/#/executables")
    sort = page.locator("#executable-sort")
    expect(sort.locator("h2")).to_have_text("sort")
    expect(sort.locator("code.address")).to_have_text("/usr/bin/sort")
    expect(sort.locator("tr[data-flag='--stable'] td").nth(2)).to_have_text("--key")
    expect(sort.locator("tr[data-flag='--month-sort'] td").nth(3)).to_have_text("")
    expect(sort.locator("#rules-sort svg g.edge.requires")).to_have_count(2)
    expect(sort.locator("#rules-sort svg g.edge.conflicts")).to_have_count(6)
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Executables")
    assert console_errors == []


def test_a_combination_is_checked_as_flags_are_ticked(page: Page) -> None:
    page.goto("/#/executables")
    sort = page.locator("#executable-sort")

    sort.get_by_label("--stable").check()
    expect(sort.locator(".combination-answer")).to_contain_text(
        "--field-separator is missing: --stable requires --key, which requires --field-separator"
    )

    sort.get_by_label("--key").check()
    sort.get_by_label("--field-separator").check()
    expect(sort.locator(".combination-answer")).to_have_text("argv: /usr/bin/sort --field-separator --key --stable")

    sort.get_by_label("--numeric-sort", exact=True).check()
    sort.get_by_label("--month-sort").check()
    expect(sort.locator(".combination-answer")).to_contain_text("--numeric-sort conflicts with --month-sort")


def test_a_command_service_shows_the_line_it_runs(page: Page) -> None:
    page.goto("/#/services")
    service = page.locator("#service-sort-lines")
    expect(service.locator(".badge.method")).to_have_text("command")
    expect(service.locator("code.address")).to_have_text(
        '$ sort --stable --key <key> --field-separator " " --ignore-case < <message>'
    )
