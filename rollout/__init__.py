"""rollout: retire SMTP-after-POP in stages, without a flood of support calls."""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # Looked up on first use: importlib.metadata costs every command ~80 ms at start-up.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("rollout")
        except PackageNotFoundError:  # running from a bare checkout
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
