"""Telling upload tools the decision: signed POSTs to the URL their key registered, retried with backoff.

The decision and its delivery row are written in one transaction (``store.decide``), so a crash
cannot lose a delivery; this loop only sends what is due. A delivery counts as done when the
receiver answers 2xx; otherwise it is retried after ``base``, 2×``base``, 4×``base``... (capped at
``max_delay``) until ``max_attempts``, then given up; every attempt is recorded on the delivery and
the end (delivered or given up) in the audit trail. Delivery is at least once: a receiver should
skip a ``X-Flexguard-Delivery`` id it has seen.

Signature (as Stripe and GitHub do it): ``X-Flexguard-Signature: t=<unix seconds>,v1=<hex>``, the
hex being HMAC-SHA256 with the registered secret over ``"<t>.<body>"``; a receiver recomputes it and
rejects old ``t`` to stop replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import httpx
from starlette.concurrency import run_in_threadpool

from flexguard import __version__

from .database import is_unavailable
from .store import DeliveryJob, ReviewStore
from .tables import utcnow

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Flexguard-Signature"
DELIVERY_HEADER = "X-Flexguard-Delivery"
SIGNATURE_VERSION = "v1"
# Deliveries sent per round; more wait for the next round, a poll interval later.
BATCH = 20
_SUCCESS = range(200, 300)


@dataclass(frozen=True)
class RetryPolicy:
    base: timedelta
    max_delay: timedelta
    max_attempts: int

    def next_delay(self, attempts_made: int) -> timedelta | None:
        """The wait before the next attempt after ``attempts_made`` failures, or None to give up."""
        if attempts_made >= self.max_attempts:
            return None
        return min(self.base * 2 ** (attempts_made - 1), self.max_delay)


def sign(secret: str, timestamp: int, body: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={digest}"


def verify(secret: str, header: str, body: str, tolerance_s: float, now: float | None = None) -> bool:
    """What a receiver does: check the signature and that it is recent (the reference for the README)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body)
    fresh = abs((now if now is not None else time.time()) - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, header)


class Deliverer:
    """Sends due deliveries every ``poll_s`` seconds until ``stop``."""

    def __init__(self, store: ReviewStore, policy: RetryPolicy, timeout_s: float, poll_s: float,
                 on_attempt: Callable[[str], None] = lambda outcome: None):
        self.store = store
        self.on_attempt = on_attempt  # told "delivered", "retried" or "gave_up" after each attempt
        self.policy = policy
        self.poll_s = poll_s
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                         headers={"User-Agent": f"flexguard/{__version__}"})
        # A claimed delivery is not handed to another worker until the attempt must be over.
        self._lease = timedelta(seconds=timeout_s * 2)

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception as error:  # the database may be briefly away; try again next round, never die
                if is_unavailable(error):  # expected during a restart: a line per round, not a traceback
                    logger.warning("webhook round skipped: the review database is unavailable")
                else:
                    logger.exception("webhook round failed")
            await asyncio.sleep(self.poll_s)

    async def deliver_due(self) -> int:
        jobs = await run_in_threadpool(self.store.claim_deliveries, utcnow(), self._lease, BATCH)
        await asyncio.gather(*(self._attempt(job) for job in jobs))
        return len(jobs)

    async def _attempt(self, job: DeliveryJob) -> None:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(job.secret, int(time.time()), job.body),
            DELIVERY_HEADER: str(job.id),
        }
        status: int | None = None
        try:
            response = await self._client.post(job.url, content=job.body.encode(), headers=headers)
            status = response.status_code
            # The status only, never the receiver's body: the submitter reads this record, and the URL is
            # theirs to choose, so echoing bodies would let a key read pages it could only point at.
            error = None if status in _SUCCESS else f"HTTP {status}"
        except httpx.HTTPError as failure:
            error = type(failure).__name__  # ConnectError, ReadTimeout, ...: what went wrong, not what was there
        delay = None if error is None else self.policy.next_delay(job.attempts + 1)
        retry_at = utcnow() + delay if delay is not None else None
        if error is not None:
            logger.warning("webhook delivery %d to %s failed (attempt %d): %s", job.id, job.url, job.attempts + 1, error)
        await run_in_threadpool(self.store.record_delivery, job, status, error, retry_at)
        self.on_attempt("delivered" if error is None else "retried" if retry_at is not None else "gave_up")

    async def aclose(self) -> None:
        await self._client.aclose()
