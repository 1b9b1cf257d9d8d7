"""The final step on a real Postfix: after it, a POP login no longer opens the relay; undo restores it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout.runtime import Runtime

from .conftest import Cli
from .mailstack import MailStack, Mailuser, mailstack_available
from .plan_support import configure, import_locals, switch_off_every_cohort

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not mailstack_available(), reason="needs root, Postfix, Dovecot and smtp-sink (.ci/run installs them)"
    ),
]

REMOTE = ["someone@remote.test"]
STRANGER = "stranger@elsewhere.test"  # an envelope sender in no map: only the POP-before-SMTP map lets it relay
USERS = [Mailuser("anna@example.org", "pw-anna"), Mailuser("zoe@example.org", "pw-zoe")]


@pytest.fixture
def stack() -> Iterator[MailStack]:
    with MailStack("127.0.0.135", USERS) as s:
        yield s
    s.cleanup()


def relay_after_pop_login(stack: MailStack, source: str) -> tuple[int, str]:
    stack.pop_login("anna@example.org", "pw-anna", source=source)
    reply = stack.send(STRANGER, REMOTE, source=source)
    return reply.code, reply.text


def test_final_step_empties_the_legacy_map_and_undo_restores_it(
    run: Cli, runtime: Runtime, stack: MailStack, tmp_path: Path
) -> None:
    """Before the final step a relay right after a POP login is accepted; a running writer is named and refused;
    after it the relay is refused (Relay access denied) and the phase is done; after undo it is accepted again."""
    client = "127.0.0.136"
    configure(runtime, tmp_path, map_path=str(stack.sender_map), legacy_map=f"hash:{stack.pop_map}")
    import_locals(runtime, tmp_path, ["anna", "bert", "yan", "zoe"], domain="example.org")
    switch_off_every_cohort(run, runtime, 2)
    assert relay_after_pop_login(stack, client)[0] == 250  # the spam hole: any sender, once the IP logged in
    assert json.loads(run("status", "--json").output)["phase"] == "switch-off"

    daemon = tmp_path / "pop-before-smtp"
    daemon.write_text("import time\ntime.sleep(300)\n")
    writer = subprocess.Popen([sys.executable, str(daemon)])
    try:
        result = run("step", "--yes", expect=1)
        assert (
            f"pop-before-smtp (pid {writer.pid}) is running: it feeds hash:{stack.pop_map}; stop and disable it first"
            in result.stderr
        )
        forced = run("step", "--yes", "--force", "--reason", "try anyway", expect=1)
        assert f"the final step refused: pop-before-smtp (pid {writer.pid}) is running" in forced.stderr
    finally:
        writer.kill()
        writer.wait(10)
    stack.stop_pop_before_smtp_writer()

    out = run("step", "--yes").output
    assert f"the legacy path is retired: hash:{stack.pop_map}" in out
    code, text = relay_after_pop_login(stack, client)
    assert code == 554 and "Relay access denied" in text
    assert json.loads(run("status", "--json").output)["phase"] == "done"
    assert "the rollout is done" in run("step", "--yes", expect=1).stderr

    assert f"the legacy map hash:{stack.pop_map} is back" in run("undo", "--reason", "test").output
    assert stack.send(STRANGER, REMOTE, source=client).accepted  # the restored map lets the logged-in IP relay again
    assert json.loads(run("status", "--json").output)["phase"] == "switch-off"


def test_final_step_in_check_mode_names_the_line_to_remove(
    run: Cli, runtime: Runtime, stack: MailStack, tmp_path: Path
) -> None:
    """retire = "check": refused while main.cf still has the map in smtpd_recipient_restrictions, naming the exact
    element; once removed (postconf -e, reload) the step passes and a relay after a POP login is refused; undo puts
    the element back in main.cf and reloads Postfix: the relay is accepted again."""
    client = "127.0.0.137"
    postconf = f"postconf -c {stack.postfix_dir}"
    configure(
        runtime,
        tmp_path,
        map_path=str(stack.sender_map),
        legacy_map=str(stack.pop_map),
        retire="check",
        postconf_command=postconf,
        reload_command=f"postfix -c {stack.postfix_dir} reload",
    )
    import_locals(runtime, tmp_path, ["anna", "bert", "yan", "zoe"], domain="example.org")
    switch_off_every_cohort(run, runtime, 2)
    result = run("step", "--yes", expect=1)
    assert (
        f"remove `check_client_access hash:{stack.pop_map}` from smtpd_recipient_restrictions in main.cf"
        in result.stderr
    )
    assert relay_after_pop_login(stack, client)[0] == 250

    restrictions = (
        f"permit_mynetworks, permit_sasl_authenticated, check_sender_access hash:{stack.sender_map}, "
        "reject_unauth_destination"
    )
    subprocess.run(
        ["postconf", "-c", str(stack.postfix_dir), "-e", f"smtpd_recipient_restrictions = {restrictions}"],
        check=True,
        timeout=30,
    )
    subprocess.run(["postfix", "-c", str(stack.postfix_dir), "reload"], check=True, timeout=30, capture_output=True)
    stack.wait_for_log(stack.postfix_log, "reload", count=1)
    run("step", "--yes")
    code, text = relay_after_pop_login(stack, client)
    assert code == 554 and "Relay access denied" in text
    assert json.loads(run("status", "--json").output)["retired"]["mode"] == "check"

    assert f"check_client_access hash:{stack.pop_map}, reject_unauth_destination" in run("undo").output
    stack.wait_for_log(stack.postfix_log, "reload", count=2)
    assert relay_after_pop_login(stack, client)[0] == 250
    assert json.loads(run("status", "--json").output)["phase"] == "switch-off"
