"""Helpers for the campaign tests: a scripted aiosmtpd server and affected customers in the database."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import select

from rollout.models import LegacyDay, Mailbox
from rollout.runtime import Runtime
from rollout.scan.inventory_workflow import import_inventory

from .conftest import write_csv

HOST = "127.0.0.30"


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Inbox:
    """An aiosmtpd handler: answers DATA from a script ("250", "451 …", "550 …", "drop"), then 250."""

    script: list[str] = field(default_factory=list)
    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201 - aiosmtpd's hook
        with self.lock:
            reply = self.script.pop(0) if self.script else "250 2.0.0 Ok: queued"
        if reply == "drop":
            server.transport.close()  # the connection dies before the server answers DATA
            return "421 4.4.2 gone"
        if reply.startswith("250"):
            message = message_from_bytes(envelope.content, policy=policy.default)
            with self.lock:
                self.messages.append(message)
        return reply

    def ids(self) -> Counter[str]:
        with self.lock:
            return Counter(m["Message-ID"] for m in self.messages)


class SmtpServer:
    def __init__(self, host: str = HOST) -> None:
        self.inbox = Inbox()
        self.host, self.port = host, free_port(host)
        self.controller = Controller(self.inbox, hostname=host, port=self.port, ready_timeout=5)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def smtp_overrides(server: SmtpServer) -> dict[str, object]:
    return {
        "smtp.host": server.host,
        "smtp.port": server.port,
        "smtp.retry_backoff_seconds": 0.01,
        "smtp.timeout_seconds": 5.0,
    }


def add_customers(runtime: Runtime, tmp_path: Path, rows: list[str]) -> None:
    """Inventory rows: mailbox,customer_id,customer_email,customer_name,locale."""
    import_inventory(runtime, write_csv(tmp_path / "inventory.csv", rows))


def add_legacy(
    runtime: Runtime,
    address: str,
    day: datetime,
    high: int = 1,
    count: int = 1,
    ip: str = "198.51.100.7",
    auth_last: datetime | None = None,
    confidence: str = "high",
) -> None:
    with runtime.sessions() as session, session.begin():
        mailbox_id = session.scalar(select(Mailbox.id).where(Mailbox.address_key == address.lower()))
        session.add(
            LegacyDay(
                mailbox_id=mailbox_id,
                day=day.date(),
                legacy_count=count,
                high_count=high,
                first_seen=day,
                last_seen=day,
                last_ip=ip,
                client_ips=[ip],
                senders=[address],
                confidence=confidence,
                auth_last=auth_last,
                auth_count=1 if auth_last else 0,
            )
        )


def many_affected(runtime: Runtime, tmp_path: Path, n: int, seen: datetime) -> list[str]:
    """``n`` customers with one affected mailbox each; returns the customers' addresses."""
    rows = [
        f"user{i:04d}@example.de,K{i:04d},kunde{i:04d}@example.org,Kunde {i},{'de' if i % 2 else 'en'}"
        for i in range(n)
    ]
    add_customers(runtime, tmp_path, rows)
    for i in range(n):
        add_legacy(runtime, f"user{i:04d}@example.de", seen - timedelta(hours=i % 20))
    return [f"kunde{i:04d}@example.org" for i in range(n)]


def configure(runtime: Runtime, **overrides: object) -> Runtime:
    """Same database and clock, other settings (dotted keys as in rollout.toml)."""
    from rollout.config import load_settings

    runtime.settings = load_settings(environ={}, overrides={"database_url": runtime.settings.database_url, **overrides})
    return runtime
