"""Videos made by the tests themselves (PyAV encodes), and the hostile ones made from them.

``clip`` encodes a few seconds of solid-colour frames in any container and codec the wheel's FFmpeg
writes; the colour per second is chosen by the test, so a test knows which frames a model must flag
(with the tiny model, red scores high on ``luxury_car``: see conftest). ``rotated`` writes the
display matrix phones use for portrait videos into an MP4's track header.
"""

from __future__ import annotations

import io
import struct
from typing import Callable, Sequence

import av
import numpy as np
from PIL import Image

RED = (230, 20, 20)
GREY = (128, 128, 128)
# The 9 numbers of an MP4 track header's display matrix (16.16 fixed point, the last column 2.30).
_ONE, _W_ONE = 0x00010000, 0x40000000
IDENTITY_MATRIX = (_ONE, 0, 0, 0, _ONE, 0, 0, 0, _W_ONE)
# A track header (version 0): 4 size, 4 type, 4 version+flags, 4 created, 4 modified, 4 track id,
# 4 reserved, 4 duration, 8 reserved, 2 layer, 2 group, 2 volume, 2 reserved: the matrix starts 48 bytes
# after the box starts.
_TKHD_MATRIX_AT = 48
_TKHD_VERSION_AT = 8
_TKHD_TRACK_ID_AT = 20


def clip(
    colours: Sequence[tuple[int, int, int]] | Callable[[int], Image.Image | np.ndarray],
    seconds: float | None = None,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    container: str = "mp4",
    codec: str = "libx264",
    gop: int | None = None,
) -> bytes:
    """A video: ``colours`` gives each second's colour (or a function gives frame ``i``), ``fps`` frames a second."""
    width, height = size
    if callable(colours):
        count = int(round((seconds or 1) * fps))
        frame_of = colours
    else:
        count = len(colours) * fps

        def frame_of(i: int) -> np.ndarray:
            return np.full((height, width, 3), colours[i // fps], dtype=np.uint8)

    out = io.BytesIO()
    with av.open(out, "w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop or fps
        for i in range(count):
            picture = frame_of(i)
            frame = (av.VideoFrame.from_image(picture) if isinstance(picture, Image.Image)
                     else av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24"))
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return out.getvalue()


def with_matrix(mp4: bytes, matrix: Sequence[int]) -> bytes:
    """An MP4 with the video track header's display matrix replaced (how phones mark rotation)."""
    at = mp4.index(b"tkhd") - 4
    assert mp4[at + _TKHD_VERSION_AT] == 0, "a version-1 track header (64-bit times) has its matrix elsewhere"
    start = at + _TKHD_MATRIX_AT
    packed = struct.pack(">9i", *[value - (1 << 32) if value >= 1 << 31 else value for value in matrix])
    return mp4[:start] + packed + mp4[start + len(packed):]


def rotated_clockwise_90(mp4: bytes) -> bytes:
    """What an upright phone writes: the stored landscape frames are to be shown turned 90 degrees clockwise."""
    return with_matrix(mp4, (0, _ONE, 0, (1 << 32) - _ONE, 0, 0, 0, 0, _W_ONE))


# --- Hostile videos, each built from a valid one or from scratch (see hardening_corpus.VIDEO_CASES). ---

# A movie header (version 0): 4 size, 4 type, 4 version+flags, 4 created, 4 modified, then the time
# scale and the duration in its units.
_MVHD_TIMESCALE_AT, _MVHD_DURATION_AT = 20, 24
# An edit list's and a sample table's first entry (version 0): 4 size, 4 type, 4 version+flags, 4 entries.
_ELST_FIRST_DURATION_AT = _STTS_FIRST_COUNT_AT = 16
TEN_HOURS_S = 10 * 3600
SIXTEEN_K = (15360, 8640)


def declaring_duration(mp4: bytes, seconds: int) -> bytes:
    """An MP4 whose index declares ``seconds``: the movie and media headers, the edit list and the sample
    table all say so (FFmpeg believes the sample table over the headers), while the frames stay 8 s of data.

    Assumes what ``clip`` writes: version-0 boxes, one edit and one run of equal sample durations.
    """
    out = bytearray(mp4)

    def put(at: int, value: int) -> None:
        out[at:at + 4] = struct.pack(">I", min(value, (1 << 32) - 1))

    for box in (b"mvhd", b"mdhd"):  # the media header has the movie header's layout up to the duration
        at = out.index(box) - 4
        (timescale,) = struct.unpack(">I", out[at + _MVHD_TIMESCALE_AT:at + _MVHD_TIMESCALE_AT + 4])
        put(at + _MVHD_DURATION_AT, seconds * timescale)
        if box == b"mvhd":
            movie_timescale = timescale
        else:
            media_timescale = timescale
    edits = out.index(b"elst") - 4
    put(edits + _ELST_FIRST_DURATION_AT, seconds * movie_timescale)
    samples = out.index(b"stts") - 4
    (count,) = struct.unpack(">I", out[samples + _STTS_FIRST_COUNT_AT:samples + _STTS_FIRST_COUNT_AT + 4])
    put(samples + _STTS_FIRST_COUNT_AT + 4, seconds * media_timescale // count)
    return bytes(out)


def sixteen_k_frame() -> bytes:
    """One black 15360 x 8640 frame (H.264, ~400 KB): refused from its header, never decoded."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=1)
        stream.width, stream.height = SIXTEEN_K
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        frame = av.VideoFrame(*SIXTEEN_K, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for packet in [*stream.encode(frame), *stream.encode()]:
            output.mux(packet)
    return out.getvalue()


def zero_frames() -> bytes:
    """An MP4 with a video stream that holds no frame."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height = 160, 120
        output.start_encoding()  # writes the header; closing writes an empty index
    return out.getvalue()


def audio_only(seconds: float = 1.0) -> bytes:
    """An MP4 holding one second of AAC silence and no video."""
    out = io.BytesIO()
    rate = 44_100
    with av.open(out, "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=rate)
        samples = int(rate * seconds)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            output.mux(packet)
    return out.getvalue()


def many_streams(mp4: bytes, count: int = 2000) -> bytes:
    """The MP4 with its video track copied ``count`` times more into its movie box: thousands of streams.

    Built by editing the boxes rather than by a muxer (which is not made for this): the copies are
    appended to the movie box, which PyAV's muxer writes last, and its size is updated.
    """
    moov = mp4.index(b"moov") - 4
    (moov_size,) = struct.unpack(">I", mp4[moov:moov + 4])
    assert moov + moov_size == len(mp4), "the movie box must be the file's last"
    trak = mp4.index(b"trak", moov) - 4
    (trak_size,) = struct.unpack(">I", mp4[trak:trak + 4])
    box = mp4[trak:trak + trak_size]
    track_id_at = box.index(b"tkhd") - 4 + _TKHD_TRACK_ID_AT
    copies = b"".join(box[:track_id_at] + struct.pack(">I", 2 + i) + box[track_id_at + 4:] for i in range(count))
    return mp4[:moov] + struct.pack(">I", moov_size + len(copies)) + mp4[moov + 4:] + copies


def corrupt_packets(video: bytes, seed: int = 3) -> bytes:
    """The video with bytes overwritten inside its media data (its headers intact)."""
    data = bytearray(video)
    box = data.index(b"mdat") - 4
    (size,) = struct.unpack(">I", data[box:box + 4])
    start, end = box + 8, box + size
    rng = np.random.default_rng(seed)
    for position in rng.integers(start, end, size=max(8, (end - start) // 50)):
        data[position] = int(rng.integers(0, 256))
    return bytes(data)
