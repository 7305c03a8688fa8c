"""Every error answer, in one shape: ``{"error": {"code", "message"}, "detail"}`` with the code's status.

``error_response`` builds it (for the handlers below and for the key middleware's 401); ``install``
registers the handlers: flexguard's own ``ApiError``, the review workflow's refusals (a missing
submission is 404, another unit's is 403, ...), FastAPI's parameter validation, the framework's own
404/405, and anything unexpected (500, no details to the client).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from flexguard.models.vocabulary import ErrorCode

from .deps import RETRY_AFTER_S
from .errors import CODES, ApiError, code_for_status
from .metrics import Metrics
from .review.database import is_unavailable
from .review.store import Conflict, Forbidden, IdempotencyKeyReused, Invalid, NotFound, ReviewError
from .schemas import ErrorOut, ErrorResponse

logger = logging.getLogger(__name__)
# A driver's message can quote a whole statement; the log line keeps its start.
MAX_LOGGED_CHARS = 300
# The review workflow's refusals and their codes; the most specific class first.
REVIEW_ERROR_CODES: tuple[tuple[type[ReviewError], ErrorCode], ...] = (
    (NotFound, ErrorCode.NOT_FOUND),
    (Forbidden, ErrorCode.FORBIDDEN),
    (Conflict, ErrorCode.CONFLICT),
    (IdempotencyKeyReused, ErrorCode.IDEMPOTENCY_KEY_REUSED),
    (Invalid, ErrorCode.INVALID_PARAMETERS),
)


def headers_for(code: ErrorCode) -> dict[str, str] | None:
    if code == ErrorCode.UNAUTHORIZED:
        return {"WWW-Authenticate": "Bearer"}  # RFC 9110: a 401 names the scheme that would work
    if code in (ErrorCode.OVERLOADED, ErrorCode.DATABASE_UNAVAILABLE):
        return {"Retry-After": str(RETRY_AFTER_S)}
    if code == ErrorCode.REQUEST_TIMEOUT:
        # The rest of a too-slow body is not worth waiting for: uvicorn closes the connection, so a
        # slowloris-style client that keeps trickling cannot keep even its socket.
        return {"Connection": "close"}
    return None


def error_response(code: ErrorCode, message: str, status: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body; the status is the code's own unless given (framework errors keep theirs)."""
    body = ErrorResponse(error=ErrorOut(code=code, message=message), detail=message)
    status = status if status is not None else CODES[code].status
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or headers_for(code))


def review_error_code(error: ReviewError) -> ErrorCode:
    return next(code for kind, code in REVIEW_ERROR_CODES if isinstance(error, kind))


def install(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        metrics.rejected.labels(reason=error.code).inc()
        return error_response(error.code, error.message, headers=error.headers)

    @app.exception_handler(ReviewError)
    async def review_error(request: Request, error: ReviewError) -> JSONResponse:
        code = review_error_code(error)
        metrics.rejected.labels(reason=code).inc()
        return error_response(code, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
        metrics.rejected.labels(reason=ErrorCode.INVALID_PARAMETERS).inc()
        # loc is ("query", "review_threshold"): the parameter's name is what the caller knows.
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in error.errors())
        return error_response(ErrorCode.INVALID_PARAMETERS, problems)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(code_for_status(error.status_code), str(error.detail), error.status_code, error.headers)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, error: SQLAlchemyError) -> JSONResponse:
        if not is_unavailable(error):
            return await internal_error(request, error)
        # Expected while the database restarts: one line, not a traceback per request.
        logger.warning("review database unavailable (%s: %s); answered 503", type(error).__name__,
                       " ".join(str(getattr(error, "orig", None) or error).split())[:MAX_LOGGED_CHARS])
        metrics.rejected.labels(reason=ErrorCode.DATABASE_UNAVAILABLE).inc()
        return error_response(ErrorCode.DATABASE_UNAVAILABLE,
                              "the review database is not reachable right now; nothing was changed, retry shortly")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # The server logs the traceback (uvicorn does, once this answer is sent); the client gets no details.
        return error_response(ErrorCode.INTERNAL_ERROR, "the service failed to handle this request",
                              HTTPStatus.INTERNAL_SERVER_ERROR)
