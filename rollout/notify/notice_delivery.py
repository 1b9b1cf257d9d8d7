"""The notice ledger's delivery states, learnt from the provider MTA's log (``logs.deliveries``).

``rollout scan`` hands the tracker the queue IDs of notices still on their way, feeds it the log,
and records what it learnt on the ledger rows: ``delivered``, ``bounced`` (with the remote reply)
or ``delayed``. Customers whose notices bounced are unreachable: support calls them, and a later
wave does not write again to an address that bounced with a 5xx.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from ..logs.deliveries import BOUNCED, DELAYED, DeliveryTracker, permanent
from ..models import Customer, Notice

SAVE_CHUNK = 500


def tracker_for(session: Session) -> DeliveryTracker:
    """A tracker that also follows the notices an earlier scan saw queued but not yet settled."""
    rows = session.execute(
        select(Notice.queue_id, Notice.message_id).where(
            Notice.queue_id.is_not(None), or_(Notice.delivery.is_(None), Notice.delivery == DELAYED)
        )
    )
    return DeliveryTracker({queue_id: message_id for queue_id, message_id in rows if queue_id is not None})


def record(session: Session, tracker: DeliveryTracker) -> dict[str, int]:
    """Write what the tracker learnt onto the ledger rows with those Message-IDs; returns counts per state.

    Message-IDs that are not in the ledger (a `notify --test-to` message) are ignored.
    """
    outcomes = tracker.outcomes
    ids = sorted(outcomes)
    counts: Counter[str] = Counter()
    for i in range(0, len(ids), SAVE_CHUNK):
        for notice in session.scalars(select(Notice).where(Notice.message_id.in_(ids[i : i + SAVE_CHUNK]))):
            outcome = outcomes[notice.message_id]
            notice.queue_id = outcome.queue_key
            if outcome.state is None:
                continue
            notice.delivery, notice.delivery_reply = outcome.state, outcome.reply
            notice.delivery_at = datetime.fromtimestamp(outcome.at, UTC) if outcome.at is not None else None
            counts[outcome.state] += 1
    session.flush()
    return dict(counts)


def hard_bounced_addresses(session: Session) -> set[str]:
    """Contact addresses (lower-cased) a notice bounced from with a 5xx: later waves leave them alone."""
    rows = session.execute(select(Notice.to_address, Notice.delivery_reply).where(Notice.delivery == BOUNCED))
    return {address.lower() for address, reply in rows if permanent(reply)}


def hard_bounced_customers(session: Session) -> set[int]:
    """Customers whose contact address (as the inventory has it now) bounced a notice with a 5xx."""
    bounced = sorted(hard_bounced_addresses(session))
    found: set[int] = set()
    for i in range(0, len(bounced), SAVE_CHUNK):
        found.update(
            session.scalars(select(Customer.id).where(func.lower(Customer.email).in_(bounced[i : i + SAVE_CHUNK])))
        )
    return found


@dataclass
class Unreachable:
    """A customer whose latest notice bounced: support should call."""

    customer: str
    name: str
    to_address: str
    wave: int
    bounced_at: datetime | None
    reply: str | None


def unreachable(session: Session, limit: int | None = None) -> list[Unreachable]:
    """Customers whose latest reminder with a known delivery state bounced, newest bounce first.

    Read from the bounced reminders (an index on the delivery state) that no later reminder with a known state
    followed, so the cost is the bounces', not every notice's.
    """
    later = aliased(Notice)
    known_since = (
        select(later.id)
        .where(
            later.customer_id == Notice.customer_id,
            later.id > Notice.id,
            later.kind == "reminder",
            later.delivery.is_not(None),
        )
        .exists()
    )
    query = (
        select(
            Customer.external_id,
            Customer.name,
            Notice.to_address,
            Notice.wave,
            Notice.delivery_at,
            Notice.delivery_reply,
        )
        .join(Customer, Customer.id == Notice.customer_id)
        .where(Notice.delivery == BOUNCED, Notice.kind == "reminder", ~known_since)
        .order_by(Notice.delivery_at.desc(), Customer.external_id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [Unreachable(*row) for row in session.execute(query)]


def delivery_counts(session: Session, campaign_id: int, waves: list[int]) -> dict[int, dict[str, int]]:
    """Per wave: how many sent notices are delivered, bounced, delayed, or not yet in the MTA's log (``unknown``)."""
    rows = session.execute(
        select(Notice.wave, Notice.delivery, func.count())
        .where(Notice.campaign_id == campaign_id, Notice.wave.in_(waves), Notice.state == "sent")
        .group_by(Notice.wave, Notice.delivery)
    )
    out: dict[int, dict[str, int]] = {}
    for wave, delivery, n in rows:
        out.setdefault(wave, {})[delivery or "unknown"] = n
    return out


def delivery_view(notice: Any) -> dict[str, Any]:
    """The delivery fields of one ledger row, for lookup and JSON."""
    return {"delivery": notice.delivery, "delivery_reply": notice.delivery_reply, "delivery_at": notice.delivery_at}


__all__ = [
    "Unreachable",
    "delivery_counts",
    "delivery_view",
    "hard_bounced_addresses",
    "hard_bounced_customers",
    "record",
    "tracker_for",
    "unreachable",
]
