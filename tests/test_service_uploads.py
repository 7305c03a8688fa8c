"""Reading request bodies without HTTP: limits hold while the bytes arrive, and nothing unbounded is read."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterable

import pytest

from flexguard.service.errors import ApiError
from flexguard.service.uploads import FORM_EXTRA_BYTES, PART_FRAMING_BYTES, SCORE_FIELDS, UploadLimits, read_upload

BOUNDARY = "test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = UploadLimits(max_files=3, max_bytes=1000)


class Body:
    """An async body that counts how many of its chunks were read."""

    def __init__(self, chunks: Iterable[bytes]):
        self.chunks = list(chunks)
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def read(content_type, body: Body, content_length=None, limits=LIMITS):
    return asyncio.run(read_upload(content_type, content_length, body, limits))


def refused(code: str, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        read(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 100_000])
def test_multipart_in_any_chunking(chunk_size):
    photos = [b"\xff\xd8" + bytes(range(256)) * 3, b"", b"GIF89a" + b"\r\n--" * 50]
    data = form(*(part("files", p, f"{i}.jpg") for i, p in enumerate(photos)), part("review_threshold", b"0.25"))
    upload = read(MULTIPART, Body(chunked(data, chunk_size)))
    assert [bytes(p) for p in upload.photos] == photos
    assert upload.fields == {"review_threshold": "0.25"}


def test_raw_body():
    upload = read("image/heic", Body([b"abc", b"def"]), content_length="6")
    assert [bytes(p) for p in upload.photos] == [b"abcdef"] and upload.fields == {}


def test_declared_length_over_the_limit_is_refused_before_reading():
    body = Body([b"x" * 10])
    error = refused("too_large", "image/jpeg", body, content_length=str(LIMITS.max_bytes + 1))
    assert body.read == 0 and str(LIMITS.max_bytes + 1) in error.message
    body = Body([b"x" * 10])
    refused("too_large", MULTIPART, body, content_length=str(LIMITS.max_body + 1))
    assert body.read == 0


def test_multipart_limit_allows_every_photo_at_its_limit():
    fields = sum(limit + PART_FRAMING_BYTES for limit in SCORE_FIELDS.values())
    assert LIMITS.max_body == LIMITS.max_files * (LIMITS.max_bytes + PART_FRAMING_BYTES) + fields + FORM_EXTRA_BYTES
    photos = [part("files", b"p" * LIMITS.max_bytes, "a-long-file-name-" * 10 + ".jpg") for _ in range(LIMITS.max_files)]
    data = form(*photos, part("review_threshold", b"0.1"), part("block_threshold", b"0.2"))
    assert len(data) <= LIMITS.max_body
    upload = read(MULTIPART, Body([data]), content_length=str(len(data)))
    assert len(upload.photos) == LIMITS.max_files


def test_raw_body_without_length_stops_at_the_limit():
    body = Body([b"x" * 400] * 100)
    refused("too_large", "image/png", body)
    assert body.read == 3  # 1200 bytes > 1000: no further chunk is read


def test_multipart_without_length_stops_at_the_body_limit():
    endless = Body([b"x" * 100_000] * 1000)
    refused("too_large", MULTIPART, endless)
    assert endless.read * 100_000 <= LIMITS.max_body + 100_000


def test_a_photo_over_the_limit_names_it_and_drains_without_keeping():
    data = form(part("files", b"ok"), part("files", b"y" * (LIMITS.max_bytes + 1), "huge.heic"), part("files", b"z" * 10))
    body = Body(chunked(data, 100))
    error = refused("too_large", MULTIPART, body)
    assert "photo 2" in error.message and "huge.heic" in error.message
    assert body.read == len(body.chunks)  # the client can finish sending and read the answer


def test_one_photo_too_many():
    data = form(*(part("files", b"p") for _ in range(LIMITS.max_files + 1)))
    error = refused("too_many_files", MULTIPART, Body([data]))
    assert str(LIMITS.max_files) in error.message


@pytest.mark.parametrize(
    ("parts", "needle"),
    [
        ((part("files", b"p"), part("image", b"p")), "unknown form field 'image'"),
        ((part("files", b"p"), part("review_threshold", b"0.1"), part("review_threshold", b"0.2")), "more than once"),
        ((part("files", b"p"), part("block_threshold", b"0." + b"1" * 100)), "longer than"),
    ],
)
def test_form_field_problems(parts, needle):
    assert needle in refused("invalid_parameters", MULTIPART, Body([form(*parts)])).message


def test_broken_multipart_bodies():
    whole = form(part("files", b"photo"))
    refused("bad_request", MULTIPART, Body([whole[:-10]]))  # cut before the closing boundary
    refused("bad_request", "multipart/form-data", Body([whole]))  # no boundary parameter
    refused("bad_request", MULTIPART, Body([b"this is not multipart at all"]))
    refused("bad_request", f"multipart/form-data; boundary={'b' * 300}", Body([whole]))  # absurd boundary
    refused("bad_request", "image/jpeg", Body([b"x"]), content_length="ten")


def test_no_photos():
    refused("no_photos", MULTIPART, Body([form(part("review_threshold", b"0.3"))]))
    refused("no_photos", MULTIPART, Body([form()]))
    refused("no_photos", "image/jpeg", Body([]))
    refused("no_photos", None, Body([]))


@pytest.mark.parametrize("content_type", ["application/json", "text/plain; charset=utf-8", "video/mp4", "application/octet-stream"])
def test_other_content_types(content_type):
    body = Body([b"{}"])
    refused("unsupported_media_type", content_type, body)
    assert body.read == 0


def test_fields_beyond_the_thresholds_are_read_within_their_own_limits():
    limits = UploadLimits(max_files=2, max_bytes=100, fields={"caption": 20})
    upload = read(MULTIPART, Body([form(part("files", b"p" * 10), part("caption", "Liburan 🌴".encode()))]), limits=limits)
    assert upload.fields == {"caption": "Liburan 🌴"}
    error = refused("invalid_parameters", MULTIPART, Body([form(part("files", b"p"), part("caption", b"c" * 21))]), limits=limits)
    assert "caption" in error.message
    error = refused("invalid_parameters", MULTIPART, Body([form(part("files", b"p"), part("review_threshold", b"0.1"))]), limits=limits)
    assert "'caption'" in error.message


# A file whose first bytes name an MP4 (an "ftyp" box): a video, whatever its part says.
MP4_HEAD = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 60
VIDEO_LIMITS = UploadLimits(max_files=3, max_bytes=1000, fields={"caption": 200}, max_videos=1, max_video_bytes=1000)


@pytest.mark.parametrize("chunk_size", [1, 7, 100_000])
def test_a_photo_over_its_limit_refuses_the_request_even_when_videos_have_the_same_limit(chunk_size):
    """Only a video over its limit gets its own error; a photo over the (equal) photo limit is still a 413."""
    data = form(part("files", b"\xff\xd8" + b"\x00" * 1200, "big.jpg"))
    refused("too_large", MULTIPART, Body(chunked(data, chunk_size)), limits=VIDEO_LIMITS)
    video = read(MULTIPART, Body(chunked(form(part("files", MP4_HEAD + b"\x00" * 1200, "big.mp4"),
                                              part("files", b"\xff\xd8ok", "a.jpg")), chunk_size)), limits=VIDEO_LIMITS)
    assert video.photos[0].code == "too_large" and bytes(video.photos[1]) == b"\xff\xd8ok"


def test_a_text_field_is_never_taken_for_a_video():
    """A caption whose bytes happen to look like an MP4 keeps its own limit and uses no video place."""
    caption = MP4_HEAD[:150]
    upload = read(MULTIPART, Body([form(part("caption", caption), part("files", MP4_HEAD, "clip.mp4"))]),
                  limits=VIDEO_LIMITS)
    assert upload.fields["caption"] and bytes(upload.photos[0]) == MP4_HEAD
    refused("invalid_parameters", MULTIPART, Body([form(part("caption", MP4_HEAD * 4))]), limits=VIDEO_LIMITS)
