"""Logins seen by a POP3/IMAP proxy: nginx's mail proxy and perdition (docs/detection.md §5, P18).

Behind a proxy the mail server logs the proxy's address as the client (Dovecot's
``rip``); the customer's own address, the one that later relays, is only in the
proxy's log. Put the proxies in ``scan.trusted_networks`` (their backend logins then
open no window) and scan the proxy's log too: its logins are the ones that count.
"""

from __future__ import annotations

import re

from .events import Envelope, Event, Login, SessionEnd
from .net import normalise_ip

# the service behind a port, for nginx, whose log does not name the protocol
MAIL_PORTS = {"110": "pop3", "995": "pop3", "143": "imap", "993": "imap"}

_NGINX_PREFIX = re.compile(r"(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d )?(?:\[[a-z]+\] \d+#\d+: )?\*(?P<cid>\d+) (?P<msg>.*)")
_NGINX_EVENT = re.compile(r"(?P<what>client logged in|proxied session done), (?P<elems>.*)")
_NGINX_ELEMENT = re.compile(r'(?P<key>client|server|login|upstream): (?P<value>"(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)')
_PERDITION = re.compile(r"Auth: (?P<client>\S+)->(?P<local>\S+) (?P<elems>.*)")
_PERDITION_ELEMENT = re.compile(r'(?P<key>\w+)=(?P<value>"(?:[^"\\]|\\.)*"|\S*)')
PERDITION_PROTOCOLS = {"POP3": "pop3", "POP3S": "pop3", "IMAP4": "imap", "IMAP4S": "imap"}


def parse_nginx(env: Envelope, file: str, offset: int, line: str) -> Event | str:
    """``client logged in`` (a login) and ``proxied session done`` (its end) of a POP3/IMAP session."""
    m = _NGINX_PREFIX.fullmatch(env.message)
    event = _NGINX_EVENT.fullmatch(m["msg"]) if m is not None else None
    if m is None or event is None:
        return "nginx"
    elements = {e["key"]: _unquote(e["value"]) for e in _NGINX_ELEMENT.finditer(event["elems"])}
    proto = _mail_service(elements.get("upstream"), elements.get("server"))
    user = elements.get("login")
    if proto is None or not user:
        return "proxy-other"  # SMTP, or a port that names no POP3/IMAP service
    session = f"nginx-{m['cid']}"
    if event["what"] == "proxied session done":
        return SessionEnd(env.t, env.host, file, offset, line, proto, user, session, None)
    ip = normalise_ip(elements.get("client", "").split(" ", 1)[0])  # "1.2.3.4 using starttls"
    if ip is None:
        return "login-unusable"
    return Login(env.t, env.host, file, offset, line, proto, user, ip, session, None)


def parse_perdition(env: Envelope, file: str, offset: int, line: str) -> Event | str:
    """``Auth: client:port->server:port … status="ok"``: a successful login (anything else is counted)."""
    m = _PERDITION.fullmatch(env.message)
    if m is None:
        return "perdition"
    elements = {e["key"]: _unquote(e["value"]) for e in _PERDITION_ELEMENT.finditer(m["elems"])}
    if elements.get("status") != "ok":
        return "login-failed"
    proto = PERDITION_PROTOCOLS.get(elements.get("protocol", "").upper())
    authorised = elements.get("authorisation_id")
    user = authorised if authorised and authorised != "NONE" else elements.get("authentication_id")
    ip = normalise_ip(_host_of(m["client"]))
    if proto is None or not user or ip is None:
        return "login-unusable"
    return Login(env.t, env.host, file, offset, line, proto, user, ip, None, env.pid)


def _mail_service(*addresses: str | None) -> str | None:
    for address in addresses:
        if address:
            service = MAIL_PORTS.get(address.rpartition(":")[2])
            if service is not None:
                return service
    return None


def _host_of(address: str) -> str:
    """ "1.2.3.4:5678" or "[2001:db8::1]:5678" → the address."""
    host = address.rpartition(":")[0] if address.count(":") == 1 or address.startswith("[") else address
    return host.strip("[]")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
