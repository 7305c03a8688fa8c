"""The unit at a glance (issue #14, part 5): GET /v1/summary's figures equal what the audit trail says,
on SQLite and PostgreSQL; a review key sees its own unit only."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from flexguard.models.metadata import Thresholds
from flexguard.models.policy import Policy
from flexguard.service.review.summary import percentile, week_name
from review_world import World, grey_photo, headers, photo_files, red_photo

UNIT = "dinkes"
HTTP_OK, HTTP_FORBIDDEN = 200, 403
HOURS_TOLERANCE = 0.01  # audit times and row times differ by the milliseconds of one transaction


def post(client, world, *photos, unit=UNIT) -> dict:
    return client.post("/v1/submissions", headers=headers(world.submit[unit]), files=photo_files(*photos),
                       data={"account": "@asn", "caption": "x"}).json()


def decide(client, world, submission, verb, labels=(), unit=UNIT):
    answer = client.post(f"/v1/submissions/{submission['id']}/{verb}", headers=headers(world.review[unit]),
                         json={"comment": "alasan", "labels": list(labels)})
    assert answer.status_code == HTTP_OK, answer.text


def from_the_audit_trail(world: World, unit: str) -> dict:
    """The summary's figures, recomputed from the audit events alone."""
    events = [event for event in world.store.audit_events() if event.unit == unit and event.submission_id]
    submitted = {event.submission_id: event for event in events if event.action == "submitted"}
    outcome = {sid: event.details["status"] for sid, event in submitted.items()}
    hours, labelled, alarms, flagged = [], Counter(), Counter(), Counter()
    flagged_for = {}
    for sid, event in submitted.items():
        policy = Policy.with_overrides(Thresholds(event.details["policy"]["review"], event.details["policy"]["block"]),
                                       event.details["policy"]["categories"])
        flagged_for[sid] = [[category for category, score in photo["categories"].items() if policy.flags(category, score)]
                            for photo in event.details["photos"]]
        for categories in flagged_for[sid]:
            flagged.update(categories)
    for event in events:
        if event.action in ("approved", "rejected", "expired"):
            outcome[event.submission_id] = event.action
        if event.action in ("approved", "rejected"):
            hours.append((event.at - submitted[event.submission_id].at).total_seconds() / 3600)
            for label in event.details["labels"]:
                for category in flagged_for[event.submission_id][label["position"]]:
                    labelled[category] += 1
                    alarms[category] += label["verdict"] == "false_alarm" or category not in label["categories"]
    weeks = Counter((week_name(submitted[sid].at), status) for sid, status in outcome.items())
    return {"weeks": weeks, "flagged": flagged, "hours": hours, "labelled": labelled, "alarms": alarms}


def test_the_summary_equals_what_the_audit_trail_says(world, client):
    cleared = post(client, world, grey_photo())
    approved = post(client, world, red_photo(), grey_photo())
    rejected = post(client, world, red_photo(), red_photo((300, 300), (0, 0, 200, 200)))
    post(client, world, red_photo())  # stays pending
    post(client, world, red_photo(), unit="bappeda")  # another unit: not counted
    assert cleared["status"] == "cleared"
    decide(client, world, approved, "approve", [{"position": 0, "verdict": "false_alarm", "categories": []}])
    decide(client, world, rejected, "reject", [{"position": 0, "verdict": "correct", "categories": ["luxury_car"]},
                                               {"position": 1, "verdict": "correct", "categories": ["luxury_travel"]}])

    answer = client.get("/v1/summary", headers=headers(world.review[UNIT]), params={"weeks": 2})
    assert answer.status_code == HTTP_OK, answer.text
    summary = answer.json()
    expected = from_the_audit_trail(world, UNIT)
    assert summary["unit"] == UNIT and len(summary["weeks"]) == 2
    assert Counter({(week["week"], status): count for week in summary["weeks"]
                    for status, count in week["posts"].items() if count}) == expected["weeks"]
    this_week = summary["weeks"][-1]
    assert this_week["week"] == week_name(datetime.now(timezone.utc))
    assert this_week["posts"] == {"cleared": 1, "pending": 1, "approved": 1, "rejected": 1, "expired": 0}
    assert {c: n for c, n in summary["flagged"].items() if n} == dict(expected["flagged"]) == {"luxury_car": 4}
    assert summary["decisions"] == len(expected["hours"]) == 2
    assert summary["median_hours_to_decision"] == pytest.approx(percentile(expected["hours"], 50), abs=HOURS_TOLERANCE)
    assert summary["p90_hours_to_decision"] == pytest.approx(percentile(expected["hours"], 90), abs=HOURS_TOLERANCE)
    car = summary["labels"]["luxury_car"]
    assert (car["labelled"], car["false_alarms"]) == (expected["labelled"]["luxury_car"], expected["alarms"]["luxury_car"])
    # Three labelled car flags: the false alarm, a car, and a photo the reviewer says shows travel, not a car.
    assert (car["labelled"], car["false_alarms"], car["false_alarm_rate"]) == (3, 2, pytest.approx(2 / 3))
    assert summary["labels"]["designer_bag"]["false_alarm_rate"] is None


def test_a_review_key_sees_its_own_unit_and_an_admin_any(world, client):
    post(client, world, red_photo(), unit="bappeda")
    assert client.get("/v1/summary", headers=headers(world.review[UNIT]), params={"unit": "bappeda"}).status_code == HTTP_FORBIDDEN
    assert client.get("/v1/summary", headers=headers(world.submit[UNIT])).status_code == HTTP_FORBIDDEN
    everyone = client.get("/v1/summary", headers=headers(world.admin)).json()
    assert everyone["unit"] is None and sum(everyone["weeks"][-1]["posts"].values()) == 1
    bappeda = client.get("/v1/summary", headers=headers(world.admin), params={"unit": "bappeda"}).json()
    assert bappeda["unit"] == "bappeda" and bappeda["weeks"][-1]["posts"]["pending"] == 1
