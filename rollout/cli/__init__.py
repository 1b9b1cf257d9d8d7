"""The command line: parse options, call one workflow, print. The only package that imports click.

Each command lives in a module of this package that is imported when the command runs; the
table of commands is ``_base.COMMANDS``.
"""

from ._base import cli

__all__ = ["cli"]
