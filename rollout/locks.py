"""One at a time per database: a lock that a second comer waits for, for a while.

On PostgreSQL it is a session-level advisory lock on a connection of its own (freed by
the server when the process dies); on SQLite an exclusive ``flock`` on a file next to the
database (freed by the kernel when the process dies). SQLite's own write lock does not do:
a scan reads for a long time before it writes, and two scans that both read before either
writes would both count the same lines.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from .errors import RolloutError

SCAN_LOCK_KEY = 0x726F6C6C5343414E  # "rollSCAN": any constant no other lock of ours uses
POLL_SECONDS = 0.1
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout expired


class Busy(RolloutError):
    """Someone else holds the lock, longer than we were willing to wait."""


class LockFileUnusable(RolloutError):
    """SQLite: the lock file beside the database cannot be created or opened for writing."""


@contextmanager
def held(engine: Engine, name: str, key: int, wait_seconds: float, setting: str = "") -> Iterator[None]:
    """Hold the lock ``name`` (a command: "scan") of this database for the block; wait up to ``wait_seconds``
    (the value of ``setting``) for it, then raise ``Busy``."""
    why = f"waited {wait_seconds:g} s" + (f" ({setting})" if setting else "")
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            _advisory_lock(conn, key, wait_seconds, name, why)
            try:
                yield
            finally:
                _advisory_unlock(conn, key)
        return
    path = lock_file(engine, name)
    if path is None:  # an in-memory database lives in this process only
        yield
        return
    with _flocked(path, wait_seconds, name, why):
        yield


def lock_file(engine: Engine, name: str) -> Path | None:
    """SQLite: ``<database>.<name>.lock`` beside the database file."""
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        return None
    path = Path(database).expanduser()
    return path.with_name(f"{path.name}.{name}.lock")


def _advisory_lock(conn: Connection, key: int, wait_seconds: float, name: str, why: str) -> None:
    try:
        with conn.begin():  # SET LOCAL: the timeout ends with this transaction, the session-level lock does not
            if wait_seconds <= 0:  # a lock_timeout of 0 would mean "forever"
                if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
                    raise _busy(name, f"PostgreSQL advisory lock {key}", why)
                return
            conn.execute(text(f"SET LOCAL lock_timeout = {max(1, round(wait_seconds * 1000))}"))
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise _busy(name, f"PostgreSQL advisory lock {key}", why) from None
        raise


def _advisory_unlock(conn: Connection, key: int) -> None:
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        conn.commit()
    except Exception:
        conn.invalidate()  # closing the connection frees the lock: it must not go back to the pool holding it
        raise


@contextmanager
def _flocked(path: Path, wait_seconds: float, name: str, why: str) -> Iterator[None]:
    try:
        fh = open(path, "a+")  # noqa: SIM115 - closed by the with below; only the open's failure is ours to explain
    except OSError as exc:
        raise LockFileUnusable(
            f"cannot open the {name} lock file {path}: {exc.strerror or exc}. One {name} runs at a time per database; "
            f"on SQLite the lock is this file beside the database, so the user running rollout must be able to "
            f"create and write it (a writable directory, or write access to the file if it exists). Nothing was done"
        ) from None
    with fh:
        _wait_for_flock(fh, path, wait_seconds, name, why)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{socket.gethostname()} {os.getpid()}\n")  # who holds it, for the operator
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wait_for_flock(fh: IO[str], path: Path, wait_seconds: float, name: str, why: str) -> None:
    deadline = time.monotonic() + wait_seconds  # a real wait, not the domain clock
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.seek(0)
                holder = fh.read().strip()
                raise _busy(name, f"lock file {path}" + (f", held by {holder}" if holder else ""), why) from None
            time.sleep(POLL_SECONDS)


def _busy(name: str, what: str, why: str) -> Busy:
    return Busy(
        f"another rollout {name} is running on this database ({what}); {why}. "
        "Nothing was done: try again when it has finished"
    )
