"""datasets: domains and val_size (datasets of pairs and of two domains)

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
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("domains", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("val_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("val_size")
        batch_op.drop_column("domains")
