"""What the review store hands back: plain records of units, keys, submissions and audit events.

The store speaks in these, not in the API's JSON shapes: the HTTP routes turn them into responses
(``schemas``), the admin command prints them, and the storage format of a scored photo is the store's
own (``stored_result``), so the API can change its JSON without touching the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from flexguard.inference.engine import ImageScore, VideoSummary
from flexguard.inference.strip import REVIEW_FRAME_HEIGHT, kept_frames, layout
from flexguard.models.taxonomy import Category

from ..schemas import VideoOut
from .tables import ApiKey, AuditEvent, Photo, PhotoBlob, Submission, Unit, WebhookDelivery


@dataclass(frozen=True)
class UnitRecord:
    id: str
    name: str
    created_at: datetime
    training_consent: bool = False
    policy: dict[str, Any] | None = None  # the unit's own thresholds per category (models.policy, stored form)


@dataclass(frozen=True)
class KeyRecord:
    prefix: str
    role: str
    unit: str | None
    label: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewKeyRecord:
    key: str  # shown once: only its digest is stored
    record: KeyRecord


@dataclass(frozen=True)
class PhotoRecord:
    position: int
    sha256: str
    risk: float
    decision: str
    stored: bool  # its bytes are held for the reviewers
    result: dict[str, Any]  # categories (with names and scores), evidence, image: see stored_result
    review_verdict: str | None = None  # the reviewer's label (tables.Verdict), if one was given
    review_categories: tuple[str, ...] = ()  # what it shows, by the reviewer, when the verdict is "correct"


@dataclass(frozen=True)
class DeliveryRecord:
    attempts: int
    delivered_at: datetime | None
    gave_up_at: datetime | None
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True)
class SubmissionRecord:
    id: str
    unit: str
    account: str
    caption: str
    status: str
    risk: float
    model_name: str
    model_version: str
    model_weights_sha256: str | None
    policy: dict[str, Any] | None  # the whole policy its decisions used; None before migration 0005
    review_threshold: float
    block_threshold: float
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None  # the deciding key's prefix and label
    comment: str | None
    photos_purged_at: datetime | None
    photos: tuple[PhotoRecord, ...]
    deliveries: tuple[DeliveryRecord, ...]
    replayed: bool = False  # the answer to a repeated Idempotency-Key: nothing new was stored


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    action: str
    actor: str
    unit: str | None
    submission_id: str | None
    details: dict[str, Any]


def stored_result(score: ImageScore, categories: Sequence[Category]) -> dict[str, Any]:
    """How a scored photo is kept: every category with its names and score, the evidence, the image.

    The names are kept with the scores so a record reads the same after a model with other names ships.
    """
    return {
        "categories": [{"id": c.id, "name_en": c.name_en, "name_id": c.name_id, "score": score.scores[c.id]}
                       for c in categories],
        "evidence": [{"category": e.category, "score": e.score, "box": list(e.box)} for e in score.evidence],
        "image": {"width": score.width, "height": score.height, "format": score.format},
        **({"video": video_record(score.video)} if score.video is not None else {}),
    }


def video_record(video: VideoSummary) -> dict[str, Any]:
    """A video's summary as kept: its frames' times and scores, and where the kept ones sit in the stored strip."""
    boxes = {placed.frame.number: placed.box for placed in layout(kept_frames(video), REVIEW_FRAME_HEIGHT)}
    return VideoOut.with_boxes(video, boxes).model_dump(mode="json")


def unit_record(row: Unit) -> UnitRecord:
    return UnitRecord(id=row.id, name=row.name, created_at=row.created_at, training_consent=row.training_consent,
                      policy=row.policy)


def key_record(row: ApiKey) -> KeyRecord:
    return KeyRecord(prefix=row.prefix, role=row.role, unit=row.unit_id, label=row.label, created_at=row.created_at,
                     revoked_at=row.revoked_at)


def key_name(row: ApiKey) -> str:
    return f"{row.prefix} ({row.label})" if row.label else row.prefix


def audit_record(row: AuditEvent) -> AuditRecord:
    return AuditRecord(id=row.id, at=row.at, action=row.action, actor=row.actor, unit=row.unit_id,
                       submission_id=row.submission_id, details=row.details)


def submission_record(session: Session, submission: Submission, replayed: bool = False) -> SubmissionRecord:
    # Bytes kept past the reviewers' retention are the data team's (training consent), not the reviewers'.
    stored = set() if submission.photos_purged_at else set(
        session.scalars(select(PhotoBlob.photo_id).join(Photo).where(Photo.submission_id == submission.id)))
    decider = session.get(ApiKey, submission.decided_by) if submission.decided_by else None
    deliveries = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.submission_id == submission.id).order_by(WebhookDelivery.id)
    )
    return SubmissionRecord(
        id=submission.id, unit=submission.unit_id, account=submission.account, caption=submission.caption,
        status=submission.status, risk=submission.risk, model_name=submission.model_name,
        model_version=submission.model_version, model_weights_sha256=submission.model_weights_sha256,
        policy=submission.policy, review_threshold=submission.review_threshold,
        block_threshold=submission.block_threshold, created_at=submission.created_at,
        decided_at=submission.decided_at, decided_by=key_name(decider) if decider else None,
        comment=submission.comment, photos_purged_at=submission.photos_purged_at,
        photos=tuple(
            PhotoRecord(position=photo.position, sha256=photo.sha256, risk=photo.risk, decision=photo.decision,
                        stored=photo.id in stored, result=photo.result, review_verdict=photo.review_verdict,
                        review_categories=tuple(photo.review_categories or ()))
            for photo in submission.photos
        ),
        deliveries=tuple(
            DeliveryRecord(attempts=d.attempts, delivered_at=d.delivered_at, gave_up_at=d.gave_up_at,
                           next_attempt_at=d.next_attempt_at, last_status=d.last_status, last_error=d.last_error)
            for d in deliveries
        ),
        replayed=replayed,
    )
