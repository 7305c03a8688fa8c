"""The API's JSON shapes, with a description on every field for the OpenAPI docs at /docs.

These are the contract upload tools rely on: fields may be added, never renamed or removed.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from flexguard.models.metadata import ModelInfo, Thresholds
from flexguard.models.taxonomy import Category
from flexguard.models.vocabulary import Decision

from flexguard.inference.engine import FrameScore, ImageError, ImageScore, VideoSummary
from flexguard.inference.strip import ANSWER_FRAME_HEIGHT, StripFrame, choose, strip
from flexguard.inference.video import VIDEO_FORMATS, VideoLimits

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
_TIMING_DECIMALS = 2


WEIGHTS_DESCRIPTION = "SHA-256 of the model's weights, computed from the file when the service loaded it."


class ModelRef(BaseModel):
    name: str = Field(description="Model name, from the model file's metadata.")
    version: str = Field(description="Model version, from the model file's metadata; every retrain gets its own.")
    weights_sha256: str | None = Field(
        description=WEIGHTS_DESCRIPTION + " Null only for submissions stored before flexguard recorded it."
    )

    @classmethod
    def of(cls, info: ModelInfo) -> "ModelRef":
        return cls(name=info.name, version=info.version, weights_sha256=info.weights_sha256)


class ThresholdsOut(BaseModel):
    review: Fraction = Field(description="Risk at or above this needs a person to look (`review`).")
    block: Fraction = Field(description="Risk at or above this should not be posted (`block`).")

    @classmethod
    def of(cls, thresholds: Thresholds) -> "ThresholdsOut":
        return cls(review=thresholds.review, block=thresholds.block)


class CategoryScore(BaseModel):
    id: str = Field(description="Stable category id, e.g. `luxury_car`.")
    name_en: str = Field(description="Category name in English, ready to show.")
    name_id: str = Field(description="Category name in Indonesian, ready to show.")
    score: Fraction = Field(description="How strongly the photo shows this category (0-1).")


class EvidenceOut(BaseModel):
    category: str = Field(description="Category id of a category scoring at or above the review threshold.")
    score: Fraction = Field(description="That category's score.")
    box: tuple[Fraction, Fraction, Fraction, Fraction] = Field(
        description="Where in the photo: [left, top, right, bottom] as fractions of the photo's width and height, "
                    "as displayed (EXIF orientation applied)."
    )


class ImageInfo(BaseModel):
    width: int = Field(description="Width in pixels, as displayed (EXIF orientation, or a video's rotation, applied).")
    height: int = Field(description="Height in pixels, as displayed.")
    format: str = Field(description="Format detected from the content (JPEG, MPO, PNG, WEBP, GIF, BMP, TIFF, HEIF; "
                                    "for a video MP4, MOV, 3GP, WEBM).")


class FrameOut(BaseModel):
    index: int = Field(description="The frame's number in the video, from 0.")
    time_s: float = Field(description="Seconds from the start of the video.")
    risk: Fraction = Field(description="This frame's risk.")
    decision: Decision = Field(description="This frame's decision.")
    scene_change: bool = Field(description="Scored because a new scene starts here (the others are on the time grid).")
    strip_box: tuple[Fraction, Fraction, Fraction, Fraction] | None = Field(
        None, description="Where the frame is in the strip image: [left, top, right, bottom] as fractions; null if "
                          "it is not in the strip (the strip shows at most 12 frames).")

    @classmethod
    def of(cls, frame: FrameScore, strip_box: tuple[float, float, float, float] | None = None) -> "FrameOut":
        return cls(index=frame.number, time_s=frame.time_s, risk=frame.risk, decision=frame.decision,
                   scene_change=frame.scene_change, strip_box=strip_box)


class VideoOut(BaseModel):
    duration_s: float = Field(description="The video's length in seconds.")
    codec: str = Field(description="Its video codec (h264, hevc, vp8, vp9, av1, mpeg4, h263).")
    frames_in_video: int = Field(description="Frames the video holds.")
    frames_sampled: int = Field(description="Frames scored: one every `video_every_s` plus scene changes, at most "
                                            "`video_frames` (see GET /v1/model).")
    worst_frame: FrameOut = Field(description="The frame with the highest risk; the result's risk and evidence are its.")
    flagged_frames: list[FrameOut] = Field(description="Every scored frame at review or block, in time order.")
    strip_jpeg: str | None = Field(
        None, description="The flagged frames side by side (at most 12, 96 px high), as a data: URL of a JPEG; "
                          "null when no frame is flagged.")

    @classmethod
    def of(cls, video: VideoSummary, with_strip: bool = True) -> "VideoOut":
        shown: list[StripFrame] = []
        data_url = None
        if with_strip and video.flagged:
            jpeg, shown = strip(choose(video.flagged, video.worst), ANSWER_FRAME_HEIGHT)
            data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        return cls.with_boxes(video, {s.frame.number: s.box for s in shown}, data_url)

    @classmethod
    def with_boxes(cls, video: VideoSummary, boxes: dict[int, tuple[float, float, float, float]],
                   data_url: str | None = None) -> "VideoOut":
        return cls(duration_s=video.duration_s, codec=video.codec, frames_in_video=video.frames_in_video,
                   frames_sampled=video.frames_sampled, worst_frame=FrameOut.of(video.worst, boxes.get(video.worst.number)),
                   flagged_frames=[FrameOut.of(f, boxes.get(f.number)) for f in video.flagged], strip_jpeg=data_url)


class TimingOut(BaseModel):
    decode_ms: float = Field(description="Reading and preprocessing this photo.")
    queue_ms: float = Field(description="Waiting for the model call it shared with other photos to start.")
    model_ms: float = Field(description="That model call (shared by `batch_size` photos).")
    batch_size: int = Field(description="Photos, from this and concurrent requests, in that model call.")


class ScoredImage(BaseModel):
    ok: Literal[True] = Field(True, description="The photo was scored.")
    risk: Fraction = Field(description="Overall risk: the highest category score.")
    decision: Decision = Field(description="`allow` below review, `review` from review, `block` from block.")
    categories: list[CategoryScore] = Field(description="Every category of the model, in the model's order.")
    evidence: list[EvidenceOut] = Field(description="Boxes for categories at or above review, strongest first.")
    image: ImageInfo = Field(description="The photo as read.")
    timing: TimingOut = Field(description="Where this photo's time went, in milliseconds.")
    video: VideoOut | None = Field(
        None, description="Only for a video: its frames scored, the worst, and those that crossed the review "
                          "threshold. `risk`, `evidence` and `categories` are then the worst frame's risk and evidence "
                          "and each category's highest score over the frames.")

    @classmethod
    def of(cls, result: ImageScore, categories: tuple[Category, ...]) -> "ScoredImage":
        timing = result.timing
        return cls(
            risk=result.risk,
            decision=result.decision,
            categories=[
                CategoryScore(id=c.id, name_en=c.name_en, name_id=c.name_id, score=result.scores[c.id]) for c in categories
            ],
            evidence=[EvidenceOut(category=e.category, score=e.score, box=e.box) for e in result.evidence],
            image=ImageInfo(width=result.width, height=result.height, format=result.format),
            timing=TimingOut(
                decode_ms=round(timing.decode_ms, _TIMING_DECIMALS),
                queue_ms=round(timing.queue_ms, _TIMING_DECIMALS),
                model_ms=round(timing.model_ms, _TIMING_DECIMALS),
                batch_size=timing.batch_size,
            ),
            video=VideoOut.of(result.video) if result.video is not None else None,
        )


class ErrorOut(BaseModel):
    code: str = Field(description="Stable error code (listed in this API's description); branch on this.")
    message: str = Field(description="What went wrong, in English, for people.")


class FailedImage(BaseModel):
    ok: Literal[False] = Field(False, description="This photo could not be scored; the others in the request were.")
    error: ErrorOut = Field(description="Why this photo could not be scored.")

    @classmethod
    def of(cls, error: ImageError) -> "FailedImage":
        return cls(error=ErrorOut(code=error.code, message=error.message))


class ScoreResponse(BaseModel):
    model: ModelRef = Field(description="The model that scored the photos.")
    category_thresholds: dict[str, ThresholdsOut] = Field(
        default_factory=dict, description="The categories that had thresholds of their own in this request.")
    thresholds: ThresholdsOut = Field(description="The thresholds the decisions used: the model's, or the request's.")
    results: list[Annotated[ScoredImage | FailedImage, Field(discriminator="ok")]] = Field(
        description="One entry per photo, in the order they were sent."
    )


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorOut = Field(description="What was wrong with the request as a whole.")
    detail: str = Field(
        description="The same as `error.message`, for clients written against FastAPI's default error body "
                    "(which earlier versions of this API sent)."
    )


class CategoryOut(BaseModel):
    id: str = Field(description="Stable category id, as in scores.")
    name_en: str = Field(description="Category name in English.")
    name_id: str = Field(description="Category name in Indonesian.")
    description: str = Field(description="What the category covers, in English.")


class InputSpec(BaseModel):
    size: int = Field(description="Side of the square model input, in pixels.")
    resize_mode: str = Field(description="`letterbox`: the whole photo, padded; `squash`: stretched.")
    mean: tuple[float, float, float] = Field(description="Per-channel (RGB) value subtracted from the 0-255 pixels.")
    std: tuple[float, float, float] = Field(description="Per-channel (RGB) divisor applied after the mean.")


class VideoLimitsOut(BaseModel):
    max_videos: int = Field(description="Most videos in one request (0: videos are refused).")
    max_bytes: int = Field(description="Largest video, in bytes.")
    max_seconds: float = Field(description="Longest video, in seconds, read from its header.")
    max_frame_pixels: int = Field(description="Largest video frame, in pixels, read from its header.")
    frames: int = Field(description="Most frames of one video scored.")
    every_s: float = Field(description="Seconds between the frames scored; keyframes starting a new scene are added.")
    formats: list[str] = Field(description="Containers accepted, as detected from the content.")

    @classmethod
    def of(cls, limits: VideoLimits, max_videos: int) -> "VideoLimitsOut":
        return cls(max_videos=max_videos, max_bytes=limits.max_bytes, max_seconds=limits.max_duration_s,
                   max_frame_pixels=limits.max_frame_pixels, frames=limits.max_frames, every_s=limits.every_s,
                   formats=list(VIDEO_FORMATS))


class Limits(BaseModel):
    max_files: int = Field(description="Most photos in one request.")
    max_bytes: int = Field(description="Largest photo, in bytes.")
    max_pixels: int = Field(description="Largest photo, in pixels (width x height, read from its header).")
    formats: list[str] = Field(description="Formats accepted, as detected from the content.")
    video: VideoLimitsOut = Field(description="Limits on videos.")


class ModelResponse(BaseModel):
    name: str = Field(description="Model name, from the model file's metadata.")
    version: str = Field(description="Model version, from the model file's metadata; every retrain gets its own.")
    weights_sha256: str = Field(description=WEIGHTS_DESCRIPTION)
    categories: list[CategoryOut] = Field(description="The taxonomy, in the order scores are given.")
    thresholds: ThresholdsOut = Field(description="The model's own thresholds, used unless a request gives its own.")
    input: InputSpec = Field(description="How photos are turned into the model's input.")
    data_manifest_sha256: str = Field(description="Hash of the data manifest the model was trained on.")
    validation_metrics: dict[str, Any] = Field(description="Metrics from the model's validation, as stored in the model.")
    limits: Limits = Field(description="This deployment's limits on requests.")

    @classmethod
    def of(cls, info: ModelInfo, limits: Limits) -> "ModelResponse":
        return cls(
            name=info.name,
            version=info.version,
            weights_sha256=info.weights_sha256,
            categories=[CategoryOut(**c.to_dict()) for c in info.categories],
            thresholds=ThresholdsOut.of(info.thresholds),
            input=InputSpec(**info.preprocess.to_dict()),
            data_manifest_sha256=info.data_manifest_sha256,
            validation_metrics=info.validation_metrics,
            limits=limits,
        )


class Status(BaseModel):
    status: str = Field(description="`ok` (healthz), `ready` or `starting` (readyz).")


class Readiness(Status):
    database: str | None = Field(
        None,
        description="The review database, `ok` or `unavailable` (null until it is opened). Scoring does "
                    "not need it, so an unavailable database does not make the service unready: review requests "
                    "get 503 `database_unavailable` until it is back.",
    )
