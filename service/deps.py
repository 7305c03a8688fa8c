"""The routes' dependencies, as FastAPI ``Annotated`` types: what each handler needs, named once.

``State``, ``ScorerDep`` and ``Review`` hand out the app's parts; ``Caller`` is the holder of a review
key, and ``SubmitKey`` and ``AdminKey`` require its role (a review key's routes are checked by the
store, which also tells another unit's reviewer from a wrong role); ``ScoringSlot`` counts a
scoring request in progress and refuses one over the limit (503 ``overloaded``, before the body is read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from flexguard.inference.pipeline import Scorer
from flexguard.models.vocabulary import ErrorCode

from .auth import presented_key, presented_key_dependency
from .errors import ApiError
from .rate_limit import caller_of_key
from .review.store import Principal, ReviewStore, require_role
from .review.tables import Role
from .state import AppState, of_request

# Seconds a client refused for overload is told to wait (Retry-After): a scoring request takes tens of ms.
RETRY_AFTER_S = 1


def _state(request: Request) -> AppState:
    return of_request(request)


State = Annotated[AppState, Depends(_state)]


def _scorer(state: State) -> Scorer:
    assert state.scorer is not None, "the lifespan sets the scorer before the app serves"
    return state.scorer


def _review(state: State) -> ReviewStore:
    assert state.review is not None, "the lifespan opens the review store before the app serves"
    return state.review


ScorerDep = Annotated[Scorer, Depends(_scorer)]
Review = Annotated[ReviewStore, Depends(_review)]


async def _caller(store: Review, key: Annotated[str, Depends(presented_key_dependency)]) -> Principal:
    principal = await run_in_threadpool(store.authenticate, key)
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "the key is not a valid review key (unknown or revoked)")
    return principal


Caller = Annotated[Principal, Depends(_caller)]


def _with_role(role: Role) -> Callable[..., Any]:
    async def require(principal: Caller) -> Principal:
        require_role(principal, role)  # the store's one role check; its Forbidden becomes a 403
        return principal

    return require


SubmitKey = Annotated[Principal, Depends(_with_role(Role.SUBMIT))]
AdminKey = Annotated[Principal, Depends(_with_role(Role.ADMIN))]


async def _scoring_slot(state: State) -> AsyncIterator[None]:
    # Checked and counted with no await in between (one event loop), before the body is read: a
    # request over the limit costs the server nothing but this answer.
    limit = state.settings.max_concurrent_requests
    if state.scoring_requests >= limit:
        raise ApiError(ErrorCode.OVERLOADED,
                       f"the service is handling {limit} scoring requests already; retry in {RETRY_AFTER_S} s")
    state.scoring_requests += 1
    try:
        yield
    finally:
        state.scoring_requests -= 1


ScoringSlot = Annotated[None, Depends(_scoring_slot)]


def _within_rate(state: AppState, caller: str) -> None:
    if state.rate_limiter is None:
        return
    wait_s = state.rate_limiter.wait_s(caller)
    if wait_s:
        raise ApiError(ErrorCode.RATE_LIMITED,
                       f"over {state.settings.rate_limit_per_minute:g} requests a minute for this key; retry in {wait_s} s",
                       headers={"Retry-After": str(wait_s)})


async def _score_rate(request: Request, state: State) -> None:
    key = presented_key(request.headers)
    host = request.client.host if request.client else "unknown"
    _within_rate(state, caller_of_key(key) if key else f"address:{host}")


async def _review_rate(state: State, principal: Caller) -> None:
    _within_rate(state, f"review-key:{principal.key_id}")


# Checked before the body is read. Score takes it before its concurrency slot, the review routes after the key.
ScoreRate = Annotated[None, Depends(_score_rate)]
ReviewRate = Depends(_review_rate)
