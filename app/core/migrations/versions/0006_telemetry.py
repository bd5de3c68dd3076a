"""checkpoint write time, workers' current job and throughput (for /metrics)

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
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("write_seconds", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("score_seconds", sa.Float(), nullable=True))
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("job_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("images_per_sec", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("images_per_sec")
        batch_op.drop_column("job_id")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("score_seconds")
        batch_op.drop_column("write_seconds")
