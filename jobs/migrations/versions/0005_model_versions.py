"""Named models and their versions (versions/): one immutable row per promoted run, its stage the customer's
(stored, testing, production, archived), at most one production version per model.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STAGES = "('stored', 'testing', 'production', 'archived')"


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("training_jobs.id"), nullable=False),
        sa.Column("adapter_sha256", sa.String(64), nullable=False),
        sa.Column("data_sha256", sa.String(64), nullable=True),
        sa.Column("config_sha256", sa.String(64), nullable=True),
        sa.Column("base_model", sa.Text, nullable=False),
        # The evaluation as it was when the version was made: a later re-evaluation of the run does not
        # change what was promoted.
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("scores", sa.JSON, nullable=True),
        sa.Column("forced", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False, server_default="stored"),
        sa.Column("stage_changed_at", sa.DateTime, nullable=False),
        sa.Column("stage_changed_by", sa.String(128), nullable=False),
        # Rollback's memory: when it last became production, and whether a rollback took it out (then it
        # is never a rollback's target again).
        sa.Column("production_at", sa.DateTime, nullable=True),
        sa.Column("rolled_back_at", sa.DateTime, nullable=True),
        # Where its files are (the version's folder in the store) and the sha256 of the manifest that
        # lists them; NULL while the upload is unfinished (a re-run of the promotion completes it).
        sa.Column("store_url", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.CheckConstraint(f"stage IN {STAGES}", name="ck_model_versions_stage"),
        sa.UniqueConstraint("model_name", "version", name="uq_model_versions_version"),
        sa.UniqueConstraint("model_name", "run_id", name="uq_model_versions_run"),
    )
    # One production version per model, whoever promotes at the same time: a partial unique index, which
    # SQLite (3.8+) and PostgreSQL both enforce.
    op.create_index(
        "ux_model_versions_production",
        "model_versions",
        ["model_name"],
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_run_id", "model_versions")
    op.drop_index("ux_model_versions_production", "model_versions")
    op.drop_table("model_versions")
