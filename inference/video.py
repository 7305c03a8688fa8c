"""Video posts: a few frames of a short video, decoded cheaply and handed to the engine as photos.

Civil servants post Reels and Stories as often as photos, so a video is screened by the same model:
its frames go through the same preprocessing as a photo (``load_image`` + ``preprocess``) and the
video's risk is its worst frame's. What is video-specific lives here, with no FastAPI and no torch:
recognising a container by its first bytes, the limits checked before the work they protect, and
choosing which frames to decode.

Why not decode every frame: a 30-second 1080p clip has 900 frames, and decoding and scoring each costs
seconds of CPU for what one frame a second says as well. Frames are sampled at ``every_s`` (default
one a second) plus keyframes that start a new scene, up to ``max_frames``. Only the frames needed are
decoded: a first pass reads the packets without decoding them (cheap) to learn every frame's time and
which are keyframes; then each sample seeks to the keyframe at or before its time and decodes forward
to it. Phones write a keyframe about every second, so most samples cost one decoded frame, and an
encoder's extra keyframes (x264 and the apps that re-encode Reels insert one at every cut) are the
scene changes, checked against the previous sample's picture so that a keyframe showing the same
scene is not scored twice.
"""

from __future__ import annotations

import bisect
import io
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import av
import numpy as np
from PIL import Image

from flexguard.models.preprocessing import Placement, PreprocessSpec, load_image, preprocess
from flexguard.models.vocabulary import ErrorCode

from .errors import ImageError

# Enough of a file's start to tell the containers apart (an EBML header names its doc type early).
VIDEO_SNIFF_BYTES = 64
# ISO media (MP4, MOV, 3GP, and HEIF photos) opens with an "ftyp" box; old QuickTime files may open
# with another top-level box instead.
FTYP, FTYP_AT, BRAND_AT, BRAND_LENGTH = b"ftyp", 4, 8, 4
QUICKTIME_FIRST_BOXES = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
QUICKTIME_BRAND = b"qt  "
THREE_GP_BRAND_PREFIXES = (b"3gp", b"3g2")
# Brands of still-image files in the same box structure: those are photos (HEIC/AVIF), not videos.
IMAGE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
WEBM_DOCTYPE, MATROSKA_DOCTYPE = b"webm", b"matroska"
RIFF, AVI_FORM_TYPE, RIFF_FORM_TYPE_AT = b"RIFF", b"AVI ", 8
# What phones and apps produce; recognised-but-other containers (Matroska, AVI) are refused by name.
VIDEO_FORMATS = ("MP4", "MOV", "3GP", "WEBM")
# Codecs those containers carry from phones and apps (3GP from older phones: H.263 and MPEG-4 Part 2).
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263"})

DEFAULT_MAX_VIDEO_BYTES = 100_000_000
DEFAULT_MAX_DURATION_S = 180.0
# 8K UHD (7680 x 4320): the largest frames phones record.
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320
DEFAULT_MAX_FRAMES = 64
DEFAULT_EVERY_S = 1.0
# A phone video has one video stream, an audio stream and perhaps a metadata track or two; a file
# with hundreds is built to make the demuxer work, and refused before any packet is read.
MAX_STREAMS = 16
# Forward decoding from a keyframe to a sample's time costs one decoded frame per frame skipped. Past
# this many decoded frames per allowed sample (a video with keyframes far apart), later samples take
# the nearest keyframe instead: bounded work whatever the encoder did.
DECODE_BUDGET_PER_SAMPLE = 16
# A keyframe counts as a new scene when its picture differs from the previous sample's by this much:
# the mean absolute difference of 32 x 32 greyscale thumbnails, on the 0-255 scale. A cut between two
# shots measures 40-90; the same shot a second later, with the camera moving, 5-20.
SCENE_THUMB_SIDE = 32
SCENE_CHANGE_DIFFERENCE = 30.0
# Frames are kept at this size (longest side, pixels) for the reviewer page and the answer's strip.
KEPT_FRAME_SIDE = 512
QUARTER_TURN, FULL_TURN = 90, 360
# Frame times within this of each other are the same frame (times come from the same timestamps).
_SAME_TIME_S = 1e-6
# A decoded frame is scaled down in FFmpeg (swscale, one pass from YUV) to this many times the model's
# input side before Pillow's resize, as a JPEG is draft-decoded: a 1080p frame is 520 px wide for a 260 px
# input, not converted to RGB at full size and resized from there (4x less resizing, measured).
DRAFT_FACTOR = 2
_MS_PER_S = 1000.0


@dataclass(frozen=True)
class VideoLimits:
    """A deployment's limits on one video, each checked before the work it protects."""

    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    max_frames: int = DEFAULT_MAX_FRAMES
    every_s: float = DEFAULT_EVERY_S

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {self.max_frames}")
        if not self.every_s > 0:
            raise ValueError(f"every_s must be positive, not {self.every_s}")


@dataclass(frozen=True)
class SampledFrame:
    """One frame chosen for scoring, ready for the model."""

    number: int  # the frame's position in the video, counting from 0 in display order
    time_s: float  # from the start of the video
    tensor: np.ndarray
    placement: Placement
    picture: Image.Image  # the frame as displayed, at most KEPT_FRAME_SIDE pixels: for reviewers
    width: int  # the frame as displayed (rotation applied), in pixels
    height: int
    scene_change: bool  # sampled because a new scene starts here, not for the time grid


@dataclass(frozen=True)
class PreparedVideo:
    """A video's sampled frames and what its container said."""

    frames: tuple[SampledFrame, ...]
    width: int  # as displayed (rotation applied)
    height: int
    format: str
    codec: str
    duration_s: float
    frames_in_video: int
    frames_decoded: int
    decode_ms: float = 0.0


def sniff_video(head: bytes) -> str | None:
    """The container a file's first bytes name (``MP4``, ``MOV``, ``3GP``, ``WEBM``, ``MKV``, ``AVI``), or None."""
    box_type = head[FTYP_AT:FTYP_AT + len(FTYP)]
    if box_type == FTYP:
        brand = head[BRAND_AT:BRAND_AT + BRAND_LENGTH]
        if brand in IMAGE_BRANDS:
            return None
        if brand == QUICKTIME_BRAND:
            return "MOV"
        if brand.startswith(THREE_GP_BRAND_PREFIXES):
            return "3GP"
        return "MP4"
    if box_type in QUICKTIME_FIRST_BOXES:
        return "MOV"
    if head.startswith(EBML_MAGIC):
        if WEBM_DOCTYPE in head[:VIDEO_SNIFF_BYTES]:
            return "WEBM"
        return "MKV" if MATROSKA_DOCTYPE in head[:VIDEO_SNIFF_BYTES] else None
    if head.startswith(RIFF) and head[RIFF_FORM_TYPE_AT:RIFF_FORM_TYPE_AT + len(AVI_FORM_TYPE)] == AVI_FORM_TYPE:
        return "AVI"
    return None


def sample_times(duration_s: float, every_s: float, max_frames: int) -> list[float]:
    """Times on the grid: every ``every_s`` from 0, or ``max_frames`` spread evenly over a longer video."""
    count = max(1, math.ceil(duration_s / every_s))
    if count <= max_frames:
        return [i * every_s for i in range(count)]
    return [i * duration_s / max_frames for i in range(max_frames)]


@dataclass
class _FrameIndex:
    """Every frame's time, from the packets (nothing decoded), and which ones are keyframes."""

    times: list[float] = field(default_factory=list)  # sorted, display order
    keyframes: list[float] = field(default_factory=list)  # sorted

    def number_of(self, time_s: float) -> int:
        """The frame number of the frame shown at ``time_s``."""
        return max(0, bisect.bisect_right(self.times, time_s + 1e-6) - 1)

    def keyframe_at_or_before(self, time_s: float) -> float:
        position = bisect.bisect_right(self.keyframes, time_s + 1e-6) - 1
        return self.keyframes[max(position, 0)]

    def nearest_keyframe(self, time_s: float) -> float:
        return min(self.keyframes, key=lambda k: abs(k - time_s))


def prepare_video(data: bytes | bytearray | memoryview, spec: PreprocessSpec, limits: VideoLimits, container_format: str) -> PreparedVideo:
    """Sample, decode and preprocess the frames to score; ``ImageError`` says why a video cannot be scored."""
    start = time.perf_counter()
    if container_format not in VIDEO_FORMATS:
        raise ImageError(ErrorCode.UNSUPPORTED_FORMAT,
                         f"{container_format} is not a supported video container (supported: {', '.join(VIDEO_FORMATS)})")
    size = memoryview(data).nbytes
    if size > limits.max_bytes:
        raise ImageError(ErrorCode.TOO_LARGE, f"{size} bytes is over the limit of {limits.max_bytes} bytes for a video")
    with _broken_video_is_decode_failed(), av.open(io.BytesIO(data), mode="r") as container:
        return _prepare(container, spec, limits, container_format, start)


@contextmanager
def _broken_video_is_decode_failed() -> Iterator[None]:
    """Whatever FFmpeg or PyAV raise on a video becomes its ``decode_failed``; our own ``ImageError`` passes."""
    try:
        yield
    except ImageError:
        raise
    except av.FFmpegError as error:
        raise ImageError(ErrorCode.DECODE_FAILED, f"the video could not be decoded: {error.strerror or error}") from None
    except Exception as error:  # noqa: BLE001
        # Demuxers and decoders fed hostile bytes raise more than FFmpeg's errors (ValueError on an
        # absurd time base, MemoryError on a huge declared size...): each is still a broken video.
        raise ImageError(ErrorCode.DECODE_FAILED, f"the video could not be decoded ({type(error).__name__})") from None


def _prepare(container: av.container.InputContainer, spec: PreprocessSpec, limits: VideoLimits, container_format: str,
             start: float) -> PreparedVideo:
    if len(container.streams) > MAX_STREAMS:
        raise ImageError(ErrorCode.UNSUPPORTED_FORMAT,
                         f"the file holds {len(container.streams)} streams; a video post has at most {MAX_STREAMS}")
    if not container.streams.video:
        raise ImageError(ErrorCode.UNSUPPORTED_FORMAT, "the file holds no video stream")
    stream = container.streams.video[0]
    declared = _declared_duration(container, stream)
    if declared is not None and declared > limits.max_duration_s:
        raise ImageError(ErrorCode.TOO_LONG,
                         f"the video lasts {declared:.1f} s by its header, over the limit of {limits.max_duration_s:g} s")
    width, height = stream.codec_context.width, stream.codec_context.height
    _check_pixels(width, height, limits)
    # The codec's own name (av1), not its decoder's (libdav1d).
    codec = stream.codec_context.codec.canonical_name
    if codec not in VIDEO_CODECS:
        raise ImageError(ErrorCode.UNSUPPORTED_FORMAT,
                         f"{codec} video is not supported (supported: {', '.join(sorted(VIDEO_CODECS))})")

    index = _index_frames(container, stream)
    frame_step = (index.times[-1] - index.times[0]) / max(len(index.times) - 1, 1)
    duration = index.times[-1] + frame_step
    if duration > limits.max_duration_s:
        raise ImageError(ErrorCode.TOO_LONG,
                         f"the video lasts {duration:.1f} s, over the limit of {limits.max_duration_s:g} s")
    stream.thread_type = "SLICE"
    decoder = _Decoder(container, stream, index, budget=limits.max_frames * DECODE_BUDGET_PER_SAMPLE,
                       longest_side=max(KEPT_FRAME_SIDE, DRAFT_FACTOR * spec.size))
    frames: list[SampledFrame] = []
    taken: set[int] = set()
    tolerance = min(limits.every_s, duration) / 2
    for target in sample_times(duration, limits.every_s, limits.max_frames):
        keyframe = index.nearest_keyframe(target)
        # A keyframe within half a step of the grid time is as good a sample and costs one decoded frame
        # (unless an earlier time took it already).
        snaps = abs(keyframe - target) <= tolerance and index.number_of(keyframe) not in taken
        at = keyframe if snaps or decoder.over_budget else target
        decoded = decoder.frame_at(at)
        if decoded is not None and index.number_of(decoded[0]) not in taken:
            frames.append(_sampled(decoded, index, spec, limits, scene_change=False))
            taken.add(frames[-1].number)
    _add_scene_changes(frames, taken, decoder, index, spec, limits)
    if not frames:
        raise ImageError(ErrorCode.DECODE_FAILED, "no frame of the video could be decoded")
    frames.sort(key=lambda f: f.time_s)
    return PreparedVideo(
        frames=tuple(frames), width=frames[0].width, height=frames[0].height, format=container_format, codec=codec,
        duration_s=round(duration, 3), frames_in_video=len(index.times), frames_decoded=decoder.decoded,
        decode_ms=(time.perf_counter() - start) * _MS_PER_S,
    )


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The duration the header declares, in seconds, or None where it declares none."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_frame_pixels:
        raise ImageError(ErrorCode.TOO_MANY_PIXELS,
                         f"{width}x{height} frames are over the limit of {limits.max_frame_pixels} pixels")


def _index_frames(container: av.container.InputContainer, stream: av.VideoStream) -> _FrameIndex:
    """Read the packets (not their pictures): each frame's time from the start, and the keyframes'.

    ``ImageError`` for a stream with no frame; a stream whose packets carry no keyframe flag is decoded
    from its first frame.
    """
    origin = stream.start_time or 0
    base = stream.time_base
    times, keyframes = [], []
    for packet in container.demux(stream):
        if packet.pts is None or packet.size == 0:  # the demuxer's end-of-stream marker, or a damaged packet
            continue
        seconds = float((packet.pts - origin) * base)
        times.append(seconds)
        if packet.is_keyframe:
            keyframes.append(seconds)
    if not times:
        raise ImageError(ErrorCode.DECODE_FAILED, "the video holds no frames")
    times.sort()
    keyframes.sort()
    return _FrameIndex(times, keyframes or [times[0]])


class _Decoder:
    """Decodes the frame shown at a time: seek to the keyframe before it, decode forward to it.

    Consecutive requests inside one group of pictures continue the same forward decode instead of
    seeking back to its keyframe.
    """

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, index: _FrameIndex, budget: int,
                 longest_side: int):
        self._container = container
        self._longest_side = longest_side
        self._stream = stream
        self._index = index
        self._origin = stream.start_time or 0
        self._budget = budget
        self._frames = None
        self._keyframe: float | None = None
        self._last: float | None = None
        self.decoded = 0

    @property
    def over_budget(self) -> bool:
        return self.decoded >= self._budget

    def frame_at(self, time_s: float) -> tuple[float, Image.Image, tuple[int, int]] | None:
        """The time, picture (as displayed, reduced) and stored size of the first frame at or after ``time_s``;
        None if none decodes."""
        keyframe = self._index.keyframe_at_or_before(time_s)
        if abs(keyframe - time_s) < _SAME_TIME_S:
            return self._keyframe_alone(keyframe)
        if self._frames is None or keyframe != self._keyframe or self._last is None or self._last >= time_s:
            self._seek(keyframe)
            self._frames = self._decode()
            self._keyframe = keyframe
            self._last = None
        for frame in self._frames:
            self.decoded += 1
            if frame.pts is None:
                continue
            seconds = float((frame.pts - self._origin) * self._stream.time_base)
            self._last = seconds
            if seconds + 1e-6 >= time_s:
                return seconds, _displayed(frame, self._longest_side), (frame.width, frame.height)
        self._frames = None
        return None

    def _seek(self, time_s: float) -> None:
        """To the keyframe at ``time_s``; seeking also flushes the decoder."""
        self._container.seek(self._origin + int(time_s / self._stream.time_base), stream=self._stream,
                             backward=True, any_frame=False)

    def _keyframe_alone(self, keyframe: float) -> tuple[float, Image.Image, tuple[int, int]] | None:
        """Decode one keyframe by itself: its packet, then the decoder drained. A decoder left to run would
        take the next few packets (B-frame reordering) before giving the keyframe back: 3 packets per sample
        instead of 1 on a 1080p x264 clip, measured."""
        self._seek(keyframe)
        self._frames = None  # drained: the next request seeks again
        for packet in self._container.demux(self._stream):
            if packet.pts is None or packet.size == 0:
                continue
            try:
                frames = [*packet.decode(), *self._stream.codec_context.decode(None)]
            except av.InvalidDataError:
                return None
            self.decoded += 1
            for frame in frames:
                if frame.pts is not None:
                    seconds = float((frame.pts - self._origin) * self._stream.time_base)
                    return seconds, _displayed(frame, self._longest_side), (frame.width, frame.height)
            return None
        return None

    def _decode(self):
        """Frames from the demuxer's position; a corrupt packet is skipped, not fatal."""
        for packet in self._container.demux(self._stream):
            try:
                yield from packet.decode()
            except av.InvalidDataError:
                continue


def _displayed(frame: av.VideoFrame, longest_side: int) -> Image.Image:
    """The frame as a player shows it (the container's rotation applied), at most ``longest_side`` pixels."""
    scale = min(1.0, longest_side / max(frame.width, frame.height))
    image = frame.to_image(width=max(1, round(frame.width * scale)), height=max(1, round(frame.height * scale)),
                           interpolation="AREA")
    rotation = frame.rotation
    # PyAV gives the display matrix's rotation in degrees counter-clockwise, as Pillow's rotate takes it.
    # Phones write quarter turns; anything else (a skewed or invalid matrix) is shown as stored.
    if not math.isfinite(rotation) or abs(rotation) > FULL_TURN or rotation % QUARTER_TURN:
        return image
    return image.rotate(rotation, expand=True) if rotation % FULL_TURN else image


def _sampled(decoded: tuple[float, Image.Image, tuple[int, int]], index: _FrameIndex, spec: PreprocessSpec,
             limits: VideoLimits, scene_change: bool) -> SampledFrame:
    time_s, image, (stored_width, stored_height) = decoded
    _check_pixels(stored_width, stored_height, limits)  # a stream may change size after its header
    # The size as displayed: rotation swaps the stored width and height.
    width, height = (stored_width, stored_height) if (image.width >= image.height) == (stored_width >= stored_height) \
        else (stored_height, stored_width)
    rgb = load_image(image, spec)
    tensor, placement = preprocess(rgb, spec)
    picture = rgb.copy()
    picture.thumbnail((KEPT_FRAME_SIDE, KEPT_FRAME_SIDE))
    return SampledFrame(index.number_of(time_s), round(time_s, 3), tensor, placement, picture, width, height,
                        scene_change)


def _thumb(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("L").resize((SCENE_THUMB_SIDE, SCENE_THUMB_SIDE)), dtype=np.float32)


def _add_scene_changes(frames: list[SampledFrame], taken: set[int], decoder: _Decoder, index: _FrameIndex,
                       spec: PreprocessSpec, limits: VideoLimits) -> None:
    """Keyframes off the grid that start a new scene, while there is room under ``max_frames``."""
    grid = sorted(frames, key=lambda f: f.time_s)
    grid_times = [f.time_s for f in grid]
    for keyframe in index.keyframes:
        if len(frames) >= limits.max_frames or decoder.over_budget:
            return
        if index.number_of(keyframe) in taken:
            continue
        decoded = decoder.frame_at(keyframe)
        if decoded is None:
            continue
        before = bisect.bisect_right(grid_times, keyframe) - 1
        if before >= 0 and float(np.abs(_thumb(decoded[1]) - _thumb(grid[before].picture)).mean()) < SCENE_CHANGE_DIFFERENCE:
            continue
        frame = _sampled(decoded, index, spec, limits, scene_change=True)
        frames.append(frame)
        taken.add(frame.number)


def frame_picture(data: bytes | bytearray | memoryview, time_s: float) -> Image.Image:
    """The frame shown at ``time_s`` as displayed (rotation applied): a scan report's picture of a video's worst frame.

    Raises ``ImageError`` if the video cannot be read there.
    """
    with _broken_video_is_decode_failed(), av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        index = _index_frames(container, stream)
        decoded = _Decoder(container, stream, index, budget=0, longest_side=KEPT_FRAME_SIDE).frame_at(time_s)
    if decoded is None:
        raise ImageError(ErrorCode.DECODE_FAILED, f"no frame decodes at {time_s} s")
    return decoded[1]
