"""The REST app: a thin HTTP layer over the scoring pipeline.

It reads request bodies into memory (uploads.py), checks API keys (auth.py), scores through
pipeline.py (decoding in a thread pool, the model in the batcher, so the event loop only moves
bytes), and answers in the shapes of schemas.py with the error codes of errors.py. Photos are never
written to disk or logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from flexguard import __version__
from flexguard.models.metadata import Thresholds

from .auth import API_KEY_HEADER, KeyMiddleware, api_key_dependency
from .engine import SUPPORTED_FORMATS, Engine, ImageError
from .errors import CODES, ApiError, ErrorCode, code_for_status, markdown_table
from .metrics import Metrics, MetricsMiddleware
from .page import router as page_router
from .pipeline import Scorer
from .review.api import create_router as review_router
from .review.database import migrate, open_database
from .review.store import Principal, ReviewStore
from .review.webhooks import Deliverer, RetryPolicy
from .schemas import (
    ErrorOut,
    ErrorResponse,
    FailedImage,
    Limits,
    ModelRef,
    ModelResponse,
    ScoredImage,
    ScoreResponse,
    Status,
    ThresholdsOut,
)
from .settings import Settings, get_settings
from .uploads import PHOTO_FIELD, THRESHOLD_FIELDS, UploadLimits, read_upload

logger = logging.getLogger(__name__)
_MS_PER_S = 1000.0
REVIEW_FIELD, BLOCK_FIELD = THRESHOLD_FIELDS
# Seconds a client refused for overload is told to wait (Retry-After): a scoring request takes tens of ms.
RETRY_AFTER_S = 1
_THRESHOLD_HELP = "Overrides the model's {} threshold for this request (0-1; review must not be above block)."


def load_engine(settings: Settings) -> Engine:
    """The engine as configured: raises ModelLoadError, with one clear line, for a missing or broken model."""
    return Engine(settings.model_path, threads=settings.threads, max_pixels=settings.max_pixels, max_bytes=settings.max_bytes)


def open_review(settings: Settings) -> ReviewStore:
    """The review database, migrated to the newest schema: raises DatabaseError, with one clear line."""
    database = open_database(settings.database_url)
    migrate(database)
    return ReviewStore(database)


def create_app(settings: Settings | None = None, engine: Engine | None = None, review: ReviewStore | None = None) -> FastAPI:
    """The app; at startup it loads ``settings.model_path`` and opens ``settings.database_url`` unless given
    an already loaded ``engine`` and ``review`` store."""
    settings = settings or get_settings()
    metrics = Metrics(settings.max_batch)
    upload_limits = UploadLimits(settings.max_files, settings.max_bytes, settings.body_timeout_s)
    limits = Limits(
        max_files=settings.max_files, max_bytes=settings.max_bytes, max_pixels=settings.max_pixels,
        formats=list(SUPPORTED_FORMATS),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = engine or await run_in_threadpool(load_engine, settings)
        metrics.set_model(loaded.info)
        scorer = Scorer(
            loaded, settings.max_batch, settings.max_wait_ms / _MS_PER_S, settings.decode_threads, metrics.observe_batch
        )
        app.state.engine = loaded
        app.state.scorer = scorer
        store = review or await run_in_threadpool(open_review, settings)
        app.state.review = store
        deliverer = Deliverer(
            store,
            RetryPolicy(timedelta(seconds=settings.webhook_retry_base_s), timedelta(seconds=settings.webhook_retry_max_s),
                        settings.webhook_max_attempts),
            settings.webhook_timeout_s, settings.webhook_poll_s,
            on_attempt=lambda outcome: metrics.webhook_attempts.labels(outcome=outcome).inc(),
        )
        background = [
            asyncio.create_task(deliverer.run()),
            asyncio.create_task(_purge_periodically(store, settings)),
        ]
        # Serve (healthz, metrics) at once; readyz turns ready once a first inference has run.
        warming = asyncio.create_task(_warm_up(app, scorer))
        logger.info(
            "serving model %s %s: batches of up to %d photos within %g ms%s",
            loaded.info.name, loaded.info.version, settings.max_batch, settings.max_wait_ms,
            ", API keys required" if settings.api_key_list else "",
        )
        try:
            yield
        finally:
            app.state.ready = False
            for task in (warming, *background):
                task.cancel()
            for task in background:
                with suppress(asyncio.CancelledError):
                    await task
            await deliverer.aclose()
            scorer.close()
            if review is None:
                store.engine.dispose()

    app = FastAPI(
        title="flexguard",
        version=__version__,
        description=_description(settings),
        lifespan=lifespan,
    )
    app.state.ready = False
    # Counted at each scrape from whichever store the app has open (a restarted app opens a new one).
    metrics.watch_review(lambda: app.state.review.count_by_status())
    app.state.scoring_requests = 0  # in progress now, body reading included (max_concurrent_requests)
    if settings.api_key_list:
        # Inside CORS (a browser's preflight carries no key) and metrics; before routing and any body read.
        app.add_middleware(KeyMiddleware, keys=settings.api_key_list, refuse=lambda message: _refusal(metrics, message))
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin_list),
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, so it sees every answer
    _install_error_handlers(app, metrics)
    app.include_router(page_router)
    guarded = [Depends(api_key_dependency(settings.api_key_list))] if settings.api_key_list else []
    auth_errors = (ErrorCode.UNAUTHORIZED,) if settings.api_key_list else ()

    @app.get("/healthz", response_model=Status, tags=["operations"], summary="The process is up")
    async def healthz() -> Status:
        return Status(status="ok")

    @app.get(
        "/readyz", response_model=Status, tags=["operations"], summary="The model is loaded and warmed up",
        responses={HTTPStatus.SERVICE_UNAVAILABLE: {"model": Status, "description": "Still starting."}},
    )
    async def readyz(request: Request) -> Any:
        if request.app.state.ready:
            return Status(status="ready")
        return JSONResponse(Status(status="starting").model_dump(), status_code=HTTPStatus.SERVICE_UNAVAILABLE)

    @app.get(
        "/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response, dependencies=guarded,
        responses={
            HTTPStatus.OK: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
            **_error_responses(*auth_errors),
        },
    )
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get(
        "/v1/model", response_model=ModelResponse, dependencies=guarded, tags=["scoring"],
        summary="The model being served: taxonomy, thresholds, version, validation metrics, limits",
        responses=_error_responses(*auth_errors),
    )
    async def model(request: Request) -> ModelResponse:
        return ModelResponse.of(request.app.state.engine.info, limits)

    @app.post(
        "/v1/score", response_model=ScoreResponse, dependencies=guarded, tags=["scoring"],
        summary="Score photos for displays of wealth",
        description=(
            f"Send up to {settings.max_files} photos as multipart/form-data field `{PHOTO_FIELD}` (repeat it per "
            "photo), or one photo as the raw body with an `image/*` content type. The thresholds may be given as "
            "query parameters or, in multipart requests, as form fields. Each photo gets one entry in `results`, "
            "in input order: a photo that cannot be read gets `ok: false` and an error code while the others "
            "are scored."
        ),
        openapi_extra={"requestBody": _score_request_body(settings.max_files)},
        responses=_error_responses(
            *auth_errors, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, ErrorCode.TOO_MANY_FILES,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.NO_PHOTOS, ErrorCode.INVALID_PARAMETERS,
            ErrorCode.REQUEST_TIMEOUT, ErrorCode.OVERLOADED,
        ),
    )
    async def score(
        request: Request,
        review_threshold: float | None = Query(None, ge=0.0, le=1.0, description=_THRESHOLD_HELP.format("review")),
        block_threshold: float | None = Query(None, ge=0.0, le=1.0, description=_THRESHOLD_HELP.format("block")),
    ) -> ScoreResponse:
        async with scoring_slot(request):
            return await _score(request, review_threshold, block_threshold)

    @asynccontextmanager
    async def scoring_slot(request: Request):
        """Counts a scoring request (body reading included) in progress; refuses one over the limit."""
        # Checked and counted with no await in between (one event loop), before the body is read: a
        # request over the limit costs the server nothing but this answer.
        if request.app.state.scoring_requests >= settings.max_concurrent_requests:
            raise ApiError(
                ErrorCode.OVERLOADED,
                f"the service is handling {settings.max_concurrent_requests} scoring requests already; "
                f"retry in {RETRY_AFTER_S} s",
            )
        request.app.state.scoring_requests += 1
        try:
            yield
        finally:
            request.app.state.scoring_requests -= 1

    async def _score(request: Request, review_threshold: float | None, block_threshold: float | None) -> ScoreResponse:
        try:
            upload = await read_upload(
                request.headers.get("content-type"), request.headers.get("content-length"), request.stream(), upload_limits
            )
        except ClientDisconnect:  # the client gave up mid-upload: an ordinary event, not a server fault
            raise ApiError(ErrorCode.BAD_REQUEST, "the client closed the connection before sending the whole body") from None
        scorer: Scorer = request.app.state.scorer
        info = scorer.engine.info
        thresholds = _thresholds(
            info.thresholds, {REVIEW_FIELD: review_threshold, BLOCK_FIELD: block_threshold}, upload.fields
        )
        results = await scorer.score(upload.photos, thresholds)
        for result in results:
            if isinstance(result, ImageError):
                metrics.rejected.labels(reason=result.code).inc()
            else:
                metrics.images.inc()
                metrics.decisions.labels(decision=result.decision).inc()
        return ScoreResponse(
            model=ModelRef(name=info.name, version=info.version),
            thresholds=ThresholdsOut.of(thresholds),
            results=[
                FailedImage.of(r) if isinstance(r, ImageError) else ScoredImage.of(r, info.categories) for r in results
            ],
        )

    app.include_router(review_router(upload_limits, scoring_slot, _error_responses))
    return app


async def _purge_periodically(store: ReviewStore, settings: Settings) -> None:
    """Deletes decided submissions' photos once their retention is over, every purge interval."""
    retention = timedelta(days=settings.photo_retention_days)
    while True:
        try:
            report = await run_in_threadpool(store.purge, Principal.service(), retention)
            if report.photos:
                logger.info("purge: deleted %d photos of %d decided submissions", report.photos, report.submissions)
        except Exception:  # the database may be briefly away: try again next time, never stop purging
            logger.exception("purge failed")
        await asyncio.sleep(settings.purge_interval_s)


async def _warm_up(app: FastAPI, scorer: Scorer) -> None:
    try:
        await scorer.warm_up()
    except Exception:  # a model that cannot run stays unready, and says why in the log
        logger.exception("warm-up inference failed; /readyz stays unready")
        return
    app.state.ready = True


def _thresholds(model: Thresholds, query: dict[str, float | None], form: dict[str, str]) -> Thresholds:
    """The model's thresholds with the request's overrides (query parameters or form fields) applied."""
    given = {name: value for name, value in query.items() if value is not None}
    for name, text in form.items():
        if name in given:
            raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{name} is given both as a query parameter and a form field")
        given[name] = _parse_fraction(name, text)
    review = given.get(REVIEW_FIELD, model.review)
    block = given.get(BLOCK_FIELD, model.block)
    if review > block:
        whose = {name: "" if name in given else " (the model's)" for name in THRESHOLD_FIELDS}
        raise ApiError(
            ErrorCode.INVALID_PARAMETERS,
            f"{REVIEW_FIELD} {review}{whose[REVIEW_FIELD]} must not be above {BLOCK_FIELD} {block}{whose[BLOCK_FIELD]}",
        )
    return Thresholds(review, block)


def _parse_fraction(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{name} must be a number from 0 to 1, not {text.strip()!r}")
    return value


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error answer has the same JSON body: ``{"error": {"code", "message"}}``."""

    def answer(code: ErrorCode, message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
        body = ErrorResponse(error=ErrorOut(code=code, message=message), detail=message)
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        metrics.rejected.labels(reason=error.code).inc()
        # RFC 9110: a 401 names the scheme that would work.
        return answer(error.code, error.message, error.status, _headers_for(error.code))

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
        metrics.rejected.labels(reason=ErrorCode.INVALID_PARAMETERS).inc()
        # loc is ("query", "review_threshold"): the parameter's name is what the caller knows.
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in error.errors())
        return answer(ErrorCode.INVALID_PARAMETERS, problems, HTTPStatus.UNPROCESSABLE_ENTITY)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return answer(code_for_status(error.status_code), str(error.detail), error.status_code, error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # The server logs the traceback (uvicorn does, once this answer is sent); the client gets no details.
        return answer(
            ErrorCode.INTERNAL_ERROR, "the service failed to handle this request", HTTPStatus.INTERNAL_SERVER_ERROR
        )


def _headers_for(code: ErrorCode) -> dict[str, str] | None:
    if code == ErrorCode.UNAUTHORIZED:
        return {"WWW-Authenticate": "Bearer"}  # RFC 9110: a 401 names the scheme that would work
    if code == ErrorCode.OVERLOADED:
        return {"Retry-After": str(RETRY_AFTER_S)}
    if code == ErrorCode.REQUEST_TIMEOUT:
        # The rest of a too-slow body is not worth waiting for: uvicorn closes the connection, so a
        # slowloris-style client that keeps trickling cannot keep even its socket.
        return {"Connection": "close"}
    return None


def _refusal(metrics: Metrics, message: str) -> JSONResponse:
    """The 401 answer of KeyMiddleware, in the same shape as every other error."""
    metrics.rejected.labels(reason=ErrorCode.UNAUTHORIZED).inc()
    body = ErrorResponse(error=ErrorOut(code=ErrorCode.UNAUTHORIZED, message=message), detail=message)
    return JSONResponse(body.model_dump(), status_code=HTTPStatus.UNAUTHORIZED, headers=_headers_for(ErrorCode.UNAUTHORIZED))


def _error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers of a route, grouped by status."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in codes:
        by_status[CODES[code].status].append(f"`{code}`: {CODES[code].meaning}")
    return {status: {"model": ErrorResponse, "description": " ".join(lines)} for status, lines in by_status.items()}


def _score_request_body(max_files: int) -> dict[str, Any]:
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
                        REVIEW_FIELD: {**fraction, "description": _THRESHOLD_HELP.format("review")},
                        BLOCK_FIELD: {**fraction, "description": _THRESHOLD_HELP.format("block")},
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary", "description": "One photo as the raw body."}},
        },
    }


def _description(settings: Settings) -> str:
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
