"""The audit log: every state change records who, when, what, and details."""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from .models import AuditEvent


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER") or f"uid:{os.getuid()}"


def record(session: Session, at: datetime, actor: str, action: str, **details: Any) -> AuditEvent:
    event = AuditEvent(at=at, actor=actor, action=action, details=details)
    session.add(event)
    session.flush()
    return event
