"""Optional API keys, for the /v1 routes.

Off unless FLEXGUARD_API_KEYS lists keys, so local use needs no set-up. A key may come in the
``X-API-Key`` header or as ``Authorization: Bearer <key>``. It is compared with every configured key
in constant time (``hmac.compare_digest``), so response times reveal neither how much of a guess was
right nor which key matched.
"""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable, Sequence

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError, ErrorCode

API_KEY_HEADER = "X-API-Key"

# auto_error=False: a missing key is answered by flexguard's own 401 body, not the framework's.
_header_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, scheme_name="ApiKey", description="An API key from FLEXGUARD_API_KEYS."
)
_bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="Bearer", description="The same API key, as `Authorization: Bearer <key>`."
)


def key_matches(presented: str, keys: Sequence[bytes]) -> bool:
    candidate = presented.encode()
    # Compare with every key, never stopping early, so the time taken does not depend on which matched.
    matches = [hmac.compare_digest(candidate, key) for key in keys]
    return any(matches)


def api_key_dependency(keys: Sequence[str]) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that refuses a request without one of ``keys`` (which must not be empty)."""
    if not keys:
        raise ValueError("api_key_dependency needs at least one key")
    encoded = [key.encode() for key in keys]

    async def require_api_key(
        header_key: str | None = Security(_header_scheme),
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer_scheme),
    ) -> None:
        presented = header_key or (bearer.credentials if bearer else None)
        if not presented:
            raise ApiError(
                ErrorCode.UNAUTHORIZED,
                f"an API key is needed: send it in the {API_KEY_HEADER} header or as Authorization: Bearer <key>",
            )
        if not key_matches(presented, encoded):
            raise ApiError(ErrorCode.UNAUTHORIZED, "the API key is not valid")

    return require_api_key
