"""The notice campaign: its schedule, each wave's audience, and the exactly-once ledger.

Core functions take a Session and flush; the claim/outcome functions take a
Connection and run one short transaction each, because every e-mail is a side
effect of its own (record intent, send, record outcome).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby, islice
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.orm import Session

from .cohorts import schedule_for
from .errors import DeliveryError
from .models import Campaign, Customer, Exemption, LegacyDay, Mailbox, Notice, NoticeMailbox
from .notices import MailboxLine, NoticeContext

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SWITCHED_OFF_STAGES = ("defer", "reject")


# --- schedule -----------------------------------------------------------------------------


def first_wave_at(first: date, weekday: str, at: str, tz: str) -> datetime:
    """The first ``weekday`` on or after ``first``, at ``at`` local time, in UTC."""
    if weekday not in WEEKDAYS:
        raise DeliveryError(f"weekday must be one of {', '.join(WEEKDAYS)}, not {weekday!r}")
    zone = _zone(tz)
    try:
        hour, minute = (int(x) for x in at.split(":"))
        clock = time(hour, minute)
    except ValueError:
        raise DeliveryError(f"--at must be HH:MM, not {at!r}") from None
    day = first + timedelta(days=(WEEKDAYS.index(weekday) - first.weekday()) % 7)
    return datetime.combine(day, clock, tzinfo=zone).astimezone(timezone.utc)


def wave_due_at(campaign: Campaign, wave: int) -> datetime:
    """Wave k is due (k-1) weeks after wave 1, at the same local wall-clock time (DST-safe)."""
    zone = _zone(campaign.timezone)
    local = campaign.first_at.astimezone(zone)
    naive = local.replace(tzinfo=None) + timedelta(weeks=wave - 1)
    return naive.replace(tzinfo=zone).astimezone(timezone.utc)


def campaign_end(campaign: Campaign) -> datetime:
    """One week after the last wave: the default deadline when no plan gives dates."""
    return wave_due_at(campaign, campaign.weeks + 1)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeliveryError(f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)") from None


def active_campaign(session: Session) -> Campaign | None:
    return session.scalars(select(Campaign).where(Campaign.active).order_by(Campaign.id.desc()).limit(1)).first()


def latest_due_wave(campaign: Campaign, now: datetime) -> int | None:
    due = [k for k in range(1, campaign.weeks + 1) if wave_due_at(campaign, k) <= now]
    return due[-1] if due else None


# --- audience -----------------------------------------------------------------------------


@dataclass(slots=True)  # one per affected mailbox: hundreds of thousands in a run
class MailboxUse:
    mailbox_id: int
    customer_id: int
    address: str
    last_legacy_at: datetime | None
    last_ip: str | None
    confident: bool
    switched: bool
    switch_at: datetime | None = None
    excluded: str | None = None  # exempt | switched-off


@dataclass
class Audience:
    reminders: dict[int, list[MailboxUse]] = field(default_factory=dict)  # customer id → listed mailboxes
    switched: set[int] = field(default_factory=set)  # mailbox ids that switched to SMTP AUTH


def legacy_use(session: Session, now: datetime, lookback_days: int) -> dict[int, MailboxUse]:
    """Per mailbox with legacy use in the lookback period: is it confident, has it switched since."""
    since = (now - timedelta(days=lookback_days)).date()
    rows = session.execute(
        select(
            LegacyDay.mailbox_id, LegacyDay.day, LegacyDay.legacy_count, LegacyDay.high_count, LegacyDay.confidence,
            LegacyDay.last_seen, LegacyDay.last_ip, LegacyDay.auth_last, Mailbox.customer_id, Mailbox.address,
        )
        .join(Mailbox, Mailbox.id == LegacyDay.mailbox_id)
        .where(LegacyDay.day >= since, LegacyDay.day <= now.date())
        .order_by(LegacyDay.mailbox_id, LegacyDay.day)
        .execution_options(yield_per=5000)  # streamed: a mailbox's days are adjacent
    )
    uses: dict[int, MailboxUse] = {}
    for mailbox_id, days in groupby(rows, key=lambda r: r.mailbox_id):
        group = list(days)
        if any(d.legacy_count for d in group):
            uses[mailbox_id] = _use(group)
    return uses


def _use(days: list[Any]) -> MailboxUse:
    legacy = [d for d in days if d.legacy_count and d.last_seen]
    last = max(legacy, key=lambda d: d.last_seen) if legacy else None
    high = any(d.high_count for d in days)
    medium_days = {d.day for d in days if d.legacy_count and d.confidence in ("medium", "high")}
    auth_last = max((d.auth_last for d in days if d.auth_last), default=None)
    last_at = last.last_seen if last else None
    return MailboxUse(
        mailbox_id=days[0].mailbox_id,
        customer_id=days[0].customer_id,
        address=days[0].address,
        last_legacy_at=last_at,
        last_ip=last.last_ip if last else None,
        confident=high or len(medium_days) >= 2,
        switched=bool(auth_last and last_at and auth_last > last_at),
    )


def exempt_mailboxes(session: Session, now: datetime, mailbox_ids: Iterable[int]) -> set[int]:
    ids = list(mailbox_ids)
    found: set[int] = set()
    for chunk in _chunks(ids):
        found |= set(
            session.scalars(
                select(Exemption.mailbox_id).where(Exemption.mailbox_id.in_(chunk), Exemption.ended_at.is_(None), Exemption.until > now)
            )
        )
    return found


def audience(session: Session, now: datetime, lookback_days: int) -> Audience:
    """Customers to remind: confident legacy use, not switched, not exempt, not switched off."""
    uses = legacy_use(session, now, lookback_days)
    candidates = [u for u in uses.values() if u.confident and not u.switched]
    ids = [u.mailbox_id for u in candidates]
    exempt = exempt_mailboxes(session, now, ids)
    plan = schedule_for(session, ids)
    result = Audience(switched={u.mailbox_id for u in uses.values() if u.switched})
    for use in sorted(candidates, key=lambda u: u.address.lower()):
        planned = plan.get(use.mailbox_id)
        if use.mailbox_id in exempt or (planned and planned.stage in SWITCHED_OFF_STAGES):
            continue
        use.switch_at = planned.scheduled_at if planned else None
        result.reminders.setdefault(use.customer_id, []).append(use)
    return result


def thank_you_candidates(session: Session, campaign_id: int, switched: set[int], reminded_now: Iterable[int]) -> dict[int, list[int]]:
    """Customers reminded before in this campaign whose listed mailboxes have all switched."""
    rows = session.execute(
        select(Notice.customer_id, NoticeMailbox.mailbox_id)
        .join(NoticeMailbox, NoticeMailbox.notice_id == Notice.id)
        .where(Notice.campaign_id == campaign_id, Notice.kind == "reminder", Notice.state == "sent")
    ).all()
    told: dict[int, set[int]] = defaultdict(set)
    for row in rows:
        told[row.customer_id].add(row.mailbox_id)
    skip = set(reminded_now)
    return {c: sorted(m) for c, m in told.items() if c not in skip and m <= switched}


def _chunks(ids: list[int], size: int = 5000) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


# --- the ledger ---------------------------------------------------------------------------


def lock_campaign(session: Session, campaign_id: int) -> None:
    """Serialise the ledger set-up of concurrent runs, and make it a write transaction from its start.

    PostgreSQL: a row lock on the campaign. SQLite: a transaction whose first
    statement writes waits for the write lock (busy timeout); one that read first
    and writes later fails at once if another process wrote in between.
    """
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(active=Campaign.active))


def existing_customers(session: Session, campaign_id: int, wave: int) -> set[int]:
    return set(session.scalars(select(Notice.customer_id).where(Notice.campaign_id == campaign_id, Notice.wave == wave)))


def add_notices(
    session: Session, campaign: Campaign, wave: int, kind: str, lists: dict[int, list[MailboxUse]], message_ids: dict[int, str], now: datetime
) -> int:
    """Insert pending ledger rows (and what each lists) for customers without one; returns how many."""
    if not lists:
        return 0
    emails = dict(session.execute(select(Customer.id, Customer.email).where(Customer.id.in_(list(lists)))).all())
    ids = list(lists)
    for chunk in _chunks(ids, 2000):
        session.execute(
            insert(Notice),
            [
                dict(campaign_id=campaign.id, wave=wave, customer_id=c, kind=kind, state="pending", to_address=emails[c],
                     message_id=message_ids[c], attempts=0, created_at=now)
                for c in chunk
            ],
        )
    notice_ids = dict(
        session.execute(select(Notice.customer_id, Notice.id).where(Notice.campaign_id == campaign.id, Notice.wave == wave, Notice.customer_id.in_(ids))).all()
        if len(ids) <= 5000
        else session.execute(select(Notice.customer_id, Notice.id).where(Notice.campaign_id == campaign.id, Notice.wave == wave)).all()
    )
    lines = (
        dict(notice_id=notice_ids[c], mailbox_id=u.mailbox_id, switch_at=u.switch_at, last_legacy_at=u.last_legacy_at, last_ip=u.last_ip)
        for c, uses in lists.items()
        for u in uses
    )
    while batch := list(islice(lines, 5000)):  # inserted in batches, never all in memory
        session.execute(insert(NoticeMailbox), batch)
    session.flush()
    return len(ids)


def state_counts(conn: Connection | Session, campaign_id: int, waves: list[int]) -> dict[str, int]:
    rows = conn.execute(
        select(Notice.state, func.count()).where(Notice.campaign_id == campaign_id, Notice.wave.in_(waves)).group_by(Notice.state)
    ).all()
    return {state: n for state, n in rows}


def claim_next(conn: Connection, campaign_id: int, waves: list[int], worker: str, now: datetime, skip: Iterable[int] = ()) -> int | None:
    """Move one pending notice to ``sending`` and commit: the intent, before the send.

    PostgreSQL: the row is locked with SKIP LOCKED so concurrent runs take
    different rows. SQLite: the UPDATE takes the database's write lock, which
    serialises claims. ``skip``: notices deferred earlier in this run (they wait for the next run).
    """
    skip = list(skip)
    pick = (
        select(Notice.id)
        .where(Notice.campaign_id == campaign_id, Notice.wave.in_(waves), Notice.state == "pending", *([Notice.id.not_in(skip)] if skip else []))
        .order_by(Notice.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with conn.begin():
        return conn.execute(
            update(Notice)
            .where(Notice.id == pick, Notice.state == "pending")
            .values(state="sending", attempts=Notice.attempts + 1, claimed_by=worker, claimed_at=now)
            .returning(Notice.id)
        ).scalar()


def record_outcome(conn: Connection, notice_id: int, state: str, reply: str, now: datetime) -> None:
    """``sent`` | ``failed`` | back to ``pending`` (deferred), in its own transaction."""
    values: dict[str, Any] = {"state": state, "last_reply": reply[:2000], "claimed_by": None}
    if state == "sent":
        values["sent_at"] = now
    with conn.begin():
        conn.execute(update(Notice).where(Notice.id == notice_id, Notice.state == "sending").values(**values))


def release_uncertain(session: Session, campaign_id: int, waves: list[int]) -> int:
    """``--resend-uncertain``: notices left in ``sending`` go back to ``pending``."""
    result = session.execute(
        update(Notice).where(Notice.campaign_id == campaign_id, Notice.wave.in_(waves), Notice.state == "sending").values(state="pending", claimed_by=None)
    )
    return result.rowcount or 0


def notice_context(session: Session | Connection, notice_id: int, campaign: Campaign, now: datetime) -> tuple[NoticeContext, int, str]:
    """What a ledger row says, as a template context; plus the customer id and the Message-ID."""
    notice = session.execute(
        select(Notice.id, Notice.wave, Notice.kind, Notice.to_address, Notice.message_id, Notice.customer_id, Customer.name, Customer.locale, Customer.external_id)
        .join(Customer, Customer.id == Notice.customer_id)
        .where(Notice.id == notice_id)
    ).one()
    lines = session.execute(
        select(Mailbox.address, NoticeMailbox.last_legacy_at, NoticeMailbox.last_ip, NoticeMailbox.switch_at)
        .join(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
        .where(NoticeMailbox.notice_id == notice_id)
        .order_by(Mailbox.address_key)
    ).all()
    return build_context(campaign, notice.wave, notice.kind, notice, lines, now), notice.customer_id, notice.message_id


def build_context(campaign: Campaign, wave: int, kind: str, customer: Any, lines: Iterable[Any], now: datetime) -> NoticeContext:
    mailboxes = tuple(MailboxLine(l.address, l.last_legacy_at, l.last_ip, l.switch_at) for l in lines)
    switch_dates = [m.switch_at for m in mailboxes if m.switch_at]
    return NoticeContext(
        campaign_id=campaign.id,
        wave=min(wave, campaign.weeks),
        weeks=campaign.weeks,
        kind=kind,
        customer_ref=customer.external_id,
        customer_name=customer.name,
        to_address=customer.to_address if hasattr(customer, "to_address") else customer.email,
        locale=customer.locale,
        mailboxes=mailboxes,
        deadline=min(switch_dates) if switch_dates else campaign_end(campaign),
        now=now,
        timezone=campaign.timezone,
    )


def pending_contexts(session: Session, campaign: Campaign, waves: list[int], now: datetime, chunk: int = 2000) -> Iterable[tuple[int, NoticeContext, str]]:
    """(notice id, context, Message-ID) of every pending notice, loaded in bulk for the preflight."""
    ids = list(
        session.scalars(
            select(Notice.id).where(Notice.campaign_id == campaign.id, Notice.wave.in_(waves), Notice.state == "pending").order_by(Notice.id)
        )
    )
    for part in _chunks(ids, chunk):
        notices = session.execute(
            select(Notice.id, Notice.wave, Notice.kind, Notice.to_address, Notice.message_id, Customer.name, Customer.locale, Customer.external_id)
            .join(Customer, Customer.id == Notice.customer_id)
            .where(Notice.id.in_(part))
        ).all()
        lines: dict[int, list[Any]] = defaultdict(list)
        for row in session.execute(
            select(NoticeMailbox.notice_id, Mailbox.address, NoticeMailbox.last_legacy_at, NoticeMailbox.last_ip, NoticeMailbox.switch_at)
            .join(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
            .where(NoticeMailbox.notice_id.in_(part))
            .order_by(NoticeMailbox.notice_id, Mailbox.address_key)
        ):
            lines[row.notice_id].append(row)
        for n in notices:
            yield n.id, build_context(campaign, n.wave, n.kind, n, lines[n.id], now), n.message_id
