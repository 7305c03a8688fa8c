"""``POST /v1/score``: photos in, one result per photo out (risk, decision, categories, evidence).

Reads the body in memory (``uploads``), applies the request's threshold overrides to the model's,
scores through the pipeline (decoding in its pool, the model in its batcher) and counts the outcome.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Query, Request

from flexguard.inference.engine import ImageError
from flexguard.models.metadata import Thresholds
from flexguard.models.policy import Policy
from flexguard.models.taxonomy import CATEGORY_IDS
from flexguard.models.vocabulary import ErrorCode
from flexguard.models.wire import (
    BLOCK_THRESHOLD_FIELD,
    PHOTO_FIELD,
    REVIEW_THRESHOLD_FIELD,
    SCORE_ROUTE,
    THRESHOLD_FIELDS,
    category_field,
)

from ..deps import ScoreRate, ScorerDep, ScoringSlot, State
from ..errors import ApiError
from ..openapi import THRESHOLD_HELP, error_responses, score_request_body
from ..schemas import FailedImage, ModelRef, ScoredImage, ScoreResponse, ThresholdsOut
from ..uploads import read_request

SCORE_ERRORS = (
    ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, ErrorCode.TOO_MANY_FILES, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.NO_PHOTOS, ErrorCode.INVALID_PARAMETERS, ErrorCode.REQUEST_TIMEOUT, ErrorCode.OVERLOADED,
    ErrorCode.RATE_LIMITED,
)


def router(max_files: int) -> APIRouter:
    """The scoring route; ``max_files`` goes into its documentation."""
    routes = APIRouter(tags=["scoring"])
    routes.add_api_route(
        SCORE_ROUTE, score, methods=["POST"], response_model=ScoreResponse,
        summary="Score photos for displays of wealth",
        description=(
            f"Send up to {max_files} photos as multipart/form-data field `{PHOTO_FIELD}` (repeat it per "
            "photo), or one photo as the raw body with an `image/*` content type. The thresholds may be given as "
            "query parameters or, in multipart requests, as form fields; so may one category's own, as "
            "`review_threshold[luxury_travel]` and `block_threshold[luxury_travel]` (a photo's decision is then the "
            "most severe its categories give). Each photo gets one entry in `results`, "
            "in input order: a photo that cannot be read gets `ok: false` and an error code while the others "
            "are scored."
        ),
        openapi_extra={"requestBody": score_request_body(max_files)},
        responses=error_responses(*SCORE_ERRORS),
    )
    return routes


async def score(
    request: Request, state: State, scorer: ScorerDep, _rate: ScoreRate, _slot: ScoringSlot,
    review_threshold: float | None = Query(None, ge=0.0, le=1.0, description=THRESHOLD_HELP.format("review")),
    block_threshold: float | None = Query(None, ge=0.0, le=1.0, description=THRESHOLD_HELP.format("block")),
) -> ScoreResponse:
    upload = await read_request(request, state.upload_limits)
    info = scorer.engine.info
    general = {name: value for name, value in upload.fields.items() if name in THRESHOLD_FIELDS}
    thresholds = _thresholds(
        info.thresholds, {REVIEW_THRESHOLD_FIELD: review_threshold, BLOCK_THRESHOLD_FIELD: block_threshold}, general
    )
    policy = Policy(thresholds, _category_thresholds(thresholds, dict(request.query_params), upload.fields))
    results = await scorer.score(upload.photos, policy)
    metrics = state.metrics
    for result in results:
        if isinstance(result, ImageError):
            metrics.rejected.labels(reason=result.code).inc()
        else:
            metrics.images.inc()
            metrics.decisions.labels(decision=result.decision).inc()
    return ScoreResponse(
        model=ModelRef.of(info),
        thresholds=ThresholdsOut.of(thresholds),
        category_thresholds={category: ThresholdsOut.of(own) for category, own in policy.overrides.items()},
        results=[FailedImage.of(r) if isinstance(r, ImageError) else ScoredImage.of(r, info.categories) for r in results],
    )


def _thresholds(model: Thresholds, query: dict[str, float | None], form: dict[str, str]) -> Thresholds:
    """The model's thresholds with the request's overrides (query parameters or form fields) applied."""
    given = {name: value for name, value in query.items() if value is not None}
    for name, text in form.items():
        if name in given:
            raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{name} is given both as a query parameter and a form field")
        given[name] = _parse_fraction(name, text)
    review = given.get(REVIEW_THRESHOLD_FIELD, model.review)
    block = given.get(BLOCK_THRESHOLD_FIELD, model.block)
    if review > block:
        whose = {name: "" if name in given else " (the model's)" for name in THRESHOLD_FIELDS}
        raise ApiError(
            ErrorCode.INVALID_PARAMETERS,
            f"{REVIEW_THRESHOLD_FIELD} {review}{whose[REVIEW_THRESHOLD_FIELD]} must not be above "
            f"{BLOCK_THRESHOLD_FIELD} {block}{whose[BLOCK_THRESHOLD_FIELD]}",
        )
    return Thresholds(review, block)


def _category_thresholds(default: Thresholds, query: dict[str, str], form: dict[str, str]) -> dict[str, Thresholds]:
    """The categories given thresholds of their own (``review_threshold[luxury_travel]``...), each completed
    from ``default``; an unknown category or a review above its block is refused."""
    bracketed = {name: text for name, text in [*query.items(), *form.items()] if name.endswith("]") and "[" in name}
    known = {category_field(field, category): (field, category) for field in THRESHOLD_FIELDS for category in CATEGORY_IDS}
    unknown = sorted(set(bracketed) - set(known))
    if unknown:
        raise ApiError(ErrorCode.INVALID_PARAMETERS, f"unknown category threshold {unknown[0]!r}: the categories are "
                                                     f"{', '.join(CATEGORY_IDS)}")
    if set(bracketed) & set(query) & set(form):
        raise ApiError(ErrorCode.INVALID_PARAMETERS, "a category threshold is given both as a query parameter and a form field")
    given: dict[str, dict[str, float]] = {}
    for name, text in bracketed.items():
        field, category = known[name]
        given.setdefault(category, {})[field] = _parse_fraction(name, text)
    overrides = {}
    for category, values in given.items():
        review = values.get(REVIEW_THRESHOLD_FIELD, default.review)
        block = values.get(BLOCK_THRESHOLD_FIELD, default.block)
        if review > block:
            raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{category}: review threshold {review} must not be above its "
                                                         f"block threshold {block}")
        overrides[category] = Thresholds(review, block)
    return overrides


def _parse_fraction(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ApiError(ErrorCode.INVALID_PARAMETERS, f"{name} must be a number from 0 to 1, not {text.strip()!r}")
    return value
