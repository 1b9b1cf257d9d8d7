"""A real Postfix refuses a switched-off mailbox with our text, and relays again after undo."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from rollout.clock import ManualClock
from rollout.enforcement import client_reply
from rollout.runtime import Runtime

from .conftest import Cli
from .mailstack import MailStack, Mailuser, mailstack_available
from .plan_support import apply_plan, configure, import_locals

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not mailstack_available(), reason="needs root, Postfix, Dovecot and smtp-sink (.ci/run installs them)"
    ),
]

SERVER, EARLY_CLIENT, LATE_CLIENT = "127.0.0.20", "127.0.0.21", "127.0.0.22"
REMOTE = ["someone@remote.test"]


def test_step_refuses_through_real_postfix_and_undo_restores(
    run: Cli, runtime: Runtime, clock: ManualClock, tmp_path: Path
) -> None:
    """defer → 4xx, reject → 5xx with our text; AUTH still works; a later cohort relays; undo re-enables."""
    users = [Mailuser("anna@example.org", "pw-anna"), Mailuser("zoe@example.org", "pw-zoe")]
    with MailStack(SERVER, users) as stack:
        configure(runtime, tmp_path, map_path=str(stack.sender_map), ladder=("defer", "reject"))
        import_locals(runtime, tmp_path, ["anna", "bert", "yan", "zoe"], domain="example.org")
        apply_plan(run, 2)
        stack.pop_login("anna@example.org", "pw-anna", source=EARLY_CLIENT)
        stack.pop_login("zoe@example.org", "pw-zoe", source=LATE_CLIENT)
        assert stack.send("anna@example.org", REMOTE, source=EARLY_CLIENT).accepted  # legacy path open

        run("step", "--yes")  # cohort a–b: defer
        reply = stack.send("anna@example.org", REMOTE, source=EARLY_CLIENT)
        assert f"{reply.code} {reply.text}" == client_reply(runtime.settings.enforcement, "anna@example.org", "defer")
        assert stack.send(
            "anna@example.org", REMOTE, source=EARLY_CLIENT, auth=("anna@example.org", "pw-anna")
        ).accepted
        assert stack.send("zoe@example.org", REMOTE, source=LATE_CLIENT).accepted  # later cohort

        clock.advance(timedelta(minutes=30))
        run("step", "--yes")  # cohort a–b: reject
        reply = stack.send("anna@example.org", REMOTE, source=EARLY_CLIENT)
        assert reply.code == 554
        assert f"{reply.code} {reply.text}" == client_reply(runtime.settings.enforcement, "anna@example.org", "reject")
        assert stack.send(
            "anna@example.org", REMOTE, source=EARLY_CLIENT, auth=("anna@example.org", "pw-anna")
        ).accepted

        run("undo", "--to-step", "0", "--reason", "test")
        assert stack.send("anna@example.org", REMOTE, source=EARLY_CLIENT).accepted
