"""`rollout web`: logins, the rate limit, single sign-on, escaping, the audit of customer views, accounts, the API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from rollout.models import AuditEvent, WebUser
from rollout.runtime import Runtime
from rollout.support.web.i18n import choose_language
from rollout.support.web.sessions import LoginLimiter, read_session, sign_session

from .conftest import Cli
from .operate_support import NOW
from .web_support import HOSTILE_NAME, PASSWORD, USER, Desk, build_desk_database, clean_env, running_desk


@pytest.fixture
def desk(runtime: Runtime, cli_env: dict[str, str]) -> Iterator[Desk]:
    build_desk_database(runtime)
    with running_desk(clean_env(cli_env), login_attempts="3") as running:
        yield running


def test_without_a_session_pages_go_to_the_login_and_the_api_says_401(desk: Desk) -> None:
    """No page and no API call without a login; a forged cookie counts as none."""
    for path in ("/", "/customer/K-1", "/cohort/1", "/search?q=anna%40acme.example"):
        status, headers, _ = desk.request("GET", path)
        assert status == 303 and headers["location"].startswith("/login?next=")
    status, _, page = desk.request("GET", "/login")
    assert status == 200 and 'name="password"' in page
    assert desk.json("/api/status", None) == (401, {"error": "log in first"})
    forged = "rollout_session=" + sign_session(b"not the key", USER, 4_000_000_000)
    assert desk.json("/api/customer/K-1", forged)[0] == 401


def test_login_sets_a_safe_cookie_and_logout_ends_the_session(desk: Desk) -> None:
    """The right password gives an HttpOnly, SameSite=Lax cookie that opens the API; logout clears it."""
    status, headers, _ = desk.request("POST", "/login", {"name": USER, "password": PASSWORD, "next": "//evil.example/"})
    assert status == 303 and headers["location"] == "/"  # never sent to another site after login
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain HTTP on loopback
    session = cookie.split(";", 1)[0]
    status, data = desk.json("/api/status", session)
    assert status == 200 and data["phase"] == "switch-off" and [c["label"] for c in data["cohorts"]] == ["a–m", "n–z"]
    status, headers, _ = desk.request("POST", "/logout", cookie=session)
    assert status == 303 and "Max-Age=0" in headers["set-cookie"]
    _, headers, _ = desk.request(
        "POST", "/login", {"name": USER, "password": PASSWORD}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" not in headers["set-cookie"]  # that header counts only from a trusted proxy


def test_wrong_password_is_refused_and_repeated_failures_lock_the_account(desk: Desk) -> None:
    """A wrong password gets 401 and no cookie; after three failures even the right password waits (429)."""
    status, cookie = desk.login(password="wrong password!")
    assert (status, cookie) == (401, None)
    status, _, page = desk.request("POST", "/login", {"name": USER, "password": "still wrong"})
    assert status == 401 and "Wrong account or password." in page
    desk.login(password="third wrong one")
    status, _, page = desk.request("POST", "/login", {"name": USER, "password": PASSWORD})
    assert status == 429 and "Too many failed logins" in page
    assert desk.login(name="nobody", password="x" * 12)[0] == 429  # the same address is locked too


def test_trusted_header_is_ignored_unless_enabled_and_sent_by_a_trusted_proxy(
    runtime: Runtime, cli_env: dict[str, str]
) -> None:
    """X-Remote-User logs nobody in by default, nor from an untrusted address; from a trusted proxy it does."""
    build_desk_database(runtime)
    sso = {"X-Remote-User": "carol"}
    with running_desk(clean_env(cli_env)) as desk:  # off by default
        assert desk.request("GET", "/api/status", headers=sso)[0] == 401
    with running_desk(clean_env(cli_env), trusted_header="X-Remote-User", trusted_proxies="192.0.2.10") as desk:
        assert desk.request("GET", "/api/status", headers=sso)[0] == 401  # we are 127.0.0.1, not the proxy
    with running_desk(clean_env(cli_env), trusted_header="X-Remote-User", trusted_proxies="127.0.0.0/8") as desk:
        assert desk.request("GET", "/api/status", headers=sso)[0] == 200
        assert desk.request("GET", "/api/status", headers={"X-Remote-User": ""})[0] == 401
        assert desk.request("GET", "/customer/K-2", headers=sso)[0] == 200
        tls = {"X-Forwarded-Proto": "https"}
        _, headers, _ = desk.request("POST", "/login", {"name": USER, "password": PASSWORD}, headers=tls)
        assert "; Secure" in headers["set-cookie"]  # the proxy terminates TLS: the cookie is sent over HTTPS only
    with runtime.sessions() as s:
        assert s.scalars(select(AuditEvent.actor).where(AuditEvent.action == "web.customer_view")).all() == [
            "web:carol"
        ]


def test_customer_name_with_html_is_shown_escaped(desk: Desk) -> None:
    """A customer named like a script tag is text on the page, not markup."""
    session = desk.login()[1]
    status, _, page = desk.request("GET", "/customer/K-3", cookie=session)
    assert status == 200
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Söhne" in page
    assert "<script>" not in page
    assert desk.json("/api/customer/K-3", session)[1]["customer_name"] == HOSTILE_NAME  # type: ignore[index]


def test_each_customer_view_is_audited_with_who_and_which_customer(desk: Desk, runtime: Runtime) -> None:
    """Page and API views of a customer each leave an audit row: the account, the customer, what was searched."""
    session = desk.login()[1]
    status, headers, _ = desk.request("GET", "/search?q=ANNA%40acme.EXAMPLE", cookie=session)
    assert status == 303 and headers["location"] == "/customer/K-1?q=ANNA%40acme.EXAMPLE"
    assert desk.request("GET", headers["location"], cookie=session)[0] == 200
    assert desk.json("/api/customer/K-2", session)[0] == 200
    desk.request("GET", "/", cookie=session)  # the overview shows no personal data: not audited
    with runtime.sessions() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "web.customer_view").order_by(AuditEvent.id)
        ).all()
        assert [(r.actor, r.details["customer"], r.details["query"]) for r in rows] == [
            ("web:support", "K-1", "ANNA@acme.EXAMPLE"),
            ("web:support", "K-2", "K-2"),
        ]
        assert rows[0].details["client"] == "127.0.0.1"


def test_search_by_login_customer_id_and_contact_address_and_unknown(desk: Desk) -> None:
    """A POP login, a customer id in another case and a contact address find the customer; nothing found: 404."""
    session = desk.login()[1]
    for query, customer in (("web1p2", "K-1"), ("k-2", "K-2"), ("Billing@ACME.example", "K-1")):
        status, headers, _ = desk.request("GET", f"/search?q={query}", cookie=session)
        assert status == 303 and headers["location"].startswith(f"/customer/{customer}?"), query
    status, _, page = desk.request("GET", "/search?q=nobody%40acme.example", cookie=session)
    assert status == 404 and "Nothing found for" in page
    assert desk.json("/api/search?q=Billing%40ACME.example", session)[1] == {
        "query": "Billing@ACME.example",
        "customers": [
            {"customer_id": "K-1", "name": "Acme GmbH", "email": "billing@acme.example", "matched": "customer email"}
        ],
    }


def test_cohort_api_pages_and_filters(desk: Desk) -> None:
    """A cohort's mailboxes as JSON, filtered to the ones still on the legacy path or refused since the switch-off."""
    session = desk.login()[1]
    _, everyone = desk.json("/api/cohort/1", session)
    assert [r["address"] for r in everyone["rows"]] == ["Anna@acme.example", "bert@acme.example"]  # type: ignore[index]
    _, refused = desk.json("/api/cohort/1?filter=refused", session)
    assert [(r["address"], r["refusals"]) for r in refused["rows"]] == [("Anna@acme.example", 3)]  # type: ignore[index]
    _, legacy = desk.json("/api/cohort/2?filter=legacy", session)
    assert [r["address"] for r in legacy["rows"]] == ["nina@home.example"]  # type: ignore[index]
    assert desk.json("/api/cohort/9", session)[0] == 404


def test_refused_filter_counts_from_the_switch_off_day(desk: Desk, runtime: Runtime) -> None:
    """Refusals before a cohort's switch-off day neither list a mailbox as refused nor add to its count."""
    from datetime import timedelta

    from rollout.models import LegacyDay, Mailbox

    from .operate_support import SWITCHED_AT

    with runtime.sessions() as s, s.begin():
        bert = s.scalar(select(Mailbox.id).where(Mailbox.address == "bert@acme.example"))
        for days, refused in ((-2, 4), (1, 1)):  # two days before the switch-off, the day after
            day = SWITCHED_AT + timedelta(days=days)
            s.add(LegacyDay(mailbox_id=bert, day=day.date(), client_ips=[], senders=[], refused_count=refused))
    session = desk.login()[1]
    _, refused = desk.json("/api/cohort/1?filter=refused", session)
    rows = [(r["address"], r["refusals"]) for r in refused["rows"]]  # type: ignore[index]
    assert rows == [("Anna@acme.example", 3), ("bert@acme.example", 1)]


def test_pages_change_nothing(desk: Desk) -> None:
    """Anything but GET on a page is refused: the desk is read-only."""
    session = desk.login()[1]
    assert desk.request("POST", "/customer/K-1", {"x": "1"}, cookie=session)[0] == 405


def test_user_add_asks_twice_list_and_remove(run: Cli, runtime: Runtime) -> None:
    """Accounts: the password is asked twice and stored as an argon2id hash; list (also JSON); remove."""
    result = run(
        "web", "user", "add", "dora", input="a long passphrase\na different one\na long passphrase\na long passphrase\n"
    )
    assert "account dora created" in result.output
    with runtime.sessions() as s:
        stored = s.scalars(select(WebUser.password_hash).where(WebUser.name == "dora")).one()
    assert stored.startswith("$argon2id$") and "a long passphrase" not in stored
    assert run("web", "user", "add", "dora", input="a long passphrase\na long passphrase\n", expect=1).output.endswith(
        "Error: account 'dora' exists already (remove it first to set a new password)\n"
    )
    assert "at least 10 characters" in run("web", "user", "add", "eve", input="short\nshort\n", expect=1).output
    assert [u["name"] for u in json.loads(run("web", "user", "list", "--json").output)] == ["dora"]
    run("web", "user", "remove", "dora")
    assert "there is no account 'dora'" in run("web", "user", "remove", "dora", expect=1).output


def test_a_removed_account_loses_its_open_session(desk: Desk, run: Cli) -> None:
    """Removing an account ends its sessions at once (each request checks the account still exists)."""
    session = desk.login()[1]
    assert desk.json("/api/status", session)[0] == 200
    run("web", "user", "remove", USER)
    assert desk.json("/api/status", session)[0] == 401


def test_bad_bind_is_a_clear_error(run: Cli, runtime: Runtime) -> None:
    """A --bind that is not HOST:PORT exits 1 with Error:, before anything listens."""
    assert "is not HOST:PORT" in run("web", "--bind", "localhost", expect=1).output


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("en-US,en;q=0.9,de;q=0.8", "en"),
        ("fr-FR,de;q=0.5", "de"),
        ("fr", "en"),
        (None, "en"),
        ("en;q=0.1, de;q=0.9", "de"),
    ],
)
def test_language_follows_the_browser(header: str | None, language: str) -> None:
    """German or English by Accept-Language and its q-values; English when neither is asked for."""
    assert choose_language(header) == language


def test_session_cookie_expires_and_cannot_be_altered() -> None:
    """A cookie is good until its expiry and only with its signature intact."""
    cookie = sign_session(b"k" * 32, "anna", expires=1000)
    assert read_session(b"k" * 32, cookie, now=999) == "anna"
    assert read_session(b"k" * 32, cookie, now=1000) is None
    payload, _, mac = cookie.partition(".")
    assert read_session(b"k" * 32, sign_session(b"k" * 32, "root", 1000).split(".")[0] + "." + mac, now=1) is None


def test_login_limiter_counts_per_account_and_per_address_within_the_window() -> None:
    """Failures lock an account from every address and an address for every account, until the window passes."""
    now = [0.0]
    limiter = LoginLimiter(attempts=2, window=60, clock=lambda: now[0])
    limiter.failed("anna", "192.0.2.1")
    assert not limiter.blocked("anna", "192.0.2.1")
    limiter.failed("Anna", "192.0.2.2")
    assert limiter.blocked("anna", "198.51.100.9")  # the account, from anywhere
    assert not limiter.blocked("bert", "192.0.2.1")
    limiter.failed("bert", "192.0.2.1")
    assert limiter.blocked("carol", "192.0.2.1")  # the address, for any account
    now[0] = 61
    assert not limiter.blocked("anna", "192.0.2.1")


def test_customer_id_with_non_ascii_characters_has_its_page(desk: Desk, runtime: Runtime) -> None:
    """A customer id such as K-Müller-7 is found by search and its page address works (UTF-8 in the URL)."""
    from rollout.models import Customer

    with runtime.sessions() as s, s.begin():
        s.add(
            Customer(
                external_id="K-Müller-7",
                email="m@x.example",
                name="Müller",
                locale="de",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    session = desk.login()[1]
    status, headers, _ = desk.request("GET", "/search?q=K-M%C3%BCller-7", cookie=session)
    assert status == 303 and headers["location"].startswith("/customer/K-M%C3%BCller-7?")
    status, _, page = desk.request("GET", headers["location"], cookie=session)
    assert status == 200 and "K-Müller-7: Müller" in page


def test_overview_counts_open_ambiguous_sightings(desk: Desk, runtime: Runtime) -> None:
    """An ambiguous sighting waiting for ops shows on the overview (the status is recomputed for the page)."""
    from rollout.models import ReviewItem

    session = desk.login()[1]
    assert "Ambiguous sightings" not in desk.request("GET", "/", cookie=session)[2]
    with runtime.sessions() as s, s.begin():
        s.add(
            ReviewItem(
                kind="ambiguous",
                at=NOW,
                host="mx1",
                queue_id="4XYZ",
                client_ip="198.51.100.7",
                sender=None,
                candidates=["anna", "bert"],
                evidence=[],
            )
        )
    page = desk.request("GET", "/", cookie=session)[2]
    assert "Ambiguous sightings open for review: <b>1</b>" in page


def test_status_cache_computes_once_then_serves_the_latest() -> None:
    """With a refresh interval the overview's status is computed once and then served; with 0, on every request."""
    from rollout.support.web.app import StatusCache

    computed: list[int] = []

    def compute() -> object:
        computed.append(1)
        return len(computed)

    cache = StatusCache(compute, seconds=3600)  # type: ignore[arg-type]
    assert (cache.get(), cache.get(), len(computed)) == (1, 1, 1)
    fresh = StatusCache(compute, seconds=0)  # type: ignore[arg-type]
    assert (fresh.get(), fresh.get()) == (2, 3)
