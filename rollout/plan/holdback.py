"""The hold-back: a step never switches off a mailbox whose customer was not warned in time.

When a cohort is switched off (it leaves ``pending``), each of its mailboxes that still uses the
legacy path (legacy use in ``notices.lookback_days``, no SMTP AUTH since) needs a reminder that
was delivered (accepted by the provider's server and not bounced, ``notice_delivery``) at least
``notices.min_warning_days`` before now. Those without one stay out of the map, held with the
reason: ``no notice``, ``notice bounced`` or ``notice too late``.

A held mailbox gets a date in the first later cohort scheduled at least ``min_warning_days`` after
its first delivered notice (re-dated at every step, so a notice delivered after the hold counts),
and is switched off with that cohort; or ops include it with ``step --include-unwarned --reason``.
``--force`` (the guards) does not include it, and the scheduler never does. A held mailbox that
stops using the legacy path is released: the map then treats it like the rest of its cohort.

Core functions: they take a Session and flush; the step owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..logs.deliveries import BOUNCED
from ..models import Cohort, CohortMember, Customer, Exemption, HeldMailbox, Mailbox, Notice, NoticeMailbox, Plan
from . import plans

NO_NOTICE, BOUNCED_NOTICE, TOO_LATE = "no notice", "notice bounced", "notice too late"


@dataclass
class Warned:
    """What the ledger says about one mailbox's warnings."""

    delivered: list[datetime] = field(default_factory=list)  # sent and not bounced: when they were sent
    bounced: int = 0


@dataclass
class HeldView:
    """One held mailbox, as step --dry-run, status, lookup and the audit event show it."""

    address: str
    customer: str
    reason: str
    cohort: str  # the cohort it was held back from
    held_at: datetime
    redated_to: str | None = None  # the later cohort it is switched off with
    redated_at: datetime | None = None  # that cohort's time


@dataclass
class HoldResult:
    held: list[HeldView] = field(default_factory=list)  # held back by this step (and still held from earlier ones)
    released: list[str] = field(default_factory=list)  # switched off with this step after all (re-dated into it)
    included: list[str] = field(default_factory=list)  # unwarned, switched off anyway: --include-unwarned


def held_ids(session: Session) -> set[int]:
    """Mailboxes the map leaves out because they were not warned in time."""
    return set(session.scalars(select(HeldMailbox.mailbox_id).where(HeldMailbox.released_at.is_(None))))


def apply(
    session: Session,
    plan: Plan,
    cohort: Cohort,
    from_stage: str,
    now: datetime,
    lookback_days: int,
    min_warning_days: int,
    include_unwarned: bool,
    actor: str,
    reason: str | None,
) -> HoldResult:
    """The hold-back for one step of ``cohort``: hold whoever was not warned in time.

    Whoever: of the cohort, and of the holds re-dated into it. Only the step that switches a cohort off
    (``from_stage`` is ``pending``) holds anyone; every step re-dates open holds and releases the ones that
    stopped using the legacy path.
    """
    result = HoldResult()
    minimum = timedelta(days=min_warning_days)
    _release_switched(session, now, lookback_days, actor)
    open_holds = {
        h.mailbox_id: h for h in session.scalars(select(HeldMailbox).where(HeldMailbox.released_at.is_(None)))
    }
    if include_unwarned:
        for held in open_holds.values():
            _release(held, now, "included", actor, reason)
        result.included += _addresses(session, open_holds)
        open_holds = {}
    if from_stage == "pending":
        candidates = _still_legacy(session, cohort, now, lookback_days) | {
            m for m, h in open_holds.items() if h.redated_cohort_id == cohort.id
        }
        candidates -= _exempt(session, now)
        warnings = _warnings(session, candidates)
        unwarned = {m: r for m in candidates if (r := _reason(warnings.get(m), now, minimum)) is not None}
        for mailbox_id in candidates - set(unwarned):
            hold = open_holds.pop(mailbox_id, None)
            if hold is not None:
                _release(hold, now, "redated", actor, f"warned in time for cohort {cohort.label}")
                result.released.append(_address(session, mailbox_id))
        if include_unwarned:
            result.included += [_address(session, m) for m in sorted(unwarned)]
        else:
            for mailbox_id, why in unwarned.items():
                hold = open_holds.get(mailbox_id)
                if hold is None:
                    hold = open_holds[mailbox_id] = HeldMailbox(
                        plan_id=plan.id, mailbox_id=mailbox_id, cohort_id=cohort.id, reason=why, held_at=now
                    )
                    session.add(hold)
                hold.reason, hold.redated_cohort_id = why, None
    later = [c for c in plan.cohorts if c.position > cohort.position and c.stage == "pending"]
    if open_holds:
        warnings = _warnings(session, set(open_holds))
        for mailbox_id, hold in open_holds.items():
            if hold.redated_cohort_id is None or hold.redated_cohort_id == cohort.id:
                hold.redated_cohort_id = _new_date(warnings.get(mailbox_id), later, minimum)
    session.flush()
    result.held = views(session, [h.id for h in open_holds.values()])
    return result


def _reason(w: Warned | None, now: datetime, minimum: timedelta) -> str | None:
    """Why a mailbox was not warned in time (None: it was)."""
    if w is None or (not w.delivered and not w.bounced):
        return NO_NOTICE
    if any(sent <= now - minimum for sent in w.delivered):
        return None
    return TOO_LATE if w.delivered else BOUNCED_NOTICE


def _new_date(w: Warned | None, later: list[Cohort], minimum: timedelta) -> int | None:
    """The first later cohort scheduled ``minimum`` after the first delivered notice; None: no date yet."""
    if w is None or not w.delivered:
        return None
    earliest = min(w.delivered) + minimum
    return next((c.id for c in later if c.scheduled_at >= earliest), None)


def _warnings(session: Session, mailbox_ids: Iterable[int]) -> dict[int, Warned]:
    """Per mailbox: the reminders listing it that the provider's server accepted, and how many of them bounced."""
    ids = sorted(mailbox_ids)
    out: dict[int, Warned] = {}
    for i in range(0, len(ids), 500):
        rows = session.execute(
            select(NoticeMailbox.mailbox_id, Notice.sent_at, Notice.delivery)
            .join(Notice, Notice.id == NoticeMailbox.notice_id)
            .where(NoticeMailbox.mailbox_id.in_(ids[i : i + 500]), Notice.kind == "reminder", Notice.state == "sent")
        )
        for mailbox_id, sent_at, delivery in rows:
            w = out.setdefault(mailbox_id, Warned())
            if delivery == BOUNCED:
                w.bounced += 1
            elif sent_at is not None:
                w.delivered.append(sent_at)
    return out


def _still_legacy(session: Session, cohort: Cohort, now: datetime, lookback_days: int) -> set[int]:
    legacy = plans.still_legacy_ids(now, lookback_days).subquery()
    return set(
        session.scalars(
            select(CohortMember.mailbox_id)
            .join(legacy, legacy.c.mailbox_id == CohortMember.mailbox_id)
            .where(CohortMember.cohort_id == cohort.id)
        )
    )


def _exempt(session: Session, now: datetime) -> set[int]:
    return set(session.scalars(select(Exemption.mailbox_id).where(Exemption.ended_at.is_(None), Exemption.until > now)))


def _release_switched(session: Session, now: datetime, lookback_days: int, actor: str) -> None:
    """Holds of mailboxes that no longer use the legacy path end: nothing of theirs is refused any more."""
    holds = list(session.scalars(select(HeldMailbox).where(HeldMailbox.released_at.is_(None))))
    if not holds:
        return
    legacy = plans.still_legacy_ids(now, lookback_days).subquery()
    still = set(
        session.scalars(select(legacy.c.mailbox_id).where(legacy.c.mailbox_id.in_([h.mailbox_id for h in holds])))
    )
    for hold in holds:
        if hold.mailbox_id not in still:
            _release(hold, now, "switched", actor, "no legacy use any more (SMTP AUTH since, or none in the lookback)")


def _release(hold: HeldMailbox, now: datetime, how: str, actor: str, reason: str | None) -> None:
    hold.released_at, hold.release, hold.released_by, hold.release_reason = now, how, actor, reason


def _address(session: Session, mailbox_id: int) -> str:
    return session.scalar(select(Mailbox.address).where(Mailbox.id == mailbox_id)) or str(mailbox_id)


def _addresses(session: Session, holds: dict[int, HeldMailbox]) -> list[str]:
    return sorted(_address(session, m) for m in holds)


# The cohort a mailbox was held back from, and the one it was re-dated into (built once: lookups list holds per page).
_ORIGIN, _REDATED = Cohort.__table__.alias("origin"), Cohort.__table__.alias("redated")


def views(
    session: Session, hold_ids: Iterable[int] | None = None, mailbox_ids: Iterable[int] | None = None
) -> list[HeldView]:
    """Open holds (these ids, or these mailboxes' open holds; all open ones when neither is given), by address."""
    origin, redated = _ORIGIN, _REDATED
    query = (
        select(
            Mailbox.address,
            Customer.external_id,
            HeldMailbox.reason,
            origin.c.label,
            HeldMailbox.held_at,
            redated.c.label,
            redated.c.scheduled_at,
        )
        .join(Mailbox, Mailbox.id == HeldMailbox.mailbox_id)
        .join(Customer, Customer.id == Mailbox.customer_id)
        .join(origin, origin.c.id == HeldMailbox.cohort_id)
        .outerjoin(redated, redated.c.id == HeldMailbox.redated_cohort_id)
        .where(HeldMailbox.released_at.is_(None))
        # An expression, not the column: SQLite's planner, which cannot know that the holds are few, would
        # otherwise walk every mailbox in address order to save a sort of a handful (1.5 s at a million)
        .order_by(Mailbox.address_key.concat(""))
    )
    if hold_ids is not None:
        query = query.where(HeldMailbox.id.in_(list(hold_ids)))
    if mailbox_ids is not None:
        query = query.where(HeldMailbox.mailbox_id.in_(list(mailbox_ids)))
    out = []
    for address, customer, reason, label, held_at, redated_label, redated_at in session.execute(query):
        out.append(HeldView(address, customer, reason, label, held_at, redated_label, redated_at))
    return out


def retire_blockers(session: Session) -> list[str]:
    """Why the legacy map cannot be retired yet: that cuts off everyone still relaying through it, held ones too."""
    held = views(session)
    if not held:
        return []
    names = ", ".join(h.address for h in held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    return [
        f"{len(held)} mailboxes are held back as not warned in time ({names}); "
        "retiring the legacy map would cut them off too: wait until they are warned and switched off, "
        "or `rollout step --include-unwarned --reason TEXT`"
    ]


def release_all(session: Session, now: datetime, actor: str, reason: str | None) -> list[str]:
    """Release every open hold as included (the final step with --include-unwarned); their addresses."""
    holds = {h.mailbox_id: h for h in session.scalars(select(HeldMailbox).where(HeldMailbox.released_at.is_(None)))}
    for hold in holds.values():
        _release(hold, now, "included", actor, reason)
    session.flush()
    return _addresses(session, holds)
