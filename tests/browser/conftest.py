"""What every browser test needs: Debian's Chromium, headless, and a fresh page on the module's ``base_url``.

Playwright cannot download its own Chromium here; ``scripts/install --dev`` installs Debian's. Elsewhere,
``MACHINERY_TEST_CHROMIUM`` names another Chromium or Chrome binary (as on GitHub's Ubuntu runners, whose
``chromium`` package is a snap).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path(os.environ.get("MACHINERY_TEST_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: install it with scripts/install --dev, or set MACHINERY_TEST_CHROMIUM"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the browser tests")
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A page of a new browser context; ``base_url`` is each module's own fixture."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    """What the page logs as errors in the browser's console, and the errors it throws, as they come."""
    errors: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", note)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors
