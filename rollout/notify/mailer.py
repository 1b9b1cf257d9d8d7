"""SMTP sending: plain, STARTTLS or implicit TLS, AUTH, reused connections, a send-time rate limit.

One ``SmtpConnection`` per worker thread; it connects lazily, reconnects when the
server drops it, and turns every SMTP outcome into a ``Delivery``:
``sent`` only after the server's 250 to DATA, ``deferred`` after 4xx replies
(retried with backoff first), ``failed`` on 5xx with the reply kept.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DeliveryError

log = logging.getLogger(__name__)
_DOT_AT_LINE_START = re.compile(rb"^\.", re.M)


UNCERTAIN = -1  # the connection was lost after the message's final dot: the server may have taken it


@dataclass(frozen=True)
class Delivery:
    status: str  # sent | deferred | failed | uncertain (never retried: it may have been delivered)
    reply: str
    attempts: int


class RateLimiter:
    """A token bucket shared by all connections, taken right before each DATA (send time)."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_second = per_second
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = clock()

    def acquire(self) -> None:
        if self.per_second <= 0:
            return
        with self._lock:
            now = self.clock()
            slot = max(self._next, now)
            self._next = slot + 1.0 / self.per_second
        if slot > now:
            self.sleep(slot - now)


class SmtpConnection:
    """One SMTP session, reused across messages; ``settings`` is ``SmtpSettings``."""

    def __init__(self, settings: Any, limiter: RateLimiter, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.limiter = limiter
        self.sleep = sleep
        self._smtp: smtplib.SMTP | None = None
        self._after_dot = False  # the current attempt has sent (part of) the final dot

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.username and not s.password:
            raise DeliveryError("[smtp] username is set but no password: set ROLLOUT_SMTP_PASSWORD or [smtp] password")
        context = ssl.create_default_context(cafile=s.ca_file)
        if s.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_seconds, context=context)
        elif s.security in ("starttls", "none"):
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
            if s.security == "starttls":
                smtp.starttls(context=context)
        else:
            raise DeliveryError(f"[smtp] security must be none, starttls or tls, not {s.security!r}")
        # Commands are small writes waiting for replies: without this, Nagle's algorithm
        # and delayed ACKs add milliseconds to every message.
        assert smtp.sock is not None  # connected above (smtplib connects when given a host)
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if s.username:
            try:
                smtp.login(s.username, s.password)
            except smtplib.SMTPAuthenticationError as exc:
                smtp.close()
                raise DeliveryError(
                    f"SMTP AUTH as {s.username} at {s.host}:{s.port} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
                ) from None
            except smtplib.SMTPNotSupportedError:
                smtp.close()
                raise DeliveryError(
                    f"{s.host}:{s.port} offers no SMTP AUTH here: check [smtp] security (starttls or tls) and port"
                ) from None
        return smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def send(self, from_address: str, to_address: str, message: bytes) -> Delivery:
        """Deliver one message; 4xx and dropped connections are retried with backoff."""
        tries = max(1, self.settings.retries + 1)
        reply = ""
        for attempt in range(1, tries + 1):
            code, reply = self._attempt(from_address, to_address, message)
            if code == 250:
                return Delivery("sent", reply, attempt)
            if code == UNCERTAIN:
                return Delivery("uncertain", reply, attempt)
            if 500 <= code < 600:
                return Delivery("failed", reply, attempt)
            if attempt < tries:
                self.sleep(self.settings.retry_backoff_seconds * 2 ** (attempt - 1))
        return Delivery("deferred", reply, tries)

    def _attempt(self, from_address: str, to_address: str, message: bytes) -> tuple[int, str]:
        """(code, reply text) of the transaction; code 0 = no answer (connection trouble), temporary."""
        self._after_dot = False
        text: bytes | str  # smtplib gives bytes; SMTPResponseException may carry either
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            smtp = self._smtp
            smtp.ehlo_or_helo_if_needed()
            if smtp.has_extn("pipelining"):
                code, text = self._pipelined(smtp, from_address, to_address, message)
            else:
                code, text = smtp.mail(from_address)
                if code == 250:
                    code, text = smtp.rcpt(to_address)
                    if code in (250, 251):
                        self.limiter.acquire()
                        code, text = self._data(smtp, message)
        except smtplib.SMTPResponseException as exc:  # DATA refused before 354
            code, text = exc.smtp_code, exc.smtp_error
        except (smtplib.SMTPException, OSError) as exc:
            log.info("SMTP connection to %s:%s lost (%s); reconnecting", self.settings.host, self.settings.port, exc)
            self._drop()
            if self._after_dot:
                return (
                    UNCERTAIN,
                    f"connection lost after the message was sent, before the reply ({exc}): maybe delivered",
                )
            return 0, f"connection: {exc}"
        if code == 421:
            self._drop()
        elif code != 250:
            self._reset()
        return (250 if code in (250, 251) else code), _reply(code, text)

    def _pipelined(self, smtp: smtplib.SMTP, from_address: str, to_address: str, message: bytes) -> tuple[int, bytes]:
        """MAIL, RCPT and DATA in one write (RFC 2920): two round trips per message instead of four."""
        self.limiter.acquire()
        smtp.send(f"MAIL FROM:<{from_address}>\r\nRCPT TO:<{to_address}>\r\nDATA\r\n")
        replies = [smtp.getreply() for _ in range(3)]
        (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            smtp.send(b".\r\n")  # the server wants content it will not deliver: end it empty
            smtp.getreply()
        if mail_code != 250:
            return mail_code, mail_text
        if rcpt_code not in (250, 251):
            return rcpt_code, rcpt_text
        if data_code != 354:
            return data_code, data_text
        return self._content(smtp, message)

    def _data(self, smtp: smtplib.SMTP, message: bytes) -> tuple[int, bytes]:
        """DATA without pipelining: smtplib's own ``data()`` would hide whether the final dot went out."""
        code, text = smtp.docmd("DATA")
        if code != 354:
            return code, text
        return self._content(smtp, message)

    def _content(self, smtp: smtplib.SMTP, message: bytes) -> tuple[int, bytes]:
        """The message and its final dot, then the reply. Once the dot may have left, a lost
        connection means "maybe delivered" (RFC 5321 6.1): never sent again silently."""
        body = dot_stuffed(message)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self._after_dot = True
        smtp.send(body + b".\r\n")
        return smtp.getreply()

    def _reset(self) -> None:
        """After a refused transaction the session stays usable, but RSET it to be sure."""
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None


def dot_stuffed(message: bytes) -> bytes:
    """A line starting with "." gets a second one (RFC 5321 4.5.2). The regex runs only when
    such a line exists: scanning 6 kB per message with it cost more than the rest of the send."""
    if message.startswith(b".") or b"\n." in message:
        return _DOT_AT_LINE_START.sub(b"..", message)
    return message


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"
