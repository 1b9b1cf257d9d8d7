"""Parsing: envelopes of every dialect, daemon messages by program, the real-world corpus."""

from __future__ import annotations

import bz2
import gzip
import lzma
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollout.logs.events import Accept, Delivery, Login, Refusal, Removed, Sender, SessionEnd
from rollout.logs.reader import LineSource, identify

from .scan_support import corpus_files, fixture_lines, line_parser, parse_one


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "line, t, host, user, ip",
    [
        (
            "Oct 13 09:22:59 canyon dovecot: pop3-login: Info: Login: user=<test@yourdomain.net>, method=PLAIN, rip=172.17.0.1, lip=172.17.0.2, mpid=18, TLS, session=<PeYcgjjOGOisEQAB>",
            ts(2026, 10, 13, 9, 22, 59),
            "canyon",
            "test@yourdomain.net",
            "172.17.0.1",
        ),
        (
            "Jul  2 12:22:07 integrecomm dovecot: pop3-login: Login: user=<nilator>, method=PLAIN, rip=76.224.209.52, lip=63.247.203.170, TLS",
            ts(2026, 7, 2, 12, 22, 7),
            "integrecomm",
            "nilator",
            "76.224.209.52",
        ),
        (
            "Nov 15 10:02:43 d.imapd.sonic.net dovecot: pop3-login: Login: user=<augie>, session=RjEydYzOewBGJIO7, method=PLAIN, rip=::ffff:10.1.2.3, lip=127.0.0.1, mpid=28885, secured",
            ts(2026, 11, 15, 10, 2, 43),
            "d.imapd.sonic.net",
            "augie",
            "10.1.2.3",
        ),
        (
            "2024-08-26T01:33:38.572449+02:00 machine dovecot[12]: imap-login: Logged in: user=<a@b.c>, method=PLAIN, rip=2001:DB8::1, lip=::1, mpid=9, session=<x>",
            ts(2024, 8, 25, 23, 33, 38) + 0.572449,
            "machine",
            "a@b.c",
            "2001:db8::1",
        ),
        (
            "Nov 23 10:41:47 pop3-login: Info: Login: user=<anna@example.org>, method=PLAIN, rip=127.0.0.11, lip=127.0.0.10, mpid=16776, session=<LZ6YPe9gXZV/AAAL>",
            ts(2026, 11, 23, 10, 41, 47),
            "files",
            "anna@example.org",
            "127.0.0.11",
        ),
        (
            '{"__REALTIME_TIMESTAMP":"1789228152650438","_HOSTNAME":"andres","SYSLOG_IDENTIFIER":"dovecot","MESSAGE":"imap-login: Login: user=<j>, method=PLAIN, rip=192.0.2.5, lip=192.0.2.1"}',
            1789228152.650438,
            "andres",
            "j",
            "192.0.2.5",
        ),
        (
            "Oct 28 18:23:33 leo pop3d: LOGIN, user=leo, ip=[::ffff:61.93.253.82], port=[2800]",
            ts(2026, 10, 28, 18, 23, 33),
            "leo",
            "leo",
            "61.93.253.82",
        ),
        (
            "Apr 29 16:55:12 mail cyrus/pop3[27783]: login: [172.16.48.101] andrew plaintext User logged in",
            ts(2026, 4, 29, 16, 55, 12),
            "mail",
            "andrew",
            "172.16.48.101",
        ),
        (
            "May  7 13:40:14 gaucha imapd[26772]: Authenticated user=joao host=bahiana.resenet.com.br [200.255.5.8]",
            ts(2026, 5, 7, 13, 40, 14),
            "gaucha",
            "joao",
            "200.255.5.8",
        ),
    ],
)
def test_login_lines_of_every_dialect_give_the_user_and_normalised_ip(
    line: str, t: float, host: str, user: str, ip: str
) -> None:
    """Successful POP/IMAP logins parse to user, normalised IP, UTC time and host in every dialect."""
    event = parse_one(line)
    assert isinstance(event, Login)
    assert (event.t, event.host, event.user, event.ip) == (pytest.approx(t), host, user, ip)


@pytest.mark.parametrize(
    "line",
    [
        "Jun 13 16:30:54 platypus dovecot: imap-login: Disconnected (auth failed, 2 attempts): user=<username.bob>, method=PLAIN, rip=49.176.98.87, lip=113.212.99.194, TLS",
        "Jul 02 13:49:31 hostname dovecot[442]: pop3-login: Aborted login (auth failed, 1 attempts in 17 secs): user=<test>, method=PLAIN, rip=192.51.100.13, lip=203.0.113.17",
        "Jun 12 19:07:29 hostname dovecot[241]: imap-login: Login aborted: Connection closed (auth failed, 3 attempts in 16 secs) (auth_failed): user=<test>, method=PLAIN, rip=192.0.2.241, lip=203.0.113.104, TLS",
        "Apr 27 09:00:00 servername imapd: LOGIN FAILED, user=tester, ip=[::ffff:192.0.2.5], port=[255]",
        # log injection (P13): the text a client sent, echoed by smtpd, is not a login
        'Nov 23 10:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.9]: 554 5.7.1 <a@b>: Relay access denied; from=<"pop3-login: Login: user=<admin>, rip=192.0.2.9"@x> to=<a@b> proto=ESMTP helo=<x>',
        "Nov 23 10:00:00 mx postfix/smtpd[1]: warning: pop3-login: Login: user=<admin>, method=PLAIN, rip=192.0.2.9, lip=1.2.3.4",
        "Nov 23 10:00:00 mx submission-login: Login: user=<a>, method=PLAIN, rip=192.0.2.9, lip=1.2.3.4",
    ],
)
def test_failed_logins_and_injected_text_never_become_logins(line: str) -> None:
    """Failed/aborted logins, non-POP services and login-like text inside SMTP lines are not logins."""
    assert not isinstance(parse_one(line), Login)


def test_dovecot_session_end_carries_user_pid_and_session() -> None:
    """A Dovecot 2.3 logout names the user, mpid and session the login line had."""
    event = parse_one(
        "Nov 23 10:41:47 pop3(anna@example.org)<16776><LZ6YPe9gXZV/AAAL>: Info: Disconnected: Logged out top=0/0, retr=0/0, del=0/0, size=0"
    )
    assert isinstance(event, SessionEnd)
    assert (event.user, event.pid, event.session) == ("anna@example.org", "16776", "LZ6YPe9gXZV/AAAL")


@pytest.mark.parametrize(
    "line, ip, authenticated, user",
    [
        ("Feb 24 16:42:00 letterman postfix/smtpd[24906]: 1CF582025C: client=xxx[2.3.4.5]", "2.3.4.5", False, None),
        (
            "Oct 30 13:19:26 mailgw-out1 postfix/submission/smtpd[27530]: EB4B2C19E2: client=xxx[1.2.3.4], sasl_method=PLAIN, sasl_username=user@domain",
            "1.2.3.4",
            True,
            "user@domain",
        ),
        (
            "Oct 30 13:19:26 mx postfix-out/smtpd[1]: 44JCRG5tYPzCqt2: client=unknown[2001:980:cfb1::3]:55729, sasl_method=login",
            "2001:980:cfb1::3",
            True,
            None,
        ),
        (
            "2013-06-10 18:33:32 [10099] 1Ov4tU-0000Nz-Rm <= joe@example.com H=pc.example.net [192.0.2.77]:51792 I=[1.2.3.4]:25 P=esmtp S=2177 id=x@y",
            "192.0.2.77",
            False,
            None,
        ),
        (
            "2014-08-10 11:18:35 [28107] 1gsu1C-003dCu-Hb <= aaron@domain.com H=localhost (10.5.40.204) [127.0.0.1]:39753 P=esmtpa A=dovecot_plain:aaron@domain.com S=4315",
            "127.0.0.1",
            True,
            "aaron@domain.com",
        ),
        (
            "1999-03-02 09:44:33 10HmaZ-000000005vi-0000 <= userx@cus.cam.ac.uk H=(testclient.ex) [10.0.0.3] U=CALLER P=esmtpa A=mylogin S=sss for userx8@test.ex",
            "10.0.0.3",
            True,
            None,
        ),
    ],
)
def test_accepted_messages_say_whether_they_were_authenticated(
    line: str, ip: str, authenticated: bool, user: str | None
) -> None:
    """Postfix client= and Exim <= lines give the client IP and the SMTP AUTH state (R1, P19)."""
    event = parse_one(line)
    assert isinstance(event, Accept)
    assert (event.client_ip, event.authenticated, event.sasl_user) == (ip, authenticated, user)


def test_postfix_message_life_cycle_lines() -> None:
    """qmgr from=, a delivery with orig_to, and removed parse to their events."""
    p = line_parser()
    sender = p.parse(
        "Feb 24 16:18:40 l postfix/qmgr[1]: 0F5383D: from=<owner@postfix.org>, size=5360, nrcpt=1 (queue active)",
        "f",
        0,
    )
    delivery = p.parse(
        "Feb 24 16:18:40 l postfix/smtp[1]: 0D9633D: to=<jos@example.com>, orig_to=<bestuur@example.com>, relay=mail1.example.net[10.74.103.11]:25, delay=1, delays=0.1/0/0.3/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as F12DF84004)",
        "f",
        1,
    )
    removed = p.parse("Feb 24 16:18:40 l postfix/qmgr[1]: 0F5383D: removed", "f", 2)
    assert isinstance(sender, Sender) and sender.sender == "owner@postfix.org"
    assert isinstance(delivery, Delivery)
    assert (delivery.rcpt, delivery.orig_to, delivery.status, delivery.queued_as) == (
        "jos@example.com",
        "bestuur@example.com",
        "sent",
        "F12DF84004",
    )
    assert isinstance(removed, Removed) and removed.qid == "0F5383D"


def test_relay_denied_and_our_own_map_refusals() -> None:
    """Relay denied is a relay refusal; our reject/defer/warn texts name the mailbox; other rejects are not events."""
    relay = parse_one(
        "Jul 12 07:47:48 saturn postfix/smtpd[8738]: NOQUEUE: reject: RCPT from 1-2-3-4-example.com[1.2.3.4]: 554 5.7.1 <smtp@example.com>: Relay access denied; from=<john@example.com> to=<smtp@example.org> proto=SMTP helo=<198.51.100.17>"
    )
    assert isinstance(relay, Refusal) and (relay.reason, relay.client_ip, relay.sender) == (
        "relay",
        "1.2.3.4",
        "john@example.com",
    )
    ours = (
        "SMTP-after-POP is switched off for anna@example.org: turn on SMTP authentication "
        "(port 587, STARTTLS, user name = your address), see https://example.net/help/smtp-auth"
    )
    reject = parse_one(
        f"Nov 23 10:41:49 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[127.0.0.11]: 554 5.7.1 <anna@example.org>: Sender address rejected: {ours}; from=<anna@example.org> to=<bob@remote.test> proto=ESMTP helo=<c>"
    )
    defer = parse_one(
        f"Nov 23 10:41:49 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[127.0.0.11]: 450 4.7.1 <anna@example.org>: Sender address rejected: {ours}; from=<anna@example.org> to=<bob@remote.test> proto=ESMTP helo=<c>"
    )
    warn = parse_one(
        f"Nov 23 10:41:49 mx postfix/smtpd[1]: NOQUEUE: warn: RCPT from unknown[127.0.0.11]: {ours}; from=<anna@example.org> to=<bob@remote.test> proto=ESMTP helo=<c>"
    )
    for event, action in ((reject, "reject"), (defer, "defer"), (warn, "warn")):
        assert isinstance(event, Refusal)
        assert (event.reason, event.action, event.map_address) == ("map", action, "anna@example.org")
    other = parse_one(
        "Nov 23 10:41:49 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from u[1.2.3.4]: 554 5.7.1 <a@b>: Sender address rejected: not owned by user x; from=<a@b> to=<c@d> proto=ESMTP helo=<h>"
    )
    assert other is None


def test_year_is_inferred_across_new_year() -> None:
    """A December line in a file written in early January belongs to the previous year (P7)."""
    january = datetime(2027, 1, 2, 8, 0, tzinfo=UTC)
    event = parse_one("Dec 31 23:59:58 mx postfix/qmgr[1]: 0F5383D: removed", reference=january)
    assert event is not None and event.t == ts(2026, 12, 31, 23, 59, 58)
    event = parse_one("Jan  1 00:00:03 mx postfix/qmgr[1]: 0F5383D: removed", reference=january)
    assert event is not None and event.t == ts(2027, 1, 1, 0, 0, 3)


def test_zone_less_stamps_use_the_configured_zone() -> None:
    """RFC 3164 stamps are read in scan.timezone (Berlin: 10:00 in winter is 09:00 UTC)."""
    event = parse_one("Jan 15 10:00:00 mx postfix/qmgr[1]: 0F5383D: removed", zone="Europe/Berlin")
    assert event is not None and event.t == ts(2026, 1, 15, 9, 0, 0)


# the successful logins in tests/fixtures/dialects.log, in file order; its other lines are failures, session ends,
# SMTP, other services and programs
DIALECT_LOGINS = [
    ("quirin@example.org", "198.51.100.9", "pop3"),  # journald JSON
    ("ines@example.org", "198.51.100.17", "pop3"),  # Dovecot 2.3
    ("jonas@example.org", "2001:db8:7::40", "imap"),  # Dovecot 2.4 "Logged in:"
    ("kira", "198.51.100.51", "imap"),  # IPv4-mapped
    ("lena", "198.51.100.52", "imap"),  # Dovecot 1.x through syslog
    ("mira@example.org", "198.51.100.53", "pop3"),  # Dovecot log_path
    ("nele", "198.51.100.54", "pop3"),  # Dovecot 1.x's own log
    ("olaf@example.org", "198.51.100.55", "imap"),  # log_path with an ISO-like stamp
    ("pia@example.org", "198.51.100.60", "pop3"),  # Courier
    ("quirin@example.org", "2001:db8:9::60", "imap"),
    ("rosa", "198.51.100.61", "imap"),  # Cyrus
    ("sven@example.org", "198.51.100.62", "pop3"),  # Cyrus, +detail dropped
    ("uta@example.org", "192.0.2.30", "imap"),  # Cyrus under a site's service name
    ("vera", "198.51.100.64", "imap"),  # UW
    ("wim", "198.51.100.65", "pop3"),
    ("yara@example.org", "198.51.100.68", "imap"),  # Solaris syslog tag
    ("elke@example.org", "198.51.100.73", "pop3"),  # nginx mail proxy, through syslog
    ("finn@example.org", "198.51.100.74", "imap"),  # nginx's own error log
    ("gert@example.org", "198.51.100.75", "imap"),  # perdition
]


def test_every_dialect_of_the_fixture_gives_exactly_its_logins() -> None:
    """The project's own fixture (every dialect, real-world shapes): every line is counted, the successful logins are
    found with user, address and protocol, and no failure, session end or look-alike becomes one."""
    lines = fixture_lines("dialects.log")
    p = line_parser()
    events = [p.parse(line, "dialects.log", i) for i, line in enumerate(lines)]
    assert sum(p.kinds.values()) == len(lines)
    assert [(e.user, e.ip, e.proto) for e in events if isinstance(e, Login)] == DIALECT_LOGINS
    assert (p.kinds["refusal"], p.kinds["authfailure"], p.kinds["sessionend"], p.kinds["unknown"]) == (3, 2, 6, 2)


def test_every_corpus_line_parses_or_is_counted_and_none_is_a_false_login() -> None:
    """The real-world corpus never crashes the parser; each line is an event or a counted kind; logins are real."""
    files = corpus_files(".log", ".tsv")
    logins = []
    for path in files:
        p = line_parser()
        lines = path.read_text(errors="replace").splitlines()
        events = [p.parse(line, path.name, i) for i, line in enumerate(lines)]
        assert sum(p.kinds.values()) == len(lines)
        logins += [e for e in events if isinstance(e, Login)]
    assert logins
    for login in logins:
        msg = login.line
        assert (
            "Login: " in msg
            or "Logged in: " in msg
            or "LOGIN, " in msg
            or "User logged in" in msg
            or "Authenticated user=" in msg
            or " Login user=" in msg
            or "Auth user=" in msg
            or "APOP user=" in msg
            or "client logged in, " in msg
            or 'status="ok"' in msg
        ), msg
        assert "failed" not in msg.lower() and "aborted" not in msg.lower()


def test_compressed_files_are_read_by_magic_and_truncation_keeps_what_was_readable(tmp_path: Path) -> None:
    """gz, bz2, xz and zstd (also several frames) are recognised without a suffix; a truncated file yields its
    readable lines and a warning."""
    import zstandard

    text = b"".join(
        b"Nov 23 10:%02d:%02d mx postfix/qmgr[1]: %010X: removed\n" % (i // 60 % 60, i % 60, i * 7919)
        for i in range(20000)
    )
    zstd = zstandard.ZstdCompressor()
    for name, data in (
        ("a", gzip.compress(text)),
        ("b", bz2.compress(text)),
        ("c", lzma.compress(text)),
        ("d", zstd.compress(text)),
        ("e", zstd.compress(text[:500_000]) + zstd.compress(text[500_000:])),
    ):
        (tmp_path / name).write_bytes(data)
        assert b"".join(raw.encode() + b"\n" for _, raw in LineSource(tmp_path / name).lines()) == text, name
        assert identify(tmp_path / name).compressed
    for name, whole in (("gz-cut", gzip.compress(text)), ("zst-cut", zstd.compress(text))):
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])
        source = LineSource(tmp_path / name)
        got = list(source.lines())
        assert 0 < len(got) < 20000, name
        assert source.warning and "ends early" in source.warning


def test_only_complete_lines_are_consumed(tmp_path: Path) -> None:
    """A last line without a newline is left for the next scan (P9)."""
    path = tmp_path / "live.log"
    path.write_bytes(b"line one\nline two\nhalf a li")
    source = LineSource(path)
    assert [line for _, line in source.lines()] == ["line one", "line two"]
    assert source.offset == len(b"line one\nline two\n")


def test_proxy_logins_from_nginx_and_perdition_carry_the_customers_address() -> None:
    """nginx's mail proxy and perdition log the client's own address (P18); SMTP through nginx is no login."""
    p = line_parser(host="proxy1")
    imap = p.parse(
        "2022/04/05 13:32:06 [info] 8#8: *24819 client logged in, client: 174.233.1.144, server: 0.0.0.0:11143, "
        'login: "admin@example.com", upstream: 172.69.69.10:143',
        "nginx.log",
        0,
    )
    done = p.parse(
        "2022/04/05 13:32:09 [info] 8#8: *24819 proxied session done, client: 174.233.1.144, server: 0.0.0.0:11143, "
        'login: "admin@example.com", upstream: 172.69.69.10:143',
        "nginx.log",
        1,
    )
    pop = p.parse(
        "Mar  2 10:00:00 px nginx: 2026/03/02 10:00:00 [info] 8#8: *7 client logged in, client: 198.51.100.7 using starttls, "
        'server: 0.0.0.0:110, login: "bert@example.org", upstream: 10.0.0.5:110',
        "syslog",
        2,
    )
    smtp = p.parse(
        "2022/04/05 13:25:31 [info] 8#8: *24790 client logged in, client: 174.233.1.144, server: 0.0.0.0:587, "
        'login: "admin@example.com", upstream: 172.69.69.9:10025',
        "nginx.log",
        3,
    )
    perdition = p.parse(
        "Jul 18 16:07:18 ares perdition.imaps[3194]: Auth: 192.168.8.100:2274->193.48.191.9:993 client-secure=ssl "
        'authorisation_id=NONE authentication_id="carles" server="imap.biotoul.fr:993" protocol=IMAP4S '
        'server-secure=ssl status="ok"',
        "syslog",
        4,
    )
    failed = p.parse(
        "Jul 18 16:07:18 ares perdition.imaps[3194]: Auth: 192.168.8.100:2274->193.48.191.9:993 client-secure=ssl "
        'authorisation_id=NONE authentication_id="carles" server="imap.biotoul.fr:993" protocol=IMAP4S '
        'server-secure=ssl status="failed: Re-Authentication Failure"',
        "syslog",
        5,
    )
    assert isinstance(imap, Login) and (imap.host, imap.proto, imap.user, imap.ip, imap.session) == (
        "proxy1",
        "imap",
        "admin@example.com",
        "174.233.1.144",
        "nginx-24819",
    )
    assert isinstance(done, SessionEnd) and (done.user, done.session) == ("admin@example.com", "nginx-24819")
    assert isinstance(pop, Login) and (pop.host, pop.proto, pop.ip, pop.t) == (
        "px",
        "pop3",
        "198.51.100.7",
        ts(2026, 3, 2, 10, 0, 0),
    )
    assert smtp is None and failed is None
    assert isinstance(perdition, Login) and (perdition.proto, perdition.user, perdition.ip) == (
        "imap",
        "carles",
        "192.168.8.100",
    )
    assert p.kinds["proxy-other"] == 1 and p.kinds["login-failed"] == 1


def test_dovecot_1x_own_log_file() -> None:
    """Dovecot 1.x's log_path lines put the program before the stamp: logins and session ends are read."""
    p = line_parser(host="pop1")
    login = p.parse(
        "dovecot: Jun 23 15:04:05 Info: imap-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1",
        "dovecot.log",
        0,
    )
    end = p.parse(
        "dovecot: Jun 23 15:04:06 Info: IMAP(anna@example.org): Disconnected: Logged out bytes=59/566", "dovecot.log", 1
    )
    assert isinstance(login, Login) and (login.host, login.proto, login.user, login.ip) == (
        "pop1",
        "imap",
        "anna@example.org",
        "192.0.2.7",
    )
    assert isinstance(end, SessionEnd) and (end.proto, end.user) == ("imap", "anna@example.org")
