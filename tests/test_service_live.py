"""The app behind a real uvicorn on a local port, on the tiny model: concurrency, streaming and limits over TCP."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from flexguard.service.settings import Settings

from live_server import serving

MAX_BYTES = 200_000
CLIENTS = 8
PHOTOS_PER_REQUEST = 3
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def server(tiny_model_path):
    settings = Settings(model_path=tiny_model_path, threads=1, decode_threads=2, max_wait_ms=20.0, max_bytes=MAX_BYTES)
    with serving(settings) as (base, _):
        yield base


def jpeg(encoder, colour, size=(160, 120)) -> bytes:
    return encoder(Image.new("RGB", size, colour), "JPEG", quality=90)


def batch_count(base: str) -> tuple[float, float]:
    """(model calls, photos through the model) so far."""
    values = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(("flexguard_batch_size_count ", "flexguard_batch_size_sum ")):
            name, value = line.split()
            values[name] = float(value)
    return values["flexguard_batch_size_count"], values["flexguard_batch_size_sum"]


def test_concurrent_requests_share_model_calls(server, encoder):
    photos = [jpeg(encoder, (255, 40 * i, 0)) for i in range(PHOTOS_PER_REQUEST)]
    calls_before, photos_before = batch_count(server)

    def post(_):
        files = [("files", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)]
        return httpx.post(f"{server}/v1/score", files=files, timeout=TIMEOUT_S)

    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(post, range(CLIENTS)))
    assert all(r.status_code == 200 for r in responses)
    first = responses[0].json()["results"]
    for response in responses:
        results = response.json()["results"]
        assert [r["risk"] for r in results] == pytest.approx([r["risk"] for r in first], abs=1e-4)
    calls_after, photos_after = batch_count(server)
    assert photos_after - photos_before == CLIENTS * PHOTOS_PER_REQUEST
    assert calls_after - calls_before < CLIENTS * PHOTOS_PER_REQUEST  # photos of different requests shared calls


def test_chunked_raw_body(server, encoder):
    photo = jpeg(encoder, (255, 0, 0))

    def chunks():
        for i in range(0, len(photo), 1000):
            yield photo[i:i + 1000]

    response = httpx.post(f"{server}/v1/score", content=chunks(), headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["decision"] == "block"


def test_chunked_raw_body_over_the_limit(server):
    def endless():
        for _ in range(100):
            yield b"\xff" * 10_000

    response = httpx.post(f"{server}/v1/score", content=endless(), headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_oversized_photo_among_others_reaches_the_client_as_413(server, encoder):
    """The server reads (and drops) the rest of the body, so the client gets the answer, not a reset."""
    big = b"\xff\xd8" + bytes(MAX_BYTES * 3)
    files = [("files", ("ok.jpg", jpeg(encoder, (0, 0, 255)), "image/jpeg")), ("files", ("big.jpg", big, "image/jpeg"))]
    response = httpx.post(f"{server}/v1/score", files=files, timeout=TIMEOUT_S)
    assert response.status_code == 413
    assert "big.jpg" in response.json()["error"]["message"]
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_client_leaving_mid_upload_is_not_a_server_error(server):
    def score_requests(status: str) -> float:
        for line in httpx.get(f"{server}/metrics").text.splitlines():
            if line.startswith("flexguard_http_requests_total{") and 'route="/v1/score"' in line and f'status="{status}"' in line:
                return float(line.split()[-1])
        return 0.0

    before = score_requests("400"), score_requests("500")
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: test\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
            + b"\xff\xd8" + b"\x00" * 1000
        )
    deadline = time.monotonic() + TIMEOUT_S
    while score_requests("400") == before[0]:
        assert time.monotonic() < deadline, "the abandoned request was not answered"
        time.sleep(0.05)
    assert score_requests("500") == before[1]
    assert httpx.get(f"{server}/healthz").status_code == 200
