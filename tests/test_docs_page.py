"""The API reference at /docs works offline: Swagger UI comes from the service, never from a CDN.

Chromium loads the page with every request to anything but the service refused, as on a network
with no way out, and must still list the API's operations.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from browser import require_chromium

require_chromium()

from browser import browser_fixture, opened_page, problems_fixture  # noqa: E402, F401
from flexguard.service.settings import Settings  # noqa: E402
from live_server import serving  # noqa: E402


@pytest.fixture(scope="module")
def base_url(tiny_model_path: Path):
    with serving(Settings(model_path=tiny_model_path)) as (base, _app):
        yield base


def test_the_reference_lists_the_operations_with_the_network_cut(browser, base_url, problems):
    service = urlparse(base_url).netloc
    outside: list[str] = []

    def only_the_service(route):
        if urlparse(route.request.url).netloc == service:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with opened_page(browser, base_url, problems) as page:
        page.route("**/*", only_the_service)
        page.goto("/docs")
        operations = page.locator(".opblock-summary-path")
        operations.first.wait_for()
        listed = " ".join(operations.all_inner_texts()).replace("\u200b", "")  # Swagger UI breaks paths with these
    assert all(path in listed for path in ("/v1/score", "/v1/model", "/v1/submissions"))
    assert outside == []  # nothing was even asked of another host
    assert problems == []
