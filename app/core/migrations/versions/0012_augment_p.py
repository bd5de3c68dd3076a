"""jobs and job_metrics: augment_p (the augmentation probability a run reports; adaptive
augmentation moves it as training goes)

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("jobs", "job_metrics"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("augment_p", sa.Float(), nullable=True))


def downgrade() -> None:
    for table in ("jobs", "job_metrics"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("augment_p")
