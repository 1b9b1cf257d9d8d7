"""`rollout lookup`: one customer on one screen for support, by address, login or customer id."""

import json

from rollout.runtime import Runtime

from .conftest import Cli
from .operate_support import ANNA_LINE, NOW, build_rollout


def test_lookup_by_address_is_case_insensitive_and_shows_everything(run: Cli, runtime: Runtime) -> None:
    """An address in any case finds the customer, its mailboxes, the reply text, evidence and notices."""
    build_rollout(runtime)
    runtime.clock.set(NOW)  # type: ignore[attr-defined]
    out = run("lookup", "ANNA@Acme.Example").output
    assert out.startswith("customer K-1: Acme GmbH <billing@acme.example> (de), 3 mailboxes\n\nAnna@acme.example\n")
    assert "legacy use: last 2026-03-07 12:00 from 198.51.100.7, 4 submissions on 1 days, confidence high" in out
    assert "cohort 1 (a–m): scheduled 2026-03-17 09:00; switched off 2026-03-17 09:00, stage reject" in out
    assert "refused by our map: 3 times, last 2026-03-20 10:00" in out
    assert (
        "554 5.7.1 <Anna@acme.example>: Sender address rejected: SMTP-after-POP is switched off for Anna@acme.example"
        in out
    )
    assert f"/var/log/mail.log:1234: {ANNA_LINE}" in out
    assert "SMTP AUTH: last 2026-03-12 09:00  → switched" in out  # bert
    assert (
        "zoe@acme.example\n  legacy use: none seen\n  cohort 2 (n–z): scheduled 2026-03-23 09:00; not yet switched off"
        in out
    )
    assert (
        "3  reminder  sent             2026-03-16 09:00  <rollout.1.3.K-1@example.net>  "
        "Anna@acme.example, bert@acme.example" in out
    )


def test_lookup_json_by_customer_id(run: Cli, runtime: Runtime) -> None:
    """JSON by customer id: exemption, no refusal while exempt and pending, notices with their states."""
    build_rollout(runtime)
    data = json.loads(run("lookup", "K-2", "--json").output)
    assert (data["matched"], data["customer_name"], data["mailbox_count"]) == ("customer", "Nina Solo", 1)
    (nina,) = data["mailboxes"]
    assert nina["exemption"] == {
        "until": "2026-03-25T09:00:00+00:00",
        "reason": "travelling, back Friday",
        "actor": "support",
        "active": True,
    }
    assert nina["refused_reply"] is None and nina["cohort"]["stage"] == "pending"
    assert nina["legacy"]["last_ip"] == "192.0.2.44" and nina["legacy"]["switched"] is False
    assert [(n["wave"], n["state"], n["message_id"]) for n in data["notices"]] == [
        (2, "failed", "<rollout.1.2.K-2@example.net>"),
        (3, "sending", "<rollout.1.3.K-2@example.net>"),
    ]


def test_lookup_by_login_and_contact_address(run: Cli, runtime: Runtime) -> None:
    """A POP login or the customer's contact address finds the customer too; the login's mailbox comes first."""
    build_rollout(runtime)
    data = json.loads(run("lookup", "web1p2", "--json").output)
    assert (data["matched"], data["mailboxes"][0]["address"], data["mailboxes"][0]["legacy"]["switched"]) == (
        "login",
        "bert@acme.example",
        True,
    )
    data = json.loads(run("lookup", "Billing@ACME.example", "--json").output)
    assert (data["matched"], data["customer_id"]) == ("customer email", "K-1")
    assert json.loads(run("lookup", "k-1", "--json").output)["customer_id"] == "K-1"


def test_unknown_address_says_so_and_exits_one(run: Cli, runtime: Runtime) -> None:
    """An address nobody has is reported as unknown with exit code 1."""
    build_rollout(runtime)
    result = run("lookup", "nobody@acme.example", expect=1)
    assert (
        "Error: 'nobody@acme.example' is not a mailbox, POP login, customer id or customer e-mail in the inventory"
        in result.output
    )


def test_warn_stage_still_accepts_and_says_so(run: Cli, runtime: Runtime) -> None:
    """A mailbox whose cohort is at the warn stage gets no refusal text, and support is told mail is still accepted."""
    from sqlalchemy import update

    from rollout.models import Cohort

    build_rollout(runtime)
    with runtime.sessions() as s, s.begin():
        s.execute(update(Cohort).where(Cohort.position == 1).values(stage="warn"))
    out = run("lookup", "anna@acme.example").output
    assert "stage warn: mail sent without AUTH is still accepted" in out and "Sender address rejected" not in out
    assert json.loads(run("lookup", "anna@acme.example", "--json").output)["mailboxes"][0]["refused_reply"] is None


def _big_customer(runtime: Runtime, count: int) -> None:
    """Customer K-9 with ``count`` mailboxes m000…, plus three whose order matters; legacy use on two of them."""
    from datetime import timedelta

    from rollout.models import Customer, Evidence, LegacyDay, Mailbox

    from .conftest import T0

    day = (T0 + timedelta(days=1)).date()
    with runtime.sessions() as s, s.begin():
        big = Customer(
            external_id="K-9", email="it@big.example", name="Big AG", locale="de", created_at=T0, updated_at=T0
        )
        s.add(big)
        s.flush()
        names = [f"m{i:03d}" for i in range(count)] + ["zed", "\u00e4rger", "Able"]
        boxes = {}
        for name in names:
            box = Mailbox(
                address=f"{name}@big.example",
                address_key=f"{name.lower()}@big.example",
                domain="big.example",
                customer_id=big.id,
                bucket=name[0].lower(),
                sort_key=name.lower(),
                created_at=T0,
                updated_at=T0,
            )
            s.add(box)
            boxes[name] = box
        s.flush()
        for name in ("zed", "\u00e4rger"):  # legacy use sorts these before every mailbox without any
            s.add(
                LegacyDay(
                    mailbox_id=boxes[name].id,
                    day=day,
                    legacy_count=1,
                    last_seen=T0 + timedelta(days=1),
                    client_ips=["192.0.2.1"],
                    senders=[],
                )
            )
        zed = boxes["zed"].id
        for offset, kind, text in (
            (0, "legacy", "older legacy"),
            (3, "legacy", "newer legacy"),
            (5, "refused", "refusal"),
        ):
            s.add(
                Evidence(
                    mailbox_id=zed,
                    day=day + timedelta(days=offset),
                    kind=kind,
                    lines=[{"file": "/var/log/mail.log", "offset": offset, "line": text}],
                    details={},
                )
            )
        s.add(
            Evidence(
                mailbox_id=boxes["m001"].id,
                day=day,
                kind="refused",
                lines=[{"file": "/var/log/mail.log", "offset": 9, "line": "only a refusal"}],
                details={},
            )
        )


def test_a_customer_with_many_mailboxes_shows_the_asked_one_then_legacy_ones_then_by_address(runtime: Runtime) -> None:
    """At most 50 of all: the one asked about, those with legacy use, then by address (in code point order)."""
    from rollout.support.lookup import MAX_MAILBOXES_SHOWN
    from rollout.support.operate_workflow import lookup

    _big_customer(runtime, 60)
    found = lookup(runtime, "M059@BIG.example")
    shown = [m.address for m in found.mailboxes]
    assert found.mailbox_count == 63 and len(shown) == MAX_MAILBOXES_SHOWN
    assert shown[:5] == [
        "m059@big.example",
        "zed@big.example",
        "\u00e4rger@big.example",
        "Able@big.example",
        "m000@big.example",
    ]
    assert shown[-1] == "m045@big.example"
    by_id = lookup(runtime, "K-9")
    assert [m.address for m in by_id.mailboxes][:3] == ["zed@big.example", "\u00e4rger@big.example", "Able@big.example"]


def test_evidence_is_the_newest_legacy_sample_or_else_the_newest_refusal(runtime: Runtime) -> None:
    """Evidence: the newest day of legacy use even when a refusal is newer; a refusal when there is no legacy use."""
    from rollout.support.operate_workflow import lookup

    _big_customer(runtime, 3)
    mailboxes = {m.address: m for m in lookup(runtime, "K-9").mailboxes}
    assert [line["line"] for line in mailboxes["zed@big.example"].evidence] == ["newer legacy"]
    assert [line["line"] for line in mailboxes["m001@big.example"].evidence] == ["only a refusal"]
    assert mailboxes["m000@big.example"].evidence == [] and mailboxes["m000@big.example"].evidence_day is None
