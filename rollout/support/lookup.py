"""One customer on one screen, for support: "why can't I send?" answered in seconds.

Found by mailbox address (case-insensitive, IDN domains either way), POP login,
customer id or customer contact address. Every query goes through an index on a
mailbox or customer id, so the answer takes milliseconds on a million mailboxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, Select, and_, case, func, select
from sqlalchemy.orm import Session, joinedload

from ..addresses import AddressError, parse_address
from ..errors import RolloutError
from ..models import Cohort, CohortMember, Customer, Evidence, Exemption, LegacyDay, Mailbox, Notice, NoticeMailbox
from ..plan import holdback
from ..plan.holdback import HeldView
from ..plan.plans import active_plan_id
from ..rules import has_switched

MAX_MAILBOXES_SHOWN = 50  # a customer with hundreds of mailboxes: the legacy ones come first

# What a refused client sees: (address, stage) -> the SMTP reply. The enforcement
# backend owns the wording; the workflow passes its renderer in.
ReplyText = Callable[[str, str], str | None]


class NotFound(RolloutError):
    """Nothing in the inventory matches what support typed."""


@dataclass
class LegacyUse:
    last_seen: datetime | None
    last_ip: str | None
    client_ips: list[str]
    senders: list[str]
    submissions: int
    days: int
    confidence: str | None
    last_auth: datetime | None
    switched: bool  # rollout.rules.has_switched
    refusals: int
    last_refused: datetime | None


@dataclass
class CohortInfo:
    position: int
    label: str
    scheduled_at: datetime
    enforced_at: datetime | None
    stage: str


@dataclass
class ExemptionInfo:
    until: datetime
    reason: str
    actor: str
    active: bool


@dataclass
class MailboxReport:
    address: str
    login: str | None
    legacy: LegacyUse | None
    cohort: CohortInfo | None
    exemption: ExemptionInfo | None
    refused_reply: str | None  # the exact reply text a refused client sees now, if it is refused
    evidence: list[dict[str, Any]] = field(default_factory=list)
    evidence_day: date | None = None
    held: HeldView | None = None  # held back by a step: not warned in time (rollout.plan.holdback)


@dataclass
class NoticeInfo:
    wave: int
    kind: str
    state: str
    sent_at: datetime | None
    message_id: str
    to_address: str
    mailboxes: list[str]
    delivery: str | None = None  # delivered | bounced | delayed, from the provider MTA's log; None: not seen there yet
    delivery_reply: str | None = None
    delivery_at: datetime | None = None


@dataclass
class Lookup:
    query: str
    matched: str  # mailbox | login | customer | customer email
    customer_id: str
    customer_name: str
    customer_email: str
    locale: str
    mailbox_count: int
    mailboxes: list[MailboxReport]
    notices: list[NoticeInfo]


def lookup(session: Session, query: str, reply_text: ReplyText) -> Lookup:
    customer, matched, focus = find_customer(session, query.strip())
    shown = shown_mailboxes(session, customer.id, focus)
    # Everything below reads the shown mailboxes only (at most MAX_MAILBOXES_SHOWN), whatever the customer has.
    ids = [m.id for m in shown]
    legacy = legacy_uses(session, ids)
    cohorts = {m.id: CohortInfo(m.position, m.label, m.scheduled_at, m.enforced_at, m.stage) for m in shown if m.label}
    exemptions = exemption_infos(session, ids)
    held = {h.address: h for h in holdback.views(session, mailbox_ids=ids)}
    samples = evidence_samples(session, ids)
    reports = []
    for mailbox in shown:
        cohort, exemption = cohorts.get(mailbox.id), exemptions.get(mailbox.id)
        refused = (
            cohort is not None
            and cohort.enforced_at is not None
            and not (exemption and exemption.active)
            and mailbox.address not in held
        )
        day, lines = samples.get(mailbox.id, (None, []))
        reports.append(
            MailboxReport(
                address=mailbox.address,
                login=mailbox.login,
                legacy=legacy.get(mailbox.id),
                cohort=cohort,
                exemption=exemption,
                refused_reply=reply_text(mailbox.address, cohort.stage) if refused and cohort else None,
                evidence=lines,
                evidence_day=day,
                held=held.get(mailbox.address),
            )
        )
    return Lookup(
        query=query,
        matched=matched,
        customer_id=customer.external_id,
        customer_name=customer.name,
        customer_email=customer.email,
        locale=customer.locale,
        mailbox_count=shown[0].total if shown else 0,
        mailboxes=reports,
        notices=notice_infos(session, customer.id),
    )


def find_customer(session: Session, query: str) -> tuple[Customer, str, int | None]:
    """The customer, how the query matched, and the mailbox it named (if any)."""
    if not query:
        raise NotFound("give a mailbox address, a POP login or a customer id")
    mailbox = (
        _mailbox_by_address(session, query) or session.scalars(_with_customer().where(Mailbox.login == query)).first()
    )
    if mailbox is not None:
        return mailbox.customer, "mailbox" if "@" in query and mailbox.login != query else "login", mailbox.id
    customer = session.scalars(select(Customer).where(Customer.external_id == query)).first()
    if customer is not None:
        return customer, "customer", None
    # Case-insensitive fallbacks (indexes on lower(...), migration 0008), tried only when the exact ones found nothing.
    customer = session.scalars(select(Customer).where(func.lower(Customer.external_id) == query.lower())).first()
    if customer is not None:
        return customer, "customer", None
    if "@" in query:
        customer = session.scalars(
            select(Customer).where(func.lower(Customer.email) == query.lower()).order_by(Customer.id)
        ).first()
        if customer is not None:
            return customer, "customer email", None
    raise NotFound(f"{query!r} is not a mailbox, POP login, customer id or customer e-mail in the inventory")


def _mailbox_by_address(session: Session, query: str) -> Mailbox | None:
    if "@" not in query:
        return None
    try:
        key = parse_address(query).key
    except AddressError:
        key = query.lower()
    return session.scalars(_with_customer().where(Mailbox.address_key == key)).first()


def _with_customer() -> Select[Mailbox]:
    """Mailboxes with their customer, read in the same query (support always wants it)."""
    return select(Mailbox).options(joinedload(Mailbox.customer))


def shown_mailboxes(session: Session, customer_pk: int, focus: int | None) -> list[Row[Any]]:
    """The mailboxes support sees, in the order it sees them: the one asked about first, then those with legacy
    use (any day on record), then the rest by address; at most ``MAX_MAILBOXES_SHOWN``. Each row also has the
    customer's number of mailboxes (``total``) and the mailbox's cohort in the active plan (``label`` None: none).

    Sorted and cut in the database, so a customer with thousands of mailboxes costs what one with fifty does.
    Addresses sort by code point (Python's order) whatever the database's collation.
    """
    with_legacy = select(LegacyDay.mailbox_id).where(LegacyDay.mailbox_id == Mailbox.id).exists()
    order: list[Any] = [] if focus is None else [case((Mailbox.id == focus, 0), else_=1)]
    order += [
        case((with_legacy, 0), else_=1),
        Mailbox.address_key.collate(_BYTE_ORDER[session.get_bind().dialect.name]),
    ]
    plan = active_plan_id()
    query = (
        select(
            Mailbox.id,
            Mailbox.address,
            Mailbox.login,
            func.count().over().label("total"),  # counted before the limit
            Cohort.position,
            Cohort.label,
            Cohort.scheduled_at,
            Cohort.enforced_at,
            Cohort.stage,
        )
        .select_from(Mailbox)
        .outerjoin(CohortMember, and_(CohortMember.mailbox_id == Mailbox.id, CohortMember.plan_id == plan))
        .outerjoin(Cohort, Cohort.id == CohortMember.cohort_id)
        .where(Mailbox.customer_id == customer_pk)
        .order_by(*order)
        .limit(MAX_MAILBOXES_SHOWN)
    )
    return list(session.execute(query))


# The collation that compares UTF-8 text by code point, per dialect.
_BYTE_ORDER = {"sqlite": "BINARY", "postgresql": "C"}


def legacy_uses(session: Session, mailbox_ids: list[int]) -> dict[int, LegacyUse]:
    days: dict[int, list[Row[Any]]] = {}
    rows = session.execute(
        select(
            LegacyDay.mailbox_id,
            LegacyDay.legacy_count,
            LegacyDay.high_count,
            LegacyDay.last_seen,
            LegacyDay.last_ip,
            LegacyDay.client_ips,
            LegacyDay.senders,
            LegacyDay.confidence,
            LegacyDay.auth_last,
            LegacyDay.refused_count,
            LegacyDay.refused_last,
        )
        .where(LegacyDay.mailbox_id.in_(mailbox_ids))
        .order_by(LegacyDay.mailbox_id, LegacyDay.day)
    )
    for row in rows:
        days.setdefault(row.mailbox_id, []).append(row)
    return {mailbox_id: summarise(rows) for mailbox_id, rows in days.items()}


def summarise(rows: Sequence[Any]) -> LegacyUse:
    """One mailbox's legacy days (rows with LegacyDay's columns, oldest first) as support reads them."""
    legacy = [r for r in rows if r.legacy_count]
    last = max((r for r in legacy if r.last_seen), key=lambda r: r.last_seen, default=legacy[-1] if legacy else None)
    auth_times = [r.auth_last for r in rows if r.auth_last]
    refused = [r.refused_last for r in rows if r.refused_last]
    last_auth = max(auth_times) if auth_times else None
    last_seen = last.last_seen if last else None
    return LegacyUse(
        last_seen=last_seen,
        last_ip=last.last_ip if last else None,
        client_ips=_distinct(ip for r in legacy for ip in (r.client_ips or [])),
        senders=_distinct(s for r in legacy for s in (r.senders or [])),
        submissions=sum(r.legacy_count for r in legacy),
        days=len(legacy),
        confidence="high" if any(r.high_count for r in legacy) else (legacy[-1].confidence if legacy else None),
        last_auth=last_auth,
        switched=has_switched(last_seen, last_auth),
        refusals=sum(r.refused_count for r in rows),
        last_refused=max(refused) if refused else None,
    )


def _distinct(values: Any) -> list[str]:
    return list(dict.fromkeys(values))


def exemption_infos(session: Session, mailbox_ids: list[int]) -> dict[int, ExemptionInfo]:
    """The latest exemption of each mailbox (active or not: support wants to know it was used)."""
    found: dict[int, ExemptionInfo] = {}
    rows = session.execute(
        select(Exemption.mailbox_id, Exemption.until, Exemption.reason, Exemption.actor, Exemption.ended_at)
        .where(Exemption.mailbox_id.in_(mailbox_ids))
        .order_by(Exemption.created_at, Exemption.id)
    )
    for mailbox_id, until, reason, actor, ended_at in rows:
        found[mailbox_id] = ExemptionInfo(until, reason, actor, ended_at is None)
    return found


def evidence_samples(session: Session, mailbox_ids: list[int]) -> dict[int, tuple[date, list[dict[str, Any]]]]:
    """Per mailbox, the newest raw log lines that show legacy use (or, failing that, a refusal): one query for all."""
    rank = (
        func.row_number()
        .over(
            partition_by=Evidence.mailbox_id,
            order_by=(case((Evidence.kind == "legacy", 0), else_=1), Evidence.day.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(Evidence.mailbox_id, Evidence.day, Evidence.lines, rank)
        .where(Evidence.mailbox_id.in_(mailbox_ids), Evidence.kind.in_(("legacy", "refused")))
        .subquery()
    )
    rows = session.execute(select(ranked.c.mailbox_id, ranked.c.day, ranked.c.lines).where(ranked.c.rank == 1))
    return {mailbox_id: (day, list(lines)) for mailbox_id, day, lines in rows}


def notice_infos(session: Session, customer_pk: int) -> list[NoticeInfo]:
    """The customer's notices, each with the mailboxes it listed (by address): one query for both."""
    rows = session.execute(
        select(
            Notice.id,
            Notice.wave,
            Notice.kind,
            Notice.state,
            Notice.sent_at,
            Notice.message_id,
            Notice.to_address,
            Notice.delivery,
            Notice.delivery_reply,
            Notice.delivery_at,
            Mailbox.address,
        )
        .select_from(Notice)
        .outerjoin(NoticeMailbox, NoticeMailbox.notice_id == Notice.id)
        .outerjoin(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
        .where(Notice.customer_id == customer_pk)
        .order_by(Notice.wave, Notice.id, Mailbox.address_key)
    )
    notices: dict[int, NoticeInfo] = {}
    for n in rows:
        info = notices.get(n.id)
        if info is None:
            info = notices[n.id] = NoticeInfo(
                n.wave,
                n.kind,
                n.state,
                n.sent_at,
                n.message_id,
                n.to_address,
                [],
                n.delivery,
                n.delivery_reply,
                n.delivery_at,
            )
        if n.address is not None:
            info.mailboxes.append(n.address)
    return list(notices.values())


def matching_customers(session: Session, query: str, limit: int = 50) -> list[tuple[Customer, str]]:
    """Every customer a query names, with how it matched: several when a login or contact address is shared.

    The same order of tries as ``find_customer`` (mailbox address, login, customer id, contact address).
    """
    query = query.strip()
    if not query:
        return []
    mailbox = _mailbox_by_address(session, query)
    if mailbox is not None:
        return [(mailbox.customer, "mailbox")]
    by_login = session.scalars(
        select(Customer)
        .join(Mailbox, Mailbox.customer_id == Customer.id)
        .where(Mailbox.login == query)
        .distinct()
        .limit(limit)
    ).all()
    if by_login:
        return [(c, "login") for c in by_login]
    by_id = (
        session.scalars(select(Customer).where(Customer.external_id == query)).all()
        or session.scalars(select(Customer).where(func.lower(Customer.external_id) == query.lower()).limit(limit)).all()
    )
    if by_id:
        return [(c, "customer") for c in by_id]
    if "@" in query:
        by_email = session.scalars(
            select(Customer)
            .where(func.lower(Customer.email) == query.lower())
            .order_by(Customer.external_id)
            .limit(limit)
        ).all()
        return [(c, "customer email") for c in by_email]
    return []
