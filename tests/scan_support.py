"""Helpers for the scan tests: a parser with test settings, and inventories for synthetic logs."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rollout.config import EnforcementSettings
from rollout.logs.envelope import EnvelopeParser
from rollout.logs.events import Event
from rollout.logs.parse import LineParser, our_text_matcher

REFERENCE = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# a directory of third-party log files (not shipped: their licences differ), used when present
CORPUS_VARIABLE = "ROLLOUT_TEST_CORPUS"


def fixture_lines(name: str) -> list[str]:
    """The lines of a log fixture in tests/fixtures, without its "#" header."""
    return [line for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if not line.startswith("#")]


def corpus_files(*suffixes: str) -> list[Path]:
    """The external corpus's files; the test is skipped, saying why, when there is none."""
    where = os.environ.get(CORPUS_VARIABLE)
    if not where:
        pytest.skip(f"no external log corpus: set {CORPUS_VARIABLE} to a directory of real-world log files to run this")
    files = sorted(p for p in Path(where).iterdir() if p.suffix in suffixes) if Path(where).is_dir() else []
    if not files:
        pytest.skip(f"{CORPUS_VARIABLE}={where} holds no {'/'.join(suffixes)} files")
    return files


def line_parser(host: str = "files", reference: datetime = REFERENCE, zone: str = "UTC") -> LineParser:
    e = EnforcementSettings()
    return LineParser(EnvelopeParser(host, zone, reference), our_text_matcher(e.reject_text, e.help_url))


def parse_one(line: str, **kwargs: object) -> Event | None:
    return line_parser(**kwargs).parse(line, "test.log", 0)  # type: ignore[arg-type]


def write_inventory(path: Path, mailboxes: list[tuple[str, str | None]]) -> Path:
    rows = ["mailbox,customer_id,customer_email,customer_name,locale,login"]
    for i, (address, login) in enumerate(mailboxes):
        rows.append(f"{address},c{i // 3},c{i // 3}@customers.test,Customer {i // 3},de,{login or ''}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
