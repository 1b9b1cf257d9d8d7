"""`rollout notify`: audience, exactly-once ledger, SMTP outcomes, outbox, preview."""

from __future__ import annotations

import json
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.clock import ManualClock
from rollout.errors import DeliveryError, GuardError
from rollout.models import Evidence, Exemption, LegacyDay, Mailbox, Notice, NoticeMailbox
from rollout.notify.campaign_workflow import due_wave, notify, start_campaign
from rollout.runtime import Runtime

from .campaign_support import SmtpServer, add_customers, add_legacy, configure, many_affected, smtp_overrides
from .conftest import T0, Cli

CUSTOMERS = [
    "anna@example.de,K1,anna.kunde@example.org,Anna Schmidt,de",
    "buero@example.de,K1,anna.kunde@example.org,Anna Schmidt,de",
    "zed@example.net,K2,zed@example.org,Zed Ltd,en",
    "quiet@example.net,K3,quiet@example.org,Quiet,en",
]


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def affected(runtime: Runtime, tmp_path: Path, smtp: SmtpServer) -> Runtime:
    """K1 (two mailboxes, German) and K2 (English) use SMTP-after-POP; K3 does not; wave 1 due at T0."""
    configure(runtime, **smtp_overrides(smtp))
    add_customers(runtime, tmp_path, CUSTOMERS)
    add_legacy(runtime, "anna@example.de", T0 - timedelta(days=2), ip="203.0.113.5")
    add_legacy(runtime, "buero@example.de", T0 - timedelta(days=3))
    add_legacy(runtime, "zed@example.net", T0 - timedelta(days=1))
    start_campaign(runtime, date(2026, 3, 2), at="10:00", tz="Europe/Berlin")  # 09:00 UTC = T0
    return runtime


def ledger(runtime: Runtime) -> list[tuple]:
    with runtime.sessions() as session:
        return [
            tuple(r)
            for r in session.execute(
                select(Notice.wave, Notice.customer_id, Notice.state, Notice.to_address).order_by(Notice.id)
            )
        ]


def test_sends_each_affected_customer_one_notice_listing_their_mailboxes(affected: Runtime, smtp: SmtpServer) -> None:
    """Wave 1 goes once to each affected customer, listing only their affected mailboxes."""
    summary = notify(affected)
    assert (summary.wave, summary.selected, summary.sent, summary.failed) == (1, 2, 2, 0)
    by_to = {m["To"].addresses[0].addr_spec: m for m in smtp.inbox.messages}
    assert set(by_to) == {"anna.kunde@example.org", "zed@example.org"}
    german = by_to["anna.kunde@example.org"].get_body(("plain",)).get_content()
    assert "anna@example.de" in german and "buero@example.de" in german and "zed@example.net" not in german
    assert "203.0.113.5" in german and "Erinnerung 1 von 6" in german
    assert [s for _, _, s, _ in ledger(affected)] == ["sent", "sent"]


def test_second_run_sends_nothing_new(affected: Runtime, smtp: SmtpServer) -> None:
    """Running notify twice for the same wave sends nothing the second time."""
    notify(affected)
    again = notify(affected)
    assert (again.sent, again.skipped, again.selected) == (0, 2, 2)
    assert len(smtp.inbox.messages) == 2


def test_headers_are_the_promised_ones(affected: Runtime, smtp: SmtpServer) -> None:
    """From, Reply-To, To, Date, a deterministic Message-ID and the auto-reply suppressors are set."""
    configure(affected, **smtp_overrides(smtp), **{"notices.reply_to": "Help <help@example.net>"})
    notify(affected)
    message = next(m for m in smtp.inbox.messages if "zed@" in m["To"])
    assert message["From"].addresses[0].addr_spec == "support@example.net"
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.net"
    assert message["Auto-Submitted"] == "auto-generated" and message["X-Auto-Response-Suppress"] == "All"
    assert message["Date"] and message["Message-ID"].startswith("<rollout.c1.w1.k")
    assert message.get_body(("html",)).get_content().count("zed@example.net") == 1


def test_exempt_switched_off_and_switched_mailboxes_are_left_out(affected: Runtime, tmp_path: Path) -> None:
    """Exempt mailboxes and ones whose customer turned on SMTP AUTH get no reminder."""
    with affected.sessions() as session, session.begin():
        zed = session.scalar(select(Mailbox.id).where(Mailbox.address_key == "zed@example.net"))
        session.add(Exemption(mailbox_id=zed, until=T0 + timedelta(days=30), reason="vip", actor="t", created_at=T0))
    add_legacy(affected, "anna@example.de", T0 - timedelta(hours=5), auth_last=T0 - timedelta(hours=1))
    summary = notify(affected)
    assert summary.selected == 1
    with affected.sessions() as session:
        listed = session.scalars(
            select(Mailbox.address).join(NoticeMailbox, NoticeMailbox.mailbox_id == Mailbox.id)
        ).all()
    assert listed == ["buero@example.de"]


def test_one_medium_sighting_is_notified_and_says_why(affected: Runtime, smtp: SmtpServer, tmp_path: Path) -> None:
    """A single medium-confidence sighting is enough: the notice lists the foreign sender and why it is theirs."""
    add_customers(affected, tmp_path, [*CUSTOMERS, "mid@example.net,K4,mid@example.org,Mid,en"])
    add_legacy(affected, "mid@example.net", T0 - timedelta(days=1), high=0, confidence="medium")
    with affected.sessions() as session, session.begin():
        mid = session.scalar(select(Mailbox.id).where(Mailbox.address_key == "mid@example.net"))
        day = session.get(LegacyDay, (mid, (T0 - timedelta(days=1)).date()))
        day.senders = ["private@elsewhere.org"]
        session.add(
            Evidence(
                mailbox_id=mid,
                day=day.day,
                kind="legacy",
                lines=[],
                details={
                    "tier": "strict",
                    "delta_seconds": 125.0,
                    "flags": ["sender_mismatch", "foreign_sender_domain"],
                },
            )
        )
    assert notify(affected).sent == 3
    message = next(m for m in smtp.inbox.messages if "mid@example.org" in m["To"])
    text = message.get_body(("plain",)).get_content()
    assert "sender address: private@elsewhere.org" in text
    assert "an address where this mailbox, and no other, had logged in 2 minutes before" in text
    html = message.get_body(("html",)).get_content()
    assert "private@elsewhere.org" in html and "2 minutes before" in html


def test_4xx_is_retried_then_sent(affected: Runtime, smtp: SmtpServer) -> None:
    """A 451 reply is retried within the run and the notice is then sent."""
    smtp.inbox.script = ["451 4.3.0 try later", "451 4.3.0 try later"]
    summary = notify(affected)
    assert (summary.sent, summary.deferred) == (2, 0)
    assert sorted(smtp.inbox.ids().values()) == [1, 1]


def test_persistent_4xx_leaves_the_notice_pending_for_the_next_run(affected: Runtime, smtp: SmtpServer) -> None:
    """After the retries a 4xx notice stays pending; the next run sends it."""
    configure(affected, **smtp_overrides(smtp), **{"smtp.concurrency": 1, "smtp.retries": 1})
    smtp.inbox.script = ["452 4.3.1 full", "452 4.3.1 full"]
    first = notify(affected)
    assert (first.sent, first.deferred) == (1, 1)
    assert sorted(s for _, _, s, _ in ledger(affected)) == ["pending", "sent"]
    second = notify(affected)
    assert (second.sent, second.deferred) == (1, 0)
    assert sorted(smtp.inbox.ids().values()) == [1, 1]


def test_5xx_fails_with_the_reply_recorded_and_exit_1(affected: Runtime, smtp: SmtpServer, run: Cli) -> None:
    """A 550 marks the notice failed with the server's reply, and notify exits 1."""
    configure(affected, **smtp_overrides(smtp), **{"smtp.concurrency": 1})
    smtp.inbox.script = ["550 5.1.1 no such user"]
    out = json.loads(run("notify", "--json", expect=1).output)
    assert (out["sent"], out["failed"]) == (1, 1)
    assert "550 5.1.1 no such user" in out["failures"][0]["reply"]
    with affected.sessions() as session:
        failed = session.scalars(select(Notice).where(Notice.state == "failed")).one()
    assert failed.last_reply == "550 5.1.1 no such user"
    assert notify(affected).failed == 0  # failed is final: not retried by the next run


def test_connection_lost_after_the_final_dot_leaves_the_notice_uncertain(affected: Runtime, smtp: SmtpServer) -> None:
    """The server took the final dot and died before replying: maybe delivered, so uncertain, not resent later."""
    configure(affected, **smtp_overrides(smtp), **{"smtp.concurrency": 1})
    smtp.inbox.script = ["drop"]
    summary = notify(affected)
    assert (summary.sent, summary.uncertain, summary.deferred) == (1, 1, 0)
    assert sorted(s for _, _, s, _ in ledger(affected)) == ["sending", "sent"]
    assert (notify(affected).sent, len(smtp.inbox.messages)) == (0, 1)
    assert notify(affected, resend_uncertain=True).sent == 1  # only when asked
    assert sorted(smtp.inbox.ids().values()) == [1, 1]


def test_undefined_template_variable_aborts_with_nothing_sent(
    affected: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    """An operator template using an undefined variable stops the run before any send, naming it."""
    custom = tmp_path / "tpl" / "en"
    custom.mkdir(parents=True)
    (custom / "body.txt.j2").write_text("Hello {{ customer.name }}, {{ no_such_thing }}\n")
    configure(affected, **smtp_overrides(smtp), **{"notices.template_dir": str(tmp_path / "tpl")})
    with pytest.raises(DeliveryError, match=r"en/body.txt.j2.*customer K2.*no_such_thing"):
        notify(affected)
    assert smtp.inbox.messages == [] and ledger(affected) == []


def test_outbox_writes_one_parseable_eml_per_customer_and_a_second_run_none(
    affected: Runtime, run: Cli, tmp_path: Path
) -> None:
    """--outbox writes .eml files in each customer's language; rerunning writes none."""
    outbox = tmp_path / "out"
    out = json.loads(run("notify", "--outbox", str(outbox), "--json").output)
    assert out["sent"] == 2
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 2
    parsed = {
        m["To"].addresses[0].addr_spec: m
        for m in (message_from_bytes(f.read_bytes(), policy=policy.default) for f in files)
    }
    assert parsed["anna.kunde@example.org"]["Content-Language"] == "de"
    assert "Reminder 1 of 6" in parsed["zed@example.org"]["Subject"]
    for f in files:
        f.unlink()
    again = json.loads(run("notify", "--outbox", str(outbox), "--json").output)
    assert again["sent"] == 0 and list(outbox.glob("*.eml")) == []


def test_dry_run_records_nothing(affected: Runtime, smtp: SmtpServer) -> None:
    """--dry-run counts the audience, renders it, and leaves ledger and server untouched."""
    summary = notify(affected, dry_run=True)
    assert (summary.selected, summary.remaining, summary.sent) == (2, 2, 0)
    assert ledger(affected) == [] and smtp.inbox.messages == []


def test_limit_sends_at_most_n(affected: Runtime, smtp: SmtpServer) -> None:
    """--limit 1 sends one notice; the other stays pending for the next run."""
    assert notify(affected, limit=1).sent == 1
    assert len(smtp.inbox.messages) == 1
    assert notify(affected).sent == 1


def test_due_wave_follows_the_schedule_and_the_grace_period(affected: Runtime, clock: ManualClock) -> None:
    """The due wave advances weekly; a wave later than the grace period needs --wave."""
    assert due_wave(affected) == 1
    clock.set(T0 + timedelta(days=7, hours=1))
    assert due_wave(affected) == 2
    clock.set(T0 + timedelta(days=7, hours=49))
    assert due_wave(affected) is None
    with pytest.raises(GuardError, match="--wave 2"):
        notify(affected)
    assert notify(affected, wave=2).sent == 2


def test_before_the_first_wave_nothing_is_due(affected: Runtime, clock: ManualClock, smtp: SmtpServer) -> None:
    """Before wave 1 notify sends nothing and says when wave 1 is due."""
    clock.set(T0 - timedelta(hours=1))
    summary = notify(affected)
    assert summary.wave is None and "wave 1 is due at 2026-03-02T09:00" in (summary.note or "")
    assert smtp.inbox.messages == []


def test_last_wave_says_it_is_the_last(affected: Runtime, smtp: SmtpServer, clock: ManualClock) -> None:
    """The sixth notice says it is the last reminder."""
    clock.set(T0 + timedelta(weeks=5))
    add_legacy(affected, "zed@example.net", T0 + timedelta(weeks=5) - timedelta(days=1))
    notify(affected)
    subjects = {m["Subject"] for m in smtp.inbox.messages}
    assert "Last reminder: turn on SMTP authentication for 1 mailbox" in subjects


def test_preview_prints_the_real_rendering_and_test_to_sends_it(affected: Runtime, smtp: SmtpServer, run: Cli) -> None:
    """--preview shows a customer's notice; --test-to sends it to a test address; neither records."""
    out = run("notify", "--preview", "K2").output
    assert "zed@example.net" in out and "Subject: Reminder 1 of 6" in out
    run("notify", "--preview", "K1", "--test-to", "ops@example.net")
    (message,) = smtp.inbox.messages
    assert message["To"].addresses[0].addr_spec == "ops@example.net" and ".test" in message["Message-ID"]
    assert "anna@example.de" in message.get_body(("plain",)).get_content()
    assert ledger(affected) == []


def test_thank_you_note_once_when_all_mailboxes_switched(
    affected: Runtime, smtp: SmtpServer, clock: ManualClock
) -> None:
    """With thank_you on, a reminded customer whose mailboxes all switched gets one thank-you note and no reminder."""
    configure(affected, **smtp_overrides(smtp), **{"notices.thank_you": True})
    notify(affected)
    clock.set(T0 + timedelta(days=7))
    add_legacy(affected, "zed@example.net", T0 + timedelta(days=6), auth_last=T0 + timedelta(days=6, hours=1))
    add_legacy(affected, "anna@example.de", T0 + timedelta(days=6))
    second = notify(affected)
    assert second.sent == 2  # K1's reminder, K2's thanks
    thanks = [m for m in smtp.inbox.messages if m["Subject"].startswith("Thank you")]
    assert [m["To"].addresses[0].addr_spec for m in thanks] == ["zed@example.org"]
    clock.set(T0 + timedelta(days=14))
    add_legacy(affected, "anna@example.de", T0 + timedelta(days=13))
    notify(affected)
    assert len([m for m in smtp.inbox.messages if m["Subject"].startswith("Thank you")]) == 1


def test_no_campaign_is_a_clear_error(runtime: Runtime, run: Cli) -> None:
    """notify without a campaign exits 1 and says how to start one."""
    result = run("notify", expect=1)
    assert "rollout campaign start" in result.output


def test_many_customers_each_exactly_once_with_parallel_connections(
    runtime: Runtime, tmp_path: Path, smtp: SmtpServer
) -> None:
    """With four connections and a rate limit, 60 customers each get exactly one message."""
    configure(runtime, **smtp_overrides(smtp), **{"smtp.concurrency": 4, "smtp.rate_per_second": 400})
    expected = many_affected(runtime, tmp_path, 60, T0 - timedelta(hours=1))
    start_campaign(runtime, date(2026, 3, 2), at="10:00")
    assert notify(runtime).sent == 60
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp.inbox.messages) == sorted(expected)
    assert set(smtp.inbox.ids().values()) == {1}


def test_refused_login_stops_the_run_and_leaves_notices_pending(affected: Runtime, tmp_path: Path) -> None:
    """A server that offers no AUTH for the configured user stops the run; nothing is stranded in `sending`."""
    with SmtpServer("127.0.0.33") as plain:
        configure(affected, **smtp_overrides(plain), **{"smtp.username": "notices", "smtp.password": "pw"})
        with pytest.raises(DeliveryError, match="offers no SMTP AUTH"):
            notify(affected)
    assert {s for _, _, s, _ in ledger(affected)} == {"pending"}


def test_a_later_wave_lists_mailboxes_first_seen_after_wave_1(
    affected: Runtime, clock: ManualClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Wave 2 lists every mailbox of the customer affected by then, including one first seen after wave 1."""
    add_customers(affected, tmp_path, [*CUSTOMERS, "neu@example.net,K2,zed@example.org,Zed Ltd,en"])
    notify(affected)
    first = next(m for m in smtp.inbox.messages if "zed@example.org" in m["To"]).get_body(("plain",)).get_content()
    assert "zed@example.net" in first and "neu@example.net" not in first
    add_legacy(affected, "neu@example.net", T0 + timedelta(days=3), confidence="medium", high=0)
    clock.set(T0 + timedelta(days=7))
    assert notify(affected).wave == 2
    second = [m for m in smtp.inbox.messages if "zed@example.org" in m["To"]][-1].get_body(("plain",)).get_content()
    assert "zed@example.net" in second and "neu@example.net" in second
