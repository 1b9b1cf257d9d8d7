"""A fixture rollout built with ORM inserts: every area's tables filled as their engines would.

Story at T0 + 20 days (``NOW``): a two-cohort plan, cohort 1 (a–m) switched off at
T0 + 15 days, cohort 2 (n–z) pending; a six-wave campaign from T0 with waves 1–3
sent; anna (cohort 1) still relays without AUTH and is refused; bert switched to
SMTP AUTH; nina (cohort 2) still uses the legacy path and is exempt for 3 days.
"""

from __future__ import annotations

from datetime import timedelta

from rollout.models import (
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
    RolloutState,
    ScanSource,
)
from rollout.runtime import Runtime

from .conftest import T0

NOW = T0 + timedelta(days=20)
SWITCHED_AT = T0 + timedelta(days=15)
ANNA_LINE = "Mar 20 10:00:00 mx1 postfix/smtpd[123]: 4ABC: client=dsl-1.example.net[198.51.100.7]"


def build_rollout(runtime: Runtime, paused: bool = False) -> None:
    with runtime.sessions() as s, s.begin():
        acme = Customer(
            external_id="K-1", email="billing@acme.example", name="Acme GmbH", locale="de", created_at=T0, updated_at=T0
        )
        solo = Customer(
            external_id="K-2", email="nina@home.example", name="Nina Solo", locale="en", created_at=T0, updated_at=T0
        )
        s.add_all([acme, solo])
        s.flush()
        anna = _mailbox(s, "Anna@acme.example", acme, "a", "anna")
        bert = _mailbox(s, "bert@acme.example", acme, "b", "bert", login="web1p2")
        zoe = _mailbox(s, "zoe@acme.example", acme, "z", "zoe")
        nina = _mailbox(s, "nina@home.example", solo, "n", "nina")

        plan = Plan(created_at=T0, actor="ops", params={"cohorts": 2}, active=True)
        s.add(plan)
        s.flush()
        first = Cohort(
            plan_id=plan.id,
            position=1,
            label="a–m",
            start_key="0",
            end_key="n",
            mailbox_count=2,
            share=0.5,
            scheduled_at=SWITCHED_AT,
            stage="reject",
            enforced_at=SWITCHED_AT,
            stage_changed_at=SWITCHED_AT,
        )
        second = Cohort(
            plan_id=plan.id,
            position=2,
            label="n–z",
            start_key="n",
            end_key=None,
            mailbox_count=2,
            share=0.5,
            scheduled_at=NOW + timedelta(days=1),
            stage="pending",
        )
        s.add_all([first, second])
        s.flush()
        for mailbox, cohort in ((anna, first), (bert, first), (zoe, second), (nina, second)):
            s.add(CohortMember(plan_id=plan.id, mailbox_id=mailbox.id, cohort_id=cohort.id))

        day = lambda n: (T0 + timedelta(days=n)).date()  # noqa: E731
        s.add_all(
            [
                LegacyDay(
                    mailbox_id=anna.id,
                    day=day(5),
                    legacy_count=4,
                    high_count=4,
                    first_seen=T0 + timedelta(days=5),
                    last_seen=T0 + timedelta(days=5, hours=3),
                    last_ip="198.51.100.7",
                    client_ips=["198.51.100.7"],
                    senders=["anna@acme.example", "info@acme.example"],
                    confidence="high",
                ),
                LegacyDay(
                    mailbox_id=anna.id,
                    day=day(18),
                    legacy_count=0,
                    client_ips=[],
                    senders=[],
                    refused_count=3,
                    refused_last=T0 + timedelta(days=18, hours=1),
                ),
                LegacyDay(
                    mailbox_id=bert.id,
                    day=day(3),
                    legacy_count=2,
                    high_count=0,
                    last_seen=T0 + timedelta(days=3),
                    last_ip="203.0.113.9",
                    client_ips=["203.0.113.9"],
                    senders=["bert@acme.example"],
                    confidence="medium",
                ),
                LegacyDay(
                    mailbox_id=bert.id,
                    day=day(10),
                    legacy_count=0,
                    client_ips=[],
                    senders=[],
                    auth_count=5,
                    auth_last=T0 + timedelta(days=10),
                ),
                LegacyDay(
                    mailbox_id=nina.id,
                    day=day(12),
                    legacy_count=1,
                    high_count=1,
                    last_seen=T0 + timedelta(days=12),
                    last_ip="192.0.2.44",
                    client_ips=["192.0.2.44"],
                    senders=["nina@home.example"],
                    confidence="high",
                ),
            ]
        )
        s.add(
            Evidence(
                mailbox_id=anna.id,
                day=day(5),
                kind="legacy",
                lines=[{"file": "/var/log/mail.log", "offset": 1234, "line": ANNA_LINE}],
                details={},
            )
        )
        s.add(
            ScanSource(
                host="mx1",
                path="/var/log/mail.log",
                device=1,
                inode=2,
                fingerprint="f" * 64,
                offset=10,
                lines=1,
                last_scan_at=NOW,
            )
        )
        s.add(
            Exemption(
                mailbox_id=nina.id,
                until=NOW + timedelta(days=3),
                reason="travelling, back Friday",
                actor="support",
                created_at=NOW - timedelta(days=1),
            )
        )

        campaign = Campaign(
            created_at=T0,
            actor="ops",
            first_at=T0,
            weeks=6,
            weekday="mon",
            at_time="10:00",
            timezone="Europe/Berlin",
            active=True,
        )
        s.add(campaign)
        s.flush()
        for wave in (1, 2, 3):
            _notice(s, campaign, wave, acme, [anna, bert], state="sent")
        _notice(s, campaign, 3, solo, [nina], state="sending")
        _notice(s, campaign, 2, solo, [nina], state="failed")
        if paused:
            s.add(
                RolloutState(
                    paused=True,
                    paused_reason="support queue is full",
                    paused_by="ops",
                    paused_at=NOW - timedelta(hours=2),
                )
            )


def _mailbox(s, address: str, customer: Customer, bucket: str, sort_key: str, login: str | None = None) -> Mailbox:
    mailbox = Mailbox(
        address=address,
        address_key=address.lower(),
        domain=address.split("@")[1],
        login=login,
        customer_id=customer.id,
        bucket=bucket,
        sort_key=sort_key,
        created_at=T0,
        updated_at=T0,
    )
    s.add(mailbox)
    s.flush()
    return mailbox


def _notice(s, campaign: Campaign, wave: int, customer: Customer, mailboxes: list[Mailbox], state: str) -> None:
    at = T0 + timedelta(weeks=wave - 1)
    notice = Notice(
        campaign_id=campaign.id,
        wave=wave,
        customer_id=customer.id,
        state=state,
        to_address=customer.email,
        message_id=f"<rollout.{campaign.id}.{wave}.{customer.external_id}@example.net>",
        attempts=1,
        sent_at=at if state == "sent" else None,
        created_at=at,
    )
    s.add(notice)
    s.flush()
    for mailbox in mailboxes:
        s.add(NoticeMailbox(notice_id=notice.id, mailbox_id=mailbox.id, switch_at=SWITCHED_AT))
