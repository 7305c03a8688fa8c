"""Video posts: sampling, rotation, limits, hostile files, and videos through /v1/score.

Videos are made here with PyAV (``tests/videos.py``). With the tiny model (conftest), red frames score
high on ``luxury_car`` and grey ones low, so a test knows which seconds must be flagged.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from flexguard.inference.engine import Engine, ImageError, ImageScore
from flexguard.inference.video import VideoLimits, sample_times, sniff_video
from videos import (
    GREY,
    RED,
    TEN_HOURS_S,
    audio_only,
    clip,
    corrupt_packets,
    declaring_duration,
    many_streams,
    rotated_clockwise_90,
    sixteen_k_frame,
    zero_frames,
)

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


HOSTILE = {
    "truncated": (lambda base: base[: len(base) // 2], "decode_failed"),
    "header_only": (lambda base: base[:200], "decode_failed"),
    "declares_ten_hours": (lambda base: declaring_duration(base, TEN_HOURS_S), "too_long"),
    "frame_of_16k": (lambda base: sixteen_k_frame(), "too_many_pixels"),
    "zero_frames": (lambda base: zero_frames(), "unsupported_format"),
    "audio_only": (lambda base: audio_only(), "unsupported_format"),
    "two_thousand_streams": (lambda base: many_streams(base), "decode_failed"),
    "corrupt_packets": (lambda base: corrupt_packets(base), "ok"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_video_gets_its_code(engine, flagged_mp4, name):
    make, expected = HOSTILE[name]
    result = _score(engine, make(flagged_mp4))
    if expected == "ok":
        assert isinstance(result, ImageScore) and result.video.frames_sampled > 0
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


def test_every_hostile_video_in_one_request_gets_its_code_and_the_service_serves_on(client, flagged_mp4):
    names = list(HOSTILE)
    files = [("files", (f"{name}.mp4", HOSTILE[name][0](flagged_mp4), "video/mp4")) for name in names]
    # Two videos per request (the default limit): send them in pairs.
    for first in range(0, len(files), 2):
        response = client.post("/v1/score", files=files[first:first + 2])
        assert response.status_code == 200
        for name, result in zip(names[first:first + 2], response.json()["results"]):
            expected = HOSTILE[name][1]
            assert (result["ok"] if expected == "ok" else result["error"]["code"] == expected), (name, result)
    assert client.post("/v1/score", content=flagged_mp4, headers={"Content-Type": "video/mp4"}).status_code == 200


def test_the_model_endpoint_lists_the_video_limits(client):
    video = client.get("/v1/model").json()["limits"]["video"]
    assert video["formats"] == ["MP4", "MOV", "3GP", "WEBM"] and video["max_seconds"] == 180.0
    assert json.dumps(video)
