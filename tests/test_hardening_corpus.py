"""Broken and hostile uploads (tests/hardening_corpus.py) through the REST app: each gets its documented
outcome (scored, or a per-file error with a stable code, or a clear 4xx), never a 5xx, a hang or a
traceback, and the service keeps serving. Limits hold before a body is read or a photo decoded.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from flexguard.service.app import create_app
from flexguard.inference.engine import Engine
from flexguard.service.errors import CODES
from flexguard.service.settings import Settings
from hardening_corpus import CASES, VIDEO_CASES, build_all, png_declaring

PER_REQUEST_S = 10.0  # far above any case's real time (< 0.1 s): a case that takes longer is a hang
PER_FILE_CODES = {code.value for code, info in CODES.items() if info.status is None}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    return build_all()


@pytest.fixture(scope="module")
def client(tiny_model_path):
    settings = Settings(model_path=tiny_model_path, threads=1, decode_threads=2, max_wait_ms=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        deadline = time.monotonic() + 10
        while test_client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield test_client


def check_outcome(result: dict, expected: tuple[str, str], name: str) -> None:
    kind, value = expected
    if kind == "ok":
        assert result["ok"] is True, (name, result)
        assert result["image"]["format"] == value, (name, result["image"])
        assert result["decision"] in ("allow", "review", "block")
    else:
        assert result["ok"] is False, (name, result)
        assert result["error"]["code"] == value, (name, result["error"])
        assert result["error"]["code"] in PER_FILE_CODES
        assert "Traceback" not in result["error"]["message"]


@pytest.mark.parametrize("name", list(CASES))
def test_each_hostile_file_gets_its_documented_outcome(client, corpus, name):
    _, expected, filename = CASES[name]
    start = time.monotonic()
    response = client.post("/v1/score", files=[("files", (filename, corpus[name], "image/jpeg"))])
    assert time.monotonic() - start < PER_REQUEST_S, f"{name} took too long"
    assert response.status_code == 200, (name, response.text[:300])
    (result,) = response.json()["results"]
    check_outcome(result, expected, name)


@pytest.mark.parametrize("name", [n for n in CASES if n != "zero_bytes"])
def test_each_hostile_file_as_a_raw_body(client, corpus, name):
    _, expected, _ = CASES[name]
    response = client.post("/v1/score", content=corpus[name], headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, (name, response.text[:300])
    check_outcome(response.json()["results"][0], expected, name)


@pytest.mark.parametrize("name", list(VIDEO_CASES))
def test_each_hostile_video_gets_its_documented_outcome_as_a_file_and_as_a_raw_body(client, name):
    build, expected, filename = VIDEO_CASES[name]
    data = build()
    start = time.monotonic()
    as_file = client.post("/v1/score", files=[("files", (filename, data, "application/octet-stream"))])
    raw = client.post("/v1/score", content=data, headers={"Content-Type": "video/mp4"})
    assert time.monotonic() - start < 2 * PER_REQUEST_S, f"{name} took too long"
    for response in (as_file, raw):
        assert response.status_code == 200, (name, response.text[:300])
        check_outcome(response.json()["results"][0], expected, name)
    assert client.get("/readyz").status_code == 200


def test_the_whole_corpus_in_one_request_keeps_order_and_the_service_serves_on(client, corpus):
    names = list(CASES)
    files = [("files", (CASES[n][2], corpus[n], "application/octet-stream")) for n in names]
    response = client.post("/v1/score", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(names)
    for name, result in zip(names, results):
        check_outcome(result, CASES[name][1], name)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"Content-Type": "image/jpeg"}, b"", 422, "no_photos"),
        ({"Content-Type": "application/pdf"}, b"%PDF-1.4", 415, "unsupported_media_type"),
        ({"Content-Type": "image/svg+xml", "Content-Length": "1000000000"}, b"<svg/>", 413, "too_large"),
        ({"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "999999999999"}, b"--x", 413, "too_large"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\nnot a part", 400, "bad_request"),
        ({"Content-Type": "multipart/form-data"}, b"--x", 400, "bad_request"),
        ({"Content-Type": "image/jpeg", "Content-Length": "ten"}, b"x", 400, "bad_request"),
    ],
)
def test_whole_request_problems_are_clear_4xx(client, headers, body, status, code):
    response = client.post("/v1/score", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_bomb_is_refused_from_its_header(tiny_model_path):
    """74 bytes declaring 10 gigapixels: refused without allocating or decoding anything."""
    engine = Engine(tiny_model_path, threads=1)
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 100
    start = time.perf_counter()
    (result,) = engine.score([bomb])
    assert time.perf_counter() - start < 0.5
    assert result.code == "too_many_pixels"


# --- limits hold before a body is fully read (no HTTP; tests/test_hardening_live.py does it over TCP) ---


class CountingBody:
    def __init__(self, chunk: bytes, count: int, first: bytes = b"", delay_s: float = 0.0):
        self.chunk, self.count, self.first, self.delay_s = chunk, count, first, delay_s
        self.bytes_read = 0

    async def __aiter__(self):
        import asyncio

        if self.first:
            self.bytes_read += len(self.first)
            yield self.first
        for _ in range(self.count):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.bytes_read += len(self.chunk)
            yield self.chunk


def _read(content_type: str, body, limits):
    import asyncio

    from flexguard.service.uploads import read_upload

    return asyncio.run(read_upload(content_type, None, body, limits))


def test_a_refused_gigabyte_multipart_is_not_read_to_its_end():
    """One photo over max_bytes in a body that would go on for 1 GB: read stops max_bytes + DRAIN_BYTES in."""
    from flexguard.service.errors import ApiError
    from flexguard.service.uploads import DRAIN_BYTES, UploadLimits

    limits = UploadLimits(max_files=64, max_bytes=1_000_000)  # max_body ~ 68 MB: no help here
    head = b'--B\r\nContent-Disposition: form-data; name="files"; filename="huge.jpg"\r\n\r\n'
    body = CountingBody(b"\x00" * 65536, 1_000_000_000 // 65536, first=head)
    with pytest.raises(ApiError) as caught:
        _read("multipart/form-data; boundary=B", body, limits)
    assert caught.value.code == "too_large"
    assert body.bytes_read <= limits.max_bytes + DRAIN_BYTES + 2 * 65536, body.bytes_read


def test_a_body_slower_than_the_deadline_is_408():
    from flexguard.service.errors import ApiError
    from flexguard.service.uploads import UploadLimits

    body = CountingBody(b"\x00", 1000, first=b"\xff\xd8", delay_s=0.05)  # one byte every 50 ms
    start = time.monotonic()
    with pytest.raises(ApiError) as caught:
        _read("image/jpeg", body, UploadLimits(max_files=1, max_bytes=10_000, body_timeout_s=0.3))
    assert caught.value.code == "request_timeout" and caught.value.status == 408
    assert time.monotonic() - start < 2
