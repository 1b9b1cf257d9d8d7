"""The support desk as a WSGI application: routing, login, rendering. Read-only except for its audit rows.

Hand-written routing over the standard library: eight routes, one form, one cookie. A framework
would bring more code than it saves here; waitress (see ``server``) does the HTTP.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import date, datetime
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from ... import audit
from ...resources import templates_dir
from ...rules import PHASES
from ...runtime import Runtime
from .. import accounts
from .. import lookup as lookup_model
from ..lookup import NotFound, matching_customers
from ..operate_workflow import refused_reply_text, rollout_status
from ..status import Status
from . import chart, pages
from .i18n import choose_language, translator
from .sessions import COOKIE_NAME, LoginLimiter, read_session, sign_session

log = logging.getLogger(__name__)
MAX_FORM_BYTES = 4096
StartResponse = Callable[[str, list[tuple[str, str]]], Any]
SECURITY_HEADERS = [
    # Pages show customers' personal data: no caching, no framing, no referrer leaking addresses in URLs.
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


@dataclass
class Request:
    environ: dict[str, Any]
    method: str
    path: str
    query: dict[str, str]
    language: str
    form: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    # The request's reads share one session (one connection, one transaction: the login check, the page's
    # queries); it connects at its first query. The audit row is written in a transaction of its own.
    db: Session | None = None

    @property
    def session(self) -> Session:
        assert self.db is not None, "only while SupportDesk serves the request"
        return self.db

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> Request:
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        request = cls(
            environ,
            environ.get("REQUEST_METHOD", "GET"),
            _path(environ),
            query,
            choose_language(environ.get("HTTP_ACCEPT_LANGUAGE")),
        )
        if request.method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(min(length, MAX_FORM_BYTES)).decode("utf-8", "replace")
            request.form = {k: v[0] for k, v in parse_qs(body).items()}
        return request

    def cookie(self, name: str) -> str | None:
        try:
            morsel = SimpleCookie(self.environ.get("HTTP_COOKIE", "")).get(name)
        except CookieError:
            return None
        return morsel.value if morsel else None

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(HTTPStatus.SEE_OTHER, b"", headers=[("Location", location)])

    @classmethod
    def json(cls, value: Any, status: int = HTTPStatus.OK) -> Response:
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        return cls(
            status, json.dumps(value, default=_json_value, ensure_ascii=False, indent=1).encode(), "application/json"
        )


def _json_value(value: Any) -> str:
    """What JSON has no type for: times as ISO 8601, anything else as its text."""
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


class StatusCache:
    """`rollout status` for the overview, recomputed in the background every ``seconds`` (0: on every request).

    The status aggregates every mailbox (seconds at a million); support needs it fresh to the
    minute, not to the request, and the page says when it was computed.
    """

    def __init__(self, compute: Callable[[], Status], seconds: float) -> None:
        self.compute, self.seconds = compute, seconds
        self.latest: Status | None = None
        self.lock = threading.Lock()

    def get(self) -> Status:
        if self.seconds <= 0:
            return self.compute()
        with self.lock:
            if self.latest is None:
                self.latest = self.compute()
                threading.Thread(target=self._refresh, name="status-refresh", daemon=True).start()
            return self.latest

    def _refresh(self) -> None:
        pause = self.seconds
        while True:
            time.sleep(pause)
            started = time.monotonic()
            try:
                self.latest = self.compute()
            except Exception:  # noqa: BLE001 - keep serving the last good status; the log says why
                log.exception("refreshing the status failed; the overview shows the previous one")
            # A status that takes long (a million mailboxes on a busy host) gets at most a quarter of
            # the time, so the pages keep the rest.
            pause = max(self.seconds, 3 * (time.monotonic() - started))


class SupportDesk:
    """``SupportDesk(runtime, key)`` is the WSGI callable that waitress serves."""

    def __init__(self, runtime: Runtime, key: bytes, monotonic: Callable[[], float] = time.monotonic) -> None:
        web = runtime.settings.web
        self.runtime, self.key, self.settings = runtime, key, web
        self.limiter = LoginLimiter(web.login_attempts, web.lockout_minutes * 60.0, monotonic)
        self.status = StatusCache(lambda: rollout_status(runtime), web.status_refresh_seconds)
        self.reply = refused_reply_text(runtime)
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in web.trusted_proxies]
        folder = templates_dir() / "web"
        self.templates = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["stamp"] = stamp
        self.templates.filters["percent"] = lambda share: f"{share * 100:.1f} %"
        self.templates.globals["quote"] = lambda text: quote(text, safe="")
        self.templates.globals["phases"] = PHASES
        self.templates.globals["wave_columns"] = wave_columns
        self.templates.globals["extra_fields"] = extra_fields
        self.templates.globals["row_cells"] = row_cells
        self.stylesheet = (folder / "style.css").read_bytes()
        self.routes: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
            (re.compile(r"/"), self.overview),
            (re.compile(r"/search"), self.search),
            (re.compile(r"/customer/(?P<customer_id>[^/]+)"), self.customer),
            (re.compile(r"/cohort/(?P<position>\d{1,4})"), self.cohort),
            (re.compile(r"/api/status"), self.api_status),
            (re.compile(r"/api/search"), self.api_search),
            (re.compile(r"/api/customer/(?P<customer_id>[^/]+)"), self.api_customer),
            (re.compile(r"/api/cohort/(?P<position>\d{1,4})"), self.api_cohort),
        ]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request.from_environ(environ)
        with self.runtime.sessions() as session:
            request.db = session
            response = self.respond(request)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *SECURITY_HEADERS,
            *response.headers,
        ]
        start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
        return [response.body]

    def respond(self, request: Request) -> Response:
        if request.path == "/static/style.css":
            return Response(HTTPStatus.OK, self.stylesheet, "text/css; charset=utf-8")
        if request.path == "/login":
            return self.login(request)
        if request.path == "/logout" and request.method == "POST":
            return self.logout(request)
        request.user = self.authenticate(request)
        if request.user is None:
            if request.path.startswith("/api/"):
                return Response.json({"error": "log in first"}, HTTPStatus.UNAUTHORIZED)
            return Response.redirect("/login?" + urlencode({"next": _with_query(request)}))
        if request.method != "GET":
            return Response(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only", "text/plain")
        for pattern, view in self.routes:
            match = pattern.fullmatch(request.path)
            if match:
                return view(request, **match.groupdict())
        return self.not_found(request)

    # --- who is asking ----------------------------------------------------------------------

    def authenticate(self, request: Request) -> str | None:
        """The signed-in user: a valid session cookie of an existing account, or the SSO proxy's header."""
        if self.settings.trusted_header and self._from_trusted_proxy(request):
            named = (request.header(self.settings.trusted_header) or "").strip()
            if named:
                return named
        cookie = request.cookie(COOKIE_NAME)
        user = read_session(self.key, cookie, time.time()) if cookie else None
        if user is None:
            return None
        return user if accounts.user_exists(request.session, user) else None  # a removed account is out at once

    def _from_trusted_proxy(self, request: Request) -> bool:
        try:
            peer = ipaddress.ip_address(request.environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(peer in network for network in self.proxies)

    def client_address(self, request: Request) -> str:
        """The browser's address: behind a trusted proxy the last hop it added to X-Forwarded-For."""
        forwarded = request.header("X-Forwarded-For")
        if forwarded and self._from_trusted_proxy(request):
            return forwarded.split(",")[-1].strip()
        return str(request.environ.get("REMOTE_ADDR", ""))

    def over_tls(self, request: Request) -> bool:
        if request.environ.get("wsgi.url_scheme") == "https":
            return True
        return self._from_trusted_proxy(request) and request.header("X-Forwarded-Proto") == "https"

    # --- logging in and out -----------------------------------------------------------------

    def login(self, request: Request) -> Response:
        target = _safe_next(request.form.get("next") or request.query.get("next"))
        if request.method != "POST":
            return self.page(request, "login.html.j2", code=HTTPStatus.OK, next=target, message=None, name="")
        if not self._same_origin(request):
            return Response(HTTPStatus.FORBIDDEN, b"cross-site login refused", "text/plain")
        name, password = request.form.get("name", "").strip(), request.form.get("password", "")
        address = self.client_address(request)
        if self.limiter.blocked(name, address):
            message = "Too many failed logins: try again in a few minutes."
            return self.page(
                request, "login.html.j2", code=HTTPStatus.TOO_MANY_REQUESTS, next=target, message=message, name=name
            )
        with self.runtime.sessions() as session:
            valid = bool(name) and accounts.check_password(session, name, password)
        if not valid:
            self.limiter.failed(name, address)
            message = "Wrong account or password."
            return self.page(
                request, "login.html.j2", code=HTTPStatus.UNAUTHORIZED, next=target, message=message, name=name
            )
        self.limiter.succeeded(name)
        hours = self.settings.session_hours
        cookie = sign_session(self.key, name, time.time() + hours * 3600)
        response = Response.redirect(target)
        response.headers.append(("Set-Cookie", self._cookie(request, cookie, int(hours * 3600))))
        return response

    def logout(self, request: Request) -> Response:
        response = Response.redirect("/login")
        response.headers.append(("Set-Cookie", self._cookie(request, "", 0)))
        return response

    def _cookie(self, request: Request, value: str, max_age: int) -> str:
        secure = "; Secure" if self.over_tls(request) else ""
        return f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"

    def _same_origin(self, request: Request) -> bool:
        origin = request.header("Origin")
        return origin is None or origin == "null" or origin.split("://", 1)[-1] == request.header("Host")

    # --- pages -------------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        status = self.status.get()
        bars = chart.trend_bars([(w.week, w.mailboxes) for w in status.trend])
        return self.page(
            request,
            "overview.html.j2",
            status=status,
            bars=bars,
            chart=chart,
            ambiguous=status.open_sightings,
            held_back=status.held_count,
            lists=[(title, getattr(status, name)) for name, title in LISTED if getattr(status, name, None)],
        )

    def search(self, request: Request) -> Response:
        query = request.query.get("q", "").strip()
        found = [(c.external_id, c.name, c.email, how) for c, how in matching_customers(request.session, query)]
        if len(found) == 1:
            return Response.redirect(f"/customer/{quote(found[0][0], safe='')}?" + urlencode({"q": query}))
        code = HTTPStatus.OK if found else HTTPStatus.NOT_FOUND
        return self.page(request, "search.html.j2", code=code, query=query, found=found)

    def customer(self, request: Request, customer_id: str) -> Response:
        report = self._lookup(request, customer_id)
        if report is None:
            return self.not_found(request)
        return self.page(request, "customer.html.j2", report=report)

    def cohort(self, request: Request, position: str) -> Response:
        page = self._cohort(request, position)
        if page is None:
            return self.not_found(request)
        return self.page(request, "cohort.html.j2", cohort=page, request_after=request.query.get("after", ""))

    def not_found(self, request: Request) -> Response:
        return self.page(request, "not_found.html.j2", code=HTTPStatus.NOT_FOUND)

    def page(self, request: Request, template: str, code: int = HTTPStatus.OK, **context: Any) -> Response:
        html = self.templates.get_template(template).render(
            _=translator(request.language),
            lang=request.language,
            user=request.user,
            q=request.query.get("q", ""),
            now=self.runtime.clock.now(),
            **context,
        )
        return Response(code, html.encode())

    # --- the API: the same reads as JSON -------------------------------------------------------

    def api_status(self, request: Request) -> Response:
        return Response.json(self.status.get())

    def api_search(self, request: Request) -> Response:
        found = matching_customers(request.session, request.query.get("q", ""))
        rows = [{"customer_id": c.external_id, "name": c.name, "email": c.email, "matched": how} for c, how in found]
        return Response.json({"query": request.query.get("q", ""), "customers": rows})

    def api_customer(self, request: Request, customer_id: str) -> Response:
        report = self._lookup(request, customer_id)
        return Response.json(report) if report else Response.json({"error": "no such customer"}, HTTPStatus.NOT_FOUND)

    def api_cohort(self, request: Request, position: str) -> Response:
        page = self._cohort(request, position)
        return Response.json(page) if page else Response.json({"error": "no such cohort"}, HTTPStatus.NOT_FOUND)

    # --- shared by the page and the API ------------------------------------------------------

    def _lookup(self, request: Request, customer_id: str) -> Any:
        """`rollout lookup` of the customer (the searched mailbox first), audited: support sees personal data."""
        query = request.query.get("q", "").strip()
        try:
            report = lookup_model.lookup(request.session, query, self.reply) if query else None
            if report is None or report.customer_id != customer_id:
                report = lookup_model.lookup(request.session, customer_id, self.reply)
        except NotFound:
            return None
        if report.customer_id != customer_id:  # a customer id that is also someone's login
            return None
        with self.runtime.sessions() as session, session.begin():
            audit.record(
                session,
                self.runtime.clock.now(),
                f"web:{request.user}",
                "web.customer_view",
                customer=customer_id,
                query=query or customer_id,
                client=self.client_address(request),
            )
        return report

    def _cohort(self, request: Request, position: str) -> pages.CohortPage | None:
        chosen = request.query.get("filter", "all")
        after = request.query.get("after", "")
        return pages.cohort_page(
            request.session,
            int(position),
            chosen if chosen in pages.FILTERS else "all",
            int(after) if after.isdigit() else 0,
            self.runtime.settings.notices.lookback_days,
            self.runtime.clock.now(),
        )


def wave_columns(wave: Any) -> list[str]:
    """The counts a wave has (sent, failed, …): whatever ``rollout.support.status`` reports, in its order."""
    return [f.name for f in fields(wave) if f.name != "wave" and isinstance(getattr(wave, f.name), int)]


# Lists in `rollout status` the overview shows as plain tables, whatever their rows carry.
LISTED = (("held", "Held back from the switch-off"), ("unreachable", "Customers whose latest notice bounced"))
SHOWN_MAILBOX_FIELDS = {
    "address",
    "login",
    "legacy",
    "cohort",
    "exemption",
    "refused_reply",
    "evidence",
    "evidence_day",
}


def extra_fields(report: Any) -> list[tuple[str, str]]:
    """What `rollout lookup` reports about a mailbox beyond what the page lays out itself, as plain text."""
    shown = []
    for f in fields(report):
        value = getattr(report, f.name)
        if f.name in SHOWN_MAILBOX_FIELDS or value in (None, "", [], {}, False):
            continue
        if is_dataclass(value) and not isinstance(value, type):
            value = "; ".join(
                f"{k} {stamp(v) if isinstance(v, datetime) else v}"
                for k, v in asdict(value).items()
                if v not in (None, "")
            )
        elif isinstance(value, datetime):
            value = stamp(value)
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        shown.append((f.name.replace("_", " "), str(value)))
    return shown


def row_cells(row: Any) -> list[tuple[str, str]]:
    """A dataclass row as (column, text) pairs: lists from `rollout status` render without knowing their shape."""
    cells = []
    for f in fields(row):
        value = getattr(row, f.name)
        if isinstance(value, datetime):
            value = stamp(value)
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        cells.append((f.name.replace("_", " "), "" if value is None else str(value)))
    return cells


def _path(environ: dict[str, Any]) -> str:
    """PATH_INFO as text: WSGI hands it over as bytes decoded as Latin-1 (PEP 3333); URLs are UTF-8."""
    raw = str(environ.get("PATH_INFO") or "/")
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "–"


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a login link must not send the user elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _with_query(request: Request) -> str:
    query = request.environ.get("QUERY_STRING", "")
    return request.path + ("?" + query if query else "")
