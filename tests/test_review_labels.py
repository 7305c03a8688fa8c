"""Reviewers label, not only decide (issue #14, parts 1 and 2), on SQLite and PostgreSQL.

- A decision may carry, per flagged photo, "correct" with the categories shown or "false_alarm"; the
  labels are stored, returned and audited with the decision; anything malformed is refused whole.
- A unit's training consent is off by default and changed only by an admin, audited. With it off the
  purge is what it always was; with it on, labelled photos outlive the reviewers' retention until the
  training retention ends or consent is withdrawn.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from flexguard.service.review.store import Principal
from flexguard.service.review.tables import PhotoBlob
from review_world import World, grey_photo, headers, photo_files, red_photo

UNIT = "dinkes"
RETENTION, TRAINING_RETENTION = timedelta(days=7), timedelta(days=90)
HTTP_OK, HTTP_FORBIDDEN, HTTP_UNPROCESSABLE = 200, 403, 422


def pending_post(client: TestClient, world: World) -> dict:
    """A post of an allowed photo (0) and two flagged ones (1, 2)."""
    answer = client.post("/v1/submissions", headers=headers(world.submit[UNIT]),
                         files=photo_files(grey_photo(), red_photo(), red_photo((300, 300), (0, 0, 200, 200))),
                         data={"account": "@ani", "caption": "Liburan"})
    assert answer.status_code == 201 and answer.json()["status"] == "pending", answer.text
    return answer.json()


def decide(client: TestClient, world: World, submission: dict, verb: str = "approve", **body):
    return client.post(f"/v1/submissions/{submission['id']}/{verb}", headers=headers(world.review[UNIT]), json=body)


def blobs(world: World) -> int:
    with world.store.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(PhotoBlob))


def events(world: World, action: str) -> list:
    return [event for event in world.store.audit_events() if event.action == action]


def test_labels_are_stored_returned_and_audited_with_the_decision(world, client):
    post = pending_post(client, world)
    labels = [{"position": 1, "verdict": "correct", "categories": ["luxury_car", "luxury_travel"]},
              {"position": 2, "verdict": "false_alarm", "categories": []}]
    decided = decide(client, world, post, "reject", comment="Mobil pribadi", labels=labels)
    assert decided.status_code == HTTP_OK, decided.text
    photos = decided.json()["photos"]
    assert photos[0]["review_label"] is None  # the allowed photo takes no label
    assert photos[1]["review_label"] == {"verdict": "correct", "categories": ["luxury_car", "luxury_travel"]}
    assert photos[2]["review_label"] == {"verdict": "false_alarm", "categories": []}
    [rejected] = events(world, "rejected")
    assert rejected.details["labels"] == labels and rejected.details["comment"] == "Mobil pribadi"
    # The allowed photo, shown to the reviewer while pending, is deleted with the decision.
    assert [photo["stored"] for photo in photos] == [False, True, True]


def test_saying_nothing_is_the_default(world, client):
    post = pending_post(client, world)
    decided = decide(client, world, post)
    assert decided.status_code == HTTP_OK
    assert all(photo["review_label"] is None for photo in decided.json()["photos"])
    assert events(world, "approved")[0].details["labels"] == []


@pytest.mark.parametrize("labels, message", [
    ([{"position": 0, "verdict": "false_alarm", "categories": []}], "not flagged"),
    ([{"position": 1, "verdict": "correct", "categories": []}], "name the categories"),
    ([{"position": 1, "verdict": "false_alarm", "categories": ["luxury_car"]}], "name the categories"),
    ([{"position": 1, "verdict": "correct", "categories": ["yacht"]}], "unknown categories"),
    ([{"position": 1, "verdict": "false_alarm", "categories": []}] * 2, "labelled twice"),
    ([{"position": 1, "verdict": "maybe", "categories": []}], "verdict"),
])
def test_malformed_labels_are_refused_and_nothing_is_decided(world, client, labels, message):
    post = pending_post(client, world)
    refused = decide(client, world, post, labels=labels)
    assert refused.status_code == HTTP_UNPROCESSABLE and message in refused.text
    assert client.get(f"/v1/submissions/{post['id']}", headers=headers(world.review[UNIT])).json()["status"] == "pending"


def test_consent_is_off_by_default_and_only_an_admin_changes_it(world, client):
    units = client.get("/v1/admin/units", headers=headers(world.admin)).json()
    assert {unit["id"]: unit["training_consent"] for unit in units}[UNIT] is False
    route = f"/v1/admin/units/{UNIT}/training-consent"
    assert client.put(route, headers=headers(world.review[UNIT]), json={"training_consent": True}).status_code == HTTP_FORBIDDEN
    changed = client.put(route, headers=headers(world.admin), json={"training_consent": True})
    assert changed.status_code == HTTP_OK and changed.json()["training_consent"] is True
    [event] = events(world, "training_consent_changed")
    assert event.unit == UNIT and event.details == {"training_consent": True, "was": False}


def purge(world: World, at):
    return world.store.purge(Principal.command_line("test"), RETENTION, TRAINING_RETENTION, now=at)


def labelled_and_decided(client: TestClient, world: World) -> tuple[dict, object]:
    post = pending_post(client, world)
    labels = [{"position": 1, "verdict": "correct", "categories": ["luxury_car"]}]  # photo 2 left unlabelled
    decide(client, world, post, labels=labels)
    return post, world.store.get(Principal.command_line("test"), post["id"]).decided_at


def test_without_consent_labelled_photos_are_purged_as_before(world, client):
    post, decided_at = labelled_and_decided(client, world)
    report = purge(world, decided_at + RETENTION + timedelta(seconds=1))
    assert (report.photos, report.kept_for_training) == (2, 0)
    assert blobs(world) == 0


def test_with_consent_labelled_photos_outlive_the_reviewers_retention_until_the_training_one(world, client):
    world.store.set_training_consent(Principal.command_line("test"), UNIT, True)
    post, decided_at = labelled_and_decided(client, world)
    report = purge(world, decided_at + RETENTION + timedelta(seconds=1))
    assert (report.photos, report.kept_for_training) == (1, 1)  # the unlabelled flagged photo goes
    assert blobs(world) == 1
    # Kept for the data team, not for the reviewers: their photo URL is gone as usual.
    reviewer = headers(world.review[UNIT])
    assert client.get(f"/v1/submissions/{post['id']}/photos/1", headers=reviewer).status_code == 404
    assert not any(photo["stored"] for photo in client.get(f"/v1/submissions/{post['id']}", headers=reviewer).json()["photos"])
    assert purge(world, decided_at + TRAINING_RETENTION - timedelta(seconds=1)).training_photos == 0
    assert purge(world, decided_at + TRAINING_RETENTION + timedelta(seconds=1)).training_photos == 1
    assert blobs(world) == 0
    [event] = events(world, "training_photos_purged")
    assert event.submission_id == post["id"] and event.details["photos"] == 1


def test_withdrawn_consent_deletes_the_kept_photos_at_the_next_purge(world, client):
    operator = Principal.command_line("test")
    world.store.set_training_consent(operator, UNIT, True)
    _, decided_at = labelled_and_decided(client, world)
    purge(world, decided_at + RETENTION + timedelta(seconds=1))
    assert blobs(world) == 1
    world.store.set_training_consent(operator, UNIT, False)
    assert purge(world, decided_at + RETENTION + timedelta(seconds=2)).training_photos == 1
    assert blobs(world) == 0
