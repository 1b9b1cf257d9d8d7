"""Our own notices in the provider MTA's log: found by Message-ID, followed to their outcome. Pure: no database.

A notice leaves through the provider's own MTA, so its log says what became of it:

* Postfix: ``cleanup[…]: QID: message-id=<rollout.…>`` names the queue ID; then that queue ID's
  ``to=<…>, …, status=sent|bounced|deferred (reply)`` lines, ``qmgr: QID: from=<…>, status=expired,
  returned to sender`` and ``qmgr: QID: removed``;
* Exim: ``ID <= sender … id=rollout.…`` names the message ID; then ``ID => rcpt …`` (delivered),
  ``ID ** rcpt …: reply`` (bounced), ``ID == rcpt …: reply`` (deferred) and ``ID Completed``.

``DeliveryTracker`` is fed the scan's events in time order and keeps, per notice, the latest state:
``delivered``, ``bounced`` (with the remote reply) or ``delayed``. A queue ID seen in an earlier scan
whose notice is not settled yet is handed in again, so a notice queued in one scan and delivered in
the next is still followed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .events import Accept, Delivery, Envelope, Event, Expired, NoticeQueued, Removed
from .rules import NOTICE_MESSAGE_ID, QMGR_EXPIRED

PREFIX = NOTICE_MESSAGE_ID  # notices.message_id: every notice's Message-ID starts so
EXPIRED = QMGR_EXPIRED
DELIVERED, BOUNCED, DELAYED = "delivered", "bounced", "delayed"
FINAL = frozenset({DELIVERED, BOUNCED})
_STATES = {"sent": DELIVERED, "bounced": BOUNCED, "deferred": DELAYED, "expired": BOUNCED}
_POSTFIX_REPLY = re.compile(r", status=[a-z-]+ \((?P<reply>.*)\)\s*$")
_EXIM_REPLY = re.compile(r" (?:\*\*|==) \S+ .*?: (?P<reply>.*?)\s*$")
_EXIM_ID = re.compile(r" id=(?P<id>rollout\.\S+)")
_PERMANENT = re.compile(r"(?:^|[\s(])5\d\d(?:[\s-]|$)|\b5\.\d{1,3}\.\d{1,3}\b")


def notice_queued(
    env: Envelope, instance: str, qid: str, rest: str, file: str, offset: int, line: str
) -> NoticeQueued | None:
    """Postfix cleanup's ``message-id=<rollout.…>`` (``rest`` follows the queue ID), else None."""
    if not rest.startswith(PREFIX) or not rest.endswith(">"):
        return None
    return NoticeQueued(env.t, env.host, file, offset, line, instance, qid, rest[len("message-id=") :])


def names_a_notice(e: Event) -> bool:
    """The event that names one of our notices (Postfix cleanup, Exim arrival): its message is followed line by line."""
    return isinstance(e, NoticeQueued) or (isinstance(e, Accept) and e.instance == "exim" and " id=rollout." in e.line)


def permanent(reply: str | None) -> bool:
    """A 5xx reply (or a 5.x.x status code): the address will not take mail; later waves do not retry it."""
    return bool(reply) and _PERMANENT.search(reply or "") is not None


@dataclass
class Outcome:
    """What the log says of one notice so far."""

    message_id: str
    queue_key: str  # host|instance|queue ID
    state: str | None = None  # delivered | bounced | delayed; None: queued, nothing more seen yet
    reply: str | None = None
    at: float | None = None


class DeliveryTracker:
    """Follows our notices through the events of a scan; ``outcomes`` holds what was learnt, by Message-ID."""

    def __init__(self, open_queue_keys: Mapping[str, str] | None = None) -> None:
        self.queued: dict[str, Outcome] = {key: Outcome(mid, key) for key, mid in (open_queue_keys or {}).items()}
        self.outcomes: dict[str, Outcome] = {}

    def feed(self, events: Iterable[Event]) -> None:
        queued = self.queued
        for e in events:
            # every event of a scan passes here: identity tests on the class first (cheap), the
            # isinstance narrowing (for the types) only for the few events that concern us
            cls = e.__class__
            if cls is Delivery or cls is Removed or cls is Expired:
                if queued:
                    assert isinstance(e, (Delivery, Removed, Expired))
                    outcome = queued.get(f"{e.host}|{e.instance}|{e.qid}")
                    if outcome is not None:
                        self._settle(outcome, e)
            elif cls is NoticeQueued:
                assert isinstance(e, NoticeQueued)
                self._queued(e.message_id, f"{e.host}|{e.instance}|{e.qid}")
            elif cls is Accept:
                assert isinstance(e, Accept)
                if e.instance == "exim" and " id=rollout." in e.line:
                    m = _EXIM_ID.search(e.line)
                    if m is not None:
                        self._queued(f"<{m['id']}>", f"{e.host}|{e.instance}|{e.qid}")

    def _queued(self, message_id: str, key: str) -> None:
        outcome = self.queued[key] = Outcome(message_id, key)
        self.outcomes[message_id] = outcome  # a notice queued again (a resend) is followed from its new queue ID

    def _settle(self, outcome: Outcome, e: Event) -> None:
        self.outcomes[outcome.message_id] = outcome
        if isinstance(e, Removed):
            self.queued.pop(outcome.queue_key, None)
            return
        state: str | None
        reply: str | None
        if isinstance(e, Expired):
            state, reply = BOUNCED, "expired: the provider's queue gave up and returned it to the sender"
        else:
            assert isinstance(e, Delivery)
            state, reply = _STATES.get(e.status), _reply(e)
        if state is None or (outcome.state in FINAL and state == DELAYED):
            return  # a deferral logged after the outcome (another recipient) does not undo it
        outcome.state, outcome.reply, outcome.at = state, reply if state != DELIVERED else None, e.t


def _reply(e: Delivery) -> str | None:
    m = (_EXIM_REPLY if e.instance == "exim" else _POSTFIX_REPLY).search(e.line)
    return m["reply"] if m else None
