"""Serving the support desk with waitress until SIGTERM or Ctrl-C.

waitress: pure Python (no compiler on the ops host), production-grade and maintained by the Pylons
project, runs the same on every platform, and its ``run()`` closes the listening socket and lets
running requests finish when the loop is told to exit, which is what SIGTERM does here.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress.server import create_server

from ...errors import RolloutError
from ...runtime import Runtime
from .. import accounts
from .app import SupportDesk

log = logging.getLogger(__name__)


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RolloutError(f"web.bind {bind!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


def serve(app: Any, bind: str, threads: int, on_ready: Callable[[str], None] = lambda url: None) -> None:
    host, port = parse_bind(bind)
    try:
        server = create_server(
            app, host=host, port=port, threads=threads, ident="rollout", clear_untrusted_proxy_headers=False
        )
    except OSError as exc:
        raise RolloutError(f"cannot listen on {bind}: {exc.strerror or exc}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)  # waitress's run() closes the server on SystemExit

    previous = signal.signal(signal.SIGTERM, stop)
    on_ready(f"http://{host}:{port}/" if ":" not in host else f"http://[{host}]:{port}/")
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        log.info("support desk stopped")


def serve_desk(runtime: Runtime, bind: str | None = None, on_ready: Callable[[str], None] = lambda url: None) -> None:
    """`rollout web`: serve until SIGTERM; the cookie key is made on the first start and kept in the database."""
    with runtime.sessions() as session, session.begin():
        key = accounts.cookie_key(session, runtime.clock.now())
    serve(SupportDesk(runtime, key), bind or runtime.settings.web.bind, runtime.settings.web.threads, on_ready)
