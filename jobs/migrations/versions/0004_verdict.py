"""A run's evaluation verdict (evals/): pass, fail or incomplete, and the figures it rests on.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("verdict", sa.String(16), nullable=True))
        # The gates and the headline figures (judge means, win rate and its interval, general-ability
        # deltas): what the API's job detail and the dashboard show without reading the run folder.
        batch.add_column(sa.Column("evaluation", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("evaluation")
        batch.drop_column("verdict")
