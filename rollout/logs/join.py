"""Events that belong together, joined where they were parsed: a message's lines, a login and its end.

A message is a plain dict (it is carried from one scan to the next as JSON, see
``detection.Detector.to_state``); the functions here are the only ones that build it, for
the detector and for ``join_complete`` alike. Session keys say which session end closes
which login. The C classifier joins the common cases itself, the same way
(``_linescan.c``, tests/test_linescan.py).
"""

from __future__ import annotations

from typing import Any

from .deliveries import names_a_notice
from .events import Accept, CompleteMessage, Delivery, Event, Login, LoginRun, NoticeQueued, Removed, Sender, SessionEnd
from .net import TrustedNetworks

MAX_RECIPIENTS = 50  # recipients kept per message: enough to judge it, bounded for a mailing list
MESSAGE_EVENTS = (Accept, Sender, Delivery, Removed)
_MESSAGE_CLASSES = frozenset(MESSAGE_EVENTS)
_JOINED_CLASSES = _MESSAGE_CLASSES | {NoticeQueued}

Message = dict[str, Any]  # t, ip, auth, sasl_user, sender, rcpts, lines[, orig_ip, orig_qid]


def new_message(t: float) -> Message:
    return {"t": t, "ip": None, "auth": False, "sasl_user": None, "sender": None, "rcpts": [], "lines": []}


def add_accept(msg: Message, e: Accept) -> None:
    msg["ip"] = e.client_ip
    msg["auth"] = e.authenticated
    msg["sasl_user"] = e.sasl_user
    msg["orig_ip"] = e.orig_client_ip
    msg["orig_qid"] = e.orig_qid
    if e.sender is not None:
        msg["sender"] = e.sender
    msg["lines"].append([e.file, e.offset, e.line])


def add_sender(msg: Message, e: Sender) -> None:
    msg["sender"] = e.sender
    msg["lines"].append([e.file, e.offset, e.line])


def add_delivery(msg: Message, e: Delivery, filter_hop: bool) -> None:
    """One recipient; ``filter_hop``: handed to a content filter that re-queues it (P14)."""
    if len(msg["rcpts"]) < MAX_RECIPIENTS:
        msg["rcpts"].append([e.rcpt, e.orig_to, e.daemon, e.relay, e.status, filter_hop])
        msg["lines"].append([e.file, e.offset, e.line])


def add_removed(msg: Message, e: Removed) -> None:
    msg["lines"].append([e.file, e.offset, e.line])


def session_key(host: str, proto: str, session: str | None, user: str, pid: str | None) -> str | None:
    """What ties a login to its session end: Dovecot's session ID, or else the process and user."""
    if session:
        return f"{host}|s|{session}"
    if pid:
        return f"{host}|{proto}|{user.lower()}|{pid}"
    return None


def end_keys(e: SessionEnd) -> tuple[str | None, str | None]:
    """The session keys a session end may close, in the order they are tried."""
    return session_key(e.host, e.proto, e.session, e.user, None), session_key(e.host, e.proto, None, e.user, e.pid)


def join_complete(events: list[Event], trusted_networks: tuple[str, ...]) -> list[Event]:
    """Replace each message that lies wholly in ``events`` by one ``CompleteMessage``; pair logins with their ends.

    Work moves from the detecting thread to the parsing workers. Left as they are:
    messages that start or end outside ``events``, that go through a content filter
    (their re-injected copy needs the detector's state) or come from a trusted or
    unknown address (same reason).
    """
    trusted = TrustedNetworks(trusted_networks)
    by_key: dict[tuple[str, str, str], list[int]] = {}
    for i in [i for i, e in enumerate(events) if e.__class__ in _JOINED_CLASSES]:  # few: the C classifier joins most
        e = events[i]
        assert isinstance(e, (*MESSAGE_EVENTS, NoticeQueued))  # as the filter above: each has a queue ID
        by_key.setdefault((e.host, e.instance, e.qid), []).append(i)
    replace: dict[int, Event | None] = {}
    for positions in by_key.values():
        group = [events[i] for i in positions]
        if any(names_a_notice(e) for e in group):
            continue  # one of our own notices: its deliveries are followed one by one (logs/deliveries.py)
        first, last = group[0], group[-1]
        if (
            not (isinstance(first, Accept) and isinstance(last, Removed))
            or sum(isinstance(e, (Accept, Removed)) for e in group) != 2
        ):
            continue
        if (
            first.client_ip is None
            or trusted.contains(first.client_ip)
            or any(isinstance(e, Delivery) and e.queued_as for e in group)
        ):
            continue
        replace.update(dict.fromkeys(positions[:-1]))
        replace[positions[-1]] = CompleteMessage(
            last.t, last.host, last.file, last.offset, last.line, last.instance, last.qid, _message_of(group)
        )
    _pair_sessions(events, trusted, replace)
    if not replace:
        return events
    return [r for i, e in enumerate(events) if (r := replace.get(i, e)) is not None]


def _message_of(group: list[Event]) -> Message:
    """The message the detector would build from these events (no content-filter hop among them)."""
    msg = new_message(group[0].t)
    for e in group:
        if isinstance(e, Accept):
            add_accept(msg, e)
        elif isinstance(e, Sender):
            add_sender(msg, e)
        elif isinstance(e, Delivery):
            add_delivery(msg, e, False)
        elif isinstance(e, Removed):
            add_removed(msg, e)
    return msg


def _pair_sessions(events: list[Event], trusted: TrustedNetworks, replace: dict[int, Event | None]) -> None:
    """A login and its session end in the same events: the end rides on the login (``Login.ended``).

    Only when the end's first key is the login's own (or it has none and the second is),
    so the detector, which tries the same keys against all open sessions, would have
    closed that very login.
    """
    if not any(e.__class__ is SessionEnd for e in events):
        return  # nothing to pair (the C classifier pairs what it can)
    open_logins: dict[str, int] = {}
    for i, e in enumerate(events):
        if isinstance(e, Login):
            key = session_key(e.host, e.proto, e.session, e.user, e.pid)
            if key is not None and not trusted.contains(e.ip):
                if e.ended is None:
                    open_logins[key] = i
                else:  # the C classifier paired it already: an end after it cannot close an older login of its key
                    open_logins.pop(key, None)
        elif isinstance(e, LoginRun):  # logins the C classifier paired already, as above
            for key in e.keys.split("\n"):
                if key:
                    open_logins.pop(key, None)
        elif isinstance(e, SessionEnd):
            first, second = end_keys(e)
            key = first if first is not None else second
            if key is not None and key in open_logins:
                login = events[open_logins.pop(key)]
                assert isinstance(login, Login)
                login.ended = e.t
                replace[i] = None
