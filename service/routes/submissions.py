"""Supervisor review for upload tools and reviewers: submit a post, read the queue, see a photo, decide.

Every route needs a per-unit key from the review database (``deps.Caller`` and the role types); the
store does the work in the thread pool and raises its refusals, which the app's handlers answer with
their codes (404, 403, 409, 422). Scoring a submission goes through the same pipeline as /v1/score.
"""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from flexguard.inference.engine import ImageError
from flexguard.models.policy import Policy
from flexguard.models.vocabulary import ErrorCode
from flexguard.models.wire import PHOTO_FIELD

from ..deps import Caller, Review, ReviewRate, ScorerDep, ScoringSlot, State, SubmitKey
from ..errors import ApiError
from ..openapi import error_responses
from ..review.photos import viewable
from ..review.schemas import (
    SUBMISSIONS_ROUTE,
    DecisionIn,
    Identity,
    SubmissionCreated,
    SubmissionList,
    SubmissionOut,
    SummaryOut,
    WebhookIn,
    WebhookOut,
)
from ..review.store import Draft, Principal, ScoredPhoto
from ..review.summary import DAYS_PER_WEEK, DEFAULT_WEEKS, MAX_WEEKS, summarise, week_start
from ..review.tables import Role, Status, utcnow
from ..uploads import Upload, UploadLimits, read_request

ACCOUNT_FIELD, CAPTION_FIELD, UNIT_FIELD = "account", "caption", "unit"
# Byte limits of the text fields: an account name, a caption (Instagram allows 2,200 characters, up to
# 4 bytes each in UTF-8), a unit id.
SUBMISSION_FIELDS = {ACCOUNT_FIELD: 200, CAPTION_FIELD: 2200 * 4, UNIT_FIELD: 64}
MAX_IDEMPOTENCY_KEY_CHARS = 200
DEFAULT_PAGE, MAX_PAGE = 50, 200
IDEMPOTENCY_HEADER = "Idempotency-Key"
_WEBHOOK_SCHEMES = ("http://", "https://")
# Every review route takes a key and parameters: a missing key, another unit's data or a malformed
# parameter are possible everywhere.
KEY_ERRORS = (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.INVALID_PARAMETERS, ErrorCode.RATE_LIMITED,
              ErrorCode.DATABASE_UNAVAILABLE)
SUBMIT_ERRORS = (
    *KEY_ERRORS, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, ErrorCode.TOO_MANY_FILES, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.NO_PHOTOS, ErrorCode.UNREADABLE_PHOTO, ErrorCode.IDEMPOTENCY_KEY_REUSED, ErrorCode.REQUEST_TIMEOUT,
    ErrorCode.OVERLOADED,
)
DECISION_ERRORS = error_responses(*KEY_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT)

# Every route counts against its key's rate limit, when one is set (FLEXGUARD_RATE_LIMIT_PER_MINUTE).
router = APIRouter(prefix="/v1", tags=["review"], dependencies=[ReviewRate])


@router.get("/me", response_model=Identity, summary="Who this key is: its role, unit and label",
            responses=error_responses(*KEY_ERRORS))
async def me(principal: Caller) -> Identity:
    return Identity(prefix=principal.prefix, role=principal.role, unit=principal.unit, label=principal.label)


@router.post(
    "/submissions", response_model=SubmissionCreated, status_code=HTTPStatus.CREATED,
    summary="Submit a post for clearance (submit key)",
    description=(
        f"multipart/form-data: the photos as `{PHOTO_FIELD}` (repeat per photo), `{ACCOUNT_FIELD}` (the account "
        f"posting), `{CAPTION_FIELD}`, and optionally `{UNIT_FIELD}` (must be the key's unit). Every photo is "
        "scored; if all are `allow` the post is `cleared` at once and nothing is stored, otherwise it is "
        "`pending` for the unit's reviewers and its flagged photos are kept until the purge after the decision. "
        f"Send an `{IDEMPOTENCY_HEADER}` header (any unique string per post) so a retry after a lost answer "
        "finds the same submission (200, `replayed: true`) instead of making a second one."
    ),
    responses={HTTPStatus.OK: {"model": SubmissionCreated, "description": "A repeat of an earlier request (same Idempotency-Key)."},
               **error_responses(*SUBMIT_ERRORS)},
)
async def submit(
    request: Request, state: State, scorer: ScorerDep, store: Review, principal: SubmitKey, _slot: ScoringSlot,
    idempotency_key: Annotated[str | None, Header(
        alias=IDEMPOTENCY_HEADER, max_length=MAX_IDEMPOTENCY_KEY_CHARS,
        description="A unique string per post; a retry with it is answered, not stored again.")] = None,
) -> Any:
    draft = await _scored_draft(request, state, scorer, store, principal, idempotency_key)
    created = SubmissionCreated.of(await run_in_threadpool(store.submit, principal, draft))
    status = HTTPStatus.OK if created.replayed else HTTPStatus.CREATED
    return JSONResponse(created.model_dump(mode="json"), status_code=status,
                        headers={"Location": f"{SUBMISSIONS_ROUTE}/{created.id}"})


async def _scored_draft(request: Request, state: State, scorer: ScorerDep, store: Review, principal: Principal,
                        idempotency_key: str | None) -> Draft:
    """The post as sent, every photo scored under the unit's policy; a photo that cannot be read refuses the post."""
    upload = await read_request(request, _submission_limits(state.upload_limits))
    account, caption = _post_fields(upload, principal)
    info = scorer.engine.info
    # The unit's own thresholds per category over the model's (checked when the admin set them).
    policy = Policy.with_overrides(info.thresholds, await run_in_threadpool(store.unit_policy, principal.unit))
    results = await scorer.score(upload.photos, policy)
    failed = [f"photo {i + 1}: {r.message} ({r.code})" for i, r in enumerate(results) if isinstance(r, ImageError)]
    if failed:
        raise ApiError(ErrorCode.UNREADABLE_PHOTO, "; ".join(failed))
    photos = [ScoredPhoto(bytes(photo), b"", "", result) for photo, result in zip(upload.photos, results)]
    if any(photo.flagged for photo in photos):
        # A post with a flagged photo waits for its reviewers, who see all of its photos: each needs a copy a
        # browser can show. A post cleared at once keeps nothing, so it needs none.
        for index, photo in enumerate(photos):
            kept, media_type = await run_in_threadpool(viewable, photo.data, photo.score)
            photos[index] = ScoredPhoto(photo.data, kept, media_type, photo.score)
    return Draft(account=account, caption=caption, model=info, policy=policy,
                 idempotency_key=idempotency_key, photos=photos)


def _submission_limits(limits: UploadLimits) -> UploadLimits:
    """The scoring limits, with the submission's text fields allowed besides the photos."""
    return UploadLimits(limits.max_files, limits.max_bytes, limits.body_timeout_s, SUBMISSION_FIELDS,
                        limits.max_videos, limits.max_video_bytes)


def _post_fields(upload: Upload, principal: Principal) -> tuple[str, str]:
    """The account and caption of a post; the unit, if given, must be the key's."""
    account = upload.fields.get(ACCOUNT_FIELD, "").strip()
    if not account:
        raise ApiError(ErrorCode.INVALID_PARAMETERS, f"'{ACCOUNT_FIELD}' is required: the account the post is for")
    unit = upload.fields.get(UNIT_FIELD, "").strip()
    if unit and unit != principal.unit:
        raise ApiError(ErrorCode.FORBIDDEN, f"this key submits for unit {principal.unit!r}, not {unit!r}")
    return account, upload.fields.get(CAPTION_FIELD, "")


@router.get("/submissions", response_model=SubmissionList,
            summary="A unit's queue (review key), one's own submissions (submit key), or all (admin key)",
            responses=error_responses(*KEY_ERRORS))
async def list_submissions(
    store: Review, principal: Caller,
    status: Annotated[Status | None, Query(description="Only these.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Most submissions in this page.")] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, description="Submissions to skip (for the next page).")] = 0,
) -> SubmissionList:
    rows, total = await run_in_threadpool(store.list_submissions, principal, status, limit, offset)
    return SubmissionList(submissions=[SubmissionOut.of(row) for row in rows], total=total)


@router.get("/summary", response_model=SummaryOut,
            summary="The unit at a glance: posts per week by outcome, flags per category, time to decision, "
                    "false-alarm rate from reviewers' labels (review key: its unit; admin key: all or `unit`)",
            responses=error_responses(*KEY_ERRORS))
async def summary(
    store: Review, principal: Caller,
    weeks: Annotated[int, Query(ge=1, le=MAX_WEEKS, description="How many weeks, this one included.")] = DEFAULT_WEEKS,
    unit: Annotated[str | None, Query(description="Admin key only: this unit's summary.")] = None,
) -> SummaryOut:
    if unit is not None and principal.role != Role.ADMIN:
        raise ApiError(ErrorCode.FORBIDDEN, "only an admin key chooses the unit; a review key sees its own")
    first = week_start(utcnow()) - timedelta(days=DAYS_PER_WEEK * (weeks - 1))
    facts = await run_in_threadpool(store.summary_facts, principal, unit, first)
    return SummaryOut.of(principal.unit or unit, summarise(facts, first, weeks))


@router.get("/submissions/{submission_id}", response_model=SubmissionOut,
            summary="One submission: its status, photos, scores, evidence and decision",
            responses=error_responses(*KEY_ERRORS, ErrorCode.NOT_FOUND))
async def get_submission(store: Review, submission_id: str, principal: Caller) -> SubmissionOut:
    return SubmissionOut.of(await run_in_threadpool(store.get, principal, submission_id))


@router.get(
    "/submissions/{submission_id}/photos/{position}", response_class=Response,
    summary="A stored (flagged) photo of a submission (review key of its unit)",
    responses={HTTPStatus.OK: {"content": {"image/*": {}}, "description": "The photo as sent."},
               **error_responses(*KEY_ERRORS, ErrorCode.NOT_FOUND)},
)
async def get_photo(store: Review, submission_id: str, position: Annotated[int, Path(ge=0)],
                    principal: Caller) -> Response:
    media_type, data = await run_in_threadpool(store.photo, principal, submission_id, position)
    # Never cached: the photo is deleted after the decision, and so should every copy be.
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})


@router.post("/submissions/{submission_id}/approve", response_model=SubmissionOut,
             summary="Approve a pending submission (review key of its unit)", responses=DECISION_ERRORS)
async def approve(store: Review, submission_id: str, principal: Caller, body: DecisionIn = DecisionIn()) -> SubmissionOut:
    return SubmissionOut.of(await run_in_threadpool(store.decide, principal, submission_id, True, body.comment,
                                                    body.photo_labels()))


@router.post("/submissions/{submission_id}/reject", response_model=SubmissionOut,
             summary="Reject a pending submission, saying why (review key of its unit)", responses=DECISION_ERRORS)
async def reject(store: Review, submission_id: str, principal: Caller, body: DecisionIn) -> SubmissionOut:
    return SubmissionOut.of(await run_in_threadpool(store.decide, principal, submission_id, False, body.comment,
                                                    body.photo_labels()))


@router.put("/webhook", response_model=WebhookOut,
            summary="Register where decisions on this key's submissions are POSTed (submit key)",
            responses=error_responses(*KEY_ERRORS))
async def put_webhook(store: Review, body: WebhookIn, principal: SubmitKey) -> WebhookOut:
    if not body.url.startswith(_WEBHOOK_SCHEMES):
        raise ApiError(ErrorCode.INVALID_PARAMETERS, f"the webhook URL must start with http:// or https://, not {body.url!r}")
    secret = await run_in_threadpool(store.set_webhook, principal, body.url)
    return WebhookOut(url=body.url, secret=secret)


@router.delete("/webhook", status_code=HTTPStatus.NO_CONTENT, summary="Stop webhooks for this key",
               responses=error_responses(*KEY_ERRORS, ErrorCode.NOT_FOUND))
async def delete_webhook(store: Review, principal: SubmitKey) -> Response:
    await run_in_threadpool(store.remove_webhook, principal)
    return Response(status_code=HTTPStatus.NO_CONTENT)
