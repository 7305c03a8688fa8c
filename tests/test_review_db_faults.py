"""The review database going away: answers are 503 with Retry-After (never 500), the service recovers by
itself, and nothing is lost or doubled.

- PostgreSQL is restarted under load: a throwaway cluster of the test's own (``.ci/test-postgres.sh``)
  is stopped with open connections cut, kept down for a while, and started again, while upload tools
  submit posts (each with its own Idempotency-Key, retried after a 503 as the API says to) and a reviewer
  approves them (retried likewise). Afterwards every post is stored once, decided once, audited once
  each way and has exactly one webhook delivery, which reached the receiver.
- SQLite's file is locked by another process for longer than the database timeout: the submission gets
  503, and the same request succeeds once the lock is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from flexguard.service.app import create_app
from flexguard.service.review.store import Principal
from flexguard.service.review.tables import AuditEvent, Submission, WebhookDelivery
from flexguard.service.review.webhooks import DELIVERY_HEADER
from live_server import serving
from review_world import World, headers, make_world, photo_files, red_photo

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "test-postgres.sh"
UNIT = "dinkes"
TOOLS = 3  # upload tools submitting at once
POSTS_PER_TOOL = 6
OUTAGE_S = 3.0
# A short timeout, so that requests during the outage are answered quickly; the default is 10 s.
DATABASE_TIMEOUT_S = 1.0
# The clients retry on 503 as the Retry-After header says; the test waits a fraction of it to stay fast.
RETRY_PAUSE_S = 0.2
GIVE_UP_S = 60.0
DELIVERY_WAIT_S = 30.0
HTTP_OK, HTTP_CREATED, HTTP_CONFLICT, HTTP_UNAVAILABLE = 200, 201, 409, 503


def postgres_installed() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that records every delivery it is sent (the same one may come twice)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, str]] = []  # (delivery id, submission id)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.deliveries.append((self.headers[DELIVERY_HEADER], body["submission_id"]))
                self.send_response(HTTP_OK)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def until_answered(send, seen: Counter) -> httpx.Response:
    """Send until the answer is not a 503 (which must carry Retry-After); count every status seen."""
    deadline = time.monotonic() + GIVE_UP_S
    while True:
        try:
            response = send()
        except httpx.TransportError:
            seen["transport"] += 1
        else:
            seen[response.status_code] += 1
            if response.status_code != HTTP_UNAVAILABLE:
                return response
            assert response.headers.get("retry-after"), "a 503 without Retry-After"
            assert response.json()["error"]["code"] in ("database_unavailable", "overloaded")
        assert time.monotonic() < deadline, "the service did not recover"
        time.sleep(RETRY_PAUSE_S)


@pytest.fixture
def cluster():
    if not postgres_installed():
        pytest.skip("PostgreSQL is not installed: `make system-deps` installs Debian's postgresql")
    # In /tmp like `make test`'s own cluster: run as root, the server is the `postgres` user, who cannot
    # enter pytest's private temporary folders. The script deletes the folder when it stops the server.
    folder = Path(tempfile.mkdtemp(prefix="flexguard-postgres-restart."))
    environment = {k: v for k, v in os.environ.items() if k != "FLEXGUARD_TEST_POSTGRES_URL"}
    started = subprocess.run(["sh", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, env=environment)
    assert started.returncode == 0 and started.stdout.strip(), started.stderr
    yield folder, started.stdout.strip()
    subprocess.run(["sh", str(SCRIPT), "stop", str(folder)], check=True, capture_output=True)


def test_postgresql_restart_under_load_loses_and_doubles_nothing(cluster, tiny_model_path):
    folder, url = cluster
    world = make_world(url)
    receiver = Receiver()
    settings = world.settings(tiny_model_path, database_timeout_s=DATABASE_TIMEOUT_S, webhook_retry_base_s=0.5,
                              webhook_retry_max_s=1.0, webhook_poll_s=0.2)
    seen: Counter = Counter()
    decided: list[str] = []
    failures: list[BaseException] = []
    with serving(settings) as (base, _):
        client = httpx.Client(base_url=base, timeout=30.0)
        registered = client.put("/v1/webhook", headers=headers(world.submit[UNIT]), json={"url": receiver.url})
        assert registered.status_code == HTTP_OK, registered.text

        def tool(number: int) -> None:
            try:
                for post in range(POSTS_PER_TOOL):
                    key = f"tool{number}-post{post}"
                    submitted = until_answered(lambda: client.post(
                        "/v1/submissions", headers=headers(world.submit[UNIT], **{"Idempotency-Key": key}),
                        files=photo_files(red_photo()), data={"account": f"@asn.{number}", "caption": key}), seen)
                    assert submitted.status_code in (HTTP_OK, HTTP_CREATED), submitted.text
                    submission = submitted.json()["id"]
                    verdict = until_answered(lambda: client.post(
                        f"/v1/submissions/{submission}/approve", headers=headers(world.review[UNIT]), json={}), seen)
                    # 409 only when our own approval committed but its answer was lost to the outage.
                    if verdict.status_code == HTTP_CONFLICT:
                        assert "already approved" in verdict.json()["error"]["message"], verdict.text
                    else:
                        assert verdict.status_code == HTTP_OK, verdict.text
                    decided.append(submission)
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                failures.append(error)

        tools = [threading.Thread(target=tool, args=(n,)) for n in range(TOOLS)]
        for thread in tools:
            thread.start()
        while len(decided) < TOOLS and not failures:  # some posts go through before the outage
            time.sleep(0.05)
        subprocess.run(["sh", str(SCRIPT), "pause", str(folder)], check=True, capture_output=True)
        time.sleep(OUTAGE_S / 2)
        ready = client.get("/readyz")
        assert ready.status_code == HTTP_OK  # scoring does not need the database ...
        assert ready.json() == {"status": "ready", "database": "unavailable"}  # ... but readiness says it is down
        assert client.post("/v1/score", files=photo_files(red_photo())).status_code == HTTP_OK
        time.sleep(OUTAGE_S / 2)
        subprocess.run(["sh", str(SCRIPT), "resume", str(folder)], check=True, capture_output=True)
        for thread in tools:
            thread.join(GIVE_UP_S)
        assert not failures, failures
        assert client.get("/readyz").json()["database"] == "ok"

        deadline = time.monotonic() + DELIVERY_WAIT_S
        while {sid for _, sid in receiver.deliveries} != set(decided) and time.monotonic() < deadline:
            time.sleep(0.1)
        client.close()
    receiver.shutdown()

    assert seen[HTTP_UNAVAILABLE] > 0, "no request met the outage"
    assert not [status for status in seen if isinstance(status, int) and status >= 500 and status != HTTP_UNAVAILABLE]
    posts = TOOLS * POSTS_PER_TOOL
    assert len(decided) == len(set(decided)) == posts
    with world.store.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Submission)) == posts
        statuses = Counter(connection.scalars(select(Submission.status)))
        actions = Counter(connection.execute(select(AuditEvent.action, AuditEvent.submission_id)).all())
        deliveries = Counter(connection.scalars(select(WebhookDelivery.submission_id)))
    assert statuses == {"approved": posts}
    for submission in decided:
        assert actions[("submitted", submission)] == 1 and actions[("approved", submission)] == 1
        assert deliveries[submission] == 1
    # Every decision reached the receiver; a repeat (at-least-once) keeps its delivery id, to be skipped.
    assert {sid for _, sid in receiver.deliveries} == set(decided)
    submission_of: dict[str, set[str]] = {}
    for delivery, submission in receiver.deliveries:
        submission_of.setdefault(delivery, set()).add(submission)
    assert all(len(submissions) == 1 for submissions in submission_of.values())


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes our stdin
connection.execute("ROLLBACK")
"""


def test_a_sqlite_file_locked_past_the_timeout_is_503_then_works(tmp_path, tiny_model_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    world: World = make_world(url)
    settings = world.settings(tiny_model_path, database_timeout_s=0.3)
    send = dict(headers=headers(world.submit[UNIT], **{"Idempotency-Key": "terkunci-1"}),
                files=photo_files(red_photo()), data={"account": "@ani", "caption": "Saat terkunci"})
    with TestClient(create_app(settings)) as client:
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path / "review.db")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout.readline().strip() == "locked"
            refused = client.post("/v1/submissions", **send)
            assert refused.status_code == HTTP_UNAVAILABLE
            assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "database_unavailable"
            assert client.get("/readyz").json()["database"] == "ok"  # reachable; one writer is stuck
        finally:
            locker.stdin.close()
            locker.wait(timeout=30)
        accepted = client.post("/v1/submissions", **send)
        assert accepted.status_code == HTTP_CREATED, accepted.text
        metrics = client.get("/metrics").text
    assert 'flexguard_inputs_rejected_total{reason="database_unavailable"} 1.0' in metrics
    records, total = world.store.list_submissions(Principal.command_line("test"), None, 10, 0)
    assert total == 1 and records[0].caption == "Saat terkunci"
