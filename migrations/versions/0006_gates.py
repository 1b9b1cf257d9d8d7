"""gates (refusals per hour, resume time) and the final step (retirements)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retirements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.Column("retired_at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("legacy_map", sa.Text(), nullable=False),
        sa.Column("saved", sa.Text(), nullable=True),
        sa.Column("entries_before", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("undone_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_retirements_plan_id_plans"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retirements")),
    )
    op.create_table(
        "refusal_hours",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_refusal_hours_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "hour", name=op.f("pk_refusal_hours")),
    )
    with op.batch_alter_table("refusal_hours", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refusal_hours_hour"), ["hour"], unique=False)

    with op.batch_alter_table("rollout_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resumed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollout_state", schema=None) as batch_op:
        batch_op.drop_column("resumed_at")

    with op.batch_alter_table("refusal_hours", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refusal_hours_hour"))

    op.drop_table("refusal_hours")
    op.drop_table("retirements")
