"""`rollout step`, `pause`, `resume`, `undo`, `exempt`: guards, the stage ladder, map swaps, audit."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.clock import ManualClock
from rollout.enforcement import client_reply
from rollout.models import AuditEvent, Campaign, Cohort, Notice
from rollout.plan import plan_workflow as wf
from rollout.runtime import Runtime

from .conftest import T0, Cli
from .plan_support import add_legacy, apply_plan, configure, import_locals, mailbox_id

LOCALS = ["anna", "bert", "carl", "dora", "emil", "fritz"]
UTC = T0.tzinfo


@pytest.fixture
def planned(run: Cli, runtime: Runtime, tmp_path: Path) -> Path:
    """Three cohorts (a–b, c–d, e–f) due from T0 on, every hour; returns the map path."""
    map_path = configure(runtime, tmp_path)
    import_locals(runtime, tmp_path, LOCALS)
    add_legacy(
        runtime, "anna@example.de", T0.date() - timedelta(days=1), senders=["anna@example.de", "Info@Anna-Shop.de"]
    )
    add_legacy(runtime, "carl@example.de", T0.date() - timedelta(days=1))
    apply_plan(run, 3)
    return map_path


def map_keys(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {k: v.split(" ", 1)[0] for k, v in (line.split("\t", 1) for line in lines)}


def stages(runtime: Runtime) -> list[str]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Cohort.stage).join(Cohort.plan).where(Cohort.plan.has(active=True)).order_by(Cohort.position)
            )
        )


def test_step_switches_off_the_first_cohort_with_senders(run: Cli, runtime: Runtime, planned: Path) -> None:
    """The map lists the cohort's mailboxes and the envelope senders seen in their legacy use."""
    out = run("step", "--yes").output
    assert "1 mailboxes of this cohort still use the legacy path" in out
    assert map_keys(planned) == {
        "anna@example.de": "REJECT",
        "bert@example.de": "REJECT",
        "info@anna-shop.de": "REJECT",
    }
    assert Path(str(planned) + ".db").exists()
    assert stages(runtime) == ["reject", "pending", "pending"]


def test_step_asks_and_does_nothing_when_declined(run: Cli, runtime: Runtime, planned: Path) -> None:
    """Without --yes it asks; answering no changes nothing."""
    out = run("step", input="n\n").output
    assert "switch cohort a–b to reject?" in out and "nothing changed" in out
    assert not planned.exists() and stages(runtime) == ["pending"] * 3


def test_dry_run_shows_diff_and_customers(run: Cli, runtime: Runtime, planned: Path) -> None:
    """--dry-run prints the map diff and the customers, and writes nothing."""
    out = run("step", "--dry-run").output
    assert "+ anna@example.de" in out and "+ info@anna-shop.de" in out and "Customer 0" in out
    assert not planned.exists() and stages(runtime) == ["pending"] * 3


def test_ladder_warn_defer_reject(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """With a three-stage ladder the current cohort climbs before the next one starts."""
    runtime.settings = _with(runtime, ladder=("warn", "defer", "reject"))
    seen, texts = [], []
    for _ in range(4):
        clock.advance(timedelta(minutes=20))
        run("step", "--yes")
        seen.append((stages(runtime)[:2], map_keys(planned).get("anna@example.de")))
        texts.append(planned.read_text())
    assert seen == [
        (["warn", "pending"], "WARN"),
        (["defer", "pending"], "DEFER"),
        (["reject", "pending"], "REJECT"),
        (["reject", "warn"], "REJECT"),
    ]
    assert "anna@example.de\tDEFER 4.7.1 SMTP-after-POP is switched off" in texts[1]


def test_guards_paused_schedule_soak_and_window(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """Each guard refuses with its reason; --force --reason overrides and is audited."""
    run("pause", "--reason", "ticket flood")
    out = run("step", "--yes", expect=1).output
    assert "paused (ticket flood" in out
    run("resume")
    run("step", "--yes")
    out = run("step", "--yes", expect=1).output
    assert "scheduled for" in out
    clock.advance(timedelta(hours=1))
    runtime.settings = _with(runtime, soak_hours=24.0)
    assert "soaking until" in run("step", "--yes", expect=1).output
    run("step", "--yes", "--force", expect=2)  # --force without --reason is misuse
    run("step", "--yes", "--force", "--reason", "customer asked")
    with runtime.sessions() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "step").order_by(AuditEvent.id.desc())
        ).first()
    assert event is not None and event.details["reason"] == "customer asked" and event.details["forced"]
    assert event.details["map_before"] != event.details["map_after"]


def test_window_guard(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """Outside the step window the step is refused and next_step says when it opens."""
    runtime.settings = runtime.settings.__class__(
        **{
            **runtime.settings.__dict__,
            "rollout": runtime.settings.rollout.__class__(window="10:00-12:00", timezone="UTC", skip_weekends=True),
        }
    )
    assert "outside the step window" in run("step", "--yes", expect=1).output
    upcoming = wf.next_step(runtime)
    assert upcoming is not None and upcoming.due_at == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_campaign_guard(run: Cli, runtime: Runtime, planned: Path) -> None:
    """While the campaign's last wave is not due or still pending, step refuses."""
    with runtime.sessions() as session, session.begin():
        campaign = Campaign(
            created_at=T0,
            actor="t",
            first_at=T0 - timedelta(days=7),
            weeks=2,
            weekday="mon",
            at_time="09:00",
            timezone="UTC",
            active=True,
        )
        session.add(campaign)
        session.flush()
        session.add(
            Notice(
                campaign_id=campaign.id,
                wave=2,
                customer_id=1,
                state="pending",
                to_address="x@example.org",
                message_id="<1@t>",
                created_at=T0,
            )
        )
    assert "still has 1 notices pending" in run("step", "--yes", expect=1).output
    with runtime.sessions() as session, session.begin():
        for notice in session.scalars(select(Notice)):
            notice.state = "sent"
    run("step", "--yes")


def test_undo_restores_the_previous_map(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """undo takes the last step back; --to-step 0 empties the map; both are audited."""
    run("step", "--yes")
    first = planned.read_text()
    clock.advance(timedelta(hours=1))
    run("step", "--yes")
    assert "carl@example.de" in map_keys(planned)
    data = json.loads(run("undo", "--reason", "oops", "--json").output)
    assert (data["from_step"], data["to_step"]) == (2, 1) and planned.read_text() == first
    assert stages(runtime) == ["reject", "pending", "pending"]
    run("undo", "--to-step", "0")
    assert map_keys(planned) == {}
    run("undo", expect=1)
    with runtime.sessions() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.action == "undo")).all()
    assert len(actions) == 2


def test_exempt_takes_a_mailbox_out_until_it_expires(
    run: Cli, runtime: Runtime, clock: ManualClock, planned: Path
) -> None:
    """An exempt mailbox leaves the map; a second postponement needs --force; expiry puts it back."""
    run("step", "--yes")
    run("exempt", "anna@example.de", "--until", "2026-03-03 09:00", "--reason", "scanner")
    assert "anna@example.de" not in map_keys(planned) and "bert@example.de" in map_keys(planned)
    assert (
        "already postponed once"
        in run("exempt", "anna@example.de", "--until", "2026-03-04", "--reason", "again", expect=1).output
    )
    listed = json.loads(run("exempt", "--list", "--json").output)
    assert [(e["address"], e["reason"]) for e in listed] == [("anna@example.de", "scanner")]
    with runtime.sessions() as session:
        schedule = wf.plans.schedule_for(session, [mailbox_id(runtime, "anna@example.de")])
    assert schedule[mailbox_id(runtime, "anna@example.de")].exempt_until == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    clock.advance(timedelta(days=2))
    assert wf.expire_exemptions(runtime) == 1
    assert "anna@example.de" in map_keys(planned)
    assert wf.expire_exemptions(runtime) == 0
    assert run("exempt", "--list", "--json").output.strip() == "[]"


def test_exempt_errors_name_the_problem(run: Cli, runtime: Runtime, planned: Path) -> None:
    """Unknown mailbox, a date in the past, and missing options are clear errors."""
    assert (
        "not in the inventory"
        in run("exempt", "nobody@example.de", "--until", "2026-04-01", "--reason", "x", expect=1).output
    )
    assert (
        "not in the future"
        in run("exempt", "anna@example.de", "--until", "2026-01-01", "--reason", "x", expect=1).output
    )
    run("exempt", "anna@example.de", expect=2)


def test_gate_counts_refusals_since_the_switch(run: Cli, runtime: Runtime, clock: ManualClock, planned: Path) -> None:
    """Refusals of switched-off mailboxes on or after their switch day are the gate figure."""
    run("step", "--yes")
    add_legacy(runtime, "bert@example.de", T0.date(), refused=4)
    add_legacy(runtime, "bert@example.de", T0.date() - timedelta(days=3), refused=9)  # before the switch
    clock.advance(timedelta(hours=1))
    upcoming = wf.next_step(runtime)
    assert (
        upcoming is not None
        and upcoming.refusals_since_switch == 4
        and upcoming.label == "c–d"
        and upcoming.still_legacy == 1
    )


def test_client_reply_is_what_postfix_says() -> None:
    """The reply support quotes: code, enhanced status, sender, our text."""
    from rollout.config import EnforcementSettings

    settings = EnforcementSettings(help_url="https://help.example/auth")
    assert client_reply(settings, "a@example.de", "reject").startswith(
        "554 5.7.1 <a@example.de>: Sender address rejected: SMTP-after-POP is switched off for a@example.de"
    )
    assert client_reply(settings, "a@example.de", "defer").startswith("450 4.7.1 <a@example.de>:")
    assert "https://help.example/auth" in client_reply(settings, "a@example.de", "defer")


def _with(runtime: Runtime, **enforcement: object):  # type: ignore[no-untyped-def]
    import dataclasses

    return dataclasses.replace(
        runtime.settings, enforcement=dataclasses.replace(runtime.settings.enforcement, **enforcement)
    )
