"""The review database's tables, as SQLAlchemy 2 declarative classes.

The schema itself is created and changed only by the Alembic migrations in ``migrations/versions``
(a test checks that they produce exactly these tables); these classes are how the code reads and
writes it. Times are stored in UTC and come back timezone-aware on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Lengths of the short text columns: ids and names are typed by people, digests are hex SHA-256.
ID_LENGTH = 64
NAME_LENGTH = 200
DIGEST_LENGTH = 64
URL_LENGTH = 2048


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC; SQLite keeps no zone, so it is put back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def utc_text(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, the way the API's JSON writes every time (webhook bodies too)."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class Role(StrEnum):
    SUBMIT = "submit"  # an upload tool of one unit: submits posts, reads its own submissions
    REVIEW = "review"  # a unit head (or their delegate): reads and decides their unit's submissions
    ADMIN = "admin"  # manages units and keys, exports the audit trail


class Status(StrEnum):
    CLEARED = "cleared"  # every photo was `allow`: cleared at once, nothing stored
    PENDING = "pending"  # waiting for a reviewer of the unit
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"  # still pending FLEXGUARD_PENDING_EXPIRY_DAYS after it was sent: closed, photos deleted


class Verdict(StrEnum):
    """A reviewer's word on a flagged photo (optional, given with the decision)."""

    CORRECT = "correct"  # "benar": it shows luxury; the reviewer names the categories it shows
    FALSE_ALARM = "false_alarm"  # "bukan kemewahan": it shows none


class Base(DeclarativeBase):
    pass


class Unit(Base):
    """A unit (OPD) of the regional government: its reviewers decide its submissions."""

    __tablename__ = "units"
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Whether the unit lets its reviewer-labelled photos be kept for the data team (off unless an admin says so).
    training_consent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The unit's own thresholds per category, or "off" (models.policy, stored form); null: the model's.
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ApiKey(Base):
    """A key, stored as its SHA-256 digest; ``prefix`` (the key's first characters) names it in lists and audits."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(ID_LENGTH))
    unit_id: Mapped[str | None] = mapped_column(ForeignKey("units.id"), nullable=True)
    label: Mapped[str] = mapped_column(String(NAME_LENGTH), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Where the upload tool holding this key wants to hear decisions, and the secret that signs them
    # (kept readable: HMAC needs it; it signs, it does not authenticate anyone to flexguard).
    webhook_url: Mapped[str | None] = mapped_column(String(URL_LENGTH), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH), nullable=True)


class Submission(Base):
    """A post sent for clearance: its caption, who sent it, its scores and, once decided, the decision."""

    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("key_id", "idempotency_key", name="uq_submissions_key_idempotency"),)
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.id"), index=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    account: Mapped[str] = mapped_column(String(NAME_LENGTH))
    caption: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    risk: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    # The scoring model's weights digest; null for submissions stored before migration 0003 recorded it.
    model_weights_sha256: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH), nullable=True)
    review_threshold: Mapped[float] = mapped_column(Float)
    block_threshold: Mapped[float] = mapped_column(Float)
    # The whole policy its decisions used (Policy.to_dict); null for submissions from before migration 0005.
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    request_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))  # what was sent, to spot a reused key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    photos_purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    photos: Mapped[list["Photo"]] = relationship(order_by="Photo.position", back_populates="submission")


class Photo(Base):
    """One photo of a submission: its score, decision, categories and evidence boxes (never its bytes)."""

    __tablename__ = "photos"
    __table_args__ = (UniqueConstraint("submission_id", "position", name="uq_photos_position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    risk: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(ID_LENGTH))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # categories, evidence, image size and format
    # The reviewer's label of a flagged photo (Verdict) and, when correct, the categories it shows.
    review_verdict: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    review_categories: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # When its bytes went to the data team in a training export (and were deleted here).
    exported_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    submission: Mapped[Submission] = relationship(back_populates="photos")


class PhotoBlob(Base):
    """The bytes of a flagged photo of a pending submission, kept until the purge after its decision."""

    __tablename__ = "photo_blobs"
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id"), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(ID_LENGTH))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEvent(Base):
    """One state change. Append-only: the migrations add triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(ID_LENGTH))
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))  # a key's prefix and role, or "cli:<user>"
    unit_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True, index=True)
    submission_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookDelivery(Base):
    """A decision to tell an upload tool, written with the decision itself so a crash cannot lose it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    secret: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON that is signed and sent, every attempt alike
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
