"""Helpers for the plan, step and enforcement tests: an inventory, scan data, notices, settings."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from rollout.config import GateSettings
from rollout.models import Campaign, Customer, LegacyDay, Mailbox, Notice, NoticeMailbox
from rollout.runtime import Runtime
from rollout.scan.inventory import import_csv

from .conftest import T0, Cli, write_csv

# Every threshold off: tests of the step's other guards need no scan data (tests/test_gates.py turns them on).
GATES_OFF = GateSettings(
    max_scan_age_minutes=None, max_refusals_per_hour=None, max_refused_share=None, max_next_legacy_share=None
)


def configure(runtime: Runtime, tmp_path: Path, gates: GateSettings = GATES_OFF, **enforcement: Any) -> Path:
    """Point the enforcement map into ``tmp_path``; step at any time of day, no soak and no gates unless asked."""
    settings = runtime.settings
    enforcement.setdefault("map_path", str(tmp_path / "smtp-after-pop-disabled"))
    enforcement.setdefault("list_path", str(tmp_path / "disabled.txt"))
    enforcement.setdefault("soak_hours", 0.0)
    runtime.settings = dataclasses.replace(
        settings,
        enforcement=dataclasses.replace(settings.enforcement, **enforcement),
        rollout=dataclasses.replace(settings.rollout, window="00:00-23:59", timezone="UTC", skip_weekends=False),
        gates=gates,
    )
    return Path(enforcement["map_path"])


def apply_plan(run: Cli, cohorts: int, every: str = "1h", start: datetime = T0, *options: str) -> str:
    """`rollout plan --apply` of ``cohorts`` cohorts from ``start``, one every ``every``, stepping at any time (UTC)."""
    args = ["--cohorts", str(cohorts), "--start", start.strftime("%Y-%m-%d %H:%M"), "--every", every]
    return run("plan", *args, "--tz", "UTC", "--window", "00:00-23:59", *options, "--apply").output


def switch_off_every_cohort(run: Cli, runtime: Runtime, cohorts: int) -> None:
    """Plan ``cohorts`` cohorts an hour apart from T0 and take each step on time; the clock ends an hour after the
    last one, when the final step (retiring the legacy map) is due."""
    apply_plan(run, cohorts)
    for hour in range(cohorts):
        runtime.clock.set(T0 + timedelta(hours=hour))  # type: ignore[attr-defined]
        run("step", "--yes")
    runtime.clock.set(T0 + timedelta(hours=cohorts))  # type: ignore[attr-defined]


def import_locals(runtime: Runtime, tmp_path: Path, locals_: list[str], domain: str = "example.de") -> None:
    """One mailbox per local part, each with its own customer."""
    rows = [f"{local}@{domain},K{i},k{i}@example.org,Customer {i},de" for i, local in enumerate(locals_)]
    path = write_csv(tmp_path / "inventory.csv", rows)
    with runtime.sessions() as session, session.begin():
        import_csv(session, path, T0)


def mailbox_id(runtime: Runtime, address: str) -> int:
    with runtime.sessions() as session:
        return session.scalars(select(Mailbox.id).where(Mailbox.address_key == address.lower())).one()


def add_legacy(
    runtime: Runtime,
    address: str,
    day: date,
    senders: list[str] | None = None,
    refused: int = 0,
    auth_last: datetime | None = None,
    warned: bool = True,
) -> None:
    """A day of legacy use as the scan would record it.

    ``warned``: its customer got a reminder long before (see ``warn``).
    """
    seen = datetime.combine(day, datetime.min.time(), tzinfo=T0.tzinfo) + timedelta(hours=8)
    with runtime.sessions() as session, session.begin():
        session.add(
            LegacyDay(
                mailbox_id=mailbox_id(runtime, address),
                day=day,
                legacy_count=3,
                high_count=3,
                first_seen=seen,
                last_seen=seen,
                last_ip="192.0.2.1",
                client_ips=["192.0.2.1"],
                senders=senders or [address],
                confidence="high",
                auth_count=1 if auth_last else 0,
                auth_last=auth_last,
                refused_count=refused,
                refused_last=seen if refused else None,
            )
        )
    if warned:
        warn(runtime, address, T0 - timedelta(days=30))


WARNINGS = "warnings"  # the actor of the campaign whose reminders ``warn`` records


def warn(
    runtime: Runtime, address: str, sent_at: datetime, delivery: str | None = None, reply: str | None = None
) -> None:
    """A reminder listing ``address`` (no date told), sent at ``sent_at``: what a step's hold-back looks for."""
    with runtime.sessions() as session, session.begin():
        box = session.get(Mailbox, mailbox_id(runtime, address))
        assert box is not None
        campaign = session.scalars(select(Campaign).where(Campaign.actor == WARNINGS)).first()
        if campaign is None:
            campaign = Campaign(
                created_at=T0,
                actor=WARNINGS,
                first_at=T0 - timedelta(days=60),
                weeks=6,
                weekday="mon",
                at_time="09:00",
                timezone="UTC",
                active=False,
            )
            session.add(campaign)
            session.flush()
        wave = 1 + (
            session.scalar(
                select(func.max(Notice.wave)).where(
                    Notice.campaign_id == campaign.id, Notice.customer_id == box.customer_id
                )
            )
            or 0
        )
        notice = Notice(
            campaign_id=campaign.id,
            wave=wave,
            customer_id=box.customer_id,
            state="sent",
            to_address="k@example.org",
            message_id=f"<w{wave}.{box.id}@t>",
            created_at=sent_at,
            sent_at=sent_at,
            delivery=delivery,
            delivery_reply=reply,
        )
        session.add(notice)
        session.flush()
        session.add(NoticeMailbox(notice_id=notice.id, mailbox_id=box.id))


def tell(runtime: Runtime, address: str, switch_at: datetime, state: str = "sent") -> None:
    """A notice that told the customer of ``address`` this switch-off date."""
    with runtime.sessions() as session, session.begin():
        box = session.get(Mailbox, mailbox_id(runtime, address))
        assert box is not None
        campaign = session.scalars(select(Campaign).where(Campaign.actor == "t")).first()
        if campaign is None:
            campaign = Campaign(
                created_at=T0,
                actor="t",
                first_at=T0 - timedelta(days=60),
                weeks=1,
                weekday="mon",
                at_time="09:00",
                timezone="UTC",
                active=False,
            )
            session.add(campaign)
            session.flush()
        notice = Notice(
            campaign_id=campaign.id,
            wave=1,
            customer_id=box.customer_id,
            state=state,
            to_address="k@example.org",
            message_id=f"<{box.id}@t>",
            created_at=T0,
            sent_at=T0,
        )
        session.add(notice)
        session.flush()
        session.add(NoticeMailbox(notice_id=notice.id, mailbox_id=box.id, switch_at=switch_at))


def customer_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return len(session.scalars(select(Customer.id)).all())
