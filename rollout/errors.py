"""The one error base of the core, and its few subclasses.

The CLI turns every ``RolloutError`` into ``Error: <message>`` and exit code 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan.gates import Gate


class RolloutError(Exception):
    """An operational failure the operator can act on; the message says how."""


class ConfigError(RolloutError):
    """The configuration file or environment is wrong."""


class SchemaOutOfDate(RolloutError):
    """The database schema is missing or not at the revision this code expects."""


class InventoryError(RolloutError):
    """The inventory CSV cannot be imported; nothing was written."""

    def __init__(self, message: str, problems: list[tuple[int, str]] | None = None, total: int = 0):
        super().__init__(message)
        self.problems = problems or []
        self.total = total or len(self.problems)


class LogParseError(RolloutError):
    """A log file cannot be read at all."""


class PlanError(RolloutError):
    """A cohort plan cannot be made or changed as asked."""


class EnforcementError(RolloutError):
    """The enforcement map could not be written; the old one stays in force (``unchanged``).

    ``unchanged=False``: the failure came while the new files were being moved into place, so
    what is in force is uncertain until the map is published again.
    """

    def __init__(self, message: str, unchanged: bool = True) -> None:
        super().__init__(message)
        self.unchanged = unchanged


class DeliveryError(RolloutError):
    """Notices could not be rendered or sent."""


class GuardError(RolloutError):
    """A safety guard refuses the action (paused, outside the window, soak time...)."""


class SightingError(RolloutError):
    """A sighting cannot be attributed or dismissed as asked."""


class GatesFailed(GuardError):
    """The step is refused because gates failed (figures over their thresholds); ``gates`` names them."""

    def __init__(self, message: str, gates: list[Gate], other_blockers: int = 0) -> None:
        super().__init__(message)
        self.gates = gates
        self.other_blockers = other_blockers  # guards besides the gates (paused, window, soak, …)
