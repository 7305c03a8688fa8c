"""Reviewer labels and training consent: a reviewer may say whether each flagged photo was rightly
flagged (and what it shows); a unit may consent to keeping labelled photos for the data team, who
export them as a training batch.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from flexguard.service.review.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch copy of `units` would have to drop a table others refer to.
    op.add_column("units", sa.Column("training_consent", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("photos", sa.Column("review_verdict", sa.String(64), nullable=True))
    op.add_column("photos", sa.Column("review_categories", sa.JSON(), nullable=True))
    op.add_column("photos", sa.Column("exported_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    for column in ("exported_at", "review_categories", "review_verdict"):
        op.drop_column("photos", column)
    op.drop_column("units", "training_consent")
