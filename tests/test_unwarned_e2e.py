"""Nobody is switched off unwarned, end to end on a real Postfix + Dovecot (tests/mailstack.py).

Medium-confidence relays are notified from their first sighting; a notice the provider's
Postfix bounces is found in its log by `rollout scan`, and the step holds that mailbox back.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from rollout.clock import ManualClock
from rollout.config import Settings
from rollout.runtime import Runtime

from .conftest import Cli
from .mailstack import MailStack, Mailuser, free_port, mailstack_available
from .plan_support import apply_plan

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mailstack_available(), reason="needs root, Postfix, Dovecot and smtp-sink"),
]

REMOTE = ["friend@remote.test"]


def _cli(settings: Settings, tmp_path: Path, **sections: dict[str, object]) -> Cli:
    """A CLI whose clock is the real time of the daemons' logs; only the harness's probes (127.0.0.1) are trusted."""
    scan = dataclasses.replace(settings.scan, trusted_networks=("127.0.0.1/32",))
    changed = {name: dataclasses.replace(getattr(settings, name), **values) for name, values in sections.items()}
    runtime = Runtime(
        settings=dataclasses.replace(settings, scan=scan, **changed), clock=ManualClock(_now()), actor="tester"
    )
    return Cli(runtime)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


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
    cli(
        "campaign",
        "start",
        "--first",
        _now().date().isoformat(),
        "--weekday",
        _weekday(),
        "--at",
        "00:00",
        "--tz",
        "UTC",
    )
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
    """One customer per mailbox: ``name@example.org`` belongs to customer K-name, contact name@customers.test."""
    rows = ["mailbox,customer_id,customer_email,customer_name,locale"] + [
        f"{n}@example.org,K-{n},{n}@customers.test,Customer {n},en" for n in names
    ]
    path = tmp_path / "inventory.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _weekday() -> str:
    return ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[_now().weekday()]


BOUNCE_REPLY = "550 5.1.1 <boss@bounce.test>: Recipient address rejected: User unknown"


class BouncingStack(MailStack):
    """The mail stack, plus a second smtp-sink that answers every RCPT with a 550 (its -f RCPT and -B options),
    which Postfix's transport map uses for the domain ``bounce.test``."""

    def __init__(self, address: str, users: list[Mailuser]) -> None:
        super().__init__(address, users)
        self.bounce_port = 0  # chosen when the sinks start
        self._bouncer: subprocess.Popen[bytes] | None = None

    def _start_sink(self) -> None:
        super()._start_sink()
        self.bounce_port = free_port(self.address)
        log = open(self.log_dir / "bouncer.log", "wb")
        self._bouncer = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-f", "RCPT", "-B", BOUNCE_REPLY, f"{self.address}:{self.bounce_port}", "10"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_for_port(self.bounce_port)

    def _write_postfix_config(self) -> None:
        transport = self.maps_dir / "transport"
        transport.write_text(f"bounce.test smtp:[{self.address}]:{self.bounce_port}\n")
        super()._write_postfix_config()
        with open(self.postfix_dir / "main.cf", "a") as main_cf:
            main_cf.write(f"transport_maps = hash:{transport}\n")
        self._run(["postmap", "-c", str(self.postfix_dir), f"hash:{transport}"], "postmap transport")

    def stop(self) -> None:
        super().stop()
        if self._bouncer is not None:
            self._bouncer.terminate()
            self._bouncer.wait(timeout=10)
            self._bouncer = None


@pytest.fixture
def bouncing_stack() -> Iterator[BouncingStack]:
    users = [Mailuser(f"{name}@example.org", f"pw-{name}") for name in ("anna", "bert", "support")]
    with BouncingStack("127.0.0.50", users) as s:
        yield s
    s.cleanup()


@dataclasses.dataclass
class WaveOne:
    cli: Cli
    start: datetime  # wave 1 went out
    switch_off: datetime  # the one cohort's date
    map_path: Path


def wave_one_to_a_bouncing_address(stack: BouncingStack, settings: Settings, tmp_path: Path, weeks: int) -> WaveOne:
    """anna@ (contact boss@bounce.test, which the next hop answers 550) and bert@ relay after a POP login; a scan
    finds both; one cohort a week after the campaign's start; wave 1 of ``weeks`` goes out through the real Postfix."""
    map_path = tmp_path / "smtp-after-pop-disabled"
    cli = _cli(
        settings,
        tmp_path,
        smtp={
            "host": stack.address,
            "port": stack.smtp_port,
            "username": "support@example.org",
            "password": "pw-support",
            "retry_backoff_seconds": 0.01,
            "timeout_seconds": 10.0,
        },
        notices={"from_address": "Mail Support <support@example.org>"},
        rollout={"window": "00:00-23:59", "timezone": "UTC", "skip_weekends": False},
        enforcement={"map_path": str(map_path), "soak_hours": 0.0},
        # two mailboxes, both on the legacy path, and a week without scans: the gates of issue 13 would refuse
        gates={"max_scan_age_minutes": None, "max_next_legacy_share": None},
    )
    inventory = tmp_path / "inventory.csv"
    inventory.write_text(
        "mailbox,customer_id,customer_email,customer_name,locale\n"
        "anna@example.org,K-anna,boss@bounce.test,Anna,en\nbert@example.org,K-bert,bert@customers.test,Bert,en\n"
    )
    cli("inventory", "import", str(inventory))
    stack.pop_login("anna@example.org", "pw-anna", source="127.0.0.51")
    stack.pop_login("bert@example.org", "pw-bert", source="127.0.0.52")
    assert stack.send("anna@example.org", REMOTE, source="127.0.0.51").accepted
    assert stack.send("bert@example.org", REMOTE, source="127.0.0.52").accepted
    stack.wait_for_log(stack.postfix_log, ": removed", count=2)
    cli("scan", "--host", "mx", str(stack.postfix_log), str(stack.dovecot_log))

    start = _now()
    cli.runtime.clock.set(start)  # type: ignore[attr-defined]
    switch_off = start + timedelta(days=8)
    apply_plan(cli, 1, "1h", switch_off)
    first, weekday = start.date().isoformat(), _weekday()
    cli(
        "campaign",
        "start",
        "--first",
        first,
        "--weeks",
        str(weeks),
        "--weekday",
        weekday,
        "--at",
        "00:00",
        "--tz",
        "UTC",
    )
    assert json.loads(cli("notify", "--wave", "1", "--json").stdout)["sent"] == 2
    stack.wait_for_log(stack.postfix_log, "status=bounced", count=1)
    stack.wait_for_log(stack.postfix_log, "to=<bert@customers.test>", count=1)
    return WaveOne(cli, start, switch_off, map_path)


def test_a_bounced_notice_is_seen_in_the_postfix_log_and_holds_the_mailbox_back(
    bouncing_stack: BouncingStack, settings: Settings, tmp_path: Path
) -> None:
    """A notice goes out through the real Postfix, whose next hop answers 550 for the customer's address: after
    `rollout scan` of that Postfix's log the ledger row is `bounced` with the reply, lookup shows it, and the step
    holds that mailbox back (`notice bounced`) while the cohort's other mailbox goes into the map."""
    stack = bouncing_stack
    sent = wave_one_to_a_bouncing_address(stack, settings, tmp_path, weeks=1)
    cli, switch_off, map_path = sent.cli, sent.switch_off, sent.map_path
    scanned = json.loads(cli("scan", "--host", "mx", str(stack.postfix_log), str(stack.dovecot_log), "--json").stdout)
    assert scanned["notices"] == {"bounced": 1, "delivered": 1}, stack.logs()
    lookup = json.loads(cli("lookup", "anna@example.org", "--json").stdout)
    (notice,) = lookup["notices"]
    assert (notice["state"], notice["delivery"]) == ("sent", "bounced")
    assert BOUNCE_REPLY in notice["delivery_reply"]
    assert "wave 1 bounced" in cli("lookup", "anna@example.org").stdout
    assert json.loads(cli("lookup", "bert@example.org", "--json").stdout)["notices"][0]["delivery"] == "delivered"
    status = json.loads(cli("status", "--json").stdout)
    assert [u["customer"] for u in status["unreachable"]] == ["K-anna"]
    assert status["waves"][0]["bounced"] == 1 and status["waves"][0]["delivered"] == 1

    cli.runtime.clock.set(switch_off + timedelta(hours=1))  # type: ignore[attr-defined]
    result = json.loads(cli("step", "--yes", "--json").stdout)
    assert [(h["address"], h["reason"]) for h in result["held"]] == [("anna@example.org", "notice bounced")]
    keys = {line.split("\t")[0] for line in map_path.read_text().splitlines() if line and not line.startswith("#")}
    assert keys == {"bert@example.org"}


def test_a_later_wave_leaves_out_an_address_that_bounced_with_a_5xx(
    bouncing_stack: BouncingStack, settings: Settings, tmp_path: Path
) -> None:
    """Wave 1 to boss@bounce.test bounced with a 550 (the ledger says so after `rollout scan`): a week later wave 2
    goes to the other customer only, says one customer was left out as unreachable, and the provider's Postfix sees
    no second message to the address that bounced."""
    stack = bouncing_stack
    sent = wave_one_to_a_bouncing_address(stack, settings, tmp_path, weeks=2)
    cli = sent.cli
    cli("scan", "--host", "mx", str(stack.postfix_log), str(stack.dovecot_log))
    (first,) = json.loads(cli("lookup", "anna@example.org", "--json").stdout)["notices"]
    assert (first["delivery"], BOUNCE_REPLY in first["delivery_reply"]) == ("bounced", True)

    cli.runtime.clock.set(sent.start + timedelta(weeks=1))  # type: ignore[attr-defined]
    summary = json.loads(cli("notify", "--wave", "2", "--json").stdout)
    assert (summary["selected"], summary["sent"], summary["unreachable"]) == (1, 1, 1)
    rerun = cli("notify", "--wave", "2").stdout  # what cron's second run tells the operator
    assert "1 customers left out: an earlier notice to their address bounced with a 5xx" in rerun
    stack.wait_for_log(stack.postfix_log, "to=<bert@customers.test>", count=2)
    stack.wait_for_queue_empty()
    assert stack.postfix_log.read_text().count("to=<boss@bounce.test>") == 1  # wave 1's, which bounced
    assert [n["wave"] for n in json.loads(cli("lookup", "anna@example.org", "--json").stdout)["notices"]] == [1]
    assert [n["wave"] for n in json.loads(cli("lookup", "bert@example.org", "--json").stdout)["notices"]] == [1, 2]
