"""Debian's chromium driven by Playwright, for the page tests (test_page.py, test_review_page.py).

Never `playwright install` (it downloads a browser, and this machine is offline): `make test` installs
Debian's chromium (`make system-deps`), and the tests launch /usr/bin/chromium directly. A test module
calls ``require_chromium()`` before it imports playwright, then takes the ``browser``, ``problems`` and
``page`` fixtures by importing them; ``page`` needs the module's own ``base_url`` fixture.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # playwright may be missing: require_chromium() skips the module then
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 10_000
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def require_chromium() -> None:
    """Skip the calling test module when Debian's chromium or the playwright package is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium (as root)",
                    allow_module_level=True)
    if importlib.util.find_spec("playwright") is None:  # pragma: no cover - the test extra declares it
        pytest.skip("the playwright package is missing: pip install -e '.[test]'", allow_module_level=True)


# Named so that a module imports them under these names and uses them as `browser`, `problems`, `page`.
@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """One chromium for the test module."""
    from playwright.sync_api import sync_playwright  # here, not at the top: see require_chromium()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(name="problems")
def problems_fixture() -> list[str]:
    """JavaScript exceptions and Content-Security-Policy refusals seen by the page: must stay empty."""
    return []


@contextlib.contextmanager
def opened_page(browser: Browser, base_url: str, problems: list[str], **options) -> Iterator[Page]:
    """A page in a fresh context (``options`` go to the context) that reports its problems into ``problems``."""
    context = browser.new_context(base_url=base_url, **options)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}")
                if m.type == "error" and ("Content Security Policy" in m.text or "Refused" in m.text) else None)
        yield page
    finally:
        context.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser, base_url: str, problems: list[str]) -> Iterator[Page]:
    """A desktop-sized page, fresh for each test."""
    with opened_page(browser, base_url, problems, **DESKTOP) as page:
        yield page


def rect(locator: Locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, "element is not rendered"
    return box
