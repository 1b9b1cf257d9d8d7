"""Helpers for the scan tests: a parser with test settings, and inventories for synthetic logs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from rollout.config import EnforcementSettings
from rollout.logs.envelope import EnvelopeParser
from rollout.logs.events import Event
from rollout.logs.parse import LineParser, our_text_matcher

REFERENCE = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


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
