"""Find the top-level ``templates/`` and ``migrations/`` directories.

In an installed wheel they live in ``rollout/_data/`` (hatch force-include); in a
checkout (editable install or plain source tree) they are beside the package, and
edits there take effect at once.
"""

from importlib import resources
from pathlib import Path

from .errors import RolloutError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    checkout = _PACKAGE_DIR.parent
    # A checkout wins: an editable install also leaves a stale snapshot in site-packages.
    if (checkout / "pyproject.toml").is_file() and (checkout / name).is_dir():
        return checkout / name
    packaged = resources.files("rollout") / "_data" / name
    if packaged.is_dir():
        return Path(str(packaged))
    raise RolloutError(f"cannot find the {name}/ directory (neither in {checkout} nor in the installed package)")


def templates_dir() -> Path:
    return _data_dir("templates")


def migrations_dir() -> Path:
    return _data_dir("migrations")
