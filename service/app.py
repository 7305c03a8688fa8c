"""The REST app: wires settings, the lifespan (model, scorer, review store, background jobs) and the routers.

The routes live in ``routes/`` (score, operations, pages, submissions, admin), their dependencies in
``deps.py``, the error answers in ``error_handlers.py`` and the API's words in ``openapi.py``. Photos
are read in memory (``uploads``), scored by ``flexguard.inference`` and never written to disk or logged.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, suppress
from datetime import timedelta

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from flexguard import __version__
from flexguard.inference.engine import Engine
from flexguard.inference.pipeline import Scorer
from flexguard.models.vocabulary import ErrorCode
from flexguard.models.wire import API_KEY_HEADER

from . import error_handlers
from .auth import KeyMiddleware, api_key_dependency
from .metrics import MetricsMiddleware
from .openapi import description, error_responses
from .review.database import is_unavailable, migrate, open_database
from .review.store import Principal, ReviewStore
from .review.webhooks import Deliverer, RetryPolicy
from .routes import admin, docs, operations, pages, score, submissions
from .settings import Settings, get_settings
from .state import AppState, attach, of_app

logger = logging.getLogger(__name__)
_MS_PER_S = 1000.0


def load_engine(settings: Settings) -> Engine:
    """The engine as configured: raises ModelLoadError, with one clear line, for a missing or broken model."""
    return Engine(settings.model_path, threads=settings.threads, max_pixels=settings.max_pixels, max_bytes=settings.max_bytes,
                  video_limits=settings.video_limits)


def open_review(settings: Settings) -> ReviewStore:
    """The review database, migrated to the newest schema: raises DatabaseError, with one clear line."""
    database = open_database(settings.database_url, settings.database_timeout_s)
    migrate(database)
    return ReviewStore(database)


def create_app(settings: Settings | None = None, engine: Engine | None = None, review: ReviewStore | None = None) -> FastAPI:
    """The app; at startup it loads ``settings.model_path`` and opens ``settings.database_url`` unless given
    an already loaded ``engine`` and ``review`` store."""
    settings = settings or get_settings()
    state = AppState.for_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with _serving(state, engine, review):
            yield

    # /docs is served by routes.docs, from files the service holds (no CDN); no ReDoc (it needs a CDN).
    app = FastAPI(title="flexguard", version=__version__, description=description(settings), lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    attach(app, state)
    # Counted at each scrape from whichever store the app has open (a restarted app opens a new one).
    state.metrics.watch_review(lambda: of_app(app).review.count_by_status())
    _add_middleware(app, state)
    error_handlers.install(app, state.metrics)
    keys = settings.api_key_list
    guarded = [Depends(api_key_dependency(keys))] if keys else []
    auth_errors = error_responses(ErrorCode.UNAUTHORIZED) if keys else {}
    app.include_router(pages.router)
    app.include_router(docs.router)
    app.include_router(operations.health)
    app.include_router(operations.guarded, dependencies=guarded, responses=auth_errors)
    app.include_router(score.router(settings.max_files), dependencies=guarded, responses=auth_errors)
    app.include_router(submissions.router)
    app.include_router(admin.router)
    return app


def _add_middleware(app: FastAPI, state: AppState) -> None:
    settings = state.settings
    if settings.api_key_list:
        # Inside CORS (a browser's preflight carries no key) and metrics; before routing and any body read.
        app.add_middleware(KeyMiddleware, keys=settings.api_key_list, refuse=lambda message: _refusal(state, message))
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origin_list),
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # added last: outermost, so it sees every answer


def _refusal(state: AppState, message: str) -> JSONResponse:
    """The 401 answer of KeyMiddleware, in the same shape as every other error."""
    state.metrics.rejected.labels(reason=ErrorCode.UNAUTHORIZED).inc()
    return error_handlers.error_response(ErrorCode.UNAUTHORIZED, message)


@asynccontextmanager
async def _serving(state: AppState, engine: Engine | None, review: ReviewStore | None):
    """Load the model and the review store, start the background jobs; undo it all on the way out."""
    settings = state.settings
    loaded = engine or await run_in_threadpool(load_engine, settings)
    state.metrics.set_model(loaded.info)
    scorer = Scorer(loaded, settings.max_batch, settings.max_wait_ms / _MS_PER_S, settings.decode_threads,
                    state.metrics.observe_batch)
    store = review or await run_in_threadpool(open_review, settings)
    state.engine, state.scorer, state.review = loaded, scorer, store
    deliverer = Deliverer(
        store,
        RetryPolicy(timedelta(seconds=settings.webhook_retry_base_s), timedelta(seconds=settings.webhook_retry_max_s),
                    settings.webhook_max_attempts),
        settings.webhook_timeout_s, settings.webhook_poll_s,
        on_attempt=lambda outcome: state.metrics.webhook_attempts.labels(outcome=outcome).inc(),
    )
    background = [asyncio.create_task(deliverer.run()), asyncio.create_task(_purge_periodically(store, settings))]
    # Serve (healthz, metrics) at once; readyz turns ready once a first inference has run.
    warming = asyncio.create_task(_warm_up(state, scorer))
    logger.info(
        "serving model %s %s: batches of up to %d photos within %g ms%s",
        loaded.info.name, loaded.info.version, settings.max_batch, settings.max_wait_ms,
        ", API keys required" if settings.api_key_list else "",
    )
    try:
        yield
    finally:
        state.ready = False
        for task in (warming, *background):
            task.cancel()
        for task in background:
            with suppress(asyncio.CancelledError):
                await task
        await deliverer.aclose()
        scorer.close()
        if review is None:
            store.engine.dispose()


async def _purge_periodically(store: ReviewStore, settings: Settings) -> None:
    """Every purge interval: expires submissions pending too long, and deletes decided submissions'
    photos once their retention is over."""
    retention = timedelta(days=settings.photo_retention_days)
    training_retention = timedelta(days=settings.training_retention_days)
    max_pending = timedelta(days=settings.pending_expiry_days)
    while True:
        try:
            expired = await run_in_threadpool(store.expire, Principal.service(), max_pending)
            if expired:
                logger.info("expiry: %d submissions pending over %g days expired", expired, settings.pending_expiry_days)
            report = await run_in_threadpool(store.purge, Principal.service(), retention, training_retention)
            if report.photos or report.training_photos:
                logger.info("purge: deleted %d photos of %d decided submissions (%d kept for training) and %d "
                            "training photos past their retention", report.photos, report.submissions,
                            report.kept_for_training, report.training_photos)
        except Exception as error:  # the database may be briefly away: try again next time, never stop purging
            if is_unavailable(error):
                logger.warning("purge skipped: the review database is unavailable; trying again in %g s",
                               settings.purge_interval_s)
            else:
                logger.exception("purge failed")
        await asyncio.sleep(settings.purge_interval_s)


async def _warm_up(state: AppState, scorer: Scorer) -> None:
    try:
        await scorer.warm_up()
    except Exception:  # a model that cannot run stays unready, and says why in the log
        logger.exception("warm-up inference failed; /readyz stays unready")
        return
    state.ready = True
