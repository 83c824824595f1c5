"""The three registry tables, as the customer's schema names them.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("preset", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("hardware", sa.String(64), nullable=False),
        sa.Column("pod_id", sa.String(64)),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("total_steps", sa.Integer),
        sa.Column("epoch", sa.Float),
        sa.Column("hyperparameters", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("completed_at", sa.DateTime),
        sa.Column("estimated_cost", sa.Float),
        sa.Column("actual_cost", sa.Float),
        sa.Column("gpu_hours", sa.Float),
        sa.Column("artifact_path", sa.Text),
        sa.Column("log_path", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("retry_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "model_artifacts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("training_jobs.id"), nullable=False, index=True),
        sa.Column("artifact_type", sa.String(16), nullable=False),
        sa.Column("storage_path", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("base_model", sa.Text, nullable=False),
        sa.Column("lora_config", sa.JSON, nullable=False),
        sa.Column("validation_loss", sa.Float),
        sa.Column("perplexity", sa.Float),
        sa.Column("human_score", sa.Float),
        sa.Column("deployment_status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "training_metrics_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), sa.ForeignKey("training_jobs.id"), nullable=False, index=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Float),
        sa.Column("loss", sa.Float),
        sa.Column("learning_rate", sa.Float),
        sa.Column("grad_norm", sa.Float),
        sa.Column("eval_loss", sa.Float),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("training_metrics_history")
    op.drop_table("model_artifacts")
    op.drop_table("training_jobs")
