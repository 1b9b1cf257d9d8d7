"""`rollout web` as a real process on 127.0.0.1 over the operate_support rollout, for browser and HTTP tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rollout.models import Customer, Mailbox
from rollout.runtime import Runtime
from rollout.support import accounts

from .conftest import T0
from .operate_support import NOW, build_rollout

USER, PASSWORD = "support", "correct horse battery"
HOSTILE_NAME = '<script>alert("x")</script> & Söhne'
START_SECONDS = 30


def build_desk_database(runtime: Runtime) -> None:
    """The operate_support story, a customer whose name is HTML, and one support account."""
    build_rollout(runtime)
    with runtime.sessions() as s, s.begin():
        evil = Customer(
            external_id="K-3", email="evil@html.example", name=HOSTILE_NAME, locale="en", created_at=T0, updated_at=T0
        )
        s.add(evil)
        s.flush()
        s.add(
            Mailbox(
                address="mallory@html.example",
                address_key="mallory@html.example",
                domain="html.example",
                customer_id=evil.id,
                bucket="m",
                sort_key="mallory",
                created_at=T0,
                updated_at=T0,
            )
        )
        accounts.add_user(s, USER, PASSWORD, T0, "tester")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Desk:
    url: str
    process: subprocess.Popen[bytes]
    port: int
    cookie: str | None = field(default=None)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        cookie: str | None = None,
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if cookie:
            sent["Cookie"] = cookie
        data = None
        if body is not None:
            data = urllib.parse.urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text

    def login(
        self, name: str = USER, password: str = PASSWORD, headers: dict[str, str] | None = None
    ) -> tuple[int, str | None]:
        status, got, _ = self.request("POST", "/login", {"name": name, "password": password, "next": "/"}, headers)
        cookie = got.get("set-cookie")
        return status, cookie.split(";", 1)[0] if cookie else None

    def json(self, path: str, cookie: str | None) -> tuple[int, object]:
        status, _, text = self.request("GET", path, cookie=cookie)
        return status, json.loads(text)


@contextmanager
def running_desk(env: dict[str, str], **settings: str) -> Iterator[Desk]:
    """`rollout web` started as its own process; stopped with SIGTERM, which must end it cleanly."""
    port = free_port()
    settings = {"status_refresh_seconds": "0", **settings}  # tests change the database while it runs
    env = {**env, "ROLLOUT_NOW": NOW.isoformat(), **{f"ROLLOUT_WEB_{k.upper()}": v for k, v in settings.items()}}
    process = subprocess.Popen(
        [sys.executable, "-m", "rollout", "web", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    desk = Desk(f"http://127.0.0.1:{port}", process, port)
    try:
        _wait_until_listening(desk)
        yield desk
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 0, f"rollout web did not stop cleanly on SIGTERM:\n{output}"


def _wait_until_listening(desk: Desk) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if desk.process.poll() is not None:
            raise AssertionError(f"rollout web exited early:\n{desk.process.communicate()[0].decode()}")
        try:
            with socket.create_connection(("127.0.0.1", desk.port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("rollout web did not start listening")


def clean_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("ROLLOUT_WEB_")} | {"PYTHONUNBUFFERED": "1", **_no_proxy()}


def _no_proxy() -> dict[str, str]:
    return (
        {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"} if os.environ.get("http_proxy") else {}
    )
