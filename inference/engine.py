"""The one inference engine: decode -> preprocess -> batch -> onnxruntime -> scores, decision, evidence.

No FastAPI and no torch in here: the REST app, the batch scanner, evaluation and the benchmarks all
call this module, so a photo gets the same score whichever way it comes in. Everything the engine
needs to know about the model (categories, input spec, thresholds) is read from the ONNX file's own
metadata.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np

# onnxruntime (1.2x+) writes a telemetry device id and event store to ~/.cache/Microsoft and a session
# file to TMPDIR as soon as it is imported; the service writes nothing to disk, so it is switched off
# before the import (an explicit ORT_DISABLE_TELEMETRY in the environment wins).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
import onnxruntime as ort  # noqa: E402
from PIL import ExifTags, Image, UnidentifiedImageError

from flexguard.models.metadata import (
    CAM_OUTPUT,
    INPUT_NAME,
    SCORES_OUTPUT,
    ModelInfo,
    ModelMetadataError,
    compute_weights_sha256,
    overall_risk,
)
from flexguard.models.policy import Policy
from flexguard.models.preprocessing import Placement, load_image, open_image, preprocess

from flexguard.models.vocabulary import Decision, ErrorCode

from .errors import ImageError
from .video import VIDEO_SNIFF_BYTES, PreparedVideo, SampledFrame, VideoLimits, prepare_video, sniff_video

# An evidence box covers the map cells that reach this share of the category's peak activation and
# touch the peak: the object's extent without stray activity elsewhere in the photo.
EVIDENCE_PEAK_SHARE = 0.5
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_BYTES = 25_000_000
# What phones, cameras and the web produce, as Pillow names them once it has sniffed the content
# (MPO: a phone JPEG carrying a second picture; HEIF: HEIC/HEIF, read through pillow-heif). Anything
# else Pillow can read (ICO, PSD, AVIF, ...) is refused before its pixels are decoded: no upload tool
# sends those, and each would be one more decoder exposed to untrusted bytes.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
# A video's frames go through the model in calls of at most this many, so that a 64-frame video
# neither holds all its activations at once nor keeps other photos waiting behind one huge call.
VIDEO_FRAMES_PER_CALL = 8
_MS_PER_S = 1000.0


def available_cores() -> int:
    """CPUs this process may run on; unlike ``os.cpu_count`` it respects taskset and cpusets."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not offered on macOS or Windows
        return os.cpu_count() or 1


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable, or not a flexguard model."""


@dataclass(frozen=True)
class Prepared:
    """A decoded photo, ready for the model."""

    tensor: np.ndarray
    placement: Placement
    width: int
    height: int
    format: str
    decode_ms: float = 0.0


@dataclass(frozen=True)
class Timing:
    """Where one photo's time went, in milliseconds."""

    decode_ms: float  # reading and preprocessing this photo
    queue_ms: float  # waiting for its model call to start (the service's batcher gathers photos meanwhile)
    model_ms: float  # the onnxruntime call this photo was part of
    batch_size: int  # photos in that call


@dataclass(frozen=True)
class Evidence:
    category: str
    score: float
    box: tuple[float, float, float, float]  # left, top, right, bottom as fractions of the photo


@dataclass(frozen=True)
class FrameScore:
    """One sampled frame of a video, scored."""

    number: int  # position in the video, from 0
    time_s: float
    risk: float
    decision: str
    scores: dict[str, float]
    evidence: list[Evidence]
    picture: Image.Image  # the frame as displayed, small (``video.KEPT_FRAME_SIDE``)
    scene_change: bool


@dataclass(frozen=True)
class VideoSummary:
    """What a video's result adds to a photo's: which frames were scored and which raised the flag."""

    duration_s: float
    codec: str
    frames_in_video: int
    frames_sampled: int
    frames_decoded: int
    worst: FrameScore
    flagged: tuple[FrameScore, ...]  # frames at review or block, in time order


@dataclass(frozen=True)
class ImageScore:
    risk: float
    decision: str
    scores: dict[str, float]
    evidence: list[Evidence] = field(default_factory=list)
    width: int = 0
    height: int = 0
    format: str = ""
    timing: Timing | None = None
    video: VideoSummary | None = None  # set for a video: its risk, scores and evidence are its worst frame's


def _connected_box(mask: np.ndarray, seed: tuple[int, int]) -> tuple[int, int, int, int]:
    """Bounding cells (row0, col0, row1, col1, inclusive) of the 4-connected region of ``mask`` around ``seed``."""
    rows, cols = mask.shape
    seen = np.zeros_like(mask)
    queue = deque([seed])
    seen[seed] = True
    r0 = r1 = seed[0]
    c0 = c1 = seed[1]
    while queue:
        r, c = queue.popleft()
        r0, r1, c0, c1 = min(r0, r), max(r1, r), min(c0, c), max(c1, c)
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < rows and 0 <= nc < cols and mask[nr, nc] and not seen[nr, nc]:
                seen[nr, nc] = True
                queue.append((nr, nc))
    return r0, c0, r1, c1


def evidence_box(cam: np.ndarray, placement: Placement) -> tuple[float, float, float, float]:
    """Box on the photo (fractions) around the peak of one category's activation map."""
    rows, cols = cam.shape
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    low, high = float(cam.min()), float(cam.max())
    mask = cam >= low + EVIDENCE_PEAK_SHARE * (high - low)
    r0, c0, r1, c1 = _connected_box(mask, (int(peak[0]), int(peak[1])))
    left, top = placement.to_photo_fraction(c0 / cols, r0 / rows)
    right, bottom = placement.to_photo_fraction((c1 + 1) / cols, (r1 + 1) / rows)
    return round(left, 4), round(top, 4), round(right, 4), round(bottom, 4)


class Engine:
    """Holds one onnxruntime session and the model's self-description."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        video_limits: VideoLimits | None = None,
    ):
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or available_cores()
        # onnxruntime's intra-op worker threads spin-wait for work by default, between the parallel parts
        # of a call and for a while after it. Here the model shares the cores with the photo decoders
        # (the service's and the scanner's decode threads), and that spinning takes their CPU: on 2 cores,
        # 12 MP JPEGs over HTTP at concurrency 8 took 53 ms of server CPU per photo with spinning and
        # 41 ms without (+20% photos/s on an otherwise idle machine, about twice that when other work
        # competes for the cores), while model-only throughput stayed at ~150 images/s at batch 8.
        # docs/performance.md has the measurements.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for unreadable files
            raise ModelLoadError(f"cannot load model {path}: {error}") from None
        try:
            info = ModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, source=str(path))
        except ModelMetadataError as error:
            raise ModelLoadError(str(error)) from None
        # The weights' digest is computed from the file rather than trusted from its metadata, so what the
        # service, the scan rows and the audit trail name is exactly what scored the photos.
        weights = compute_weights_sha256(path)
        if info.weights_sha256 and info.weights_sha256 != weights:
            raise ModelLoadError(
                f"{path}: its metadata names weights {info.weights_sha256[:12]}… but the file holds {weights[:12]}…: "
                "it was changed after export; export or stamp it again"
            )
        self.info = replace(info, weights_sha256=weights)
        outputs = {o.name for o in self.session.get_outputs()}
        if {SCORES_OUTPUT, CAM_OUTPUT} - outputs or self.session.get_inputs()[0].name != INPUT_NAME:
            raise ModelLoadError(f"{path}: expected input {INPUT_NAME!r} and outputs {SCORES_OUTPUT!r}, {CAM_OUTPUT!r}")
        self.path = path
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.video_limits = video_limits or VideoLimits()

    def prepare(self, source: str | os.PathLike | bytes | BinaryIO) -> Prepared | PreparedVideo:
        """Decode and preprocess one photo, or sample a video's frames (CPU work; safe from many threads).

        Photos and videos are told apart by their first bytes. The byte size, the format and the pixel
        count (from the header; for a video also its duration) are all checked before anything is decoded.
        """
        try:
            video_format = sniff_video(_head(source))
        except OSError:  # unreadable: the photo path reports it as it always has
            video_format = None
        if video_format is not None:
            return prepare_video(_all_bytes(source), self.info.preprocess, self.video_limits, video_format)
        return self._prepare_photo(source)

    def _prepare_photo(self, source: str | os.PathLike | bytes | BinaryIO) -> Prepared:
        start = time.perf_counter()
        spec = self.info.preprocess
        try:
            size = _byte_size(source)
            if size is not None and size > self.max_bytes:
                raise ImageError(ErrorCode.TOO_LARGE, f"{size} bytes is over the limit of {self.max_bytes} bytes")
            with open_image(source) as image:
                image_format = image.format
                if image_format not in SUPPORTED_FORMATS:
                    raise ImageError(
                        ErrorCode.UNSUPPORTED_FORMAT,
                        f"{image_format} is not a supported format (supported: {', '.join(SUPPORTED_FORMATS)})",
                    )
                width, height = image.size
                if width * height > self.max_pixels:
                    raise ImageError(
                        ErrorCode.TOO_MANY_PIXELS, f"{width}x{height} is over the limit of {self.max_pixels} pixels"
                    )
                rgb = load_image(image, spec)
                # Report the photo's own size as displayed, not the reduced size a JPEG draft decoded.
                if image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
                    width, height = height, width
                tensor, placement = preprocess(rgb, spec)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(ErrorCode.UNSUPPORTED_FORMAT, "not an image format flexguard can read") from None
        except Image.DecompressionBombError as error:
            raise ImageError(ErrorCode.TOO_MANY_PIXELS, str(error)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageError(ErrorCode.DECODE_FAILED, f"the image could not be decoded: {error}") from None
        except Exception as error:  # noqa: BLE001
            # Decoders fed hostile bytes raise more than their documented errors (struct.error,
            # IndexError, ZeroDivisionError, RuntimeError from libheif, ...): each is still a broken
            # photo, never a fault of the service.
            raise ImageError(ErrorCode.DECODE_FAILED, f"the image could not be decoded ({type(error).__name__})") from None
        decode_ms = (time.perf_counter() - start) * _MS_PER_S
        return Prepared(tensor, placement, width, height, image_format, decode_ms)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model call on a preprocessed batch (N, 3, S, S): per-category scores (N, C) and maps (N, C, h, w)."""
        scores, cams = self.session.run([SCORES_OUTPUT, CAM_OUTPUT], {INPUT_NAME: batch})
        return scores, cams

    def warm_up(self) -> None:
        """One inference on a blank input, so onnxruntime's first-call set-up is not paid by a user."""
        size = self.info.preprocess.size
        self.run(np.zeros((1, 3, size, size), dtype=np.float32))

    def score_prepared(self, prepared: Sequence[Prepared | PreparedVideo], policy: Policy | None = None) -> list[ImageScore]:
        """Scores of decoded photos (in one model call) and videos, decided under ``policy`` (default: the model's)."""
        policy = policy or Policy(self.info.thresholds)
        photos = [p for p in prepared if isinstance(p, Prepared)]
        by_photo = {}
        if photos:
            start = time.perf_counter()
            scores, cams = self.run(np.stack([p.tensor for p in photos]))
            model_ms = (time.perf_counter() - start) * _MS_PER_S
            by_photo = {
                id(p): self.result(p, s, c, policy, Timing(p.decode_ms, 0.0, model_ms, len(photos)))
                for p, s, c in zip(photos, scores, cams)
            }
        return [by_photo[id(p)] if isinstance(p, Prepared) else self._score_video(p, policy) for p in prepared]

    def _score_video(self, video: PreparedVideo, policy: Policy) -> ImageScore:
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        model_ms = 0.0
        for first in range(0, len(video.frames), VIDEO_FRAMES_PER_CALL):
            chunk = video.frames[first:first + VIDEO_FRAMES_PER_CALL]
            start = time.perf_counter()
            scores, cams = self.run(np.stack([f.tensor for f in chunk]))
            model_ms += (time.perf_counter() - start) * _MS_PER_S
            rows.extend(zip(scores, cams))
        batch = min(len(video.frames), VIDEO_FRAMES_PER_CALL)
        return self.video_result(video, rows, policy, Timing(video.decode_ms, 0.0, model_ms, batch))

    def video_result(self, video: PreparedVideo, rows: Sequence[tuple[np.ndarray, np.ndarray]], policy: Policy,
                     timing: Timing) -> ImageScore:
        """A video's result from its frames' rows of the model outputs: the worst frame's risk and evidence,
        each category's highest score over the frames, and the decision those give under ``policy``."""
        frames = [self._frame_score(f, scores, cams, policy) for f, (scores, cams) in zip(video.frames, rows)]
        worst = max(frames, key=lambda f: (f.risk, -f.time_s))
        maxima = {cid: max(f.scores[cid] for f in frames) for cid in self.info.category_ids}
        summary = VideoSummary(
            duration_s=video.duration_s, codec=video.codec, frames_in_video=video.frames_in_video,
            frames_sampled=len(frames), frames_decoded=video.frames_decoded, worst=worst,
            flagged=tuple(f for f in frames if f.decision != Decision.ALLOW),
        )
        return ImageScore(
            risk=worst.risk, decision=policy.decide(maxima), scores=maxima, evidence=worst.evidence,
            width=video.width, height=video.height, format=video.format, timing=timing, video=summary,
        )

    def _frame_score(self, frame: SampledFrame, scores: np.ndarray, cams: np.ndarray, policy: Policy) -> FrameScore:
        ids = self.info.category_ids
        by_category = {cid: round(float(s), 4) for cid, s in zip(ids, scores)}
        return FrameScore(
            number=frame.number, time_s=frame.time_s, risk=round(float(overall_risk(scores)), 4),
            decision=policy.decide(by_category), scores=by_category,
            evidence=self._evidence(scores, cams, frame.placement, policy), picture=frame.picture,
            scene_change=frame.scene_change,
        )

    def score(self, sources: Iterable[str | os.PathLike | bytes | BinaryIO], policy: Policy | None = None) -> list[ImageScore | ImageError]:
        """Score several photos in one model call; a photo that fails gets its ImageError in its place."""
        prepared: list[Prepared | PreparedVideo | ImageError] = []
        for source in sources:
            try:
                prepared.append(self.prepare(source))
            except ImageError as error:
                prepared.append(error)
        good = [p for p in prepared if not isinstance(p, ImageError)]
        scored = iter(self.score_prepared(good, policy))
        return [p if isinstance(p, ImageError) else next(scored) for p in prepared]

    def result(self, prepared: Prepared, scores: np.ndarray, cams: np.ndarray, policy: Policy, timing: Timing) -> ImageScore:
        """One photo's row of the model outputs as risk, decision and evidence under ``policy``."""
        ids = self.info.category_ids
        risk = float(overall_risk(scores))
        evidence = self._evidence(scores, cams, prepared.placement, policy)
        return ImageScore(
            risk=round(risk, 4),
            decision=policy.decide({cid: float(s) for cid, s in zip(ids, scores)}),
            scores={cid: round(float(s), 4) for cid, s in zip(ids, scores)},
            evidence=evidence,
            width=prepared.width,
            height=prepared.height,
            format=prepared.format,
            timing=timing,
        )


    def _evidence(self, scores: np.ndarray, cams: np.ndarray, placement: Placement, policy: Policy) -> list[Evidence]:
        """Boxes for the categories at or over their review threshold, strongest first."""
        ids = self.info.category_ids
        return [
            Evidence(ids[i], round(float(scores[i]), 4), evidence_box(cams[i], placement))
            for i in np.argsort(-scores)
            if policy.flags(ids[i], float(scores[i]))
        ]


def _head(source: str | os.PathLike | bytes | BinaryIO) -> bytes:
    """The first bytes of a photo or video, leaving an open file where it was."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:VIDEO_SNIFF_BYTES])
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return handle.read(VIDEO_SNIFF_BYTES)
    position = source.tell()
    head = source.read(VIDEO_SNIFF_BYTES)
    source.seek(position)
    return head


def _all_bytes(source: str | os.PathLike | bytes | BinaryIO) -> bytes | bytearray | memoryview:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return handle.read()
    return source.read()


def _byte_size(source: str | os.PathLike | bytes | BinaryIO) -> int | None:
    """Size of a photo given as bytes or a path; None for an open file (Pillow reads only what it needs)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source).nbytes
    if isinstance(source, (str, os.PathLike)):
        return os.stat(source).st_size
    return None
