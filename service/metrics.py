"""Prometheus metrics for one app, and the ASGI middleware that counts its requests.

Each app gets its own ``CollectorRegistry`` rather than prometheus-client's global one, so several
apps in one process (the tests) never collide and /metrics shows exactly this service's series.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flexguard.models.metadata import ModelInfo
from flexguard.models.vocabulary import DECISIONS

from .errors import CODES, ErrorCode
from .review.tables import Status

logger = logging.getLogger(__name__)
PREFIX = "flexguard"
WEBHOOK_OUTCOMES = ("delivered", "retried", "gave_up")
# Seconds; a 64-photo request on a small machine takes seconds, a single photo tens of milliseconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Requests that matched no route, or used an unusual method, share one label each, so probing random
# paths or methods cannot grow the number of series without bound.
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# Codes the framework answers for requests no flexguard route handled: not about a rejected input.
_NOT_INPUT_REJECTIONS = (ErrorCode.NOT_FOUND, ErrorCode.METHOD_NOT_ALLOWED, ErrorCode.INTERNAL_ERROR)
_SERVER_ERROR = 500


def batch_size_buckets(max_batch: int) -> tuple[float, ...]:
    """Powers of two up to ``max_batch``, and ``max_batch`` itself: how full the model calls are."""
    buckets = {max_batch}
    size = 1
    while size < max_batch:
        buckets.add(size)
        size *= 2
    return tuple(sorted(buckets))


class Metrics:
    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.model = Info(f"{PREFIX}_model", "The model being served", registry=r)
        self.requests = Counter(
            f"{PREFIX}_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds", "HTTP request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.images = Counter(f"{PREFIX}_images_scored", "Photos scored", registry=r)
        self.decisions = Counter(f"{PREFIX}_decisions", "Scored photos by decision", ["decision"], registry=r)
        self.rejected = Counter(
            f"{PREFIX}_inputs_rejected", "Photos and requests refused, by error code", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size", "Photos per onnxruntime call", buckets=batch_size_buckets(max_batch), registry=r
        )
        self.inference = Histogram(
            f"{PREFIX}_inference_duration_seconds", "Duration of one onnxruntime call", buckets=INFERENCE_BUCKETS, registry=r
        )
        self.webhook_attempts = Counter(
            f"{PREFIX}_webhook_attempts", "Webhook delivery attempts by outcome: delivered, retried later, gave up",
            ["outcome"], registry=r,
        )
        # Every label value exists from the start, so a rate() over a quiet period reads 0, not "no data".
        for decision in DECISIONS:
            self.decisions.labels(decision=decision)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_attempts.labels(outcome=outcome)
        for code in CODES:
            if code not in _NOT_INPUT_REJECTIONS:
                self.rejected.labels(reason=code)

    def set_model(self, info: ModelInfo) -> None:
        self.model.info({"name": info.name, "version": info.version, "weights_sha256": info.weights_sha256})

    def watch_review(self, count_by_status: Callable[[], dict[str, int]]) -> None:
        """Report the review database's submissions by status (the pending queue's length) at each scrape."""
        self.registry.register(_SubmissionCounts(count_by_status))

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _SubmissionCounts(Collector):
    """Read from the database when scraped, so every replica reports the same, current numbers."""

    def __init__(self, count_by_status: Callable[[], dict[str, int]]):
        self.count_by_status = count_by_status

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_review_submissions", "Supervisor-review submissions by status (pending: the queue)", labels=["status"]
        )
        try:
            counts = self.count_by_status()
        except Exception:  # the database is away: leave the series out of this scrape, keep the others
            logger.warning("cannot count review submissions for /metrics", exc_info=True)
            return
        for status in Status:
            family.add_metric([status], counts.get(status, 0))
        yield family


class MetricsMiddleware:
    """Counts every request by its route template (not its raw path), method and final status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = _SERVER_ERROR  # what the client sees if the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # The router writes the matched route into the shared scope on the way in.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - start)
