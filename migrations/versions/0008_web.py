"""support desk: web accounts, the cookie key, indexes for its search and cohort pages

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_users")),
        sa.UniqueConstraint("name", name=op.f("uq_web_users_name")),
    )
    op.create_table(
        "web_secrets",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_web_secrets")),
    )
    op.create_index("ix_customers_email_lower", "customers", [sa.text("lower(email)")], unique=False)
    op.create_index(
        "ix_cohort_members_cohort_id_mailbox_id", "cohort_members", ["cohort_id", "mailbox_id"], unique=False
    )
    op.create_index(
        "ix_legacy_days_refused",
        "legacy_days",
        ["mailbox_id", "day"],
        unique=False,
        sqlite_where=sa.text("refused_count > 0"),
        postgresql_where=sa.text("refused_count > 0"),
    )
    op.create_index("ix_customers_external_id_lower", "customers", [sa.text("lower(external_id)")], unique=False)


def downgrade() -> None:
    op.drop_index("ix_customers_external_id_lower", table_name="customers")
    op.drop_index("ix_legacy_days_refused", table_name="legacy_days")
    op.drop_index("ix_cohort_members_cohort_id_mailbox_id", table_name="cohort_members")
    op.drop_index("ix_customers_email_lower", table_name="customers")
    op.drop_table("web_secrets")
    op.drop_table("web_users")
