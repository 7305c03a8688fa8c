"""Optional API keys, for every route but the health checks and the try-it page's static shell.

Off unless FLEXGUARD_API_KEYS lists keys, so local use needs no set-up. A key may come in the
``X-API-Key`` header or as ``Authorization: Bearer <key>``. Both sides are hashed (SHA-256) and the
digests compared with every configured key in constant time (``hmac.compare_digest``), so response
times reveal neither how much of a guess was right, nor which key matched, nor a key's length.

``KeyMiddleware`` enforces the keys on every path except ``PUBLIC_PATHS`` (``/healthz``, ``/readyz``
for the orchestrator; ``/`` and ``/static/*``, the page shell, which holds no data and cannot send a
header when a browser loads it; its own calls to /v1 send the key typed into it; the same for the
reviewer page ``/review``, and the icon at ``/favicon.ico``) and the supervisor-review routes, which
always need a per-unit key of their own, checked against the review database (deps.Caller). It runs before
routing and before any body is read. The /v1 routes also declare the key as a dependency, so the
OpenAPI document describes it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Awaitable, Callable, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from flexguard.models.wire import API_KEY_HEADER

from .errors import ApiError, ErrorCode

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/review", "/favicon.ico"})
# The page shells, and the supervisor-review routes, which check their own per-unit keys (review/api.py).
PUBLIC_PREFIXES = ("/static/", "/v1/submissions", "/v1/webhook", "/v1/admin/", "/v1/me", "/v1/summary")
MISSING_KEY_MESSAGE = f"an API key is needed: send it in the {API_KEY_HEADER} header or as Authorization: Bearer <key>"
WRONG_KEY_MESSAGE = "the API key is not valid"
_BEARER = "bearer"

# auto_error=False: a missing key is answered by flexguard's own 401 body, not the framework's.
_header_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey", description="An API key from FLEXGUARD_API_KEYS."
)
_bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="Bearer", description="The same API key, as `Authorization: Bearer <key>`."
)


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def key_matches(presented: str, keys: Sequence[bytes]) -> bool:
    # Equal-length digests: compare_digest would otherwise return early on a length mismatch.
    candidate = _digest(presented)
    # Compare with every key, never stopping early, so the time taken does not depend on which matched.
    matches = [hmac.compare_digest(candidate, _digest(key)) for key in keys]
    return any(matches)


def presented_key(headers: Headers) -> str | None:
    """The key a request carries in X-API-Key or Authorization: Bearer, if any."""
    key = headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == _BEARER and credentials.strip():
        return credentials.strip()
    return None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class KeyMiddleware:
    """Refuses, with ``refuse(message)``'s response, every non-public request without a valid key."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], refuse: Callable[[str], ASGIApp]):
        if not keys:
            raise ValueError("KeyMiddleware needs at least one key")
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_key(Headers(scope=scope))
        if presented is None:
            await self.refuse(MISSING_KEY_MESSAGE)(scope, receive, send)
        elif not key_matches(presented, self.keys):
            await self.refuse(WRONG_KEY_MESSAGE)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def presented_key_dependency(
    header_key: str | None = Security(_header_scheme),
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer_scheme),
) -> str:
    """The key a request carries (for routes that check keys against something else); 401 without one."""
    presented = header_key or (bearer.credentials if bearer else None)
    if not presented:
        raise ApiError(ErrorCode.UNAUTHORIZED, MISSING_KEY_MESSAGE)
    return presented


def api_key_dependency(keys: Sequence[str]) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses a request without one of ``keys`` (which must not be empty)."""
    if not keys:
        raise ValueError("api_key_dependency needs at least one key")
    encoded = [key.encode() for key in keys]

    async def require_api_key(presented: str = Depends(presented_key_dependency)) -> None:
        if not key_matches(presented, encoded):
            raise ApiError(ErrorCode.UNAUTHORIZED, WRONG_KEY_MESSAGE)

    return require_api_key
