"""The rollout's domain rules, each defined once under its name; every area asks here.

*Switched* and *still legacy* are one rule seen from two sides. A mailbox is still legacy while
its last legacy use is not followed by authenticated sending; it has switched once an
authenticated submission was seen strictly after its last legacy use (or it sends authenticated
and never used the legacy path). Equal times count as **still legacy**: log stamps are often whole
seconds, and one second can hold a legacy relay and an authenticated message from two clients of
the same customer (a phone with SMTP AUTH, a desktop without), so the same second proves no
order. Calling that mailbox switched would drop it from the notices and from the step gate's
count while its desktop still relays: PRODUCT.md wants nobody switched off unwarned, so the tie
goes to the side that keeps warning.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

# A cohort climbs these stages (settings.enforcement.ladder picks which of the last three it uses).
STAGES = ("pending", "warn", "defer", "reject")
# Stages at which the legacy path is refused: the customer can no longer relay without SMTP AUTH
# (``warn`` only logs and still delivers).
REFUSING_STAGES = ("defer", "reject")
# Where the rollout stands, in order (``rollout status``); "done" only once the final step has retired
# the legacy POP-before-SMTP map after the last cohort (rollout/plan/retirement.py).
PHASES = ("inventory", "scanning", "notices", "switch-off", "done")


def is_still_legacy(last_legacy: datetime | None, last_auth: datetime | None) -> bool:
    """Legacy use seen, and no authenticated sending strictly after the last of it."""
    return last_legacy is not None and (last_auth is None or last_auth <= last_legacy)


def has_switched(last_legacy: datetime | None, last_auth: datetime | None) -> bool:
    """Authenticated sending seen, and the mailbox is not still legacy."""
    return last_auth is not None and not is_still_legacy(last_legacy, last_auth)


def still_legacy_clause(last_legacy: ColumnElement[Any], last_auth: ColumnElement[Any]) -> ColumnElement[bool]:
    """``is_still_legacy`` as SQL, for queries that count in the database."""
    return and_(last_legacy.is_not(None), or_(last_auth.is_(None), last_auth <= last_legacy))
