"""Per-key request rates for the routes that cost the most: ``/v1/score`` and ``/v1/submissions``.

Off by default (``FLEXGUARD_RATE_LIMIT_PER_MINUTE=0``). When on, every caller has a token bucket: it
holds up to ``FLEXGUARD_RATE_LIMIT_BURST`` requests and refills at the per-minute rate, so a tool may
send a burst and then keeps to the rate. A request with an empty bucket gets 429 ``rate_limited`` with
``Retry-After``, the seconds until the next token, before its body is read.

Who a caller is: on ``/v1/score``, the API key it sent (by digest, never the key itself), or its
address when API keys are off; on the review routes, its review-database key. The buckets live in
the process (each replica counts its own callers) and run on the event loop, so they need no lock.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

SECONDS_PER_MINUTE = 60.0
# Full buckets are forgotten once there are this many callers: a full bucket is what a new caller gets
# anyway, so forgetting it changes nothing, and the table stays bounded however many keys or addresses call.
MAX_TRACKED_CALLERS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: float, burst: int, clock=time.monotonic):
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = per_minute / SECONDS_PER_MINUTE
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def wait_s(self, caller: str) -> int:
        """Take one request from ``caller``'s bucket: 0 if allowed, else the whole seconds until it would be."""
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            self._forget_full(now)
            bucket = self._buckets[caller] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate_per_s))

    def _forget_full(self, now: float) -> None:
        if len(self._buckets) < MAX_TRACKED_CALLERS:
            return
        full_after_s = self.burst / self.rate_per_s
        self._buckets = {caller: bucket for caller, bucket in self._buckets.items() if now - bucket.updated < full_after_s}


def caller_of_key(key: str) -> str:
    """A caller's name for a key: its digest, so no key is held in memory longer than the request."""
    return "key:" + hashlib.sha256(key.encode()).hexdigest()
