"""Faults over real TCP (uvicorn on loopback, tiny model): overload, slow and abandoned uploads, huge bodies.

* Scoring requests over FLEXGUARD_MAX_CONCURRENT_REQUESTS get 503 ``overloaded`` with Retry-After at
  once; the health checks keep answering.
* A slow (slowloris-style, one byte at a time) or stalled upload gets 408 ``request_timeout`` after
  FLEXGUARD_BODY_TIMEOUT_S and its slot is free again; so is the slot of a client that disconnects.
* A 1 GB upload is refused without reading 1 GB, declared or chunked.
* Idle keep-alive connections are closed after FLEXGUARD_KEEP_ALIVE_S.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from PIL import Image

from flexguard.service.state import of_app
from flexguard.cli import main
from flexguard.service.settings import Settings

from live_server import serving

MAX_CONCURRENT = 2
BODY_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 1
MAX_BYTES = 200_000
TIMEOUT_S = 30.0
GIGABYTE = 1_000_000_000
# However the server stops a 1 GB upload, it must not have taken more than this from the client.
MOST_READ_OF_A_GIGABYTE = 50_000_000


@pytest.fixture(scope="module")
def server(tiny_model_path):
    settings = Settings(
        model_path=tiny_model_path, threads=1, decode_threads=2, max_wait_ms=1.0, max_bytes=MAX_BYTES,
        max_concurrent_requests=MAX_CONCURRENT, body_timeout_s=BODY_TIMEOUT_S, keep_alive_s=KEEP_ALIVE_S,
    )
    with serving(settings) as running:
        yield running


@pytest.fixture(scope="module")
def photo(encoder) -> bytes:
    return encoder(Image.new("RGB", (64, 48), (200, 10, 10)), "JPEG", quality=90)


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def read_status(connection: socket.socket, timeout_s: float = TIMEOUT_S) -> tuple[int, bytes]:
    """Status code and raw head+body of the response on ``connection`` (until its Content-Length or close)."""
    connection.settimeout(timeout_s)
    data = b""
    expected = None
    while expected is None or len(data) < expected:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        if expected is None and b"\r\n\r\n" in data:
            head, _, _ = data.partition(b"\r\n\r\n")
            length = [line.split(b":", 1)[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
            expected = len(head) + 4 + int(length[0]) if length else len(data)
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    return int(data.split(b" ", 2)[1]), data


class Trickle(threading.Thread):
    """A slowloris-style upload: headers at once, then one body byte every ``interval_s``, never finishing."""

    def __init__(self, base: str, interval_s: float = 0.1):
        super().__init__(daemon=True)
        self.connection = socket.create_connection(address(base))
        self.connection.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 150000\r\n\r\n\xff\xd8"
        )
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.sent = 2

    def run(self) -> None:
        while not self.stop.is_set():
            readable, _, _ = select.select([self.connection], [], [], self.interval_s)
            if readable:
                return  # the server answered
            try:
                self.connection.send(b"\x00")
                self.sent += 1
            except OSError:
                return


def scoring_in_progress(app) -> int:
    return of_app(app).scoring_requests


def wait_for(condition, timeout_s: float = TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_over_the_concurrency_limit_is_503_with_retry_after_and_slow_uploads_time_out(server, photo):
    base, app = server
    trickles = [Trickle(base) for _ in range(MAX_CONCURRENT)]
    started = time.monotonic()
    for trickle in trickles:
        trickle.start()
    wait_for(lambda: scoring_in_progress(app) == MAX_CONCURRENT, 5, "the slow uploads to take their slots")
    refused = httpx.post(f"{base}/v1/score", content=photo, headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    # The refusal is immediate (no queue) and the probes still answer while the slots are taken.
    assert refused.elapsed.total_seconds() < 1.0
    assert httpx.get(f"{base}/healthz").status_code == 200
    # The slow uploads are cut off at the body deadline with 408, and their slots come back.
    for trickle in trickles:
        status, _ = read_status(trickle.connection)
        assert status == 408
        trickle.stop.set()
        trickle.join(TIMEOUT_S)
        trickle.connection.close()
    assert time.monotonic() - started < BODY_TIMEOUT_S + 5
    wait_for(lambda: scoring_in_progress(app) == 0, 5, "the slots to be released")
    response = httpx.post(f"{base}/v1/score", content=photo, headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text


def test_stalled_upload_with_no_bytes_at_all_times_out(server):
    base, app = server
    with socket.create_connection(address(base)) as connection:
        connection.sendall(b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n")
        start = time.monotonic()
        status, body = read_status(connection)
        assert status == 408 and b"request_timeout" in body
        assert BODY_TIMEOUT_S - 0.2 <= time.monotonic() - start < BODY_TIMEOUT_S + 3
    wait_for(lambda: scoring_in_progress(app) == 0, 5, "the slot to be released")


def test_clients_leaving_mid_upload_free_their_slots(server, photo):
    base, app = server
    for _ in range(10):
        connections = []
        for _ in range(MAX_CONCURRENT):
            connection = socket.create_connection(address(base))
            connection.sendall(
                b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
                + photo[:500]
            )
            connections.append(connection)
        wait_for(lambda: scoring_in_progress(app) == MAX_CONCURRENT, 5, "the uploads to start")
        for connection in connections:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            connection.close()
        wait_for(lambda: scoring_in_progress(app) == 0, 5, "the abandoned uploads to release their slots")
    response = httpx.post(f"{base}/v1/score", content=photo, headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S)
    assert response.status_code == 200


def test_a_declared_gigabyte_is_refused_before_reading(server):
    base, _ = server
    for content_type in (b"image/jpeg", b"multipart/form-data; boundary=b"):
        with socket.create_connection(address(base)) as connection:
            connection.sendall(
                b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(GIGABYTE).encode() + b"\r\n\r\n"
            )
            status, body = read_status(connection, 5)
            assert status == 413 and b"too_large" in body


@pytest.mark.parametrize("multipart", [False, True])
def test_a_chunked_gigabyte_is_refused_without_reading_it(server, multipart):
    """No Content-Length: the server counts while reading and stops the client long before 1 GB."""
    base, _ = server
    head = b"POST /v1/score HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    if multipart:
        head += b"Content-Type: multipart/form-data; boundary=BOUNDARY\r\n\r\n"
        prefix = b'--BOUNDARY\r\nContent-Disposition: form-data; name="files"; filename="huge.jpg"\r\n\r\n\xff\xd8'
    else:
        head += b"Content-Type: image/jpeg\r\n\r\n"
        prefix = b"\xff\xd8"
    block = b"\x00" * 65536
    sent = 0
    status = None
    with socket.create_connection(address(base)) as connection:
        connection.sendall(head + f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n")
        connection.setblocking(False)
        chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        deadline = time.monotonic() + TIMEOUT_S
        while sent < GIGABYTE and time.monotonic() < deadline:
            readable, writable, _ = select.select([connection], [connection], [], 1.0)
            if readable:
                status, _ = read_status(connection, 5)
                break
            if writable:
                try:
                    sent += connection.send(chunk)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
    assert status == 413, f"no 413 after {sent} bytes"
    assert sent < MOST_READ_OF_A_GIGABYTE, sent


def test_idle_keep_alive_connections_are_closed(server):
    base, _ = server
    with socket.create_connection(address(base)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _ = read_status(connection, 5)
        assert status == 200
        start = time.monotonic()
        connection.settimeout(KEEP_ALIVE_S + 5)
        rest = b""
        while True:  # the rest of the answer, then the server's close
            chunk = connection.recv(4096)
            if not chunk:
                break
            rest += chunk
        assert time.monotonic() - start < KEEP_ALIVE_S + 3


def test_serve_sets_the_keep_alive_timeout(monkeypatch, tiny_model_path):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: calls.append(options))
    monkeypatch.setenv("FLEXGUARD_KEEP_ALIVE_S", "7")
    assert main(["serve", "--model", str(tiny_model_path)]) == 0
    assert calls[0]["timeout_keep_alive"] == 7
