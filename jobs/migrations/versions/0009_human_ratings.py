"""Human ratings of a version's held-out answers (issue 27, item 6): one row per rater and prompt, blind.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "human_ratings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("item_id", sa.String(128), nullable=False),  # the prompt's id (the turn's pair_id)
        sa.Column("conversation_id", sa.String(128), nullable=False),  # the unit its intervals resample
        sa.Column("rater", sa.String(64), nullable=False),
        # Which answer the page showed first ("base" or "adapter"): a position bias is visible later.
        sa.Column("first_model", sa.String(8), nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),  # {"base": {criterion: 1-5}, "adapter": {...}}
        sa.Column("preference", sa.String(8), nullable=False),  # base | adapter | tie
        sa.Column("created_at", sa.DateTime, nullable=False),
        # One rating per rater and prompt: a second submit (a double click, two tabs) is refused.
        sa.UniqueConstraint("version_id", "item_id", "rater", name="uq_human_ratings_rater_item"),
    )
    op.create_index("ix_human_ratings_version_id", "human_ratings", ["version_id"])


def downgrade() -> None:
    op.drop_index("ix_human_ratings_version_id", "human_ratings")
    op.drop_table("human_ratings")
