"""Whether the compiled classifier (``_linescan.c``) is the one this source expects.

An editable install keeps the module it built: after a change to ``_linescan.c`` (a merge,
a checkout) the old module would be handed arguments and classes it does not know. Its
``API`` number says which source it was built from; an older one is not used (the scan
takes its pure-Python path, with the same results) and a warning says to rebuild it.
"""

from __future__ import annotations

import logging
from types import ModuleType

API = 4  # _linescan.c's API: raise both together when its functions, their arguments or its classes change
log = logging.getLogger(__name__)
_warned: list[bool] = []


def current(module: ModuleType) -> bool:
    """Whether ``module`` (the imported ``_linescan``) was built from the source this code expects."""
    if getattr(module, "API", None) == API:
        return True
    if not _warned:
        _warned.append(True)
        log.warning(
            "%s was built from an older _linescan.c: the scan takes its slower pure-Python path until it is rebuilt "
            "(pip install -e . in the checkout)",
            getattr(module, "__file__", "rollout.logs._linescan"),
        )
    return False
