"""The domain rules have one meaning everywhere: a mailbox whose last legacy use and last
authenticated submission fall in the same second is still legacy in every area that asks."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from rollout.config import Settings
from rollout.models import Mailbox
from rollout.notify import campaign
from rollout.plan import plans
from rollout.rules import has_switched, is_still_legacy
from rollout.runtime import Runtime
from rollout.support.status import build_status

from .campaign_support import add_customers, add_legacy
from .conftest import T0, Cli

SEEN = T0 - timedelta(days=1)


@pytest.mark.parametrize(
    ("last_legacy", "last_auth", "still_legacy", "switched"),
    [
        (SEEN, None, True, False),
        (SEEN, SEEN - timedelta(seconds=1), True, False),
        (SEEN, SEEN, True, False),  # the same second proves no order: still legacy
        (SEEN, SEEN + timedelta(seconds=1), False, True),
        (None, SEEN, False, True),  # sends authenticated, never used the legacy path
        (None, None, False, False),
    ],
)
def test_switched_and_still_legacy_are_one_rule(
    last_legacy: datetime | None, last_auth: datetime | None, still_legacy: bool, switched: bool
) -> None:
    """Switched means an authenticated submission strictly after the last legacy use."""
    assert (is_still_legacy(last_legacy, last_auth), has_switched(last_legacy, last_auth)) == (still_legacy, switched)


@pytest.fixture
def tied(runtime: Runtime, tmp_path: Path) -> Runtime:
    """anna's last legacy use and her last authenticated submission are in the same second;
    bert authenticated a second later."""
    add_customers(
        runtime,
        tmp_path,
        ["anna@example.de,K1,anna@kunde.example,Anna,de", "bert@example.de,K2,bert@kunde.example,Bert,de"],
    )
    add_legacy(runtime, "anna@example.de", SEEN, auth_last=SEEN)
    add_legacy(runtime, "bert@example.de", SEEN, auth_last=SEEN + timedelta(seconds=1))
    return runtime


def test_equal_times_are_still_legacy_in_every_area(tied: Runtime, settings: Settings, run: Cli) -> None:
    """`legacy`, `lookup`, `status`, the notice audience and the plan's weights all keep anna as still legacy."""
    listed = {m["address"]: m["switched"] for m in json.loads(run("legacy", "--json").stdout)}
    assert listed == {"anna@example.de": False, "bert@example.de": True}

    for address, switched in (("anna@example.de", False), ("bert@example.de", True)):
        report = json.loads(run("lookup", address, "--json").stdout)
        assert report["mailboxes"][0]["legacy"]["switched"] is switched

    with tied.sessions() as session:
        assert build_status(session, settings, T0).legacy_mailboxes == 1
        still = set(session.scalars(plans.still_legacy_ids(T0, settings.notices.lookback_days)))
        assert still == {mailbox_id(session, "anna@example.de")}
        audience = campaign.audience(session, T0, settings.notices.lookback_days)
        listed_mailboxes = {use.address for uses in audience.reminders.values() for use in uses}
        assert listed_mailboxes == {"anna@example.de"}
        assert audience.switched == {mailbox_id(session, "bert@example.de")}


def mailbox_id(session: Session, address: str) -> int:
    return int(session.scalar(select(Mailbox.id).where(Mailbox.address_key == address)))
