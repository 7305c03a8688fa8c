"""Reading a scoring request's body into memory, within the limits, without touching the disk.

Why not the web framework's form parsing: Starlette's ``UploadFile`` spools each file to a
``SpooledTemporaryFile`` that moves to disk past 1 MB, so a phone photo would be written to /tmp, and
it has no per-file byte limit. Here the body is streamed through python-multipart's push parser
into in-memory buffers instead, so photos are never written anywhere, and every limit holds while the
bytes arrive: a declared Content-Length over what a valid request could need is refused before
reading, a photo over ``max_bytes`` or one photo too many is refused as soon as it shows, and the
whole body is never read past that bound. Once a multipart body is refused, at most ``DRAIN_BYTES`` more
are read (and dropped) so that a client still sending sees the answer; a 1 GB upload is never read to
its end. The whole body must arrive within ``body_timeout_s`` (408 ``request_timeout`` otherwise), so a
stalled or slowloris-style upload cannot hold its request slot for ever.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import AsyncIterable, Mapping

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from flexguard.inference.engine import ImageError
from flexguard.inference.video import VIDEO_SNIFF_BYTES, sniff_video
from flexguard.models.taxonomy import CATEGORY_IDS
from flexguard.models.wire import PHOTO_FIELD, THRESHOLD_FIELDS, category_field

from .errors import ApiError, ErrorCode

MULTIPART = b"multipart/form-data"
IMAGE_TYPE_PREFIX = b"image/"
VIDEO_TYPE_PREFIX = b"video/"
# Room for one part's boundary line and headers (python-multipart caps them at 8 headers of ~4 KB).
PART_FRAMING_BYTES = 64 * 1024
# Room for any preamble or epilogue around the parts.
FORM_EXTRA_BYTES = 64 * 1024
MAX_FIELD_BYTES = 64
# The text fields a scoring request may carry, and the most bytes of each (a threshold is one number).
SCORE_FIELDS: Mapping[str, int] = MappingProxyType(
    {name: MAX_FIELD_BYTES for name in (*THRESHOLD_FIELDS, *(category_field(field, category)
                                                              for field in THRESHOLD_FIELDS for category in CATEGORY_IDS))}
)
# After a multipart body is refused, read and drop at most this much more of it before answering.
DRAIN_BYTES = 4 * 1024 * 1024
_HEADER_ENCODING = "latin-1"  # HTTP and multipart headers are bytes; latin-1 maps each byte to a character


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_bytes: int
    body_timeout_s: float | None = None  # None: no deadline (the caller's own)
    fields: Mapping[str, int] = field(default_factory=lambda: SCORE_FIELDS)  # the text fields allowed besides the photos, and their byte limits
    max_videos: int = 0  # of the files, how many may be videos (recognised by their first bytes); 0: none
    max_video_bytes: int = 0

    @property
    def max_body(self) -> int:
        """The most bytes a valid multipart request can need: every photo, video and field at the limit, plus framing."""
        parts = self.max_files * (self.max_bytes + PART_FRAMING_BYTES)
        videos = self.max_videos * self.max_video_bytes
        fields = sum(limit + PART_FRAMING_BYTES for limit in self.fields.values())
        return parts + videos + fields + FORM_EXTRA_BYTES


# A file of the request: its bytes, or why it was refused while the others are still scored (a video
# over its byte limit).
Item = bytearray | ImageError


@dataclass
class Upload:
    photos: list[Item] = field(default_factory=list)  # photos and videos, in the order sent
    fields: dict[str, str] = field(default_factory=dict)  # form fields other than photos, as sent


async def read_upload(
    content_type: str | None, content_length: str | None, body: AsyncIterable[bytes], limits: UploadLimits
) -> Upload:
    """The photos (and form fields) of a multipart/form-data or image/* request body."""
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            return await _read_upload(content_type, content_length, body, limits)
    except TimeoutError:
        raise ApiError(
            ErrorCode.REQUEST_TIMEOUT, f"the request body did not arrive within {limits.body_timeout_s:g} s"
        ) from None


async def read_request(request: Request, limits: UploadLimits) -> Upload:
    """``read_upload`` on a request; a client that hangs up mid-upload is a bad request, not a fault."""
    try:
        return await read_upload(request.headers.get("content-type"), request.headers.get("content-length"),
                                 request.stream(), limits)
    except ClientDisconnect:
        raise ApiError(ErrorCode.BAD_REQUEST, "the client closed the connection before sending the whole body") from None


async def _read_upload(
    content_type: str | None, content_length: str | None, body: AsyncIterable[bytes], limits: UploadLimits
) -> Upload:
    media_type, options = parse_options_header(content_type)
    if not media_type:  # a bare POST: say what to send rather than that its (absent) type is wrong
        raise ApiError(
            ErrorCode.NO_PHOTOS,
            f"the request carries no photo: send multipart/form-data with the photos as '{PHOTO_FIELD}', "
            "or one photo as an image/* body",
        )
    if media_type == MULTIPART:
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(ErrorCode.BAD_REQUEST, "the multipart/form-data content type has no boundary")
        _check_declared_length(content_length, limits.max_body, "the request body")
        upload = await _read_multipart(boundary, body, limits)
    elif media_type.startswith(IMAGE_TYPE_PREFIX) or (media_type.startswith(VIDEO_TYPE_PREFIX) and limits.max_videos):
        what, limit = (("the photo", limits.max_bytes) if media_type.startswith(IMAGE_TYPE_PREFIX)
                       else ("the video", limits.max_video_bytes))
        _check_declared_length(content_length, limit, what)
        photo = await _read_raw(body, limit, what)
        if not photo:
            raise ApiError(ErrorCode.NO_PHOTOS, "the request body is empty")
        upload = Upload(photos=[photo])
    else:
        raw_types = "an image/* or video/* body" if limits.max_videos else "an image/* body"
        raise ApiError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"send multipart/form-data with the photos as '{PHOTO_FIELD}', or one photo as {raw_types} "
            f"(got {media_type.decode(_HEADER_ENCODING)})",
        )
    return upload


def _check_declared_length(content_length: str | None, limit: int, what: str) -> None:
    if content_length is None:  # chunked: counted while reading instead
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise ApiError(ErrorCode.BAD_REQUEST, f"Content-Length {content_length!r} is not a number") from None
    if declared > limit:
        raise ApiError(ErrorCode.TOO_LARGE, f"{what} is {declared} bytes, over the limit of {limit} bytes")


async def _read_raw(body: AsyncIterable[bytes], max_bytes: int, what: str) -> bytearray:
    photo = bytearray()
    async for chunk in body:
        if len(photo) + len(chunk) > max_bytes:
            raise ApiError(ErrorCode.TOO_LARGE, f"{what} is over the limit of {max_bytes} bytes")
        photo += chunk
    return photo


async def _read_multipart(boundary: bytes, body: AsyncIterable[bytes], limits: UploadLimits) -> Upload:
    try:
        form = _Form(boundary, limits)
    except FormParserError as error:
        raise ApiError(ErrorCode.BAD_REQUEST, f"the multipart body cannot be parsed: {error}") from None
    received = 0
    refusal: ApiError | None = None
    drain_until = 0
    async for chunk in body:
        received += len(chunk)
        if received > limits.max_body:
            raise ApiError(ErrorCode.TOO_LARGE, f"the request body is over the limit of {limits.max_body} bytes")
        if refusal is not None and received > drain_until:
            break
        if refusal is None:
            try:
                form.feed(chunk)
            except ApiError as error:
                # Keep reading (and dropping) up to DRAIN_BYTES more: a client still sending its body
                # would otherwise see a broken connection instead of this answer.
                refusal = error
                drain_until = received + DRAIN_BYTES
    if refusal is not None:
        raise refusal
    if not form.finished:
        raise ApiError(ErrorCode.BAD_REQUEST, "the multipart body ends before its closing boundary")
    if not form.upload.photos:
        raise ApiError(ErrorCode.NO_PHOTOS, f"the request carries no photo: send them as '{PHOTO_FIELD}'")
    return form.upload


class _Form:
    """python-multipart callbacks that collect each part into memory, enforcing the limits per part."""

    def __init__(self, boundary: bytes, limits: UploadLimits):
        self.upload = Upload()
        self.finished = False
        self._limits = limits
        self._headers: dict[bytes, bytes] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._part = bytearray()
        self._part_limit = 0
        self._part_name = ""
        self._part_label = ""
        # For a file part: None until its first bytes say whether it is a video (text fields: False).
        self._is_video: bool | None = False
        self._refused = False  # a video over its limit: its remaining bytes are dropped
        self._videos = 0
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as error:
            raise ApiError(ErrorCode.BAD_REQUEST, f"the multipart body cannot be parsed: {error}") from None

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode(_HEADER_ENCODING)
        self._part = bytearray()
        self._part_name = name
        self._is_video = False  # only a file part is looked at (below), never a text field
        if name == PHOTO_FIELD:
            photos = self.upload.photos
            if len(photos) == self._limits.max_files:
                raise ApiError(ErrorCode.TOO_MANY_FILES, f"at most {self._limits.max_files} photos per request")
            filename = options.get(b"filename")
            # Browsers send UTF-8 file names; the name only ever goes back to the client in a message.
            shown = f" ({filename.decode('utf-8', 'replace')!r})" if filename else ""
            self._part_label = f"photo {len(photos) + 1}{shown}"
            self._part_limit = self._limits.max_bytes
            self._is_video = None if self._limits.max_videos else False  # nothing to look for when videos are not taken
            self._refused = False
            photos.append(self._part)
        elif name in self._limits.fields:
            if name in self.upload.fields:
                raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{name} is given more than once")
            self._part_label = name
            self._part_limit = self._limits.fields[name]
        else:
            expected = ", ".join(repr(f) for f in (PHOTO_FIELD, *self._limits.fields))
            raise ApiError(ErrorCode.INVALID_PARAMETERS, f"unknown form field {name!r}: the fields are {expected}")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._refused:
            return
        if self._is_video is None and len(self._part) + (end - start) >= VIDEO_SNIFF_BYTES:
            head = bytes(self._part) + bytes(data[start:start + VIDEO_SNIFF_BYTES])
            self._is_video = sniff_video(head[:VIDEO_SNIFF_BYTES]) is not None
            if self._is_video:
                self._take_video()
        if len(self._part) + (end - start) > self._part_limit:
            if self._is_video:
                # One video too big does not cost the request its other files: it gets its own error.
                self._refused = True
                self.upload.photos[-1] = ImageError(ErrorCode.TOO_LARGE, f"{self._part_label} is over the limit of "
                                                                         f"{self._part_limit} bytes for a video")
                self._part = bytearray()
                return
            if self._part_name == PHOTO_FIELD:
                raise ApiError(ErrorCode.TOO_LARGE, f"{self._part_label} is over the limit of {self._part_limit} bytes")
            raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{self._part_label} is longer than {self._part_limit} bytes")
        self._part.extend(data[start:end])

    def _take_video(self) -> None:
        self._videos += 1
        if self._videos > self._limits.max_videos:
            raise ApiError(ErrorCode.TOO_MANY_FILES, f"at most {self._limits.max_videos} videos per request")
        self._part_limit = self._limits.max_video_bytes

    def _on_part_end(self) -> None:
        if self._part_name in self._limits.fields:
            self.upload.fields[self._part_name] = self._part.decode("utf-8", "replace")

    def _on_end(self) -> None:
        self.finished = True
