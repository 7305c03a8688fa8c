"""Video posts: sampling, rotation, limits, hostile files, and videos through /v1/score.

Videos are made here with PyAV (``tests/videos.py``). With the tiny model (conftest), red frames score
high on ``luxury_car`` and grey ones low, so a test knows which seconds must be flagged.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexguard.inference.engine import Engine, ImageError, ImageScore
from flexguard.inference.video import VideoLimits, sample_times, sniff_video
from hardening_corpus import VIDEO_CASES
from videos import GREY, RED, clip, rotated_clockwise_90

# Three grey seconds, two red, three grey: frames 30-49 of 80 (10 a second) show the "luxury".
FLAGGED_SECONDS = [GREY] * 3 + [RED] * 2 + [GREY] * 3
RED_FROM_S, RED_UNTIL_S = 3.0, 5.0
FPS = 10
CONTAINERS = [
    ("mp4", "libx264", "MP4", "h264"),
    ("mov", "libx264", "MOV", "h264"),
    ("mp4", "libx265", "MP4", "hevc"),
    ("webm", "libvpx", "WEBM", "vp8"),
    ("webm", "libvpx-vp9", "WEBM", "vp9"),
    ("webm", "libsvtav1", "WEBM", "av1"),
    ("3gp", "h263", "3GP", "h263"),
]
H263_SIZE = (176, 144)  # H.263 takes only its standard picture sizes


@pytest.fixture(scope="module")
def engine(tiny_model_path) -> Engine:
    return Engine(tiny_model_path, threads=1)


@pytest.fixture(scope="module")
def flagged_mp4() -> bytes:
    return clip(FLAGGED_SECONDS, fps=FPS)


def _score(engine: Engine, data: bytes) -> ImageScore | ImageError:
    [result] = engine.score([data])
    return result


@pytest.mark.parametrize(("container", "codec", "fmt", "codec_name"), CONTAINERS)
def test_each_container_and_codec_is_scored_and_the_worst_frame_is_in_the_red_seconds(
        engine, container, codec, fmt, codec_name):
    size = H263_SIZE if codec == "h263" else (160, 120)
    data = clip(FLAGGED_SECONDS, fps=FPS, container=container, codec=codec, size=size)
    assert sniff_video(data[:64]) == fmt
    result = _score(engine, data)
    assert isinstance(result, ImageScore), result
    assert result.format == fmt and result.video.codec == codec_name
    assert (result.width, result.height) == size
    video = result.video
    assert RED_FROM_S <= video.worst.time_s < RED_UNTIL_S
    assert video.worst.number == round(video.worst.time_s * FPS)
    assert result.decision == "review" and result.risk == video.worst.risk
    assert result.scores["luxury_car"] == max(f.scores["luxury_car"] for f in video.flagged)
    assert [f.time_s for f in video.flagged] == [3.0, 4.0]
    assert video.duration_s == len(FLAGGED_SECONDS) and video.frames_in_video == len(FLAGGED_SECONDS) * FPS
    assert result.evidence and result.evidence[0].category == "luxury_car"


def test_only_the_frames_needed_are_decoded(engine, flagged_mp4):
    """One keyframe a second (what phones write): one decoded frame per second sampled, not 80."""
    video = _score(engine, flagged_mp4).video
    assert video.frames_sampled == len(FLAGGED_SECONDS)
    assert video.frames_decoded <= video.frames_sampled + 2


def test_a_shot_between_two_sampled_times_is_caught_as_a_scene_change(tiny_model_path):
    """One frame scored every 4 s (0 and 4 s) of 8 s: grey, red from 1.5 s to 3 s, grey again. Keyframes are
    10 s apart but for the cut x264 marks at 1.5 s: a keyframe near no sampled time, whose picture differs
    from the sample before it, so it is scored too, as a scene change."""
    engine = Engine(tiny_model_path, threads=1, video_limits=VideoLimits(every_s=4.0))

    def frame(i: int) -> np.ndarray:
        return np.full((120, 160, 3), RED if 15 <= i < 30 else GREY, dtype=np.uint8)

    result = _score(engine, clip(frame, seconds=8, fps=FPS, gop=100))
    video = result.video
    assert result.decision == "review" and video.frames_sampled == 3
    assert video.worst.scene_change and video.worst.time_s == 1.5
    assert [f.time_s for f in video.flagged] == [1.5]


def test_the_rotation_a_phone_writes_is_honoured(engine):
    """Stored landscape, red on the left half; shown turned clockwise, the red is the top half."""

    def frame(i: int) -> np.ndarray:
        picture = np.full((120, 160, 3), GREY, dtype=np.uint8)
        picture[:, :80] = RED
        return picture

    result = _score(engine, rotated_clockwise_90(clip(frame, seconds=2, fps=FPS)))
    assert (result.width, result.height) == (120, 160)
    assert result.video.worst.picture.size[0] < result.video.worst.picture.size[1]
    [box] = [e.box for e in result.evidence if e.category == "luxury_car"]
    left, top, right, bottom = box
    assert top == 0.0 and bottom <= 0.6 and right - left > 0.9, box


def test_sampling_times_keep_to_the_rate_and_the_cap():
    assert sample_times(8.0, 1.0, 64) == [float(i) for i in range(8)]
    assert sample_times(0.4, 1.0, 64) == [0.0]
    spread = sample_times(180.0, 1.0, 64)
    assert len(spread) == 64 and spread[0] == 0.0 and spread[-1] > 170


def test_a_long_video_is_sampled_up_to_the_cap(tiny_model_path):
    engine = Engine(tiny_model_path, threads=1, video_limits=VideoLimits(max_frames=5))
    result = _score(engine, clip([GREY] * 20, fps=2))
    assert result.video.frames_sampled == 5
    assert [f.time_s for f in [result.video.worst]] == [0.0]


@pytest.mark.parametrize(("limits", "make", "code"), [
    (VideoLimits(max_duration_s=5), lambda: clip(FLAGGED_SECONDS, fps=FPS), "too_long"),
    (VideoLimits(max_bytes=1000), lambda: clip(FLAGGED_SECONDS, fps=FPS), "too_large"),
    (VideoLimits(max_frame_pixels=160 * 120 - 1), lambda: clip(FLAGGED_SECONDS, fps=FPS), "too_many_pixels"),
])
def test_each_limit_has_its_code(tiny_model_path, limits, make, code):
    result = _score(Engine(tiny_model_path, threads=1, video_limits=limits), make())
    assert isinstance(result, ImageError) and result.code == code, result


@pytest.mark.parametrize("name", list(VIDEO_CASES))
def test_each_hostile_video_gets_its_code(engine, name):
    build, (kind, expected), _ = VIDEO_CASES[name]
    result = _score(engine, build())
    if kind == "ok":
        assert isinstance(result, ImageScore) and result.format == expected and result.video.frames_sampled > 0
    else:
        assert isinstance(result, ImageError) and result.code == expected, (result.code, result.message)
        assert result.message


# --- Through the service. ---


def test_a_raw_video_body_is_scored_with_its_video_object(client, flagged_mp4):
    response = client.post("/v1/score", content=flagged_mp4, headers={"Content-Type": "video/mp4"})
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["ok"] and result["image"]["format"] == "MP4" and result["decision"] == "review"
    video = result["video"]
    assert RED_FROM_S <= video["worst_frame"]["time_s"] < RED_UNTIL_S
    assert [f["time_s"] for f in video["flagged_frames"]] == [3.0, 4.0]
    assert video["frames_sampled"] == len(FLAGGED_SECONDS) and video["codec"] == "h264"
    # The strip holds the two flagged frames side by side, where their boxes say.
    header, encoded = video["strip_jpeg"].split(",", 1)
    assert header == "data:image/jpeg;base64"
    strip = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert strip.height == 96
    for frame in video["flagged_frames"]:
        left, _, right, _ = frame["strip_box"]
        middle = strip.crop((int(left * strip.width) + 5, 40, int(right * strip.width) - 5, 56))
        red, green, blue = np.asarray(middle, dtype=float).reshape(-1, 3).mean(axis=0)
        assert red > 150 and green < 90, (frame, red, green)


def test_photos_and_videos_in_one_request_keep_their_order(client, flagged_mp4, encoder):
    grey_photo = encoder(Image.new("RGB", (64, 64), GREY), "JPEG")
    response = client.post("/v1/score", files=[
        ("files", ("a.jpg", grey_photo, "image/jpeg")),
        # Recognised by its content: the name and the declared type say nothing.
        ("files", ("clip.bin", flagged_mp4, "application/octet-stream")),
    ])
    first, second = response.json()["results"]
    assert first["video"] is None and first["decision"] == "allow"
    assert second["video"]["worst_frame"]["index"] in range(30, 50)


def test_a_video_over_its_byte_limit_is_refused_alone(write_model, flagged_mp4, encoder):
    from fastapi.testclient import TestClient

    from flexguard.service.app import create_app
    from flexguard.service.settings import Settings

    settings = Settings(model_path=write_model(), max_video_bytes=len(flagged_mp4) - 1, max_bytes=len(flagged_mp4) - 1)
    grey_photo = encoder(Image.new("RGB", (64, 64), GREY), "JPEG")
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/score", files=[("files", ("clip.mp4", flagged_mp4, "video/mp4")),
                                                   ("files", ("a.jpg", grey_photo, "image/jpeg"))])
        assert response.status_code == 200
        video, photo = response.json()["results"]
        assert video == {"ok": False, "error": {"code": "too_large", "message": video["error"]["message"]}}
        assert photo["ok"] is True
        raw = client.post("/v1/score", content=flagged_mp4, headers={"Content-Type": "video/mp4"})
        assert raw.status_code == 413 and raw.json()["error"]["code"] == "too_large"


def test_more_videos_than_allowed_is_a_clear_4xx(client, flagged_mp4):
    files = [("files", (f"{i}.mp4", flagged_mp4, "video/mp4")) for i in range(3)]
    response = client.post("/v1/score", files=files)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_files"
    assert "at most 2 videos" in response.json()["error"]["message"]


def test_hostile_videos_two_to_a_request_get_their_codes_and_the_service_serves_on(client, flagged_mp4):
    names = list(VIDEO_CASES)
    # Two videos per request (the default limit): send them in pairs.
    for first in range(0, len(names), 2):
        pair = names[first:first + 2]
        files = [("files", (VIDEO_CASES[n][2], VIDEO_CASES[n][0](), "video/mp4")) for n in pair]
        response = client.post("/v1/score", files=files)
        assert response.status_code == 200
        for name, result in zip(pair, response.json()["results"]):
            kind, expected = VIDEO_CASES[name][1]
            assert (result["ok"] if kind == "ok" else result["error"]["code"] == expected), (name, result)
    assert client.post("/v1/score", content=flagged_mp4, headers={"Content-Type": "video/mp4"}).status_code == 200


def test_the_model_endpoint_lists_the_video_limits(client):
    video = client.get("/v1/model").json()["limits"]["video"]
    assert video["formats"] == ["MP4", "MOV", "3GP", "WEBM"] and video["max_seconds"] == 180.0
    assert json.dumps(video)


# --- In submissions: only a strip of the flagged frames is kept, never the video. ---


def test_a_submitted_video_keeps_only_its_flagged_frames_and_never_goes_to_training(world, client, flagged_mp4,
                                                                                     tmp_path):
    from flexguard.service.review.store import Principal
    from flexguard.service.review.tables import PhotoBlob
    from flexguard.service.review.training_export import export_training
    from review_world import headers

    unit = "dinkes"
    operator = Principal.command_line("test")
    world.store.set_training_consent(operator, unit, True)
    submit = headers(world.submit[unit])
    cleared = client.post("/v1/submissions", headers=submit, data={"account": "@asn"},
                          files=[("files", ("grey.mp4", clip([GREY] * 3, fps=10), "video/mp4"))]).json()
    assert cleared["status"] == "cleared" and cleared["photos"][0]["stored"] is False
    posted = client.post("/v1/submissions", headers=submit, data={"account": "@asn", "caption": "Mobil baru"},
                         files=[("files", ("reel.mp4", flagged_mp4, "video/mp4"))]).json()
    assert posted["status"] == "pending"
    [video] = posted["photos"]
    assert [f["time_s"] for f in video["video"]["flagged_frames"]] == [3.0, 4.0]
    assert all(f["strip_box"] for f in video["video"]["flagged_frames"])
    kept = client.get(video["url"], headers=headers(world.review[unit]))
    assert kept.headers["content-type"] == "image/jpeg"
    strip = Image.open(io.BytesIO(kept.content))
    assert strip.height == 360 and strip.width > 2 * 360  # two 4:3 frames side by side
    with world.store._session() as session:  # what the database holds: the strip only
        blobs = [blob.data for blob in session.query(PhotoBlob).all()]
    assert kept.content in blobs and all(flagged_mp4[:4096] not in blob for blob in blobs)

    label = {"labels": [{"position": 0, "verdict": "correct", "categories": ["luxury_car"]}]}
    assert client.post(f"/v1/submissions/{posted['id']}/approve", headers=headers(world.review[unit]),
                       json=label).status_code == 200
    report = export_training(world.store, operator, tmp_path / "batch")
    assert report.photos == 0  # a video's frames are for its reviewers only


# --- With the shipped model, on a real luxury photo (needs ../shared; skipped cleanly without it). ---

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "flexdata"
LUXURY_CANDIDATES = 40  # luxury-car photos tried until one the shipped model flags is found


@pytest.mark.shared
def test_the_shipped_model_finds_the_seconds_that_show_a_luxury_car(tmp_path):
    if not (SHARED / "manifest.csv").is_file():
        pytest.skip("../shared/flexdata is not here")
    from flexguard.models import shipped_model_path

    engine = Engine(shipped_model_path(), threads=1)
    with open(SHARED / "manifest.csv", newline="", encoding="utf-8") as handle:
        cars = [SHARED / row["path"] for row in csv.DictReader(handle) if row["category"] == "luxury_car"]
    photo = None
    for path in cars[:LUXURY_CANDIDATES]:
        [scored] = engine.score([path])
        if isinstance(scored, ImageScore) and scored.decision == "block":
            photo = Image.open(path).convert("RGB")
            break
    assert photo is not None, "no luxury car in the first photos is blocked by the shipped model"
    width, height = 640, 480
    car = np.asarray(photo.resize((width, height)))
    # A grey street scene for 3 s, the car from 3 s to 5 s, grey again to 8 s.
    video = clip(lambda i: car if 30 <= i < 50 else np.full((height, width, 3), GREY, dtype=np.uint8),
                 seconds=8, fps=FPS, size=(width, height))
    result = _score(engine, video)
    assert result.decision in ("review", "block")
    assert RED_FROM_S <= result.video.worst.time_s < RED_UNTIL_S
    assert all(RED_FROM_S <= f.time_s < RED_UNTIL_S for f in result.video.flagged)


def test_the_scan_report_shows_a_video_by_its_worst_frame(engine, flagged_mp4, tmp_path):
    """The report's picture of a video is the frame its evidence was drawn on (red, from the 3-5 s range)."""
    from flexguard.scan.report import _thumbnail, _video_line
    from flexguard.scan.rows import ModelIdentity, load, score_loaded

    path = tmp_path / "reel.mp4"
    path.write_bytes(flagged_mp4)
    [row] = score_loaded(engine, [load(engine, str(path))])
    assert row["format"] == "MP4" and RED_FROM_S <= row["video_worst_time_s"] < RED_UNTIL_S
    uri, reason = _thumbnail(row)
    assert uri is not None, reason
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    red, green, _ = np.asarray(picture, dtype=float).reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 90
    line = _video_line(row)
    assert "worst frame at 3 s" in line and "Flagged at 3, 4 s" in line
    assert ModelIdentity.from_info(engine.info).weights_sha256 == row["model_weights_sha256"]
