"""Resolving sightings nobody is notified about: `rollout attribute` and `rollout dismiss`.

An ambiguous sighting (several users on one IP, no sender match) is never anyone's legacy use by
itself. Ops look at it (`rollout legacy --review`) and either attribute it to a mailbox, which then
has legacy use on that day like any other and is notified, or dismiss it. Both are audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..addresses import AddressError, parse_address
from ..errors import SightingError
from ..models import Evidence, LegacyDay, Mailbox, ReviewItem
from ..runtime import Runtime

CONFIDENCE_RANK = {None: 0, "medium": 1, "high": 2}
MAX_LISTED = 20  # as the scan keeps per mailbox and day


@dataclass
class Resolution:
    sighting: int
    resolution: str  # attributed | dismissed
    mailbox: str | None
    at: datetime
    reason: str


def attribute(runtime: Runtime, sighting: int, mailbox: str, reason: str) -> Resolution:
    """Make sighting ``sighting`` legacy use of ``mailbox`` (address or POP/IMAP login): notified from the next wave."""
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        item = _open_item(session, sighting, reason)
        target = _mailbox(session, mailbox)
        _add_legacy_use(session, item, target, runtime.actor, reason)
        item.resolution, item.mailbox_id = "attributed", target.id
        _resolved(item, now, runtime.actor, reason)
        audit.record(
            session,
            now,
            runtime.actor,
            "sighting.attribute",
            sighting=item.id,
            kind=item.kind,
            mailbox=target.address,
            seen_at=item.at.isoformat(),
            client_ip=item.client_ip,
            sender=item.sender,
            candidates=item.candidates,
            reason=reason,
        )
        return Resolution(item.id, "attributed", target.address, now, reason)


def dismiss(runtime: Runtime, sighting: int, reason: str) -> Resolution:
    """Close sighting ``sighting`` without making it anyone's legacy use."""
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        item = _open_item(session, sighting, reason)
        item.resolution = "dismissed"
        _resolved(item, now, runtime.actor, reason)
        audit.record(
            session,
            now,
            runtime.actor,
            "sighting.dismiss",
            sighting=item.id,
            kind=item.kind,
            seen_at=item.at.isoformat(),
            client_ip=item.client_ip,
            sender=item.sender,
            candidates=item.candidates,
            reason=reason,
        )
        return Resolution(item.id, "dismissed", None, now, reason)


def _open_item(session: Session, sighting: int, reason: str) -> ReviewItem:
    if not reason.strip():
        raise SightingError("--reason must say why (it goes in the audit log)")
    item = session.get(ReviewItem, sighting)
    if item is None:
        raise SightingError(f"there is no sighting {sighting}: `rollout legacy --review` lists them with their ids")
    if item.resolution is not None:
        raise SightingError(
            f"sighting {sighting} was already {item.resolution} by {item.resolved_by} "
            f"at {item.resolved_at:%Y-%m-%d %H:%M} UTC"
        )
    return item


def _resolved(item: ReviewItem, now: datetime, actor: str, reason: str) -> None:
    item.resolved_at, item.resolved_by, item.resolution_reason = now, actor, reason


def _mailbox(session: Session, query: str) -> Mailbox:
    """A mailbox by its address (any case, IDN either way) or its POP/IMAP login."""
    found = session.scalars(select(Mailbox).where(Mailbox.login == query)).first()
    if found is not None:
        return found
    try:
        key = parse_address(query).key
    except AddressError as exc:
        raise SightingError(f"{query!r} is neither a login nor a mailbox address: {exc}") from None
    found = session.scalars(select(Mailbox).where(Mailbox.address_key == key)).first()
    if found is None:
        raise SightingError(f"{query} is not in the inventory")
    return found


def _add_legacy_use(session: Session, item: ReviewItem, mailbox: Mailbox, actor: str, reason: str) -> None:
    """One legacy submission on the sighting's day (medium: a person decided, not the log), its lines as evidence."""
    day = item.at.date()
    row = session.get(LegacyDay, (mailbox.id, day))
    if row is None:
        row = LegacyDay(
            mailbox_id=mailbox.id,
            day=day,
            legacy_count=0,
            high_count=0,
            client_ips=[],
            senders=[],
            auth_count=0,
            near_miss_count=0,
            refused_count=0,
        )
        session.add(row)
    row.legacy_count += 1
    row.first_seen = min(filter(None, (row.first_seen, item.at)))
    if row.last_seen is None or item.at >= row.last_seen:
        row.last_seen, row.last_ip = item.at, item.client_ip
    row.client_ips = sorted({*row.client_ips, *([item.client_ip] if item.client_ip else [])})[:MAX_LISTED]
    row.senders = sorted({*row.senders, *([item.sender.lower()] if item.sender else [])})[:MAX_LISTED]
    if CONFIDENCE_RANK[row.confidence] < CONFIDENCE_RANK["medium"]:
        row.confidence = "medium"
    if session.get(Evidence, (mailbox.id, day, "legacy")) is None:
        session.add(
            Evidence(
                mailbox_id=mailbox.id,
                day=day,
                kind="legacy",
                lines=list(item.evidence),
                details={
                    "at": item.at.isoformat(),
                    "host": item.host,
                    "queue_id": item.queue_id,
                    "client_ip": item.client_ip,
                    "sender": item.sender,
                    "confidence": "medium",
                    "candidates": item.candidates,
                    "sighting": item.id,
                    "attributed_by": actor,
                    "reason": reason,
                },
            )
        )
    session.flush()
