"""Exim main log (docs/detection.md §4): arrivals, deliveries, completion, relay refusals."""

from __future__ import annotations

import re

from .events import Accept, Delivery, Envelope, Event, Refusal, Removed
from .net import normalise_ip

_LINE = re.compile(
    r"(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) (?P<flag><=|=>|->|>>|\*\*|==|Completed)(?: (?P<rest>.*))?"
)
_HOST_IP = re.compile(r"(?:^| )H=.*?\[(?P<ip>[0-9A-Fa-f:.]+)\]")
_FIELD = re.compile(r" (?P<key>[A-Z]{1,2})=(?P<value>\S+)")
_DELIVERY = re.compile(r"(?P<rcpt>\S+)(?: \((?P<paren>[^)]*)\))?(?: <(?P<parent>[^>]+)>)?(?P<fields> .*)?")
_RELAY_DENIED = re.compile(r"H=.*?\[(?P<ip>[0-9A-Fa-f:.]+)\].*? F=<?(?P<from>[^> ]*)>? rejected RCPT <?(?P<to>[^>: ]+)>?: relay not permitted")
INSTANCE = "exim"


def parse_exim(env: Envelope, file: str, offset: int, line: str) -> Event | str:
    m = _LINE.fullmatch(env.message)
    if m is None:
        r = _RELAY_DENIED.search(env.message) if "relay not permitted" in env.message[-30:] else None
        if r is not None:
            return Refusal(env.t, env.host, file, offset, line, "reject", "relay", normalise_ip(r["ip"]), r["from"] or None, r["to"], "relay not permitted")
        return "exim"
    qid, flag, rest = m["id"], m["flag"], m["rest"] or ""
    if flag == "Completed":
        return Removed(env.t, env.host, file, offset, line, INSTANCE, qid)
    if flag == "<=":
        return _arrival(env, qid, rest, file, offset, line)
    d = _DELIVERY.fullmatch(rest)
    if d is None:
        return "exim"
    fields = dict(f.groups() for f in _FIELD.finditer(d["fields"] or ""))
    transport = fields.get("T", "")
    status = {"=>": "sent", "->": "sent", ">>": "sent", "**": "bounced", "==": "deferred"}[flag]
    remote = "smtp" in transport and "H" in fields
    return Delivery(
        env.t, env.host, file, offset, line, INSTANCE, qid, d["rcpt"], d["parent"], "smtp" if remote else transport or "exim",
        fields.get("H", "none"), status,
    )


def _arrival(env: Envelope, qid: str, rest: str, file: str, offset: int, line: str) -> Accept:
    sender, _, fields_text = rest.partition(" ")
    fields = dict(f.groups() for f in _FIELD.finditer(" " + fields_text))
    proto = fields.get("P", "")
    auth = fields.get("A")
    h = _HOST_IP.search(fields_text)
    ip = normalise_ip(h["ip"]) if h else None
    authenticated = auth is not None or proto.endswith("a")
    user = auth.split(":")[1] if auth and auth.count(":") >= 1 else None
    return Accept(
        env.t, env.host, file, offset, line, INSTANCE, qid, ip, sasl_user=user, authenticated=authenticated,
        sender="" if sender == "<>" else sender,
    )
