"""The support desk's use cases: serve it, and manage its accounts."""

from __future__ import annotations

from typing import Callable

from ..runtime import Runtime
from ..web import accounts
from ..web.accounts import Account


def serve_web(runtime: Runtime, bind: str | None = None, on_ready: Callable[[str], None] = lambda url: None) -> None:
    """Serve until SIGTERM; the cookie key is made on the first start and kept in the database."""
    from ..web.app import SupportDesk
    from ..web.server import serve

    with runtime.sessions() as session, session.begin():
        key = accounts.cookie_key(session, runtime.clock.now())
    serve(SupportDesk(runtime, key), bind or runtime.settings.web.bind, runtime.settings.web.threads, on_ready)


def add_user(runtime: Runtime, name: str, password: str) -> Account:
    with runtime.sessions() as session, session.begin():
        return accounts.add_user(session, name, password, runtime.clock.now(), runtime.actor)


def list_users(runtime: Runtime) -> list[Account]:
    with runtime.sessions() as session:
        return accounts.list_users(session)


def remove_user(runtime: Runtime, name: str) -> None:
    with runtime.sessions() as session, session.begin():
        accounts.remove_user(session, name)
