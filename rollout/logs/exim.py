"""Exim main log (docs/detection.md §4): arrivals, deliveries, completion, relay refusals.

Much of an Exim line is written by the other side: the envelope sender and recipients (which may hold
quoted spaces), the HELO name, the Message-ID (``id=``), the subject (``T=``) and a remote server's
reply (``C=``). So a line is read as tokens (a quoted or parenthesised stretch is part of its token, however
many spaces it holds), each field only from the part of the line where Exim writes it (the first
occurrence; reading stops at the first free-text field), and the client address is the last bracketed
address of ``H=``. Every pattern is linear in the line length: no nested repetition can backtrack.
"""

from __future__ import annotations

import re

from .events import Accept, Delivery, Envelope, Event, Refusal, Removed
from .net import normalise_ip

_LINE = re.compile(
    r"(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) "
    r"(?P<flag><=|=>|->|>>|\*\*|==|Completed)(?: (?P<rest>.*))?"
)
# A token: plain characters, "quoted" stretches (backslash escapes) and (parenthesised) stretches. An open quote
# or parenthesis runs to the end of the line, so no attempt ever fails after scanning ahead.
_TOKEN = re.compile(r'(?:[^\s"(]++|"(?:[^"\\]++|\\.?)*+(?:"|$)|\([^)]*+(?:\)|$))++')
_KEY = re.compile(r"([A-Za-z0-9]{1,4})=")
_BRACKETED_IP = re.compile(r"\[([0-9A-Fa-f:.]{2,45})\](?::\d{1,5})?")
# Fields after these are free text (size, Message-ID, subject, a remote reply, queue times): never read.
_ARRIVAL_END = frozenset({"S", "id", "T", "M8S", "RT"})
_DELIVERY_END = frozenset({"C", "QT", "DT", "S"})
_STATUS = {"=>": "sent", "->": "sent", ">>": "sent", "**": "bounced", "==": "deferred"}
_RELAY_DENIED = ": relay not permitted"
INSTANCE = "exim"


def parse_exim(env: Envelope, file: str, offset: int, line: str) -> Event | str:
    m = _LINE.fullmatch(env.message)
    if m is None:
        refusal = _relay_denied(env.message) if env.message.endswith(_RELAY_DENIED) else None
        if refusal is None:
            return "exim"
        ip, sender, rcpt = refusal
        return Refusal(env.t, env.host, file, offset, line, "reject", "relay", ip, sender, rcpt, "relay not permitted")
    qid, flag, rest = m["id"], m["flag"], m["rest"] or ""
    if flag == "Completed":
        return Removed(env.t, env.host, file, offset, line, INSTANCE, qid)
    if flag == "<=":
        return _arrival(env, qid, rest, file, offset, line)
    return _delivery(env, qid, flag, rest, file, offset, line)


def _tokens(text: str) -> list[tuple[str, int]]:
    """The line's tokens with where each ends."""
    return [(t[0], t.end()) for t in _TOKEN.finditer(text)]


def _fields(tokens: list[tuple[str, int]], stop: frozenset[str]) -> tuple[dict[str, str], str | None]:
    """``KEY=value`` fields up to the first free-text one (first occurrence wins) and the client IP of ``H=``.

    Tokens after ``H=value`` that are not fields themselves (``(helo)``, ``[ip]:port``) belong to H.
    """
    fields: dict[str, str] = {}
    ip: str | None = None
    in_host = False
    for token, _end in tokens:
        k = _KEY.match(token)
        if k is None:
            if in_host and (b := _BRACKETED_IP.fullmatch(token)):
                ip = b[1]  # the last bracketed address of H= is the client; a bracketed HELO comes before it
            continue
        key, value = k[1], token[k.end() :]
        if key in stop:
            break
        in_host = key == "H" and "H" not in fields
        if in_host and (b := _BRACKETED_IP.fullmatch(value)):
            ip = b[1]
        fields.setdefault(key, value)
    return fields, normalise_ip(ip) if ip else None


def _arrival(env: Envelope, qid: str, rest: str, file: str, offset: int, line: str) -> Accept:
    tokens = _tokens(rest)
    sender = tokens[0][0] if tokens else ""
    fields, ip = _fields(tokens[1:], _ARRIVAL_END)
    proto = fields.get("P", "")
    auth = fields.get("A")
    authenticated = auth is not None or proto.endswith("a")
    user = auth.split(":")[1] if auth and auth.count(":") >= 1 else None
    return Accept(
        env.t,
        env.host,
        file,
        offset,
        line,
        INSTANCE,
        qid,
        ip,
        sasl_user=user,
        authenticated=authenticated,
        sender="" if sender == "<>" else sender,
    )


def _delivery(env: Envelope, qid: str, flag: str, rest: str, file: str, offset: int, line: str) -> Event | str:
    tokens = _tokens(rest)
    if not tokens:
        return "exim"
    rcpt, parent, i = tokens[0][0], None, 1
    if i < len(tokens) and tokens[i][0].startswith("("):
        i += 1  # (original address) of a pipe or file delivery
    if i < len(tokens) and tokens[i][0].startswith("<") and tokens[i][0].endswith(">"):
        parent = tokens[i][0][1:-1] or None
        i += 1
    fields, _ip = _fields(tokens[i:], _DELIVERY_END)
    transport = fields.get("T", "")
    remote = "smtp" in transport and "H" in fields
    return Delivery(
        env.t,
        env.host,
        file,
        offset,
        line,
        INSTANCE,
        qid,
        rcpt,
        parent,
        "smtp" if remote else transport or "exim",
        fields.get("H", "none"),
        _STATUS[flag],
    )


def _relay_denied(message: str) -> tuple[str | None, str | None, str] | None:
    """``H=… [I=…] [U=…] F=<sender> rejected RCPT <rcpt>: relay not permitted`` → (ip, sender, rcpt)."""
    tokens = _tokens(message[: -len(_RELAY_DENIED)])
    for n, (token, _end) in enumerate(tokens):
        if token == "rejected" and n + 2 < len(tokens) and tokens[n + 1][0] == "RCPT":
            fields, ip = _fields(tokens[:n], frozenset())
            if "H" not in fields:
                return None
            rcpt = message[tokens[n + 1][1] : -len(_RELAY_DENIED)].strip()
            sender = fields.get("F", "").removeprefix("<").removesuffix(">")
            return ip, sender or None, rcpt.removeprefix("<").removesuffix(">")
    return None
