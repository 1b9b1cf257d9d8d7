"""Campaign use cases: start it, show it, and send a wave of notices exactly once."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import chain
from pathlib import Path

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import audit
from ..clock import out_of_range
from ..config import Settings
from ..errors import DeliveryError, GuardError
from ..models import Campaign, Customer, Notice
from ..runtime import Runtime
from . import campaign as core
from . import notice_delivery
from .mailer import RateLimiter, SmtpConnection
from .notices import (
    Envelope,
    NoticeBuildError,
    NoticeFacts,
    RenderedNotice,
    Renderer,
    build_message,
    compose,
    message_id,
    notice_context,
)
from .notify_workers import Location, Outcome, Slot, Unbuildable, Workers, WorkerSetup, spool_record

log = logging.getLogger(__name__)

MAX_WEEKS = 52
STOP_AFTER_CONNECTION_FAILURES = 3  # per connection, in a row: the server is down, leave the rest pending


@dataclass
class WaveStatus:
    wave: int
    due_at: datetime
    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    # of the sent ones, what the provider MTA's log says (`rollout scan`); unknown: not seen there yet
    delivered: int = 0
    bounced: int = 0
    delayed: int = 0
    unknown: int = 0


@dataclass
class CampaignOverview:
    id: int
    active: bool
    first_at: datetime
    weeks: int
    weekday: str
    at_time: str
    timezone: str
    due_wave: int | None
    waves: list[WaveStatus] = field(default_factory=list)
    thanks: WaveStatus | None = None
    unreachable: list[notice_delivery.Unreachable] = field(
        default_factory=list
    )  # customers whose latest notice bounced


@dataclass
class NotifySummary:
    campaign_id: int | None = None
    wave: int | None = None
    selected: int = 0  # notices of this wave (and thank-you notes) in the ledger
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # 4xx or no connection after retries: left pending for the next run
    skipped: int = 0  # already sent or failed by an earlier run
    uncertain: int = 0  # left in `sending` by a killed run: maybe delivered, not resent
    remaining: int = 0  # pending, not attempted (--limit, or the run stopped)
    new: int = 0  # ledger rows this run added
    unreachable: int = 0  # customers left out: an earlier notice to their address bounced with a 5xx
    dry_run: bool = False
    outbox: str | None = None
    note: str | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    stopped: bool = False  # the SMTP server could not be reached for some notices: left pending (the command exits 1)
    delivery: dict[str, int] = field(default_factory=dict)  # the wave's sent notices by delivery state (`rollout scan`)


def start_campaign(
    runtime: Runtime,
    first: date,
    weeks: int = 6,
    weekday: str = "mon",
    at: str = "09:00",
    tz: str = "Europe/Berlin",
    replace: bool = False,
) -> CampaignOverview:
    """Define the weekly waves; an active campaign is only replaced when asked to."""
    if not 1 <= weeks <= MAX_WEEKS:
        raise DeliveryError(f"--weeks must be between 1 and {MAX_WEEKS}")
    if problem := out_of_range(datetime.combine(first, datetime.min.time()), "--first", runtime.clock.now()):
        raise DeliveryError(problem)
    first_at = core.first_wave_at(first, weekday.lower()[:3], at, tz)
    now = runtime.clock.now()
    with runtime.sessions() as session, session.begin():
        current = core.active_campaign(session)
        if current is not None:
            if not replace:
                raise DeliveryError(
                    f"campaign {current.id} is active (first wave {current.first_at:%Y-%m-%d %H:%M} UTC): "
                    "use --replace to start a new one (the old ledger is kept)"
                )
            current.active = False
        campaign = Campaign(
            created_at=now,
            actor=runtime.actor,
            first_at=first_at,
            weeks=weeks,
            weekday=weekday.lower()[:3],
            at_time=at,
            timezone=tz,
            active=True,
        )
        session.add(campaign)
        session.flush()
        audit.record(
            session,
            now,
            runtime.actor,
            "campaign.start",
            campaign_id=campaign.id,
            first_at=first_at.isoformat(),
            weeks=weeks,
            weekday=campaign.weekday,
            at_time=at,
            timezone=tz,
            replaced=current.id if current else None,
        )
    overview = campaign_overview(runtime)
    assert overview is not None
    return overview


def campaign_overview(runtime: Runtime) -> CampaignOverview | None:
    """The active campaign (else the newest), each wave's due time and ledger counts."""
    now = runtime.clock.now()
    with runtime.sessions() as session:
        campaign = (
            core.active_campaign(session)
            or session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(1)).first()
        )
        if campaign is None:
            return None
        overview = CampaignOverview(
            campaign.id,
            campaign.active,
            campaign.first_at,
            campaign.weeks,
            campaign.weekday,
            campaign.at_time,
            campaign.timezone,
            _due(campaign, now, runtime.settings.notices.grace_hours) if campaign.active else None,
        )
        deliveries = notice_delivery.delivery_counts(session, campaign.id, list(range(1, campaign.weeks + 2)))
        overview.unreachable = notice_delivery.unreachable(session)
        for wave in range(1, campaign.weeks + 2):
            counts = core.state_counts(session, campaign.id, [wave])
            status = WaveStatus(wave, core.wave_due_at(campaign, wave), **counts, **deliveries.get(wave, {}))
            if wave <= campaign.weeks:
                overview.waves.append(status)
            elif any((status.pending, status.sending, status.sent, status.failed)):
                overview.thanks = status
        return overview


def due_wave(runtime: Runtime) -> int | None:
    """The wave due now; None if none is due or it is more than the grace period late."""
    with runtime.sessions() as session:
        campaign = core.active_campaign(session)
        if campaign is None:
            return None
        return _due(campaign, runtime.clock.now(), runtime.settings.notices.grace_hours)


def _due(campaign: Campaign, now: datetime, grace_hours: int) -> int | None:
    wave = core.latest_due_wave(campaign, now)
    if wave is None or (now - core.wave_due_at(campaign, wave)).total_seconds() > grace_hours * 3600:
        return None
    return wave


def notify(
    runtime: Runtime,
    wave: int | None = None,
    dry_run: bool = False,
    outbox: Path | None = None,
    limit: int | None = None,
    resend_uncertain: bool = False,
    progress: Callable[[int], None] | None = None,
) -> NotifySummary:
    """Send one wave: pick the audience, render everything (preflight), then send each notice once.

    Rendering and sending run in worker processes (``rollout.notify.notify_workers``), one
    per CPU core; this process keeps the ledger.
    """
    settings = runtime.settings
    renderer = Renderer(settings.notices)
    envelope = Envelope.from_settings(settings.notices)
    with runtime.sessions() as session:
        campaign = _require_campaign(session)
    summary = NotifySummary(campaign_id=campaign.id, dry_run=dry_run, outbox=str(outbox) if outbox else None)
    summary.wave = wave if wave is not None else _wave_due_or_explain(runtime, campaign, summary)
    if summary.wave is None:
        return summary
    if not 1 <= summary.wave <= campaign.weeks:
        raise DeliveryError(f"campaign {campaign.id} has waves 1 to {campaign.weeks}, not {summary.wave}")
    waves = [summary.wave] + ([campaign.weeks + 1] if settings.notices.thank_you else [])
    if outbox:
        outbox.mkdir(parents=True, exist_ok=True)
    with _workers(settings, outbox) as workers:
        started, cpu = time.monotonic(), time.process_time()
        try:
            spooled = _prepare(runtime, campaign, waves, summary, workers, envelope, resend_uncertain)
        except IntegrityError:  # another run inserted the same rows first: its ledger is ours too
            spooled = _prepare(runtime, campaign, waves, summary, workers, envelope, resend_uncertain)
        log.info(
            "notify: %d new, %d rendered in %.1f s by %d worker(s) (this process: %.1f s CPU)",
            summary.new,
            len(spooled),
            time.monotonic() - started,
            workers.processes,
            time.process_time() - cpu,
        )
        if dry_run:
            return summary
        started, cpu = time.monotonic(), time.process_time()
        _send_all(runtime, campaign, waves, summary, workers, spooled, renderer, envelope, limit, progress)
        log.info(
            "notify: %d sent, %d failed, %d deferred in %.1f s (this process: %.1f s CPU)",
            summary.sent,
            summary.failed,
            summary.deferred,
            time.monotonic() - started,
            time.process_time() - cpu,
        )
    with runtime.sessions() as session:
        counts = core.state_counts(session, campaign.id, waves)
        summary.delivery = notice_delivery.delivery_counts(session, campaign.id, waves[:1]).get(waves[0], {})
    summary.uncertain = counts.get("sending", 0)
    summary.remaining = counts.get("pending", 0) - summary.deferred
    with runtime.sessions() as session, session.begin():
        audit.record(
            session,
            runtime.clock.now(),
            runtime.actor,
            "notify.done",
            campaign_id=campaign.id,
            wave=summary.wave,
            sent=summary.sent,
            failed=summary.failed,
            deferred=summary.deferred,
            uncertain=summary.uncertain,
            outbox=summary.outbox,
        )
    return summary


def _workers(settings: Settings, outbox: Path | None) -> Workers:
    """One worker process per core (``[notices] workers``), the SMTP connections shared out among them."""
    connections = 1 if outbox else max(1, settings.smtp.concurrency)
    processes = min(connections, settings.notices.workers or os.cpu_count() or 1)
    setup = WorkerSetup(settings.notices, settings.smtp, str(outbox) if outbox else None, settings.smtp.rate_per_second)
    return Workers(setup, processes, connections)


def _require_campaign(session: Session) -> Campaign:
    campaign = core.active_campaign(session)
    if campaign is None:
        raise DeliveryError("there is no active campaign: run `rollout campaign start --first DATE` first")
    return campaign


def _wave_due_or_explain(runtime: Runtime, campaign: Campaign, summary: NotifySummary) -> int | None:
    now = runtime.clock.now()
    latest = core.latest_due_wave(campaign, now)
    if latest is None:
        summary.note = f"no wave is due yet: wave 1 is due at {core.wave_due_at(campaign, 1).isoformat()}"
        return None
    wave = _due(campaign, now, runtime.settings.notices.grace_hours)
    if wave is not None:
        return wave
    with runtime.sessions() as session:
        started = bool(core.state_counts(session, campaign.id, [latest]))
    if started or latest == campaign.weeks and now > core.campaign_end(campaign):
        summary.note = f"no wave is due: wave {latest} was due at {core.wave_due_at(campaign, latest).isoformat()}"
        return None
    raise GuardError(
        f"wave {latest} was due at {core.wave_due_at(campaign, latest).isoformat()}, more than "
        f"{runtime.settings.notices.grace_hours} h ago (grace_hours): "
        f"send it anyway with `rollout notify --wave {latest}`"
    )


def _prepare(
    runtime: Runtime,
    campaign: Campaign,
    waves: list[int],
    summary: NotifySummary,
    workers: Workers,
    envelope: Envelope,
    resend_uncertain: bool,
) -> dict[int, Location]:
    """One transaction: add the wave's ledger rows and render every pending notice (the preflight).

    Notices left pending by earlier runs are read back and rendered first; new
    ones are rendered by the workers while the next ones are inserted. Any
    rendering error rolls the new rows back: nothing is recorded, nothing is
    sent. A dry run rolls back too, after the same checks. The workers keep what
    they rendered in their spool, so sending does not render again: returns
    where each notice is.
    """
    settings = runtime.settings.notices
    now = runtime.clock.now()
    wave = waves[0]
    summary.new = 0  # a retry starts over
    with runtime.sessions() as session, session.begin(), core.small_page_cache(session):
        core.lock_campaign(session, campaign.id)
        if resend_uncertain:
            core.release_uncertain(session, campaign.id, waves)
        existing = core.existing_customers(session, campaign.id, wave)
        bounced = notice_delivery.hard_bounced_customers(session) - existing  # not retried: support calls them
        summary.unreachable = len(bounced)
        existing |= bounced
        switched: set[int] = set()
        reminded: set[int] = set()
        found = _not_in(core.reminders(session, now, settings.lookback_days, switched), existing, reminded)
        new = core.add_notices(
            session, campaign, wave, "reminder", found, lambda c: message_id(campaign.id, wave, c, envelope.domain), now
        )
        thanks = _add_thanks(session, campaign, waves[1], switched, reminded, now, envelope) if len(waves) > 1 else ()
        earlier = core.pending_facts(session, campaign, waves)  # a generator: read before the new rows exist
        rendered = workers.render(
            chain(earlier, _counted(new, summary), _counted(thanks, summary)), now, core.campaign_facts(campaign)
        )
        spooled = _fail_unbuildable(session, rendered, summary)
        counts = core.state_counts(session, campaign.id, waves)
        summary.selected = sum(counts.values())
        summary.skipped = counts.get("sent", 0) + counts.get("failed", 0)
        summary.uncertain = counts.get("sending", 0)
        summary.remaining = counts.get("pending", 0)
        if summary.dry_run:
            session.rollback()
            return {}
        audit.record(
            session,
            now,
            runtime.actor,
            "notify.start",
            campaign_id=campaign.id,
            wave=wave,
            new=summary.new,
            selected=summary.selected,
            pending=summary.remaining,
            resend_uncertain=resend_uncertain,
        )
    return spooled


def _fail_unbuildable(
    session: Session, rendered: dict[int, Location | Unbuildable], summary: NotifySummary
) -> dict[int, Location]:
    """Notices that cannot be built fail alone, each named in the summary; the rest of the wave goes on."""
    spooled: dict[int, Location] = {}
    for notice_id, where in rendered.items():
        if isinstance(where, Unbuildable):
            session.execute(
                update(Notice).where(Notice.id == notice_id).values(state="failed", last_reply=where.reason[:2000])
            )
            summary.failed += 1
            summary.failures.append({"customer": where.customer_ref, "to": where.to_address, "reply": where.reason})
        else:
            spooled[notice_id] = where
    return spooled


def _not_in(
    found: Iterable[tuple[int, list[core.MailboxUse]]], existing: set[int], reminded: set[int]
) -> Iterator[tuple[int, list[core.MailboxUse]]]:
    """Reminders of customers without a ledger row in this wave yet; every reminded customer goes into ``reminded``."""
    for customer_id, uses in found:
        reminded.add(customer_id)
        if customer_id not in existing:
            yield customer_id, uses


def _add_thanks(
    session: Session,
    campaign: Campaign,
    thanks_wave: int,
    switched: set[int],
    reminded: set[int],
    now: datetime,
    envelope: Envelope,
) -> Iterator[tuple[int, NoticeFacts]]:
    """Thank-you notes for customers whose mailboxes have all switched (a generator: it runs after the reminders)."""
    existing = core.existing_customers(session, campaign.id, thanks_wave)
    done = {
        c: m
        for c, m in core.thank_you_candidates(session, campaign.id, switched, reminded).items()
        if c not in existing
    }
    lists = [
        (c, [core.MailboxUse(m, c, address, None, None, True, True) for m, address in mailboxes])
        for c, mailboxes in done.items()
    ]
    yield from core.add_notices(
        session,
        campaign,
        thanks_wave,
        "thanks",
        lists,
        lambda c: message_id(campaign.id, thanks_wave, c, envelope.domain),
        now,
    )


def _counted(items: Iterable[tuple[int, NoticeFacts]], summary: NotifySummary) -> Iterator[tuple[int, NoticeFacts]]:
    """``items``, each counted as a new ledger row in ``summary.new``."""
    for item in items:
        summary.new += 1
        yield item


# --- the send loop -----------------------------------------------------------------------


# What each outcome leaves; "uncertain" (the connection was lost after the message's final dot) stays `sending`,
# like a notice a killed run had in flight: maybe delivered, never resent silently.
LEDGER_STATE = {"sent": "sent", "failed": "failed", "deferred": "pending", "error": "pending", "uncertain": "sending"}


class _Run:
    """What the send loop keeps: the counters, the limit, why it stops."""

    def __init__(self, summary: NotifySummary, limit: int | None, progress: Callable[[int], None] | None) -> None:
        self.summary, self.limit, self.progress = summary, limit, progress or (lambda n: None)
        self.started = 0
        self.exhausted = False  # no pending notice was left to claim
        self.stopped = False  # the SMTP server could not be reached
        self.error: str | None = None  # a failure that ends the run (refused login, a worker died)
        self.deferred: set[int] = set()  # not claimed again in this run
        self.failures_in_a_row: dict[str, int] = {}  # per slot: connection failures

    def wanted(self, idle: int) -> int:
        """How many notices to claim for ``idle`` free slots."""
        if self.exhausted or self.stopped or self.error:
            return 0
        if self.limit is not None:
            idle = min(idle, self.limit - self.started)
        return max(0, idle)

    def claimed(self, wanted: int, got: int) -> None:
        self.started += got
        self.exhausted = self.exhausted or got < wanted

    def count(self, slot: str, outcome: Outcome) -> None:
        if outcome.status in ("error", "died"):
            self.error = self.error or outcome.reply
            return
        if outcome.status == "uncertain":
            pass  # counted from the ledger at the end of the run
        elif outcome.status == "sent":
            self.summary.sent += 1
        elif outcome.status == "failed":
            self.summary.failed += 1
            self.summary.failures.append(
                {"customer": outcome.customer_ref, "to": outcome.to_address, "reply": outcome.reply}
            )
        else:
            self.summary.deferred += 1
            self.deferred.add(outcome.notice_id)
        self.progress(1)
        unreachable = outcome.status == "deferred" and outcome.reply.startswith("connection:")
        self.summary.stopped = self.summary.stopped or unreachable
        in_a_row = self.failures_in_a_row.get(slot, 0) + 1 if unreachable else 0
        self.failures_in_a_row[slot] = in_a_row
        self.stopped = self.stopped or in_a_row >= STOP_AFTER_CONNECTION_FAILURES


def _send_all(
    runtime: Runtime,
    campaign: Campaign,
    waves: list[int],
    summary: NotifySummary,
    workers: Workers,
    spooled: dict[int, Location],
    renderer: Renderer,
    envelope: Envelope,
    limit: int | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Give each slot (SMTP connection) one claimed notice at a time, until none is pending.

    Each round is one short transaction that records the outcomes the slots
    reported and claims as many notices as slots are free: at most one notice
    per connection is ever `sending`.
    """
    run = _Run(summary, limit, progress)
    claimer = f"{socket.gethostname()}:{os.getpid()}"
    idle: list[Slot] = list(workers.slots)
    busy: dict[Slot, int] = {}
    settled: list[tuple[int, str, str]] = []
    with runtime.engine.connect() as conn:
        ledger = core.SendLedger(conn, campaign.id, waves, claimer)
        while True:
            wanted = run.wanted(len(idle))
            claimed = ledger.settle_and_claim(settled, wanted, runtime.clock.now(), run.deferred)
            run.claimed(wanted, len(claimed))
            settled = []
            for notice_id in claimed:
                try:
                    record = spooled.get(notice_id) or _render_late(
                        conn, runtime, campaign, notice_id, renderer, envelope
                    )
                except NoticeBuildError as exc:  # this customer alone: failed, named; the wave goes on
                    settled.append((notice_id, "failed", str(exc)))
                    summary.failed += 1
                    summary.failures.append({"customer": "", "to": "", "reply": str(exc)})
                    continue
                except DeliveryError as exc:  # never sent: back to pending, and the run ends
                    settled.append((notice_id, "pending", str(exc)))
                    run.error = run.error or str(exc)
                    continue
                slot = idle.pop()
                slot.give(notice_id, record)
                busy[slot] = notice_id
            if not busy and not settled:
                break
            for slot in workers.ready() if busy else []:
                outcome = slot.take()
                run.count(slot.name, outcome)
                given = busy.pop(slot, None)
                if outcome.status == "died":  # its notice stays `sending`: uncertain
                    workers.drop(slot)
                    continue
                assert given is not None  # a live slot reports only on the notice it was given
                settled.append((given, LEDGER_STATE[outcome.status], outcome.reply))
                idle.append(slot)
    if run.error:
        raise DeliveryError(run.error)
    if run.stopped:
        summary.note = "stopped early: the SMTP server could not be reached; the rest stays pending for the next run"


def _render_late(
    conn: Connection, runtime: Runtime, campaign: Campaign, notice_id: int, renderer: Renderer, envelope: Envelope
) -> bytes:
    """A notice the preflight did not see pending (another run put it back since): render it here."""
    now = runtime.clock.now()
    with conn.begin():
        facts, _customer_id = core.notice_facts(conn, notice_id)
    ctx = notice_context(core.campaign_facts(campaign), facts, now)
    return spool_record(ctx, facts.message_id, compose(renderer, envelope, ctx, facts.message_id, now))


# --- preview and test sends --------------------------------------------------------------


@dataclass
class Preview:
    customer: str
    to_address: str
    wave: int
    locale: str
    subject: str
    text: str
    html: str
    message_id: str
    sent_to: str | None = None
    reply: str | None = None


def preview_notice(
    runtime: Runtime, customer: str | None, wave: int | None = None, test_to: str | None = None
) -> Preview:
    """Render one customer's notice with their real data; optionally send it to a test address.

    Nothing is recorded in the ledger; the test message's Message-ID is marked ``.test``.
    """
    settings = runtime.settings
    renderer = Renderer(settings.notices)
    envelope = Envelope.from_settings(settings.notices)
    now = runtime.clock.now()
    with runtime.sessions() as session:
        campaign = _require_campaign(session)
        wave = wave or core.latest_due_wave(campaign, now) or 1
        found = core.audience(session, now, settings.notices.lookback_days)
        row = _find_customer(session, customer, found.reminders)
        uses = found.reminders.get(row.id)
        if not uses:
            raise DeliveryError(
                f"customer {row.external_id} has no mailbox with confident legacy use "
                f"in the last {settings.notices.lookback_days} days: nothing to preview"
            )
        ctx = core.build_context(campaign, wave, "reminder", row, row.email, uses, now)
    rendered: RenderedNotice = renderer.render(ctx)
    msg_id = message_id(campaign.id, wave, row.id, envelope.domain, suffix=f".test{int(now.timestamp())}")
    preview = Preview(
        row.external_id, row.email, wave, rendered.locale, rendered.subject, rendered.text, rendered.html, msg_id
    )
    if test_to:
        message = build_message(envelope, row.name, test_to, msg_id, now, rendered)
        smtp = SmtpConnection(settings.smtp, RateLimiter(0))
        try:
            delivery = smtp.send(envelope.from_address, test_to, message)
        finally:
            smtp.close()
        preview.sent_to, preview.reply = test_to, delivery.reply
        if delivery.status != "sent":
            raise DeliveryError(f"the test message to {test_to} was not accepted: {delivery.reply}")
    return preview


def _find_customer(session: Session, customer: str | None, reminders: dict[int, list[core.MailboxUse]]) -> Customer:
    if customer is None:
        if not reminders:
            raise DeliveryError("no customer is affected: nothing to preview")
        first = session.get(Customer, next(iter(reminders)))
        assert first is not None  # reminders come from the customers table, in this same session
        return first
    row = session.scalars(
        select(Customer).where((Customer.external_id == customer) | (Customer.email == customer))
    ).first()
    if row is None:
        raise DeliveryError(f"no customer with id or e-mail {customer!r}")
    return row
