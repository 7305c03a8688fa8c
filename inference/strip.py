"""A video's flagged frames as one JPEG strip, and where each frame sits in it.

Reviewers and upload tools need to see *which* moments of a video raised the flag, not the video:
the API's answer carries a small strip, a pending submission keeps a larger one for its reviewers
(never the video itself), and both come from here so they show the same frames in the same order.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

from PIL import Image

from .engine import FrameScore, VideoSummary

# At most this many frames in a strip: the worst always, the rest spread over the video's flagged ones.
STRIP_MAX_FRAMES = 12
# The answer's strip is a thumbnail row; the reviewer's is large enough to judge a watch on a wrist.
ANSWER_FRAME_HEIGHT = 96
REVIEW_FRAME_HEIGHT = 360
STRIP_JPEG_QUALITY = 85
STRIP_GAP_PX = 4
STRIP_BACKGROUND = (0, 0, 0)


@dataclass(frozen=True)
class StripFrame:
    frame: FrameScore
    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the strip


def choose(flagged: Sequence[FrameScore], worst: FrameScore, limit: int = STRIP_MAX_FRAMES) -> list[FrameScore]:
    """At most ``limit`` of the flagged frames, in time order: the worst, and the others spread evenly."""
    if len(flagged) <= limit:
        return list(flagged)
    step = len(flagged) / limit
    picked = {flagged[int(i * step)].number: flagged[int(i * step)] for i in range(limit)}
    if worst.number not in picked:
        nearest = min(picked, key=lambda number: abs(number - worst.number))
        del picked[nearest]
        picked[worst.number] = worst
    return sorted(picked.values(), key=lambda f: f.time_s)


def kept_frames(video: VideoSummary) -> list[FrameScore]:
    """What a reviewer is shown of a video: its flagged frames, or its worst one when none is flagged."""
    return choose(video.flagged or (video.worst,), video.worst)


def _widths(frames: Sequence[FrameScore], frame_height: int) -> list[int]:
    return [max(1, round(f.picture.width * frame_height / f.picture.height)) for f in frames]


def layout(frames: Sequence[FrameScore], frame_height: int) -> list[StripFrame]:
    """Where each frame sits in the strip ``strip`` draws, without drawing it."""
    widths = _widths(frames, frame_height)
    total = sum(widths) + STRIP_GAP_PX * (len(widths) - 1)
    placed, left = [], 0
    for frame, width in zip(frames, widths):
        placed.append(StripFrame(frame, (round(left / total, 4), 0.0, round((left + width) / total, 4), 1.0)))
        left += width + STRIP_GAP_PX
    return placed


def strip(frames: Sequence[FrameScore], frame_height: int) -> tuple[bytes, list[StripFrame]]:
    """The frames side by side at ``frame_height`` pixels, as a JPEG, and each frame's box in it."""
    widths = _widths(frames, frame_height)
    canvas = Image.new("RGB", (sum(widths) + STRIP_GAP_PX * (len(widths) - 1), frame_height), STRIP_BACKGROUND)
    left = 0
    for frame, width in zip(frames, widths):
        canvas.paste(frame.picture.resize((width, frame_height), Image.Resampling.BILINEAR), (left, 0))
        left += width + STRIP_GAP_PX
    placed = layout(frames, frame_height)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=STRIP_JPEG_QUALITY)
    return buffer.getvalue(), placed
