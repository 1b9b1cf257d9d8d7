"""What the support desk shows beyond `rollout status` and `rollout lookup`: one cohort's mailboxes, a page at a time.

Read-only. Pages are keyset-paged on the mailbox id (inventory order), so page 500 of a cohort costs what page 1 does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import false, func, select
from sqlalchemy.orm import Session

from ...models import Cohort, CohortMember, Customer, LegacyDay, Mailbox
from ...plan.plans import active_plan, still_legacy_query
from ...rules import is_still_legacy

PAGE_SIZE = 50
FILTERS = ("all", "legacy", "refused")


@dataclass
class MemberRow:
    address: str
    customer_id: str
    customer_name: str
    last_legacy: datetime | None
    still_legacy: bool
    refusals: int  # since the cohort's switch-off


@dataclass
class CohortPage:
    position: int
    label: str
    stage: str
    scheduled_at: datetime
    enforced_at: datetime | None
    mailboxes: int
    filter: str
    rows: list[MemberRow] = field(default_factory=list)
    next_after: int | None = None  # mailbox id to continue from


def cohort_page(
    session: Session, position: int, filter: str, after: int, lookback_days: int, now: datetime
) -> CohortPage | None:
    plan = active_plan(session)
    cohort = (
        None
        if plan is None
        else session.scalars(select(Cohort).where(Cohort.plan_id == plan.id, Cohort.position == position)).first()
    )
    if cohort is None:
        return None
    since = now - timedelta(days=lookback_days)
    ids = _member_ids(session, cohort, filter, after, since)
    page = CohortPage(
        cohort.position,
        cohort.label,
        cohort.stage,
        cohort.scheduled_at,
        cohort.enforced_at,
        cohort.mailbox_count,
        filter,
    )
    if len(ids) > PAGE_SIZE:
        ids = ids[:PAGE_SIZE]
        page.next_after = ids[-1]
    found = session.execute(
        select(Mailbox.id, Mailbox.address, Customer.external_id, Customer.name)
        .join(Customer, Customer.id == Mailbox.customer_id)
        .where(Mailbox.id.in_(ids))
        .order_by(Mailbox.id)
    ).all()
    usage = _usage(session, ids, since, cohort.enforced_at)
    for r in found:
        last_legacy, still_legacy, refusals = usage.get(r.id, (None, False, 0))
        page.rows.append(MemberRow(r.address, r.external_id, r.name, last_legacy, still_legacy, refusals))
    return page


def _member_ids(session: Session, cohort: Cohort, filter: str, after: int, since: datetime) -> list[int]:
    """The next page of the cohort's mailbox ids: a walk along (cohort_id, mailbox_id) from ``after``.

    A filter is a test per member on the legacy days' primary key, so a page costs its own rows
    (and, filtered, the members passed over), never the whole cohort.
    """
    query = select(CohortMember.mailbox_id).where(CohortMember.cohort_id == cohort.id, CohortMember.mailbox_id > after)
    if filter == "legacy":
        query = query.where(
            still_legacy_query(since.date()).where(LegacyDay.mailbox_id == CohortMember.mailbox_id).exists()
        )
    elif filter == "refused":
        if cohort.enforced_at is None:
            return []
        # what the status counts (refusals by our map from the day of the switch-off), read through the partial
        # index of refused days in mailbox order, each checked for membership: refusals are few, the cohort's
        # members many. One table in FROM, so that SQLite walks that index and stops at the page's end even
        # without statistics (with a join it walked the whole rest of the cohort).
        member = (
            select(CohortMember.mailbox_id)
            .where(
                CohortMember.plan_id == cohort.plan_id,
                CohortMember.mailbox_id == LegacyDay.mailbox_id,
                CohortMember.cohort_id == cohort.id,
            )
            .exists()
        )
        query = (
            select(LegacyDay.mailbox_id)
            .where(
                LegacyDay.refused_count > 0,
                LegacyDay.day >= cohort.enforced_at.date(),
                LegacyDay.mailbox_id > after,
                member,
            )
            .distinct()
        )
        return list(session.scalars(query.order_by(LegacyDay.mailbox_id).limit(PAGE_SIZE + 1)))
    return list(session.scalars(query.order_by(CohortMember.mailbox_id).limit(PAGE_SIZE + 1)))


def _usage(
    session: Session, ids: list[int], since: datetime, enforced_at: datetime | None
) -> dict[int, tuple[datetime | None, bool, int]]:
    """Per mailbox on the page: last legacy use, still legacy (lookback period), refusals since the switch-off."""
    if not ids:
        return {}
    recent = LegacyDay.day >= since.date()
    refused = LegacyDay.day >= enforced_at.date() if enforced_at else false()
    rows = session.execute(
        select(
            LegacyDay.mailbox_id,
            func.max(LegacyDay.last_seen),
            func.max(LegacyDay.last_seen).filter(recent),
            func.max(LegacyDay.auth_last).filter(recent),
            func.coalesce(func.sum(LegacyDay.refused_count).filter(refused), 0),
        )
        .where(LegacyDay.mailbox_id.in_(ids))
        .group_by(LegacyDay.mailbox_id)
    )
    return {
        mailbox_id: (last, is_still_legacy(recent_last, auth), int(refusals))
        for mailbox_id, last, recent_last, auth, refusals in rows
    }
