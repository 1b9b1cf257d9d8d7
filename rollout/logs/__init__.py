"""Mail logs → typed events. Pure: no database, no printing.

``envelope`` splits a line into time, host, program and message; the per-daemon
modules (``postfix``, ``dovecot``, ``imapd``, ``exim``) turn a message into an
event, but only when the envelope's program is that daemon (log injection,
CVE-2001-1075: text a client sends is echoed into the same log). ``reader``
opens plain or compressed files and yields complete lines with their offsets;
``parse`` ties it together.
"""

from .events import Accept, Delivery, Envelope, Event, Login, Refusal, Removed, Sender, SessionEnd
from .parse import LineParser

__all__ = [
    "Accept",
    "Delivery",
    "Envelope",
    "Event",
    "LineParser",
    "Login",
    "Refusal",
    "Removed",
    "Sender",
    "SessionEnd",
]
