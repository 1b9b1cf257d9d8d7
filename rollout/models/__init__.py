"""All tables, by area. ``Base.metadata`` is what Alembic compares against."""

from .base import Base, UTCDateTime, table_of
from .campaign import Campaign, Notice, NoticeMailbox
from .core import AuditEvent, Customer, Mailbox
from .ops import JobRun
from .plan import Cohort, CohortMember, Exemption, HeldMailbox, MapVersion, Plan, Retirement, RolloutState
from .scan import Evidence, LegacyDay, RefusalHour, ReviewItem, ScanCarry, ScanSource, UnknownLogin
from .web import WebSecret, WebUser

__all__ = [
    "AuditEvent",
    "Base",
    "Campaign",
    "Cohort",
    "CohortMember",
    "Customer",
    "Evidence",
    "Exemption",
    "HeldMailbox",
    "JobRun",
    "LegacyDay",
    "Mailbox",
    "MapVersion",
    "Notice",
    "NoticeMailbox",
    "Plan",
    "RefusalHour",
    "Retirement",
    "ReviewItem",
    "RolloutState",
    "ScanCarry",
    "ScanSource",
    "UTCDateTime",
    "UnknownLogin",
    "WebSecret",
    "WebUser",
    "table_of",
]
