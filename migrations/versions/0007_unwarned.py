"""notice delivery states, resolved sightings, mailboxes held back by a step

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_mailboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("cohort_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("held_at", sa.DateTime(), nullable=False),
        sa.Column("redated_cohort_id", sa.Integer(), nullable=True),
        sa.Column("released_at", sa.DateTime(), nullable=True),
        sa.Column("release", sa.String(length=16), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.Column("released_by", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["cohort_id"], ["cohorts.id"], name=op.f("fk_held_mailboxes_cohort_id_cohorts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_held_mailboxes_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plans.id"], name=op.f("fk_held_mailboxes_plan_id_plans"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["redated_cohort_id"],
            ["cohorts.id"],
            name=op.f("fk_held_mailboxes_redated_cohort_id_cohorts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_mailboxes")),
    )
    with op.batch_alter_table("held_mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_held_mailboxes_mailbox_id"), ["mailbox_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_held_mailboxes_plan_id"), ["plan_id"], unique=False)

    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delivery_reply", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("delivery_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("queue_id", sa.String(length=320), nullable=True))
        batch_op.create_index("ix_notices_message_id", ["message_id"], unique=False)

    with op.batch_alter_table("notice_mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("senders", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("basis", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("login_gap_seconds", sa.Integer(), nullable=True))

    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolution", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("mailbox_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("resolution_reason", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_review_items_mailbox_id_mailboxes"), "mailboxes", ["mailbox_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_review_items_mailbox_id_mailboxes"), type_="foreignkey")
        batch_op.drop_column("resolution_reason")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("resolved_by")
        batch_op.drop_column("mailbox_id")
        batch_op.drop_column("resolution")

    with op.batch_alter_table("notice_mailboxes", schema=None) as batch_op:
        batch_op.drop_column("login_gap_seconds")
        batch_op.drop_column("basis")
        batch_op.drop_column("senders")

    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index("ix_notices_message_id")
        batch_op.drop_column("queue_id")
        batch_op.drop_column("delivery_at")
        batch_op.drop_column("delivery_reply")
        batch_op.drop_column("delivery")

    with op.batch_alter_table("held_mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_held_mailboxes_plan_id"))
        batch_op.drop_index(batch_op.f("ix_held_mailboxes_mailbox_id"))

    op.drop_table("held_mailboxes")
