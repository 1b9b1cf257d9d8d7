"""One source for each log rule: the C classifier reads rollout/logs/rules.py, as the Python parsers do.

For every program and line shape in the tables, a line of that shape goes through the
C classifier (``BlockParser``) and through ``LineParser`` alone: Python must read it as
an event (or the sample is wrong) and the classifier must give the very same events. A
program or shape added to a table without the C knowing it fails here.
"""

from __future__ import annotations

import pytest

from rollout.logs import rules
from rollout.logs.blocks import BlockParser
from rollout.logs.events import Event, Login
from rollout.logs.join import join_complete

from .scan_support import REFERENCE, line_parser

TRUSTED = ("127.0.0.0/8",)
STAMP = "Nov 23 10:00:00 mx1"
QID = "4F1A2B3C4D"


def sample_lines() -> list[str]:
    """A line Python turns into an event, for every program and shape the tables name."""
    lines = []
    for daemon in rules.REMOTE_DAEMONS:
        lines.append(
            f"{STAMP} {rules.POSTFIX}/{daemon}[7]: {QID}: {rules.DELIVERY_TO}<a@remote.example>, "
            "relay=mx.remote.example"
            f"[192.0.2.9]:25, delay=1, status=sent (250 ok)"
        )
    for daemon in rules.LOCAL_DAEMONS:  # read only when they hand the message on
        lines.append(
            f"{STAMP} {rules.POSTFIX}/{daemon}[7]: {QID}: {rules.DELIVERY_TO}<a@example.org>, "
            "relay=127.0.0.1[127.0.0.1]:10025,"
            f" status=sent (250 2.0.0 Ok: {rules.QUEUED_AS} 5B6C7D8E9F)"
        )
    lines.append(f"{STAMP} {rules.POSTFIX}/{rules.SMTPD}[7]: {QID}: client=pc.example[198.51.100.7]")
    lines.append(
        f"{STAMP} {rules.POSTFIX}-out/submission/{rules.SMTPD}[7]: {QID}: client=pc.example[198.51.100.7], "
        "sasl_method=PLAIN, "
        "sasl_username=anna@example.org"
    )
    lines.append(
        f"{STAMP} {rules.POSTFIX}/{rules.SMTPD}[7]: NOQUEUE: reject: RCPT from pc.example[198.51.100.7]: 554 5.7.1 "
        "<a@remote.example>: Relay access denied; from=<anna@example.org> to=<a@remote.example> proto=ESMTP helo=<pc>"
    )
    lines.append(
        f"{STAMP} {rules.POSTFIX}/{rules.SMTPD}[7]: {rules.WARNING} pc.example[198.51.100.7]: SASL LOGIN "
        "authentication failed: x"
    )
    for field in rules.SENDER_FIELDS:
        lines.append(
            f"{STAMP} {rules.POSTFIX}/{rules.QMGR}[7]: {QID}: from=<anna@example.org>, {field}=1234, nrcpt=1 "
            f"{rules.QUEUE_ACTIVE}"
        )
    lines.append(f"{STAMP} {rules.POSTFIX}/{rules.QMGR}[7]: {QID}: {rules.QMGR_REMOVED}")
    lines.append(f"{STAMP} {rules.POSTFIX}/{rules.PICKUP}[7]: {QID}: uid=1000 from=<anna>")
    lines.append(
        f"{STAMP} {rules.POSTFIX}/{rules.CLEANUP}[7]: {QID}: {rules.NOTICE_MESSAGE_ID}20261123.1.abc@rollout.example>"
    )
    lines.append(
        f"{STAMP} {rules.POSTFIX}/{rules.QMGR}[7]: {QID}: from=<notices@example.org>{rules.QMGR_EXPIRED}, "
        "returned to sender"
    )
    for info in ("", rules.DOVECOT_INFO):
        for service in rules.DOVECOT_LOGIN_SERVICES:
            for verb in rules.DOVECOT_LOGIN_VERBS:
                lines.append(
                    f"{STAMP} {rules.DOVECOT}[7]: {info}{service}-login: {verb}: user=<anna@example.org>, "
                    "method=PLAIN, "
                    f"rip=198.51.100.7, lip=192.0.2.1, mpid=4711, TLS, session=<s{len(lines)}>"
                )
                lines.append(
                    f"{STAMP} {rules.DOVECOT}[7]: {info}{service}-login: {verb}: user=<anna@example.org>, "
                    "rip=2001:db8::7, "
                    f"lip=2001:db8::1, mpid=4711"
                )
        for service in rules.DOVECOT_END_SERVICES:
            for verb in rules.DOVECOT_END_VERBS:
                lines.append(
                    f"{STAMP} {rules.DOVECOT}[7]: {info}{service}(anna@example.org)<4711><s{len(lines)}>: "
                    f"{verb} in=1 out=2"
                )
    for program in rules.COURIER_PROGRAMS:
        lines.append(
            f"{STAMP} {program}[7]: LOGIN, user=anna@example.org, ip=[::ffff:198.51.100.7], port=[4711], protocol=POP3"
        )
    for program in rules.UW_PROGRAMS:
        lines.append(f"{STAMP} {program}[7]: Login user=anna host=pc.example [198.51.100.7]")
    for daemon in rules.CYRUS_DAEMONS:
        for program in (daemon, f"cyrus/{daemon}"):
            lines.append(f"{STAMP} {program}[7]: login: pc.example [198.51.100.7] anna plaintext User logged in")
    lines.append(
        f"{STAMP} sloti24t04/imapmail[7]: {rules.CYRUS_LOGIN}frontend1.example [198.51.100.7] "
        "anna@example.org plaintext "
        "User logged in SESSIONID=<x>"
    )  # a Cyrus service under a site's own name
    for program in (*rules.EXIM_PROGRAMS, *(f"{prefix}-daemon" for prefix in rules.EXIM_PREFIXES)):
        lines.append(
            f"{STAMP} {program}[7]: 1Ov4tU-0000Nz-Rm <= joe@example.com H=pc.example.net [192.0.2.77]:51792 "
            "P=esmtp S=2177"
        )
    for program in rules.NGINX_PROGRAMS:
        lines.append(
            f"{STAMP} {program}: 2026/11/23 10:00:00 [info] 8#8: *7 client logged in, client: 198.51.100.7, "
            'server: 0.0.0.0:110, login: "anna@example.org", upstream: 10.0.0.5:110'
        )
    for program in (*rules.PERDITION_PROGRAMS, *(f"{prefix}imaps" for prefix in rules.PERDITION_PREFIXES)):
        lines.append(
            f"{STAMP} {program}[7]: Auth: 198.51.100.7:2274->192.0.2.1:993 authorisation_id=NONE "
            'authentication_id="anna" '
            'server="imap.example:993" protocol=IMAP4S status="ok"'
        )
    return lines


def events_of(parser: BlockParser, line: str) -> list[Event]:
    return parser.parse((line + "\n").encode(), 0, "t.log")


@pytest.mark.parametrize("line", sample_lines())
def test_every_program_and_shape_in_the_tables_is_read_by_both_paths(line: str) -> None:
    python = line_parser(reference=REFERENCE).parse(line, "t.log", 0)
    assert python is not None, "the sample must be a line Python reads, or this test proves nothing"
    fast = BlockParser(line_parser(reference=REFERENCE), TRUSTED, login_runs=False)
    assert events_of(fast, line) == [python]
    assert fast.kinds["skipped"] == 0


def test_a_program_added_to_a_table_is_read_by_the_classifier_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: a Courier build under its own name, added to COURIER_PROGRAMS only."""
    line = f"{STAMP} mypop3d[7]: LOGIN, user=anna@example.org, ip=[198.51.100.7], port=[4711], protocol=POP3"
    before = BlockParser(line_parser(reference=REFERENCE), TRUSTED)
    assert events_of(before, line) == [] and before.kinds["skipped"] == 1  # unknown to both: skipped
    monkeypatch.setitem(rules.COURIER_PROGRAMS, "mypop3d", "pop3")
    after = BlockParser(line_parser(reference=REFERENCE), TRUSTED)
    (login,) = events_of(after, line)
    assert isinstance(login, Login)
    assert (login.user, login.ip, login.proto) == ("anna@example.org", "198.51.100.7", "pop3")


def test_a_shape_added_to_a_table_is_read_by_the_classifier_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login verb Dovecot might log one day: the classifier takes the new tables when a scan starts."""
    import importlib

    from rollout.logs import imapd, parse

    line = f"{STAMP} dovecot[7]: imap-login: Signed in: user=<anna@example.org>, rip=198.51.100.7, mpid=1"
    monkeypatch.setattr(rules, "DOVECOT_LOGIN_VERBS", (*rules.DOVECOT_LOGIN_VERBS, "Signed in"))
    try:
        importlib.reload(imapd)  # the Python patterns are built from the tables at import
        monkeypatch.setattr(parse, "parse_dovecot", imapd.parse_dovecot)
        fast = BlockParser(line_parser(reference=REFERENCE), TRUSTED, login_runs=False)
        python = line_parser(reference=REFERENCE).parse(line, "t.log", 0)
        assert python is not None and events_of(fast, line) == [python]
    finally:
        monkeypatch.undo()
        importlib.reload(imapd)


ADDRESS_SPELLINGS = [
    "198.51.100.7",
    "2001:db8::7",
    "2001:DB8::7",
    "2001:db8:0:0:0:0:0:7",
    "2001:0db8::7",
    "::ffff:198.51.100.7",
    "::198.51.100.7",
    "2001:0:0:1:0:0:0:1",
    "2001:db8:0:1:1:1:1:1",
    "::1",
    "::",
    "fe80::1%eth0",
    "2001:db8::7x",
    "198.051.100.7",
    "1::",
    "2001:db8:1:2:3:4:5:6",
]


@pytest.mark.parametrize("address", ADDRESS_SPELLINGS)
def test_client_addresses_are_read_as_python_reads_them(address: str) -> None:
    """The classifier reads a login's, an acceptance's and a refusal's address only when it is written as
    net.normalise_ip would write it; any other spelling goes to Python. Either way the events are the same."""
    lines = [
        f"{STAMP} dovecot[7]: imap-login: Login: user=<anna@example.org>, rip={address}, lip=192.0.2.1, "
        "mpid=4711, session=<x1>",
        f"{STAMP} dovecot[7]: imap(anna@example.org)<4711><x1>: Disconnected: Logged out",
        f"{STAMP} postfix/smtpd[7]: {QID}: client=pc.example[{address}], sasl_method=PLAIN, "
        "sasl_username=anna@example.org",
        f"{STAMP} postfix/smtpd[7]: NOQUEUE: reject: RCPT from pc.example[{address}]: 554 5.7.1 <a@remote.example>: "
        "Relay access denied; from=<anna@example.org> to=<a@remote.example> proto=ESMTP helo=<pc>",
    ]
    block = "".join(line + "\n" for line in lines).encode()
    fast = BlockParser(line_parser(reference=REFERENCE), TRUSTED, login_runs=False).parse(block, 0, "t.log")
    slow = join_complete(BlockParser(line_parser(reference=REFERENCE), TRUSTED)._parse_all(block, 0, "t.log"), TRUSTED)
    assert fast == slow
