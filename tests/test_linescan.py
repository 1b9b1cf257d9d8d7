"""The C line classifier (rollout/logs/_linescan.c) changes speed, never results.

Every block is parsed twice: through the classifier (skipped lines, dropped inbound
mail, envelopes split in C) and line by line through LineParser alone. Both must give
the same non-message events, the classifier's message events must be the others'
minus whole dropped messages, and the detector must find exactly the same things.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.logs import blocks, events, native
from rollout.logs.blocks import BlockParser
from rollout.logs.events import Accept, AuthCounts, CompleteMessage, Delivery, Event, LoginRun, Removed, Sender
from rollout.logs.join import join_complete
from rollout.scan import detection
from rollout.scan.detection import DetectionConfig, Detector, Finding
from rollout.synthetic.maillog import write_maillog

from .scan_support import REFERENCE, corpus_files, fixture_lines, line_parser

TRUSTED = ("127.0.0.0/8", "::1/128", "10.0.0.0/8")
MESSAGE_EVENTS = (Accept, Sender, Delivery, Removed, CompleteMessage, AuthCounts)
CONFIG = DetectionConfig(
    trusted_networks=TRUSTED, local_domains=frozenset({"example.org", "kunde1.example", "kunde2.example"})
)


def both(block: bytes, login_runs: bool = False) -> tuple[list[Event], list[Event]]:
    """(classifier events, LineParser-only events) of one block of complete lines; the classifier's logins one by one
    unless ``login_runs``."""
    fast = BlockParser(line_parser(reference=REFERENCE), TRUSTED, login_runs).parse(block, 0, "t.log")
    slow = join_complete(BlockParser(line_parser(reference=REFERENCE), TRUSTED)._parse_all(block, 0, "t.log"), TRUSTED)
    return fast, slow


def findings(events: list[Event]) -> tuple[list[tuple], dict, list[str], str, list[str]]:
    """What the detector found and counted, and what it carries to the next scan.

    That is: open messages, login windows, open sessions.
    """
    detector = Detector(CONFIG)
    detector.feed_all(events)
    return (
        sorted((_key(f) for f in detector.findings), key=repr),
        detector.authenticated,
        sorted(detector.messages),
        repr(sorted(detector.logins.items())),
        sorted(detector.sessions),
    )


def _key(f: Finding) -> tuple:
    return (f.kind, f.t, f.host, f.user, f.ip, f.sender, f.qid, f.confidence, tuple(f.candidates), repr(f.details))


def assert_same(block: bytes) -> None:
    fast, slow = both(block)
    assert [e for e in fast if not isinstance(e, MESSAGE_EVENTS)] == [
        e for e in slow if not isinstance(e, MESSAGE_EVENTS)
    ]
    kept = [
        e for e in fast if isinstance(e, MESSAGE_EVENTS) and not isinstance(e, AuthCounts)
    ]  # counted ones are in findings()
    all_messages = [e for e in slow if isinstance(e, MESSAGE_EVENTS)]
    assert _subsequence(kept, all_messages)
    dropped = {(e.host, e.instance, e.qid) for e in all_messages} - {(e.host, e.instance, e.qid) for e in kept}
    assert not any((e.host, e.instance, e.qid) in dropped for e in kept)  # whole messages or nothing
    assert findings(fast) == findings(slow)
    runs, _ = both(
        block, login_runs=True
    )  # the logins the classifier files itself, in runs: the same findings and state
    assert findings(runs) == findings(slow)


def _subsequence(short: list[Event], long: list[Event]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def test_the_classifier_is_built() -> None:
    """CI installs with a C compiler: the fast path must be there (the fallback is only for machines without one)."""
    assert blocks.compiled()
    assert events.LoginRecord is blocks._linescan.LoginRecord


def test_a_classifier_built_from_an_older_source_is_not_used(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editable install's module built before a change to _linescan.c is left aside (pure-Python path), with a
    warning saying to rebuild it."""
    older = types.ModuleType("rollout.logs._linescan")
    older.__file__ = "/checkout/rollout/logs/_linescan.so"
    monkeypatch.setattr(native, "_warned", [])
    with caplog.at_level(logging.WARNING, logger="rollout.logs.native"):
        assert not native.current(older)
        assert native.current(blocks._linescan)
    assert "/checkout/rollout/logs/_linescan.so was built from an older _linescan.c" in caplog.text
    assert "pip install -e ." in caplog.text


def test_the_dialects_fixture_gives_the_same_events_and_findings() -> None:
    """The fixture of every dialect (Postfix, Dovecot, Exim, Courier, Cyrus, UW, journald…) through both paths."""
    assert_same(("\n".join(fixture_lines("dialects.log")) + "\n").encode())


def test_corpus_gives_the_same_events_and_findings() -> None:
    """Every file of the external real-world corpus, when there is one, through both paths."""
    for path in corpus_files(".log"):
        data = path.read_bytes()
        assert_same(data if data.endswith(b"\n") else data + b"\n")


def test_synthetic_provider_log_gives_the_same_findings(tmp_path: Path) -> None:
    """A generated provider log (inbound, SASL, legacy, rejects, logins): same findings, most lines skipped in C."""
    boxes = [(f"user{i:03d}@kunde{i % 3}.example", None) for i in range(60)]
    log = tmp_path / "mail.log"
    start = datetime(2026, 11, 20, tzinfo=UTC)
    write_maillog(
        log,
        boxes,
        [a for a, _ in boxes[:6]],
        [a for a, _ in boxes[6:20]],
        start=start,
        span=timedelta(hours=6),
        lines=20_000,
        seed=5,
    )
    data = log.read_bytes()
    assert_same(data)
    parser = BlockParser(line_parser(reference=REFERENCE), TRUSTED)
    parser.parse(data, 0, "t.log")
    assert parser.kinds["skipped"] > 0.4 * data.count(b"\n")


def test_joining_complete_messages_in_the_worker_changes_nothing(tmp_path: Path) -> None:
    """The detector finds the same from raw message events as from messages joined per block (any block size)."""
    boxes = [(f"user{i:03d}@kunde{i % 3}.example", None) for i in range(60)]
    log = tmp_path / "mail.log"
    start = datetime(2026, 11, 20, tzinfo=UTC)
    write_maillog(
        log,
        boxes,
        [a for a, _ in boxes[:6]],
        [a for a, _ in boxes[6:20]],
        start=start,
        span=timedelta(hours=6),
        lines=20_000,
        seed=9,
    )
    parser = line_parser(reference=REFERENCE)
    raw = [
        e for i, line in enumerate(log.read_text().splitlines()) if (e := parser.parse(line, "t.log", i)) is not None
    ]
    expected = findings(raw)
    for size in (50, 997, len(raw)):
        joined = [e for i in range(0, len(raw), size) for e in join_complete(raw[i : i + size], TRUSTED)]
        assert len(joined) < len(raw)
        assert findings(joined) == expected


def test_the_detectors_sweep_in_c_keeps_what_its_python_sweep_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sweeping expired login windows in C (``_linescan.prune_logins``) leaves the detector exactly as its Python sweep
    does, on a login-heavy log swept after every block; and the blocks the classifier reports as joined are left as
    join_complete leaves them."""
    boxes = [(f"user{i:03d}@kunde{i % 3}.example", None) for i in range(80)]
    log = tmp_path / "mail.log"
    write_maillog(
        log,
        boxes,
        [a for a, _ in boxes[:6]],
        [a for a, _ in boxes[6:20]],
        start=datetime(2026, 11, 20, tzinfo=UTC),
        span=timedelta(hours=12),
        lines=30_000,
        seed=11,
        mix="logins",
    )
    lines = log.read_bytes().splitlines(keepends=True)
    parser = BlockParser(line_parser(reference=REFERENCE), TRUSTED)
    batches, joined_blocks, offset = [], 0, 0
    for i in range(0, len(lines), 500):
        block = b"".join(lines[i : i + 500])
        events, joined = parser._parse(block, offset, "t.log")
        offset += len(block)
        joined_blocks += joined
        batches.append(events if joined else join_complete(events, TRUSTED))
        if joined:
            assert join_complete(list(events), TRUSTED) == events
    assert joined_blocks > 0 and any(isinstance(e, LoginRun) for batch in batches for e in batch)

    def run() -> Detector:
        detector = Detector(CONFIG)
        for batch in batches:
            detector.feed_many(batch)
            detector.prune()
        detector.finish()
        return detector

    in_c = run()
    monkeypatch.setattr(detection, "COMPILED", False)
    in_python = run()
    assert [_key(f) for f in in_c.findings] == [_key(f) for f in in_python.findings]
    assert any(f.kind == "legacy" for f in in_c.findings)
    assert repr(in_c.logins) == repr(in_python.logins) and in_c.sessions == in_python.sessions
    assert in_c.to_state() == in_python.to_state()


@pytest.mark.parametrize(
    "fields",
    [
        (
            1_770_000_000.5,
            "anna@example.org",
            None,
            "mx1|s|a1",
            "t.log",
            7,
            "Nov 23 09:00:00 mx1 dovecot: imap-login: …",
        ),
        (1_770_000_001.0, "bert@example.org", 1_770_000_009.25, None, "t.log", 0, "plain ASCII line"),
        (0.0, "", None, None, "", 12_345_678_901, ""),
    ],
)
def test_the_compact_login_record_is_the_dataclass_record(fields: tuple) -> None:
    """The records built in C (``_linescan.LoginRecord``) read, print, compare and change as the dataclass does."""
    compact, plain = events.LoginRecord(*fields), events.PlainLoginRecord(*fields)
    assert type(compact) is not type(plain)
    names = ("t", "user", "ended", "key", "file", "offset", "line")
    assert [getattr(compact, n) for n in names] == list(fields) and repr(compact) == repr(plain)
    assert compact == events.LoginRecord(**dict(zip(names, fields, strict=True)))
    for record in (compact, plain):
        record.ended, record.key = 1_770_000_100.0, None
    assert repr(compact) == repr(plain) and compact != events.LoginRecord(*fields)
    compact.ended = None
    assert compact.ended is None


def test_the_compact_relay_refusal_is_the_dataclass_refusal() -> None:
    """A relay refusal the classifier reads (``_linescan.Refusal``, its strings read from its line when asked) has the
    fields, repr and equality of the one LineParser reads (``events.Refusal``), both ways round."""
    line = (
        "Nov 23 10:00:05 mx1 postfix/smtpd[11]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 454 4.7.1 "
        "<x@remote.test>: Relay access denied; from=<> to=<x@remote.test> proto=SMTP helo=<pc>"
    )
    (fast,), (slow,) = both((line + "\n").encode())
    assert type(fast) is blocks._linescan.Refusal and type(slow) is events.Refusal
    names = [f.name for f in dataclasses.fields(events.Refusal)]
    assert [getattr(fast, n) for n in names] == [getattr(slow, n) for n in names]
    assert (fast.action, fast.sender, fast.map_address) == ("defer", None, None)
    assert fast == slow and slow == fast and repr(fast) == repr(slow)
    assert fast != dataclasses.replace(slow, rcpt="y@remote.test") and fast != slow.line


EDGES = [
    # a stamp no parser can read (minute 61) on a login whose session ends readably, and on a whole message's
    # line: joined and paired before the times are known, they are joined and paired again without them
    "Nov 23 10:61:00 mx1 dovecot: pop3-login: Login: user=<ivan@example.org>, rip=203.0.113.30, mpid=30",
    "Nov 23 10:01:00 mx1 dovecot: pop3(ivan@example.org)<30>: Disconnected: Logged out",
    "Nov 23 10:01:01 mx1 postfix/smtpd[11]: 3F2A1B4C80: client=pc[203.0.113.30]",
    "Nov 23 10:01:02 mx1 postfix/qmgr[12]: 3F2A1B4C80: from=<ivan@example.org>, size=1, nrcpt=1 (queue active)",
    "Nov 23 10:01:61 mx1 postfix/smtp[13]: 3F2A1B4C80: to=<x@remote.test>, relay=mx[192.0.2.9]:25, dsn=2.0.0, status=sent (ok)",
    "Nov 23 10:01:04 mx1 postfix/qmgr[12]: 3F2A1B4C80: removed",
    # authenticated and trusted messages with only local deliveries: the classifier must keep them
    "Nov 23 10:00:01 mx1 postfix/submission/smtpd[11]: 3F2A1B4C60: client=pc[198.51.100.7], sasl_method=PLAIN, sasl_username=anna@example.org",
    "Nov 23 10:00:02 mx1 postfix/qmgr[12]: 3F2A1B4C60: from=<anna@example.org>, size=1234, nrcpt=1 (queue active)",
    "Nov 23 10:00:03 mx1 postfix/virtual[14]: 3F2A1B4C60: to=<bert@example.org>, relay=virtual, delay=1, dsn=2.0.0, status=sent (ok)",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C60: removed",
    "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C61: client=unknown[10.1.2.3]",
    "Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C61: to=<x@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=2.0.0, status=sent (250 ok)",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C61: removed",
    # a SASL submission through a content filter, re-injected from localhost to a local mailbox
    "Nov 23 10:00:01 mx1 postfix/submission/smtpd[11]: 3F2A1B4C62: client=pc[198.51.100.7], sasl_method=PLAIN, sasl_username=anna@example.org",
    "Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C62: to=<bert@example.org>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, dsn=2.0.0, status=sent (250 2.0.0 Ok, queued as 3F2A1B4C63)",
    "Nov 23 10:00:03 mx1 postfix/smtpd[11]: 3F2A1B4C63: client=localhost[127.0.0.1]",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C62: removed",
    "Nov 23 10:00:04 mx1 postfix/virtual[14]: 3F2A1B4C63: to=<bert@example.org>, relay=virtual, delay=1, dsn=2.0.0, status=sent (ok)",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C63: removed",
    # a queue ID reused: the old message's "removed" comes before the new one's client=
    "Nov 23 10:00:05 mx1 postfix/qmgr[12]: 3F2A1B4C64: removed",
    "Nov 23 10:00:06 mx1 postfix/smtpd[11]: 3F2A1B4C64: client=unknown[203.0.113.8]",
    # a plain inbound message whose queue ID a local submission (no client=) reuses at once: not dropped whole
    "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C65: client=unknown[203.0.113.5]",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C65: removed",
    "Nov 23 10:00:05 mx1 postfix/qmgr[12]: 3F2A1B4C65: from=<anna@example.org>, size=1234, nrcpt=1 (queue active)",
    # a 32-character queue ID puts " client=" past the 40 characters LineParser looks at
    "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 4kzj2B3dNDz1bcdfghjklmnpqrstvwxy: client=unknown[203.0.113.9]",
    # proxies and Dovecot 1.x's own log: programs and envelopes only the Python parsers read
    'Nov 23 10:00:00 px nginx: 2026/11/23 10:00:00 [info] 8#8: *7 client logged in, client: 198.51.100.7, server: 0.0.0.0:993, login: "anna@example.org", upstream: 10.0.0.5:143',
    '2026/11/23 10:00:01 [info] 8#8: *7 proxied session done, client: 198.51.100.7, server: 0.0.0.0:993, login: "anna@example.org", upstream: 10.0.0.5:143',
    'Nov 23 10:00:02 px perdition.pop3s[31]: Auth: 198.51.100.8:2274->192.0.2.9:995 client-secure=ssl authorisation_id=NONE authentication_id="bert@example.org" server="pop:995" protocol=POP3S server-secure=ssl status="ok"',
    'Nov 23 10:00:02 px perdition[31]: Auth: 198.51.100.9:2274->192.0.2.9:993 authorisation_id=NONE authentication_id="carl@example.org" server="imap:993" protocol=IMAP4S status="ok"',
    "dovecot: Nov 23 10:00:03 Info: pop3-login: Login: user=<dora@example.org>, method=PLAIN, rip=198.51.100.10, lip=192.0.2.1",
    # one of our notices, whole in the block from an untrusted address: itemised, not joined (logs/deliveries.py)
    "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C70: client=unknown[203.0.113.20]",
    "Nov 23 10:00:01 mx1 postfix/cleanup[15]: 3F2A1B4C70: message-id=<rollout.c1.w1.k7@example.net>",
    "Nov 23 10:00:02 mx1 postfix/qmgr[12]: 3F2A1B4C70: from=<support@example.net>, size=1234, nrcpt=1 (queue active)",
    "Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C70: to=<k7@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=5.1.1, status=bounced (host mx.remote.test[192.0.2.9] said: 550 5.1.1 unknown (in reply to RCPT TO command))",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C70: removed",
    "Nov 23 10:00:05 mx1 postfix/qmgr[12]: 3F2A1B4C71: from=<support@example.net>, status=expired, returned to sender",
    "2026-11-23 10:00:06 1abcDE-000002-AB <= support@example.net H=(ops) [203.0.113.20] P=esmtp S=100 id=rollout.c1.w1.k8@example.net",
    # '<' in the host of an RFC 3164 line is no envelope for LineParser
    "Nov 23 09:59:00 m<x1 dovecot: pop3-login: Login: user=<anna@example.org>, rip=203.0.113.5, lip=192.0.2.1, session=<x1>",
    "2026-11-23T09:59:00Z m<x1 dovecot: pop3-login: Login: user=<anna@example.org>, rip=203.0.113.5, lip=192.0.2.1, session=<x2>",
    # Cyrus under a site's own service name; Solaris syslogd's tag before the message (and look-alikes that are not it)
    "Nov 23 10:00:04 imap30 sloti24t04/imapmail[3609860]: login: fe1.example [198.51.100.11] erik@example.org plaintext User logged in SESSIONID=<s-1>",
    "Nov 23 10:00:04 imap30 site/pop3int[3609861]: login: [198.51.100.12] fritz plaintext+TLS User logged in",
    "Nov 23 10:00:04 imap30 site/imapmail[3609862]: badlogin: [198.51.100.13] gina plaintext SASL(-13): authentication failure",
    "Nov 23 10:00:05 sol dovecot: [ID 583609 mail.info] pop3-login: Login: user=<gina@example.org>, method=PLAIN, rip=198.51.100.14, lip=192.0.2.1",
    "Nov 23 10:00:06 sol postfix/smtpd[11]: [ID 197553 mail.info] 5C4D3E2F80: client=pc[198.51.100.14]",
    "Nov 23 10:00:06 sol postfix/qmgr[12]: [ID 197553 mail.info] 5C4D3E2F80: from=<gina@example.org>, size=1, nrcpt=1 (queue active)",
    "Nov 23 10:00:06 sol postfix/smtp[13]: [ID 197553 mail.info] 5C4D3E2F80: to=<x@remote.test>, relay=mx[198.51.100.9]:25, dsn=2.0.0, status=sent (ok)",
    "Nov 23 10:00:06 sol postfix/qmgr[12]: [ID 197553 mail.info] 5C4D3E2F80: removed",
    "Nov 23 10:00:07 sol dovecot: [ID 5 Mail.info] pop3-login: Login: user=<hans@example.org>, method=PLAIN, rip=198.51.100.15, lip=192.0.2.1",
    "Nov 23 10:00:07 sol dovecot: [ID x mail.info] pop3-login: Login: user=<hans@example.org>, method=PLAIN, rip=198.51.100.15, lip=192.0.2.1",
    "Nov 23 10:00:08 sol dovecot: [ID 5 mail.info]pop3-login: Login: user=<hans@example.org>, method=PLAIN, rip=198.51.100.16, lip=192.0.2.1",
]


def test_edge_cases_give_the_same_events_and_findings() -> None:
    assert_same(("\n".join(EDGES) + "\n").encode())


def test_a_qmgr_line_logged_ahead_of_its_client_line_keeps_the_message_whole() -> None:
    """A message whose qmgr from= is logged before smtpd's client= (syslog reordering) is not half dropped: the
    detector sees its removal and carries no open message to the next scan (Hypothesis found this one)."""
    lines = [
        "Nov 23 10:00:02 mx1 postfix/qmgr[12]: 3F2A1B4C5D: from=<anna@example.org>, size=1234, nrcpt=1 (queue active)",
        "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C5D: client=unknown[203.0.113.5]",
        "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C5D: removed",
    ]
    assert_same(("\n".join(lines) + "\n").encode())


FAST_SESSIONS = [
    # two logins with one session key: the end closes the later one; a second end closes nothing
    "Nov 23 09:00:00 mx1 dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.1, mpid=7, session=<s1>",
    "Nov 23 09:00:01 mx1 dovecot: imap-login: Login: user=<bert@example.org>, rip=203.0.113.6, lip=192.0.2.1, mpid=8, session=<s1>",
    "Nov 23 09:00:02 mx1 dovecot: imap(bert@example.org)<8><s1>: Disconnected: Logged out in=1 out=2",
    "Nov 23 09:00:03 mx1 dovecot: imap(bert@example.org)<8><s1>: Disconnected: Logged out in=1 out=2",
    # no session: keyed by protocol, user (any case) and pid; IMAP in capitals; "Logged in" with Info prefixes
    "Nov 23 09:00:04 mx1 dovecot: Info: imap-login: Info: Logged in: user=<Carl@example.org>, rip=203.0.113.7, mpid=9, TLS, secured",
    "Nov 23 09:00:05 mx1 dovecot: IMAP(carl@example.org)<9>: Info: Disconnected: Logged out",
    # an empty session and an empty mpid: no key at all
    "Nov 23 09:00:06 mx1 dovecot: pop3-login: Login: user=<dora@example.org>, rip=203.0.113.8, mpid=, session=<>",
    "Nov 23 09:00:07 mx1 dovecot: pop3(dora@example.org)<>: Disconnected: Logged out",
    # a trusted address opens no window, so its end closes nothing
    "Nov 23 09:00:08 mx1 dovecot: pop3-login: Login: user=<emil@example.org>, rip=127.0.0.1, mpid=10, session=<s2>",
    "Nov 23 09:00:09 mx1 dovecot: pop3(emil@example.org)<10><s2>: Disconnected: Logged out",
]
FAST_FALLBACKS = [
    # elements the strict reader leaves to Python: a key inside a flag, a value after '<…>', a leading zero
    "Nov 23 09:00:10 mx1 dovecot: pop3-login: Login: user=<fritz@example.org>, rip=203.0.113.9, (x=1), session=<s3>",
    "Nov 23 09:00:10 mx1 dovecot: pop3-login: Login: user=<gina@example.org>x, rip=203.0.113.9, session=<s4>",
    "Nov 23 09:00:10 mx1 dovecot: pop3-login: Login: user=<hans@example.org>, rip=203.0.113.09, session=<s5>",
    "Nov 23 09:00:10 mx1 dovecot: pop3-login: Login: user=<ida@exämple.org>, rip=203.0.113.10, session=<s6>",
    # a day that does not exist: the line is unknown on both paths
    "Feb 30 09:00:11 mx1 dovecot: pop3-login: Login: user=<jan@example.org>, rip=203.0.113.11, session=<s7>",
    "Nov 23 09:00:12 mx1 postfix/smtpd[11]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 450 4.7.1 <x@remote.test>: Relay access denied; from=<> to=<x@remote.test> proto=ESMTP helo=<pc>",
    "Nov 23 09:00:12 mx1 postfix/smtpd[11]: NOQUEUE: reject: RCPT from a[203.0.113.5]: 554 5.7.1 <x; from=<y>: Relay access denied; from=<a@b> to=<x@remote.test> proto=ESMTP helo=<pc> extra",
    # a login Python reads: it pairs every session of the block
    "Nov 23 09:00:13 mx1 dovecot: pop3-login: Login: user=<anna@example.org>, rip=203.0.113.5, (x=1), mpid=11, session=<s8>",
    "Nov 23 09:00:14 mx1 dovecot: pop3(anna@example.org)<11><s8>: Disconnected: Logged out",
    "Nov 23 09:00:15 mx1 dovecot: pop3-login: Login: user=<bert@example.org>, rip=203.0.113.6, mpid=12, session=<s9>",
    "Nov 23 09:00:16 mx1 dovecot: pop3(bert@example.org)<12><s9>: Disconnected: Logged out",
]
FAST_MESSAGES = [
    # a legacy message: forwarded and remote recipients, lmtp, an empty envelope sender
    "Nov 23 09:00:20 mx1 postfix/smtpd[11]: 3F2A1B4D01: client=unknown[203.0.113.5]",
    "Nov 23 09:00:20 mx1 postfix/qmgr[12]: 3F2A1B4D01: from=<>, size=1, nrcpt=3 (queue active)",
    "Nov 23 09:00:21 mx1 postfix/smtp[13]: 3F2A1B4D01: to=<x@remote.test>, orig_to=<anna@example.org>, relay=mx[192.0.2.9]:25, dsn=2.0.0, status=sent (250 ok)",
    "Nov 23 09:00:21 mx1 postfix/lmtp[13]: 3F2A1B4D01: to=<bert@example.org>, relay=store[192.0.2.10]:24, dsn=2.0.0, status=sent (250 ok)",
    "Nov 23 09:00:21 mx1 postfix/smtp[13]: 3F2A1B4D01: to=<y@remote.test>, relay=mx[192.0.2.9]:25, dsn=4.0.0, status=deferred (timeout)",
    "Nov 23 09:00:22 mx1 postfix/qmgr[12]: 3F2A1B4D01: removed",
    # a message with a line only Python reads (pickup) is joined by Python, not here
    "Nov 23 09:00:30 mx1 postfix/smtpd[11]: 3F2A1B4D02: client=unknown[203.0.113.5], sasl_method=LOGIN, sasl_username=",
    "Nov 23 09:00:30 mx1 postfix/pickup[16]: 3F2A1B4D02: uid=33 from=<www-data>",
    "Nov 23 09:00:31 mx1 postfix/smtp[13]: 3F2A1B4D02: to=<x@remote.test>, relay=mx[192.0.2.9]:25, dsn=2.0.0, status=sent (250 ok)",
    "Nov 23 09:00:32 mx1 postfix/qmgr[12]: 3F2A1B4D02: removed",
    # more than 50 recipients: the first 50 are kept
    "Nov 23 09:00:40 mx1 postfix/smtpd[11]: 3F2A1B4D03: client=unknown[203.0.113.5]",
    *(
        f"Nov 23 09:00:41 mx1 postfix/smtp[13]: 3F2A1B4D03: to=<r{i}@remote.test>, relay=mx[192.0.2.9]:25, dsn=2.0.0, status=sent (250 ok)"
        for i in range(55)
    ),
    "Nov 23 09:00:42 mx1 postfix/qmgr[12]: 3F2A1B4D03: removed",
    # an empty relay is no delivery for Python: the message is not joined here
    "Nov 23 09:00:50 mx1 postfix/smtpd[11]: 3F2A1B4D04: client=unknown[203.0.113.5]",
    "Nov 23 09:00:51 mx1 postfix/smtp[13]: 3F2A1B4D04: to=<x@remote.test>, relay=, dsn=2.0.0, status=sent (250 ok)",
    "Nov 23 09:00:52 mx1 postfix/qmgr[12]: 3F2A1B4D04: removed",
]


def test_shapes_the_classifier_reads_itself_give_the_same_events_and_findings() -> None:
    """Logins, session ends, refusals and whole messages built in C equal LineParser's, joined and paired alike."""
    for lines in (FAST_SESSIONS, FAST_FALLBACKS, FAST_MESSAGES, FAST_SESSIONS[::-1], FAST_MESSAGES[::-1]):
        assert_same(("\n".join(lines) + "\n").encode())


def test_sessions_paired_per_block_give_the_findings_of_one_stream() -> None:
    """A session key reused across blocks: pairing inside each block leaves the detector where feeding lines does."""
    lines = [
        "Nov 23 09:00:00 mx1 dovecot: pop3-login: Login: user=<anna@example.org>, rip=203.0.113.5, mpid=7",
        "Nov 23 09:00:01 mx1 dovecot: pop3-login: Login: user=<anna@example.org>, rip=203.0.113.6, mpid=7",
        "Nov 23 09:00:02 mx1 dovecot: pop3(anna@example.org)<7>: Disconnected: Logged out",
        "Nov 23 09:00:03 mx1 dovecot: pop3-login: Login: user=<anna@example.org>, rip=203.0.113.7, mpid=7",
        "Nov 23 09:00:04 mx1 dovecot: pop3(anna@example.org)<7>: Disconnected: Logged out",
        "Nov 23 09:00:05 mx1 dovecot: pop3(anna@example.org)<7>: Disconnected: Logged out",
    ]
    block = ("\n".join(lines) + "\n").encode()
    expected = findings(
        BlockParser(line_parser(reference=REFERENCE), TRUSTED)._parse_all(block, 0, "t.log")
    )  # unjoined
    for cut in range(len(lines) + 1):
        at = sum(len(line) + 1 for line in lines[:cut])
        fast = BlockParser(line_parser(reference=REFERENCE), TRUSTED)
        events = fast.parse(block[:at], 0, "t.log") + fast.parse(block[at:], at, "t.log")
        assert findings(events) == expected, cut


def test_the_classifier_builds_the_common_events_itself(tmp_path: Path) -> None:
    """On a provider log almost nothing is left for Python to parse: C builds the events, joins messages and counts
    the authenticated ones."""
    boxes = [(f"user{i:03d}@kunde{i % 3}.example", None) for i in range(60)]
    log = tmp_path / "mail.log"
    write_maillog(
        log,
        boxes,
        [a for a, _ in boxes[:6]],
        [a for a, _ in boxes[6:20]],
        start=datetime(2026, 11, 20, tzinfo=UTC),
        span=timedelta(hours=6),
        lines=20_000,
        seed=5,
    )
    parser = BlockParser(line_parser(reference=REFERENCE), TRUSTED)
    rows, *_, authenticated = blocks._linescan.scan(
        log.read_bytes(), parser.rules, parser.trusted, "t.log", 0, parser.lines.envelopes.time_of, parser.classes
    )
    assert sum(isinstance(row, tuple) for row in rows) < 0.01 * len(rows)
    assert sum(isinstance(row, CompleteMessage) for row in rows) > 20  # the legacy sends
    assert sum(count for count, _last in authenticated.values()) > 100


SHAPES = [
    "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C5D: client=unknown[203.0.113.5]",
    "Nov 23 10:00:01 mx1 postfix/submission/smtpd[11]: 3F2A1B4C5E: client=pc[198.51.100.7], sasl_method=PLAIN, sasl_username=anna@example.org",
    "Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C5F: client=localhost[127.0.0.1], orig_queue_id=3F2A1B4C5D, orig_client=unknown[203.0.113.5]",
    "Nov 23 10:00:02 mx1 postfix/qmgr[12]: 3F2A1B4C5D: from=<anna@example.org>, size=1234, nrcpt=1 (queue active)",
    "Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C5D: to=<x@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
    "Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C5D: to=<x@remote.test>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, dsn=2.0.0, status=sent (250 2.0.0 Ok, queued as 3F2A1B4C5F)",
    "Nov 23 10:00:03 mx1 postfix/virtual[14]: 3F2A1B4C5D: to=<bert@example.org>, relay=virtual, delay=1, dsn=2.0.0, status=sent (delivered to maildir)",
    "Nov 23 10:00:03 mx1 postfix/pipe[14]: 3F2A1B4C5D: to=<bert@example.org>, relay=dfilt, delay=1, dsn=2.0.0, status=sent (250 ok, queued as 3F2A1B4C5F)",
    "Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C5D: removed",
    "Nov 23 10:00:04 mx1 postfix/smtpd[11]: connect from unknown[203.0.113.5]",
    "Nov 23 10:00:04 mx1 postfix/cleanup[15]: 3F2A1B4C5D: message-id=<a@b>",
    "Nov 23 10:00:04 mx1 postfix/cleanup[15]: 3F2A1B4C5D: message-id=<rollout.c1.w2.k3@example.net>",
    "Nov 23 10:00:05 mx1 postfix/qmgr[12]: 3F2A1B4C5D: from=<support@example.net>, status=expired, returned to sender",
    "Nov 23 10:00:05 mx1 postfix/smtpd[11]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <x@remote.test>: Relay access denied; from=<anna@example.org> to=<x@remote.test> proto=ESMTP helo=<pc>",
    "Nov 23 10:00:05 mx1 postfix/smtpd[11]: warning: unknown[203.0.113.5]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
    "Nov 23 09:59:00 mx1 dovecot[700]: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.1, mpid=1, TLS, session=<abc>",
    "Nov 23 09:59:00 mx1 dovecot: imap-login: Info: Logged in: user=<bert@example.org>, rip=::ffff:203.0.113.5, lip=192.0.2.1, session=<def>",
    "Nov 23 10:05:00 mx1 dovecot: pop3(anna@example.org)<1><abc>: Disconnected: Logged out top=0/0, retr=1/2",
    "Nov 23 10:05:00 mx1 dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, rip=203.0.113.5",
    "2026-11-23T10:00:01.123456+01:00 mx1 postfix/smtpd[11]: 4B2A1B4C5D: client=unknown[2001:db8::5]",
    "<22>Nov 23 10:00:01 mx1 postfix/smtpd[11]: 4B2A1B4C5E: client=unknown[203.0.113.6]",
    "2026-11-23 10:00:01 1abcDE-000001-AB <= anna@example.org H=(pc) [203.0.113.5] P=esmtp S=100",
    "Nov 23 10:00:01 mx1 courierpop3login: LOGIN, user=anna@example.org, ip=[::ffff:203.0.113.5], port=[1], protocol=POP3",
    "Nov 23 10:00:01 mx1 amavis[99]: (1-1) Passed CLEAN {RelayedInbound}, [203.0.113.5] <a@b> -> <c@d>",
    "Nov 23 10:00:01 mx1 postfix/pickup[16]: 5C2A1B4C5D: uid=33 from=<www-data>",
    "Nov 23 10:00:01 mx1 postfix[16]: starting",
    # shapes the classifier turns into events itself
    "Nov 23 09:59:30 mx1 dovecot: imap-login: Info: Logged in: user=<bert@example.org>, rip=203.0.113.5, mpid=2, TLS",
    "Nov 23 10:05:01 mx1 dovecot: IMAP(bert@example.org)<2>: Info: Disconnected: Logged out in=1 out=2",
    "Nov 23 10:00:03 mx1 postfix/lmtp[13]: 3F2A1B4C5D: to=<x@remote.test>, orig_to=<anna@example.org>, relay=store[192.0.2.10]:24, dsn=2.0.0, status=deferred (451 later)",
    "Nov 23 10:00:05 mx1 postfix/smtpd[11]: NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 454 4.7.1 <x@remote.test>: Relay access denied; from=<> to=<x@remote.test> proto=SMTP helo=<pc>",
]
JUNK = [" ", ":", "[", "]", "<", ">", ",", "\x1c", "é", "\t", "0", "A", "z", "/", "\x00", "-"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(SHAPES), st.integers(0, 200), st.sampled_from(JUNK), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
)
def test_mutated_lines_give_the_same_events(lines: list[tuple[str, int, str, bool]], rnd: random.Random) -> None:
    """Known shapes with a character replaced or inserted anywhere (envelope, program, fields) agree on both paths."""
    out = []
    for shape, pos, junk, insert in lines:
        pos %= len(shape) + 1
        out.append(shape[:pos] + junk + shape[pos + (0 if insert else 1) :] if rnd.random() < 0.7 else shape)
    assert_same(("\n".join(out) + "\n").encode())


def test_runs_of_logins_file_what_the_detector_would_file() -> None:
    """Logins the classifier files itself (LoginRun): user case kept for the report, session keys freed,
    hosts kept apart, trusted and unended logins left as events, relay refusals between them judged in their
    place, a relay after them judged as before."""
    lines = [
        "Nov 23 09:00:00 mx1 dovecot: imap-login: Login: user=<Anna@Example.org>, rip=203.0.113.7, mpid=7, session=<a1>",
        # relay refusals between the logins: one from an address that logged in (a near miss), one from a stranger
        "Nov 23 09:00:00 mx1 postfix/smtpd[3]: NOQUEUE: reject: RCPT from pc[203.0.113.7]: 554 5.7.1 <x@remote.example>: "
        "Relay access denied; from=<anna@example.org> to=<x@remote.example> proto=ESMTP helo=<pc>",
        "Nov 23 09:00:00 mx1 postfix/smtpd[3]: NOQUEUE: reject: RCPT from spam[192.0.2.66]: 554 5.7.1 <y@remote.example>: "
        "Relay access denied; from=<> to=<y@remote.example> proto=ESMTP helo=<spam>",
        "Nov 23 09:00:01 mx1 dovecot: pop3-login: Login: user=<bert@example.org>, rip=2001:db8::7, mpid=8",
        "Nov 23 09:00:02 mx2 dovecot: pop3-login: Login: user=<carl@example.org>, rip=198.51.100.9, mpid=9, session=<c1>",
        "Nov 23 09:00:03 mx1 dovecot: imap-login: Login: user=<dora@example.org>, rip=10.1.2.3, mpid=10, session=<d1>",
        "Nov 23 09:00:04 mx1 dovecot: imap-login: Login: user=<emil@example.org>, rip=203.0.113.8, mpid=11, session=<e1>",
        "Nov 23 09:00:05 mx1 dovecot: imap(Anna@Example.org)<7><a1>: Disconnected: Logged out",
        "Nov 23 09:00:06 mx1 dovecot: pop3(bert@example.org)<8>: Disconnected: Logged out",
        "Nov 23 09:00:07 mx2 dovecot: pop3(carl@example.org)<9><c1>: Disconnected: Logged out",
        "Nov 23 09:00:08 mx1 dovecot: imap(dora@example.org)<10><d1>: Disconnected: Logged out",
        "Nov 23 09:01:00 mx1 postfix/smtpd[3]: 4F1A2B3C4D: client=pc[203.0.113.7]",
        "Nov 23 09:01:01 mx1 postfix/qmgr[4]: 4F1A2B3C4D: from=<anna@example.org>, size=1, nrcpt=1 (queue active)",
        "Nov 23 09:01:02 mx1 postfix/smtp[5]: 4F1A2B3C4D: to=<x@remote.example>, relay=mx.remote.example[192.0.2.9]:25, status=sent (ok)",
        "Nov 23 09:01:03 mx1 postfix/qmgr[4]: 4F1A2B3C4D: removed",
        "Nov 23 09:09:00 mx1 dovecot: imap-login: Login: user=<anna@example.org>, rip=203.0.113.7, mpid=12, session=<a2>",
        "Nov 23 09:09:09 mx1 dovecot: imap(anna@example.org)<12><a2>: Disconnected: Logged out",
    ]
    block = "".join(line + "\n" for line in lines).encode()
    runs, slow = both(block, login_runs=True)
    assert any(isinstance(e, LoginRun) for e in runs)
    in_runs = [r for e in runs if isinstance(e, LoginRun) for r in e.logins if isinstance(r, blocks._linescan.Refusal)]
    assert [r.client_ip for r in in_runs] == ["203.0.113.7", "192.0.2.66"]  # the run goes on past them
    assert findings(runs) == findings(slow)
    assert [(f.user, f.ip) for f in _detector(runs).findings if f.kind == "near_miss"] == [
        ("anna@example.org", "203.0.113.7")
    ]
    assert [f.user for f in _detector(runs).findings if f.kind == "login"][:1] == ["Anna@Example.org"]
    assert_same(block)


def _detector(events: list[Event]) -> Detector:
    detector = Detector(CONFIG)
    detector.feed_all(events)
    return detector
