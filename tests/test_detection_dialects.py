"""Parser + detector together on raw log lines: Exim, content filters, several hosts, journald stamps."""

from __future__ import annotations

from rollout.scan.detection import DetectionConfig, Detector, Finding

from .scan_support import line_parser

CONFIG = DetectionConfig(local_domains=frozenset({"example.org"}), trusted_networks=("127.0.0.0/8",))


def detect(lines: list[str], host: str = "files") -> list[Finding]:
    return detect_and_count(lines, host)[0]


def detect_and_count(
    lines: list[str], host: str = "files", config: DetectionConfig = CONFIG
) -> tuple[list[Finding], dict]:
    """The findings (logins aside) and the authenticated submissions counted."""
    parser = line_parser(host=host)
    detector = Detector(config)
    detector.feed_all(e for i, line in enumerate(lines) if (e := parser.parse(line, "t.log", i)) is not None)
    return [f for f in detector.findings if f.kind != "login"], detector.authenticated


def test_exim_relay_after_pop_login_is_legacy_and_esmtpa_is_authenticated() -> None:
    """Exim: <= without A= then => via an smtp transport after a login is legacy; P=esmtpa is authenticated."""
    lines = [
        "Mar  2 10:00:00 mail dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1",
        "2026-03-02 10:05:00 [101] 1Ov4tU-0000Nz-Rm <= anna@example.org H=pc.dsl.test [192.0.2.7]:51792 I=[192.0.2.1]:25 P=esmtp S=2177 id=a@b",
        "2026-03-02 10:05:01 [102] 1Ov4tU-0000Nz-Rm => friend@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.5]",
        "2026-03-02 10:05:01 [102] 1Ov4tU-0000Nz-Rm Completed",
        "2026-03-02 10:06:00 [103] 10HmaX-000000005vi-0000 <= bert@example.org H=(laptop) [192.0.2.8] P=esmtpsa A=dovecot_plain:bert@example.org S=1000",
        "2026-03-02 10:06:01 [104] 10HmaX-000000005vi-0000 => friend@remote.test R=dnslookup T=remote_smtp H=mx.remote.test [198.51.100.5]",
        "2026-03-02 10:06:01 [104] 10HmaX-000000005vi-0000 Completed",
    ]
    found, authenticated = detect_and_count(lines)
    assert [(f.kind, f.user) for f in found] == [("legacy", "anna@example.org")]
    assert [user for user, _day in authenticated] == ["bert@example.org"]


def test_content_filter_reinjection_is_judged_on_the_original_client() -> None:
    """After amavis (relay to 127.0.0.1:10024, queued as NEW) the re-injected copy has the original client (P14)."""
    lines = [
        "Mar  2 10:00:00 mx dovecot: imap-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=5, session=<s1>",
        "Mar  2 10:01:00 mx postfix/smtpd[10]: 1111AAAA01: client=pc[192.0.2.7]",
        "Mar  2 10:01:00 mx postfix/qmgr[9]: 1111AAAA01: from=<anna@example.org>, size=100, nrcpt=1 (queue active)",
        "Mar  2 10:01:01 mx postfix/smtpd[11]: 2222BBBB02: client=localhost[127.0.0.1]",
        "Mar  2 10:01:01 mx postfix/qmgr[9]: 2222BBBB02: from=<anna@example.org>, size=300, nrcpt=1 (queue active)",
        "Mar  2 10:01:01 mx postfix/smtp[12]: 1111AAAA01: to=<friend@remote.test>, relay=127.0.0.1[127.0.0.1]:10024, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as 2222BBBB02)",
        "Mar  2 10:01:01 mx postfix/qmgr[9]: 1111AAAA01: removed",
        "Mar  2 10:01:02 mx postfix/smtp[13]: 2222BBBB02: to=<friend@remote.test>, relay=mx.remote.test[198.51.100.5]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
        "Mar  2 10:01:02 mx postfix/qmgr[9]: 2222BBBB02: removed",
    ]
    (f,) = detect(lines)
    assert (f.kind, f.user, f.ip, f.qid) == ("legacy", "anna@example.org", "192.0.2.7", "2222BBBB02")


def test_same_queue_id_on_two_hosts_are_two_messages() -> None:
    """Queue IDs are only unique per host (P6): interleaved hosts do not mix their messages."""
    lines = [
        "Mar  2 10:00:00 mx1 dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1",
        "Mar  2 10:01:00 mx1 postfix/smtpd[10]: ABCDEF0123: client=pc[192.0.2.7]",
        "Mar  2 10:01:00 mx2 postfix/smtpd[10]: ABCDEF0123: client=mta[198.51.100.9]",
        "Mar  2 10:01:00 mx2 postfix/qmgr[9]: ABCDEF0123: from=<news@remote.test>, size=100, nrcpt=1 (queue active)",
        "Mar  2 10:01:00 mx1 postfix/qmgr[9]: ABCDEF0123: from=<anna@example.org>, size=100, nrcpt=1 (queue active)",
        "Mar  2 10:01:01 mx2 postfix/virtual[12]: ABCDEF0123: to=<anna@example.org>, relay=virtual, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (delivered to maildir)",
        "Mar  2 10:01:01 mx1 postfix/smtp[12]: ABCDEF0123: to=<friend@remote.test>, relay=mx.remote.test[198.51.100.5]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
        "Mar  2 10:01:01 mx2 postfix/qmgr[9]: ABCDEF0123: removed",
        "Mar  2 10:01:01 mx1 postfix/qmgr[9]: ABCDEF0123: removed",
    ]
    (f,) = detect(lines)
    assert (f.kind, f.host, f.sender) == ("legacy", "mx1", "anna@example.org")


def test_journald_short_iso_offsets_with_and_without_colon() -> None:
    """`journalctl -o short-iso` stamps (+01:00 and older +0100) give the same instant."""
    p = line_parser()
    a = p.parse("2026-03-02T11:00:00+01:00 mx postfix/qmgr[9]: ABCDEF0123: removed", "f", 0)
    b = p.parse("2026-03-02T11:00:00+0100 mx postfix/qmgr[9]: ABCDEF0123: removed", "f", 1)
    assert a is not None and b is not None and a.t == b.t


def test_failed_smtp_auth_then_legacy_relay_is_flagged() -> None:
    """A SASL failure followed by a legacy relay from the same client flags auth_failed_then_legacy (P17)."""
    lines = [
        "Mar  2 10:00:00 mx dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1",
        "Mar  2 10:00:05 mx postfix/submission/smtpd[9]: warning: pc[192.0.2.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
        "Mar  2 10:00:06 mx postfix/smtpd[10]: 1111AAAA01: client=pc[192.0.2.7]",
        "Mar  2 10:00:06 mx postfix/qmgr[9]: 1111AAAA01: from=<anna@example.org>, size=100, nrcpt=1 (queue active)",
        "Mar  2 10:00:07 mx postfix/smtp[12]: 1111AAAA01: to=<friend@remote.test>, relay=mx.remote.test[198.51.100.5]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
        "Mar  2 10:00:07 mx postfix/qmgr[9]: 1111AAAA01: removed",
    ]
    (f,) = detect(lines)
    assert (f.kind, f.details.get("flags")) == ("legacy", ["auth_failed_then_legacy", "year_inferred"])


def test_submission_service_joins_the_queue_of_its_instance() -> None:
    """`postfix/submission/smtpd` shares `postfix/qmgr`'s queue: a port-587 SASL submission counts as authenticated."""
    lines = [
        "Mar  2 10:00:00 mx postfix/submission/smtpd[9]: 4A1B2C3D4E: client=pc[192.0.2.7], sasl_method=PLAIN, sasl_username=anna@example.org",
        "Mar  2 10:00:00 mx postfix/qmgr[3]: 4A1B2C3D4E: from=<anna@example.org>, size=900, nrcpt=1 (queue active)",
        "Mar  2 10:00:01 mx postfix/smtp[10]: 4A1B2C3D4E: to=<friend@remote.test>, relay=mx.remote.test[198.51.100.5]:25, delay=1, dsn=2.0.0, status=sent (250 ok)",
        "Mar  2 10:00:01 mx postfix/qmgr[3]: 4A1B2C3D4E: removed",
        "Mar  2 10:00:02 mx postfix-out/smtpd[11]: 4A1B2C3D4F: client=pc[192.0.2.8], sasl_method=PLAIN, sasl_username=bert@example.org",
        "Mar  2 10:00:02 mx postfix/qmgr[3]: 4A1B2C3D4F: removed",  # another instance's queue: not bert's message
    ]
    found, authenticated = detect_and_count(lines)
    assert found == []
    assert [(user, count) for (user, _day), (count, _last) in authenticated.items()] == [("anna@example.org", 1)]


def test_behind_an_imap_proxy_the_proxy_login_opens_the_window() -> None:
    """P18: the backend sees the proxy (trusted, no window); nginx logs the customer's address: its relay is legacy."""
    config = DetectionConfig(local_domains=frozenset({"example.org"}), trusted_networks=("127.0.0.0/8", "10.0.0.0/8"))
    lines = [
        "Mar  2 10:00:00 mx dovecot: imap-login: Login: user=<anna@example.org>, method=PLAIN, rip=10.0.0.2, lip=10.0.0.5, mpid=5, session=<s1>",
        "Mar  2 10:00:00 px nginx: 2026/03/02 10:00:00 [info] 8#8: *7 client logged in, client: 198.51.100.7, server: 0.0.0.0:993, "
        'login: "anna@example.org", upstream: 10.0.0.5:143',
        "Mar  2 10:04:00 mx postfix/smtpd[10]: 1111AAAA01: client=pc[198.51.100.7]",
        "Mar  2 10:04:00 mx postfix/qmgr[9]: 1111AAAA01: from=<anna@example.org>, size=100, nrcpt=1 (queue active)",
        "Mar  2 10:04:01 mx postfix/smtp[12]: 1111AAAA01: to=<friend@remote.test>, relay=mx.remote.test[198.51.100.5]:25, delay=1, dsn=2.0.0, status=sent (250 ok)",
        "Mar  2 10:04:01 mx postfix/qmgr[9]: 1111AAAA01: removed",
    ]
    (legacy,), _authenticated = detect_and_count(lines, config=config)
    assert (legacy.kind, legacy.user, legacy.ip, legacy.confidence) == (
        "legacy",
        "anna@example.org",
        "198.51.100.7",
        "high",
    )


def test_a_sighting_from_year_less_stamps_says_its_year_was_inferred() -> None:
    """P7: RFC 3164 stamps have no year, so the sighting carries year_inferred; RFC 3339 ones do not."""
    iso = [
        "2026-03-02T10:00:00+00:00 mx dovecot: pop3-login: Login: user=<anna@example.org>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1",
        "2026-03-02T10:00:06+00:00 mx postfix/smtpd[10]: 1111AAAA01: client=pc[192.0.2.7]",
        "2026-03-02T10:00:06+00:00 mx postfix/qmgr[9]: 1111AAAA01: from=<anna@example.org>, size=100, nrcpt=1 (queue active)",
        "2026-03-02T10:00:07+00:00 mx postfix/smtp[12]: 1111AAAA01: to=<friend@remote.test>, relay=mx.remote.test[198.51.100.5]:25, delay=1, dsn=2.0.0, status=sent (250 ok)",
        "2026-03-02T10:00:07+00:00 mx postfix/qmgr[9]: 1111AAAA01: removed",
    ]
    (f,) = detect(iso)
    assert f.kind == "legacy" and "year_inferred" not in f.details.get("flags", [])
    bsd = ["Mar  2 10:00:00 mx" + iso[0].partition(" mx")[2], *iso[1:]]
    (g,) = detect(bsd)
    assert g.kind == "legacy" and g.details["flags"] == ["year_inferred"]
