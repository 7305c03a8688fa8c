"""The supervisor-review routes: a thin HTTP layer over ``store`` and the scoring pipeline.

Every route needs a per-unit key from the review database (``X-API-Key`` or ``Authorization:
Bearer``); what a key may do follows from its role: submit keys send posts and read their own,
review keys read and decide their unit's, admin keys manage units and keys and export the audit.
The database calls are synchronous and run in the thread pool; scoring runs in the pipeline.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from datetime import datetime
from http import HTTPStatus
from typing import Any, Callable, Iterator, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import ClientDisconnect

from ..auth import presented_key_dependency
from ..engine import ImageError
from ..errors import ApiError, ErrorCode
from ..pipeline import Scorer
from ..schemas import ModelRef, ScoredImage
from ..uploads import PHOTO_FIELD, UploadLimits, read_upload
from .schemas import (
    AuditEventOut,
    DecisionIn,
    Identity,
    KeyIn,
    KeyOut,
    NewKey,
    SubmissionCreated,
    SubmissionList,
    SubmissionOut,
    UnitIn,
    UnitOut,
    WebhookIn,
    WebhookOut,
)
from .photos import viewable
from .store import ALLOW, Conflict, Draft, Forbidden, IdempotencyKeyReused, Invalid, NotFound, Principal, ReviewStore, ScoredPhoto
from .tables import Role, Status

ACCOUNT_FIELD, CAPTION_FIELD, UNIT_FIELD = "account", "caption", "unit"
# Byte limits of the text fields: an account name, a caption (Instagram allows 2,200 characters, up to
# 4 bytes each in UTF-8), a unit id.
SUBMISSION_FIELDS = {ACCOUNT_FIELD: 200, CAPTION_FIELD: 2200 * 4, UNIT_FIELD: 64}
MAX_IDEMPOTENCY_KEY_CHARS = 200
DEFAULT_PAGE, MAX_PAGE = 50, 200
IDEMPOTENCY_HEADER = "Idempotency-Key"
_WEBHOOK_SCHEMES = ("http://", "https://")
AUDIT_COLUMNS = ("id", "at", "action", "actor", "unit", "submission_id", "details")


@contextmanager
def _as_api_errors() -> Iterator[None]:
    """The workflow's refusals as API errors with their stable codes."""
    try:
        yield
    except NotFound as error:
        raise ApiError(ErrorCode.NOT_FOUND, str(error)) from None
    except Forbidden as error:
        raise ApiError(ErrorCode.FORBIDDEN, str(error)) from None
    except Conflict as error:
        raise ApiError(ErrorCode.CONFLICT, str(error)) from None
    except IdempotencyKeyReused as error:
        raise ApiError(ErrorCode.IDEMPOTENCY_KEY_REUSED, str(error)) from None
    except Invalid as error:
        raise ApiError(ErrorCode.INVALID_PARAMETERS, str(error)) from None


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    with _as_api_errors():
        return await run_in_threadpool(function, *args)


def _store(request: Request) -> ReviewStore:
    return request.app.state.review


async def current_principal(request: Request, key: str = Depends(presented_key_dependency)) -> Principal:
    principal = await run_in_threadpool(_store(request).authenticate, key)
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "the key is not a valid review key (unknown or revoked)")
    return principal


def _role(role: Role) -> Callable[..., Any]:
    async def require(principal: Principal = Depends(current_principal)) -> Principal:
        if principal.role != role:
            raise ApiError(ErrorCode.FORBIDDEN, f"this needs a {role.value} key, not a {principal.role.value} key")
        return principal

    return require


def create_router(upload_limits: UploadLimits, scoring_slot: Callable[[Request], Any], responses: Callable[..., dict]) -> APIRouter:
    """The review routes; ``scoring_slot`` is the app's guard on scoring requests in progress."""
    router = APIRouter(prefix="/v1")
    limits = UploadLimits(upload_limits.max_files, upload_limits.max_bytes, upload_limits.body_timeout_s, SUBMISSION_FIELDS)
    # Every review route takes a key and parameters: a missing key, another unit's data or a malformed
    # parameter are possible everywhere.
    auth = (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.INVALID_PARAMETERS)

    @router.get("/me", response_model=Identity, tags=["review"], summary="Who this key is: its role, unit and label",
                responses=responses(*auth))
    async def me(principal: Principal = Depends(current_principal)) -> Identity:
        return Identity(prefix=principal.prefix, role=principal.role.value, unit=principal.unit, label=principal.label)

    @router.post(
        "/submissions", response_model=SubmissionCreated, status_code=HTTPStatus.CREATED, tags=["review"],
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
                   **responses(*auth, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, ErrorCode.TOO_MANY_FILES,
                               ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.NO_PHOTOS, ErrorCode.INVALID_PARAMETERS,
                               ErrorCode.UNREADABLE_PHOTO, ErrorCode.IDEMPOTENCY_KEY_REUSED, ErrorCode.REQUEST_TIMEOUT,
                               ErrorCode.OVERLOADED)},
    )
    async def submit(
        request: Request,
        principal: Principal = Depends(_role(Role.SUBMIT)),
        idempotency_key: str | None = Header(None, alias=IDEMPOTENCY_HEADER, max_length=MAX_IDEMPOTENCY_KEY_CHARS,
                                             description="A unique string per post; a retry with it is answered, not stored again."),
    ) -> Any:
        async with scoring_slot(request):
            try:
                upload = await read_upload(request.headers.get("content-type"), request.headers.get("content-length"),
                                           request.stream(), limits)
            except ClientDisconnect:
                raise ApiError(ErrorCode.BAD_REQUEST, "the client closed the connection before sending the whole body") from None
            fields = upload.fields
            account = fields.get(ACCOUNT_FIELD, "").strip()
            if not account:
                raise ApiError(ErrorCode.INVALID_PARAMETERS, f"'{ACCOUNT_FIELD}' is required: the account the post is for")
            unit = fields.get(UNIT_FIELD, "").strip()
            if unit and unit != principal.unit:
                raise ApiError(ErrorCode.FORBIDDEN, f"this key submits for unit {principal.unit!r}, not {unit!r}")
            scorer: Scorer = request.app.state.scorer
            info = scorer.engine.info
            results = await scorer.score(upload.photos, info.thresholds)
        failed = [f"photo {i + 1}: {r.message} ({r.code})" for i, r in enumerate(results) if isinstance(r, ImageError)]
        if failed:
            raise ApiError(ErrorCode.UNREADABLE_PHOTO, "; ".join(failed))
        photos = []
        for photo, result in zip(upload.photos, results):
            # Only flagged photos are kept, so only they need a copy a browser can show.
            kept, media_type = (await run_in_threadpool(viewable, bytes(photo), result.format)
                                if result.decision != ALLOW else (b"", ""))
            photos.append(ScoredPhoto(bytes(photo), kept, media_type, ScoredImage.of(result, info.categories)))
        draft = Draft(
            account=account, caption=fields.get(CAPTION_FIELD, ""), model=ModelRef(name=info.name, version=info.version),
            thresholds=info.thresholds, idempotency_key=idempotency_key, photos=photos,
        )
        created: SubmissionCreated = await _call(_store(request).submit, principal, draft)
        status = HTTPStatus.OK if created.replayed else HTTPStatus.CREATED
        return JSONResponse(created.model_dump(mode="json"), status_code=status,
                            headers={"Location": f"/v1/submissions/{created.id}"})

    @router.get(
        "/submissions", response_model=SubmissionList, tags=["review"],
        summary="A unit's queue (review key), one's own submissions (submit key), or all (admin key)",
        responses=responses(*auth, ErrorCode.INVALID_PARAMETERS),
    )
    async def list_submissions(
        request: Request,
        principal: Principal = Depends(current_principal),
        status: Literal["cleared", "pending", "approved", "rejected"] | None = Query(None, description="Only these."),
        limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Most submissions in this page."),
        offset: int = Query(0, ge=0, description="Submissions to skip (for the next page)."),
    ) -> SubmissionList:
        rows, total = await _call(_store(request).list_submissions, principal, Status(status) if status else None, limit, offset)
        return SubmissionList(submissions=rows, total=total)

    @router.get(
        "/submissions/{submission_id}", response_model=SubmissionOut, tags=["review"],
        summary="One submission: its status, photos, scores, evidence and decision",
        responses=responses(*auth, ErrorCode.NOT_FOUND),
    )
    async def get_submission(request: Request, submission_id: str, principal: Principal = Depends(current_principal)) -> SubmissionOut:
        return await _call(_store(request).get, principal, submission_id)

    @router.get(
        "/submissions/{submission_id}/photos/{position}", tags=["review"], response_class=Response,
        summary="A stored (flagged) photo of a submission (review key of its unit)",
        responses={HTTPStatus.OK: {"content": {"image/*": {}}, "description": "The photo as sent."},
                   **responses(*auth, ErrorCode.NOT_FOUND)},
    )
    async def get_photo(
        request: Request, submission_id: str, position: int = Path(ge=0),
        principal: Principal = Depends(current_principal),
    ) -> Response:
        media_type, data = await _call(_store(request).photo, principal, submission_id, position)
        # Never cached: the photo is deleted after the decision, and so should every copy be.
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})

    async def decide(request: Request, submission_id: str, principal: Principal, body: DecisionIn, approve: bool) -> SubmissionOut:
        return await _call(_store(request).decide, principal, submission_id, approve, body.comment)

    decision_errors = responses(*auth, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT, ErrorCode.INVALID_PARAMETERS)

    @router.post("/submissions/{submission_id}/approve", response_model=SubmissionOut, tags=["review"],
                 summary="Approve a pending submission (review key of its unit)", responses=decision_errors)
    async def approve(request: Request, submission_id: str, body: DecisionIn = DecisionIn(),
                      principal: Principal = Depends(current_principal)) -> SubmissionOut:
        return await decide(request, submission_id, principal, body, approve=True)

    @router.post("/submissions/{submission_id}/reject", response_model=SubmissionOut, tags=["review"],
                 summary="Reject a pending submission, saying why (review key of its unit)", responses=decision_errors)
    async def reject(request: Request, submission_id: str, body: DecisionIn,
                     principal: Principal = Depends(current_principal)) -> SubmissionOut:
        return await decide(request, submission_id, principal, body, approve=False)

    @router.put("/webhook", response_model=WebhookOut, tags=["review"],
                summary="Register where decisions on this key's submissions are POSTed (submit key)",
                responses=responses(*auth, ErrorCode.INVALID_PARAMETERS))
    async def put_webhook(request: Request, body: WebhookIn, principal: Principal = Depends(_role(Role.SUBMIT))) -> WebhookOut:
        if not body.url.startswith(_WEBHOOK_SCHEMES):
            raise ApiError(ErrorCode.INVALID_PARAMETERS, f"the webhook URL must start with http:// or https://, not {body.url!r}")
        secret = await _call(_store(request).set_webhook, principal, body.url)
        return WebhookOut(url=body.url, secret=secret)

    @router.delete("/webhook", status_code=HTTPStatus.NO_CONTENT, tags=["review"], summary="Stop webhooks for this key",
                   responses=responses(*auth, ErrorCode.NOT_FOUND))
    async def delete_webhook(request: Request, principal: Principal = Depends(_role(Role.SUBMIT))) -> Response:
        await _call(_store(request).remove_webhook, principal)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    admin = Depends(_role(Role.ADMIN))
    admin_errors = responses(*auth, ErrorCode.INVALID_PARAMETERS, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT)

    @router.post("/admin/units", response_model=UnitOut, status_code=HTTPStatus.CREATED, tags=["admin"],
                 summary="Add a unit (admin key)", responses=admin_errors)
    async def create_unit(request: Request, body: UnitIn, principal: Principal = admin) -> UnitOut:
        return await _call(_store(request).create_unit, principal, body.id, body.name)

    @router.get("/admin/units", response_model=list[UnitOut], tags=["admin"], summary="The units (admin key)",
                responses=responses(*auth))
    async def list_units(request: Request, principal: Principal = admin) -> list[UnitOut]:
        return await _call(_store(request).units)

    @router.post("/admin/keys", response_model=NewKey, status_code=HTTPStatus.CREATED, tags=["admin"],
                 summary="Make a key; the answer is the only time it is shown (admin key)", responses=admin_errors)
    async def create_key(request: Request, body: KeyIn, principal: Principal = admin) -> NewKey:
        return await _call(_store(request).create_key, principal, Role(body.role), body.unit, body.label)

    @router.get("/admin/keys", response_model=list[KeyOut], tags=["admin"], summary="The keys, by prefix (admin key)",
                responses=responses(*auth))
    async def list_keys(request: Request, principal: Principal = admin,
                        unit: str | None = Query(None, description="Only this unit's.")) -> list[KeyOut]:
        return await _call(_store(request).keys, unit)

    @router.delete("/admin/keys/{prefix}", response_model=KeyOut, tags=["admin"], summary="Revoke a key (admin key)",
                   responses=admin_errors)
    async def revoke_key(request: Request, prefix: str, principal: Principal = admin) -> KeyOut:
        return await _call(_store(request).revoke_key, principal, prefix)

    @router.get(
        "/admin/audit", tags=["admin"], summary="The audit trail, streamed as JSON Lines or CSV (admin key)",
        response_class=StreamingResponse,
        responses={HTTPStatus.OK: {"content": {"application/x-ndjson": {}, "text/csv": {}}}, **responses(*auth)},
    )
    async def audit(
        request: Request, principal: Principal = admin,
        format: Literal["jsonl", "csv"] = Query("jsonl", description="jsonl (one event per line) or csv."),
        since: datetime | None = Query(None, description="Only events at or after this time (ISO 8601)."),
        unit: str | None = Query(None, description="Only this unit's events."),
    ) -> StreamingResponse:
        events = _store(request).audit_events(since, unit)
        lines = audit_csv(events) if format == "csv" else audit_jsonl(events)
        media_type = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(iterate_in_threadpool(lines), media_type=media_type,
                                 headers={"Content-Disposition": f'attachment; filename="flexguard-audit.{format}"'})

    return router


def audit_jsonl(events: Iterator[AuditEventOut]) -> Iterator[str]:
    for event in events:
        yield event.model_dump_json() + "\n"


def audit_csv(events: Iterator[AuditEventOut]) -> Iterator[str]:
    """CSV for spreadsheets: one event per row, its details as a JSON cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(AUDIT_COLUMNS)
    for event in events:
        row = event.model_dump(mode="json")
        writer.writerow([*(row[column] for column in AUDIT_COLUMNS[:-1]), json.dumps(row["details"], ensure_ascii=False)])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
