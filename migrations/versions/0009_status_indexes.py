"""indexes for the status at a million mailboxes: still-legacy from one narrow index, wave counts and bounces

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_legacy_days_usage",
        "legacy_days",
        ["mailbox_id", "day", "legacy_count", "last_seen", "auth_last"],
        unique=False,
    )
    op.create_index("ix_notices_state_delivery", "notices", ["campaign_id", "wave", "state", "delivery"], unique=False)
    op.drop_index("ix_notices_state", table_name="notices")
    op.create_index("ix_notices_delivery", "notices", ["delivery"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notices_delivery", table_name="notices")
    op.create_index("ix_notices_state", "notices", ["campaign_id", "wave", "state"], unique=False)
    op.drop_index("ix_notices_state_delivery", table_name="notices")
    op.drop_index("ix_legacy_days_usage", table_name="legacy_days")
