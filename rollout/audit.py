"""The audit log: every state change records who, when, what, and details."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from .models import AuditEvent


def record(session: Session, at: datetime, actor: str, action: str, **details: Any) -> AuditEvent:
    event = AuditEvent(at=at, actor=actor, action=action, details=details)
    session.add(event)
    session.flush()
    return event
