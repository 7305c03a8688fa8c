"""Per-category thresholds: the policy on its own, and in a /v1/score request (issue #14, part 4)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flexguard.models.metadata import Thresholds
from flexguard.models.policy import OFF, Policy, PolicyError
from flexguard.models.vocabulary import Decision
from flexguard.service.app import create_app
from flexguard.service.settings import Settings
from review_world import photo_files, red_photo

MODEL = Thresholds(review=0.5, block=0.9)
SCORES = {"luxury_car": 0.95, "designer_bag": 0.6, "jewelry_watch": 0.1, "luxury_travel": 0.7}
HTTP_OK, HTTP_UNPROCESSABLE = 200, 422


def test_the_decision_is_the_most_severe_any_category_gives():
    assert Policy(MODEL).decide(SCORES) == Decision.BLOCK
    lenient_cars = Policy(MODEL, {"luxury_car": Thresholds(0.97, 0.99)})
    assert lenient_cars.decide(SCORES) == Decision.REVIEW  # the bag and the travel still need a look
    assert Policy(MODEL, {"luxury_car": None, "designer_bag": None, "luxury_travel": None}).decide(SCORES) == Decision.ALLOW
    strict_watches = Policy(MODEL, {"jewelry_watch": Thresholds(0.05, 0.1)})
    assert strict_watches.decide({**SCORES, "luxury_car": 0.0, "designer_bag": 0.0, "luxury_travel": 0.0}) == Decision.BLOCK


def test_an_off_category_is_never_flagged():
    tourism = Policy(MODEL, {"luxury_travel": None})
    assert not tourism.flags("luxury_travel", 1.0) and tourism.flags("designer_bag", 0.5)


def test_the_stored_form_round_trips_and_bad_ones_are_named():
    stored = {"luxury_travel": OFF, "designer_bag": {"review": 0.7, "block": 0.95}}
    policy = Policy.with_overrides(MODEL, stored)
    assert policy.overrides_dict() == stored
    assert policy.to_dict() == {"review": 0.5, "block": 0.9, "categories": stored}
    with pytest.raises(PolicyError, match="unknown category 'yacht'"):
        Policy.with_overrides(MODEL, {"yacht": OFF})
    with pytest.raises(PolicyError, match="designer_bag"):
        Policy.with_overrides(MODEL, {"designer_bag": {"review": 0.9, "block": 0.5}})
    with pytest.raises(PolicyError, match="designer_bag"):
        Policy.with_overrides(MODEL, {"designer_bag": "sometimes"})


@pytest.fixture(scope="module")
def client(tiny_model_path):
    with TestClient(create_app(Settings(model_path=tiny_model_path))) as test_client:
        yield test_client


def score(client, params=None, data=None):
    return client.post("/v1/score", params=params, data=data, files=photo_files(red_photo()))


def test_a_request_may_hold_one_category_to_its_own_thresholds(client):
    plain = score(client).json()
    [result] = plain["results"]
    assert result["decision"] != "allow" and result["evidence"][0]["category"] == "luxury_car"
    assert plain["category_thresholds"] == {}
    own = {"review_threshold[luxury_car]": "0.999", "block_threshold[luxury_car]": "1"}
    for answer in (score(client, params=own), score(client, data=own)):  # query parameters or form fields
        assert answer.status_code == HTTP_OK, answer.text
        body = answer.json()
        assert body["category_thresholds"] == {"luxury_car": {"review": 0.999, "block": 1.0}}
        [held] = body["results"]
        assert all(box["category"] != "luxury_car" for box in held["evidence"])
        assert held["risk"] == result["risk"]  # the risk is the model's; only the decision follows the policy


@pytest.mark.parametrize("params, message", [
    ({"review_threshold[yacht]": "0.5"}, "unknown category threshold"),
    ({"review_threshold[luxury_car]": "0.95", "block_threshold[luxury_car]": "0.9"}, "must not be above"),
    ({"block_threshold[luxury_car]": "2"}, "from 0 to 1"),
])
def test_bad_category_thresholds_are_refused(client, params, message):
    answer = score(client, params=params)
    assert answer.status_code == HTTP_UNPROCESSABLE and answer.json()["error"]["code"] == "invalid_parameters"
    assert message in answer.json()["error"]["message"]
