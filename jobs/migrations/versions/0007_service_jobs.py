"""Jobs the customer's app started through the service (POST /training/start): where their events go, and
whether the service has started them yet (jobs/service/queue.py).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_jobs",
        # No foreign key: a pod job's training_jobs row is made by its launcher once the pod exists.
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("webhook_url", sa.Text, nullable=False),
        # Sealed with a key derived from the service's TRAINING_WEBHOOK_SECRET (jobs/service/secrets.py):
        # the registry never holds a secret anyone can use.
        sa.Column("webhook_secret", sa.Text, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),  # local | pod
        sa.Column("request", sa.JSON, nullable=False),  # what was asked, less the secret and the URL's token
        sa.Column("created_at", sa.DateTime, nullable=False),
        # Set once the start request is checked whole: the row is the job id's claim before that.
        sa.Column("ready_at", sa.DateTime, nullable=True),
        sa.Column("dispatched_at", sa.DateTime, nullable=True),  # when its process was started
    )


def downgrade() -> None:
    op.drop_table("service_jobs")
