"""The OpenAPI document's words: the service description, each route's error answers, the score body.

Kept apart from the routes so a handler reads as what it does, and so the docs are built from the
same tables the service answers from (``errors.CODES``, the settings' limits).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flexguard.inference.engine import SUPPORTED_FORMATS
from flexguard.models.vocabulary import ErrorCode
from flexguard.models.wire import API_KEY_HEADER, BLOCK_THRESHOLD_FIELD, PHOTO_FIELD, REVIEW_THRESHOLD_FIELD

from .errors import CODES, markdown_table
from .schemas import ErrorResponse
from .settings import Settings

THRESHOLD_HELP = "Overrides the model's {} threshold for this request (0-1; review must not be above block)."


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers of a route, grouped by status."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        by_status[CODES[code].status].append(f"`{code}`: {CODES[code].meaning}")
    return {status: {"model": ErrorResponse, "description": " ".join(lines)} for status, lines in by_status.items()}


def score_request_body(max_files: int) -> dict[str, Any]:
    fraction = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [PHOTO_FIELD],
                    "properties": {
                        PHOTO_FIELD: {
                            "type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": max_files,
                            "description": "The photos; the format is detected from the content, not the file name.",
                        },
                        REVIEW_THRESHOLD_FIELD: {**fraction, "description": THRESHOLD_HELP.format("review")},
                        BLOCK_THRESHOLD_FIELD: {**fraction, "description": THRESHOLD_HELP.format("block")},
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary", "description": "One photo as the raw body."}},
        },
    }


def description(settings: Settings) -> str:
    return f"""Scores photos for displays of wealth (luxury cars, designer bags, jewellery and watches, luxury
travel) before they are posted.

**Photos** are read in memory and never written to disk or logged. Formats (detected from the content,
not the file name): {', '.join(SUPPORTED_FORMATS)} (HEIF covers iPhone HEIC; GIF and animated WebP are
scored on their first frame). Limits: {settings.max_files} photos per request, {settings.max_bytes} bytes
and {settings.max_pixels} pixels per photo; a request's body must arrive within {settings.body_timeout_s:g} s;
at most {settings.max_concurrent_requests} scoring requests at once (more get 503 `overloaded` with `Retry-After`).

**API keys**: when the service is started with `FLEXGUARD_API_KEYS=key1,key2`, every route except `/healthz`,
`/readyz` and the try-it page's static shell (`/`, `/static/*`) needs one of the keys (this document and
`/metrics` included), in the `{API_KEY_HEADER}` header or as `Authorization: Bearer <key>`. Without it, no key is needed.
This deployment: {"keys required" if settings.api_key_list else "no key needed"}.

**Errors**: every error answer is `{{"error": {{"code", "message"}}, "detail"}}` (`detail` repeats the
message, as FastAPI's default error body has it); a photo that cannot be scored gets
`{{"ok": false, "error": {{"code", "message"}}}}` in its place in `results`. The codes:

{markdown_table()}
"""
