"""`rollout attribute` and `rollout dismiss`: ops resolve ambiguous sightings, audited, notified only if attributed."""

from __future__ import annotations

import json
from datetime import date
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from rollout.models import AuditEvent
from rollout.notify.campaign_workflow import start_campaign
from rollout.runtime import Runtime

from .campaign_support import add_customers
from .conftest import Cli

CUSTOMERS = [
    "anna@example.org,K1,anna.kunde@customers.test,Anna,en",
    "bert@example.org,K2,bert.kunde@customers.test,Bert,en",
    "carl@example.org,K3,carl.kunde@customers.test,Carl,en",
]
# two users log in from one IP; a relay with a sender naming neither: ambiguous. Then the same for carl and bert.
LOG = """\
2026-03-01T10:00:00Z mx1 dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.1, session=<a1>
2026-03-01T10:00:10Z mx1 dovecot: pop3-login: Login: user=<bert@example.org>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.1, session=<b1>
2026-03-01T10:01:00Z mx1 postfix/smtpd[11]: 3F2A1B4C5D: client=unknown[203.0.113.5]
2026-03-01T10:01:01Z mx1 postfix/qmgr[12]: 3F2A1B4C5D: from=<shop@elsewhere.test>, size=1234, nrcpt=1 (queue active)
2026-03-01T10:01:02Z mx1 postfix/smtp[13]: 3F2A1B4C5D: to=<x@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=2.0.0, status=sent (250 ok)
2026-03-01T10:01:03Z mx1 postfix/qmgr[12]: 3F2A1B4C5D: removed
2026-03-01T11:00:00Z mx1 dovecot: pop3-login: Login: user=<carl@example.org>, method=PLAIN, rip=203.0.113.6, lip=192.0.2.1, session=<c1>
2026-03-01T11:00:10Z mx1 dovecot: pop3-login: Login: user=<bert@example.org>, method=PLAIN, rip=203.0.113.6, lip=192.0.2.1, session=<b2>
2026-03-01T11:01:00Z mx1 postfix/smtpd[11]: 3F2A1B4C5E: client=unknown[203.0.113.6]
2026-03-01T11:01:01Z mx1 postfix/qmgr[12]: 3F2A1B4C5E: from=<info@other.test>, size=1234, nrcpt=1 (queue active)
2026-03-01T11:01:02Z mx1 postfix/smtp[13]: 3F2A1B4C5E: to=<y@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=2.0.0, status=sent (250 ok)
2026-03-01T11:01:03Z mx1 postfix/qmgr[12]: 3F2A1B4C5E: removed
"""  # noqa: E501 (log lines as the daemons write them)


@pytest.fixture
def sighted(runtime: Runtime, run: Cli, tmp_path: Path) -> dict[str, int]:
    """Two ambiguous sightings from a scanned log, by their client IP; a campaign whose wave 1 is due now."""
    add_customers(runtime, tmp_path, CUSTOMERS)
    log = tmp_path / "mail.log"
    log.write_text(LOG)
    run("scan", str(log))
    start_campaign(runtime, date(2026, 3, 2), at="10:00", tz="Europe/Berlin")
    review = json.loads(run("legacy", "--review", "--json").stdout)
    assert [(r["kind"], r["resolution"]) for r in review] == [("ambiguous", None), ("ambiguous", None)]
    return {r["client_ip"]: r["id"] for r in review}


def test_ambiguous_sightings_are_nobodys_until_resolved(sighted: dict[str, int], run: Cli) -> None:
    """Before anyone resolves them, nobody is notified and `status` counts two open sightings."""
    assert json.loads(run("legacy", "--json").stdout) == []
    assert json.loads(run("notify", "--dry-run", "--json").stdout)["new"] == 0
    assert json.loads(run("status", "--json").stdout)["open_sightings"] == 2
    assert "open ambiguous sightings: 2" in run("status").stdout


def test_an_attributed_sighting_is_notified_and_a_dismissed_one_never(
    sighted: dict[str, int], run: Cli, runtime: Runtime, tmp_path: Path
) -> None:
    """attribute makes the sighting that mailbox's legacy use (its customer gets wave 1, saying ops matched it);
    dismiss closes the other; both are audited and `status` has no open sighting left."""
    out = run(
        "attribute", str(sighted["203.0.113.5"]), "ANNA@example.org", "--reason", "customer confirmed the shop PC"
    ).stdout
    assert "attributed to anna@example.org" in out
    run("dismiss", str(sighted["203.0.113.6"]), "--reason", "a guest network; nobody's")
    legacy = json.loads(run("legacy", "--json").stdout)
    assert [(r["address"], r["client_ips"], r["senders"]) for r in legacy] == [
        ("anna@example.org", ["203.0.113.5"], ["shop@elsewhere.test"])
    ]
    assert json.loads(run("status", "--json").stdout)["open_sightings"] == 0
    review = {r["id"]: r for r in json.loads(run("legacy", "--review", "--json").stdout)}
    assert (review[sighted["203.0.113.5"]]["resolution"], review[sighted["203.0.113.5"]]["mailbox"]) == (
        "attributed",
        "anna@example.org",
    )
    assert review[sighted["203.0.113.6"]]["resolution"] == "dismissed"

    outbox = tmp_path / "outbox"
    assert json.loads(run("notify", "--outbox", str(outbox), "--json").stdout)["sent"] == 1
    (notice,) = outbox.glob("*.eml")
    message = message_from_bytes(notice.read_bytes(), policy=policy.default)
    assert message["To"].addresses[0].addr_spec == "anna.kunde@customers.test"
    text = message.get_body(("plain",)).get_content()
    assert "anna@example.org" in text and "sender address: shop@elsewhere.test" in text
    assert "our support team checked this sending and matched it to this mailbox" in text
    with runtime.sessions() as session:
        events = {
            e.action: e.details for e in session.scalars(select(AuditEvent).where(AuditEvent.action.like("sighting.%")))
        }
    assert events["sighting.attribute"]["mailbox"] == "anna@example.org"
    assert events["sighting.attribute"]["reason"] == "customer confirmed the shop PC"
    assert events["sighting.dismiss"]["reason"] == "a guest network; nobody's"


def test_resolving_twice_or_a_missing_sighting_is_a_clear_error(sighted: dict[str, int], run: Cli) -> None:
    """A sighting is resolved once; unknown ids and mailboxes say what to do; --reason is required."""
    first = sighted["203.0.113.5"]
    run("dismiss", str(first), "--reason", "test")
    again = run("attribute", str(first), "anna@example.org", "--reason", "x", expect=1)
    assert "Error: sighting" in again.output and "already dismissed" in again.output
    assert "rollout legacy --review" in run("dismiss", "999", "--reason", "x", expect=1).output
    assert (
        "not in the inventory"
        in run("attribute", str(sighted["203.0.113.6"]), "nobody@example.org", "--reason", "x", expect=1).output
    )
    assert run("dismiss", str(sighted["203.0.113.6"]), expect=2).exit_code == 2
