"""The review workflow over the database: submit, queue, decide, purge, and the audit trail of each.

Every state change and its audit event (and, for a decision, its webhook delivery) are written in one
transaction, so either all of it is there after a crash or none of it is. A decision is a conditional
``UPDATE ... WHERE status = 'pending'``: of two reviewers deciding at once exactly one changes the
row, the other is told who did (``Conflict``). No HTTP in here: the store returns records (``records``) and raises ``ReviewError``s, and the routes
turn those into JSON and status codes.

Longer than most modules because it is the one place that writes the review database: every
transaction (and so every audit event) is here, where the invariants above can be read together.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator, Sequence

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from flexguard.inference.engine import ImageScore
from flexguard.inference.video import VIDEO_FORMATS
from flexguard.models.metadata import ModelInfo, Thresholds
from flexguard.models.policy import Policy, PolicyError
from flexguard.models.taxonomy import CATEGORY_IDS
from flexguard.models.vocabulary import Decision

from .database import READ_ONLY, session_factory
from .keys import key_digest, key_prefix, new_key, new_webhook_secret
from .records import (
    AuditRecord,
    KeyRecord,
    NewKeyRecord,
    SubmissionRecord,
    UnitRecord,
    audit_record,
    key_name,
    key_record,
    stored_result,
    submission_record,
    unit_record,
)
from .tables import (
    ApiKey,
    AuditEvent,
    Photo,
    PhotoBlob,
    Role,
    Status,
    Submission,
    Unit,
    Verdict,
    WebhookDelivery,
    utc_text,
    utcnow,
)

SERVICE_ACTOR = "flexguard"
SUBMISSION_ID_MARK = "sub"
WEBHOOK_EVENT = "submission.decided"
# Why a delivery stopped when its key's webhook was removed before it could be made.
WEBHOOK_REMOVED = "the webhook was removed before this delivery could be made"


class ReviewError(Exception):
    """A request the workflow refuses; the message is for the user, in one line."""


class NotFound(ReviewError):
    pass


class Forbidden(ReviewError):
    pass


class Conflict(ReviewError):
    pass


class Invalid(ReviewError):
    pass


class IdempotencyKeyReused(Invalid):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's id, prefix, role and unit."""

    key_id: int | None
    prefix: str
    role: Role
    unit: str | None
    label: str = ""

    @property
    def actor(self) -> str:
        """How the audit trail names it: a key by its prefix and role, anyone else by name."""
        return f"{self.prefix} ({self.role.value})" if self.key_id is not None else self.prefix

    @classmethod
    def command_line(cls, user: str) -> "Principal":
        """The operator at the database's own command line, who may do what an admin key may."""
        return cls(key_id=None, prefix=f"cli:{user}", role=Role.ADMIN, unit=None)

    @classmethod
    def service(cls) -> "Principal":
        """The service's own jobs: the purge and webhook deliveries."""
        return cls(key_id=None, prefix=SERVICE_ACTOR, role=Role.ADMIN, unit=None)


@dataclass(frozen=True)
class ScoredPhoto:
    data: bytes  # as sent: what the SHA-256 and the idempotency check are of
    kept: bytes  # what is stored for the reviewers if the photo is flagged (photos.viewable)
    media_type: str  # of ``kept``
    score: ImageScore

    @property
    def flagged(self) -> bool:
        return self.score.decision != Decision.ALLOW


@dataclass(frozen=True)
class Draft:
    """A post to clear: what the upload tool sent, and the engine's verdict on each photo."""

    account: str
    caption: str
    photos: Sequence[ScoredPhoto]
    model: ModelInfo  # that scored the photos
    policy: Policy  # that decided them: the model's thresholds, adjusted by the unit's own
    idempotency_key: str | None = None

    def digest(self) -> str:
        """What identifies the request's content, so a reused Idempotency-Key with other content is caught."""
        content = {"account": self.account, "caption": self.caption,
                   "photos": [hashlib.sha256(photo.data).hexdigest() for photo in self.photos]}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DeliveryJob:
    id: int
    url: str
    secret: str
    body: str
    attempts: int


@dataclass(frozen=True)
class PurgeReport:
    submissions: int
    photos: int
    kept_for_training: int = 0  # labelled photos of consenting units, kept past the reviewers' retention
    training_photos: int = 0  # kept ones deleted now: past the training retention, or consent withdrawn


@dataclass(frozen=True)
class TrainingPhoto:
    """A reviewer-labelled photo of a consenting unit, with what the data team's manifest records of it."""

    photo_id: int
    unit: str
    submission_id: str
    position: int
    verdict: str
    categories: tuple[str, ...]
    decided_at: datetime
    reviewer: str  # the deciding key's prefix and label
    model_name: str
    model_version: str
    model_weights_sha256: str | None
    risk: float
    scores: dict[str, float]  # the model's, per category, at the time
    sha256: str  # of the photo as sent
    media_type: str
    data: bytes


@dataclass(frozen=True)
class PhotoFacts:
    flagged: tuple[str, ...]  # the categories the model flagged it for (its evidence)
    verdict: str | None  # the reviewer's label, if any
    shown: tuple[str, ...]  # what the reviewer said it shows, with a "correct" verdict


@dataclass(frozen=True)
class PostFacts:
    """One submission as the unit summary counts it."""

    created_at: datetime
    decided_at: datetime | None
    status: str
    photos: tuple[PhotoFacts, ...]


@dataclass(frozen=True)
class PhotoLabel:
    """A reviewer's word on one flagged photo of the post being decided."""

    position: int
    verdict: Verdict
    categories: tuple[str, ...] = ()  # what it shows, when the verdict is CORRECT


class ReviewStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._session = session_factory(engine)
        # Reads need no write lock: on SQLite they begin DEFERRED and run beside the writer (database.py).
        self._read = session_factory(engine.execution_options(**{READ_ONLY: True}))

    # --- keys -------------------------------------------------------------------------------------

    def reachable(self) -> bool:
        """Whether the database answers a trivial read now (for /readyz; a SQLite file whose write lock
        another process holds still answers: the writes that wait for it get 503 themselves)."""
        try:
            with self.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
                connection.exec_driver_sql("SELECT 1")
        except SQLAlchemyError:
            return False
        return True

    def authenticate(self, key: str) -> Principal | None:
        """The holder of ``key``, or None for an unknown or revoked key."""
        with self._read() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.digest == key_digest(key), ApiKey.revoked_at.is_(None)))
            if row is None:
                return None
            return Principal(row.id, row.prefix, Role(row.role), row.unit_id, row.label)

    def create_unit(self, actor: Principal, unit_id: str, name: str) -> UnitRecord:
        require_role(actor, Role.ADMIN)
        with self._session.begin() as session:
            if session.get(Unit, unit_id) is not None:
                raise Conflict(f"unit {unit_id!r} exists already")
            unit = Unit(id=unit_id, name=name, created_at=utcnow())
            session.add(unit)
            _audit(session, actor, "unit_created", unit=unit_id, details={"name": name})
        return unit_record(unit)

    def units(self) -> list[UnitRecord]:
        with self._read() as session:
            return [unit_record(u) for u in session.scalars(select(Unit).order_by(Unit.id))]

    def create_key(self, actor: Principal, role: Role, unit: str | None, label: str = "") -> NewKeyRecord:
        require_role(actor, Role.ADMIN)
        if role == Role.ADMIN and unit is not None:
            raise Invalid("an admin key belongs to no unit")
        if role != Role.ADMIN and unit is None:
            raise Invalid(f"a {role.value} key needs a unit")
        key = new_key(role)
        with self._session.begin() as session:
            if unit is not None and session.get(Unit, unit) is None:
                raise NotFound(f"no unit {unit!r}")
            row = ApiKey(prefix=key_prefix(key), digest=key_digest(key), role=role.value, unit_id=unit, label=label,
                         created_at=utcnow())
            session.add(row)
            _audit(session, actor, "key_created", unit=unit, details={"key": row.prefix, "role": role.value, "label": label})
        return NewKeyRecord(key=key, record=key_record(row))

    def revoke_key(self, actor: Principal, prefix: str) -> KeyRecord:
        require_role(actor, Role.ADMIN)
        with self._session.begin() as session:
            rows = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).all()
            if not rows:
                raise NotFound(f"no key {prefix!r}")
            if len(rows) > 1:
                raise Invalid(f"{len(rows)} keys start with {prefix!r}")
            row = rows[0]
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                _audit(session, actor, "key_revoked", unit=row.unit_id, details={"key": row.prefix})
        return key_record(row)

    def keys(self, unit: str | None = None) -> list[KeyRecord]:
        with self._read() as session:
            query = select(ApiKey).order_by(ApiKey.id)
            if unit is not None:
                query = query.where(ApiKey.unit_id == unit)
            return [key_record(row) for row in session.scalars(query)]

    # --- webhooks ---------------------------------------------------------------------------------

    def set_webhook(self, actor: Principal, url: str) -> str:
        """Register ``url`` for the decisions on ``actor``'s submissions; returns the new signing secret.

        Deliveries not yet made (still being retried) go to the new URL, signed with the new secret.
        """
        require_role(actor, Role.SUBMIT)
        secret = new_webhook_secret()
        with self._session.begin() as session:
            row = session.get_one(ApiKey, actor.key_id)
            row.webhook_url, row.webhook_secret = url, secret
            redirected = _pending_deliveries(session, actor, url=url, secret=secret)
            _audit(session, actor, "webhook_registered", unit=actor.unit,
                   details={"url": url, "pending_deliveries_redirected": redirected})
        return secret

    def remove_webhook(self, actor: Principal) -> None:
        """Stop webhooks for ``actor``; deliveries not yet made are cancelled (recorded as given up)."""
        require_role(actor, Role.SUBMIT)
        with self._session.begin() as session:
            row = session.get_one(ApiKey, actor.key_id)
            if row.webhook_url is None:
                raise NotFound("this key has no webhook")
            cancelled = _pending_deliveries(session, actor, next_attempt_at=None, gave_up_at=utcnow(),
                                            last_error=WEBHOOK_REMOVED)
            _audit(session, actor, "webhook_removed", unit=actor.unit,
                   details={"url": row.webhook_url, "pending_deliveries_cancelled": cancelled})
            row.webhook_url = row.webhook_secret = None

    def claim_deliveries(self, now: datetime, lease: timedelta, limit: int) -> list[DeliveryJob]:
        """Deliveries due by ``now``, each put off by ``lease`` so no other worker sends it meanwhile."""
        with self._session.begin() as session:
            query = (
                select(WebhookDelivery)
                .where(WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)  # PostgreSQL: replicas take different rows; SQLite: one writer anyway
            )
            jobs = []
            for row in session.scalars(query):
                row.next_attempt_at = now + lease
                jobs.append(DeliveryJob(row.id, row.url, row.secret, row.body, row.attempts))
            return jobs

    def record_delivery(
        self, job: DeliveryJob, status: int | None, error: str | None, retry_at: datetime | None
    ) -> None:
        """One attempt's outcome: delivered (no error), retried at ``retry_at``, or given up (neither)."""
        now = utcnow()
        with self._session.begin() as session:
            row = session.get_one(WebhookDelivery, job.id)
            submission = session.get_one(Submission, row.submission_id)
            row.attempts += 1
            row.last_status, row.last_error = status, error
            details = {"delivery": row.id, "url": row.url, "attempt": row.attempts, "status": status}
            if error is None:
                row.delivered_at, row.next_attempt_at = now, None
                action = "webhook_delivered"
            elif retry_at is None:
                row.gave_up_at, row.next_attempt_at = now, None
                action = "webhook_failed"
                details["error"] = error
            else:
                row.next_attempt_at = retry_at
                return  # a retry is not a state change: it is recorded on the delivery, not audited
            _audit(session, Principal.service(), action, unit=submission.unit_id, submission=submission, details=details)

    # --- submissions ------------------------------------------------------------------------------

    def submit(self, actor: Principal, draft: Draft) -> SubmissionRecord:
        """Store a post for clearance (or find the earlier one with the same Idempotency-Key)."""
        require_role(actor, Role.SUBMIT)
        digest = draft.digest()
        try:
            with self._session.begin() as session:
                earlier = self._replay(session, actor, draft, digest)
                if earlier is not None:
                    return earlier
                submission = self._insert(session, actor, draft, digest)
                return submission_record(session, submission)
        except IntegrityError:
            # Another request with the same Idempotency-Key committed first (PostgreSQL; SQLite's
            # IMMEDIATE transactions queue them instead): answer with that one.
            with self._session.begin() as session:
                earlier = self._replay(session, actor, draft, digest)
                if earlier is None:
                    raise
                return earlier

    def _replay(self, session: Session, actor: Principal, draft: Draft, digest: str) -> SubmissionRecord | None:
        if draft.idempotency_key is None:
            return None
        earlier = session.scalar(
            select(Submission).where(Submission.key_id == actor.key_id, Submission.idempotency_key == draft.idempotency_key)
        )
        if earlier is None:
            return None
        if earlier.request_digest != digest:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {draft.idempotency_key!r} was used for submission {earlier.id} with other content; "
                "use a new key for a new post"
            )
        return submission_record(session, earlier, replayed=True)

    def _insert(self, session: Session, actor: Principal, draft: Draft, digest: str) -> Submission:
        status = Status.PENDING if any(photo.flagged for photo in draft.photos) else Status.CLEARED
        submission = Submission(
            id=f"{SUBMISSION_ID_MARK}_{uuid.uuid4().hex}", unit_id=actor.unit, key_id=actor.key_id,
            account=draft.account, caption=draft.caption, status=status.value,
            risk=max(photo.score.risk for photo in draft.photos), model_name=draft.model.name,
            model_version=draft.model.version, model_weights_sha256=draft.model.weights_sha256,
            policy=draft.policy.to_dict(), review_threshold=draft.policy.default.review,
            block_threshold=draft.policy.default.block, idempotency_key=draft.idempotency_key, request_digest=digest,
            created_at=utcnow(),
        )
        session.add(submission)
        rows = []
        for position, photo in enumerate(draft.photos):
            row = Photo(
                submission=submission, position=position, sha256=hashlib.sha256(photo.data).hexdigest(),
                risk=photo.score.risk, decision=photo.score.decision.value,
                result=stored_result(photo.score, draft.model.categories),
            )
            session.add(row)
            rows.append(row)
        session.flush()  # photo ids, for the blobs
        if status == Status.PENDING:
            # A pending post's photos are kept for its reviewers, who decide on the whole post: the unflagged
            # ones until the decision (decide deletes them), the flagged ones until the purge. A post cleared
            # at once keeps none.
            for row, photo in zip(rows, draft.photos):
                session.add(PhotoBlob(photo_id=row.id, media_type=photo.media_type, data=photo.kept))
        _audit(session, actor, "submitted", unit=actor.unit, submission=submission, details={
            "status": status.value, "account": draft.account, "risk": submission.risk,
            "policy": draft.policy.to_dict(),
            "photos": [{"position": r.position, "sha256": r.sha256, "risk": r.risk, "decision": r.decision,
                        "categories": {c["id"]: c["score"] for c in r.result["categories"]}} for r in rows],
        })
        return submission

    def list_submissions(self, actor: Principal, status: Status | None, limit: int, offset: int) -> tuple[list[SubmissionRecord], int]:
        with self._read() as session:
            query = select(Submission).options(selectinload(Submission.photos))
            query = _visible_to(actor, query)
            if status is not None:
                query = query.where(Submission.status == status.value)
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            # The queue is worked oldest first; history is read newest first.
            order = Submission.created_at.asc() if status == Status.PENDING else Submission.created_at.desc()
            rows = session.scalars(query.order_by(order, Submission.id).limit(limit).offset(offset)).all()
            return [submission_record(session, row) for row in rows], total or 0

    def summary_facts(self, actor: Principal, unit: str | None, since: datetime) -> list[PostFacts]:
        """What the unit-at-a-glance summary counts, for posts sent since ``since``: a review key sees its
        unit's, an admin every unit's (or ``unit``'s); others are refused."""
        if actor.role not in (Role.REVIEW, Role.ADMIN):
            raise Forbidden(f"the summary needs a review or admin key, not {_a(actor.role.value)} key")
        with self._read() as session:
            query = select(Submission).options(selectinload(Submission.photos)).where(Submission.created_at >= since)
            if actor.role == Role.REVIEW:
                query = query.where(Submission.unit_id == actor.unit)
            elif unit is not None:
                query = query.where(Submission.unit_id == unit)
            return [
                PostFacts(
                    created_at=row.created_at, decided_at=row.decided_at, status=row.status,
                    photos=tuple(PhotoFacts(
                        flagged=tuple(e["category"] for e in photo.result["evidence"]), verdict=photo.review_verdict,
                        shown=tuple(photo.review_categories or ()),
                    ) for photo in row.photos),
                )
                for row in session.scalars(query.order_by(Submission.created_at))
            ]

    def count_by_status(self) -> dict[str, int]:
        """How many submissions there are in each status, over every unit (for the metrics)."""
        with self._read() as session:
            rows = session.execute(select(Submission.status, func.count()).group_by(Submission.status))
            return {status: total for status, total in rows}

    def get(self, actor: Principal, submission_id: str) -> SubmissionRecord:
        with self._read() as session:
            return submission_record(session, self._visible(session, actor, submission_id))

    def photo(self, actor: Principal, submission_id: str, position: int) -> tuple[str, bytes]:
        """A stored photo's media type and bytes: for the unit's reviewers only."""
        require_role(actor, Role.REVIEW)
        with self._read() as session:
            submission = self._visible(session, actor, submission_id)
            blob = None if submission.photos_purged_at else session.scalar(
                select(PhotoBlob).join(Photo).where(Photo.submission_id == submission.id, Photo.position == position)
            )
            if blob is None:
                why = ("its photos were deleted when it expired" if submission.status == Status.EXPIRED.value
                       else "its photos were deleted after the decision" if submission.photos_purged_at
                       else "a photo the model allowed is kept only until the post is decided")
                raise NotFound(f"photo {position} of {submission_id} is not stored ({why})")
            return blob.media_type, blob.data

    def decide(self, actor: Principal, submission_id: str, approve: bool, comment: str,
               labels: Sequence[PhotoLabel] = ()) -> SubmissionRecord:
        """Approve or reject a pending post, with the reviewer's optional labels of its flagged photos."""
        require_role(actor, Role.REVIEW)
        if not approve and not comment.strip():
            raise Invalid("say why in the comment when rejecting")
        status = Status.APPROVED if approve else Status.REJECTED
        now = utcnow()
        with self._session.begin() as session:
            submission = self._visible(session, actor, submission_id)
            by_position = _checked_labels(submission, labels)
            changed = session.execute(
                update(Submission)
                .where(Submission.id == submission.id, Submission.status == Status.PENDING.value)
                .values(status=status.value, decided_at=now, decided_by=actor.key_id, comment=comment)
                .execution_options(synchronize_session=False)
            ).rowcount
            if changed != 1:
                session.refresh(submission)
                raise Conflict(_already(session, submission))
            session.refresh(submission)
            for photo in submission.photos:
                if photo.position in by_position:
                    label = by_position[photo.position]
                    photo.review_verdict, photo.review_categories = label.verdict.value, list(label.categories)
            # The photos the model allowed were kept only for the decision.
            allowed = [photo.id for photo in submission.photos if photo.decision == Decision.ALLOW.value]
            session.execute(delete(PhotoBlob).where(PhotoBlob.photo_id.in_(allowed)))
            _audit(session, actor, status.value, unit=submission.unit_id, submission=submission, details={
                "comment": comment, "risk": submission.risk,
                "labels": [{"position": label.position, "verdict": label.verdict.value, "categories": list(label.categories)}
                           for label in by_position.values()],
            })
            _queue_webhook(session, submission, now)
            session.flush()
            return submission_record(session, submission)

    def expire(self, actor: Principal, max_pending: timedelta, now: datetime | None = None) -> int:
        """Close the submissions still pending ``max_pending`` after they were sent: ``expired``, their
        photos deleted at once, the submitter's webhook told, the expiry audited. Returns how many.

        Without it a post nobody decides would keep its photos for ever.
        """
        now = now or utcnow()
        days = max_pending / timedelta(days=1)
        expired = 0
        with self._session.begin() as session:
            due = session.scalars(select(Submission).where(
                Submission.status == Status.PENDING.value, Submission.created_at < now - max_pending)).all()
            for submission in due:
                changed = session.execute(
                    update(Submission)
                    .where(Submission.id == submission.id, Submission.status == Status.PENDING.value)
                    .values(status=Status.EXPIRED.value, decided_at=now, comment=f"not decided within {days:g} days")
                    .execution_options(synchronize_session=False)
                ).rowcount
                if changed != 1:
                    continue  # a reviewer decided it meanwhile
                session.refresh(submission)
                photos = _delete_photos(session, submission, now)
                _audit(session, actor, Status.EXPIRED.value, unit=submission.unit_id, submission=submission,
                       details={"pending_days": days, "photos_deleted": photos,
                                "created_at": utc_text(submission.created_at)})
                _queue_webhook(session, submission, now)
                expired += 1
        return expired

    def purge(self, actor: Principal, retention: timedelta, training_retention: timedelta,
              now: datetime | None = None) -> PurgeReport:
        """Delete the stored photos of submissions decided more than ``retention`` ago; keep everything else.

        In a unit with training consent, the photos a reviewer labelled are kept for the data team instead,
        until they are exported or ``training_retention`` after the decision, whichever comes first; they
        are deleted at the next purge once consent is withdrawn.
        """
        now = now or utcnow()
        cutoff = now - retention
        with self._session.begin() as session:
            due = session.scalars(
                select(Submission).where(Submission.decided_at < cutoff, Submission.photos_purged_at.is_(None))
            ).all()
            deleted = kept = 0
            for submission in due:
                consenting = session.get_one(Unit, submission.unit_id).training_consent
                # A video's stored frames are for its reviewers only, never kept for training.
                keep = {photo.id for photo in submission.photos if consenting and photo.review_verdict
                        and "video" not in photo.result and submission.decided_at >= now - training_retention}
                photos = _delete_photos(session, submission, now, keep=keep)
                deleted += photos
                kept += len(keep)
                _audit(session, actor, "photos_purged", unit=submission.unit_id, submission=submission,
                       details={"photos": photos, "kept_for_training": len(keep),
                                "decided_at": submission.decided_at.isoformat(),
                                "retention_days": retention / timedelta(days=1)})
            stale = session.execute(
                select(PhotoBlob.photo_id, Submission)
                .join(Photo, Photo.id == PhotoBlob.photo_id).join(Submission).join(Unit)
                .where(Submission.photos_purged_at.is_not(None),
                       (Submission.decided_at < now - training_retention) | Unit.training_consent.is_(False))
            ).all()
            for submission_id, rows in _grouped(stale).items():
                submission = rows[0][1]
                session.execute(delete(PhotoBlob).where(PhotoBlob.photo_id.in_([photo_id for photo_id, _ in rows])))
                _audit(session, actor, "training_photos_purged", unit=submission.unit_id, submission=submission,
                       details={"photos": len(rows), "training_retention_days": training_retention / timedelta(days=1),
                                "consent": session.get_one(Unit, submission.unit_id).training_consent})
            return PurgeReport(submissions=len(due), photos=deleted, kept_for_training=kept, training_photos=len(stale))

    def _training_query(self, since: datetime | None, unit: str | None) -> Any:
        query = (select(Photo, Submission, PhotoBlob).join(Submission).join(PhotoBlob, PhotoBlob.photo_id == Photo.id)
                 .join(Unit, Unit.id == Submission.unit_id)
                 .where(Photo.review_verdict.is_not(None), Photo.exported_at.is_(None), Unit.training_consent.is_(True),
                        # Videos are not training data: what is stored of one is a strip of frames, not a photo.
                        Photo.result["image"]["format"].as_string().not_in(VIDEO_FORMATS)))
        if since is not None:
            query = query.where(Submission.decided_at >= since)
        if unit is not None:
            query = query.where(Submission.unit_id == unit)
        return query

    def count_training_photos(self, actor: Principal, since: datetime | None = None, unit: str | None = None) -> int:
        require_role(actor, Role.ADMIN)
        with self._read() as session:
            return session.scalar(select(func.count()).select_from(self._training_query(since, unit).subquery()))

    def training_photos(self, actor: Principal, limit: int, since: datetime | None = None,
                        unit: str | None = None) -> list[TrainingPhoto]:
        """Up to ``limit`` labelled photos of consenting units not exported yet, oldest first, with their bytes."""
        require_role(actor, Role.ADMIN)
        with self._read() as session:
            rows = session.execute(self._training_query(since, unit).order_by(Photo.id).limit(limit)).all()
            photos = []
            for photo, submission, blob in rows:
                decider = session.get(ApiKey, submission.decided_by) if submission.decided_by else None
                photos.append(TrainingPhoto(
                    photo_id=photo.id, unit=submission.unit_id, submission_id=submission.id, position=photo.position,
                    verdict=photo.review_verdict, categories=tuple(photo.review_categories or ()),
                    decided_at=submission.decided_at, reviewer=key_name(decider) if decider else "",
                    model_name=submission.model_name, model_version=submission.model_version,
                    model_weights_sha256=submission.model_weights_sha256, risk=photo.risk,
                    scores={c["id"]: c["score"] for c in photo.result["categories"]}, sha256=photo.sha256,
                    media_type=blob.media_type, data=blob.data,
                ))
            return photos

    def mark_exported(self, actor: Principal, photos: Sequence[TrainingPhoto], destination: str) -> int:
        """Record that ``photos`` are safely in the data team's batch: exported, their bytes deleted here, audited.

        One transaction: after a crash either all of it happened or none did (then the export runs again).
        """
        require_role(actor, Role.ADMIN)
        now = utcnow()
        ids = [photo.photo_id for photo in photos]
        with self._session.begin() as session:
            marked = session.execute(
                update(Photo).where(Photo.id.in_(ids), Photo.exported_at.is_(None)).values(exported_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            session.execute(delete(PhotoBlob).where(PhotoBlob.photo_id.in_(ids)))
            by_submission: dict[str, list[TrainingPhoto]] = {}
            for photo in photos:
                by_submission.setdefault(photo.submission_id, []).append(photo)
            for submission_id, exported in by_submission.items():
                _audit(session, actor, "training_exported", unit=exported[0].unit,
                       submission=session.get_one(Submission, submission_id),
                       details={"positions": [photo.position for photo in exported], "destination": destination})
            return marked

    def unit_policy(self, unit_id: str) -> dict[str, Any] | None:
        """The unit's own thresholds per category (the stored form of models.policy), or None for the model's."""
        with self._read() as session:
            unit = session.get(Unit, unit_id)
            return unit.policy if unit is not None else None

    def set_unit_policy(self, actor: Principal, unit_id: str, overrides: dict[str, Any] | None) -> UnitRecord:
        """Give a unit thresholds of its own per category, or turn categories off; None goes back to the
        model's (admins only, audited)."""
        require_role(actor, Role.ADMIN)
        try:
            # Checked against any default: what is checked is the categories and each one's own pair.
            checked = Policy.with_overrides(Thresholds(0.0, 1.0), overrides).overrides_dict() or None
        except PolicyError as error:
            raise Invalid(str(error)) from None
        with self._session.begin() as session:
            unit = session.get(Unit, unit_id)
            if unit is None:
                raise NotFound(f"no unit {unit_id!r}")
            was, unit.policy = unit.policy, checked
            _audit(session, actor, "policy_changed", unit=unit_id, details={"categories": checked, "was": was})
            return unit_record(unit)

    def set_training_consent(self, actor: Principal, unit_id: str, consent: bool) -> UnitRecord:
        """Let a unit's reviewer-labelled photos be kept for the data team, or stop it (admins only)."""
        require_role(actor, Role.ADMIN)
        with self._session.begin() as session:
            unit = session.get(Unit, unit_id)
            if unit is None:
                raise NotFound(f"no unit {unit_id!r}")
            was, unit.training_consent = unit.training_consent, consent
            _audit(session, actor, "training_consent_changed", unit=unit_id,
                   details={"training_consent": consent, "was": was})
            return unit_record(unit)

    def _visible(self, session: Session, actor: Principal, submission_id: str) -> Submission:
        submission = session.get(Submission, submission_id)
        if submission is None:
            raise NotFound(f"no submission {submission_id!r}")
        if actor.role == Role.REVIEW and submission.unit_id != actor.unit:
            raise Forbidden(f"submission {submission_id} belongs to another unit")
        if actor.role == Role.SUBMIT and submission.key_id != actor.key_id:
            raise Forbidden(f"submission {submission_id} was sent with another key")
        return submission

    # --- audit ------------------------------------------------------------------------------------

    def audit_events(self, since: datetime | None = None, unit: str | None = None, batch: int = 1000) -> Iterator[AuditRecord]:
        """Every audit event in order, read a batch at a time so millions of them stream in bounded memory."""
        last_id = 0
        while True:
            with self._read() as session:
                query = select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
                if since is not None:
                    query = query.where(AuditEvent.at >= since)
                if unit is not None:
                    query = query.where(AuditEvent.unit_id == unit)
                rows = session.scalars(query).all()
            if not rows:
                return
            yield from (audit_record(row) for row in rows)
            last_id = rows[-1].id


def require_role(actor: Principal, role: Role) -> None:
    """The one role check, for the store's methods and the routes' key dependencies alike."""
    if actor.role != role:
        raise Forbidden(f"this needs {_a(role.value)} key, not {_a(actor.role.value)} key")


def _a(word: str) -> str:
    """The word with its indefinite article: "a review", "an admin"."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _delete_photos(session: Session, submission: Submission, now: datetime, keep: set[int] = frozenset()) -> int:
    """Delete a submission's stored photos but those in ``keep`` (its record, scores and boxes stay); how many went."""
    blobs = session.scalars(select(PhotoBlob).join(Photo).where(Photo.submission_id == submission.id)).all()
    gone = [blob for blob in blobs if blob.photo_id not in keep]
    for blob in gone:
        session.delete(blob)
    submission.photos_purged_at = now
    return len(gone)


def _grouped(rows: Sequence[Any]) -> dict[str, list[Any]]:
    """(photo id, submission) rows by submission id, in order."""
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(row[1].id, []).append(row)
    return groups


def _checked_labels(submission: Submission, labels: Sequence[PhotoLabel]) -> dict[int, PhotoLabel]:
    """The labels by position, once each, for flagged photos only, with categories exactly when correct."""
    flagged = {photo.position for photo in submission.photos if photo.decision != Decision.ALLOW.value}
    checked: dict[int, PhotoLabel] = {}
    for label in labels:
        if label.position in checked:
            raise Invalid(f"photo {label.position} is labelled twice")
        if label.position not in flagged:
            raise Invalid(f"photo {label.position} was not flagged: only flagged photos are labelled")
        unknown = sorted(set(label.categories) - set(CATEGORY_IDS))
        if unknown:
            raise Invalid(f"unknown categories for photo {label.position}: {', '.join(unknown)}")
        if (label.verdict == Verdict.CORRECT) != bool(label.categories):
            raise Invalid(f"photo {label.position}: name the categories it shows with \"correct\", and none with "
                          "\"false_alarm\"")
        checked[label.position] = label
    return checked


def _queue_webhook(session: Session, submission: Submission, now: datetime) -> None:
    """The submitter's webhook delivery of a decision, in the decision's transaction (so no crash loses it)."""
    submitter = session.get_one(ApiKey, submission.key_id)
    if submitter.webhook_url and submitter.webhook_secret:
        session.add(WebhookDelivery(
            submission_id=submission.id, url=submitter.webhook_url, secret=submitter.webhook_secret,
            body=_webhook_body(submission), attempts=0, next_attempt_at=now,
        ))


def _pending_deliveries(session: Session, actor: Principal, **values: Any) -> int:
    """Set ``values`` on the deliveries of ``actor``'s submissions that are neither made nor given up."""
    mine = select(Submission.id).where(Submission.key_id == actor.key_id)
    return session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.submission_id.in_(mine), WebhookDelivery.delivered_at.is_(None),
               WebhookDelivery.gave_up_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount


def _visible_to(actor: Principal, query: Any) -> Any:
    if actor.role == Role.REVIEW:
        return query.where(Submission.unit_id == actor.unit)
    if actor.role == Role.SUBMIT:
        return query.where(Submission.key_id == actor.key_id)
    return query  # admin: every unit, for inspection (never the photos)


def _audit(session: Session, actor: Principal, action: str, *, unit: str | None = None,
           submission: Submission | None = None, details: dict[str, Any]) -> None:
    """Append an audit event; one about a submission also names the model (version and weights) that scored it."""
    if submission is not None:
        details = {**details, "model": {"name": submission.model_name, "version": submission.model_version,
                                        "weights_sha256": submission.model_weights_sha256}}
    session.add(AuditEvent(at=utcnow(), action=action, actor=actor.actor, unit_id=unit,
                           submission_id=submission.id if submission is not None else None, details=details))


def _already(session: Session, submission: Submission) -> str:
    if submission.status == Status.CLEARED.value:
        return f"submission {submission.id} was cleared at once: there is nothing to decide"
    decider = session.get(ApiKey, submission.decided_by) if submission.decided_by else None
    who = f" by {key_name(decider)}" if decider else ""
    return f"submission {submission.id} was already {submission.status}{who} at {submission.decided_at:%Y-%m-%d %H:%M:%S} UTC"


def _webhook_body(submission: Submission) -> str:
    return json.dumps({
        "event": WEBHOOK_EVENT, "submission_id": submission.id, "status": submission.status,
        "unit": submission.unit_id, "account": submission.account, "comment": submission.comment,
        "decided_at": utc_text(submission.decided_at) if submission.decided_at else None,
    }, ensure_ascii=False, separators=(",", ":"))
