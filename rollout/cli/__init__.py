"""The command line: parse options, call one workflow, print. The only package that imports click."""

from ._base import cli

# Each module adds its commands to `cli` when imported; this list is the registry.
from . import database, configuration, inventory, operate, plan, campaign, scan  # noqa: E402,F401  isort: skip

__all__ = ["cli"]
