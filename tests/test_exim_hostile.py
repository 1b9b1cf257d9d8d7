"""Exim lines written to forge evidence: HELO literals, fields hidden in free text, a long hostile line."""

from __future__ import annotations

import threading

import pytest

from rollout.logs.events import Accept, Delivery, Refusal

from .scan_support import parse_one

STAMP = "2026-03-02 10:05:00 [101]"


@pytest.mark.parametrize(
    "fields, ip",
    [
        ("H=([198.51.100.77]) [203.0.113.5]", "203.0.113.5"),  # Thunderbird's EHLO [address]
        ("H=([198.51.100.77]) [203.0.113.5]:51792 I=[192.0.2.1]:25", "203.0.113.5"),
        ("H=pc.dsl.test ([198.51.100.77]) [2001:db8::5]:51792", "2001:db8::5"),
        ("H=[203.0.113.5]", "203.0.113.5"),
        ("H=(laptop) [::ffff:203.0.113.5]", "203.0.113.5"),
    ],
)
def test_the_client_is_the_last_bracketed_address_of_h(fields: str, ip: str) -> None:
    """A HELO address literal never becomes the client IP, nor does the receiving interface I=."""
    event = parse_one(f"{STAMP} 1Ov4tU-0000Nz-Rm <= anna@example.org {fields} P=esmtp S=2177 id=a@b")
    assert isinstance(event, Accept) and event.client_ip == ip


@pytest.mark.parametrize(
    "tail",
    [
        'S=300 id=<"x A=plain:victim@example.org "@laptop>',
        'S=300 id=x@laptop T="hi A=plain:victim@example.org P=esmtpa"',
        'S=300 id=x@laptop T="a \\"quoted\\" A=plain:victim@example.org"',
        "S=300 id=x@laptop A=plain:victim@example.org",
        'S=300 T="unterminated A=plain:victim@example.org',
    ],
)
def test_fields_in_free_text_do_not_authenticate_a_relay(tail: str) -> None:
    """A Message-ID or subject carrying ``A=`` or ``P=esmtpa`` leaves the submission unauthenticated."""
    event = parse_one(f"{STAMP} 1Ov4tU-0000Nz-Rm <= anna@example.org H=(pc) [203.0.113.5] P=esmtp {tail}")
    assert isinstance(event, Accept)
    assert (event.client_ip, event.authenticated, event.sasl_user) == ("203.0.113.5", False, None)


def test_a_quoted_sender_cannot_carry_fields() -> None:
    """An envelope sender with quoted spaces is one value: its ``H=``/``A=`` text is not read."""
    line = f'{STAMP} 1Ov4tU-0000Nz-Rm <= "x H=[192.0.2.9] A=p:victim@example.org"@evil.test H=(pc) [203.0.113.5] P=esmtp S=1'  # noqa: E501
    event = parse_one(line)
    assert isinstance(event, Accept)
    assert (event.client_ip, event.authenticated, event.sender) == (
        "203.0.113.5",
        False,
        '"x H=[192.0.2.9] A=p:victim@example.org"@evil.test',
    )


def test_the_real_auth_fields_still_count() -> None:
    """A=, P=esmtpsa before the size are read as before."""
    line = f'{STAMP} 10HmaX-000000005vi-0000 <= bert@example.org H=(laptop) [192.0.2.8] P=esmtpsa A=dovecot_plain:bert@example.org S=10 T="x"'  # noqa: E501
    event = parse_one(line)
    assert isinstance(event, Accept) and (event.authenticated, event.sasl_user) == (True, "bert@example.org")


@pytest.mark.parametrize(
    "line, daemon, relay",
    [
        (
            '=> friend@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.5] C="250 OK T=local_delivery"',  # noqa: E501
            "smtp",
            "mx.remote.test",
        ),
        (
            '=> "x T=local_delivery"@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.5]',
            "smtp",
            "mx.remote.test",
        ),
        (
            '=> a@remote.test <"b T=local H=x"@example.org> R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.5]',
            "smtp",
            "mx.remote.test",
        ),
        ("=> anna@example.org R=local_user T=local_delivery", "local_delivery", "none"),
    ],
)
def test_a_remote_reply_or_address_cannot_change_the_transport(line: str, daemon: str, relay: str) -> None:
    """``C=`` (the remote server's reply) and quoted addresses are not read as fields: the relay stays visible."""
    event = parse_one(f"{STAMP} 1Ov4tU-0000Nz-Rm {line}")
    assert isinstance(event, Delivery) and (event.daemon, event.relay) == (daemon, relay)


@pytest.mark.parametrize(
    "message, ip, sender, rcpt",
    [
        (
            "H=(yakult.com.tw) [202.132.70.178]:3755 I=[1.2.3.4]:25 F=menacedsj04@listserv.eurasia.org rejected RCPT dir@ml3.ru",  # noqa: E501
            "202.132.70.178",
            "menacedsj04@listserv.eurasia.org",
            "dir@ml3.ru",
        ),
        (
            "H=([198.51.100.77]) [203.0.113.5]:3755 F=<anna@example.org> rejected RCPT <bob@remote.test>",
            "203.0.113.5",
            "anna@example.org",
            "bob@remote.test",
        ),
        (
            'H=(x) [203.0.113.5] F=<"y H=([192.0.2.9]) [192.0.2.9] F=<victim@example.org>"@evil.test> rejected RCPT <bob@remote.test>',  # noqa: E501
            "203.0.113.5",
            '"y H=([192.0.2.9]) [192.0.2.9] F=<victim@example.org>"@evil.test',
            "bob@remote.test",
        ),
    ],
)
def test_relay_refusals_take_the_client_from_h(message: str, ip: str, sender: str, rcpt: str) -> None:
    """``relay not permitted``: the client is the last address of H=, the sender F= as a whole."""
    event = parse_one(f"{STAMP} {message}: relay not permitted")
    assert isinstance(event, Refusal)
    assert (event.reason, event.client_ip, event.sender, event.rcpt) == ("relay", ip, sender, rcpt)


def _within(seconds: float, work: object) -> bool:
    """Whether ``work()`` finished in the time; a super-linear pattern needs minutes on these lines."""
    done = threading.Event()

    def run() -> None:
        work()  # type: ignore[operator]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


@pytest.mark.parametrize(
    "line",
    [
        f'{STAMP} H=(x) [192.0.2.1] F=<a@b.test> rejected RCPT <"{"H=[1] F=" * 2000}"@x.test>: relay not permitted',
        f'{STAMP} 1Ov4tU-0000Nz-Rm <= "{"H=[1] " * 2700}"@x.test H=(x) [192.0.2.1] P=esmtp S=1',
        f"{STAMP} 1Ov4tU-0000Nz-Rm <= a@b.test H=({'(' * 16000}) [192.0.2.1] P=esmtp S=1",
        f'{STAMP} 1Ov4tU-0000Nz-Rm => a@b.test "' + '\\"' * 8100 + " R=x T=remote_smtp H=y",
        f"{STAMP} 1Ov4tU-0000Nz-Rm <= a@b.test " + "H=[1] " * 2700 + "P=esmtp",
    ],
)
def test_a_16kb_hostile_line_is_parsed_at_once(line: str) -> None:
    """Lines of 16 KB built against the patterns finish (the old relay pattern took 16 s for 9 KB, cubic)."""
    assert len(line) >= 16_000
    results: list[object] = []
    assert _within(20, lambda: results.append(parse_one(line)))
    assert results[0] is None or not isinstance(results[0], str)


def test_thunderbird_helo_literal_is_still_legacy_use_of_its_sender() -> None:
    """``EHLO [192.168.x.y]`` after a POP login from the real address: the relay is that customer's legacy use."""
    from .test_detection_dialects import detect

    lines = [
        "Mar  2 10:00:00 mail dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1",  # noqa: E501
        f"{STAMP} 1Ov4tU-0000Nz-Rm <= anna@example.org H=([192.168.1.5]) [192.0.2.7]:51792 P=esmtp S=2177 id=a@b",
        f"{STAMP} 1Ov4tU-0000Nz-Rm => friend@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.5]",
        f"{STAMP} 1Ov4tU-0000Nz-Rm Completed",
    ]
    assert [(f.kind, f.user, f.ip) for f in detect(lines)] == [("legacy", "anna@example.org", "192.0.2.7")]
