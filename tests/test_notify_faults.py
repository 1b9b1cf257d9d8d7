"""notify on a bad day: a notice that cannot be built, an SMTP server that is not there, hostile names."""

from __future__ import annotations

import json
from datetime import date, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from rollout.notify.campaign_workflow import start_campaign
from rollout.notify.notices import Envelope, RenderedNotice, build_message
from rollout.runtime import Runtime

from .campaign_support import SmtpServer, add_customers, add_legacy, configure, free_port, smtp_overrides
from .conftest import T0, Cli

CUSTOMERS = [
    "anna@example.de,K1,anna.kunde@example.org,Anna Schmidt,de",
    "jorg@example.de,K2,jörg@example.org,Jörg,de",
    "zed@example.net,K3,zed@example.org,Zed Ltd,en",
]


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def affected(runtime: Runtime, tmp_path: Path, smtp: SmtpServer) -> Runtime:
    configure(runtime, **smtp_overrides(smtp))
    add_customers(runtime, tmp_path, CUSTOMERS)
    for address in ("anna@example.de", "jorg@example.de", "zed@example.net"):
        add_legacy(runtime, address, T0 - timedelta(days=2))
    start_campaign(runtime, date(2026, 3, 2), at="10:00", tz="Europe/Berlin")
    return runtime


def test_a_notice_that_cannot_be_built_fails_that_customer_alone(affected: Runtime, smtp: SmtpServer, run: Cli) -> None:
    """A contact address with a non-ASCII local part: K2 fails, named, with why; K1 and K3 get theirs; exit 1."""
    out = json.loads(run("notify", "--json", expect=1).output)
    assert (out["sent"], out["failed"]) == (2, 1)
    (failure,) = out["failures"]
    assert failure["customer"] == "K2" and "jörg@example.org" in failure["to"] and "SMTPUTF8" in failure["reply"]
    assert sorted(m["To"].addresses[0].addr_spec for m in smtp.inbox.messages) == [
        "anna.kunde@example.org",
        "zed@example.org",
    ]
    again = json.loads(run("notify", "--json").output)
    assert (again["sent"], again["failed"], len(smtp.inbox.messages)) == (0, 0, 2)  # failed is final, nothing resent


def test_no_smtp_server_is_exit_1_with_the_notices_left_pending(affected: Runtime, run: Cli) -> None:
    """Nothing listens on the SMTP port: one Error line, exit 1 (cron alerts), every notice still pending."""
    configure(
        affected,
        **{"smtp.host": "127.0.0.1", "smtp.port": free_port(), "smtp.retries": 0, "smtp.retry_backoff_seconds": 0.01},
    )
    result = run("notify", expect=1)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "could not be reached" in errors[0] and "pending" in errors[0]
    assert "Traceback" not in result.output


def test_a_hostile_display_name_is_folded_and_cleaned() -> None:
    """256 emoji: every header line within 78 characters, every encoded word within 75; a bidi override is dropped."""
    envelope = Envelope.from_settings(configure_notices())
    rendered = RenderedNotice("Subject", "text", "<p>html</p>", "en")
    for name in ["😀" * 256, "Bank \u202eexe.fdp", "x" * 2000]:
        message = build_message(envelope, name, "k@example.org", "<id@example.net>", T0, rendered)
        header = message.split(b"\r\n\r\n", 1)[0].decode("ascii")
        assert max(len(line) for line in header.split("\r\n")) <= 78
        parsed = message_from_bytes(message, policy=policy.default)
        assert parsed["To"].addresses[0].addr_spec == "k@example.org"
        assert "\u202e" not in parsed["To"].addresses[0].display_name
        assert parsed["To"].addresses[0].display_name.replace(" ", "") == name.replace("\u202e", "").replace(" ", "")


def configure_notices():  # type: ignore[no-untyped-def]
    from rollout.config import NoticeSettings

    return NoticeSettings()
