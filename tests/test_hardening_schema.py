"""schemathesis against the service's own OpenAPI document, on a live uvicorn (tiny model, keys on).

Every operation gets generated requests (valid and invalid query parameters, multipart bodies of random
binary "photos" and fields, raw bodies) with the key, and again without it. No answer may be a 5xx, and
every answer must match the document: a documented status code, content type and body schema.
"""

from __future__ import annotations

import os

import httpx
import pytest
pytest.importorskip("hypothesis", reason="hypothesis is in the test extra (pyproject.toml)")
pytest.importorskip("schemathesis", reason="schemathesis is in the test extra (pyproject.toml)")
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flexguard.service.settings import Settings
from test_hardening_live import serving

KEY = "schema-test-key"
EXAMPLES = int(os.environ.get("FLEXGUARD_SCHEMA_EXAMPLES", "60"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SEEN: dict[str, int] = {}


@pytest.fixture(scope="module")
def live(tiny_model_path):
    settings = Settings(model_path=tiny_model_path, threads=1, decode_threads=2, max_wait_ms=1.0, api_keys=KEY,
                        max_bytes=2_000_000, max_files=8)
    with serving(settings) as (base, _):
        yield base


@pytest.fixture(scope="module")
def schema(live):
    document = httpx.get(f"{live}/openapi.json", headers={"X-API-Key": KEY}).json()
    return schemathesis.openapi.from_dict(document)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_no_5xx_and_every_answer_matches_the_schema(live, schema, with_key):
    headers = {"X-API-Key": KEY} if with_key else {}
    ops = operations(schema)
    assert {op.path for op in ops} >= {"/v1/score", "/v1/model", "/healthz", "/readyz", "/metrics"}
    for operation in ops:
        strategy = operation.as_strategy()
        if operation.path == "/v1/score":  # also invalid parameters and bodies: they must be 4xx, not 5xx
            strategy = st.one_of(strategy, operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case) -> None:
            response = case.call_and_validate(base_url=live, headers=headers, checks=CHECKS)
            SEEN[f"{response.status_code}"] = SEEN.get(f"{response.status_code}", 0) + 1

        check()
    assert not any(status.startswith("5") for status in SEEN), SEEN
    print(f"\nschemathesis statuses so far: {SEEN}")
