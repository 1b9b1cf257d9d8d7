"""Fixtures shared by every test module.

The suite runs on SQLite by default. With ``ROLLOUT_TEST_DATABASE_URL`` set to a
PostgreSQL server URL it runs against PostgreSQL instead: each run creates its
own database on that server (``rollout_test_<random>``) and drops it at the end;
tables are emptied between tests. With ``CI=true`` an unreachable server fails
the run instead of skipping anything.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from rollout import db
from rollout.clock import ManualClock
from rollout.config import Settings, load_settings
from rollout.models import Base
from rollout.runtime import Runtime

PG_SERVER_URL = os.environ.get("ROLLOUT_TEST_DATABASE_URL")
REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def pytest_report_header(config: pytest.Config) -> str:
    return f"rollout test database: {'PostgreSQL ' + PG_SERVER_URL if PG_SERVER_URL else 'SQLite'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PG_SERVER_URL:
        return
    skip = pytest.mark.skip(reason="PostgreSQL-only: runs in the PostgreSQL pass of .ci/run")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


def using_postgres() -> bool:
    return PG_SERVER_URL is not None


class PostgresServer:
    """Creates and drops throw-away databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url).set(drivername="postgresql+psycopg")
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with self.admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure to connect ends the run here
            pytest.exit(f"PostgreSQL at {url} is not reachable: {exc}", returncode=3)
        self.created: list[str] = []

    def create(self) -> str:
        name = f"rollout_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer | None]:
    if not PG_SERVER_URL:
        yield None
        return
    server = PostgresServer(PG_SERVER_URL)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def template_database(pg_server: PostgresServer | None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database migrated to head once per run (every run exercises the migrations)."""
    if pg_server is not None:
        url = pg_server.create()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('template') / 'template.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def empty_database_url(pg_server: PostgresServer | None, tmp_path: Path) -> str:
    """A database with no schema at all."""
    if pg_server is not None:
        return pg_server.create()
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
def database_url(template_database: str, tmp_path: Path) -> str:
    """A migrated, empty database for one test."""
    if template_database.startswith("sqlite"):
        source = Path(make_url(template_database).database or "")
        target = tmp_path / "rollout.db"
        shutil.copyfile(source, target)
        return f"sqlite:///{target}"
    engine = create_engine(template_database)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return template_database


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return load_settings(environ={}, overrides={"database_url": database_url})


@pytest.fixture
def runtime(settings: Settings, clock: ManualClock) -> Iterator[Runtime]:
    rt = Runtime(settings=settings, clock=clock, actor="tester")
    yield rt
    rt.close()


class Cli:
    """Runs `rollout …` in-process with the test's Runtime (its database and clock)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None, expect: int | None = 0) -> Result:
        from rollout.cli import cli

        result = self.runner.invoke(cli, list(args), obj=self.runtime, input=input, catch_exceptions=False)
        if expect is not None and result.exit_code != expect:
            raise AssertionError(
                f"rollout {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


@pytest.fixture
def run(runtime: Runtime) -> Cli:
    return Cli(runtime)


@pytest.fixture
def cli_env(database_url: str) -> dict[str, str]:
    """Environment for running `rollout` as a subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env["ROLLOUT_DATABASE_URL"] = database_url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def write_csv(
    path: Path, rows: list[str], header: str = "mailbox,customer_id,customer_email,customer_name,locale"
) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path
