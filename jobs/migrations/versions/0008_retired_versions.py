"""A version can be retired (issue 28): taken out of use on purpose, so no rollback brings it back.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:  # batch: SQLite alters by copying the table
        batch.add_column(sa.Column("retired_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("retired_by", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("retired_by")
        batch.drop_column("retired_at")
