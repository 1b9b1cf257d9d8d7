"""POP3/IMAP logins and session ends: Dovecot 1.x–2.4, Courier, Cyrus, UW (docs/detection.md §3, §5)."""

from __future__ import annotations

import re

from .events import Envelope, Event, Login, SessionEnd
from .net import normalise_ip
from .rules import (
    COURIER_PROGRAMS,
    CYRUS_DAEMONS,
    CYRUS_LOGIN,
    DOVECOT_END_SERVICES,
    DOVECOT_END_VERBS,
    DOVECOT_INFO,
    DOVECOT_LOGIN_SERVICES,
    DOVECOT_LOGIN_VERBS,
    UW_PROGRAMS,
    alternatives,
)

_INFO = f"(?:{re.escape(DOVECOT_INFO)})?"
DOVECOT_LOGIN = (
    rf"(?P<svc>{alternatives(DOVECOT_LOGIN_SERVICES)})-login: "
    rf"{_INFO}(?P<verb>{alternatives(DOVECOT_LOGIN_VERBS)}): (?P<elems>.*)"
)
_DOVECOT_LOGIN = re.compile(DOVECOT_LOGIN)
_DOVECOT_FAILED = re.compile(
    rf"{alternatives(DOVECOT_LOGIN_SERVICES)}-login: {_INFO}(?:Disconnected|Aborted login|Login aborted)"
)
DOVECOT_END = (
    rf"(?P<svc>{alternatives(DOVECOT_END_SERVICES)})\((?P<user>[^)]*)\)(?:<(?P<pid>\d+)>)?(?:<(?P<session>[^>]*)>)?: "
    rf"{_INFO}(?:session=<?(?P<session2>[^ >]*)>? )?{alternatives(DOVECOT_END_VERBS)}"
)
_DOVECOT_END = re.compile(DOVECOT_END)
_ELEMENT = re.compile(r"(\w+)=(<[^>]*>|[^,]*)")

_COURIER = re.compile(
    r"(?P<what>LOGIN|LOGOUT|TIMEOUT|DISCONNECTED), user=(?P<user>[^,]+), ip=\[(?P<ip>[^\]]*)\](?:, .*)?"
)
_CYRUS = re.compile(re.escape(CYRUS_LOGIN) + r"(?:\S+ )?\[(?P<ip>[^\]]+)\] (?P<user>\S+) \S+ User logged in(?: .*)?")
_UW = re.compile(
    r"(?P<what>Login|Authenticated|Auth|APOP|Logout|Autologout|Killed) "
    r"user=(?P<user>\S+) host=(?:\S+ )?\[(?P<ip>[^\]]+)\](?: .*)?"
)


def parse_dovecot(env: Envelope, file: str, offset: int, line: str) -> Event | str:
    msg = env.message
    if msg.startswith(DOVECOT_INFO):  # Dovecot 1.x "dovecot: … Info: imap-login: …"
        msg = msg[len(DOVECOT_INFO) :]
    m = _DOVECOT_LOGIN.fullmatch(msg)
    if m is not None:
        el = {k: v[1:-1] if v.startswith("<") else v for k, v in _ELEMENT.findall(m["elems"])}
        ip = normalise_ip(el.get("rip", ""))
        user = el.get("user", "")
        if ip is None or not user:
            return "login-unusable"
        return Login(env.t, env.host, file, offset, line, m["svc"], user, ip, el.get("session") or None, el.get("mpid"))
    if _DOVECOT_FAILED.match(msg):
        return "login-failed"
    e = _DOVECOT_END.match(msg)
    if e is not None:
        return SessionEnd(
            env.t, env.host, file, offset, line, e["svc"].lower(), e["user"], e["session"] or e["session2"], e["pid"]
        )
    return "dovecot"


def parse_other_imapd(env: Envelope, file: str, offset: int, line: str) -> Event | str | None:
    """Courier, Cyrus and UW servers; None when the program is none of them."""
    prog = env.program
    daemon = prog.rpartition("/")[2]
    if prog in COURIER_PROGRAMS:
        m = _COURIER.fullmatch(env.message)
        if m is not None:
            return _login_or_end(
                env, m["what"] == "LOGIN", COURIER_PROGRAMS[prog], m["user"], m["ip"], file, offset, line
            )
    if prog in UW_PROGRAMS:
        m = _UW.fullmatch(env.message)
        if m is not None:
            is_login = m["what"] in ("Login", "Authenticated", "Auth", "APOP")
            return _login_or_end(env, is_login, UW_PROGRAMS[prog], m["user"], m["ip"], file, offset, line)
    if (daemon in CYRUS_DAEMONS and ("/" in prog or prog == daemon)) or (
        "/" in prog and env.message.startswith(CYRUS_LOGIN)
    ):
        # Cyrus logs as "prefix/service", and a site names its services itself (cyrus.conf: "imapmail", "pop3s-int");
        # under a name of its own a Cyrus login is known by its message
        m = _CYRUS.fullmatch(env.message)
        if m is not None:
            user = m["user"].split("+", 1)[0]
            return _login_or_end(env, True, _cyrus_protocol(daemon), user, m["ip"], file, offset, line)
    if prog in COURIER_PROGRAMS or prog in UW_PROGRAMS or daemon in CYRUS_DAEMONS:
        return "imapd"
    return None


def _cyrus_protocol(service: str) -> str:
    return CYRUS_DAEMONS.get(service) or ("pop3" if "pop" in service else "imap")


def _login_or_end(
    env: Envelope, is_login: bool, proto: str, user: str, raw_ip: str, file: str, offset: int, line: str
) -> Event | str:
    if not is_login:
        return SessionEnd(env.t, env.host, file, offset, line, proto, user, None, env.pid)
    ip = normalise_ip(raw_ip)
    if ip is None:
        return "login-unusable"
    return Login(env.t, env.host, file, offset, line, proto, user, ip, None, env.pid)
