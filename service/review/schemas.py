"""The review API's JSON shapes, with descriptions for the OpenAPI docs.

Built from the store's records (``records``) by their ``of`` methods: the store knows nothing of
JSON or routes. The per-photo scores reuse the scoring API's own shapes, so a photo reads the same
in ``/v1/score`` and here.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from flexguard.models.vocabulary import Decision

from ..schemas import CategoryScore, EvidenceOut, Fraction, ImageInfo, ModelRef, ThresholdsOut, VideoOut
from .store import PhotoLabel
from .summary import Summary
from .records import AuditRecord, DeliveryRecord, KeyRecord, NewKeyRecord, PhotoRecord, SubmissionRecord, UnitRecord
from .tables import Role, Status, Verdict

MAX_COMMENT_CHARS = 2000
MAX_LABELS = 64  # one per photo of a submission, at most FLEXGUARD_MAX_FILES's default
SUBMISSIONS_ROUTE = "/v1/submissions"


def photo_url(submission_id: str, position: int) -> str:
    """Where a reviewer fetches a stored photo (the route in routes/submissions.py)."""
    return f"{SUBMISSIONS_ROUTE}/{submission_id}/photos/{position}"


class PhotoLabelOut(BaseModel):
    verdict: Verdict = Field(description="`correct` (benar): it shows luxury; `false_alarm` (bukan kemewahan): it does not.")
    categories: list[str] = Field(description="With `correct`: the categories it shows, by the reviewer (they may differ "
                                              "from the model's). Empty with `false_alarm`.")


class PhotoLabelIn(PhotoLabelOut):
    position: int = Field(ge=0, description="Which flagged photo of the submission, from 0.")


class ReviewPhoto(BaseModel):
    position: int = Field(description="The photo's place in the submission, from 0, in the order sent.")
    sha256: str = Field(description="SHA-256 of the photo's bytes, as sent.")
    risk: Fraction = Field(description="Overall risk: the highest category score.")
    decision: Decision = Field(description="The model's decision for this photo.")
    categories: list[CategoryScore] = Field(description="Every category's score, with its names in Indonesian and English.")
    evidence: list[EvidenceOut] = Field(description="Boxes for categories at or above review, strongest first.")
    image: ImageInfo = Field(description="The photo as read.")
    stored: bool = Field(description="Whether the photo's bytes are held for the reviewers: every photo of a pending "
                                     "submission, then its flagged photos until the purge.")
    url: str | None = Field(description="Where a reviewer of the unit fetches the photo, while it is stored.")
    review_label: PhotoLabelOut | None = Field(description="The reviewer's label of this flagged photo, if one was given.")
    video: VideoOut | None = Field(
        None, description="Only for a video: its frames scored and those flagged. What is stored (at `url`) is never "
                          "the video but a JPEG strip of its flagged frames (its worst frame if none is), each "
                          "frame's place in it given by `strip_box`.")

    @classmethod
    def of(cls, record: PhotoRecord, submission_id: str) -> "ReviewPhoto":
        label = (PhotoLabelOut(verdict=record.review_verdict, categories=list(record.review_categories))
                 if record.review_verdict else None)
        return cls(position=record.position, sha256=record.sha256, risk=record.risk, decision=record.decision,
                   stored=record.stored, url=photo_url(submission_id, record.position) if record.stored else None,
                   review_label=label, **record.result)


class Delivery(BaseModel):
    attempts: int = Field(description="Attempts made so far.")
    delivered_at: datetime | None = Field(description="When the receiver answered 2xx.")
    gave_up_at: datetime | None = Field(description="When flexguard stopped retrying.")
    next_attempt_at: datetime | None = Field(description="When the next attempt is due, while neither delivered nor given up.")
    last_status: int | None = Field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None = Field(description="Why the last attempt failed, if it did.")

    @classmethod
    def of(cls, record: DeliveryRecord) -> "Delivery":
        return cls(**asdict(record))


class SubmissionOut(BaseModel):
    id: str = Field(description="The submission's id.")
    unit: str = Field(description="The unit (OPD) whose reviewers decide it.")
    account: str = Field(description="The social-media account the post is for.")
    caption: str = Field(description="The post's caption.")
    status: Status = Field(
        description="`cleared`: every photo was `allow`, post it; `pending`: waiting for a reviewer; "
                    "`approved`/`rejected`: a reviewer decided; `expired`: nobody decided within FLEXGUARD_PENDING_EXPIRY_DAYS (its photos are deleted)."
    )
    risk: Fraction = Field(description="The highest risk of its photos.")
    model: ModelRef = Field(description="The model that scored it.")
    thresholds: ThresholdsOut = Field(description="The thresholds its decisions used (the unit's policy may hold "
                                                  "categories to their own: see `policy`).")
    policy: dict[str, Any] | None = Field(
        description="The whole policy its decisions used: `review`, `block` and the unit's own `categories` "
                    "(thresholds, or `off`). Null for submissions stored before policies were recorded.")
    created_at: datetime = Field(description="When it was submitted (UTC).")
    decided_at: datetime | None = Field(description="When a reviewer decided it (UTC).")
    decided_by: str | None = Field(description="The deciding reviewer's key: its prefix and label.")
    comment: str | None = Field(description="The reviewer's comment.")
    photos_purged_at: datetime | None = Field(description="When its stored photos were deleted (the record stays).")
    photos: list[ReviewPhoto] = Field(description="Every photo, in the order sent.")
    webhook_deliveries: list[Delivery] = Field(description="Deliveries of its decision to the submitting tool's webhook.")

    @classmethod
    def fields_of(cls, record: SubmissionRecord) -> dict:
        return dict(
            id=record.id, unit=record.unit, account=record.account, caption=record.caption, status=record.status,
            risk=record.risk, model=ModelRef(name=record.model_name, version=record.model_version,
                                                weights_sha256=record.model_weights_sha256),
            thresholds=ThresholdsOut(review=record.review_threshold, block=record.block_threshold), policy=record.policy,
            created_at=record.created_at, decided_at=record.decided_at, decided_by=record.decided_by,
            comment=record.comment, photos_purged_at=record.photos_purged_at,
            photos=[ReviewPhoto.of(photo, record.id) for photo in record.photos],
            webhook_deliveries=[Delivery.of(delivery) for delivery in record.deliveries],
        )

    @classmethod
    def of(cls, record: SubmissionRecord) -> "SubmissionOut":
        return cls(**cls.fields_of(record))


class SubmissionCreated(SubmissionOut):
    replayed: bool = Field(
        description="True when this answers a repeat of an earlier request with the same Idempotency-Key: "
                    "nothing new was stored."
    )

    @classmethod
    def of(cls, record: SubmissionRecord) -> "SubmissionCreated":
        return cls(replayed=record.replayed, **cls.fields_of(record))


class SubmissionList(BaseModel):
    submissions: list[SubmissionOut] = Field(description="Oldest first for `pending`, newest first otherwise.")
    total: int = Field(description="How many match, over all pages.")


class DecisionIn(BaseModel):
    comment: str = Field("", max_length=MAX_COMMENT_CHARS, description="Why; required to reject.")
    labels: list[PhotoLabelIn] = Field(
        [], max_length=MAX_LABELS,
        description="Optional: for flagged photos, whether the flag was right (`correct`, with the categories the photo "
                    "shows) or a false alarm (`false_alarm`). Saying nothing is the default. Audited with the decision; "
                    "in a unit with training consent, labelled photos are kept for the data team.")

    def photo_labels(self) -> list[PhotoLabel]:
        return [PhotoLabel(label.position, label.verdict, tuple(dict.fromkeys(label.categories))) for label in self.labels]


class WebhookIn(BaseModel):
    url: str = Field(max_length=2048, description="An http(s) URL that receives a POST when a submission is decided.")


class WebhookOut(BaseModel):
    url: str = Field(description="The registered URL.")
    secret: str = Field(
        description="Signs every delivery: `X-Flexguard-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
                    "\"<t>.<body>\">`. Shown only when registered."
    )


class UnitIn(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Short id, e.g. `dinkes` (lower case, digits, -).")
    name: str = Field(min_length=1, max_length=200, description="Full name, e.g. `Dinas Kesehatan`.")


class UnitOut(UnitIn):
    created_at: datetime = Field(description="When the unit was added (UTC).")
    policy: dict[str, Any] | None = Field(
        description="The unit's own thresholds per category (`{\"luxury_travel\": \"off\", \"designer_bag\": "
                    "{\"review\": 0.7, \"block\": 0.95}}`); null: the model's for every category.")
    training_consent: bool = Field(description="Whether photos its reviewers label are kept for the data team "
                                               "(FLEXGUARD_TRAINING_RETENTION_DAYS at most, until exported).")

    @classmethod
    def of(cls, record: UnitRecord) -> "UnitOut":
        return cls(**asdict(record))


class PolicyIn(BaseModel):
    categories: dict[str, Any] | None = Field(
        description="Per category: `\"off\"` (never leads to review: e.g. luxury_travel for a tourism office) or "
                    "`{\"review\": .., \"block\": ..}`. Null or `{}`: the model's thresholds for every category.")


class WeekOut(BaseModel):
    week: str = Field(description="ISO week, e.g. `2026-W48` (weeks start on Monday, UTC).")
    posts: dict[str, int] = Field(description="Posts sent that week, by what became of them: cleared, pending, "
                                              "approved, rejected, expired.")


class CategoryLabelsOut(BaseModel):
    labelled: int = Field(description="Photos flagged for this category that a reviewer labelled.")
    false_alarms: int = Field(description="Of those, the ones the reviewer said do not show it.")
    false_alarm_rate: Fraction | None = Field(description="false_alarms / labelled; null when none were labelled.")


class SummaryOut(BaseModel):
    unit: str | None = Field(description="The unit summarised; null: every unit (admin key without `unit`).")
    weeks: list[WeekOut] = Field(description="The last weeks, oldest first.")
    flagged: dict[str, int] = Field(description="Photos flagged per category (a photo counts for each category it was flagged for).")
    decisions: int = Field(description="Posts a reviewer decided (approved or rejected) in these weeks.")
    median_hours_to_decision: float | None = Field(description="Median time from submission to decision, in hours.")
    p90_hours_to_decision: float | None = Field(description="90th percentile of the same.")
    labels: dict[str, CategoryLabelsOut] = Field(description="Per category, what reviewers' labels say of the model's flags.")

    @classmethod
    def of(cls, unit: str | None, summary: "Summary") -> "SummaryOut":
        median, high = summary.decision_hours
        return cls(
            unit=unit, weeks=[WeekOut(week=name, posts=posts) for name, posts in summary.weeks], flagged=summary.flagged,
            decisions=summary.decisions,
            median_hours_to_decision=None if median is None else round(median, 2),
            p90_hours_to_decision=None if high is None else round(high, 2),
            labels={category: CategoryLabelsOut(labelled=figures.labelled, false_alarms=figures.false_alarms,
                                                false_alarm_rate=figures.false_alarm_rate)
                    for category, figures in summary.labels.items()},
        )


class ConsentIn(BaseModel):
    training_consent: bool = Field(description="Keep this unit's reviewer-labelled photos for the data team (true), "
                                               "or purge them as any other photo (false, the default).")


class TrainingExportIn(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                      description="The batch's folder under FLEXGUARD_TRAINING_EXPORT_DIR, e.g. `2026-q4`. Send the same "
                                  "name again to finish an interrupted export: each photo is listed exactly once.")
    since: datetime | None = Field(None, description="Only posts decided at or after this time (ISO 8601).")
    unit: str | None = Field(None, description="Only this unit's photos.")


class TrainingExportOut(BaseModel):
    photos: int = Field(description="Photos exported by this request (now deleted from the review database).")
    by_unit: dict[str, int] = Field(description="Of those, how many per unit.")
    folder: str = Field(description="The batch's folder on the server: `manifest.csv` and `images/`.")
    listed: int = Field(description="Rows in the batch's manifest now, earlier requests with this name included.")


class KeyIn(BaseModel):
    role: Role = Field(description="`submit` (upload tools), `review` (unit heads), `admin`.")
    unit: str | None = Field(None, description="The unit, for submit and review keys.")
    label: str = Field("", max_length=200, description="Whose key this is, e.g. `Kepala Dinas`.")


class Identity(BaseModel):
    prefix: str = Field(description="The key's first characters, as lists and the audit trail name it.")
    role: Role = Field(description="What the key may do.")
    unit: str | None = Field(description="The unit of a submit or review key; none for an admin key.")
    label: str = Field(description="Whose key it is.")


class KeyOut(BaseModel):
    prefix: str = Field(description="The key's first characters: how lists and the audit trail name it.")
    role: str = Field(description="submit, review or admin.")
    unit: str | None = Field(description="The unit of a submit or review key; none for an admin key.")
    label: str = Field(description="Whose key it is.")
    created_at: datetime = Field(description="When it was made (UTC).")
    revoked_at: datetime | None = Field(description="When it was revoked (UTC); a revoked key no longer works.")

    @classmethod
    def of(cls, record: KeyRecord) -> "KeyOut":
        return cls(**asdict(record))


class NewKey(KeyOut):
    key: str = Field(description="The key itself, shown this once: flexguard keeps only its digest.")

    @classmethod
    def of(cls, created: NewKeyRecord) -> "NewKey":
        return cls(key=created.key, **asdict(created.record))


class AuditEventOut(BaseModel):
    id: int = Field(description="Increasing with time: events are exported in this order.")
    at: datetime = Field(description="When it happened (UTC).")
    action: str = Field(description="submitted, approved, rejected, photos_purged, webhook_delivered, webhook_failed, "
                                    "unit_created, key_created, key_revoked, webhook_registered, webhook_removed.")
    actor: str = Field(description="The key (prefix and role), the command-line user (`cli:<login>`) or `flexguard` itself.")
    unit: str | None = Field(description="The unit concerned, if any.")
    submission_id: str | None = Field(description="The submission concerned, if any.")
    details: dict = Field(description="What changed: scores and model version at the time, comments, counts.")

    @classmethod
    def of(cls, record: AuditRecord) -> "AuditEventOut":
        return cls(**asdict(record))
