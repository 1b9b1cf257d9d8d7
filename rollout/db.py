"""Engine and sessions, and the schema: upgrade through Alembic, refuse to run on a stale one.

Alembic (with Mako and Pygments, ~235 ms) is imported only by the functions that migrate or
report revisions: every command checks the schema, and the usual answer, "at head", is read
with plain SQLAlchemy against ``SCHEMA_HEAD``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import resources
from .config import mask_url
from .errors import RolloutError, SchemaOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000

# The newest revision in migrations/versions; tests/test_db.py fails when a migration is added
# without moving this. A database at any other revision takes the slow path through Alembic.
SCHEMA_HEAD = "0009"
VERSION_TABLE = "alembic_version"  # Alembic's default; migrations/env.py keeps it


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with our per-backend defaults (SQLite: WAL, foreign keys, busy timeout)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not Path(database).expanduser().parent.is_dir():
            # SQLite would create the file; a missing folder is a typo to report, not a place to create
            folder = Path(database).expanduser().parent
            raise RolloutError(f"cannot open the database {mask_url(url)}: the folder {folder} does not exist")
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; we emit it ourselves, and a transaction
        # opened through write_lock() takes SQLite's write lock at its start (BEGIN IMMEDIATE).
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_LOCK) else "BEGIN")


WRITE_LOCK = "rollout_write_lock"
ADVISORY_LOCK_KEY = 0x726F6C6C  # "roll": PostgreSQL's advisory lock for changes of what is enforced


def write_lock(session: Session) -> None:
    """Make this transaction the only one changing the rollout: the first call in a fresh transaction.

    SQLite: ``BEGIN IMMEDIATE`` (the write lock, waiting up to the busy timeout); PostgreSQL: a
    transaction-scoped advisory lock (a second ``step`` waits, then sees what the first committed).
    """
    try:
        conn = session.connection(execution_options={WRITE_LOCK: True})
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    except OperationalError as exc:
        if "locked" in str(exc.orig):
            raise RolloutError(
                f"another command is changing the rollout (step, undo, exempt, scan …) and held the database for "
                f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s; nothing was changed: try again when it has finished"
            ) from None
        raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let the "begin" listener issue BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MB instead of 2 MB: bulk imports touch big indexes
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(connection: Any | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head() or "base"


@contextmanager
def _opening(engine: Engine) -> Iterator[None]:
    try:
        yield
    except DBAPIError as exc:  # cannot connect, or (SQLite) the file is not a database
        shown = mask_url(engine.url.render_as_string(hide_password=True))
        raise RolloutError(f"cannot open the database {shown}: {exc.orig}") from None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with _opening(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _stored_revisions(engine: Engine) -> tuple[str, ...]:
    """The rows of Alembic's version table, read as Alembic reads them but without loading it."""
    with _opening(engine), engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return ()
        return tuple(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to ``revision``; returns (before, after)."""
    from alembic import command
    from alembic.util import CommandError

    before = current_revision(engine)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    except CommandError as exc:  # an unknown --revision, several heads
        raise RolloutError(f"cannot upgrade to {revision!r}: {exc}") from None
    return before, current_revision(engine) or "base"


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str]:
    from alembic import command
    from alembic.util import CommandError

    before = current_revision(engine)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), revision)
    except CommandError as exc:
        raise RolloutError(f"cannot downgrade to {revision!r}: {exc}") from None
    return before, current_revision(engine) or "base"


def check(engine: Engine) -> None:
    """Raise if the models and the migrations disagree (``alembic check``)."""
    from alembic import command

    with engine.begin() as conn:
        command.check(alembic_config(conn))


def require_head(engine: Engine) -> None:
    if _stored_revisions(engine) == (SCHEMA_HEAD,):
        return
    # Anything else (no schema, behind, ahead, several heads) is decided and worded by Alembic.
    current = current_revision(engine)
    head = head_revision()
    if current is None:
        raise SchemaOutOfDate("the database has no rollout schema yet: run `rollout db upgrade`")
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at {current}, this rollout expects {head}: run `rollout db upgrade`"
        )


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]], as_stored: bool = False
) -> None:
    """Many rows in one ``executemany`` of the driver, inside the connection's transaction.

    A fraction of the cost of ``conn.execute(table.insert(), rows)`` for thousands of rows:
    SQLAlchemy runs each column's bind processor on every value, NULLs included, several
    calls deep. Here the same processors (the dialect's own: times are stored exactly as
    the ORM stores them) run once per value that needs one. ``as_stored``: the values are
    as the driver returned them from such columns, and go back unchanged.
    """
    if not rows:
        return
    dialect = conn.dialect
    processors: list[tuple[int, Callable[[Any], Any], bool]] = []  # (column, processor, whether it keeps None)
    for i, name in enumerate([] if as_stored else columns):
        kind = table.c[name].type.dialect_impl(dialect)
        process = kind.bind_processor(dialect)
        if process is not None:
            processors.append((i, _empty_once(process) if isinstance(kind, JSON) else process, process(None) is None))
    if processors:
        processed = [list(row) for row in rows]
        for row in processed:
            for i, convert, none_is_none in processors:
                if row[i] is not None or not none_is_none:
                    row[i] = convert(row[i])
        rows = processed
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    quote = dialect.identifier_preparer.quote  # "user" is reserved on PostgreSQL
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))})"
        f" VALUES ({', '.join([mark] * len(columns))})"
    )
    driver = conn.connection.driver_connection
    assert driver is not None  # None only once the connection is closed or invalidated, not inside its transaction
    cursor = driver.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _empty_once(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON column's processor that serialises the empty list (most rows' value) only once."""
    empty = process([])
    return lambda value: empty if value == [] else process(value)
