"""`rollout campaign start|show`: the weekly schedule."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select

from rollout.models import AuditEvent, Customer, Notice
from rollout.notify.campaign_workflow import notify, start_campaign
from rollout.runtime import Runtime

from .campaign_support import SmtpServer, configure, many_affected, smtp_overrides
from .conftest import T0, Cli


def test_start_moves_to_the_weekday_and_shows_six_waves(run: Cli) -> None:
    """--first on a Thursday with --weekday mon starts the next Monday at 09:00 Berlin; six waves a week apart."""
    out = json.loads(run("campaign", "start", "--first", "2026-02-26", "--json").output)
    assert out["first_at"] == "2026-03-02T08:00:00+00:00" and out["weeks"] == 6
    assert [w["due_at"][:16] for w in out["waves"]][:2] == ["2026-03-02T08:00", "2026-03-09T08:00"]
    assert len(out["waves"]) == 6


def test_waves_keep_local_time_across_daylight_saving(run: Cli) -> None:
    """A wave after the switch to summer time is still due at 09:00 local (07:00 UTC)."""
    out = json.loads(run("campaign", "start", "--first", "2026-03-16", "--weeks", "3", "--json").output)
    assert [w["due_at"][11:16] for w in out["waves"]] == ["08:00", "08:00", "07:00"]


def test_second_start_needs_replace(run: Cli, runtime: Runtime) -> None:
    """An active campaign is not silently replaced; --replace does it and the audit log says so."""
    run("campaign", "start", "--first", "2026-03-02")
    result = run("campaign", "start", "--first", "2026-03-09", expect=1)
    assert "use --replace" in result.output
    out = json.loads(run("campaign", "start", "--first", "2026-03-09", "--replace", "--json").output)
    assert out["id"] == 2 and out["active"]
    with runtime.sessions() as session:
        details = session.scalars(select(AuditEvent.details).where(AuditEvent.action == "campaign.start")).all()
    assert [d["replaced"] for d in details] == [None, 1]


def test_show_without_campaign_and_with_one(run: Cli) -> None:
    """show says how to start a campaign, then lists each wave with its counts."""
    assert "rollout campaign start" in run("campaign", "show").output
    run("campaign", "start", "--first", "2026-03-02", "--weeks", "2", "--at", "10:30", "--tz", "UTC")
    out = run("campaign", "show").output
    assert "campaign 1 (active): 2 weekly waves, mon 10:30 UTC; no wave is due now" in out  # T0 is 09:00, before 10:30
    assert "2026-03-09 10:30 UTC" in out


def test_bad_time_zone_and_time_are_clear_errors(run: Cli) -> None:
    """An unknown zone or a malformed --at exits 1 with what is wrong."""
    assert (
        "unknown time zone 'Mars/Base'"
        in run("campaign", "start", "--first", "2026-03-02", "--tz", "Mars/Base", expect=1).output
    )
    assert "--at must be HH:MM" in run("campaign", "start", "--first", "2026-03-02", "--at", "nine", expect=1).output


BOUNCE = (
    "host mx.remote.test[192.0.2.9] said: 550 5.1.1 <kunde0001@example.org>: User unknown (in reply to RCPT TO command)"
)
DELIVERED = "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 99)"
DELAYED = "dsn=4.4.1, status=deferred (connect to mx.remote.test[192.0.2.9]:25: Connection timed out)"
# What the provider's Postfix logged for each notice of wave 1, in ledger order (None: not in the log yet); the
# counts differ per state, so a column showing another state's count cannot pass.
OUTCOMES = [DELIVERED, f"dsn=5.1.1, status=bounced ({BOUNCE})", DELAYED, DELIVERED, DELAYED, DELIVERED, None]


def provider_log(path: Path, notices: list[tuple[str, str]]) -> Path:
    """The provider MTA's log of our notices: each accepted from us, then sent on with its outcome."""
    lines = []
    for i, ((message_id, to), outcome) in enumerate(zip(notices, OUTCOMES, strict=True)):
        if outcome is None:
            continue
        at, qid = f"Mar  2 09:05:0{i} mx1 postfix", f"3F2A1B4C7{i}"
        lines += [
            f"{at}/smtpd[11]: {qid}: client=ops[203.0.113.20]",
            f"{at}/cleanup[15]: {qid}: message-id={message_id}",
            f"{at}/qmgr[12]: {qid}: from=<support@example.net>, size=1234, nrcpt=1 (queue active)",
            f"{at}/smtp[13]: {qid}: to=<{to}>, relay=mx.remote.test[192.0.2.9]:25, delay=1, {outcome}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_show_counts_each_waves_deliveries_from_the_mta_log(run: Cli, runtime: Runtime, tmp_path: Path) -> None:
    """After `rollout scan` of the provider's log, `campaign show` gives wave 1's sent notices as delivered, bounced
    and delayed in their columns, and names the customer whose notice bounced with the reply, for support to call."""
    with SmtpServer() as smtp:
        configure(runtime, **smtp_overrides(smtp))
        many_affected(runtime, tmp_path, len(OUTCOMES), T0 - timedelta(hours=1))
        start_campaign(runtime, date(2026, 3, 2), at="09:00", tz="UTC")
        assert notify(runtime).sent == len(OUTCOMES)
    with runtime.sessions() as session:  # the ledger's order is the database's: PostgreSQL numbers customers its way
        ledger = session.execute(
            select(Notice.message_id, Notice.to_address, Customer.external_id, Customer.name)
            .join(Customer, Customer.id == Notice.customer_id)
            .order_by(Notice.id)
        ).all()
    notices = [(message_id, to) for message_id, to, _ref, _name in ledger]
    _, bounced_to, bounced_ref, bounced_name = ledger[1]  # OUTCOMES[1] is the bounce
    runtime.clock.set(T0 + timedelta(minutes=30))  # type: ignore[attr-defined]
    assert (
        "our notices: 1 bounced, 2 delayed, 3 delivered"
        in run("scan", str(provider_log(tmp_path / "mail.log", notices))).output
    )

    lines = run("campaign", "show").output.splitlines()
    header = next(line for line in lines if line.startswith("wave"))
    wave_1 = next(line for line in lines if line.startswith("1 "))
    columns = header.split()[2:]  # after "wave" and "due" (the due time has spaces: the counts are the last ones)
    counts = dict(zip(columns, map(int, wave_1.split()[-len(columns) :]), strict=True))
    assert counts == {"pending": 0, "sending": 0, "sent": 7, "failed": 0, "delivered": 3, "bounced": 1, "delayed": 2}
    assert "unreachable (their latest notice bounced; call them): 1" in lines
    assert f"  {bounced_ref} {bounced_name} <{bounced_to}> wave 1: {BOUNCE}" in lines
