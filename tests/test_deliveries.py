"""Our notices followed through the provider MTA's log by Message-ID (rollout.logs.deliveries), on both parser paths."""

from __future__ import annotations

import pytest

from rollout.logs.blocks import BlockParser, compiled
from rollout.logs.deliveries import DeliveryTracker, permanent

from .scan_support import REFERENCE, line_parser

TRUSTED = ("10.0.0.0/8",)

POSTFIX = """\
Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C70: client=ops[203.0.113.20]
Nov 23 10:00:01 mx1 postfix/cleanup[15]: 3F2A1B4C70: message-id=<rollout.c1.w1.k7@example.net>
Nov 23 10:00:02 mx1 postfix/qmgr[12]: 3F2A1B4C70: from=<support@example.net>, size=1234, nrcpt=1 (queue active)
Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C70: to=<k7@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=4.4.1, status=deferred (connect to mx.remote.test[192.0.2.9]:25: Connection refused)
Nov 23 10:10:03 mx1 postfix/smtp[13]: 3F2A1B4C70: to=<k7@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=601, dsn=5.1.1, status=bounced (host mx.remote.test[192.0.2.9] said: 550 5.1.1 <k7@remote.test>: User unknown (in reply to RCPT TO command))
Nov 23 10:10:04 mx1 postfix/qmgr[12]: 3F2A1B4C70: removed
Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C71: client=ops[203.0.113.20]
Nov 23 10:00:01 mx1 postfix/cleanup[15]: 3F2A1B4C71: message-id=<rollout.c1.w1.k8@example.net>
Nov 23 10:00:02 mx1 postfix/qmgr[12]: 3F2A1B4C71: from=<support@example.net>, size=1234, nrcpt=1 (queue active)
Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C71: to=<k8@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 99)
Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C71: removed
Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C72: client=ops[203.0.113.20]
Nov 23 10:00:01 mx1 postfix/cleanup[15]: 3F2A1B4C72: message-id=<rollout.c1.w1.k9@example.net>
Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C72: to=<k9@slow.test>, relay=none, delay=1, dsn=4.4.1, status=deferred (connect to slow.test: Connection timed out)
Nov 23 10:00:01 mx1 postfix/smtpd[11]: 3F2A1B4C73: client=friend[203.0.113.21]
Nov 23 10:00:01 mx1 postfix/cleanup[15]: 3F2A1B4C73: message-id=<something@else.test>
Nov 23 10:00:03 mx1 postfix/smtp[13]: 3F2A1B4C73: to=<x@remote.test>, relay=mx.remote.test[192.0.2.9]:25, delay=1, dsn=5.1.1, status=bounced (550 no)
Nov 23 10:00:04 mx1 postfix/qmgr[12]: 3F2A1B4C73: removed
"""  # noqa: E501 (log lines as the daemons write them)

EXIM = """\
2026-11-23 10:00:06 1abcDE-000002-AB <= support@example.net H=(ops) [203.0.113.20] P=esmtp S=100 id=rollout.c2.w3.k1@example.net
2026-11-23 10:00:07 1abcDE-000002-AB ** k1@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [192.0.2.9]: SMTP error from remote mail server after RCPT TO:<k1@remote.test>: 550 5.1.1 User unknown
2026-11-23 10:00:07 1abcDE-000002-AB Completed
2026-11-23 10:00:06 1abcDE-000003-AB <= support@example.net H=(ops) [203.0.113.20] P=esmtp S=100 id=rollout.c2.w3.k2@example.net
2026-11-23 10:00:07 1abcDE-000003-AB == k2@slow.test R=dnslookup T=remote_smtp defer (-44) H=mx.slow.test [192.0.2.10]: SMTP error from remote mail server after RCPT TO:<k2@slow.test>: 451 4.7.1 greylisted
2026-11-23 10:05:07 1abcDE-000003-AB => k2@slow.test R=dnslookup T=remote_smtp H=mx.slow.test [192.0.2.10] C="250 OK"
2026-11-23 10:05:07 1abcDE-000003-AB Completed
"""  # noqa: E501 (log lines as the daemons write them)


def _outcomes(
    text: str, use_c: bool, open_keys: dict[str, str] | None = None
) -> dict[str, tuple[str | None, str | None]]:
    parser = BlockParser(line_parser(host="mx1", reference=REFERENCE), TRUSTED)
    block = text.encode()
    events = parser.parse(block, 0, "mail.log") if use_c else parser._parse_all(block, 0, "mail.log")
    events.sort(key=lambda e: e.t)
    tracker = DeliveryTracker(open_keys)
    tracker.feed(events)
    return {mid: (o.state, o.reply) for mid, o in tracker.outcomes.items()}


PATHS = [pytest.param(True, id="classifier"), pytest.param(False, id="python")]


@pytest.mark.parametrize("use_c", PATHS)
def test_postfix_notices_are_followed_to_their_outcome(use_c: bool) -> None:
    """Bounced (with the remote reply, after a deferral), delivered, delayed; other mail is not ours, not followed."""
    if use_c and not compiled():
        pytest.skip("the C classifier is not built")
    assert _outcomes(POSTFIX, use_c) == {
        "<rollout.c1.w1.k7@example.net>": (
            "bounced",
            "host mx.remote.test[192.0.2.9] said: 550 5.1.1 <k7@remote.test>: User unknown "
            "(in reply to RCPT TO command)",
        ),
        "<rollout.c1.w1.k8@example.net>": ("delivered", None),
        "<rollout.c1.w1.k9@example.net>": ("delayed", "connect to slow.test: Connection timed out"),
    }


@pytest.mark.parametrize("use_c", PATHS)
def test_exim_notices_are_followed_to_their_outcome(use_c: bool) -> None:
    """Exim: `<= … id=` names the notice, `**` bounces it with the reply, `==` then `=>` delivers it."""
    if use_c and not compiled():
        pytest.skip("the C classifier is not built")
    assert _outcomes(EXIM, use_c) == {
        "<rollout.c2.w3.k1@example.net>": (
            "bounced",
            "SMTP error from remote mail server after RCPT TO:<k1@remote.test>: 550 5.1.1 User unknown",
        ),
        "<rollout.c2.w3.k2@example.net>": ("delivered", None),
    }


def test_a_notice_queued_in_an_earlier_scan_is_still_followed() -> None:
    """The queue ID remembered from the last scan carries the notice over to this one's lines; expiry is a bounce."""
    later = "Nov 23 12:00:05 mx1 postfix/qmgr[12]: 3F2A1B4C72: from=<support@example.net>, status=expired, returned to sender\n"  # noqa: E501
    outcome = _outcomes(later, True, {"mx1|postfix|3F2A1B4C72": "<rollout.c1.w1.k9@example.net>"})
    assert outcome["<rollout.c1.w1.k9@example.net>"][0] == "bounced"
    assert "expired" in (outcome["<rollout.c1.w1.k9@example.net>"][1] or "")


@pytest.mark.parametrize(
    "reply, hard",
    [
        ("host mx[192.0.2.9] said: 550 5.1.1 <a@b>: User unknown (in reply to RCPT TO command)", True),
        ("SMTP error from remote mail server after RCPT TO:<a@b>: 550 no such user", True),
        ("host mx[192.0.2.9] said: 452 4.2.2 mailbox full (in reply to RCPT TO command)", False),
        ("expired: the provider's queue gave up and returned it to the sender", False),
        (None, False),
    ],
)
def test_permanent_means_a_5xx_reply(reply: str | None, hard: bool) -> None:
    """Only a 5xx (or 5.x.x) reply stops later waves from writing to that address again."""
    assert permanent(reply) is hard
