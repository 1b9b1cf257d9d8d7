"""Inventory import (customers and mailboxes from provisioning) and its statistics.

The CSV is streamed into a temporary staging table, checked there (syntax per
row, duplicates and conflicts across rows in SQL), and merged with set-based
SQL, all inside the caller's transaction: any bad row and nothing is written.
Memory stays bounded however long the file is.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.orm import Session

from ..addresses import AddressError, parse_address
from ..buckets import BUCKETS, bucket_label, bucket_of_key, sort_key
from ..errors import InventoryError
from ..models import Customer, Mailbox

REQUIRED_COLUMNS = ("mailbox", "customer_id", "customer_email", "customer_name", "locale")
OPTIONAL_COLUMNS = ("login",)
BATCH_ROWS = 20_000
MAX_PROBLEMS_KEPT = 1_000  # the total is always counted; the CLI shows the first few
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
_SURROGATE = re.compile("[\udc80-\udcff]")  # undecodable bytes, kept by errors="surrogateescape"
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_LOGIN_BAD = re.compile(r"[\s\x00-\x1f\x7f]")

_staging_metadata = MetaData()
STAGING = Table(
    "rollout_inventory_staging",
    _staging_metadata,
    Column("line_no", Integer, nullable=False),
    Column("address", String(320), nullable=False),
    Column("address_key", String(320), nullable=False),
    Column("domain", String(253), nullable=False),
    Column("login", String(320)),
    Column("bucket", String(1), nullable=False),
    Column("sort_key", String(32), nullable=False),
    Column("customer_ext", String(128), nullable=False),
    Column("customer_email", String(320), nullable=False),
    Column("customer_name", String(256), nullable=False),
    Column("locale", String(16), nullable=False),
    prefixes=["TEMPORARY"],
)
STAGING_COLUMNS = [c.name for c in STAGING.columns]


@dataclass
class ImportSummary:
    file: str
    rows: int = 0
    customers_added: int = 0
    customers_updated: int = 0
    customers_unchanged: int = 0
    mailboxes_added: int = 0
    mailboxes_updated: int = 0
    mailboxes_unchanged: int = 0
    mailboxes_absent: int = 0  # in the database, not in the file
    mailboxes_pruned: int = 0
    customers_pruned: int = 0
    absent_sample: list[str] = field(default_factory=list)
    dry_run: bool = False


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[int, str]] = []
        self.total = 0

    def add(self, line_no: int, reason: str) -> None:
        self.total += 1
        if len(self.items) < MAX_PROBLEMS_KEPT:
            self.items.append((line_no, reason))


def import_csv(
    session: Session,
    path: Path,
    now: datetime,
    prune: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Validate and merge ``path`` into the inventory; raise ``InventoryError`` if any row is bad.

    Flushes but never commits: the caller's transaction makes it all or nothing
    (and a dry run is simply a rollback).
    """
    summary = ImportSummary(file=str(path))
    problems = _Problems()
    conn = session.connection()
    STAGING.drop(conn, checkfirst=True)
    STAGING.create(conn)
    try:
        summary.rows = _stage(conn, path, problems, progress)
        if summary.rows == 0 and problems.total == 0:
            raise InventoryError(f"{path}: the file has a header but no rows; nothing imported")
        _check_across_rows(conn, problems)
        if problems.total:
            problems.items.sort()
            raise InventoryError(
                f"{path}: {problems.total} bad row{'s' if problems.total != 1 else ''}; nothing was imported",
                problems.items,
                problems.total,
            )
        _merge(conn, summary, now, prune)
    finally:
        STAGING.drop(conn, checkfirst=True)
    session.expire_all()
    return summary


def _stage(conn: Any, path: Path, problems: _Problems, progress: Callable[[int], None] | None) -> int:
    rows = 0
    batch: list[tuple[Any, ...]] = []
    writer = _copy_writer(conn) if conn.dialect.name == "postgresql" else None
    for record in _read_rows(path, problems, progress):
        rows += 1
        if record is None:
            continue
        batch.append(record)
        if len(batch) >= BATCH_ROWS:
            _flush(conn, batch, writer)
            batch = []
    if batch:
        _flush(conn, batch, writer)
    conn.execute(text(f"CREATE INDEX ix_staging_address ON {STAGING.name} (address_key)"))
    conn.execute(text(f"CREATE INDEX ix_staging_customer ON {STAGING.name} (customer_ext)"))
    conn.execute(text(f"ANALYZE {STAGING.name}"))
    return rows


def _copy_writer(conn: Any) -> Callable[[list[tuple[Any, ...]]], None]:
    """PostgreSQL: COPY is several times faster than batched INSERTs."""
    dbapi = conn.connection.driver_connection

    def write(batch: list[tuple[Any, ...]]) -> None:
        with dbapi.cursor() as cur:
            with cur.copy(f"COPY {STAGING.name} ({', '.join(STAGING_COLUMNS)}) FROM STDIN") as copy:
                for row in batch:
                    copy.write_row(row)

    return write


def _flush(conn: Any, batch: list[tuple[Any, ...]], writer: Callable[[list[tuple[Any, ...]]], None] | None) -> None:
    if writer is not None:
        writer(batch)
    else:
        conn.exec_driver_sql(
            f"INSERT INTO {STAGING.name} ({', '.join(STAGING_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(STAGING_COLUMNS))})",
            batch,
        )


def _read_rows(
    path: Path, problems: _Problems, progress: Callable[[int], None] | None
) -> Iterator[tuple[Any, ...] | None]:
    """Yield one staging tuple per good row, ``None`` per bad one (already reported)."""
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InventoryError(f"cannot read {path}: {exc.strerror}") from None
    with raw, open(raw.fileno(), encoding="utf-8-sig", errors="surrogateescape", newline="", closefd=False) as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise InventoryError(f"{path}: the file is empty (a header row is required)") from None
        except csv.Error as exc:
            raise InventoryError(f"{path}: line 1: {exc}") from None
        index = _header_index(path, header)
        last_line, reported = 0, 0
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                problems.add(reader.line_num, f"malformed CSV: {exc}; the rest of the file cannot be read reliably")
                yield None
                break
            if not fields or fields == [""]:
                continue  # blank line
            yield _row(reader.line_num, fields, len(header), index, problems)
            if progress is not None and reader.line_num - last_line >= 10_000:
                position = raw.tell()  # bytes read ahead by the text layer: close enough for a bar
                progress(position - reported)
                last_line, reported = reader.line_num, position
        if progress is not None:
            progress(raw.tell() - reported)


def _header_index(path: Path, header: list[str]) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InventoryError(
            f"{path}: line 1: the header lacks {', '.join(missing)} "
            f"(required: {','.join(REQUIRED_COLUMNS)}; optional: {','.join(OPTIONAL_COLUMNS)})"
        )
    duplicated = sorted({n for n in names if n and names.count(n) > 1 and n in REQUIRED_COLUMNS + OPTIONAL_COLUMNS})
    if duplicated:
        raise InventoryError(f"{path}: line 1: column {', '.join(duplicated)} appears twice in the header")
    return {name: names.index(name) for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if name in names}


def _row(
    line_no: int, fields: list[str], width: int, index: dict[str, int], problems: _Problems
) -> tuple[Any, ...] | None:
    if len(fields) != width:
        problems.add(line_no, f"has {len(fields)} fields, the header has {width}")
        return None
    values = {name: fields[i].strip() for name, i in index.items()}
    bad = [name for name, value in values.items() if _SURROGATE.search(value)]
    if bad:
        problems.add(line_no, f"{bad[0]} is not valid UTF-8")
        return None
    reasons: list[str] = []
    try:
        address = parse_address(values["mailbox"])
    except AddressError as exc:
        reasons.append(f"mailbox: {exc}")
        address = None
    customer_ext = values["customer_id"]
    if not customer_ext:
        reasons.append("customer_id is empty")
    elif len(customer_ext) > 128:
        reasons.append("customer_id is longer than 128 characters")
    try:
        customer_email = _contact(values["customer_email"])
    except AddressError as exc:
        reasons.append(f"customer_email: {exc}")
        customer_email = ""
    name = values["customer_name"]
    if _CONTROL.search(name):
        reasons.append("customer_name contains a control character (line break?)")
    elif len(name) > 256:
        reasons.append("customer_name is longer than 256 characters")
    locale = values["locale"]
    if locale and not _LOCALE.match(locale):
        reasons.append(f"locale {locale!r} is not a language tag such as de, en or de-DE")
    login = values.get("login") or None
    if login and (len(login) > 320 or _LOGIN_BAD.search(login)):
        reasons.append(f"login {login!r} contains spaces or control characters")
    if reasons or address is None:
        problems.add(line_no, "; ".join(reasons))
        return None
    key = sort_key(address.local)
    return (
        line_no,
        address.text,
        address.key,
        address.domain,
        login,
        bucket_of_key(key),
        key,
        customer_ext,
        customer_email,
        name,
        locale.replace("_", "-"),
    )


@lru_cache(maxsize=4_096)
def _contact(raw: str) -> str:
    """Customer contact address; cached because a customer's rows repeat it."""
    return parse_address(raw).text


def _check_across_rows(conn: Any, problems: _Problems) -> None:
    s = STAGING.name
    for line_no, key, first in conn.execute(
        text(
            f"SELECT line_no, address_key, MIN(line_no) OVER (PARTITION BY address_key) FROM {s} "
            f"WHERE address_key IN (SELECT address_key FROM {s} GROUP BY address_key HAVING COUNT(*) > 1)"
        )
    ):
        if line_no != first:
            problems.add(line_no, f"mailbox {key} is already on line {first}")
    for line_no, ext, first_line in conn.execute(
        text(
            f"SELECT line_no, customer_ext, first_line FROM ("
            f"SELECT line_no, customer_ext, customer_email, customer_name, locale, "
            f"first_value(customer_email) OVER w AS first_email, first_value(customer_name) OVER w AS first_name, "
            f"first_value(locale) OVER w AS first_locale, first_value(line_no) OVER w AS first_line "
            f"FROM {s} WINDOW w AS (PARTITION BY customer_ext ORDER BY line_no)) t "
            f"WHERE customer_email <> first_email OR customer_name <> first_name OR locale <> first_locale"
        )
    ):
        problems.add(line_no, f"customer {ext}: e-mail, name or locale differ from line {first_line}")
    for line_no, login, first in conn.execute(
        text(
            f"SELECT line_no, lower(login), MIN(line_no) OVER (PARTITION BY lower(login)) FROM {s} "
            f"WHERE lower(login) IN (SELECT lower(login) FROM {s} WHERE login IS NOT NULL "
            f"GROUP BY lower(login) HAVING COUNT(*) > 1)"
        )
    ):
        if line_no != first:
            problems.add(line_no, f"login {login} is already used by the mailbox on line {first}")


def _merge(conn: Any, summary: ImportSummary, now: datetime, prune: bool) -> None:
    s = STAGING.name
    stamp = {"now": now.replace(tzinfo=None)}  # UTC, as UTCDateTime stores it
    customers = f"(SELECT DISTINCT customer_ext, customer_email, customer_name, locale FROM {s})"

    def scalar(sql: str) -> int:
        return int(conn.execute(text(sql)).scalar_one())

    summary.customers_added = scalar(
        f"SELECT COUNT(*) FROM {customers} n "
        "WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.external_id = n.customer_ext)"
    )
    summary.customers_updated = scalar(
        f"SELECT COUNT(*) FROM {customers} n JOIN customers c ON c.external_id = n.customer_ext "
        f"WHERE c.email <> n.customer_email OR c.name <> n.customer_name OR c.locale <> n.locale"
    )
    total_customers = scalar(f"SELECT COUNT(DISTINCT customer_ext) FROM {s}")
    summary.customers_unchanged = total_customers - summary.customers_added - summary.customers_updated

    conn.execute(
        text(
            "UPDATE customers SET email = n.customer_email, name = n.customer_name, locale = n.locale, "
            f"updated_at = :now FROM {customers} n WHERE customers.external_id = n.customer_ext AND "
            "(customers.email <> n.customer_email OR customers.name <> n.customer_name "
            "OR customers.locale <> n.locale)"
        ),
        stamp,
    )
    conn.execute(
        text(
            f"INSERT INTO customers (external_id, email, name, locale, created_at, updated_at) "
            f"SELECT customer_ext, customer_email, customer_name, locale, :now, :now FROM {customers} n "
            f"WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.external_id = n.customer_ext)"
        ),
        stamp,
    )

    incoming = f"(SELECT st.*, c.id AS customer_id FROM {s} st JOIN customers c ON c.external_id = st.customer_ext)"
    differs = (
        "(m.address <> n.address OR m.customer_id <> n.customer_id OR COALESCE(m.login, '') <> COALESCE(n.login, ''))"
    )
    summary.mailboxes_added = scalar(
        f"SELECT COUNT(*) FROM {s} n WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.address_key = n.address_key)"
    )
    summary.mailboxes_updated = scalar(
        f"SELECT COUNT(*) FROM {incoming} n JOIN mailboxes m ON m.address_key = n.address_key WHERE {differs}"
    )
    summary.mailboxes_unchanged = summary.rows - summary.mailboxes_added - summary.mailboxes_updated
    conn.execute(
        text(
            "UPDATE mailboxes SET address = n.address, domain = n.domain, login = n.login, "
            "customer_id = n.customer_id, "
            f"bucket = n.bucket, sort_key = n.sort_key, updated_at = :now FROM {incoming} n "
            f"WHERE mailboxes.address_key = n.address_key AND "
            f"(mailboxes.address <> n.address OR mailboxes.customer_id <> n.customer_id "
            f"OR COALESCE(mailboxes.login, '') <> COALESCE(n.login, ''))"
        ),
        stamp,
    )
    conn.execute(
        text(
            "INSERT INTO mailboxes "
            "(address, address_key, domain, login, customer_id, bucket, sort_key, created_at, updated_at) "
            f"SELECT n.address, n.address_key, n.domain, n.login, n.customer_id, n.bucket, n.sort_key, :now, :now "
            f"FROM {incoming} n WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.address_key = n.address_key) "
            f"ORDER BY n.address_key"  # key order keeps the unique index's B-tree appends cheap
        ),
        stamp,
    )

    # No table aliases here: SQLite's DELETE does not accept them.
    absent = f"FROM mailboxes WHERE NOT EXISTS (SELECT 1 FROM {s} n WHERE n.address_key = mailboxes.address_key)"
    summary.mailboxes_absent = scalar(f"SELECT COUNT(*) {absent}")
    summary.absent_sample = [r[0] for r in conn.execute(text(f"SELECT address {absent} ORDER BY address_key LIMIT 20"))]
    if prune and summary.mailboxes_absent:
        conn.execute(text(f"DELETE {absent}"))
        summary.mailboxes_pruned = summary.mailboxes_absent
        orphans = "FROM customers WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.customer_id = customers.id)"
        summary.customers_pruned = scalar(f"SELECT COUNT(*) {orphans}")
        conn.execute(text(f"DELETE {orphans}"))


@dataclass
class BucketShare:
    bucket: str
    label: str
    mailboxes: int
    share: float


@dataclass
class InventoryStats:
    customers: int
    mailboxes: int
    domains: int
    buckets: list[BucketShare]


def stats(session: Session) -> InventoryStats:
    counts = {bucket: n for bucket, n in session.execute(select(Mailbox.bucket, func.count()).group_by(Mailbox.bucket))}
    total = sum(counts.values())
    buckets = [
        BucketShare(b, bucket_label(b), counts.get(b, 0), round(counts.get(b, 0) / total, 6) if total else 0.0)
        for b in BUCKETS
    ]
    return InventoryStats(
        customers=session.scalar(select(func.count()).select_from(Customer)) or 0,
        mailboxes=total,
        domains=session.scalar(select(func.count(func.distinct(Mailbox.domain)))) or 0,
        buckets=buckets,
    )
