"""Opening a data directory's event store for the audit commands."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from eventsourcing.persistence import Mapper

from app.config import Settings
from domain.application import ChatApplication


class NoEventStore(Exception):
    """The data directory has no event store file."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no event store at {path}")
        self.path = path


def open_application(settings: Settings) -> ChatApplication:
    """The command application on the data directory's store (which must exist)."""
    from app.event_store import event_store_env, is_postgres  # the server's own settings

    if not is_postgres(settings) and not settings.event_store_path.is_file():
        raise NoEventStore(settings.event_store_path)
    return ChatApplication(env=event_store_env(settings))


def mapper(settings: Settings) -> Mapper[UUID]:
    """The application's mapper (topics, transcodings, upcasting) without opening the file:
    read-only commands then work on a store they may not write to."""
    from app.event_store import mapper_env

    del settings  # the mapper is the same for every store
    return ChatApplication(env=mapper_env()).mapper
