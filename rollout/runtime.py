"""What every entry point (command, scheduler job, demo) builds once and passes down."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import db
from .audit import default_actor
from .clock import Clock, SystemClock
from .config import Settings


@dataclass
class Runtime:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    actor: str = field(default_factory=default_actor)

    @cached_property
    def engine(self) -> Engine:
        return db.make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return db.make_sessionmaker(self.engine)

    def require_schema(self) -> None:
        db.require_head(self.engine)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
