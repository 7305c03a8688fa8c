"""For operators and clients that need to know what runs: health, readiness, metrics, the model."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from flexguard.models.wire import MODEL_ROUTE

from ..deps import ScorerDep, State
from ..schemas import ModelResponse, Readiness, Status

# Never behind a key: the orchestrator probes them.
health = APIRouter(tags=["operations"])
# Behind the API keys when they are on (service.app).
guarded = APIRouter()


@health.get("/healthz", response_model=Status, summary="The process is up")
async def healthz() -> Status:
    return Status(status="ok")


@health.get("/readyz", response_model=Readiness, summary="The model is loaded and warmed up; how the review database is",
            responses={HTTPStatus.SERVICE_UNAVAILABLE: {"model": Readiness, "description": "Still starting."}})
async def readyz(state: State) -> Any:
    database = None
    if state.review is not None:
        database = "ok" if await run_in_threadpool(state.review.reachable) else "unavailable"
    if state.ready:
        return Readiness(status="ready", database=database)
    return JSONResponse(Readiness(status="starting", database=database).model_dump(),
                        status_code=HTTPStatus.SERVICE_UNAVAILABLE)


@guarded.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
             responses={HTTPStatus.OK: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
async def prometheus_metrics(state: State) -> Response:
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


@guarded.get(MODEL_ROUTE, response_model=ModelResponse, tags=["scoring"],
             summary="The model being served: taxonomy, thresholds, version, validation metrics, limits")
async def model(state: State, scorer: ScorerDep) -> ModelResponse:
    return ModelResponse.of(scorer.engine.info, state.limits)
