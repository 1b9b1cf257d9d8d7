"""Detection rules (§7.3–7.4) on hand-made event sequences; no database."""

from __future__ import annotations

import json

from rollout.logs.events import Accept, Delivery, Login, Refusal, Removed, Sender, SessionEnd
from rollout.scan.detection import DetectionConfig, Detector, Finding

LOCAL = frozenset({"example.org"})
T = 1_770_000_000.0


def config(**kw: object) -> DetectionConfig:
    return DetectionConfig(local_domains=LOCAL, trusted_networks=("10.0.0.0/8",), **kw)  # type: ignore[arg-type]


def login(t: float, user: str, ip: str, session: str | None = None) -> Login:
    return Login(t, "mx", "f", 0, "login line", "pop3", user, ip, session, None)


def message(
    t: float,
    ip: str | None,
    sender: str,
    rcpts: list[str],
    qid: str = "ABC123",
    sasl: str | None = None,
    relay: str = "mx.remote.test[192.0.2.9]:25",
    daemon: str = "smtp",
    orig_to: str | None = None,
) -> list:
    events: list = [
        Accept(t, "mx", "f", 1, "client line", "postfix", qid, ip, sasl_user=sasl, authenticated=sasl is not None),
        Sender(t + 1, "mx", "f", 2, "from line", "postfix", qid, sender),
    ]
    for r in rcpts:
        local = r.endswith("@example.org")
        events.append(
            Delivery(
                t + 2,
                "mx",
                "f",
                3,
                "to line",
                "postfix",
                qid,
                r,
                orig_to,
                "virtual" if local else daemon,
                "virtual" if local else relay,
                "sent",
            )
        )
    events.append(Removed(t + 3, "mx", "f", 4, "removed line", "postfix", qid))
    return events


def run(events: list, **kw: object) -> list[Finding]:
    d = Detector(config(**kw))
    d.feed_all(events)
    return [f for f in d.findings if f.kind != "login"]


def test_pop_login_then_unauthenticated_relay_is_legacy_with_high_confidence() -> None:
    """A relay from the IP that logged in 5 minutes earlier is the login user's legacy use."""
    (f,) = run(
        [
            login(T, "anna@example.org", "192.0.2.1"),
            *message(T + 300, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
        ]
    )
    assert (f.kind, f.user, f.confidence, f.ip) == ("legacy", "anna@example.org", "high", "192.0.2.1")


def test_other_sender_is_still_the_login_users_with_medium_confidence() -> None:
    """Attribution follows the login, not the envelope sender (P12)."""
    (f,) = run(
        [
            login(T, "anna@example.org", "192.0.2.1"),
            *message(T + 60, "192.0.2.1", "info@anna-shop.test", ["bob@remote.test"]),
        ]
    )
    assert (f.kind, f.user, f.confidence) == ("legacy", "anna@example.org", "medium")


def test_login_outside_the_window_leaves_an_unexplained_relay() -> None:
    """A login 50 minutes before (W = 30 min, lazy expiry 1.5 W + 60 s, ε = 2 min) does not explain the relay."""
    (f,) = run(
        [
            login(T, "anna@example.org", "192.0.2.1"),
            *message(T + 3000, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
        ],
        session_tracking=False,
    )
    assert f.kind == "unexplained"


def test_relay_within_the_lazy_expiry_is_legacy_of_tier_extended() -> None:
    """40 minutes after the login (beyond W, within 1.5 W + 60 s) is still legacy, tier extended, at most medium."""
    (f,) = run(
        [
            login(T, "anna@example.org", "192.0.2.1"),
            *message(T + 2400, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
        ],
        session_tracking=False,
    )
    assert (f.kind, f.details["tier"], f.confidence) == ("legacy", "extended", "medium")


def test_open_imap_session_extends_the_window_when_tracking_is_on() -> None:
    """A long IMAP session (no logout yet) keeps the IP authorised, tier 'session' (P4)."""
    events = [
        login(T, "anna@example.org", "192.0.2.1", session="S1"),
        *message(T + 3 * 3600, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
    ]
    (f,) = run(events)
    assert (f.kind, f.details["tier"]) == ("legacy", "session")
    ended = [
        login(T, "anna@example.org", "192.0.2.1", session="S1"),
        SessionEnd(T + 60, "mx", "f", 0, "", "pop3", "anna@example.org", "S1", None),
        *message(T + 3 * 3600, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
    ]
    assert run(ended)[0].kind == "unexplained"


def test_authenticated_submission_and_inbound_mail_are_not_legacy() -> None:
    """SASL submissions are counted per user and day; mail to local recipients only is inbound."""
    events = [
        login(T, "anna@example.org", "192.0.2.1"),
        *message(T + 10, "192.0.2.1", "anna@example.org", ["bob@remote.test"], qid="A1", sasl="Anna@Example.org"),
        *message(T + 20, "192.0.2.1", "x@remote.test", ["anna@example.org"], qid="A2"),
    ]
    d = Detector(config())
    d.feed_all(events)
    assert [f for f in d.findings if f.kind != "login"] == []
    assert d.authenticated == {("anna@example.org", int(T // 86400)): [1, T + 10]}


def test_forwarding_and_trusted_networks_are_not_relays() -> None:
    """A remote delivery whose orig_to is local is forwarding; clients in trusted networks are never legacy."""
    events = [
        login(T, "anna@example.org", "192.0.2.1"),
        *message(T + 10, "192.0.2.1", "x@y.test", ["anna@gmail.test"], qid="F1", orig_to="anna@example.org"),
        login(T, "bert@example.org", "10.1.1.1"),
        *message(T + 10, "10.1.1.1", "bert@example.org", ["bob@remote.test"], qid="F2"),
    ]
    assert run(events) == []


def test_two_users_on_one_ip_without_sender_match_is_ambiguous() -> None:
    """Several candidates and no sender match → ambiguous, attributed to nobody (A2, P1)."""
    events = [
        login(T, "anna@example.org", "192.0.2.1"),
        login(T + 5, "bert@example.org", "192.0.2.1"),
        *message(T + 60, "192.0.2.1", "office@elsewhere.test", ["bob@remote.test"]),
    ]
    (f,) = run(events)
    assert (f.kind, f.user, f.candidates) == ("ambiguous", None, ["anna@example.org", "bert@example.org"])
    events[3] = Sender(T + 61, "mx", "f", 2, "", "postfix", "ABC123", "bert@example.org")
    (g,) = run(events)
    assert (g.kind, g.user, g.confidence, g.details["flags"]) == ("legacy", "bert@example.org", "medium", ["shared_ip"])


def test_ip_with_three_users_in_a_window_needs_a_sender_match() -> None:
    """P1: behind a NAT where three users log in, a relay without a sender match names nobody; with one it does."""
    nat = "192.0.2.50"
    events = [
        login(T - 1500, "carl@example.org", nat),
        login(T - 1200, "bert@example.org", nat),
        login(T, "anna@example.org", nat, session="imap-1"),  # only anna's open IMAP session still covers the relays
        *message(T + 4000, nat, "shop@anna-shop.test", ["bob@remote.test"], qid="AAA111"),
        *message(T + 4100, nat, "anna@example.org", ["bob@remote.test"], qid="AAA222"),
    ]
    found = [(f.kind, f.user, f.details.get("flags")) for f in run(events)]
    assert found == [("ambiguous", None, ["foreign_sender_domain", "shared_ip"]), ("legacy", "anna@example.org", None)]


def test_relay_denied_after_a_login_is_a_near_miss_and_our_refusal_is_counted() -> None:
    """A denied relay shortly after a login is a near miss; a refusal by our map names its mailbox."""
    events = [
        login(T, "anna@example.org", "192.0.2.1"),
        Refusal(
            T + 2000,
            "mx",
            "f",
            5,
            "",
            "reject",
            "relay",
            "192.0.2.1",
            "anna@example.org",
            "b@r.test",
            "Relay access denied",
        ),
        Refusal(
            T + 100,
            "mx",
            "f",
            6,
            "",
            "reject",
            "map",
            "192.0.2.1",
            "anna@example.org",
            "b@r.test",
            "...",
            "anna@example.org",
        ),
    ]
    kinds = sorted((f.kind, f.user, tuple(f.candidates)) for f in run(events))
    assert kinds == [("near_miss", "anna@example.org", ()), ("refused", None, ("anna@example.org",))]


def test_state_round_trips_through_json() -> None:
    """The carried state survives JSON, and a message split across the two halves is still found."""
    events = [
        login(T, "anna@example.org", "192.0.2.1"),
        *message(T + 300, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
    ]
    first = Detector(config())
    first.feed_all(events[:3])
    state = json.loads(json.dumps(first.to_state()))
    second = Detector(config(), state)
    second.feed_all(events[3:])
    assert [f.kind for f in second.findings] == ["legacy"]


def test_with_the_inventory_known_only_unknown_users_logins_are_findings() -> None:
    """Logins by inventory users open windows but are not reported; a stranger's login is (and its relay is legacy)."""
    d = Detector(config(known_users=frozenset({"anna@example.org"})))
    d.feed_all(
        [
            login(T, "Anna@Example.org", "192.0.2.1"),
            login(T, "zoe@other.test", "192.0.2.2"),
            *message(T + 60, "192.0.2.1", "anna@example.org", ["bob@remote.test"]),
        ]
    )
    assert [(f.kind, f.user) for f in d.findings] == [("login", "zoe@other.test"), ("legacy", "anna@example.org")]


def test_a_relay_by_the_sender_whose_login_came_over_the_other_address_family_is_dual_stack_not_legacy() -> None:
    """P2: an IPv6 POP login, then an IPv4 relay with that mailbox as sender: the legacy maps never matched it."""
    events = [
        login(T, "anna@example.org", "2001:db8::7"),
        *message(T + 120, "192.0.2.7", "anna@example.org", ["bob@remote.test"]),
    ]
    (f,) = run(events)
    assert (f.kind, f.candidates, f.details["flags"], f.details["login_ip"]) == (
        "unexplained",
        ["anna@example.org"],
        ["dual_stack"],
        "2001:db8::7",
    )
    assert f.lines[0] == ["f", 0, "login line"]
    other_sender = [
        login(T, "anna@example.org", "2001:db8::7"),
        *message(T + 120, "192.0.2.7", "bert@example.org", ["bob@remote.test"]),
    ]
    (g,) = run(other_sender)
    assert (g.kind, g.candidates, g.details) == ("unexplained", [], {})


def test_a_legacy_relay_with_a_sender_outside_our_domains_is_flagged_and_stays_the_logins() -> None:
    """P3 asks for a look at foreign envelope senders; the mailbox is still the login user's ("still that mailbox")."""
    (f,) = run(
        [
            login(T, "anna@example.org", "192.0.2.1"),
            *message(T + 60, "192.0.2.1", "office@anna-shop.test", ["bob@remote.test"]),
        ]
    )
    assert (f.kind, f.user, f.confidence) == ("legacy", "anna@example.org", "medium")
    assert f.details["flags"] == ["foreign_sender_domain", "sender_mismatch"]
