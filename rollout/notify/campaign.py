"""The notice campaign: its schedule, each wave's audience, and the exactly-once ledger.

Core functions take a Session and flush; the claim/outcome functions take a
Connection and run one short transaction each, because every e-mail is a side
effect of its own (record intent, send, record outcome).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby, islice
from operator import itemgetter
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, CursorResult, and_, func, insert, select, type_coerce, update
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from ..db import insert_rows
from ..errors import DeliveryError
from ..models import (
    Campaign,
    Cohort,
    CohortMember,
    Customer,
    Evidence,
    Exemption,
    LegacyDay,
    Mailbox,
    Notice,
    NoticeMailbox,
    Plan,
    table_of,
)
from ..rules import REFUSING_STAGES, has_switched
from .notices import CampaignFacts, NoticeContext, NoticeFacts, NoticeLine, notice_context

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def wave_due_at(campaign: Campaign, wave: int) -> datetime:
    """Wave k is due (k-1) weeks after wave 1, at the same local wall-clock time (DST-safe)."""
    zone = _zone(campaign.timezone)
    local = campaign.first_at.astimezone(zone)
    naive = local.replace(tzinfo=None) + timedelta(weeks=wave - 1)
    return naive.replace(tzinfo=zone).astimezone(UTC)


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
    last_legacy_at: Any  # UTC, as stored (see ``_as_stored``): copied to the ledger as it is
    last_ip: str | None
    confident: bool
    switched: bool
    switch_at: Any = None  # likewise
    senders: str | None = None  # envelope senders other than its own address, on the last day of legacy use
    basis: str | None = None  # why a medium sighting is theirs (notices.BASES); None for a high one
    login_gap_seconds: int | None = None


@dataclass
class Audience:
    reminders: dict[int, list[MailboxUse]] = field(default_factory=dict)  # customer id → listed mailboxes
    switched: set[int] = field(default_factory=set)  # mailbox ids that switched to SMTP AUTH


def reminders(
    session: Session, now: datetime, lookback_days: int, switched: set[int] | None = None
) -> Iterator[tuple[int, list[MailboxUse]]]:
    """(customer id, mailboxes to list) per customer to remind, streamed one customer at a time.

    Legacy use (confidence high or medium: ambiguous sightings are not legacy use until
    ops attribute them) in the lookback period, from its first sighting; not switched,
    not exempt, cohort not switched off. One query ordered by customer carries each
    mailbox's days and its cohort under the active plan, so a wave of hundreds of
    thousands of mailboxes is never held in memory. Mailboxes that switched to SMTP
    AUTH are added to ``switched`` when it is given (thank-you notes need them).
    """
    since = (now - timedelta(days=lookback_days)).date()
    exempt = set(
        session.scalars(select(Exemption.mailbox_id).where(Exemption.ended_at.is_(None), Exemption.until > now))
    )
    member = and_(
        CohortMember.mailbox_id == LegacyDay.mailbox_id, CohortMember.plan_id.in_(select(Plan.id).where(Plan.active))
    )
    # a medium day's evidence sample says why the sighting is theirs (high days need no explaining)
    sample = and_(
        Evidence.mailbox_id == LegacyDay.mailbox_id,
        Evidence.day == LegacyDay.day,
        Evidence.kind == "legacy",
        LegacyDay.confidence == "medium",
    )
    rows = session.connection().execute(  # Core, not the ORM: a third of the time per row
        select(
            LegacyDay.mailbox_id,
            LegacyDay.day,
            LegacyDay.legacy_count,
            LegacyDay.high_count,
            LegacyDay.confidence,
            _as_stored(LegacyDay.last_seen),
            LegacyDay.last_ip,
            _as_stored(LegacyDay.auth_last),
            Mailbox.customer_id,
            Mailbox.address,
            Cohort.stage,
            _as_stored(Cohort.scheduled_at),
            _as_stored(LegacyDay.senders),
            _as_stored(Evidence.details),
        )
        .join(Mailbox, Mailbox.id == LegacyDay.mailbox_id)
        .outerjoin(CohortMember, member)
        .outerjoin(Cohort, Cohort.id == CohortMember.cohort_id)
        .outerjoin(Evidence, sample)
        .where(LegacyDay.day >= since, LegacyDay.day <= now.date())
        .order_by(Mailbox.customer_id, LegacyDay.mailbox_id, LegacyDay.day)
        .execution_options(yield_per=5000)
    )
    by_customer = itemgetter(8)  # the columns as selected above: rows are unpacked as plain tuples
    for customer_id, customer_rows in groupby(rows, key=by_customer):
        listed = []
        for mailbox_id, days in groupby(customer_rows, key=itemgetter(0)):
            group = list(days)
            use = _use(group)
            if use is None:
                continue
            if use.switched and switched is not None:
                switched.add(mailbox_id)
            stage, scheduled_at = group[0][10], group[0][11]
            if use.confident and not use.switched and mailbox_id not in exempt and stage not in REFUSING_STAGES:
                use.switch_at = scheduled_at
                listed.append(use)
        if listed:
            yield customer_id, sorted(listed, key=lambda u: u.address.lower())


def _as_stored(column: Any) -> Any:
    """A column as the driver returns it: a time not converted to an aware datetime, JSON not decoded.

    UTC either way (see ``UTCDateTime``): naive datetimes on PostgreSQL, fixed-width ISO
    text on SQLite, which compare in time order too. A wave's hundreds of thousands of
    times go to the ledger and the workers as they are (``notices.utc`` converts them for
    the templates): converting each here was a fifth of the ledger process's preflight.
    """
    return type_coerce(column, NullType()).label(column.key)


def _use(days: Sequence[Sequence[Any]]) -> MailboxUse | None:
    """One mailbox's days → its last legacy use (with what was seen that day), whether it switched since.

    None without legacy use. Every legacy sighting counts from the first one
    (``confident``): the detection rules decide what is legacy use, not waiting for a
    second day. One pass over plain tuples: it runs once per affected mailbox of a
    wave (Row attribute access cost more than the rest).
    """
    last_at = last_ip = auth_last = last_day = None
    for row in days:
        mailbox_id, day, legacy_count, high_count, confidence, last_seen, ip, auth, customer_id, address = row[:10]
        if legacy_count and last_seen and (last_at is None or last_seen > last_at):
            last_at, last_ip, last_day = last_seen, ip, row
        if auth and (auth_last is None or auth > auth_last):
            auth_last = auth
    if last_day is None:
        return None
    # JSON as stored: decoded only here, for the last day (a third of a wave's time)
    senders, details = last_day[12], last_day[13]
    basis, gap = why_theirs(last_day[4], _json(details)) if details is not None else (None, None)
    return MailboxUse(
        mailbox_id=mailbox_id,
        customer_id=customer_id,
        address=address,
        last_legacy_at=last_at,
        last_ip=last_ip,
        confident=True,
        switched=has_switched(last_at, auth_last),
        senders=_other_senders(_json(senders), address) if senders not in (None, "[]", []) else None,
        basis=basis,
        login_gap_seconds=gap,
    )


def _json(value: Any) -> Any:
    """A JSON column as the driver returned it: text on SQLite, already decoded by psycopg on PostgreSQL."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _other_senders(senders: list[Any] | None, address: str) -> str | None:
    """Envelope senders other than the mailbox's own address (at most three): what the customer may not recognise."""
    own = address.lower()
    return ", ".join([str(s) for s in senders or () if str(s).lower() != own][:3]) or None


def why_theirs(confidence: str | None, details: dict[str, Any] | None) -> tuple[str | None, int | None]:
    """A medium sighting's basis (``notices.BASES``) and the seconds from the login, from its evidence sample."""
    if confidence != "medium" or not details:
        return None, None
    gap = details.get("delta_seconds")
    gap = int(gap) if isinstance(gap, (int, float)) else None
    flags = details.get("flags") or ()
    if details.get("attributed_by"):
        return "attributed", None
    if details.get("tier") == "extended":
        return "late_login", gap
    if "shared_ip" in flags:
        return "sender_named", gap
    return "only_login", gap


def audience(session: Session, now: datetime, lookback_days: int) -> Audience:
    """Every customer to remind (see ``reminders``) at once: for a preview, not for a whole wave."""
    result = Audience()
    result.reminders = dict(reminders(session, now, lookback_days, result.switched))
    return result


def thank_you_candidates(
    session: Session, campaign_id: int, switched: set[int], reminded_now: Iterable[int]
) -> dict[int, list[tuple[int, str]]]:
    """Customers reminded before in this campaign whose listed mailboxes all switched: their (mailbox id, address)s."""
    rows = session.execute(
        select(Notice.customer_id, NoticeMailbox.mailbox_id, Mailbox.address)
        .join(NoticeMailbox, NoticeMailbox.notice_id == Notice.id)
        .join(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
        .where(Notice.campaign_id == campaign_id, Notice.kind == "reminder", Notice.state == "sent")
    ).all()
    told: dict[int, dict[int, str]] = defaultdict(dict)
    for row in rows:
        told[row.customer_id][row.mailbox_id] = row.address
    skip = set(reminded_now)
    return {
        c: sorted(m.items(), key=lambda x: x[1].lower())
        for c, m in told.items()
        if c not in skip and set(m) <= switched
    }


# --- the ledger ---------------------------------------------------------------------------


def lock_campaign(session: Session, campaign_id: int) -> None:
    """Serialise the ledger set-up of concurrent runs, and make it a write transaction from its start.

    PostgreSQL: a row lock on the campaign. SQLite: a transaction whose first
    statement writes waits for the write lock (busy timeout); one that read first
    and writes later fails at once if another process wrote in between.
    """
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(active=Campaign.active))


@contextmanager
def small_page_cache(session: Session, kib: int = 8192) -> Iterator[None]:
    """SQLite: an 8 MB page cache for the ledger set-up instead of the engine's 64 MB (for imports).

    A wave reads its rows once, in order, and appends to the ledger: the big
    cache and the sort it allows in memory made the ledger process 60 MB larger,
    and no faster. The connection's own setting is restored afterwards.
    """
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    driver = session.connection().connection.driver_connection  # still ours after a rollback gives the session's back
    assert driver is not None  # None only once the connection is closed or invalidated
    before = driver.execute("PRAGMA cache_size").fetchone()[0]
    driver.execute(f"PRAGMA cache_size=-{int(kib)}")
    try:
        yield
    finally:
        driver.execute(f"PRAGMA cache_size={int(before)}")


def existing_customers(session: Session, campaign_id: int, wave: int) -> set[int]:
    return set(
        session.scalars(select(Notice.customer_id).where(Notice.campaign_id == campaign_id, Notice.wave == wave))
    )


def add_notices(
    session: Session,
    campaign: Campaign,
    wave: int,
    kind: str,
    lists: Iterable[tuple[int, list[MailboxUse]]],
    message_id: Callable[[int], str],
    now: datetime,
) -> Iterator[tuple[int, NoticeFacts]]:
    """Insert pending ledger rows, and the mailboxes each lists, as ``lists`` streams by.

    Yields (notice id, facts) of each new notice, so the preflight renders it while
    later ones are inserted, from what is in hand: no query reads it back. Batches
    of many rows per statement (the notices RETURNING their ids), not the ORM: a
    wave writes hundreds of thousands of rows before its first message.
    """
    conn = session.connection()
    lists = iter(lists)
    while batch := list(islice(lists, 2000)):
        customers = {
            row.id: row
            for row in conn.execute(
                select(Customer.id, Customer.email, Customer.name, Customer.locale, Customer.external_id).where(
                    Customer.id.in_([c for c, _ in batch])
                )
            )
        }
        ids = {c: message_id(c) for c, _ in batch}
        notices = conn.execute(
            insert(table_of(Notice)).returning(Notice.id, Notice.customer_id),
            [
                dict(
                    campaign_id=campaign.id,
                    wave=wave,
                    customer_id=c,
                    kind=kind,
                    state="pending",
                    to_address=customers[c].email,
                    message_id=ids[c],
                    attempts=0,
                    created_at=now,
                )
                for c, _ in batch
            ],
        )
        notice_ids = {customer_id: notice_id for notice_id, customer_id in notices}
        insert_rows(
            conn,
            table_of(NoticeMailbox),
            (
                "notice_id",
                "mailbox_id",
                "switch_at",
                "last_legacy_at",
                "last_ip",
                "senders",
                "basis",
                "login_gap_seconds",
            ),
            [
                (
                    notice_ids[c],
                    u.mailbox_id,
                    u.switch_at,
                    u.last_legacy_at,
                    u.last_ip,
                    u.senders,
                    u.basis,
                    u.login_gap_seconds,
                )
                for c, uses in batch
                for u in uses
            ],
            as_stored=True,
        )
        for c, uses in batch:
            customer = customers[c]
            lines = [_notice_line(u) for u in uses]
            yield (
                notice_ids[c],
                NoticeFacts(
                    ids[c], wave, kind, customer.external_id, customer.name, customer.email, customer.locale, lines
                ),
            )


def state_counts(conn: Connection | Session, campaign_id: int, waves: list[int]) -> dict[str, int]:
    rows = conn.execute(
        select(Notice.state, func.count())
        .where(Notice.campaign_id == campaign_id, Notice.wave.in_(waves))
        .group_by(Notice.state)
    ).all()
    return {state: n for state, n in rows}


class SendLedger:
    """The send loop's transaction: record finished sends, claim the next notices. One per round.

    The loop commits every few messages, hundreds of times a second, and
    SQLAlchemy's execution machinery was three quarters of each round (about
    300 of 400 µs, most of the ledger process's time). So these two statements
    run on the driver's own connection: plain SQL that SQLite and PostgreSQL
    share, with each driver's placeholders, and times converted by the
    columns' own SQLAlchemy bind processors, so they are stored exactly as the
    ORM stores them. Used only between transactions of the SQLAlchemy
    connection it comes from.
    """

    def __init__(self, conn: Connection, campaign_id: int, waves: list[int], claimer: str) -> None:
        dialect = conn.dialect
        if dialect.name not in ("sqlite", "postgresql"):
            raise DeliveryError(f"notify supports SQLite and PostgreSQL, not {dialect.name}")
        self.sqlite = dialect.name == "sqlite"
        driver = conn.connection.driver_connection
        assert driver is not None  # None only once the connection is closed or invalidated
        self.driver: Any = driver  # sqlite3's or psycopg's connection
        self.campaign_id, self.waves, self.claimer = campaign_id, [int(w) for w in waves], claimer
        process = table_of(Notice).c.sent_at.type.dialect_impl(dialect).bind_processor(dialect)
        self.time: Callable[[Any], Any] = process if process is not None else _as_is

        def p(name: str) -> str:
            """The driver's placeholder for a named parameter."""
            return f":{name}" if self.sqlite else f"%({name})s"

        self.settle_sql = (
            f"UPDATE notices SET state = {p('state')}, last_reply = {p('reply')}, claimed_by = NULL, "
            f"sent_at = {p('sent')} WHERE id = {p('notice')} AND state = 'sending'"
        )
        # The pick is a CTE, materialised on PostgreSQL: as a plain IN (subquery) the
        # planner may run the LIMIT … SKIP LOCKED subquery more than once and claim more.
        self.claim_sql = (
            f"WITH picked AS {'' if self.sqlite else 'MATERIALIZED '}(SELECT id FROM notices "
            "WHERE campaign_id = {campaign} AND wave IN ({waves}) AND state = 'pending'{skip} "
            f"ORDER BY id LIMIT {p('count')}{'' if self.sqlite else ' FOR UPDATE SKIP LOCKED'}) "
            "UPDATE notices SET state = 'sending', attempts = attempts + 1, "
            f"claimed_by = {p('by')}, claimed_at = {p('at')} "
            "WHERE id IN (SELECT id FROM picked) AND state = 'pending' RETURNING id"
        )

    def settle_and_claim(
        self, outcomes: list[tuple[int, str, str]], count: int, now: datetime, skip: Iterable[int] = ()
    ) -> list[int]:
        """Record ``outcomes``, then move up to ``count`` pending notices to ``sending``; returns their ids.

        ``outcomes``: (notice id, ``sent`` | ``failed`` | ``pending`` (deferred), reply).
        The claim is the intent, committed before the send; the caller claims no
        more than it has idle connections, so at most one notice per connection
        is ever in flight. PostgreSQL: rows are locked with SKIP LOCKED, so
        concurrent runs take different ones. SQLite: the first UPDATE takes the
        database's write lock, which serialises runs. ``skip``: notices deferred
        earlier in this run (they wait for the next run).
        """
        at = self.time(now)
        cursor = self.driver.cursor()
        try:
            if self.sqlite:
                cursor.execute("BEGIN")
            if outcomes:
                cursor.executemany(
                    self.settle_sql,
                    [
                        dict(notice=n, state=state, reply=reply[:2000], sent=at if state == "sent" else None)
                        for n, state, reply in outcomes
                    ],
                )
            claimed: list[int] = []
            if count > 0:
                skipped = ",".join(str(int(i)) for i in skip)  # ids from our own ledger: integers, safe to inline
                sql = self.claim_sql.format(
                    campaign=int(self.campaign_id),
                    waves=",".join(map(str, self.waves)),
                    skip=f" AND id NOT IN ({skipped})" if skipped else "",
                )
                cursor.execute(sql, dict(by=self.claimer, at=at, count=count))
                claimed = sorted(row[0] for row in cursor.fetchall())
            self.driver.commit()
            return claimed
        except BaseException:
            self.driver.rollback()
            raise
        finally:
            cursor.close()


def _as_is(value: Any) -> Any:
    return value


def release_uncertain(session: Session, campaign_id: int, waves: list[int]) -> int:
    """``--resend-uncertain``: notices left in ``sending`` go back to ``pending``."""
    # an UPDATE's result is a CursorResult; Session.execute's typing says only Result
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Notice)
            .where(Notice.campaign_id == campaign_id, Notice.wave.in_(waves), Notice.state == "sending")
            .values(state="pending", claimed_by=None)
        ),
    )
    return result.rowcount or 0


def notice_facts(session: Session | Connection, notice_id: int) -> tuple[NoticeFacts, int]:
    """What a ledger row says, and its customer id."""
    notice = session.execute(
        select(
            Notice.id,
            Notice.wave,
            Notice.kind,
            Notice.to_address,
            Notice.message_id,
            Notice.customer_id,
            Customer.name,
            Customer.locale,
            Customer.external_id,
        )
        .join(Customer, Customer.id == Notice.customer_id)
        .where(Notice.id == notice_id)
    ).one()
    lines = session.execute(
        select(
            Mailbox.address,
            NoticeMailbox.last_legacy_at,
            NoticeMailbox.last_ip,
            NoticeMailbox.switch_at,
            NoticeMailbox.senders,
            NoticeMailbox.basis,
            NoticeMailbox.login_gap_seconds,
        )
        .join(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
        .where(NoticeMailbox.notice_id == notice_id)
        .order_by(Mailbox.address_key)
    ).all()
    return _facts(notice, [tuple(line) for line in lines]), notice.customer_id


def _notice_line(use: Any) -> NoticeLine:
    """A listed mailbox as a notice keeps it, from a ``MailboxUse`` or a ledger row with the same fields."""
    return (use.address, use.last_legacy_at, use.last_ip, use.switch_at, use.senders, use.basis, use.login_gap_seconds)


def _facts(notice: Any, lines: list[Any]) -> NoticeFacts:
    return NoticeFacts(
        notice.message_id,
        notice.wave,
        notice.kind,
        notice.external_id,
        notice.name,
        notice.to_address,
        notice.locale,
        lines,
    )


def campaign_facts(campaign: Campaign) -> CampaignFacts:
    return CampaignFacts(campaign.id, campaign.weeks, campaign.timezone, campaign_end(campaign))


def build_context(
    campaign: Campaign, wave: int, kind: str, customer: Any, to_address: str, lines: Iterable[Any], now: datetime
) -> NoticeContext:
    """``customer``: its external_id, name, locale; ``lines``: each mailbox's ``MailboxUse`` (or the same fields)."""
    facts = NoticeFacts(
        "",
        wave,
        kind,
        customer.external_id,
        customer.name,
        to_address,
        customer.locale,
        [_notice_line(use) for use in lines],
    )
    return notice_context(campaign_facts(campaign), facts, now)


def pending_facts(session: Session, campaign: Campaign, waves: list[int]) -> Iterator[tuple[int, NoticeFacts]]:
    """(notice id, facts) of every pending notice, in id order, for the preflight.

    Two streamed queries in notice order, the notices and the mailboxes they list,
    merged as they go: no query per notice, and no more than a batch in memory. The
    second does not filter on the state, which another run may change in between
    (on PostgreSQL each statement sees the latest commits): what a notice lists
    never changes, so a notice pending in the first always has its lines.
    """
    wave_rows = (Notice.campaign_id == campaign.id, Notice.wave.in_(waves))
    conn = session.connection()
    first = conn.execute(select(func.min(Notice.id)).where(*wave_rows, Notice.state == "pending")).scalar()
    if first is None:
        return
    notices = conn.execute(
        select(
            Notice.id,
            Notice.wave,
            Notice.kind,
            Notice.to_address,
            Notice.message_id,
            Customer.name,
            Customer.locale,
            Customer.external_id,
        )
        .join(Customer, Customer.id == Notice.customer_id)
        .where(*wave_rows, Notice.state == "pending")
        .order_by(Notice.id)
        .execution_options(yield_per=2000)
    )
    lines = conn.execute(
        select(
            NoticeMailbox.notice_id,
            Mailbox.address,
            Mailbox.address_key,
            NoticeMailbox.last_legacy_at,
            NoticeMailbox.last_ip,
            NoticeMailbox.switch_at,
            NoticeMailbox.senders,
            NoticeMailbox.basis,
            NoticeMailbox.login_gap_seconds,
        )
        .join(Notice, Notice.id == NoticeMailbox.notice_id)
        .join(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
        .where(*wave_rows, NoticeMailbox.notice_id >= first)
        .order_by(NoticeMailbox.notice_id)
        .execution_options(yield_per=5000)
    )
    by_notice = groupby(lines, key=lambda line: line.notice_id)
    listed_id, listed = next(by_notice, (None, iter(())))
    try:
        for n in notices:
            while listed_id is not None and listed_id < n.id:  # lines of a notice that is not pending
                listed_id, listed = next(by_notice, (None, iter(())))
            own = sorted(listed, key=lambda line: line.address_key) if listed_id == n.id else []
            yield (
                n.id,
                _facts(
                    n,
                    [_notice_line(line) for line in own],
                ),
            )
    finally:
        lines.close()  # the lines after the last pending notice are never read
        notices.close()
