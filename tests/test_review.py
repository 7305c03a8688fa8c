"""The supervisor-review workflow end to end, on SQLite and on PostgreSQL (the ``database_url`` fixture).

Through the HTTP API (FastAPI's TestClient, and a real uvicorn where requests must really race):
clear-at-once, pending → approve, pending → reject, cross-unit 403, wrong key 401, idempotent
submit, concurrent decisions (exactly one wins), signed and retried webhooks, the purge, the audit
trail (append-only, exported as CSV and JSON Lines).
"""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from flexguard.models.metadata import compute_weights_sha256
from flexguard.models.taxonomy import CATEGORIES
from flexguard.service.app import create_app
from flexguard.service.review.store import Principal
from flexguard.service.review.tables import AuditEvent, PhotoBlob, Role, Submission
from flexguard.service.review.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify

from live_server import serving
from review_world import World, grey_photo, headers, photo_files, red_photo

NAME_ID = {category.id: category.name_id for category in CATEGORIES}
CONCURRENT_REVIEWERS = 8
RACES = 5
# Seconds a request over TCP may wait for its answer: generous, since a test asserts what comes back, not how
# fast (httpx's default, 5 s, timed out here on a photo submission while the machine's 2 cores were busy).
HTTP_TIMEOUT_S = 60
WEBHOOK_FAILURES_BEFORE_SUCCESS = 2
SIGNATURE_TOLERANCE_S = 300
DELIVERY_WAIT_S = 20.0


def submit(client, key: str, *photos: bytes, account="@ani.asn", caption="Kegiatan kantor", **extra_headers):
    return client.post("/v1/submissions", headers=headers(key, **extra_headers), files=photo_files(*photos),
                       data={"account": account, "caption": caption})


def count(world: World, table) -> int:
    with world.store.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(table))


def actions(world: World, submission_id: str) -> list[str]:
    return [event.action for event in world.store.audit_events() if event.submission_id == submission_id]


def test_a_post_whose_photos_are_all_allowed_is_cleared_at_once_and_nothing_is_stored(world, client):
    answer = submit(client, world.submit["dinkes"], grey_photo(), grey_photo((200, 300)))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["status"] == "cleared" and body["replayed"] is False
    assert [photo["decision"] for photo in body["photos"]] == ["allow", "allow"]
    assert not any(photo["stored"] or photo["url"] for photo in body["photos"])
    assert count(world, PhotoBlob) == 0
    assert answer.headers["location"] == f"/v1/submissions/{body['id']}"
    # Nothing waits in the unit's queue, and there is nothing to decide.
    queue = client.get("/v1/submissions?status=pending", headers=headers(world.review["dinkes"])).json()
    assert queue["total"] == 0
    decided = client.post(f"/v1/submissions/{body['id']}/approve", headers=headers(world.review["dinkes"]), json={})
    assert decided.status_code == 409 and "cleared at once" in decided.json()["error"]["message"]
    assert actions(world, body["id"]) == ["submitted"]


def test_pending_then_approved(world, client, tiny_model_path):
    red, grey = red_photo(), grey_photo()
    answer = submit(client, world.submit["dinkes"], grey, red, caption="Mobil dinas baru")
    assert answer.status_code == 201, answer.text
    submission = answer.json()
    assert submission["status"] == "pending" and submission["unit"] == "dinkes"
    flagged = submission["photos"][1]
    assert flagged["decision"] != "allow" and flagged["stored"] and flagged["url"]
    # The reviewer sees the whole post while it is pending, the photo the model allowed too.
    assert submission["photos"][0]["stored"] and submission["photos"][0]["decision"] == "allow"
    # The reviewer's queue: the submission with its flagged photo, Indonesian names and evidence boxes.
    reviewer = headers(world.review["dinkes"])
    queue = client.get("/v1/submissions", params={"status": "pending"}, headers=reviewer).json()
    assert [s["id"] for s in queue["submissions"]] == [submission["id"]]
    opened = client.get(f"/v1/submissions/{submission['id']}", headers=reviewer).json()
    photo = opened["photos"][1]
    top = max(photo["categories"], key=lambda c: c["score"])
    assert top["id"] == "luxury_car" and top["name_id"] == NAME_ID["luxury_car"]
    assert photo["evidence"] and photo["evidence"][0]["category"] == "luxury_car"
    left, top_edge, right, bottom = photo["evidence"][0]["box"]
    assert 0 <= left < right <= 1 and 0 <= top_edge < bottom <= 1
    image = client.get(photo["url"], headers=reviewer)
    assert image.status_code == 200 and image.content == red and image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"] == "no-store"
    # Approve; the submitter's tool sees the outcome by polling.
    approved = client.post(f"/v1/submissions/{submission['id']}/approve", headers=reviewer, json={"comment": "Mobil dinas, bukan pribadi"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved" and approved.json()["decided_by"].startswith("fgr_review_")
    # Decided: the allowed photo is gone at once, the flagged one stays until the purge.
    assert [photo["stored"] for photo in approved.json()["photos"]] == [False, True]
    assert client.get(approved.json()["photos"][1]["url"], headers=reviewer).status_code == 200
    polled = client.get(f"/v1/submissions/{submission['id']}", headers=headers(world.submit["dinkes"])).json()
    assert polled["status"] == "approved" and polled["comment"] == "Mobil dinas, bukan pribadi"
    assert client.get("/v1/submissions?status=pending", headers=reviewer).json()["total"] == 0
    # Audit: who, what, scores and model version at the time.
    events = [e for e in world.store.audit_events() if e.submission_id == submission["id"]]
    assert [e.action for e in events] == ["submitted", "approved"]
    # Every event about the submission names the model that scored it, weights included.
    weights = compute_weights_sha256(tiny_model_path)
    assert all(e.details["model"] == {"name": "flexguard-tiny-test", "version": "0.0.1-test", "weights_sha256": weights}
               for e in events)
    assert opened["model"]["weights_sha256"] == weights
    assert events[0].details["photos"][1]["categories"]["luxury_car"] == pytest.approx(top["score"])
    assert events[1].actor.startswith("fgr_review_") and events[1].details["comment"] == "Mobil dinas, bukan pribadi"


@pytest.mark.parametrize("image_format", ["HEIF", "TIFF"])
def test_a_flagged_photo_browsers_cannot_show_is_kept_as_jpeg(world, client, image_format):
    import hashlib

    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(red_photo())).save(buffer, format=image_format)
    sent = buffer.getvalue()
    submission = client.post("/v1/submissions", headers=headers(world.submit["dinkes"]),
                             files=[("files", ("foto", sent, "application/octet-stream"))], data={"account": "a"}).json()
    photo = submission["photos"][0]
    assert photo["image"]["format"] == image_format and photo["sha256"] == hashlib.sha256(sent).hexdigest()
    kept = client.get(photo["url"], headers=headers(world.review["dinkes"]))
    assert kept.headers["content-type"] == "image/jpeg"
    shown = Image.open(io.BytesIO(kept.content))
    assert shown.format == "JPEG" and shown.size == (photo["image"]["width"], photo["image"]["height"])
    assert shown.convert("RGB").getpixel((100, 150))[0] > 200  # still the red car


def test_pending_then_rejected_needs_a_reason(world, client):
    submission = submit(client, world.submit["dinkes"], red_photo()).json()
    reviewer = headers(world.review["dinkes"])
    no_reason = client.post(f"/v1/submissions/{submission['id']}/reject", headers=reviewer, json={"comment": "  "})
    assert no_reason.status_code == 422 and no_reason.json()["error"]["code"] == "invalid_parameters"
    rejected = client.post(f"/v1/submissions/{submission['id']}/reject", headers=reviewer, json={"comment": "Pamer mobil mewah"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    again = client.post(f"/v1/submissions/{submission['id']}/approve", headers=reviewer, json={})
    assert again.status_code == 409 and "already rejected" in again.json()["error"]["message"]
    assert actions(world, submission["id"]) == ["submitted", "rejected"]


def test_keys_reach_only_their_own_unit_and_role(world, client):
    submission = submit(client, world.submit["dinkes"], red_photo()).json()
    sid = submission["id"]
    other_reviewer, other_tool = headers(world.review["bappeda"]), headers(world.submit["bappeda"])
    for path in (f"/v1/submissions/{sid}", f"/v1/submissions/{sid}/photos/0"):
        for key in (other_reviewer, other_tool):
            answer = client.get(path, headers=key)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden", path
    for verdict in ("approve", "reject"):
        answer = client.post(f"/v1/submissions/{sid}/{verdict}", headers=other_reviewer, json={"comment": "x"})
        assert answer.status_code == 403
    assert client.get("/v1/submissions", headers=other_reviewer).json()["total"] == 0
    # Roles: a tool cannot decide or read photos, a reviewer cannot submit, an admin reads but never decides.
    own_tool = headers(world.submit["dinkes"])
    assert client.post(f"/v1/submissions/{sid}/approve", headers=own_tool, json={}).status_code == 403
    assert client.get(f"/v1/submissions/{sid}/photos/0", headers=own_tool).status_code == 403
    assert submit(client, world.review["dinkes"], grey_photo()).status_code == 403
    assert client.post(f"/v1/submissions/{sid}/approve", headers=headers(world.admin), json={}).status_code == 403
    assert client.get(f"/v1/submissions/{sid}", headers=headers(world.admin)).status_code == 200
    not_admin = client.post("/v1/admin/units", headers=headers(world.review["dinkes"]), json={"id": "x", "name": "X"})
    assert not_admin.status_code == 403
    assert not_admin.json()["error"]["message"] == "this needs an admin key, not a review key"  # "an admin", "a review"
    # A submit key names its own unit or none.
    wrong_unit = client.post("/v1/submissions", headers=own_tool, files=photo_files(grey_photo()),
                             data={"account": "@ani", "unit": "bappeda"})
    assert wrong_unit.status_code == 403
    assert client.get(f"/v1/submissions/{sid}", headers=headers(world.review["dinkes"])).json()["status"] == "pending"


def test_a_key_can_ask_who_it_is(world, client):
    me = client.get("/v1/me", headers=headers(world.review["dinkes"])).json()
    assert me["role"] == "review" and me["unit"] == "dinkes" and me["label"] == "kepala dinkes"
    assert world.review["dinkes"].startswith(me["prefix"]) and me["prefix"] != world.review["dinkes"]
    assert client.get("/v1/me", headers=headers(world.admin)).json()["unit"] is None
    assert client.get("/v1/me").status_code == 401


def test_missing_wrong_and_revoked_keys_get_401(world, client):
    sid = submit(client, world.submit["dinkes"], red_photo()).json()["id"]
    for key_headers in ({}, headers("fgr_review_not-a-real-key"), {"Authorization": "Bearer wrong"}):
        answer = client.get(f"/v1/submissions/{sid}", headers=key_headers)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    assert client.get(f"/v1/submissions/{sid}", headers={"Authorization": f"Bearer {world.review['dinkes']}"}).status_code == 200
    prefix = world.review["dinkes"][:len("fgr_review_") + 8]
    revoked = client.delete(f"/v1/admin/keys/{prefix}", headers=headers(world.admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get(f"/v1/submissions/{sid}", headers=headers(world.review["dinkes"])).status_code == 401


def test_the_idempotency_key_makes_a_retried_submit_safe(world, client):
    tool = world.submit["dinkes"]
    first = submit(client, tool, red_photo(), **{"Idempotency-Key": "post-42"})
    again = submit(client, tool, red_photo(), **{"Idempotency-Key": "post-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    assert count(world, Submission) == 1 and count(world, PhotoBlob) == 1
    other = submit(client, tool, red_photo(), caption="Lain", **{"Idempotency-Key": "post-42"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    # Keys are per submit key: another unit's tool may use the same string.
    assert submit(client, world.submit["bappeda"], red_photo(), **{"Idempotency-Key": "post-42"}).status_code == 201


def test_bad_submissions_are_refused_with_a_code(world, client):
    tool = headers(world.submit["dinkes"])
    no_account = client.post("/v1/submissions", headers=tool, files=photo_files(red_photo()))
    assert no_account.status_code == 422 and "account" in no_account.json()["error"]["message"]
    unreadable = submit(client, world.submit["dinkes"], red_photo(), b"not a photo at all")
    assert unreadable.status_code == 422 and unreadable.json()["error"]["code"] == "unreadable_photo"
    assert "photo 2" in unreadable.json()["error"]["message"]
    unknown_field = client.post("/v1/submissions", headers=tool, files=photo_files(red_photo()), data={"account": "a", "x": "1"})
    assert unknown_field.status_code == 422
    assert client.post("/v1/submissions", headers=tool, data={"account": "a"}).status_code in (415, 422)
    assert client.get("/v1/submissions/sub_missing", headers=tool).status_code == 404
    assert client.get("/v1/submissions?status=lost", headers=tool).status_code == 422
    assert count(world, Submission) == 0


def test_two_reviewers_deciding_at_once_exactly_one_wins(world, tiny_model_path):
    """Real concurrent requests over TCP: of the reviewers who press a button at the same moment,
    exactly one changes the submission, the others get 409, and the audit has one decision."""
    extra_reviewers = [world.store.create_key(Principal.command_line("test"), Role.REVIEW, "dinkes", f"wakil {i}").key for i in range(CONCURRENT_REVIEWERS - 1)]
    reviewers = [world.review["dinkes"], *extra_reviewers]
    with serving(world.settings(tiny_model_path)) as (base, _):
        for race in range(RACES):
            sid = httpx.post(f"{base}/v1/submissions", headers=headers(world.submit["dinkes"]), timeout=HTTP_TIMEOUT_S,
                             files=photo_files(red_photo()), data={"account": f"@race{race}"}).json()["id"]
            barrier = threading.Barrier(len(reviewers))
            statuses: list[int] = []

            def decide(index: int, key: str) -> None:
                verdict = "approve" if index % 2 == 0 else "reject"
                with httpx.Client(base_url=base, timeout=HTTP_TIMEOUT_S) as http:
                    barrier.wait()
                    answer = http.post(f"/v1/submissions/{sid}/{verdict}", headers=headers(key), json={"comment": f"r{index}"})
                statuses.append(answer.status_code)

            threads = [threading.Thread(target=decide, args=(i, key)) for i, key in enumerate(reviewers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(statuses) == [200] + [409] * (len(reviewers) - 1), statuses
            decisions = [a for a in actions(world, sid) if a in ("approved", "rejected")]
            assert len(decisions) == 1
            final = httpx.get(f"{base}/v1/submissions/{sid}", headers=headers(world.admin), timeout=HTTP_TIMEOUT_S).json()
            assert final["status"] == decisions[0]


class Receiver:
    """A webhook receiver on loopback that fails the first ``failures`` deliveries with 500."""

    def __init__(self, failures: int):
        self.failures = failures
        self.received: list[tuple[dict[str, str], str]] = []
        self.delivered = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                receiver.received.append((dict(self.headers), body))
                failing = len(receiver.received) <= receiver.failures
                self.send_response(500 if failing else 204)
                self.end_headers()
                if not failing:
                    receiver.delivered.set()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/flexguard-hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_decision_reaches_the_webhook_signed_and_retried_until_it_is_taken(world, tiny_model_path):
    settings = world.settings(tiny_model_path, webhook_retry_base_s=0.05, webhook_poll_s=0.05)
    tool = headers(world.submit["dinkes"])
    with Receiver(failures=WEBHOOK_FAILURES_BEFORE_SUCCESS) as receiver, TestClient(create_app(settings)) as client:
        hook = client.put("/v1/webhook", headers=tool, json={"url": receiver.url})
        assert hook.status_code == 200
        secret = hook.json()["secret"]
        assert client.put("/v1/webhook", headers=tool, json={"url": "ftp://x"}).status_code == 422
        sid = submit(client, world.submit["dinkes"], red_photo()).json()["id"]
        client.post(f"/v1/submissions/{sid}/reject", headers=headers(world.review["dinkes"]), json={"comment": "Tas mewah"})
        assert receiver.delivered.wait(DELIVERY_WAIT_S), f"not delivered; got {len(receiver.received)} attempts"
        assert len(receiver.received) == WEBHOOK_FAILURES_BEFORE_SUCCESS + 1
        deliveries = {h[DELIVERY_HEADER] for h, _ in receiver.received}
        assert len(deliveries) == 1  # the same delivery, retried: the receiver can tell repeats apart
        for sent_headers, body in receiver.received:
            assert verify(secret, sent_headers[SIGNATURE_HEADER], body, SIGNATURE_TOLERANCE_S)
            assert not verify("another secret", sent_headers[SIGNATURE_HEADER], body, SIGNATURE_TOLERANCE_S)
            payload = json.loads(body)
            assert payload["submission_id"] == sid and payload["status"] == "rejected" and payload["comment"] == "Tas mewah"
        # The record: on the submission, and in the audit trail.
        deadline_poll = client.get(f"/v1/submissions/{sid}", headers=tool).json()
        for _ in range(100):
            if deadline_poll["webhook_deliveries"][0]["delivered_at"]:
                break
            deadline_poll = client.get(f"/v1/submissions/{sid}", headers=tool).json()
        delivery = deadline_poll["webhook_deliveries"][0]
        assert delivery["attempts"] == WEBHOOK_FAILURES_BEFORE_SUCCESS + 1 and delivery["last_status"] == 204
        # One time format everywhere: the webhook's decided_at is the API's, to the character.
        assert payload["decided_at"] == deadline_poll["decided_at"] and payload["decided_at"].endswith("Z")
        assert "webhook_delivered" in actions(world, sid)


def test_a_webhook_that_never_answers_is_given_up_and_recorded(world, tiny_model_path):
    settings = world.settings(tiny_model_path, webhook_retry_base_s=0.02, webhook_poll_s=0.02, webhook_max_attempts=3,
                              webhook_timeout_s=1)
    with Receiver(failures=10**6) as receiver, TestClient(create_app(settings)) as client:
        client.put("/v1/webhook", headers=headers(world.submit["dinkes"]), json={"url": receiver.url})
        sid = submit(client, world.submit["dinkes"], red_photo()).json()["id"]
        client.post(f"/v1/submissions/{sid}/approve", headers=headers(world.review["dinkes"]), json={})
        for _ in range(500):
            delivery = client.get(f"/v1/submissions/{sid}", headers=headers(world.admin)).json()["webhook_deliveries"][0]
            if delivery["gave_up_at"]:
                break
            threading.Event().wait(0.02)
        assert delivery["gave_up_at"] and delivery["attempts"] == 3 and delivery["last_status"] == 500
        assert delivery["last_error"] == "HTTP 500"  # the status only: never the receiver's answer
        assert len(receiver.received) == 3
        assert "webhook_failed" in actions(world, sid)


def test_the_purge_deletes_decided_photos_after_the_retention_and_keeps_the_record(world, client):
    reviewer = headers(world.review["dinkes"])
    decided = submit(client, world.submit["dinkes"], red_photo(), red_photo((300, 300), (0, 0, 200, 200))).json()
    waiting = submit(client, world.submit["dinkes"], red_photo()).json()
    client.post(f"/v1/submissions/{decided['id']}/approve", headers=reviewer, json={})
    assert count(world, PhotoBlob) == 3
    operator = Principal.command_line("test")
    # Within the retention nothing goes; after it, the decided submission's photos go, the pending one's stay.
    assert world.store.purge(operator, timedelta(days=7), timedelta(days=90)).photos == 0
    later = world.store.get(operator, decided["id"]).decided_at + timedelta(days=7, seconds=1)
    report = world.store.purge(operator, timedelta(days=7), timedelta(days=90), now=later)
    assert (report.submissions, report.photos) == (1, 2)
    assert count(world, PhotoBlob) == 1
    gone = client.get(f"/v1/submissions/{decided['id']}/photos/0", headers=reviewer)
    assert gone.status_code == 404 and "deleted after the decision" in gone.json()["error"]["message"]
    kept = client.get(f"/v1/submissions/{decided['id']}", headers=reviewer).json()
    assert kept["status"] == "approved" and kept["photos_purged_at"] and len(kept["photos"]) == 2
    assert not any(photo["stored"] for photo in kept["photos"]) and kept["photos"][0]["evidence"]
    assert client.get(f"/v1/submissions/{waiting['id']}/photos/0", headers=reviewer).status_code == 200
    assert actions(world, decided["id"]) == ["submitted", "approved", "photos_purged"]
    assert world.store.purge(operator, timedelta(days=7), timedelta(days=90), now=later).submissions == 0  # once only


def test_the_service_purges_on_its_own(world, tiny_model_path):
    settings = world.settings(tiny_model_path, photo_retention_days=0, purge_interval_s=0.05)
    with TestClient(create_app(settings)) as client:
        sid = submit(client, world.submit["dinkes"], red_photo()).json()["id"]
        client.post(f"/v1/submissions/{sid}/approve", headers=headers(world.review["dinkes"]), json={})
        for _ in range(200):
            if client.get(f"/v1/submissions/{sid}", headers=headers(world.admin)).json()["photos_purged_at"]:
                break
            threading.Event().wait(0.02)
        assert count(world, PhotoBlob) == 0
        assert "photos_purged" in actions(world, sid)


def test_the_audit_trail_is_append_only_and_exports_as_csv_and_jsonl(world, client):
    sid = submit(client, world.submit["dinkes"], red_photo()).json()["id"]
    client.post(f"/v1/submissions/{sid}/reject", headers=headers(world.review["dinkes"]), json={"comment": "Jam tangan mewah"})
    for statement in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with world.store.engine.begin() as connection:
                connection.execute(text(statement))
    total = count(world, AuditEvent)
    admin = headers(world.admin)
    lines = client.get("/v1/admin/audit", headers=admin).text.splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == total and [e["id"] for e in events] == sorted(e["id"] for e in events)
    rejected = next(e for e in events if e["action"] == "rejected")
    assert rejected["submission_id"] == sid and rejected["details"]["comment"] == "Jam tangan mewah"
    as_csv = client.get("/v1/admin/audit", params={"format": "csv", "unit": "dinkes"}, headers=admin)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {row["unit"] for row in rows} == {"dinkes"}
    assert json.loads(next(r for r in rows if r["action"] == "rejected")["details"])["comment"] == "Jam tangan mewah"
    assert client.get("/v1/admin/audit", headers=headers(world.review["dinkes"])).status_code == 403


def test_admins_manage_units_and_keys_over_http(world, client):
    admin = headers(world.admin)
    made = client.post("/v1/admin/units", headers=admin, json={"id": "bkpsdm", "name": "BKPSDM"})
    assert made.status_code == 201
    assert client.post("/v1/admin/units", headers=admin, json={"id": "bkpsdm", "name": "again"}).status_code == 409
    assert client.post("/v1/admin/units", headers=admin, json={"id": "Not Valid", "name": "x"}).status_code == 422
    key = client.post("/v1/admin/keys", headers=admin, json={"role": "review", "unit": "bkpsdm", "label": "Kepala BKPSDM"})
    assert key.status_code == 201 and key.json()["key"].startswith("fgr_review_")
    assert client.post("/v1/admin/keys", headers=admin, json={"role": "review"}).status_code == 422
    assert client.post("/v1/admin/keys", headers=admin, json={"role": "review", "unit": "nowhere"}).status_code == 404
    listed = client.get("/v1/admin/keys", params={"unit": "bkpsdm"}, headers=admin).json()
    assert [k["prefix"] for k in listed] == [key.json()["prefix"]]
    assert "key" not in listed[0]  # only the prefix is ever listed: the key is not stored
    assert client.get("/v1/submissions", headers=headers(key.json()["key"])).status_code == 200


def test_webhook_retries_back_off_exponentially_up_to_a_cap_then_stop():
    from flexguard.service.review.webhooks import RetryPolicy

    policy = RetryPolicy(base=timedelta(seconds=30), max_delay=timedelta(hours=1), max_attempts=10)
    delays = [policy.next_delay(attempts) for attempts in range(1, 11)]
    assert [d.total_seconds() for d in delays[:-1]] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert delays[-1] is None  # the 10th failure is the last attempt


def test_re_registering_or_removing_a_webhook_reaches_the_deliveries_still_pending(world, client):
    """Retries already scheduled follow a new registration, and stop when the webhook is removed."""
    from datetime import timedelta as _timedelta

    from flexguard.service.review.tables import utcnow

    store = world.store
    tool = store.authenticate(world.submit["dinkes"])
    reviewer = store.authenticate(world.review["dinkes"])
    store.set_webhook(tool, "http://127.0.0.1:9/old")
    pending = [submit(client, world.submit["dinkes"], red_photo(), caption=f"post {n}").json()["id"] for n in range(2)]
    for submission_id in pending:
        store.decide(reviewer, submission_id, approve=True, comment="")
    far = utcnow() + _timedelta(days=1)
    secret = store.set_webhook(tool, "http://127.0.0.1:9/new")
    jobs = store.claim_deliveries(far, _timedelta(seconds=1), limit=10)
    assert sorted((job.url, job.secret) for job in jobs) == [("http://127.0.0.1:9/new", secret)] * 2
    store.remove_webhook(tool)
    assert store.claim_deliveries(far + _timedelta(days=1), _timedelta(seconds=1), limit=10) == []
    deliveries = store.get(tool, pending[0]).deliveries
    assert deliveries[0].gave_up_at is not None and "removed" in deliveries[0].last_error
    assert actions(world, pending[0])[-1] == "approved"


def test_a_submission_nobody_decides_expires_and_its_photos_go(world, client):
    """Retention without holes: after FLEXGUARD_PENDING_EXPIRY_DAYS a pending post expires, photos deleted at once."""
    from datetime import timedelta as _timedelta

    from flexguard.service.review.store import Principal

    store, review_key = world.store, world.review["dinkes"]
    tool = store.authenticate(world.submit["dinkes"])
    store.set_webhook(tool, "http://127.0.0.1:9/hook")
    sid = submit(client, world.submit["dinkes"], red_photo()).json()["id"]
    assert client.get(f"/v1/submissions/{sid}/photos/0", headers=headers(review_key)).status_code == 200
    sent = store.get(tool, sid).created_at
    thirty_days = _timedelta(days=30)
    assert store.expire(Principal.service(), thirty_days, now=sent + thirty_days - _timedelta(seconds=1)) == 0
    assert store.expire(Principal.service(), thirty_days, now=sent + thirty_days + _timedelta(seconds=1)) == 1
    expired = client.get(f"/v1/submissions/{sid}", headers=headers(review_key)).json()
    assert expired["status"] == "expired" and expired["photos_purged_at"] and "30 days" in expired["comment"]
    photo = client.get(f"/v1/submissions/{sid}/photos/0", headers=headers(review_key))
    assert photo.status_code == 404 and "expired" in photo.json()["error"]["message"]
    assert actions(world, sid)[-1] == "expired"
    (job,) = store.claim_deliveries(sent + _timedelta(days=365), _timedelta(seconds=1), limit=10)
    assert json.loads(job.body)["status"] == "expired"
    late = client.post(f"/v1/submissions/{sid}/approve", headers=headers(review_key), json={})
    assert late.status_code == 409 and "already expired" in late.json()["error"]["message"]
    listed = client.get("/v1/submissions?status=expired", headers=headers(review_key)).json()
    assert [row["id"] for row in listed["submissions"]] == [sid]
