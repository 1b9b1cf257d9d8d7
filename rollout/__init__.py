"""rollout: retire SMTP-after-POP in stages, without a flood of support calls."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rollout")
except PackageNotFoundError:  # running from a bare checkout
    __version__ = "0.0.0"

__all__ = ["__version__"]
