"""`rollout attribute` and `rollout dismiss`: ops resolve the ambiguous sightings of `rollout legacy --review`."""

from __future__ import annotations

import click

from ..runtime import Runtime
from ._base import echo_json, json_option, pass_runtime


@click.command("attribute")
@click.argument("sighting", type=int)
@click.argument("mailbox")
@click.option("--reason", required=True, help="Why it is this mailbox's: recorded in the audit log.")
@json_option
@pass_runtime()
def attribute_command(runtime: Runtime, sighting: int, mailbox: str, reason: str, as_json: bool) -> None:
    """Make an ambiguous sighting one mailbox's legacy use (audited): it is notified.

    SIGHTING is the id `rollout legacy --review` shows; MAILBOX an address or a
    POP/IMAP login. The mailbox then has legacy use on that day like any other,
    and the next wave's notice lists it.

    \b
    Example:
      rollout legacy --review
      rollout attribute 17 anna@example.de --reason "customer confirmed the office PC sends as the shop"
    """
    from ..scan.sightings_workflow import attribute

    done = attribute(runtime, sighting, mailbox, reason)
    if as_json:
        echo_json(done)
    else:
        click.echo(
            f"sighting {done.sighting} attributed to {done.mailbox}: it is that mailbox's legacy use from now on"
        )


@click.command("dismiss")
@click.argument("sighting", type=int)
@click.option("--reason", required=True, help="Why it is nobody's legacy use: recorded in the audit log.")
@json_option
@pass_runtime()
def dismiss_command(runtime: Runtime, sighting: int, reason: str, as_json: bool) -> None:
    """Close an ambiguous sighting as nobody's legacy use (audited): never notified.

    \b
    Example:
      rollout dismiss 18 --reason "the webmail host, already in trusted_networks"
    """
    from ..scan.sightings_workflow import dismiss

    done = dismiss(runtime, sighting, reason)
    if as_json:
        echo_json(done)
    else:
        click.echo(f"sighting {done.sighting} dismissed: nobody is notified about it")
