"""checkpoint scores and history, job best, loss history, locks

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
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "score_status", sa.String(length=20), nullable=False, server_default="pending"
            )
        )
        batch_op.add_column(sa.Column("scores", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("best_fd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("preferred", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("event_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pruned_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("best_checkpoint_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("best_fd", sa.Float(), nullable=True))
    op.create_table(
        "job_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("step_from", sa.Integer(), nullable=False),
        sa.Column("step_to", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("d_loss", sa.Float(), nullable=True),
        sa.Column("g_loss", sa.Float(), nullable=True),
        sa.Column("images_per_sec", sa.Float(), nullable=True),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_metrics_job_id"), ["job_id"], unique=False)
    op.create_table(
        "locks",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("locks")
    with op.batch_alter_table("job_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_metrics_job_id"))
    op.drop_table("job_metrics")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("best_fd")
        batch_op.drop_column("best_checkpoint_id")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        for column in (
            "pruned_at",
            "event_version",
            "preferred",
            "best_fd",
            "scores",
            "score_status",
        ):
            batch_op.drop_column(column)
