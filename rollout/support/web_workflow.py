"""`rollout web user …`: the support desk's accounts."""

from __future__ import annotations

from ..runtime import Runtime
from . import accounts
from .accounts import Account


def add_user(runtime: Runtime, name: str, password: str) -> Account:
    with runtime.sessions() as session, session.begin():
        return accounts.add_user(session, name, password, runtime.clock.now(), runtime.actor)


def list_users(runtime: Runtime) -> list[Account]:
    with runtime.sessions() as session:
        return accounts.list_users(session)


def remove_user(runtime: Runtime, name: str) -> None:
    with runtime.sessions() as session, session.begin():
        accounts.remove_user(session, name)
