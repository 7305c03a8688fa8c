"""API keys: with keys configured every route needs one except /healthz, /readyz and the page shell;
wrong or missing keys get the same 401 in the same time; keys never reach the logs.

The try-it page (``/`` and ``/static/*``) stays public: a browser cannot send a header when it loads
a page, the shell holds no data (the same HTML/JS/CSS for everyone), and every call it makes to /v1
carries the key typed into it. /metrics, /docs and /openapi.json need the key.
"""

from __future__ import annotations

import hmac
import logging
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flexguard.service.auth import is_public
from flexguard.service.state import of_app
from flexguard.service import auth
from flexguard.service.app import create_app
from flexguard.service.settings import Settings

KEY = "k-7f3a9c1e5b2d4f60a8c3e1b9d7f5a3c1"
OTHER_KEY = "k-second-0123456789"
PUBLIC = ["/healthz", "/readyz", "/", "/review", "/favicon.ico", "/static/app.js", "/static/style.css", "/static/favicon.svg"]


@pytest.fixture(scope="module")
def keyed(tiny_model_path):
    settings = Settings(model_path=tiny_model_path, threads=1, decode_threads=1, api_keys=f"{KEY},{OTHER_KEY}")
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client


def _routes(routes):
    """The app's routes, those of the routers it includes too (FastAPI lists an included router as one entry)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        yield from (_routes(included.routes) if included is not None else [route])


def guarded_requests(client: TestClient) -> list[tuple[str, str]]:
    """Every route the app has (FastAPI's docs included), as (method, path), minus the public ones."""
    found = []
    for route in _routes(client.app.routes):
        path = getattr(route, "path", None)
        # Public: the probes and page shells, and the review routes, which check their own keys (test_review.py).
        if path is None or path in PUBLIC or is_public(path):
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                found.append((method, path))
    return found


def test_every_route_but_the_probes_and_page_needs_a_key(keyed):
    routes = guarded_requests(keyed)
    paths = {path for _, path in routes}
    assert {"/metrics", "/docs", "/openapi.json", "/v1/model", "/v1/score"} <= paths, paths
    for method, path in routes + [("GET", "/no/such/path"), ("DELETE", "/v1/score")]:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1]}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": "Bearer"}, {"X-API-Key": ""}):
            response = keyed.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"
    for method, path in routes:
        if path == "/v1/score":
            continue
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {OTHER_KEY}"}):
            assert keyed.request(method, path, headers=headers).status_code == 200, (method, path)
    assert keyed.get("/no/such/path", headers={"X-API-Key": KEY}).status_code == 404


def test_probes_and_page_shell_stay_public(keyed):
    for path in PUBLIC:
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/favicon.ico").headers["content-type"] == "image/svg+xml"  # browsers ask for it: no 404
    # The shell carries no data and no key; it asks the user for one.
    page = keyed.get("/").text
    assert KEY not in page and OTHER_KEY not in page


def test_score_with_a_key(keyed, encoder):
    photo = encoder(Image.new("RGB", (32, 32), (10, 200, 10)), "PNG")
    response = keyed.post("/v1/score", content=photo, headers={"Content-Type": "image/png", "X-API-Key": KEY})
    assert response.status_code == 200


def test_missing_and_wrong_keys_get_the_same_answer(keyed):
    missing = keyed.get("/v1/model")
    wrong = keyed.get("/v1/model", headers={"X-API-Key": "nope"})
    assert missing.status_code == wrong.status_code == 401
    assert set(missing.headers) == set(wrong.headers)
    assert len(wrong.content) < 200  # nothing about the configured keys


def test_every_configured_key_is_compared_whatever_the_match(monkeypatch):
    """The work done for a guess does not depend on it: the same digests and comparisons, in the same order.

    Checked on the code path rather than by wall time, which a busy machine makes meaningless.
    """
    calls = []
    real_compare, real_digest = hmac.compare_digest, auth._digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(("compare", len(a), len(b))) or real_compare(a, b))
    monkeypatch.setattr(auth, "_digest", lambda key: calls.append(("digest",)) or real_digest(key))
    keys = [b"alpha-key", b"beta-key-longer", b"g"]
    expected = [("digest",)] + [("digest",), ("compare", 32, 32)] * len(keys)
    for presented in ("alpha-key", "beta-key-longer", "g", "wrong", "x" * 500, ""):
        calls.clear()
        auth.key_matches(presented, keys)
        # One digest of the guess, then one equal-length comparison per key: no early exit, no length leak.
        assert calls == expected, presented


def test_keys_never_reach_the_logs(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    keyed.get("/v1/model", headers={"X-API-Key": KEY})
    keyed.get("/v1/model", headers={"X-API-Key": "guess-" + OTHER_KEY})
    keyed.get("/metrics", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert KEY not in caplog.text and OTHER_KEY not in caplog.text
    assert KEY not in repr(of_app(keyed.app).engine.info)
    metrics = keyed.get("/metrics", headers={"X-API-Key": KEY}).text
    assert KEY not in metrics and OTHER_KEY not in metrics
    docs = keyed.get("/openapi.json", headers={"X-API-Key": KEY}).text
    assert KEY not in docs and OTHER_KEY not in docs
