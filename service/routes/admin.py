"""Supervisor review for administrators: units, keys and the audit trail (admin key).

The same operations as ``flexguard admin`` on the operator's shell, over HTTP; every change is
audited by the store with the admin key as the actor.
"""

from __future__ import annotations

from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from flexguard.models.vocabulary import ErrorCode

from ..deps import AdminKey, Review, State
from ..openapi import error_responses
from ..review.audit_export import audit_lines
from ..review.schemas import (
    ConsentIn,
    KeyIn,
    PolicyIn,
    KeyOut,
    NewKey,
    TrainingExportIn,
    TrainingExportOut,
    UnitIn,
    UnitOut,
)
from ..review.training_export import export_training
from ..review.tables import Role
from .submissions import KEY_ERRORS

CHANGE_ERRORS = error_responses(*KEY_ERRORS, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT)
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/units", response_model=UnitOut, status_code=HTTPStatus.CREATED, summary="Add a unit (admin key)",
             responses=CHANGE_ERRORS)
async def create_unit(store: Review, body: UnitIn, principal: AdminKey) -> UnitOut:
    return UnitOut.of(await run_in_threadpool(store.create_unit, principal, body.id, body.name))


@router.get("/units", response_model=list[UnitOut], summary="The units (admin key)",
            responses=error_responses(*KEY_ERRORS))
async def list_units(store: Review, principal: AdminKey) -> list[UnitOut]:
    return [UnitOut.of(unit) for unit in await run_in_threadpool(store.units)]


@router.put("/units/{unit}/training-consent", response_model=UnitOut,
            summary="Keep a unit's reviewer-labelled photos for the data team, or stop (admin key; audited)",
            responses=CHANGE_ERRORS)
async def set_training_consent(store: Review, unit: str, body: ConsentIn, principal: AdminKey) -> UnitOut:
    return UnitOut.of(await run_in_threadpool(store.set_training_consent, principal, unit, body.training_consent))


@router.put("/units/{unit}/policy", response_model=UnitOut,
            summary="Give a unit its own thresholds per category, or turn categories off (admin key; audited)",
            responses=CHANGE_ERRORS)
async def set_policy(store: Review, unit: str, body: PolicyIn, principal: AdminKey) -> UnitOut:
    return UnitOut.of(await run_in_threadpool(store.set_unit_policy, principal, unit, body.categories))


@router.post("/training-export", response_model=TrainingExportOut,
             summary="Write consenting units' reviewer-labelled photos as a training batch on the server (admin key)",
             description="Photos and `manifest.csv` (the format `flexguard train` reads) go to "
                         "FLEXGUARD_TRAINING_EXPORT_DIR/NAME; the exported photos are then deleted from the review "
                         "database, and the export is audited. The same as `flexguard admin export-training`.",
             responses=error_responses(*KEY_ERRORS))
async def training_export(store: Review, state: State, body: TrainingExportIn, principal: AdminKey) -> TrainingExportOut:
    folder = state.settings.training_export_dir / body.name
    report = await run_in_threadpool(export_training, store, principal, folder, body.since, body.unit)
    return TrainingExportOut(photos=report.photos, by_unit=report.by_unit, folder=str(folder), listed=report.listed)


@router.post("/keys", response_model=NewKey, status_code=HTTPStatus.CREATED,
             summary="Make a key; the answer is the only time it is shown (admin key)", responses=CHANGE_ERRORS)
async def create_key(store: Review, body: KeyIn, principal: AdminKey) -> NewKey:
    return NewKey.of(await run_in_threadpool(store.create_key, principal, Role(body.role), body.unit, body.label))


@router.get("/keys", response_model=list[KeyOut], summary="The keys, by prefix (admin key)",
            responses=error_responses(*KEY_ERRORS))
async def list_keys(store: Review, principal: AdminKey,
                    unit: Annotated[str | None, Query(description="Only this unit's.")] = None) -> list[KeyOut]:
    return [KeyOut.of(key) for key in await run_in_threadpool(store.keys, unit)]


@router.delete("/keys/{prefix}", response_model=KeyOut, summary="Revoke a key (admin key)", responses=CHANGE_ERRORS)
async def revoke_key(store: Review, prefix: str, principal: AdminKey) -> KeyOut:
    return KeyOut.of(await run_in_threadpool(store.revoke_key, principal, prefix))


@router.get(
    "/audit", summary="The audit trail, streamed as JSON Lines or CSV (admin key)", response_class=StreamingResponse,
    responses={HTTPStatus.OK: {"content": {media_type: {} for media_type in MEDIA_TYPES.values()}},
               **error_responses(*KEY_ERRORS)},
)
async def audit(
    store: Review, principal: AdminKey,
    format: Annotated[Literal["jsonl", "csv"], Query(description="jsonl (one event per line) or csv.")] = "jsonl",
    since: Annotated[datetime | None, Query(description="Only events at or after this time (ISO 8601).")] = None,
    unit: Annotated[str | None, Query(description="Only this unit's events.")] = None,
) -> StreamingResponse:
    lines = audit_lines(store.audit_events(since, unit), format)
    return StreamingResponse(iterate_in_threadpool(lines), media_type=MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="flexguard-audit.{format}"'})
