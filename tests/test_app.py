"""The REST app, end to end through FastAPI's TestClient, on the tiny model from conftest.py.

Each client is used as a context manager so the app's lifespan runs and loads the engine. The tiny
model scores luxury_car by how red a photo is, so decisions are predictable.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from flexguard.models.metadata import compute_weights_sha256
from flexguard.service.state import of_app
from flexguard.models.taxonomy import CATEGORIES
from flexguard.service.app import create_app
from flexguard.inference.engine import SUPPORTED_FORMATS, Engine, ModelLoadError
from flexguard.service.errors import CODES
from flexguard.service.settings import Settings

MAX_FILES = 64
SMALL_MAX_FILES = 3
READY_TIMEOUT_S = 10.0
POLL_S = 0.01
RED = (255, 0, 0)
GREY = (127, 127, 127)
# "video" is null for a photo, an object for a video (tests/test_video.py).
RESULT_KEYS = {"ok", "risk", "decision", "categories", "evidence", "image", "timing", "video"}
# Lossy formats shift the tiny model's colour averages a little; lossless ones not at all.
LOSSY_TOLERANCE = 0.02
SCORE_TOLERANCE = 1e-4  # scores are rounded to 4 places; batch composition moves the last digit at most


def settings(model_path, **overrides) -> Settings:
    values = {"model_path": model_path, "threads": 1, "decode_threads": 2, "max_wait_ms": 2.0, **overrides}
    return Settings(**values)


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the app did not become ready"
        time.sleep(POLL_S)


@pytest.fixture(scope="module")
def client(tiny_model_path):
    with TestClient(create_app(settings(tiny_model_path))) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def small_client(tiny_model_path, grey_png):
    limits = {"max_files": SMALL_MAX_FILES, "max_bytes": len(grey_png), "max_pixels": 120 * 90}
    with TestClient(create_app(settings(tiny_model_path, **limits))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> Engine:
    return Engine(tiny_model_path, threads=1)


@pytest.fixture(scope="module")
def red_jpeg(encoder) -> bytes:
    return encoder(Image.new("RGB", (400, 300), RED), "JPEG", quality=95)


@pytest.fixture(scope="module")
def grey_png(encoder) -> bytes:
    return encoder(Image.new("RGB", (120, 90), GREY), "PNG")


def upload(*photos: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in photos]


def check_result(result: dict) -> None:
    assert result["ok"] is True
    assert set(result) == RESULT_KEYS
    assert result["decision"] in ("allow", "review", "block")
    assert [c["id"] for c in result["categories"]] == [c.id for c in CATEGORIES]
    for entry, category in zip(result["categories"], CATEGORIES):
        assert entry == {"id": category.id, "name_en": category.name_en, "name_id": category.name_id, "score": entry["score"]}
        assert 0.0 <= entry["score"] <= 1.0
    assert result["risk"] == max(c["score"] for c in result["categories"])
    for evidence in result["evidence"]:
        assert set(evidence) == {"category", "score", "box"}
        left, top, right, bottom = evidence["box"]
        assert 0.0 <= left < right <= 1.0 and 0.0 <= top < bottom <= 1.0
    timing = result["timing"]
    assert set(timing) == {"decode_ms", "queue_ms", "model_ms", "batch_size"}
    assert timing["decode_ms"] > 0 and timing["model_ms"] > 0 and timing["queue_ms"] >= 0 and timing["batch_size"] >= 1


def without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "timing"}


def scores_of(result: dict) -> dict[str, float]:
    return {c["id"]: c["score"] for c in result["categories"]}


def assert_close_scores(a: dict, b: dict, tolerance: float) -> None:
    for category, score in scores_of(a).items():
        assert abs(score - scores_of(b)[category]) <= tolerance, (category, a, b)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert body["detail"] == body["error"]["message"]
    return body["error"]


def metric_values(client: TestClient) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics, keyed by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


# --- health and readiness ---------------------------------------------------------------------


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_before_and_after_load(tiny_model_path):
    app = create_app(settings(tiny_model_path))
    idle = TestClient(app)  # not entered: the lifespan has not run, so no model is loaded
    assert idle.get("/healthz").status_code == 200
    response = idle.get("/readyz")
    assert response.status_code == 503 and response.json() == {"status": "starting", "database": None}
    with TestClient(app) as started:
        wait_ready(started)
        assert started.get("/readyz").json() == {"status": "ready", "database": "ok"}


class GatedEngine(Engine):
    """An engine whose warm-up waits for the test to let it go."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def warm_up(self) -> None:
        assert self.gate.wait(READY_TIMEOUT_S)
        super().warm_up()


def test_readyz_waits_for_the_warm_up_inference(tiny_model_path, red_jpeg):
    engine = GatedEngine(tiny_model_path, threads=1)
    with TestClient(create_app(settings(tiny_model_path), engine=engine)) as started:
        assert of_app(started.app).engine is engine  # given an engine, the app does not load another
        assert started.get("/healthz").status_code == 200
        assert started.get("/readyz").status_code == 503
        engine.gate.set()
        wait_ready(started)


def test_engine_is_loaded_by_the_lifespan(client, tiny_model_path, tiny_model_info):
    engine = of_app(client.app).engine
    assert engine.path == tiny_model_path
    assert engine.info == replace(tiny_model_info, weights_sha256=compute_weights_sha256(tiny_model_path))


def test_missing_model_fails_at_startup(tmp_path):
    app = create_app(Settings(model_path=tmp_path / "missing.onnx"))
    with pytest.raises(ModelLoadError, match="not found"):
        with TestClient(app):
            pass


# --- scoring ------------------------------------------------------------------------------------


def test_score_one_photo(client, red_jpeg, tiny_model_info):
    response = client.post("/v1/score", files=upload(("red.jpg", red_jpeg)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": tiny_model_info.name, "version": tiny_model_info.version,
                             "weights_sha256": compute_weights_sha256(of_app(client.app).engine.path)}
    assert body["thresholds"] == {"review": tiny_model_info.thresholds.review, "block": tiny_model_info.thresholds.block}
    (result,) = body["results"]
    check_result(result)
    assert result["decision"] == "block"
    assert result["image"] == {"width": 400, "height": 300, "format": "JPEG"}
    assert [e["category"] for e in result["evidence"]] == ["luxury_car"]
    assert result["evidence"][0]["score"] == result["categories"][0]["score"] == result["risk"]


def test_score_several_photos_in_order(client, red_jpeg, grey_png):
    response = client.post("/v1/score", files=upload(("grey.png", grey_png), ("red.jpg", red_jpeg), ("grey2.png", grey_png)))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    for result in results:
        check_result(result)
    assert [r["image"]["format"] for r in results] == ["PNG", "JPEG", "PNG"]
    assert [r["decision"] for r in results] == ["allow", "block", "allow"]
    assert without_timing(results[0]) == without_timing(results[2])
    assert results[0]["evidence"] == []


def shades(count: int) -> list[Image.Image]:
    """``count`` different photos: from grey to red, each with its own size."""
    return [
        Image.new("RGB", (200 + i, 150), (127 + (128 * i) // count, 127 - (127 * i) // count, 127 - (127 * i) // count))
        for i in range(count)
    ]


def test_64_photos_in_one_request(client, engine, encoder):
    photos = [encoder(image, "PNG") for image in shades(MAX_FILES)]
    response = client.post("/v1/score", files=upload(*[(f"{i}.png", p) for i, p in enumerate(photos)]))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == MAX_FILES
    for i, result in enumerate(results):
        check_result(result)
        assert result["image"]["width"] == 200 + i  # input order kept
    risks = [r["risk"] for r in results]
    assert risks[0] < risks[MAX_FILES // 2] < risks[-1]  # redder photos, higher risk
    # Photos were batched together, and no model call was larger than allowed.
    sizes = [r["timing"]["batch_size"] for r in results]
    assert max(sizes) > 1 and max(sizes) <= Settings().max_batch
    # The same scores as the engine gives the same files.
    for result, alone in zip(results, engine.score(photos)):
        assert_close_scores(result, {"categories": [{"id": k, "score": v} for k, v in alone.scores.items()]}, SCORE_TOLERANCE)
        assert result["decision"] == alone.decision


def test_service_scores_equal_engine_scores(client, engine, encoder, coffee, chelsea, astronaut, red_jpeg, twins):
    upright, sideways = twins(coffee)
    photos = [encoder(coffee, "JPEG"), encoder(chelsea, "PNG"), encoder(astronaut, "WEBP"), red_jpeg, upright, sideways]
    results = client.post("/v1/score", files=upload(*[(f"p{i}", p) for i, p in enumerate(photos)])).json()["results"]
    for result, expected in zip(results, engine.score(photos)):
        assert result["risk"] == pytest.approx(expected.risk, abs=SCORE_TOLERANCE)
        assert result["decision"] == expected.decision
        assert scores_of(result) == pytest.approx(expected.scores, abs=SCORE_TOLERANCE)
        assert [e["category"] for e in result["evidence"]] == [e.category for e in expected.evidence]
        for got, want in zip(result["evidence"], expected.evidence):
            assert got["box"] == pytest.approx(list(want.box), abs=SCORE_TOLERANCE)
        assert result["image"] == {"width": expected.width, "height": expected.height, "format": expected.format}


def test_raw_image_body(client, red_jpeg, encoder):
    response = client.post("/v1/score", content=red_jpeg, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    check_result(result)
    assert result["decision"] == "block" and result["image"]["format"] == "JPEG"
    # The declared type is not trusted: the content decides.
    heic = encoder(Image.new("RGB", (64, 48), RED), "HEIF")
    (result,) = client.post("/v1/score", content=heic, headers={"Content-Type": "image/png"}).json()["results"]
    assert result["image"]["format"] == "HEIF"
    (result,) = client.post("/v1/score", content=b"not a photo", headers={"Content-Type": "image/jpeg"}).json()["results"]
    assert result == {"ok": False, "error": {"code": "unsupported_format", "message": result["error"]["message"]}}


def red_left_photo() -> Image.Image:
    image = Image.new("RGB", (320, 240), GREY)
    image.paste(RED, (0, 0, 160, 240))
    return image


def animated(fmt: str, encoder) -> bytes:
    """Red first frame, grey second: scored as red only if the first frame is the one used."""
    red, grey = Image.new("RGB", (160, 120), RED), Image.new("RGB", (160, 120), GREY)
    return encoder(red, fmt, save_all=True, append_images=[grey], duration=100, loop=0)


@pytest.mark.parametrize(
    ("fmt", "options", "lossy"),
    [
        ("JPEG", {"quality": 95}, True),
        ("MPO", {"quality": 95, "save_all": True, "append_images": [Image.new("RGB", (320, 240), GREY)]}, True),
        ("PNG", {}, False),
        ("WEBP", {"lossless": True}, False),
        ("WEBP", {"quality": 90}, True),
        ("GIF", {}, True),  # a 256-colour palette
        ("BMP", {}, False),
        ("TIFF", {}, False),
        ("TIFF", {"compression": "tiff_lzw"}, False),
        ("HEIF", {"quality": 90}, True),
    ],
)
def test_every_supported_format(client, encoder, fmt, options, lossy):
    photo = red_left_photo()
    reference, result = client.post(
        "/v1/score", files=upload(("ref.png", encoder(photo, "PNG")), ("photo", encoder(photo, fmt, **options)))
    ).json()["results"]
    check_result(result)
    assert result["image"] == {"width": 320, "height": 240, "format": fmt}
    assert_close_scores(result, reference, LOSSY_TOLERANCE if lossy else SCORE_TOLERANCE)
    assert [e["category"] for e in result["evidence"]] == [e["category"] for e in reference["evidence"]]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_are_scored_on_their_first_frame(client, encoder, fmt):
    (result,) = client.post("/v1/score", files=upload(("anim", animated(fmt, encoder)))).json()["results"]
    check_result(result)
    assert result["image"]["format"] == fmt
    assert result["decision"] == "block"


def test_supported_formats_are_the_documented_ones():
    assert set(SUPPORTED_FORMATS) == {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF"}


@pytest.mark.parametrize("fmt", ["ICO", "TGA", "PCX", "PPM", "AVIF", "JPEG2000", "QOI"])
def test_other_formats_are_refused_by_content(client, encoder, fmt):
    try:
        data = encoder(Image.new("RGB", (64, 48), RED), fmt)
    except (KeyError, OSError):
        pytest.skip(f"this Pillow cannot write {fmt}")
    # Named and typed as a JPEG: the content decides.
    response = client.post("/v1/score", files=[("files", ("photo.jpg", data, "image/jpeg"))])
    (result,) = response.json()["results"]
    assert result["ok"] is False and result["error"]["code"] == "unsupported_format"


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        b"\x00" * 1000,
    ],
    ids=["svg", "pdf", "zeros"],
)
def test_non_images_are_refused(client, data):
    (result,) = client.post("/v1/score", files=upload(("photo.png", data))).json()["results"]
    assert result["ok"] is False and result["error"]["code"] == "unsupported_format"


def test_exif_rotated_jpeg_scores_like_its_upright_twin(client, coffee, twins):
    upright = coffee.crop((0, 0, 592, 400))
    upright.paste(RED, (0, 0, 200, 400))  # red on the left, so orientation matters to the evidence too
    upright_jpeg, sideways_jpeg = twins(upright)
    a, b = client.post("/v1/score", files=upload(("up.jpg", upright_jpeg), ("side.jpg", sideways_jpeg))).json()["results"]
    assert a["image"] == b["image"] == {"width": 592, "height": 400, "format": "JPEG"}
    assert abs(a["risk"] - b["risk"]) <= 1e-3
    assert_close_scores(a, b, 1e-3)
    assert a["decision"] == b["decision"]
    assert [e["category"] for e in a["evidence"]] == [e["category"] for e in b["evidence"]]


def test_bad_photos_among_good_ones(client, red_jpeg, grey_png):
    photos = upload(
        ("red.jpg", red_jpeg), ("notes.txt", b"not a photo at all"), ("cut.jpg", red_jpeg[: len(red_jpeg) // 2]),
        ("empty.jpg", b""), ("grey.png", grey_png),
    )
    response = client.post("/v1/score", files=photos)
    assert response.status_code == 200, response.text
    good, text, truncated, empty, grey = response.json()["results"]
    check_result(good)
    check_result(grey)
    assert good["decision"] == "block" and grey["decision"] == "allow"
    assert text["ok"] is False and set(text) == {"ok", "error"}
    assert text["error"]["code"] == "unsupported_format" and text["error"]["message"]
    assert truncated == {"ok": False, "error": {"code": "decode_failed", "message": truncated["error"]["message"]}}
    assert empty["error"]["code"] == "unsupported_format"


def test_too_many_pixels_is_that_photos_error(small_client, encoder):
    ok = encoder(Image.new("RGB", (120, 90), GREY), "PNG")
    big = encoder(Image.new("RGB", (121, 90), GREY), "PNG")
    response = small_client.post("/v1/score", files=upload(("ok.png", ok), ("big.png", big)))
    fine, too_big = response.json()["results"]
    check_result(fine)
    assert too_big["ok"] is False and too_big["error"]["code"] == "too_many_pixels"
    assert "121x90" in too_big["error"]["message"]


# --- thresholds -----------------------------------------------------------------------------------


def test_thresholds_override(client, encoder, tiny_model_info):
    photo = encoder(red_left_photo(), "PNG")
    default = client.post("/v1/score", files=upload(("p.png", photo))).json()
    (result,) = default["results"]
    risk = result["risk"]
    assert tiny_model_info.thresholds.review <= risk < tiny_model_info.thresholds.block
    assert result["decision"] == "review"

    # Query parameters.
    body = client.post("/v1/score?review_threshold=0.1&block_threshold=0.2", files=upload(("p.png", photo))).json()
    assert body["thresholds"] == {"review": 0.1, "block": 0.2}
    assert body["results"][0]["decision"] == "block"
    assert {e["category"] for e in body["results"][0]["evidence"]} == {c for c, s in scores_of(result).items() if s >= 0.1}

    # Form fields, one of them: the other stays the model's.
    form = {"review_threshold": str(risk + 0.01)}
    body = client.post("/v1/score", files=upload(("p.png", photo)), data=form).json()
    assert body["thresholds"] == {"review": risk + 0.01, "block": tiny_model_info.thresholds.block}
    assert body["results"][0]["decision"] == "allow" and body["results"][0]["evidence"] == []

    # Raw body with query parameters.
    response = client.post("/v1/score?block_threshold=1", content=photo, headers={"Content-Type": "image/png"})
    assert response.json()["results"][0]["decision"] == "review"


@pytest.mark.parametrize(
    ("query", "form", "needle"),
    [
        ("review_threshold=1.5", {}, "review_threshold"),
        ("block_threshold=-0.1", {}, "block_threshold"),
        ("review_threshold=nan", {}, "review_threshold"),
        ("review_threshold=lots", {}, "review_threshold"),
        ("review_threshold=0.8&block_threshold=0.5", {}, "must not be above"),
        ("review_threshold=0.99", {}, "(the model's)"),
        ("", {"review_threshold": "abc"}, "review_threshold"),
        ("", {"block_threshold": "2"}, "block_threshold"),
        ("", {"review_threshold": "inf"}, "review_threshold"),
        ("review_threshold=0.5", {"review_threshold": "0.5"}, "both"),
        ("", {"colour": "red"}, "unknown form field 'colour'"),
    ],
)
def test_invalid_parameters(client, grey_png, query, form, needle):
    response = client.post(f"/v1/score?{query}", files=upload(("g.png", grey_png)), data=form)
    assert needle in assert_error(response, 422, "invalid_parameters")["message"]


# --- whole-request errors -----------------------------------------------------------------------


def test_too_many_files(small_client, grey_png):
    response = small_client.post("/v1/score", files=upload(*[(f"{i}.png", grey_png) for i in range(SMALL_MAX_FILES + 1)]))
    assert str(SMALL_MAX_FILES) in assert_error(response, 413, "too_many_files")["message"]


def test_as_many_files_as_allowed(small_client, grey_png):
    response = small_client.post("/v1/score", files=upload(*[(f"{i}.png", grey_png) for i in range(SMALL_MAX_FILES)]))
    assert response.status_code == 200
    assert len(response.json()["results"]) == SMALL_MAX_FILES


def test_too_big_photo(small_client, grey_png, red_jpeg):
    assert small_client.post("/v1/score", files=upload(("grey.png", grey_png))).status_code == 200
    assert len(red_jpeg) > len(grey_png)
    response = small_client.post("/v1/score", files=upload(("grey.png", grey_png), ("red.jpg", red_jpeg)))
    message = assert_error(response, 413, "too_large")["message"]
    assert "photo 2" in message and "red.jpg" in message
    response = small_client.post("/v1/score", content=red_jpeg, headers={"Content-Type": "image/jpeg"})
    assert str(len(red_jpeg)) in assert_error(response, 413, "too_large")["message"]


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_unsupported_media_type(client, content_type):
    response = client.post("/v1/score", content=b'{"files": []}', headers={"Content-Type": content_type})
    assert content_type in assert_error(response, 415, "unsupported_media_type")["message"]


def test_no_photos(client):
    assert_error(client.post("/v1/score"), 422, "no_photos")
    only_a_field = b'--b\r\nContent-Disposition: form-data; name="review_threshold"\r\n\r\n0.5\r\n--b--\r\n'
    response = client.post("/v1/score", content=only_a_field, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(response, 422, "no_photos")
    assert_error(client.post("/v1/score", content=b"", headers={"Content-Type": "image/jpeg"}), 422, "no_photos")


def test_broken_multipart(client, red_jpeg):
    boundary = "xyz"
    start = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'.encode()
    cut_short = start + red_jpeg  # no closing boundary
    response = client.post("/v1/score", content=cut_short, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(response, 400, "bad_request")
    response = client.post("/v1/score", content=start, headers={"Content-Type": "multipart/form-data"})
    assert "boundary" in assert_error(response, 400, "bad_request")["message"]


def test_unknown_path_and_method(client):
    assert_error(client.get("/v2/score"), 404, "not_found")
    assert_error(client.get("/v1/score"), 405, "method_not_allowed")


def test_internal_error_is_json_without_details(tiny_model_path, grey_png):
    class BrokenEngine(Engine):
        def run(self, batch):
            raise RuntimeError("onnxruntime exploded at /secret/path")

        def warm_up(self) -> None:
            pass

    app = create_app(settings(tiny_model_path), engine=BrokenEngine(tiny_model_path, threads=1))
    with TestClient(app, raise_server_exceptions=False) as broken:
        response = broken.post("/v1/score", files=upload(("g.png", grey_png)))
        error = assert_error(response, 500, "internal_error")
        assert "secret" not in response.text and "Traceback" not in response.text
        assert error["message"]


# --- API keys -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_client(tiny_model_path):
    with TestClient(create_app(settings(tiny_model_path, api_keys="first-key, second-key"))) as test_client:
        wait_ready(test_client)
        yield test_client


def test_api_keys_off_by_default(client, grey_png):
    assert Settings().api_key_list == ()
    assert client.post("/v1/score", files=upload(("g.png", grey_png))).status_code == 200
    assert client.get("/v1/model").status_code == 200


def test_api_keys_on(keyed_client, grey_png):
    photos = upload(("g.png", grey_png))
    missing = keyed_client.post("/v1/score", files=photos)
    assert "X-API-Key" in assert_error(missing, 401, "unauthorized")["message"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert_error(keyed_client.post("/v1/score", files=photos, headers={"X-API-Key": "first-ke"}), 401, "unauthorized")
    assert_error(keyed_client.post("/v1/score", files=photos, headers={"X-API-Key": "first-key2"}), 401, "unauthorized")
    assert_error(keyed_client.post("/v1/score", files=photos, headers={"Authorization": "Basic first-key"}), 401, "unauthorized")
    assert_error(keyed_client.get("/v1/model"), 401, "unauthorized")
    for headers in ({"X-API-Key": "first-key"}, {"X-API-Key": "second-key"}, {"Authorization": "Bearer second-key"}):
        assert keyed_client.post("/v1/score", files=photos, headers=headers).status_code == 200, headers
        assert keyed_client.get("/v1/model", headers=headers).status_code == 200
    # Only the probes (and the page shell, tests/test_hardening_auth.py) stay open; metrics need a key.
    for path in ("/healthz", "/readyz"):
        assert keyed_client.get(path).status_code == 200
    assert_error(keyed_client.get("/metrics"), 401, "unauthorized")
    assert keyed_client.get("/metrics", headers={"X-API-Key": "first-key"}).status_code == 200


def test_api_keys_are_checked_before_the_body_is_read(keyed_client):
    response = keyed_client.post("/v1/score", content=b"x" * 10, headers={"Content-Type": "application/json"})
    assert_error(response, 401, "unauthorized")


def test_api_keys_are_in_the_openapi_docs(keyed_client, client):
    security = keyed_client.get("/openapi.json", headers={"X-API-Key": "first-key"}).json()["components"]["securitySchemes"]
    assert security["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": security["ApiKey"]["description"]}
    assert security["Bearer"]["scheme"] == "bearer"
    # Without FLEXGUARD_API_KEYS the scoring routes need no key; the review routes always need their own.
    paths = client.get("/openapi.json").json()["paths"]
    assert "security" not in paths["/v1/score"]["post"] and "security" not in paths["/v1/model"]["get"]
    assert paths["/v1/submissions"]["post"]["security"]


# --- model, metrics, docs -------------------------------------------------------------------------


def test_model_endpoint(client, tiny_model_info):
    body = client.get("/v1/model").json()
    assert body["name"] == tiny_model_info.name and body["version"] == tiny_model_info.version
    assert body["weights_sha256"] == compute_weights_sha256(of_app(client.app).engine.path)
    assert body["categories"] == [c.to_dict() for c in tiny_model_info.categories]
    assert body["thresholds"] == {"review": tiny_model_info.thresholds.review, "block": tiny_model_info.thresholds.block}
    assert body["validation_metrics"] == tiny_model_info.validation_metrics
    assert body["data_manifest_sha256"] == tiny_model_info.data_manifest_sha256
    assert body["input"] == {**tiny_model_info.preprocess.to_dict(), "mean": [127.0] * 3, "std": [128.0] * 3}
    assert body["limits"] == {
        "max_files": MAX_FILES, "max_bytes": Settings().max_bytes, "max_pixels": Settings().max_pixels,
        "formats": list(SUPPORTED_FORMATS),
        "video": {"max_videos": Settings().max_videos, "max_bytes": Settings().max_video_bytes,
                  "max_seconds": Settings().max_video_seconds, "max_frame_pixels": Settings().max_video_frame_pixels,
                  "frames": Settings().video_frames, "every_s": Settings().video_every_s,
                  "formats": ["MP4", "MOV", "3GP", "WEBM"]},
    }


def test_metrics_move(client, red_jpeg, grey_png):
    before = metric_values(client)
    client.post("/v1/score", files=upload(("r.jpg", red_jpeg), ("g.png", grey_png), ("bad", b"nope")))
    client.post("/v1/score", content=b"{}", headers={"Content-Type": "application/json"})
    after = metric_values(client)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("flexguard_http_requests_total", route="/v1/score", method="POST", status="200") == 1
    assert moved("flexguard_http_requests_total", route="/v1/score", method="POST", status="415") == 1
    assert moved("flexguard_http_request_duration_seconds_count", route="/v1/score") == 2
    assert moved("flexguard_images_scored_total") == 2
    assert moved("flexguard_decisions_total", decision="block") == 1
    assert moved("flexguard_decisions_total", decision="allow") == 1
    assert moved("flexguard_decisions_total", decision="review") == 0
    assert moved("flexguard_inputs_rejected_total", reason="unsupported_format") == 1
    assert moved("flexguard_inputs_rejected_total", reason="unsupported_media_type") == 1
    assert moved("flexguard_batch_size_sum") == 2  # both good photos went through the model
    assert 1 <= moved("flexguard_batch_size_count") <= 2
    assert moved("flexguard_inference_duration_seconds_count") == moved("flexguard_batch_size_count")
    weights = compute_weights_sha256(of_app(client.app).engine.path)
    model_labels = (("name", "flexguard-tiny-test"), ("version", "0.0.1-test"), ("weights_sha256", weights))
    assert after[("flexguard_model_info", model_labels)] == 1
    # The metrics scrape itself is counted too (before this second scrape read the numbers).
    assert moved("flexguard_http_requests_total", route="/metrics", method="GET", status="200") == 1


def test_unknown_paths_share_one_metrics_label(client):
    for i in range(3):
        client.get(f"/probe-{i}")
    samples = metric_values(client)
    routes = {dict(labels).get("route") for name, labels in samples if name == "flexguard_http_requests_total"}
    assert "unmatched" in routes and not any(r.startswith("/probe") for r in routes)


def test_openapi_documents_every_field_and_error_code(client):
    schema = client.get("/openapi.json").json()
    description = schema["info"]["description"]
    for code in CODES:
        assert f"`{code}`" in description
    for name, component in schema["components"]["schemas"].items():
        for field, spec in component.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
    post = schema["paths"]["/v1/score"]["post"]
    assert set(post["responses"]) == {"200", "400", "408", "413", "415", "422", "429", "503"}
    assert set(post["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
    assert {p["name"] for p in post["parameters"]} == {"review_threshold", "block_threshold"}
    assert client.get("/docs").status_code == 200


def test_cors(tiny_model_path):
    origin = "https://upload.example"
    with TestClient(create_app(settings(tiny_model_path, cors_origins=f"{origin},https://other.example"))) as cors:
        preflight = cors.options(
            "/v1/score", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "X-API-Key"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert cors.get("/healthz", headers={"Origin": "https://evil.example"}).headers.get("access-control-allow-origin") is None


# --- privacy ----------------------------------------------------------------------------------------


def test_photos_are_never_written_to_disk_or_logged(client, caplog):
    """A photo far over the framework's 1 MB spooling threshold: nothing opens a file for writing."""
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    photo = buffer.getvalue()
    assert len(photo) > 4_000_000
    writes: list[tuple] = []
    recording = threading.Event()

    def audit(event: str, args: tuple) -> None:
        if recording.is_set() and event == "open":
            path, mode, flags = args
            if (mode and any(m in mode for m in "wax+")) or (flags and flags & (0o1 | 0o2 | 0o100)):  # O_WRONLY|O_RDWR|O_CREAT
                writes.append(args)

    sys.addaudithook(audit)  # audit hooks cannot be removed; this one is inert once the event is cleared
    caplog.set_level("DEBUG")
    recording.set()
    try:
        response = client.post("/v1/score", files=[("files", ("holiday-secret.png", photo, "image/png"))])
    finally:
        recording.clear()
    assert response.status_code == 200, response.text
    assert writes == []
    assert "holiday-secret" not in caplog.text
