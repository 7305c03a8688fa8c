"""Nothing is lost when the service dies between storing a submission and answering, on both databases.

The first server (tests/crash_after_commit.py) is killed with SIGKILL right after the commit, so the
upload tool sees its connection drop; it retries against a fresh server with the same
Idempotency-Key, and finds the stored submission, exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from flexguard.service.review.tables import AuditEvent, PhotoBlob, Submission

from review_world import headers, make_world, photo_files, red_photo

from live_server import free_port

CRASHING_SERVER = Path(__file__).with_name("crash_after_commit.py")
START_TIMEOUT_S = 60.0
POLL_S = 0.05


def start(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(POLL_S)
    process.kill()
    raise AssertionError("the server did not become ready")


def test_a_crash_between_storing_and_answering_loses_nothing_and_stores_nothing_twice(database_url, tiny_model_path):
    world = make_world(database_url)
    port = free_port()
    env = {**os.environ, "FLEXGUARD_DATABASE_URL": database_url, "FLEXGUARD_MODEL_PATH": str(tiny_model_path),
           "FLEXGUARD_PORT": str(port)}
    photo = red_photo()
    request = dict(headers=headers(world.submit["dinkes"], **{"Idempotency-Key": "post-2026-11-26-001"}),
                   files=photo_files(photo), data={"account": "@ani.asn", "caption": "Liburan"})
    url = f"http://127.0.0.1:{port}/v1/submissions"

    crashing = start([sys.executable, str(CRASHING_SERVER)], env, port)
    with pytest.raises(httpx.TransportError):  # the answer never comes
        httpx.post(url, timeout=30, **request)
    assert crashing.wait(timeout=30) == -signal.SIGKILL

    restarted = start([sys.executable, "-m", "flexguard", "serve"], env, port)
    try:
        retried = httpx.post(url, timeout=30, **request)
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    assert retried.status_code == 200, retried.text
    assert retried.json()["replayed"] is True and retried.json()["status"] == "pending"
    with world.store.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Submission)) == 1
        assert connection.scalar(select(func.count()).select_from(PhotoBlob)) == 1
        submitted = connection.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "submitted"))
        assert submitted == 1
    stored = world.store.photo(world.store.authenticate(world.review["dinkes"]), retried.json()["id"], 0)
    assert stored == ("image/png", photo)
