"""The stable error codes clients branch on, kept in one place.

A code appears either in one photo's result (``{"ok": false, "error": {"code", "message"}}``, the
other photos are still scored) or in the body of a whole-request error (``{"error": {"code",
"message"}}`` with a 4xx status). The OpenAPI description is built from ``CODES``, so the docs list
exactly what the service sends. The codes themselves, and their words in both languages, are
``flexguard.models.vocabulary``'s; this module adds what HTTP needs: each code's status and meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from flexguard.models.vocabulary import ErrorCode


@dataclass(frozen=True)
class CodeInfo:
    # None: the code only ever appears in one photo's result, never as a request's status.
    status: HTTPStatus | None
    meaning: str


CODES: dict[ErrorCode, CodeInfo] = {
    ErrorCode.UNSUPPORTED_FORMAT: CodeInfo(
        None, "The photo's content is in none of the supported formats (GET /v1/model lists them); the file "
              "name and the declared content type are ignored."),
    ErrorCode.DECODE_FAILED: CodeInfo(None, "The photo is in a supported format but is broken or cut short."),
    ErrorCode.TOO_MANY_PIXELS: CodeInfo(
        None, "The photo's header declares more pixels than the limit (checked before decoding), or it is a "
              "decompression bomb; for a video, its frames are over the frame limit."),
    ErrorCode.TOO_LONG: CodeInfo(
        None, "The video lasts longer than the limit, by its header (checked before decoding) or by its frames."),
    ErrorCode.TOO_LARGE: CodeInfo(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "A photo is over the byte limit, or the request body is larger than the most photos allowed could be; "
        "a video over its own byte limit gets this code in its own result, and the rest of the request is scored."),
    ErrorCode.TOO_MANY_FILES: CodeInfo(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                       "More photos, or more videos, in one request than allowed."),
    ErrorCode.NO_PHOTOS: CodeInfo(HTTPStatus.UNPROCESSABLE_ENTITY, "The request carries no photo."),
    ErrorCode.BAD_REQUEST: CodeInfo(HTTPStatus.BAD_REQUEST, "The body cannot be parsed (a broken or cut-short multipart body)."),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: CodeInfo(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "The body is neither multipart/form-data nor an image/* or video/* content type."),
    ErrorCode.INVALID_PARAMETERS: CodeInfo(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "A parameter is invalid (a threshold outside 0-1, review above block, an unknown form field)."),
    ErrorCode.UNAUTHORIZED: CodeInfo(
        HTTPStatus.UNAUTHORIZED,
        "The key is missing or wrong (the scoring routes need one when API keys are on; the review routes always do)."),
    ErrorCode.FORBIDDEN: CodeInfo(
        HTTPStatus.FORBIDDEN,
        "The key is valid but not for this: another unit's submission, or a route for another role (submit, review, admin)."),
    ErrorCode.CONFLICT: CodeInfo(
        HTTPStatus.CONFLICT,
        "The submission is no longer pending (another reviewer decided it first, or it was cleared at once), or the "
        "unit exists already."),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: CodeInfo(
        HTTPStatus.UNPROCESSABLE_ENTITY, "The Idempotency-Key was used before for a submission with other content."),
    ErrorCode.UNREADABLE_PHOTO: CodeInfo(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "A photo of a submission cannot be read (unsupported, broken or too many pixels): a post is cleared whole or not at all."),
    ErrorCode.REQUEST_TIMEOUT: CodeInfo(
        HTTPStatus.REQUEST_TIMEOUT,
        "The request body did not arrive within the body deadline (FLEXGUARD_BODY_TIMEOUT_S); a slow or stalled upload."),
    ErrorCode.OVERLOADED: CodeInfo(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "More scoring requests at once than FLEXGUARD_MAX_CONCURRENT_REQUESTS; retry after the Retry-After header's seconds."),
    ErrorCode.DATABASE_UNAVAILABLE: CodeInfo(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "The review database did not answer within FLEXGUARD_DATABASE_TIMEOUT_S (restarting, unreachable, or its "
        "file locked by another process). Nothing was changed; retry after the Retry-After header's seconds, with "
        "the same Idempotency-Key for a submission."),
    ErrorCode.RATE_LIMITED: CodeInfo(
        HTTPStatus.TOO_MANY_REQUESTS,
        "This key (or address, when API keys are off) sent more requests than FLEXGUARD_RATE_LIMIT_PER_MINUTE allows; "
        "retry after the Retry-After header's seconds. Off unless set."),
    ErrorCode.NOT_FOUND: CodeInfo(HTTPStatus.NOT_FOUND, "No such path."),
    ErrorCode.METHOD_NOT_ALLOWED: CodeInfo(HTTPStatus.METHOD_NOT_ALLOWED, "The path does not take this HTTP method."),
    ErrorCode.INTERNAL_ERROR: CodeInfo(
        HTTPStatus.INTERNAL_SERVER_ERROR, "A fault in the service, not in the request; it is logged (without the photos)."),
}


class ApiError(Exception):
    """A whole-request problem, answered with the code's HTTP status and a JSON error body."""

    def __init__(self, code: ErrorCode, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        status = CODES[code].status
        if status is None:
            raise ValueError(f"{code} is a per-photo code, not a request error")
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers  # None: the code's usual headers (error_handlers.headers_for)


# Errors the web framework raises itself, before any flexguard code runs.
_FRAMEWORK_CODES = {HTTPStatus.NOT_FOUND: ErrorCode.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED: ErrorCode.METHOD_NOT_ALLOWED}


def code_for_status(status: int) -> ErrorCode:
    """The code for an error the web framework raises itself (unknown path, wrong method, ...)."""
    fallback = ErrorCode.BAD_REQUEST if status < HTTPStatus.INTERNAL_SERVER_ERROR else ErrorCode.INTERNAL_ERROR
    return _FRAMEWORK_CODES.get(HTTPStatus(status), fallback)


def markdown_table() -> str:
    """The codes as a Markdown table, for the OpenAPI description."""
    rows = ["| code | HTTP status | meaning |", "|---|---|---|"]
    for code, info in CODES.items():
        where = f"{info.status.value} {info.status.phrase}" if info.status else "in the photo's result (request: 200)"
        rows.append(f"| `{code}` | {where} | {info.meaning} |")
    return "\n".join(rows)
