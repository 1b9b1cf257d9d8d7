"""A seeded, realistic provider mail log (Postfix + Dovecot via syslog) with its ground truth.

    truth = write_maillog(path, mailboxes, legacy={...}, sasl={...},
                          start=datetime(2026, 3, 2, tzinfo=timezone.utc), span=timedelta(days=1),
                          lines=200_000, seed=7, host="mx1")

``mailboxes`` are ``(address, login)`` pairs (``login`` None when it is the address);
``legacy`` are the addresses that send via SMTP-after-POP (each makes at least one
legacy submission when the log is long enough: the generator cycles through them),
``sasl`` those that send with SMTP AUTH. The file gets about ``lines`` RFC 3164 lines
(UTC stamps, one host) spread over ``span`` from ``start``: mostly inbound deliveries
to local mailboxes, relay and other rejects, SASL submissions, POP3/IMAP logins with
their session ends, rare legacy sends (a login, then an unauthenticated relay from
the same IP within minutes, sometimes with another envelope sender), and a few
ambiguous cases (two users logging in from one IP, a relay with a foreign sender).

Lines are written as they are made: 10 million lines need no more memory than ten.
The returned ``GroundTruth`` says which mailboxes made how many legacy submissions
(``legacy``), how many authenticated submissions each made (``auth``), how many
ambiguous relays there were, and how many lines were written; the scanner must find
exactly that. IPs of different stories never collide, so the truth is unambiguous.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# story → weight; lines per story: inbound 7, reject 3, sasl 7, login 2, legacy 9, ambiguous 10
WEIGHTS = {"inbound": 55, "reject": 20, "sasl": 8, "login": 16, "legacy": 0.6, "ambiguous": 0.05}
# the mixes a log can have: "inbound" is mostly inbound mail (logins and their ends 6 % of the lines);
# "logins" is a provider's log with mail clients polling every few minutes (logins and ends 30 %,
# half of them from households that poll again and again from one address); "ipv6" is "logins"
# with a quarter of the clients on IPv6
MIXES = {
    "inbound": (WEIGHTS, 0.0),
    "logins": ({**WEIGHTS, "login": 107}, 0.0),
    "ipv6": ({**WEIGHTS, "login": 107}, 0.25),
}
HOUSEHOLDS = 2000  # addresses that poll again and again; one or two users each
LINES_PER_STORY = {"inbound": 7, "reject": 3, "sasl": 7, "login": 2, "legacy": 9, "ambiguous": 10}
REMOTE_DOMAINS = ("gmail.test", "web.test", "gmx.test", "t-online.test", "outlook.test", "yahoo.test")


@dataclass
class GroundTruth:
    legacy: Counter[str] = field(default_factory=Counter)  # address → legacy submissions
    auth: Counter[str] = field(default_factory=Counter)  # address → authenticated submissions
    ambiguous: int = 0
    lines: int = 0
    first: datetime | None = None
    last: datetime | None = None


class _Writer:
    """Keeps lines in time order: stories schedule lines a little ahead; ``advance`` writes what is due."""

    def __init__(self, out: TextIO, host: str) -> None:
        self.out = out
        self.host = host
        self.pending: list[tuple[float, int, str]] = []
        self.seq = 0
        self.lines = 0
        self._second = -1
        self._stamp = ""

    def emit(self, t: float, program: str, pid: int, message: str) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (t, self.seq, f"{program}[{pid}]: {message}\n"))

    def advance(self, until: float) -> None:
        pending, batch = self.pending, []
        while pending and pending[0][0] <= until:
            t, _, text = heapq.heappop(pending)
            batch.append(f"{self._stamp_of(t)} {self.host} {text}")
        if batch:
            self.out.write("".join(batch))
            self.lines += len(batch)

    def _stamp_of(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            d = datetime.fromtimestamp(second, UTC)
            self._stamp = f"{MONTHS[d.month - 1]} {d.day:2d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}"
            self._second = second
        return self._stamp

    def flush(self) -> None:
        self.advance(float("inf"))


class _Story:
    """Makes one story's lines at time ``t``; fresh IPs and queue IDs from counters."""

    def __init__(self, w: _Writer, rng: random.Random, mailboxes: list[tuple[str, str]], truth: GroundTruth) -> None:
        self.w, self.rng, self.mailboxes, self.truth = w, rng, mailboxes, truth
        self.qid = rng.randrange(1 << 36)
        self.ip_counter = 0
        self.pid = 1000
        self.sasl_boxes: list[tuple[str, str]] = []
        self.ipv6 = 0.0
        self.households: list[tuple[str, list[str]]] = []  # (address, its users): pollers that never relay

    def next_qid(self) -> str:
        self.qid += 1
        return f"{self.qid:010X}"

    def fresh_ip(self, base: str) -> str:
        """A client address never used before; IPv6 for a share ``ipv6`` of them (``base`` tells the stories apart)."""
        self.ip_counter += 1
        n = self.ip_counter
        if self.ipv6 and self.rng.random() < self.ipv6:
            return str(
                ipaddress.IPv6Address(f"2001:db8:{base}::{(n >> 16) & 0xFFFF:x}:{n & 0xFFFF:x}")
            )  # as servers log it
        return f"{base}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def next_pid(self) -> int:
        self.pid = 1000 + (self.pid - 999) % 60000
        return self.pid

    def smtpd_message(
        self, t: float, ip: str, sender: str, rcpt: str, relay: str, daemon: str, sasl: str | None = None
    ) -> None:
        w, qid, pid = self.w, self.next_qid(), self.next_pid()
        client = f"client=unknown[{ip}]" + (f", sasl_method=PLAIN, sasl_username={sasl}" if sasl else "")
        w.emit(t, "postfix/smtpd", pid, f"connect from unknown[{ip}]")
        w.emit(t, "postfix/smtpd", pid, f"{qid}: {client}")
        w.emit(t, "postfix/cleanup", pid + 1, f"{qid}: message-id=<{qid}.{pid}@{sender.rpartition('@')[2] or 'x'}>")
        w.emit(
            t + 0.2,
            "postfix/qmgr",
            900,
            f"{qid}: from=<{sender}>, size={self.rng.randrange(900, 90000)}, nrcpt=1 (queue active)",
        )
        w.emit(
            t + 0.4,
            "postfix/smtpd",
            pid,
            f"disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        )
        w.emit(
            t + 0.6,
            f"postfix/{daemon}",
            pid + 2,
            f"{qid}: to=<{rcpt}>, relay={relay}, delay=0.6, delays=0.2/0/0.1/0.3, dsn=2.0.0, "
            "status=sent (250 2.0.0 Ok)",
        )
        w.emit(t + 0.7, "postfix/qmgr", 900, f"{qid}: removed")

    def login(self, t: float, user: str, ip: str, proto: str | None = None) -> None:
        proto = proto or self.rng.choice(("pop3", "imap"))
        pid, session = self.next_pid(), f"{self.rng.getrandbits(64):016x}"
        self.w.emit(
            t,
            "dovecot",
            700,
            f"{proto}-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid={pid}, TLS, "
            f"session=<{session}>",
        )
        self.w.emit(
            t + 2, "dovecot", 700, f"{proto}({user})<{pid}><{session}>: Disconnected: Logged out in=120 out=840"
        )

    def remote(self) -> str:
        return f"u{self.rng.randrange(100000)}@{self.rng.choice(REMOTE_DOMAINS)}"


def write_maillog(
    path: Path,
    mailboxes: Iterable[tuple[str, str | None]],
    legacy: Iterable[str] = (),
    sasl: Iterable[str] = (),
    *,
    start: datetime,
    span: timedelta,
    lines: int,
    seed: int = 0,
    host: str = "mx1",
    mix: str = "inbound",
) -> GroundTruth:
    """Write the log to ``path`` (overwritten) and return the ground truth (see the module doc)."""
    rng = random.Random(seed)
    boxes = [(a.lower(), (login or a).lower()) for a, login in mailboxes]
    login_of = dict(boxes)
    legacy_list, sasl_list = sorted(a.lower() for a in legacy), sorted(a.lower() for a in sasl)
    truth = GroundTruth()
    mix_weights, ipv6 = MIXES[mix]
    stories = list(mix_weights)
    weights = [mix_weights[s] if (s != "legacy" or legacy_list) and (s != "sasl" or sasl_list) else 0 for s in stories]
    mean_lines = sum(w * LINES_PER_STORY[s] for s, w in zip(stories, weights, strict=True)) / sum(weights)
    count = max(1, int(lines / mean_lines))
    step = span.total_seconds() / count
    t0 = start.timestamp()
    with open(path, "w", encoding="utf-8") as out:
        w = _Writer(out, host)
        story = _Story(w, rng, boxes, truth)
        story.sasl_boxes = [(a, login_of[a]) for a in sasl_list]
        story.ipv6 = ipv6
        if mix != "inbound":
            story.households = [
                (
                    story.fresh_ip("104"),
                    [login for _a, login in rng.sample(boxes, min(len(boxes), rng.choice((1, 1, 2))))],
                )
                for _ in range(HOUSEHOLDS)
            ]
        picks = rng.choices(stories, weights, k=count)
        legacy_turn = 0
        for i, kind in enumerate(picks):
            t = t0 + i * step
            if i % 64 == 0:
                w.advance(t)
            if kind == "legacy":
                address = legacy_list[legacy_turn % len(legacy_list)]
                legacy_turn += 1
                _legacy(story, t, address, login_of[address])
            else:
                _STORIES[kind](story, t)
        w.flush()
    truth.lines = w.lines
    truth.first, truth.last = start, datetime.fromtimestamp(t0 + count * step, UTC)
    return truth


def _inbound(s: _Story, t: float) -> None:
    address, _ = s.rng.choice(s.mailboxes)
    s.smtpd_message(t, s.fresh_ip("198"), s.remote(), address, "virtual", "virtual")


def _reject(s: _Story, t: float) -> None:
    ip, pid = s.fresh_ip("203"), s.next_pid()
    s.w.emit(t, "postfix/smtpd", pid, f"connect from unknown[{ip}]")
    s.w.emit(
        t,
        "postfix/smtpd",
        pid,
        f"NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 <{s.remote()}>: Relay access denied; "
        f"from=<{s.remote()}> to=<{s.remote()}> proto=ESMTP helo=<pc{pid}>",
    )
    s.w.emit(t + 0.1, "postfix/smtpd", pid, f"disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4")


def _sasl(s: _Story, t: float) -> None:
    address, login = s.rng.choice(s.sasl_boxes)
    s.smtpd_message(
        t,
        s.fresh_ip("101"),
        address,
        s.remote(),
        f"mx.{s.rng.choice(REMOTE_DOMAINS)}[192.0.2.9]:25",
        "smtp",
        sasl=login,
    )
    s.truth.auth[address] += 1


def _login(s: _Story, t: float) -> None:
    if s.households and s.rng.random() < 0.5:  # a mail client polling again from home
        ip, users = s.rng.choice(s.households)
        s.login(t, s.rng.choice(users), ip)
        return
    _address, login = s.rng.choice(s.mailboxes)
    s.login(t, login, s.fresh_ip("100"))


def _legacy(s: _Story, t: float, address: str, login: str) -> None:
    ip = s.fresh_ip("102")
    s.login(t, login, ip)
    sender = address if s.rng.random() < 0.8 else f"{address.partition('@')[0]}@other-domain.test"
    s.smtpd_message(
        t + s.rng.randrange(5, 600), ip, sender, s.remote(), f"mx.{s.rng.choice(REMOTE_DOMAINS)}[192.0.2.9]:25", "smtp"
    )
    s.truth.legacy[address] += 1


def _ambiguous(s: _Story, t: float) -> None:
    ip = s.fresh_ip("103")
    (_, first), (_, second) = s.rng.sample(s.mailboxes, 2) if len(s.mailboxes) > 1 else (s.mailboxes[0], s.mailboxes[0])
    s.login(t, first, ip)
    s.login(t + 3, second, ip)
    s.smtpd_message(t + 30, ip, f"office@shared-{s.ip_counter}.test", s.remote(), "mx.gmail.test[192.0.2.9]:25", "smtp")
    s.truth.ambiguous += 1 if first != second else 0


_STORIES = {"inbound": _inbound, "reject": _reject, "sasl": _sasl, "login": _login, "ambiguous": _ambiguous}
