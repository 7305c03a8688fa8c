"""What one running app holds, typed: settings, metrics, the scorer and the review store.

Handlers reach it through ``deps.py`` instead of reading ``request.app.state`` attributes by name, so
a reader (and a type checker) can see what every route depends on. The lifespan (``app.py``) fills
in the engine, scorer and review store once they are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request

from flexguard.inference.engine import SUPPORTED_FORMATS, Engine
from flexguard.inference.pipeline import Scorer

from .metrics import Metrics
from .rate_limit import RateLimiter
from .review.store import ReviewStore
from .schemas import Limits, VideoLimitsOut
from .settings import Settings
from .uploads import UploadLimits

# The attribute of ``app.state`` that holds the AppState: one attribute, one type.
STATE_ATTRIBUTE = "flexguard"


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    upload_limits: UploadLimits
    limits: Limits  # as GET /v1/model reports them
    engine: Engine | None = None
    scorer: Scorer | None = None
    review: ReviewStore | None = None
    rate_limiter: RateLimiter | None = None  # None: no per-key limit (the default)
    ready: bool = False  # a first inference has run (GET /readyz)
    scoring_requests: int = 0  # in progress now, body reading included (max_concurrent_requests)

    @classmethod
    def for_settings(cls, settings: Settings) -> AppState:
        return cls(
            settings=settings,
            metrics=Metrics(settings.max_batch),
            upload_limits=UploadLimits(settings.max_files, settings.max_bytes, settings.body_timeout_s,
                                       max_videos=settings.max_videos, max_video_bytes=settings.max_video_bytes),
            limits=Limits(max_files=settings.max_files, max_bytes=settings.max_bytes,
                          max_pixels=settings.max_pixels, formats=list(SUPPORTED_FORMATS),
                          video=VideoLimitsOut.of(settings.video_limits, settings.max_videos)),
            rate_limiter=(RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
                          if settings.rate_limit_per_minute > 0 else None),
        )


def attach(app: FastAPI, state: AppState) -> None:
    setattr(app.state, STATE_ATTRIBUTE, state)


def of_app(app: FastAPI) -> AppState:
    return getattr(app.state, STATE_ATTRIBUTE)


def of_request(request: Request) -> AppState:
    return of_app(request.app)
