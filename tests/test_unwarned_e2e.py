"""Nobody is switched off unwarned, end to end on a real Postfix + Dovecot (tests/mailstack.py).

Medium-confidence relays are notified from their first sighting; a notice the provider's
Postfix bounces is found in its log by `rollout scan`, and the step holds that mailbox back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from rollout.clock import ManualClock
from rollout.config import Settings
from rollout.runtime import Runtime

from .conftest import Cli
from .mailstack import MailStack, Mailuser, mailstack_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not mailstack_available(), reason="needs root, Postfix, Dovecot and smtp-sink")]

REMOTE = ["friend@remote.test"]


def _cli(settings: Settings, tmp_path: Path, **sections: dict[str, object]) -> Cli:
    """A CLI whose clock is the real time of the daemons' logs; only the harness's probes (127.0.0.1) are trusted."""
    scan = dataclasses.replace(settings.scan, trusted_networks=("127.0.0.1/32",))
    changed = {name: dataclasses.replace(getattr(settings, name), **values) for name, values in sections.items()}
    runtime = Runtime(settings=dataclasses.replace(settings, scan=scan, **changed), clock=ManualClock(_now()), actor="tester")
    return Cli(runtime)


def _now():  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def medium_stack() -> Iterator[MailStack]:
    users = [Mailuser(f"{name}@example.org", f"pw-{name}") for name in ("carl", "dora", "erik")]
    with MailStack("127.0.0.40", users) as s:
        yield s
    s.cleanup()


def test_medium_sightings_get_a_wave_one_notice(medium_stack: MailStack, settings: Settings, tmp_path: Path) -> None:
    """A relay behind an address shared with another login (sender names her) and one with a foreign envelope
    sender (the only login from that IP) are both medium, and both customers get the wave-1 notice."""
    stack = medium_stack
    cli = _cli(settings, tmp_path)
    cli("inventory", "import", str(_inventory(tmp_path, ["carl", "dora", "erik"])))
    # every login first: a running smtpd answers from the pop-before-smtp map it opened, and only restarts after
    # the session in which it noticed a rebuilt map
    stack.pop_login("carl@example.org", "pw-carl", source="127.0.0.41")
    stack.pop_login("dora@example.org", "pw-dora", source="127.0.0.41")
    stack.pop_login("erik@example.org", "pw-erik", source="127.0.0.42")
    assert stack.send("dora@example.org", REMOTE, source="127.0.0.41").accepted
    assert stack.send("office@erik-shop.test", REMOTE, source="127.0.0.42").accepted
    stack.wait_for_log(stack.postfix_log, ": removed", count=2)
    cli("scan", "--host", "mx", str(stack.postfix_log), str(stack.dovecot_log))
    report = {r["address"]: r["confidence"] for r in json.loads(cli("legacy", "--json").stdout)}
    assert report == {"dora@example.org": "medium", "erik@example.org": "medium"}, stack.logs()

    cli.runtime.clock.set(_now())  # type: ignore[attr-defined]
    cli("campaign", "start", "--first", _now().date().isoformat(), "--weekday", _weekday(), "--at", "00:00", "--tz", "UTC")
    outbox = tmp_path / "outbox"
    summary = json.loads(cli("notify", "--wave", "1", "--outbox", str(outbox), "--json").stdout)
    assert summary["sent"] == 2
    messages = [message_from_bytes(p.read_bytes(), policy=policy.default) for p in sorted(outbox.glob("*.eml"))]
    by_mailbox = {m.get_body(("plain",)).get_content().split("\n- ")[1].split()[0]: m for m in messages}
    assert set(by_mailbox) == {"dora@example.org", "erik@example.org"}
    dora = by_mailbox["dora@example.org"].get_body(("plain",)).get_content()
    erik = by_mailbox["erik@example.org"].get_body(("plain",)).get_content()
    assert "the sender address named this one" in dora and "from 127.0.0.41" in dora
    assert "sender address: office@erik-shop.test" in erik and "and no other, had logged in" in erik


def _inventory(tmp_path: Path, names: list[str]) -> Path:
    """One customer per mailbox: ``name@example.org`` belongs to customer K-name, whose contact is name@customers.test."""
    rows = ["mailbox,customer_id,customer_email,customer_name,locale"] + [
        f"{n}@example.org,K-{n},{n}@customers.test,Customer {n},en" for n in names
    ]
    path = tmp_path / "inventory.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _weekday() -> str:
    return ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[_now().weekday()]
