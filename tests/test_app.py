"""The REST app, end to end through FastAPI's TestClient, on the tiny model from conftest.py.

Each client is used as a context manager so the app's lifespan runs and loads the engine.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from flexguard.models.taxonomy import CATEGORIES
from flexguard.service.app import create_app
from flexguard.service.settings import Settings

MAX_FILES = 3
RED = (255, 0, 0)
GREY = (127, 127, 127)


@pytest.fixture(scope="module")
def client(tiny_model_path):
    app = create_app(Settings(model_path=tiny_model_path, threads=1, max_files=MAX_FILES))
    with TestClient(app) as test_client:
        yield test_client


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
    assert set(result) == {"ok", "risk", "decision", "categories", "evidence", "image"}
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


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_engine_is_loaded_by_the_lifespan(client, tiny_model_path, tiny_model_info):
    engine = client.app.state.engine
    assert engine.path == tiny_model_path
    assert engine.info == tiny_model_info


def test_score_one_photo(client, red_jpeg, tiny_model_info):
    response = client.post("/v1/score", files=upload(("red.jpg", red_jpeg)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": tiny_model_info.name, "version": tiny_model_info.version}
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
    assert results[0] == results[2]
    assert results[0]["evidence"] == []


def test_bad_photo_among_good_ones(client, red_jpeg, grey_png):
    photos = upload(("red.jpg", red_jpeg), ("notes.txt", b"not a photo at all"), ("cut.jpg", red_jpeg[: len(red_jpeg) // 2]))
    response = client.post("/v1/score", files=photos)
    assert response.status_code == 200, response.text
    good, text, truncated = response.json()["results"]
    check_result(good)
    assert text["ok"] is False and set(text) == {"ok", "error"}
    assert text["error"]["code"] == "unsupported_format"
    assert text["error"]["message"]
    assert truncated == {"ok": False, "error": {"code": "decode_failed", "message": truncated["error"]["message"]}}


def test_empty_file(client, grey_png):
    response = client.post("/v1/score", files=upload(("empty.jpg", b""), ("grey.png", grey_png)))
    assert response.status_code == 200, response.text
    empty, grey = response.json()["results"]
    assert empty["ok"] is False and empty["error"]["code"] == "unsupported_format"
    check_result(grey)


def test_too_many_files(client, grey_png):
    response = client.post("/v1/score", files=upload(*[(f"{i}.png", grey_png) for i in range(MAX_FILES + 1)]))
    assert response.status_code == 413
    assert str(MAX_FILES) in response.json()["detail"]


def test_as_many_files_as_allowed(client, grey_png):
    response = client.post("/v1/score", files=upload(*[(f"{i}.png", grey_png) for i in range(MAX_FILES)]))
    assert response.status_code == 200
    assert len(response.json()["results"]) == MAX_FILES


def test_no_files_is_a_validation_error(client):
    assert client.post("/v1/score").status_code == 422


def test_too_big_file(tiny_model_path, grey_png, red_jpeg):
    limit = len(grey_png)
    app = create_app(Settings(model_path=tiny_model_path, threads=1, max_bytes=limit))
    with TestClient(app) as small_client:
        assert small_client.post("/v1/score", files=upload(("grey.png", grey_png))).status_code == 200
        assert len(red_jpeg) > limit
        response = small_client.post("/v1/score", files=upload(("grey.png", grey_png), ("red.jpg", red_jpeg)))
        assert response.status_code == 413
        assert "red.jpg" in response.json()["detail"]


def test_too_many_pixels(tiny_model_path, grey_png, encoder):
    app = create_app(Settings(model_path=tiny_model_path, threads=1, max_pixels=120 * 90))
    big = encoder(Image.new("RGB", (121, 90), GREY), "PNG")
    with TestClient(app) as small_client:
        ok, too_big = small_client.post("/v1/score", files=upload(("ok.png", grey_png), ("big.png", big))).json()["results"]
    check_result(ok)
    assert too_big["ok"] is False and too_big["error"]["code"] == "too_many_pixels"


def test_missing_model_fails_at_startup(tmp_path):
    from flexguard.service.engine import ModelLoadError

    app = create_app(Settings(model_path=tmp_path / "missing.onnx"))
    with pytest.raises(ModelLoadError):
        with TestClient(app):
            pass
