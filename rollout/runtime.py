"""What every entry point (command, scheduler job, demo) builds once and passes down."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .clock import Clock, SystemClock
from .config import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

# SQLAlchemy (~0.5 s with the ORM and the models) is imported when the engine is first used,
# not when the CLI builds a Runtime: `rollout COMMAND --help` and `config show` need none.


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER") or f"uid:{os.getuid()}"


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    actor: str = field(default_factory=default_actor)

    @cached_property
    def engine(self) -> Engine:
        from . import db

        return db.make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from . import db

        return db.make_sessionmaker(self.engine)

    def require_schema(self) -> None:
        from . import db

        db.require_head(self.engine)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
