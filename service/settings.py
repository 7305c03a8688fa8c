"""Deployment settings (paths, limits, batching, keys, network), read from ``FLEXGUARD_*`` environment variables.

Only what differs between deployments lives here; what belongs to the model (categories, input size,
thresholds) is read from the model file. Built on first use, not at import.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flexguard.models import DEFAULT_VARIANT, shipped_model_path

from flexguard.inference.engine import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from flexguard.inference.video import (
    DEFAULT_EVERY_S,
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_VIDEO_BYTES,
    VideoLimits,
)
from .review.database import DEFAULT_DATABASE_TIMEOUT_S, DEFAULT_DATABASE_URL

ENV_PREFIX = "FLEXGUARD_"
DEFAULT_PORT = 8000
DEFAULT_MAX_FILES = 64
# Videos in one request: each may be 100 MB and is held in memory while its frames are sampled.
DEFAULT_MAX_VIDEOS = 2
# Under load a model call gathers up to 16 photos, sharing its fixed costs; a photo arriving alone
# waits at most 5 ms for company, little next to the model's own tens of milliseconds.
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_WAIT_MS = 5.0
# Scoring requests in progress at once (reading their bodies included); more get 503 + Retry-After
# straight away instead of queueing without bound. 64 requests of a few photos keep 2-16 cores busy.
DEFAULT_MAX_CONCURRENT_REQUESTS = 64
# A request's whole body must arrive within this many seconds: a 25 MB photo needs ~4 s at 50 Mbit/s,
# a stalled or slowloris-style upload is cut off rather than holding its slot for ever.
DEFAULT_BODY_TIMEOUT_S = 60.0
# uvicorn closes an idle keep-alive connection after this many seconds.
DEFAULT_KEEP_ALIVE_S = 5
_LIST_SEPARATOR = ","
# With a rate limit on, a caller may send this many requests at once (an upload tool retrying a batch),
# then keeps to the per-minute rate.
DEFAULT_RATE_LIMIT_BURST = 10
# Supervisor review. Photos of decided submissions are kept a week for questions about the decision,
# then deleted; the purge looks hourly, so a photo outlives its retention by at most an hour.
DEFAULT_PHOTO_RETENTION_DAYS = 7.0
DEFAULT_PURGE_INTERVAL_S = 3600.0
# A post nobody decides within a month expires: its photos go at once. So no photo is kept longer than
# 30 days pending + 7 days after the decision + one purge interval (SECURITY.md).
DEFAULT_PENDING_EXPIRY_DAYS = 30.0
# A unit that consents keeps its reviewer-labelled photos for the data team up to three months: time for
# a quarterly retrain to export them (SECURITY.md).
DEFAULT_TRAINING_RETENTION_DAYS = 90.0
# Webhook retries: 30 s, 1, 2, 4, 8, 16, 32 min, then hourly, 10 attempts in all (~3.1 h of trying).
DEFAULT_WEBHOOK_RETRY_BASE_S = 30.0
DEFAULT_WEBHOOK_RETRY_MAX_S = 3600.0
DEFAULT_WEBHOOK_MAX_ATTEMPTS = 10
DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
# How often due deliveries are looked for: a decision reaches the tool within about a second.
DEFAULT_WEBHOOK_POLL_S = 1.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, protected_namespaces=())

    model_path: Path | None = Field(None, description="ONNX model to serve; default: the shipped model of model_variant")
    model_variant: Literal["fp32", "int8"] = Field(
        DEFAULT_VARIANT, description="which shipped model to serve when model_path is unset: int8 (the default: as fast as the single-backbone "
                    "model it replaced) or fp32 (ROC-AUC within 0.005, 1.5x the CPU per photo)"
    )
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 to serve other machines")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    threads: int | None = Field(None, ge=1, description="onnxruntime threads; default: the cores this process may use")
    decode_threads: int | None = Field(None, ge=1, description="photos decoded at once; default: the cores this process may use")
    max_batch: int = Field(DEFAULT_MAX_BATCH, ge=1, description="most photos in one model call")
    max_wait_ms: float = Field(DEFAULT_MAX_WAIT_MS, ge=0, description="how long a photo waits for others to share its model call")
    max_files: int = Field(DEFAULT_MAX_FILES, ge=1, description="most photos in one request")
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, description="largest photo, in bytes")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="largest photo, in pixels (read from its header)")
    max_videos: int = Field(DEFAULT_MAX_VIDEOS, ge=0, description="most videos in one request; 0: videos are refused")
    max_video_bytes: int = Field(DEFAULT_MAX_VIDEO_BYTES, ge=1, description="largest video, in bytes")
    max_video_seconds: float = Field(DEFAULT_MAX_DURATION_S, gt=0, description="longest video, in seconds (read from its header)")
    max_video_frame_pixels: int = Field(
        DEFAULT_MAX_FRAME_PIXELS, ge=1, description="largest video frame, in pixels (read from its header)")
    video_frames: int = Field(DEFAULT_MAX_FRAMES, ge=1, description="most frames of a video scored")
    video_every_s: float = Field(DEFAULT_EVERY_S, gt=0, description="seconds between the frames of a video scored (scene changes are added)")
    max_concurrent_requests: int = Field(
        DEFAULT_MAX_CONCURRENT_REQUESTS, ge=1,
        description="most scoring requests in progress at once; more get 503 with Retry-After",
    )
    body_timeout_s: float = Field(
        DEFAULT_BODY_TIMEOUT_S, gt=0, description="seconds a request's whole body may take to arrive; slower ones get 408"
    )
    keep_alive_s: int = Field(DEFAULT_KEEP_ALIVE_S, ge=1, description="seconds an idle keep-alive connection stays open")
    rate_limit_per_minute: float = Field(
        0.0, ge=0,
        description="requests a minute per API key (per address when keys are off) on /v1/score, and per review key "
                    "on /v1/submissions; more get 429 with Retry-After; 0: no limit",
    )
    rate_limit_burst: int = Field(
        DEFAULT_RATE_LIMIT_BURST, ge=1, description="requests a caller may send at once before the per-minute rate applies"
    )
    # Comma-separated rather than JSON lists, so `FLEXGUARD_API_KEYS=key1,key2` works as written.
    api_keys: SecretStr = Field(SecretStr(""), description="comma-separated API keys; empty: no key needed")
    cors_origins: str = Field("", description="comma-separated origins allowed to call the API from a browser")
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="the supervisor-review database: sqlite:///path/file.db (default: flexguard.db in the working "
                    "directory) or postgresql://user:password@host/db (needs flexguard[postgres])",
    )
    database_timeout_s: float = Field(
        DEFAULT_DATABASE_TIMEOUT_S, gt=0,
        description="seconds a review request waits for the database (a SQLite lock held by another process, a "
                    "PostgreSQL connection) before it is answered 503 database_unavailable with Retry-After",
    )
    photo_retention_days: float = Field(
        DEFAULT_PHOTO_RETENTION_DAYS, ge=0, description="days a decided submission's stored photos are kept before the purge"
    )
    purge_interval_s: float = Field(DEFAULT_PURGE_INTERVAL_S, gt=0, description="seconds between the service's purge runs")
    training_retention_days: float = Field(
        DEFAULT_TRAINING_RETENTION_DAYS, ge=0,
        description="in a unit with training consent, days the photos its reviewers labelled are kept for the data "
                    "team after the decision, unless exported sooner",
    )
    training_export_dir: Path = Field(
        Path("training-exports"),
        description="where POST /v1/admin/training-export writes its batches (one folder each, by name)",
    )
    pending_expiry_days: float = Field(
        DEFAULT_PENDING_EXPIRY_DAYS, gt=0,
        description="days a submission may stay pending; then it expires and its stored photos are deleted",
    )
    webhook_retry_base_s: float = Field(DEFAULT_WEBHOOK_RETRY_BASE_S, gt=0, description="wait before a failed webhook's first retry; doubles per retry")
    webhook_retry_max_s: float = Field(DEFAULT_WEBHOOK_RETRY_MAX_S, gt=0, description="longest wait between webhook retries")
    webhook_max_attempts: int = Field(DEFAULT_WEBHOOK_MAX_ATTEMPTS, ge=1, description="webhook attempts before giving up")
    webhook_timeout_s: float = Field(DEFAULT_WEBHOOK_TIMEOUT_S, gt=0, description="seconds a webhook receiver has to answer")
    webhook_poll_s: float = Field(DEFAULT_WEBHOOK_POLL_S, gt=0, description="seconds between looks for due webhook deliveries")

    @model_validator(mode="after")
    def _default_model(self) -> "Settings":
        if self.model_path is None:
            self.model_path = shipped_model_path(self.model_variant)
        return self

    @property
    def video_limits(self) -> VideoLimits:
        return VideoLimits(max_bytes=self.max_video_bytes, max_duration_s=self.max_video_seconds,
                           max_frame_pixels=self.max_video_frame_pixels, max_frames=self.video_frames,
                           every_s=self.video_every_s)

    @property
    def api_key_list(self) -> tuple[str, ...]:
        return _split(self.api_keys.get_secret_value())

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _split(self.cors_origins)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(_LIST_SEPARATOR) if part.strip())


def explain(error: ValidationError) -> str:
    """A settings error in one line, naming the environment variables to fix."""
    problems = [f"{ENV_PREFIX}{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()]
    return "invalid settings: " + "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
