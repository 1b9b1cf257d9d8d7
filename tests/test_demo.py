"""`rollout demo`: the whole story on a generated provider ends with every cohort off and every notice accounted for."""

import email
import json
from email import policy
from pathlib import Path

import pytest

from rollout.config import load_settings
from rollout.runtime import Runtime

from .conftest import Cli

HOST = "127.0.0.41"  # operate's loopback range


@pytest.mark.slow
def test_demo_runs_to_the_end(run: Cli, tmp_path: Path) -> None:
    """The demo switches off every cohort; every notice sent is an .eml file; its database answers status and lookup."""
    directory = tmp_path / "demo"
    out = run("demo", str(directory), "--mailboxes", "1500", "--customers", "600", "--smtp-host", HOST).output
    assert "phase: done" in out and "where to look:" in out
    assert "final step: the legacy path is retired" in out
    assert (directory / "postfix" / "pop-before-smtp.before-retire" / "pop-before-smtp").read_text().count(" OK") == 40
    assert "OK" not in (directory / "postfix" / "pop-before-smtp").read_text()
    emls = sorted((directory / "outbox").glob("*.eml"))
    demo = Cli(
        Runtime(settings=load_settings(environ={}, overrides={"database_url": f"sqlite:///{directory / 'rollout.db'}"}))
    )
    status = json.loads(demo("status", "--json").output)
    assert status["phase"] == "done"
    assert status["cohorts"] and all(c["stage"] == "reject" and c["enforced_at"] for c in status["cohorts"])
    assert len(status["waves"]) == 6 and all(w["sent"] > 0 for w in status["waves"])
    assert all(w["failed"] == w["uncertain"] == w["pending"] == 0 for w in status["waves"])
    assert sum(w["sent"] for w in status["waves"]) == len(emls)
    assert f"{len(emls)} notices sent, {len(emls)} kept as .eml files" in out
    message = email.message_from_bytes(emls[0].read_bytes(), policy=policy.default)
    assert message["Message-ID"] and message["To"] and "587" in message.get_body(("plain",)).get_content()
    sample = out.split(" lookup ")[-1].strip()
    found = json.loads(demo("lookup", sample, "--json").output)
    demo.runtime.close()
    mailbox = found["mailboxes"][0]
    assert mailbox["cohort"]["stage"] == "reject" and mailbox["refused_reply"].startswith("554 5.7.1")
    assert found["notices"] and all(n["state"] == "sent" for n in found["notices"])
    map_text = next((directory / "postfix").glob("smtp-after-pop-disabled*")).read_text()
    assert sample.split("@")[0] in map_text


def test_demo_refuses_a_directory_it_did_not_make(run: Cli, tmp_path: Path) -> None:
    """A non-empty directory without the demo's marker is left alone (exit 1)."""
    (tmp_path / "precious.txt").write_text("keep me")
    result = run("demo", str(tmp_path), "--smtp-host", HOST, expect=1)
    assert "is not empty and was not made by `rollout demo`" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"
