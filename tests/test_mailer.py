"""SMTP sending against aiosmtpd: STARTTLS and implicit TLS with AUTH, reply handling, the rate limit."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from rollout.config import SmtpSettings
from rollout.errors import DeliveryError
from rollout.notify.mailer import RateLimiter, SmtpConnection

from .campaign_support import Inbox, free_port

HOST = "127.0.0.32"
MESSAGE = b"From: a@example.net\r\nTo: b@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.net>\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=IP:{HOST}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN201 - aiosmtpd's hook
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"notices", b"s3cret"), handled=False)


def server(certificate: tuple[Path, Path], implicit: bool) -> tuple[Controller, Inbox, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    inbox, port = Inbox(), free_port(HOST)
    tls = (
        {"ssl_context": context, "auth_require_tls": False}
        if implicit
        else {"tls_context": context, "require_starttls": True}
    )
    controller = Controller(
        inbox, hostname=HOST, port=port, authenticator=authenticator, auth_required=True, ready_timeout=5, **tls
    )
    controller.start()
    return controller, inbox, port


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # implicit TLS: aiosmtpd cannot tell
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_auth_deliver_over_one_reused_connection(certificate: tuple[Path, Path], security: str) -> None:
    """STARTTLS and implicit TLS with AUTH work; several messages share one session."""
    controller, inbox, port = server(certificate, implicit=security == "tls")
    try:
        settings = SmtpSettings(
            host=HOST,
            port=port,
            security=security,
            username="notices",
            password="s3cret",
            ca_file=str(certificate[0]),
            timeout_seconds=5,
        )
        smtp = SmtpConnection(settings, RateLimiter(0))
        results = [smtp.send("a@example.net", f"b{i}@example.org", MESSAGE) for i in range(3)]
        smtp.close()
    finally:
        controller.stop()
    assert [r.status for r in results] == ["sent"] * 3
    assert len(inbox.messages) == 3


def test_wrong_password_is_a_clear_error(certificate: tuple[Path, Path]) -> None:
    """A refused AUTH stops with a message naming the user and server."""
    controller, inbox, port = server(certificate, implicit=False)
    try:
        settings = SmtpSettings(
            host=HOST,
            port=port,
            security="starttls",
            username="notices",
            password="wrong",
            ca_file=str(certificate[0]),
            timeout_seconds=5,
        )
        with pytest.raises(DeliveryError, match=r"SMTP AUTH as notices at 127.0.0.32:\d+ refused: 535"):
            SmtpConnection(settings, RateLimiter(0)).send("a@example.net", "b@example.org", MESSAGE)
    finally:
        controller.stop()
    assert inbox.messages == []


def test_username_without_password_is_a_clear_error() -> None:
    """A configured user without a password says where the password must come from."""
    settings = SmtpSettings(host=HOST, port=free_port(HOST), username="notices")
    smtp = SmtpConnection(settings, RateLimiter(0))
    with pytest.raises(DeliveryError, match="ROLLOUT_SMTP_PASSWORD"):
        smtp._connect()


def test_unreachable_server_is_deferred_not_failed() -> None:
    """No server at all: the message is deferred (stays pending), never marked failed."""
    settings = SmtpSettings(host=HOST, port=free_port(HOST), retries=1, retry_backoff_seconds=0.01, timeout_seconds=2)
    delivery = SmtpConnection(settings, RateLimiter(0)).send("a@example.net", "b@example.org", MESSAGE)
    assert (delivery.status, delivery.attempts) == ("deferred", 2) and delivery.reply.startswith("connection:")


def test_rate_limit_spaces_sends_at_send_time() -> None:
    """At 10 messages/s the limiter holds each send until its slot (checked with a fake clock)."""
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert slept == [0.1, 0.2]
    now[0] += 5  # idle time is not banked as a burst beyond one slot
    limiter.acquire()
    limiter.acquire()
    assert slept == [0.1, 0.2, 0.1]


@pytest.mark.slow
def test_pipelined_sending_to_postfix_smtp_sink() -> None:
    """Against Postfix's smtp-sink (which offers PIPELINING) messages go out pipelined on one session."""
    import os
    import socket
    import time

    port = free_port(HOST)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        ["smtp-sink", *user, f"{HOST}:{port}", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        smtp = SmtpConnection(SmtpSettings(host=HOST, port=port, timeout_seconds=5), RateLimiter(0))
        results = [
            smtp.send("a@example.net", f"b{i}@example.org", MESSAGE.replace(b"hello", b".leading dot\r\nhello"))
            for i in range(20)
        ]
        assert smtp._smtp is not None and smtp._smtp.has_extn("pipelining")
        smtp.close()
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    assert {r.status for r in results} == {"sent"} and {r.attempts for r in results} == {1}
