"""Events → legacy submissions and who made them (docs/detection.md §7.3–7.4). Pure: no database.

A legacy submission is an accepted message without SMTP AUTH (R1), from outside
the trusted networks (R2), with at least one remote, non-forwarded recipient
(R3), whose client IP had a successful POP3/IMAP login within the window (R4).
It is attributed to the login user; several candidate users without a sender
match make it ambiguous (kept for review, never counted for a mailbox).

The ``Detector`` is fed events in time order and collects findings in
``findings``; authenticated submissions (the customer has switched) are only
counted, per SASL user and day, in ``authenticated``. Its state (login windows,
open messages) is plain data: ``to_state()``/``from_state()`` carry it from one
scan to the next, so that a log scanned in pieces gives exactly what one scan
over the whole gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..addresses import login_key
from ..logs import native
from ..logs.envelope import year_inferred
from ..logs.events import (
    Accept,
    AuthCounts,
    AuthFailure,
    CompleteMessage,
    Delivery,
    Event,
    Login,
    LoginRecord,
    LoginRun,
    Refusal,
    Removed,
    Sender,
    SessionEnd,
)
from ..logs.join import Message, add_accept, add_delivery, add_removed, add_sender, end_keys, new_message, session_key
from ..logs.net import TrustedNetworks

try:  # the loops over every login, in C (logs/_linescan.c): filing runs of logins (only it makes them) and sweeping
    from ..logs import _linescan

    COMPILED = native.current(_linescan)
except ImportError:  # built without a C compiler: no runs, and the Python sweep (_prune_logins)
    COMPILED = False

STATE_VERSION = 1
PRUNE_EVERY = 50_000  # events between sweeps of expired login windows
SHARED_IP_USERS = 3  # P1: an IP with this many users within a window is a NAT: a sender match is required


@dataclass(frozen=True)
class DetectionConfig:
    window_seconds: float = 30 * 60
    tolerance_seconds: float = 120
    session_tracking: bool = True
    session_cap_seconds: float = 24 * 3600
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    local_domains: frozenset[str] = frozenset()
    login_addresses: Mapping[str, str] = field(default_factory=dict)  # lower(login) → address_key
    # lower-cased addresses and logins of the inventory: their logins are no findings (None: report every login)
    known_users: frozenset[str] | None = None

    @property
    def near_miss_seconds(self) -> float:
        """pop-before-smtp's lazy expiry keeps an IP up to 1.5 W + 60 s (§6.1)."""
        return 1.5 * self.window_seconds + 60


@dataclass(slots=True)
class Finding:
    """Something the scan records: ``kind`` is legacy, ambiguous, unexplained, near_miss, refused or login.

    Authenticated submissions are no findings: they are only counted (``Detector.authenticated``).
    """

    kind: str
    t: float
    host: str
    user: str | None = None  # the login user (legacy, near_miss, login), or None
    ip: str | None = None
    sender: str | None = None
    qid: str | None = None
    confidence: str | None = None  # high | medium (legacy)
    candidates: list[str] = field(default_factory=list)
    lines: list[list[Any]] = field(default_factory=list)  # [[file, offset, line], ...]
    details: dict[str, Any] = field(default_factory=dict)


class Detector:
    def __init__(self, config: DetectionConfig, state: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.trusted = TrustedNetworks(config.trusted_networks)
        self.is_trusted: Callable[[str], bool] = self.trusted.contains  # asked for nearly every event: bound once
        self.findings: list[Finding] = []
        # authenticated submissions, counted: (SASL user lower-cased or None, UTC day number) → [count, last time]
        self.authenticated: dict[tuple[str | None, int], list[float]] = {}
        self.logins: dict[str, list[LoginRecord]] = {}  # ip → its logins, oldest first
        self.sessions: dict[str, LoginRecord] = {}  # session key → its login, while the session is open
        self.messages: dict[str, dict[str, Any]] = {}  # host|instance|qid → the message so far
        self.reinjected: dict[str, dict[str, Any]] = {}  # host|qid after a content filter → original
        self.auth_failures: dict[str, float] = {}  # ip → last failed SMTP AUTH (P17)
        # removed messages wait ε before judgement: the login that allowed them may be logged in
        # the same second in another file, and files are merged by whole-second stamps
        self.pending: deque[tuple[float, str, str, dict[str, Any]]] = deque()
        self.now = 0.0
        self._since_prune = 0
        if state:
            self._load(state)

    # -- feeding ------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        self.feed_many((event,))

    def feed_many(self, events: Iterable[Event]) -> None:
        """``feed`` each event in turn; the scan's hot loop, so the per-event work is inlined here."""
        handlers, pending = _HANDLERS, self.pending
        now, since = self.now, self._since_prune
        for event in events:
            t = event.t
            if t > now:
                now = self.now = t
            handler = handlers.get(event.__class__)
            if handler is not None:
                handler(self, event)
                now = self.now  # a run of logins ends later than it starts
            while pending and pending[0][0] < now:
                _due, host, qid, msg = pending.popleft()
                self._evaluate(host, qid, msg)
            since += 1 if event.__class__ is not LoginRun else len(event.logins)
            if since >= PRUNE_EVERY:
                self.prune()
                since = 0
        self._since_prune = since

    def feed_all(self, events: Iterable[Event]) -> None:
        self.feed_many(events)
        self.finish()

    def finish(self) -> None:
        """End of the input at hand: judge the messages still waiting out their ε."""
        while self.pending:
            _due, host, qid, msg = self.pending.popleft()
            self._evaluate(host, qid, msg)

    def _login(self, e: Login) -> None:
        user = login_key(e.user)
        known = self.config.known_users
        report = known is None or user not in known  # logins by users not in the inventory are reported
        if self.is_trusted(e.ip):  # webmail, proxies: never open a window (P11)
            if report:
                self.findings.append(Finding("login", e.t, e.host, user=e.user, ip=e.ip, details={"trusted": True}))
            return
        if e.ended is not None:  # joined with its end (join_complete): as if it had taken its key, then closed
            record = LoginRecord(e.t, user, e.ended, None, e.file, e.offset, e.line)
            if self.sessions and (key := session_key(e.host, e.proto, e.session, e.user, e.pid)) is not None:
                self.sessions.pop(key, None)
        else:
            record = LoginRecord(
                e.t, user, None, session_key(e.host, e.proto, e.session, e.user, e.pid), e.file, e.offset, e.line
            )
            if record.key is not None:
                self.sessions[record.key] = record
        records = self.logins.get(e.ip)
        if records is None:
            self.logins[e.ip] = [record]
        else:
            records.append(record)
        if report:
            self.findings.append(Finding("login", e.t, e.host, user=e.user, ip=e.ip))

    def _login_run(self, e: LoginRun) -> None:
        """``_login`` for logins the C classifier filed already (untrusted, ended in their block): the scan's
        commonest event, so only what is left is done here. A run's later logins are filed before the messages
        due in between are judged: harmless, as every question about a login asks for its time first. The relay
        refusals between its logins are judged in their place (``_refusal``; only those from an address with
        logins can find anything, so only those come back here)."""
        # only the C classifier makes runs, and its module files them: each record under its address, its key freed
        report = _linescan.file_logins(
            e.logins, e.ips, e.keys, e.users, self.logins, self.sessions, self.config.known_users, self._refusal
        )
        for ip, record, user in report:  # logins by users not in the inventory are reported
            self.findings.append(Finding("login", record.t, e.host, user=user or record.user, ip=ip))
        if e.last > self.now:
            self.now = e.last

    def _session_end(self, e: SessionEnd) -> None:
        for key in end_keys(e):
            record = self.sessions.pop(key, None) if key else None
            if record is not None:
                record.ended, record.key = e.t, None  # closed: its key is free again
                return

    def _accept(self, e: Accept) -> None:
        add_accept(self._message(e.host, e.instance, e.qid, e.t), e)

    def _sender(self, e: Sender) -> None:
        add_sender(self._message(e.host, e.instance, e.qid, e.t), e)

    def _delivery(self, e: Delivery) -> None:
        msg = self._message(e.host, e.instance, e.qid, e.t)
        add_delivery(msg, e, bool(e.queued_as) and self._is_trusted_relay(e.relay))
        if e.queued_as and self._is_trusted_relay(e.relay):
            # the content filter re-queues the message under a new ID: remember where it came from (P14)
            self.reinjected[f"{e.host}|{e.queued_as}"] = {
                k: msg.get(k) for k in ("t", "ip", "auth", "sasl_user", "sender")
            } | {"lines": msg["lines"][:3]}

    def _removed(self, e: Removed) -> None:
        msg = self.messages.pop(f"{e.host}|{e.instance}|{e.qid}", None)
        if msg is None:
            return
        add_removed(msg, e)
        self.pending.append((e.t + self.config.tolerance_seconds, e.host, e.qid, msg))

    def _complete(self, e: CompleteMessage) -> None:
        """Joined in a worker (``logs.join.join_complete``): only the judgement is left, after the same ε."""
        self.pending.append((e.t + self.config.tolerance_seconds, e.host, e.qid, e.message))

    def _auth_counts(self, e: AuthCounts) -> None:
        for key, (count, last) in e.counts.items():
            self._add_authenticated(key, int(count), last)  # [count, last t]: one list type for both

    def _count_authenticated(self, user: str | None, t: float) -> None:
        self._add_authenticated((login_key(user) if user else None, int(t // 86400)), 1, t)

    def _add_authenticated(self, key: tuple[str | None, int], count: int, last: float) -> None:
        mine = self.authenticated.get(key)
        if mine is None:
            self.authenticated[key] = [count, last]
        else:
            mine[0] += count
            mine[1] = max(mine[1], last)

    def _auth_failure(self, e: AuthFailure) -> None:
        if e.client_ip:
            self.auth_failures[e.client_ip] = e.t

    def _refusal(self, e: Refusal) -> None:
        if e.reason == "map":
            users = self._candidates(e.client_ip, e.t, self.config.window_seconds) if e.client_ip else []
            self.findings.append(
                Finding(
                    "refused",
                    e.t,
                    e.host,
                    ip=e.client_ip,
                    sender=e.sender,
                    candidates=users,
                    lines=[[e.file, e.offset, e.line]],
                    details={"action": e.action, "address": e.map_address, "rcpt": e.rcpt},
                )
            )
        elif (
            e.client_ip in self.logins
            and e.reason == "relay"
            and e.action in ("reject", "defer")
            and not self.is_trusted(e.client_ip)
        ):
            # most relay refusals come from addresses that never logged in: the first test settles them
            users = self._candidates(e.client_ip, e.t, self.config.near_miss_seconds)
            if len(users) == 1:
                self.findings.append(
                    Finding(
                        "near_miss",
                        e.t,
                        e.host,
                        user=users[0],
                        ip=e.client_ip,
                        sender=e.sender,
                        lines=[[e.file, e.offset, e.line]],
                        details={"rcpt": e.rcpt},
                    )
                )

    # -- the rule -----------------------------------------------------------------

    def _evaluate(self, host: str, qid: str, msg: dict[str, Any]) -> None:
        origin = msg
        if msg.get("ip") is None or self.is_trusted(msg["ip"]):
            original = self.reinjected.pop(f"{host}|{qid}", None)
            if original is not None:
                origin = original | {"rcpts": msg["rcpts"], "lines": original["lines"] + msg["lines"]}
            elif msg.get("orig_ip"):
                origin = msg | {"ip": msg["orig_ip"]}
        t, ip, sender, lines = origin["t"], origin.get("ip"), origin.get("sender"), origin["lines"]
        if origin.get("auth"):  # the customer has switched: counted, not judged
            self._count_authenticated(origin.get("sasl_user"), t)
            return
        if ip is None or self.is_trusted(ip) or not self._has_remote_recipient(msg["rcpts"]):
            return  # local submission, trusted network, or inbound mail (R2, R3)
        self._attribute(host, qid, t, ip, sender, lines)

    def _attribute(self, host: str, qid: str, t: float, ip: str, sender: str | None, lines: list[list[Any]]) -> None:
        qualifying = self._qualifying(ip, t)
        users = sorted({r.user for r, _ in qualifying})
        lines = lines[:6]
        if not users:
            other = self._dual_stack_login(ip, t, sender)
            if other is None:
                self.findings.append(Finding("unexplained", t, host, ip=ip, sender=sender, qid=qid, lines=lines))
            else:  # P2: not legacy (the legacy maps key on the exact address), but the reviewer sees whose it likely is
                login, login_ip = other
                self.findings.append(
                    Finding(
                        "unexplained",
                        t,
                        host,
                        ip=ip,
                        sender=sender,
                        qid=qid,
                        candidates=[login.user],
                        lines=[[login.file, login.offset, login.line], *lines],
                        details={"flags": ["dual_stack"], "login_ip": login_ip},
                    )
                )
            return
        matching = [u for u in users if self.sender_matches(u, sender)]
        tiers = {tier for _, tier in qualifying}
        tier = next(t for t in ("strict", "session", "extended") if t in tiers)
        login = max((r for r, _ in qualifying), key=_time_of)
        login_lines = [[login.file, login.offset, login.line]]
        details: dict[str, Any] = {"tier": tier, "delta_seconds": round(t - login.t, 3)}

        def flag(name: str) -> None:
            details.setdefault("flags", []).append(name)

        failed = self.auth_failures.get(ip)
        if failed is not None and t - self.config.window_seconds <= failed <= t:
            # the client tries SMTP AUTH with a wrong password and the legacy path hides it
            flag("auth_failed_then_legacy")
        if sender and not self.is_local(sender):
            flag("foreign_sender_domain")  # P3: worth a look, still the login's
        if any(year_inferred(text) for _file, _offset, text in login_lines + lines):
            flag("year_inferred")  # P7: its year was the reader's guess
        if len(users) == 1 and not matching and self.is_shared(ip, t):
            # P1: behind a NAT with three or more users nobody is named without a sender match
            flag("shared_ip")
            self.findings.append(
                Finding(
                    "ambiguous",
                    t,
                    host,
                    ip=ip,
                    sender=sender,
                    qid=qid,
                    candidates=self._nearby_users(ip, t),
                    lines=login_lines + lines,
                    details=details,
                )
            )
        elif len(users) == 1:
            confidence = "high" if matching and tier != "extended" else "medium"
            if not matching:
                flag("sender_mismatch")
            self.findings.append(
                Finding(
                    "legacy",
                    t,
                    host,
                    user=users[0],
                    ip=ip,
                    sender=sender,
                    qid=qid,
                    confidence=confidence,
                    candidates=users,
                    lines=login_lines + lines,
                    details=details,
                )
            )
        elif len(matching) == 1:
            flag("shared_ip")
            self.findings.append(
                Finding(
                    "legacy",
                    t,
                    host,
                    user=matching[0],
                    ip=ip,
                    sender=sender,
                    qid=qid,
                    confidence="medium",
                    candidates=users,
                    lines=login_lines + lines,
                    details=details,
                )
            )
        else:
            self.findings.append(
                Finding(
                    "ambiguous",
                    t,
                    host,
                    ip=ip,
                    sender=sender,
                    qid=qid,
                    candidates=users,
                    lines=login_lines + lines,
                    details=details,
                )
            )

    def _dual_stack_login(self, ip: str, t: float, sender: str | None) -> tuple[LoginRecord, str] | None:
        """P2: the latest login within the window by the sender's own mailbox from the other address family
        (IPv6 login, IPv4 relay or the reverse), with its address. Walks every remembered login:
        only relays nobody's login explains come here, and they are rare."""
        if not sender:
            return None
        v6, c = ":" in ip, self.config
        found: tuple[LoginRecord, str] | None = None
        for other_ip, records in self.logins.items():
            if (":" in other_ip) == v6:
                continue
            for r in records:
                if (
                    r.t - c.tolerance_seconds <= t <= r.t + c.window_seconds + c.tolerance_seconds
                    and self.sender_matches(r.user, sender)
                ):
                    if found is None or r.t > found[0].t:
                        found = (r, other_ip)
        return found

    def _qualifying(self, ip: str, t: float) -> list[tuple[LoginRecord, str]]:
        """Logins from ``ip`` whose window (or session, P4) covers ``t``, with their tier."""
        c = self.config
        eps, w = c.tolerance_seconds, c.window_seconds
        out = []
        for record in self.logins.get(ip, ()):
            start = record.t
            if t < start - eps:
                continue
            if t <= start + w + eps:
                out.append((record, "strict"))
            elif c.session_tracking and t <= self._session_end_time(record) + w + eps:
                out.append((record, "session"))
            elif t <= start + c.near_miss_seconds + eps:
                out.append((record, "extended"))  # pop-before-smtp's lazy expiry still let it through
        return out

    def is_shared(self, ip: str, t: float) -> bool:
        """P1: among the logins remembered for ``ip`` up to ``t``, ``SHARED_IP_USERS`` or more distinct
        users within one window ``W``."""
        w, eps = self.config.window_seconds, self.config.tolerance_seconds
        records = sorted((r.t, r.user) for r in self.logins.get(ip, ()) if r.t <= t + eps)
        for i, (start, _user) in enumerate(records):
            if len({u for s, u in records[i:] if s <= start + w}) >= SHARED_IP_USERS:
                return True
        return False

    def _nearby_users(self, ip: str, t: float) -> list[str]:
        """The users behind a shared IP, for the reviewer: everyone who logged in within the reach of ``t``."""
        c = self.config
        return sorted(
            {
                r.user
                for r in self.logins.get(ip, ())
                if t - c.near_miss_seconds - c.window_seconds <= r.t <= t + c.tolerance_seconds
            }
        )

    def _candidates(self, ip: str, t: float, reach: float) -> list[str]:
        eps = self.config.tolerance_seconds
        return sorted({r.user for r in self.logins.get(ip, ()) if r.t - eps <= t <= r.t + reach + eps})

    def _session_end_time(self, record: LoginRecord) -> float:
        if record.ended is not None:
            return float(record.ended)
        if record.key is not None:  # still open: counts until the cap
            return float(record.t) + self.config.session_cap_seconds
        return float(record.t)

    def _has_remote_recipient(self, rcpts: list[list[Any]]) -> bool:
        for rcpt, orig_to, daemon, relay, _status, filter_hop in rcpts:
            if daemon not in ("smtp", "lmtp") or relay == "none" or "private/" in relay:
                continue
            if filter_hop or self.is_local(rcpt):
                continue
            if orig_to and self.is_local(orig_to):
                continue  # forwarding, not relaying
            return True
        return False

    # -- helpers ------------------------------------------------------------------

    def is_local(self, address: str) -> bool:
        return login_key(address).rpartition("@")[2] in self.config.local_domains

    def _is_trusted_relay(self, relay: str) -> bool:
        """A hop to a content filter on a trusted host (it re-queues the message: P14)."""
        start, end = relay.find("["), relay.find("]")
        return 0 <= start < end and self.is_trusted(relay[start + 1 : end])

    def sender_matches(self, user: str, sender: str | None) -> bool:
        if not sender:
            return False
        local, _, domain = login_key(sender).rpartition("@")
        bare = local.split("+", 1)[0] + ("@" + domain if local else domain)
        return bare == user or bare == self.config.login_addresses.get(user)

    def _message(self, host: str, instance: str, qid: str, t: float) -> Message:
        key = f"{host}|{instance}|{qid}"
        msg = self.messages.get(key)
        if msg is None:
            msg = self.messages[key] = new_message(t)
        return msg

    def prune(self) -> None:
        """Forget login windows that can no longer matter, and messages stuck for days."""
        self._since_prune = 0
        c = self.config
        keep_after = self.now - c.near_miss_seconds - c.window_seconds - 2 * c.tolerance_seconds
        if COMPILED:
            _linescan.prune_logins(self.logins, keep_after, c.session_cap_seconds)
        else:
            self._prune_logins(keep_after)
        for key in [k for k, r in self.sessions.items() if self._session_end_time(r) < keep_after]:
            del self.sessions[key]
        stale = self.now - 7 * 86400
        for key in [k for k, m in self.messages.items() if m["t"] < stale]:
            del self.messages[key]
        for key in [k for k, m in self.reinjected.items() if (m.get("t") or 0) < stale]:
            del self.reinjected[key]
        for ip in [ip for ip, t in self.auth_failures.items() if t < keep_after]:
            del self.auth_failures[ip]

    def _prune_logins(self, keep_after: float) -> None:
        """Forget the logins whose window and session ended before ``keep_after`` (``_linescan.prune_logins`` in C)."""
        end_of = self._session_end_time
        logins = self.logins
        for ip, records in list(logins.items()):
            # most IPs have one login, most sessions have ended: those are decided without a call
            if len(records) == 1:
                r = records[0]
                if r.t < keep_after and (r.ended if r.ended is not None else end_of(r)) < keep_after:
                    del logins[ip]
                continue
            kept = [
                r for r in records if r.t >= keep_after or (r.ended if r.ended is not None else end_of(r)) >= keep_after
            ]
            if not kept:
                del logins[ip]
            elif len(kept) < len(records):
                logins[ip] = kept

    # -- state ----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        self.finish()
        self.prune()
        logins = {
            ip: [[r.t, r.user, r.ended, r.key, r.file, r.offset, r.line] for r in records]
            for ip, records in self.logins.items()
        }
        return {
            "version": STATE_VERSION,
            "now": self.now,
            "logins": logins,
            "messages": self.messages,
            "reinjected": self.reinjected,
            "auth_failures": self.auth_failures,
        }

    def _load(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            return  # an older format: start afresh rather than misread it
        self.now = float(state["now"])
        self.logins = {ip: [LoginRecord(*r) for r in records] for ip, records in state["logins"].items()}
        self.messages = dict(state["messages"])
        self.reinjected = dict(state["reinjected"])
        self.auth_failures = dict(state.get("auth_failures", {}))
        for records in self.logins.values():
            for record in records:
                if record.key is not None and record.ended is None:
                    self.sessions[record.key] = record


_HANDLERS: dict[type, Callable[[Detector, Any], None]] = {  # by class: the hot loop's dispatch
    Login: Detector._login,
    LoginRun: Detector._login_run,
    SessionEnd: Detector._session_end,
    Accept: Detector._accept,
    Sender: Detector._sender,
    Delivery: Detector._delivery,
    Removed: Detector._removed,
    CompleteMessage: Detector._complete,
    AuthCounts: Detector._auth_counts,
    Refusal: Detector._refusal,
    AuthFailure: Detector._auth_failure,
}
if COMPILED:  # the classifier's relay refusals
    _HANDLERS[_linescan.Refusal] = Detector._refusal


def _time_of(record: LoginRecord) -> float:
    return record.t
