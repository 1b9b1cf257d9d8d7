"""Schema: migrations agree with the models, go up and down, and stale schemas are refused."""

import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import inspect

from rollout import db
from rollout.clock import ManualClock
from rollout.config import load_settings
from rollout.runtime import Runtime

from .conftest import REPO, Cli


def test_upgrade_downgrade_upgrade_and_check(empty_database_url: str) -> None:
    """The migration chain creates every table, removes them all, and the models agree (alembic check)."""
    engine = db.make_engine(empty_database_url)
    before, after = db.upgrade(engine)
    assert before is None and after == db.head_revision()
    db.check(engine)
    assert "mailboxes" in inspect(engine).get_table_names()
    db.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    db.check(engine)
    engine.dispose()


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    """SQLite is opened with WAL, foreign keys on and a busy timeout."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
    engine.dispose()


def test_commands_refuse_an_empty_database(empty_database_url: str) -> None:
    """Every command but `db upgrade` refuses a database without schema, naming the fix."""
    runtime = Runtime(load_settings(environ={}, overrides={"database_url": empty_database_url}), ManualClock())
    result = Cli(runtime)("inventory", "stats", expect=1)
    assert "run `rollout db upgrade`" in result.output
    runtime.close()


def test_commands_refuse_an_out_of_date_schema(empty_database_url: str) -> None:
    """A schema behind head is refused with both revisions and the command to run."""
    engine = db.make_engine(empty_database_url)
    db.upgrade(engine, "0001")
    engine.dispose()
    runtime = Runtime(load_settings(environ={}, overrides={"database_url": empty_database_url}), ManualClock())
    run = Cli(runtime)
    result = run("inventory", "stats", expect=1)
    assert "schema is at 0001" in result.output and db.head_revision() in result.output
    assert "rollout db upgrade" in result.output
    run("db", "upgrade")
    run("inventory", "stats")
    runtime.close()


def test_alembic_cli_works_with_alembic_ini(empty_database_url: str) -> None:
    """Developers can run the same migrations with the alembic CLI and alembic.ini."""
    env = {"ROLLOUT_DATABASE_URL": empty_database_url, "PATH": str(Path(sys.executable).parent)}
    for args in (["upgrade", "head"], ["check"], ["current"]):
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    assert db.head_revision() in proc.stdout


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"]])
def test_db_commands_report_revisions(empty_database_url: str, command: list[str]) -> None:
    """`db upgrade` and `db current` say where the schema stands."""
    runtime = Runtime(load_settings(environ={}, overrides={"database_url": empty_database_url}), ManualClock())
    run = Cli(runtime)
    run("db", "upgrade")
    out = run(*command).output
    assert db.head_revision() in out
    runtime.close()


def test_schema_head_names_the_newest_migration() -> None:
    """`db.SCHEMA_HEAD`, which every command checks against, is Alembic's head: move it with each new migration."""
    assert db.SCHEMA_HEAD == db.head_revision()


def test_schema_check_at_head_does_not_load_alembic(database_url: str) -> None:
    """A database at head is accepted without importing Alembic (it costs every command ~235 ms)."""
    code = (
        "import sys; from rollout import db; e = db.make_engine(sys.argv[1]); db.require_head(e); "
        "print('alembic' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code, database_url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_insert_rows_stores_exactly_what_a_core_insert_stores(runtime: Runtime) -> None:
    """The bulk insert stores times, JSON and NULLs byte for byte as SQLAlchemy's own insert does."""
    from datetime import datetime

    from sqlalchemy import select

    from rollout.models import ReviewItem

    table = ReviewItem.__table__
    times = [
        datetime(2026, 3, 2, 10, 5, 7, tzinfo=UTC),
        datetime(2026, 3, 2, 10, 5, 7, 250_000, tzinfo=UTC),
    ]
    rows = [
        {
            "kind": "ambiguous",
            "at": at,
            "host": "mx1",
            "queue_id": qid,
            "client_ip": "192.0.2.7",
            "sender": sender,
            "candidates": candidates,
            "evidence": [{"file": "f", "offset": 3, "line": "ä"}],
        }
        for qid, sender, at, candidates in (
            ("Q1", None, times[0], []),
            ("Q2", "anna@example.org", times[1], ["anna@example.org", "bert"]),
            ("Q3", None, times[1], []),
        )
    ]
    with runtime.sessions() as session, session.begin():
        session.execute(table.insert(), [dict(row, host="core") for row in rows])
        columns = list(rows[0])
        db.insert_rows(
            session.connection(), table, columns, [tuple(dict(row, host="bulk")[c] for c in columns) for row in rows]
        )
    with runtime.sessions() as session:
        raw = (
            session.connection()
            .exec_driver_sql(
                "SELECT host, kind, at, queue_id, client_ip, sender, CAST(candidates AS TEXT), "
                "CAST(evidence AS TEXT) FROM review_items ORDER BY queue_id, host"
            )
            .all()
        )
        read = session.scalars(select(ReviewItem).where(ReviewItem.host == "bulk").order_by(ReviewItem.queue_id)).all()
    assert [r[1:] for r in raw if r[0] == "bulk"] == [r[1:] for r in raw if r[0] == "core"]
    assert [(r.at, r.sender, r.candidates, r.evidence) for r in read] == [
        (row["at"], row["sender"], row["candidates"], row["evidence"]) for row in rows
    ]
