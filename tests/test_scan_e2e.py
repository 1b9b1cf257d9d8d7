"""End to end against real daemons: Postfix + Dovecot with POP-before-SMTP, real clients, then
`rollout scan` + `rollout legacy --json` must report exactly the mailboxes that relayed via the legacy path. The logs
the daemons write during the run are the project's own real-log fixtures."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.config import Settings
from rollout.runtime import Runtime

from .conftest import Cli
from .mailstack import MailStack, Mailuser, mailstack_available
from .scan_support import write_inventory
from .test_linescan import assert_same

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mailstack_available(), reason="needs root, Postfix, Dovecot and smtp-sink"),
]

SERVER = "127.0.0.10"
USERS = [
    Mailuser("anna@example.org", "pw-anna"),
    Mailuser("bert@example.org", "pw-bert", login="bert"),
    Mailuser("carl@example.org", "pw-carl"),
    Mailuser("dora@example.org", "pw-dora"),
    Mailuser("erik@example.org", "pw-erik"),
    Mailuser("fritz@example.org", "pw-fritz"),
    Mailuser("gina@example.org", "pw-gina"),
]
REMOTE = ["friend@remote.test"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[MailStack]:
    with MailStack(SERVER, USERS) as s:
        yield s
    s.cleanup()


@pytest.fixture
def cli(settings: Settings, clock, tmp_path: Path) -> Iterator[Cli]:  # type: ignore[no-untyped-def]
    # the test clients live in 127.0.0.0/8: only the harness's own probes (127.0.0.1) are "ours"
    scan = dataclasses.replace(settings.scan, trusted_networks=("127.0.0.1/32",))
    runtime = Runtime(settings=dataclasses.replace(settings, scan=scan), clock=clock, actor="tester")
    yield Cli(runtime)
    runtime.close()


def test_real_postfix_and_dovecot_scenarios(stack: MailStack, cli: Cli, tmp_path: Path) -> None:
    """Legacy relays after POP and IMAP logins are found (also with a shared IP or another sender); SASL, inbound,
    denied and login-only traffic is not; SASL after legacy use shows `switched`; our map's refusal is counted."""
    cli("inventory", "import", str(write_inventory(tmp_path / "inv.csv", [(u.address, u.login) for u in USERS])))
    # 1. POP login, then an unauthenticated relay: legacy
    stack.pop_login("anna@example.org", "pw-anna", source="127.0.0.11")
    assert stack.send("anna@example.org", REMOTE, source="127.0.0.11").accepted
    # 2. IMAP login (bare login name), then a relay: legacy
    stack.imap_login("bert", "pw-bert", source="127.0.0.12")
    assert stack.send("bert@example.org", REMOTE, source="127.0.0.12").accepted
    # 3. SASL submission by anna, after her legacy use: not legacy, counts as switched
    time.sleep(1.1)  # logs have whole seconds: "after" must be a later second
    assert stack.send("anna@example.org", REMOTE, source="127.0.0.13", auth=("anna@example.org", "pw-anna")).accepted
    # 4. no login: relay denied
    denied = stack.send("someone@foreign.test", REMOTE, source="127.0.0.14")
    assert denied.code == 554 and "Relay access denied" in denied.text
    # 5. two users log in from one IP, one of them sends (her own address): hers, shared IP
    stack.pop_login("carl@example.org", "pw-carl", source="127.0.0.15")
    stack.pop_login("dora@example.org", "pw-dora", source="127.0.0.15")
    assert stack.send("dora@example.org", REMOTE, source="127.0.0.15").accepted
    # 6. a POP user relaying with another envelope sender: still that mailbox
    stack.pop_login("erik@example.org", "pw-erik", source="127.0.0.16")
    assert stack.send("office@erik-shop.test", REMOTE, source="127.0.0.16").accepted
    # 7. inbound mail to a local user
    assert stack.send("newsletter@remote.test", ["gina@example.org"], source="127.0.0.17").accepted
    # 8. a failed login, then a refused relay
    assert stack.failed_login("fritz@example.org", "wrong", source="127.0.0.18")
    assert stack.send("fritz@example.org", REMOTE, source="127.0.0.18").code == 554
    # 9. a user who logs in and never sends
    stack.imap_login("gina@example.org", "pw-gina", source="127.0.0.19")
    # 10. our enforcement map switches anna off: Postfix refuses her legacy relay with our text
    text = cli.runtime.settings.enforcement.reject_text.format(
        address="anna@example.org", help_url=cli.runtime.settings.enforcement.help_url
    )
    stack.write_sender_map({"anna@example.org": f"REJECT 5.7.1 {text}"})
    refused = stack.send("anna@example.org", REMOTE, source="127.0.0.11")
    assert refused.code == 554 and "switched off" in refused.text

    stack.wait_for_log(stack.postfix_log, ": removed", count=6)
    stack.wait_for_log(stack.dovecot_log, "Disconnected: Logged out", count=6)
    summary = json.loads(cli("scan", "--host", "mx", str(stack.postfix_log), str(stack.dovecot_log), "--json").stdout)
    assert all(f["unparsed"] == 0 for f in summary["files"]), stack.logs()
    dovecot = summary["files"][1]  # the file table counts what Dovecot wrote: every line, all 6 logins
    assert dovecot["lines"] == len(stack.dovecot_log.read_text().splitlines()) and dovecot["kinds"]["login"] == 6, (
        stack.logs()
    )

    report = {r["address"]: r for r in json.loads(cli("legacy", "--json").stdout)}
    assert set(report) == {"anna@example.org", "bert@example.org", "dora@example.org", "erik@example.org"}, stack.logs()
    assert report["anna@example.org"]["switched"] is True
    assert report["anna@example.org"]["refused"] == 1
    assert report["anna@example.org"]["client_ips"] == ["127.0.0.11"]
    assert report["bert@example.org"]["switched"] is False
    assert (report["dora@example.org"]["confidence"], report["erik@example.org"]["confidence"]) == ("medium", "medium")
    assert report["erik@example.org"]["senders"] == ["office@erik-shop.test"]
    assert all(r["submissions"] == 1 for r in report.values())
    assert json.loads(cli("legacy", "--review", "--json").stdout) == []
    for log in (stack.postfix_log, stack.dovecot_log):  # what the real daemons wrote: the classifier changes nothing
        assert_same(log.read_bytes())
    rescan = json.loads(cli("scan", "--host", "mx", str(stack.postfix_log), str(stack.dovecot_log), "--json").stdout)
    assert rescan["legacy_submissions"] == 0
    assert json.loads(cli("legacy", "--json").stdout) == list(report.values())
