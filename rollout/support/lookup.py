"""One customer on one screen, for support: "why can't I send?" answered in seconds.

Found by mailbox address (case-insensitive, IDN domains either way), POP login,
customer id or customer contact address. Every query goes through an index on a
mailbox or customer id, so the answer takes milliseconds on a million mailboxes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..addresses import AddressError, parse_address
from ..errors import RolloutError
from ..models import Cohort, CohortMember, Customer, Evidence, Exemption, LegacyDay, Mailbox, Notice, NoticeMailbox
from ..plan import holdback
from ..plan.holdback import HeldView
from ..plan.plans import active_plan
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
    mailboxes = session.scalars(
        select(Mailbox).where(Mailbox.customer_id == customer.id).order_by(Mailbox.address_key)
    ).all()
    ids = [m.id for m in mailboxes]
    legacy = legacy_uses(session, ids)
    cohorts = cohort_infos(session, ids)
    exemptions = exemption_infos(session, ids)
    held = {h.address: h for h in holdback.views(session, mailbox_ids=ids)}
    reports = []
    for mailbox in order_for_support(mailboxes, focus, legacy)[:MAX_MAILBOXES_SHOWN]:
        cohort, exemption = cohorts.get(mailbox.id), exemptions.get(mailbox.id)
        refused = (
            cohort is not None
            and cohort.enforced_at is not None
            and not (exemption and exemption.active)
            and mailbox.address not in held
        )
        day, lines = evidence_sample(session, mailbox.id)
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
        mailbox_count=len(mailboxes),
        mailboxes=reports,
        notices=notice_infos(session, customer.id),
    )


def find_customer(session: Session, query: str) -> tuple[Customer, str, int | None]:
    """The customer, how the query matched, and the mailbox it named (if any)."""
    if not query:
        raise NotFound("give a mailbox address, a POP login or a customer id")
    mailbox = (
        _mailbox_by_address(session, query) or session.scalars(select(Mailbox).where(Mailbox.login == query)).first()
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
    return session.scalars(select(Mailbox).where(Mailbox.address_key == key)).first()


def order_for_support(mailboxes: Any, focus: int | None, legacy: dict[int, LegacyUse]) -> list[Mailbox]:
    """The mailbox asked about first, then those with legacy use, then the rest alphabetically."""
    return sorted(mailboxes, key=lambda m: (m.id != focus, m.id not in legacy, m.address_key))


def legacy_uses(session: Session, mailbox_ids: list[int]) -> dict[int, LegacyUse]:
    days: dict[int, list[LegacyDay]] = {}
    for row in session.scalars(select(LegacyDay).where(LegacyDay.mailbox_id.in_(mailbox_ids)).order_by(LegacyDay.day)):
        days.setdefault(row.mailbox_id, []).append(row)
    return {mailbox_id: summarise(rows) for mailbox_id, rows in days.items()}


def summarise(rows: list[LegacyDay]) -> LegacyUse:
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


def cohort_infos(session: Session, mailbox_ids: list[int]) -> dict[int, CohortInfo]:
    plan = active_plan(session)
    if plan is None:
        return {}
    rows = session.execute(
        select(CohortMember.mailbox_id, Cohort)
        .join(Cohort, Cohort.id == CohortMember.cohort_id)
        .where(CohortMember.plan_id == plan.id, CohortMember.mailbox_id.in_(mailbox_ids))
    )
    return {
        mailbox_id: CohortInfo(c.position, c.label, c.scheduled_at, c.enforced_at, c.stage) for mailbox_id, c in rows
    }


def exemption_infos(session: Session, mailbox_ids: list[int]) -> dict[int, ExemptionInfo]:
    """The latest exemption of each mailbox (active or not: support wants to know it was used)."""
    found: dict[int, ExemptionInfo] = {}
    rows = session.scalars(
        select(Exemption).where(Exemption.mailbox_id.in_(mailbox_ids)).order_by(Exemption.created_at, Exemption.id)
    )
    for e in rows:
        found[e.mailbox_id] = ExemptionInfo(e.until, e.reason, e.actor, e.ended_at is None)
    return found


def evidence_sample(session: Session, mailbox_id: int) -> tuple[date | None, list[dict[str, Any]]]:
    """The newest raw log lines that show legacy use (or, failing that, a refusal)."""
    for kind in ("legacy", "refused"):
        row = session.scalars(
            select(Evidence)
            .where(Evidence.mailbox_id == mailbox_id, Evidence.kind == kind)
            .order_by(Evidence.day.desc())
            .limit(1)
        ).first()
        if row is not None:
            return row.day, list(row.lines)
    return None, []


def notice_infos(session: Session, customer_pk: int) -> list[NoticeInfo]:
    notices = session.scalars(
        select(Notice).where(Notice.customer_id == customer_pk).order_by(Notice.wave, Notice.id)
    ).all()
    listed: dict[int, list[str]] = {}
    if notices:
        rows = session.execute(
            select(NoticeMailbox.notice_id, Mailbox.address)
            .join(Mailbox, Mailbox.id == NoticeMailbox.mailbox_id)
            .where(NoticeMailbox.notice_id.in_([n.id for n in notices]))
            .order_by(Mailbox.address_key)
        )
        for notice_id, address in rows:
            listed.setdefault(notice_id, []).append(address)
    return [
        NoticeInfo(
            n.wave,
            n.kind,
            n.state,
            n.sent_at,
            n.message_id,
            n.to_address,
            listed.get(n.id, []),
            n.delivery,
            n.delivery_reply,
            n.delivery_at,
        )
        for n in notices
    ]


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
