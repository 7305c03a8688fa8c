"""Model identity: each submission records the SHA-256 of the weights that scored it.

Submissions stored before this keep null there: which weights scored them was not recorded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as table:
        table.add_column(sa.Column("model_weights_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submissions") as table:
        table.drop_column("model_weights_sha256")
