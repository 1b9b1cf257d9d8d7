"""Postfix messages (docs/detection.md §2), by daemon; anchored at the start, fields parsed as key=value."""

from __future__ import annotations

import re
from collections.abc import Callable

from .deliveries import EXPIRED, notice_queued
from .events import Accept, AuthFailure, Delivery, Envelope, Event, Expired, Refusal, Removed, Sender
from .net import client_ip, normalise_ip
from .rules import (
    CLEANUP,
    DELIVERY_DAEMONS,
    DELIVERY_TO,
    PICKUP,
    QMGR,
    QMGR_REMOVED,
    QUEUE_ACTIVE,
    QUEUED_AS,
    REMOTE_DAEMONS,
    SENDER_FIELDS,
    SMTPD,
    SMTPD_SESSION,
    WARNING,
    alternatives,
)

QID = r"(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,})"
_QUEUED = re.compile(QID + r": (?P<rest>.*)")
REFUSAL = (
    r"(?:NOQUEUE|[0-9A-Za-z]{6,}): (?P<action>reject|reject_warning|warn|milter-reject|discard|hold): "
    r"(?P<stage>[A-Z-]+) from (?P<client>\S+?): (?P<text>.*); from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)>"
    r" proto=\S+ helo=<[^>]*>(?: .*)?"
)
_REFUSAL = re.compile(REFUSAL)
_REPLY = re.compile(r"(?P<code>\d{3})(?: (?P<dsn>\d\.\d{1,3}\.\d{1,3}))? (?P<rest>.*)")
_DELIVERY = re.compile(
    re.escape(DELIVERY_TO)
    + r"<?(?P<to>[^>,]*)>?, (?:orig_to=<?(?P<orig>[^>,]*)>?, )?relay=(?P<relay>[^,]+), (?P<fields>.*)"
)
_STATUS = re.compile(r"status=(?P<status>[a-z-]+)(?: \((?P<text>.*)\))?")
_QUEUED_AS = re.compile(re.escape(QUEUED_AS) + r" (?P<qid>[0-9A-Za-z]+)\)?")
_FROM = re.compile(r"from=<(?P<from>[^>]*)>, " + alternatives(SENDER_FIELDS) + "=")
_PICKUP = re.compile(r"uid=\d+ from=<(?P<from>[^>]*)>")
_SASL_FAILED = re.compile(r"warning: (?P<client>\S+?\[[^\]]*\](?::\d+)?): SASL \S+ authentication failed(?::.*)?")


def split_program(program: str) -> tuple[str, str] | None:
    """``postfix/submission/smtpd`` → (``postfix``, ``smtpd``); None if not Postfix.

    The instance is the first part only: a master.cf service's ``syslog_name``
    (``postfix/submission``) shares the instance's queue, so its ``client=`` line must
    join the ``postfix/qmgr`` lines of the same queue ID; ``postfix-out/…`` is another
    instance with its own queue.
    """
    head, sep, daemon = program.rpartition("/")
    if not sep or not head.startswith("postfix"):
        return None
    return head.split("/", 1)[0], daemon


class PostfixParser:
    """Turns Postfix messages into events; ``our_text`` recognises our own sender-map refusals."""

    def __init__(self, our_text: Callable[[str], str | None]) -> None:
        self.our_text = our_text

    def parse(self, env: Envelope, instance: str, daemon: str, file: str, offset: int, line: str) -> Event | str:
        """The event, or the kind of line as a string (for the summary's counts)."""
        msg = env.message
        if daemon == SMTPD:
            return self._smtpd(env, instance, msg, file, offset, line)
        m = _QUEUED.match(msg)
        if m is None:
            return f"postfix-{daemon}"
        qid, rest = m["qid"], m["rest"]
        if daemon == QMGR:
            if rest == QMGR_REMOVED:
                return Removed(env.t, env.host, file, offset, line, instance, qid)
            if EXPIRED in rest:
                return Expired(env.t, env.host, file, offset, line, instance, qid)
            f = _FROM.match(rest)
            if f is not None and rest.endswith(QUEUE_ACTIVE):
                return Sender(env.t, env.host, file, offset, line, instance, qid, f["from"])
            return "postfix-qmgr"
        if daemon in DELIVERY_DAEMONS:
            return _delivery(env, instance, daemon, qid, rest, file, offset, line)
        if daemon == CLEANUP:
            return notice_queued(env, instance, qid, rest, file, offset, line) or "postfix-cleanup"
        if daemon == PICKUP:
            p = _PICKUP.match(rest)
            if p is not None:
                return Accept(env.t, env.host, file, offset, line, instance, qid, None, sender=p["from"])
        return f"postfix-{daemon}"

    def _smtpd(self, env: Envelope, instance: str, msg: str, file: str, offset: int, line: str) -> Event | str:
        if msg.startswith(WARNING):
            m = _SASL_FAILED.fullmatch(msg)
            if m is not None:
                return AuthFailure(env.t, env.host, file, offset, line, client_ip(m["client"]))
            return "postfix-smtpd-session"
        if msg.startswith(SMTPD_SESSION):
            return "postfix-smtpd-session"
        if " client=" in msg[:40]:
            m = _QUEUED.match(msg)
            if m is not None and m["rest"].startswith("client="):
                return _accept(env, instance, m["qid"], m["rest"], file, offset, line)
        m = _REFUSAL.fullmatch(msg)
        if m is not None:
            return self._refusal(env, m, file, offset, line)
        return "postfix-smtpd"

    def _refusal(self, env: Envelope, m: re.Match[str], file: str, offset: int, line: str) -> Event | str:
        action, text = m["action"], m["text"]
        ip = client_ip(m["client"])
        reason, map_address = "other", None
        reply = _REPLY.fullmatch(text)
        if reply is not None:
            if reply["code"].startswith("4") and action == "reject":
                action = "defer"
            rest = reply["rest"]
            if rest.endswith(": Relay access denied"):
                reason = "relay"
            elif ": Sender address rejected: " in rest:
                map_address = self.our_text(rest.split(": Sender address rejected: ", 1)[1])
                reason = "map" if map_address is not None else "other"
        elif action == "warn":
            map_address = self.our_text(text)
            reason = "map" if map_address is not None else "other"
        if reason == "other":
            return "postfix-refusal"
        return Refusal(
            env.t,
            env.host,
            file,
            offset,
            line,
            action,
            reason,
            ip,
            m["from"] or None,
            m["to"] or None,
            text,
            map_address,
        )


def _accept(env: Envelope, instance: str, qid: str, rest: str, file: str, offset: int, line: str) -> Accept:
    fields = _fields(rest)
    ip = client_ip(fields.get("client", ""))
    sasl_user = fields.get("sasl_username")
    authenticated = "sasl_method" in fields or sasl_user is not None
    orig = fields.get("orig_client")
    return Accept(
        env.t,
        env.host,
        file,
        offset,
        line,
        instance,
        qid,
        ip,
        sasl_user=sasl_user,
        authenticated=authenticated,
        orig_client_ip=client_ip(orig) if orig else None,
        orig_qid=fields.get("orig_queue_id"),
    )


def _fields(rest: str) -> dict[str, str]:
    """``client=h[ip], sasl_method=PLAIN, sasl_username=u`` → a dict (client host may not contain ', ')."""
    out: dict[str, str] = {}
    for part in rest.split(", "):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def _delivery(
    env: Envelope, instance: str, daemon: str, qid: str, rest: str, file: str, offset: int, line: str
) -> Event | str:
    m = _DELIVERY.match(rest)
    if m is None:
        return f"postfix-{daemon}"
    s = _STATUS.search(m["fields"])
    if s is None:
        return f"postfix-{daemon}"
    queued = _QUEUED_AS.search(s["text"] or "")
    if queued is None and daemon not in REMOTE_DAEMONS:
        return f"postfix-{daemon}"  # a local delivery: neither relaying nor a content-filter hop
    return Delivery(
        env.t,
        env.host,
        file,
        offset,
        line,
        instance,
        qid,
        m["to"],
        m["orig"] or None,
        daemon,
        m["relay"],
        s["status"],
        queued["qid"] if queued else None,
    )


__all__ = ["PostfixParser", "split_program", "normalise_ip"]
