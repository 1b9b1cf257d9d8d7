"""Formats seen in real logs, through the whole scan (classifier, parsers, detector, inventory): Cyrus under a
site's own service name, Solaris syslog's message tag, and login names compared with the inventory in one form."""

from __future__ import annotations

from pathlib import Path

import pytest

from rollout.addresses import login_key
from rollout.runtime import Runtime
from rollout.scan.inventory_workflow import import_inventory
from rollout.scan.scan_workflow import legacy_report, scan_logs, unknown_logins

from .scan_support import write_inventory

MAILBOXES = [
    ("user01@example.org", None),
    ("anna@bücher.de", None),
    ("carl@example.org", "carl"),
    ("dora@example.org", None),
]


def relay(t: str, qid: str, ip: str, sender: str, tag: str = "") -> list[str]:
    """A message relayed to a remote domain without SMTP AUTH (the legacy path), Postfix lines."""
    return [
        f"Dec  5 {t} mailhost postfix/smtpd[99]: {tag}{qid}: client=pc[{ip}]",
        f"Dec  5 {t} mailhost postfix/qmgr[98]: {tag}{qid}: from=<{sender}>, size=310, nrcpt=1 (queue active)",
        f"Dec  5 {t} mailhost postfix/smtp[97]: {tag}{qid}: to=<friend@remote.test>, "
        "relay=mx.remote.test[198.51.100.9]:25, "
        "delay=0.2, delays=0.1/0/0.05/0.05, dsn=2.0.0, status=sent (250 ok)",
        f"Dec  5 {t} mailhost postfix/qmgr[98]: {tag}{qid}: removed",
    ]


SOLARIS = "[ID 197553 mail.info] "
LOG = [
    # Cyrus behind a murder frontend, under the site's own service name (cyrus.conf: imapmail)
    "Dec  5 10:00:00 imap30 sloti24t04/imapmail[3609860]: login: frontend1.example [192.0.2.10] user01@example.org "
    "plaintext "
    "User logged in SESSIONID=<sloti24t04-3609860-1764928800-1-1234567890>",
    *relay("10:01:00", "3F2A1B4C60", "192.0.2.10", "user01@example.org"),
    # Solaris syslogd: a message tag between the program and the message, on every line
    f"Dec  5 10:02:00 mailhost dovecot: {SOLARIS}pop3-login: Login: user=<carl>, method=PLAIN, rip=192.0.2.12, "
    "lip=192.0.2.1",
    *relay("10:03:00", "4B3C2D1E70", "192.0.2.12", "carl@example.org", SOLARIS),
    # an IDN domain as the client sent it, in another case: the inventory keys it in ASCII form
    "Dec  5 10:04:00 mailhost dovecot: imap-login: Login: user=<Anna@Bücher.de>, method=PLAIN, rip=192.0.2.11, "
    "lip=192.0.2.1",
    *relay("10:05:00", "5C4D3E2F80", "192.0.2.11", "anna@BÜCHER.DE"),
    "Dec  5 10:06:00 mailhost dovecot: pop3-login: Login: user=<Bert@Bücher.de>, method=PLAIN, rip=192.0.2.13, "
    "lip=192.0.2.1",
    # a Cyrus failure under the same name is no login
    "Dec  5 10:07:00 imap30 sloti24t04/imapmail[3609861]: badlogin: frontend1.example [192.0.2.14] dora@example.org "
    "plaintext "
    "SASL(-13): authentication failure: checkpass failed",
    *relay("10:07:30", "6D5E4F3A90", "192.0.2.14", "dora@example.org"),
]


def test_cyrus_service_names_solaris_tags_and_idn_logins_are_found(runtime: Runtime, tmp_path: Path) -> None:
    """Each legacy relay is attributed to its mailbox; Bert (not in the inventory) is an unknown login in ACE form; a
    Cyrus badlogin opens no window; every line is counted and none is unparsed."""
    import_inventory(runtime, write_inventory(tmp_path / "inventory.csv", MAILBOXES))
    log = tmp_path / "maillog"
    log.write_text("\n".join(LOG) + "\n", encoding="utf-8")
    summary = scan_logs(runtime, [log])
    report = {r.address: r for r in legacy_report(runtime)}
    assert {a: (r.submissions, r.client_ips) for a, r in report.items()} == {
        "user01@example.org": (1, ["192.0.2.10"]),
        "carl@example.org": (1, ["192.0.2.12"]),
        "anna@xn--bcher-kva.de": (1, ["192.0.2.11"]),
    }
    assert [u.user for u in unknown_logins(runtime)] == ["bert@xn--bcher-kva.de"]
    assert summary.files[0].lines == len(LOG) and summary.files[0].kinds["login"] == 4 and summary.unexplained == 1


@pytest.mark.parametrize(
    "name, key",
    [
        ("Anna@Bücher.DE", "anna@xn--bcher-kva.de"),
        ("anna@xn--bcher-kva.de", "anna@xn--bcher-kva.de"),
        ("Carl", "carl"),
        ("Jürgen", "jürgen"),  # no domain: only lower-cased
        ("x@not valid.de", "x@not valid.de"),  # not a domain: only lower-cased
    ],
)
def test_login_key_is_the_inventory_key(name: str, key: str) -> None:
    """Login names, senders and inventory addresses meet in one form: lower case, IDN domains in ASCII."""
    assert login_key(name) == key
