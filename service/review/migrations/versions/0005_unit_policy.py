"""Per-unit policy: a unit's own thresholds per category, or a category turned off; each submission
records the policy its decisions used.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # null: the model's thresholds for every category (and, on a submission, a decision from before 0005).
    op.add_column("units", sa.Column("policy", sa.JSON(), nullable=True))
    op.add_column("submissions", sa.Column("policy", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("submissions", "policy")
    op.drop_column("units", "policy")
