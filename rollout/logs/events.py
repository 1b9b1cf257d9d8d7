"""The typed events the parsers produce; times are UTC seconds since the epoch (floats are cheap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


@dataclass(slots=True)
class Envelope:
    """A syslog-ish line split up: the message is only interpreted in the light of ``program``."""

    t: float
    host: str
    program: str
    pid: str | None
    message: str


@dataclass(slots=True)
class Event:
    """Common part: when, where, and the raw line with its file and byte offset (evidence)."""

    t: float
    host: str
    file: str
    offset: int
    line: str


@dataclass(slots=True)
class Login(Event):
    """A successful POP3/IMAP login: the thing that opened the legacy relay window."""

    proto: str
    user: str
    ip: str
    session: str | None = None
    pid: str | None = None
    ended: float | None = None  # the session's end, when a worker found it in the same block


@dataclass(slots=True)
class SessionEnd(Event):
    """A POP3/IMAP session ended (logout, disconnect)."""

    proto: str
    user: str
    session: str | None = None
    pid: str | None = None


@dataclass(slots=True)
class Accept(Event):
    """A message was accepted into the queue (Postfix ``client=``, Exim ``<=``)."""

    instance: str
    qid: str
    client_ip: str | None  # None: local submission (pickup, Exim P=local)
    sasl_user: str | None = None
    authenticated: bool = False
    orig_client_ip: str | None = None
    orig_qid: str | None = None
    sender: str | None = None  # Exim has it on the same line


@dataclass(slots=True)
class Sender(Event):
    """Postfix qmgr ``from=``: the envelope sender of a queued message."""

    instance: str
    qid: str
    sender: str


@dataclass(slots=True)
class Delivery(Event):
    """One recipient delivered, deferred or bounced by some transport."""

    instance: str
    qid: str
    rcpt: str
    orig_to: str | None
    daemon: str
    relay: str
    status: str
    queued_as: str | None = None


@dataclass(slots=True)
class Removed(Event):
    """The message left the queue (Postfix ``removed``, Exim ``Completed``)."""

    instance: str
    qid: str


@dataclass(slots=True)
class NoticeQueued(Event):
    """Postfix cleanup ``QID: message-id=<rollout.…>``: one of our own notices entered the provider's queue."""

    instance: str
    qid: str
    message_id: str  # with its angle brackets, as the ledger has it


@dataclass(slots=True)
class Expired(Event):
    """Postfix qmgr ``QID: from=<…>, status=expired, returned to sender``: the queue gave the message up."""

    instance: str
    qid: str


@dataclass(slots=True)
class AuthFailure(Event):
    """SMTP AUTH failed for a client (Postfix ``SASL … authentication failed``)."""

    client_ip: str | None


@dataclass(slots=True)
class Refusal(Event):
    """An SMTP refusal or warning: relay denied, or our own sender map (``reason='map'``)."""

    action: str  # reject | reject_warning | warn | defer
    reason: str  # relay | map | other
    client_ip: str | None
    sender: str | None
    rcpt: str | None
    text: str
    map_address: str | None = None  # {address} of our reject text, when it is ours


@dataclass(slots=True)
class CompleteMessage(Event):
    """A message whose lines all lay in one block, already joined (by a worker): judged at its removal.

    ``message`` is the dict ``detection.Detector`` builds from Accept, Sender, Delivery
    and Removed; ``t``, ``file``, ``offset`` and ``line`` are those of the removal.
    """

    instance: str
    qid: str
    message: dict[str, Any]  # a join.Message


@dataclass(slots=True)
class AuthCounts(Event):
    """Authenticated submissions whole in one block, counted there (by the C classifier) rather than itemised.

    ``counts`` maps (SASL user lower-cased, or None; UTC day number) to [count, last
    acceptance time], as ``detection.Detector`` counts the messages it judges itself.
    Not one line: ``t`` is the last acceptance, ``offset`` the block's and ``line`` empty.
    """

    counts: dict[tuple[str | None, int], list[float]]


@dataclass(slots=True)
class LoginRecord:
    """What the detector remembers of a login (its window): ``detection.Detector.logins`` holds these by address.

    ``user`` is lower-cased; ``ended`` is the session's end once known; ``key`` the session
    key while the session is open (``join.session_key``), None once it has ended or when it
    has none; ``file``, ``offset`` and ``line`` are the evidence.
    """

    t: float
    user: str
    ended: float | None
    key: str | None
    file: str
    offset: int
    line: str


@dataclass(slots=True)
class LoginRun(Event):
    """Consecutive logins of one host from untrusted addresses, each ended within its block: the C classifier
    builds their records itself, so the detector only files them.

    ``t`` is the earliest login and ``last`` the latest; ``logins`` holds their records
    and, in their place, the host's relay refusals read in between (the classifier's
    compact Refusal, so the run goes on), ``ips`` their addresses (None for a refusal),
    ``keys`` their session keys, a line each (empty: none), and ``users`` the users as
    logged (None for one in lower case already; the list is None when all are). Not one
    line: ``offset`` is the first login's and ``line`` is empty.
    """

    last: float
    logins: list[Any]  # LoginRecord, or the classifier's Refusal
    ips: list[str | None]
    keys: str
    users: list[str | None] | None


PlainLoginRecord = LoginRecord  # the reference (tests/test_linescan.py compares the compact one with it)
# The same record, compact (its times and line held as C values): one object per login the detector keeps.
# For the type checker LoginRecord stays the dataclass: the compact one has its fields and constructor
# (_linescan.pyi), and a name that is one class or the other at run time is no type it can check.
if not TYPE_CHECKING:
    try:
        from . import _linescan, native

        if native.current(_linescan):
            LoginRecord = _linescan.LoginRecord
    except ImportError:  # built without a C compiler: the dataclass above
        pass
