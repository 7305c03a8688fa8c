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


# --- a unit's own policy, applied to its submissions and recorded with each (SQLite and PostgreSQL) ---

@pytest.fixture
def review_client(world, tiny_model_path):
    with TestClient(create_app(world.settings(tiny_model_path))) as test_client:
        yield test_client


def submit(review_client, world, unit="dinkes"):
    from review_world import headers

    return review_client.post("/v1/submissions", headers=headers(world.submit[unit]), files=photo_files(red_photo()),
                              data={"account": "@asn", "caption": "Jalan-jalan"}).json()


def test_a_unit_policy_changes_the_decision_and_is_recorded(world, review_client):
    from review_world import headers

    assert submit(review_client, world)["status"] == "pending"  # the red "car" is flagged under the model's thresholds
    changed = review_client.put("/v1/admin/units/dinkes/policy", headers=headers(world.admin),
                                json={"categories": {"luxury_car": "off", "designer_bag": {"review": 0.7, "block": 0.95}}})
    assert changed.status_code == HTTP_OK, changed.text
    assert changed.json()["policy"] == {"designer_bag": {"review": 0.7, "block": 0.95}, "luxury_car": "off"}
    cleared = submit(review_client, world)
    assert cleared["status"] == "cleared" and cleared["photos"][0]["evidence"] == []
    assert cleared["policy"]["categories"]["luxury_car"] == "off"
    assert cleared["policy"]["review"] == cleared["thresholds"]["review"]
    assert submit(review_client, world, unit="bappeda")["status"] == "pending"  # other units keep the model's
    events = list(world.store.audit_events())
    [policy_event] = [e for e in events if e.action == "policy_changed"]
    assert policy_event.unit == "dinkes" and policy_event.details["was"] is None
    submitted = [e for e in events if e.action == "submitted" and e.submission_id == cleared["id"]]
    assert submitted[0].details["policy"] == cleared["policy"]


def test_a_bad_unit_policy_is_refused_and_only_admins_set_one(world, review_client):
    from review_world import headers

    route = "/v1/admin/units/dinkes/policy"
    bad = review_client.put(route, headers=headers(world.admin), json={"categories": {"yacht": "off"}})
    assert bad.status_code == HTTP_UNPROCESSABLE and "unknown category" in bad.json()["error"]["message"]
    assert review_client.put(route, headers=headers(world.review["dinkes"]), json={"categories": {}}).status_code == 403
    assert review_client.put("/v1/admin/units/nowhere/policy", headers=headers(world.admin),
                             json={"categories": {}}).status_code == 404


def test_the_operator_sets_a_policy_from_the_command_line(database_url, capsys):
    from flexguard.cli import main
    from review_world import make_world

    make_world(database_url)
    base = ["admin", "--database", database_url, "unit-policy", "dinkes"]
    assert main([*base, "--off", "luxury_travel", "--thresholds", "designer_bag=0.7,0.95"]) == 0
    assert '"luxury_travel": "off"' in capsys.readouterr().out
    assert main([*base, "--thresholds", "designer_bag=0.9,0.5"]) == 2  # review above block: one line, refused
    assert "designer_bag" in capsys.readouterr().err
    assert main([*base, "--clear"]) == 0
    assert "the model's thresholds for every category" in capsys.readouterr().out
