"""Per-key rate limits: off by default; when set, a caller over its rate gets 429 with Retry-After, other
callers are untouched, and /metrics counts the refusals."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flexguard.service.app import create_app
from flexguard.service.rate_limit import MAX_TRACKED_CALLERS, RateLimiter
from flexguard.service.settings import Settings
from review_world import grey_photo, headers, make_world, photo_files

PER_MINUTE = 6  # one request every 10 s once the burst is spent
BURST = 2
SECONDS_PER_TOKEN = 60 // PER_MINUTE
HTTP_OK, HTTP_CREATED, HTTP_TOO_MANY = 200, 201, 429


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_the_rate():
    clock = Clock()
    limiter = RateLimiter(PER_MINUTE, BURST, clock=clock)
    assert [limiter.wait_s("a") for _ in range(BURST)] == [0] * BURST
    assert limiter.wait_s("a") == SECONDS_PER_TOKEN  # a refusal takes no token
    assert limiter.wait_s("b") == 0  # callers have buckets of their own
    clock.now += SECONDS_PER_TOKEN / 2
    assert limiter.wait_s("a") == SECONDS_PER_TOKEN / 2
    clock.now += SECONDS_PER_TOKEN / 2
    assert limiter.wait_s("a") == 0
    clock.now += 3600  # an idle hour refills only up to the burst
    assert [limiter.wait_s("a") for _ in range(BURST + 1)] == [0] * BURST + [SECONDS_PER_TOKEN]


def test_idle_callers_are_forgotten_so_the_table_stays_bounded():
    clock = Clock()
    limiter = RateLimiter(PER_MINUTE, BURST, clock=clock)
    for caller in range(MAX_TRACKED_CALLERS):
        limiter.wait_s(f"address:{caller}")
    clock.now += BURST * SECONDS_PER_TOKEN  # every bucket is full again
    limiter.wait_s("newcomer")
    assert len(limiter._buckets) == 1


def test_a_rate_limit_needs_a_rate_and_a_burst():
    with pytest.raises(ValueError):
        RateLimiter(0, BURST)
    with pytest.raises(ValueError):
        RateLimiter(PER_MINUTE, 0)


def score(client: TestClient, key: str | None = None):
    return client.post("/v1/score", files=photo_files(grey_photo()), headers=headers(key) if key else {})


def test_off_by_default(tiny_model_path):
    assert Settings(model_path=tiny_model_path).rate_limit_per_minute == 0
    with TestClient(create_app(Settings(model_path=tiny_model_path))) as client:
        assert {score(client).status_code for _ in range(3 * BURST)} == {HTTP_OK}


def test_each_api_key_has_its_own_rate_on_score(tiny_model_path):
    settings = Settings(model_path=tiny_model_path, api_keys="kunci-a,kunci-b", rate_limit_per_minute=PER_MINUTE,
                        rate_limit_burst=BURST)
    with TestClient(create_app(settings)) as client:
        assert [score(client, "kunci-a").status_code for _ in range(BURST)] == [HTTP_OK] * BURST
        refused = score(client, "kunci-a")
        assert refused.status_code == HTTP_TOO_MANY
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["retry-after"] == str(SECONDS_PER_TOKEN)
        assert score(client, "kunci-b").status_code == HTTP_OK
        metrics = client.get("/metrics", headers=headers("kunci-b")).text
    assert 'flexguard_inputs_rejected_total{reason="rate_limited"} 1.0' in metrics
    assert 'flexguard_http_requests_total{method="POST",route="/v1/score",status="429"} 1.0' in metrics


def test_without_api_keys_the_address_is_the_caller(tiny_model_path):
    settings = Settings(model_path=tiny_model_path, rate_limit_per_minute=PER_MINUTE, rate_limit_burst=BURST)
    with TestClient(create_app(settings)) as client:
        statuses = [score(client).status_code for _ in range(BURST + 1)]
    assert statuses == [HTTP_OK] * BURST + [HTTP_TOO_MANY]


def test_each_review_key_has_its_own_rate(database_url, tiny_model_path):
    world = make_world(database_url)
    settings = world.settings(tiny_model_path, rate_limit_per_minute=PER_MINUTE, rate_limit_burst=BURST)
    submit, review = headers(world.submit["dinkes"]), headers(world.review["dinkes"])
    with TestClient(create_app(settings)) as client:
        posted = [client.post("/v1/submissions", headers=submit, files=photo_files(grey_photo()),
                              data={"account": "@ani", "caption": f"Rapat {n}"}).status_code for n in range(BURST + 1)]
        assert posted == [HTTP_CREATED] * BURST + [HTTP_TOO_MANY]
        # The unit head's key is another caller: still free.
        assert client.get("/v1/submissions", headers=review).status_code == HTTP_OK
        refused = client.get("/v1/submissions", headers=submit)
        assert refused.status_code == HTTP_TOO_MANY and int(refused.headers["retry-after"]) == SECONDS_PER_TOKEN
