"""Where a pod run runs and what it costs an hour: the GPU type, how many, the pod's price per hour.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("gpu_type", sa.String(64), nullable=True))
        batch.add_column(sa.Column("gpu_count", sa.Integer, nullable=True))
        # USD per hour for the whole pod (RunPod's costPerHr: per-GPU price × GPUs) of the current pod.
        batch.add_column(sa.Column("price_per_hour", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("price_per_hour")
        batch.drop_column("gpu_count")
        batch.drop_column("gpu_type")
