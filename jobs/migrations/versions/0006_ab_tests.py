"""A/B tests between two versions (or runs) of a model (versions/ab.py): both judged on the same held-out
prompts, the win rate of B over A with its interval, held-out losses and general-ability deltas.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ab_tests",
        sa.Column("id", sa.String(64), primary_key=True),  # also its folder's name: runs/ab/<id>/
        # Each side as asked (NAME@vN or a run id), its run, and its version when it was one: a version's
        # A/B results are found by the version, a run's by the run (a run promoted later shows them too).
        sa.Column("a_ref", sa.String(128), nullable=False),
        sa.Column("a_run_id", sa.String(64), sa.ForeignKey("training_jobs.id"), nullable=False),
        sa.Column("a_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=True),
        sa.Column("b_ref", sa.String(128), nullable=False),
        sa.Column("b_run_id", sa.String(64), sa.ForeignKey("training_jobs.id"), nullable=False),
        sa.Column("b_version_id", sa.Integer, sa.ForeignKey("model_versions.id"), nullable=True),
        sa.Column("data_sha256", sa.String(64), nullable=False),  # the held-out prompts both answered
        sa.Column("n_prompts", sa.Integer, nullable=False),
        # B over A (win 1, tie 0.5, loss 0), with the seeded bootstrap 95% interval; NULL when no pair was
        # scored (no judge, or every judgement unparseable).
        sa.Column("win_rate", sa.Float, nullable=True),
        sa.Column("ci_low", sa.Float, nullable=True),
        sa.Column("ci_high", sa.Float, nullable=True),
        sa.Column("a_heldout_loss", sa.Float, nullable=True),
        sa.Column("b_heldout_loss", sa.Float, nullable=True),
        sa.Column("general", sa.JSON, nullable=True),  # per task: A, B, delta (B - A), in points
        sa.Column("judge_model", sa.Text, nullable=True),
        sa.Column("result", sa.JSON, nullable=False),  # ab.json as written in the folder
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_ab_tests_a_run_id", "ab_tests", ["a_run_id"])
    op.create_index("ix_ab_tests_b_run_id", "ab_tests", ["b_run_id"])


def downgrade() -> None:
    op.drop_index("ix_ab_tests_b_run_id", "ab_tests")
    op.drop_index("ix_ab_tests_a_run_id", "ab_tests")
    op.drop_table("ab_tests")
