"""Signed session cookies and the failed-login limiter (no server-side session store)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE_NAME = "rollout_session"


def sign_session(key: bytes, user: str, expires: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"u": user, "e": int(expires)}).encode()).decode().rstrip("=")
    return f"{payload}.{_mac(key, payload)}"


def read_session(key: bytes, cookie: str, now: float) -> str | None:
    """The user a cookie names, or None when it is forged, damaged or expired."""
    payload, _, mac = cookie.partition(".")
    if not payload or not hmac.compare_digest(mac, _mac(key, payload)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        user, expires = str(data["u"]), float(data["e"])
    except (ValueError, KeyError, TypeError):
        return None
    return user if now < expires else None


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


@dataclass
class LoginLimiter:
    """At most ``attempts`` failed logins per account and per client address within ``window`` seconds.

    Kept in memory: one `rollout web` process serves all its threads, and a restart forgetting the
    count is acceptable (a guesser still gets only a handful of tries per window and process).
    """

    attempts: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, account: str, address: str) -> bool:
        with self._lock:
            return any(len(self._recent(k)) >= self.attempts for k in self._keys(account, address))

    def failed(self, account: str, address: str) -> None:
        with self._lock:
            for key in self._keys(account, address):
                self._failures[key] = [*self._recent(key), self.clock()]

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._failures.pop(f"account:{account.lower()}", None)

    def _recent(self, key: str) -> list[float]:
        cutoff = self.clock() - self.window
        return [t for t in self._failures.get(key, []) if t > cutoff]

    @staticmethod
    def _keys(account: str, address: str) -> tuple[str, str]:
        return f"account:{account.lower()}", f"address:{address}"
