"""scan positions, carried state, sightings and evidence

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("queue_id", sa.String(length=64), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.Column("sender", sa.String(length=320), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_items")),
        sa.UniqueConstraint("host", "queue_id", "at", name=op.f("uq_review_items_host_queue_id_at")),
    )
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_items_at"), ["at"], unique=False)
    op.create_table(
        "scan_carry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_carry")),
    )
    op.create_table(
        "scan_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("device", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.Column("last_scan_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_sources")),
        sa.UniqueConstraint("host", "path", name=op.f("uq_scan_sources_host_path")),
    )
    op.create_table(
        "unknown_logins",
        sa.Column("user", sa.String(length=320), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_ip", sa.String(length=45), nullable=True),
        sa.PrimaryKeyConstraint("user", name=op.f("pk_unknown_logins")),
    )
    op.create_table(
        "evidence",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lines", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_evidence_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "day", "kind", name=op.f("pk_evidence")),
    )
    op.create_table(
        "legacy_days",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("legacy_count", sa.Integer(), nullable=False),
        sa.Column("high_count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=True),
        sa.Column("last_ip", sa.String(length=45), nullable=True),
        sa.Column("client_ips", sa.JSON(), nullable=False),
        sa.Column("senders", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.String(length=8), nullable=True),
        sa.Column("auth_count", sa.Integer(), nullable=False),
        sa.Column("auth_last", sa.DateTime(), nullable=True),
        sa.Column("near_miss_count", sa.Integer(), nullable=False),
        sa.Column("refused_count", sa.Integer(), nullable=False),
        sa.Column("refused_last", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_legacy_days_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "day", name=op.f("pk_legacy_days")),
    )
    with op.batch_alter_table("legacy_days", schema=None) as batch_op:
        batch_op.create_index("ix_legacy_days_day", ["day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("legacy_days", schema=None) as batch_op:
        batch_op.drop_index("ix_legacy_days_day")
    op.drop_table("legacy_days")
    op.drop_table("evidence")
    op.drop_table("unknown_logins")
    op.drop_table("scan_sources")
    op.drop_table("scan_carry")
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_items_at"))
    op.drop_table("review_items")
