"""`rollout web` accounts (argon2id hashes in the database) and the key that signs its session cookies."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import RolloutError
from ..models import WebSecret, WebUser

MIN_PASSWORD_LENGTH = 10
MAX_NAME_LENGTH = 128
COOKIE_KEY = "session-cookie"

# argon2-cffi's defaults (RFC 9106's low-memory profile): about 50 ms per check on one core.
_hasher = PasswordHasher()
# Checked against when the account does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass
class Account:
    name: str
    created_at: datetime
    created_by: str


def add_user(session: Session, name: str, password: str, now: datetime, actor: str) -> Account:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or any(c.isspace() for c in name):
        raise RolloutError(f"{name!r} is not a usable account name (1-{MAX_NAME_LENGTH} characters, no spaces)")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise RolloutError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(WebUser.id).where(WebUser.name == name)) is not None:
        raise RolloutError(f"account {name!r} exists already (remove it first to set a new password)")
    user = WebUser(name=name, password_hash=_hasher.hash(password), created_at=now, created_by=actor)
    session.add(user)
    session.flush()
    return Account(user.name, user.created_at, user.created_by)


def list_users(session: Session) -> list[Account]:
    return [
        Account(u.name, u.created_at, u.created_by) for u in session.scalars(select(WebUser).order_by(WebUser.name))
    ]


def remove_user(session: Session, name: str) -> None:
    user = session.scalars(select(WebUser).where(WebUser.name == name)).first()
    if user is None:
        raise RolloutError(f"there is no account {name!r} (see `rollout web user list`)")
    session.delete(user)


def user_exists(session: Session, name: str) -> bool:
    return session.scalar(select(WebUser.id).where(WebUser.name == name)) is not None


def check_password(session: Session, name: str, password: str) -> bool:
    stored = session.scalar(select(WebUser.password_hash).where(WebUser.name == name))
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def cookie_key(session: Session, now: datetime) -> bytes:
    """The signing key, made on the first start; two instances starting at once agree on one."""
    found = session.scalar(select(WebSecret.value).where(WebSecret.name == COOKIE_KEY))
    if found is None:
        try:
            with session.begin_nested():
                session.add(WebSecret(name=COOKIE_KEY, value=secrets.token_hex(32), created_at=now))
        except IntegrityError:
            pass  # another instance made it first
        found = session.scalar(select(WebSecret.value).where(WebSecret.name == COOKIE_KEY))
    assert found is not None
    return bytes.fromhex(found)
