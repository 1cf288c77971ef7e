"""Where the event store is and how the eventsourcing library opens it.

Kept apart from the composition root so that tools (the command line) open the store
without importing the web app or the model runtime.

Two stores: the SQLite file `DATA_DIR/events.sqlite` (the default) or, with
`EVENT_STORE=postgresql://...`, the library's PostgreSQL module (psycopg 3). Readers of the
committed log (streams, the admin event list, metrics) use one interface, `EventLogReader`,
with a store-specific implementation behind it. The read models live beside the log:
`read_models_for` gives the SQLite file or the PostgreSQL schema `read_models`.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.application import Application

from app.config import Settings
from app.event_log import EventLog, LoggedEvent
from projections.database import PostgresReadModels, ReadModels, SQLiteReadModels

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 5  # seconds to wait for a PostgreSQL connection


def postgres_url(settings: Settings) -> str | None:
    """The PostgreSQL URL the settings name, or None for the SQLite file."""
    url = settings.event_store.strip()
    if not url:
        return None
    if urlsplit(url).scheme not in SCHEMES:
        raise ValueError(f"EVENT_STORE must be empty (the SQLite file in DATA_DIR) or a "
                         f"postgresql:// URL, not {urlsplit(url).scheme or url!r}")
    return url


def is_postgres(settings: Settings) -> bool:
    return postgres_url(settings) is not None


def event_store_env(settings: Settings) -> dict[str, str]:
    url = postgres_url(settings)
    if url is None:
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.event_store_path),
            "SQLITE_LOCK_TIMEOUT": "10",
            "AGGREGATE_CACHE_MAXSIZE": "1000",
        }
    from psycopg.conninfo import conninfo_to_dict  # only a PostgreSQL store needs psycopg

    # The library takes the parts, not a URL; a unix socket is a host that is a directory
    # (`postgresql://user@/db?host=/run/postgresql`).
    parts = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parts.get("dbname") or ""),
        "POSTGRES_HOST": str(parts.get("host") or "localhost"),
        "POSTGRES_PORT": str(parts.get("port") or "5432"),
        "POSTGRES_USER": str(parts.get("user") or ""),
        "POSTGRES_PASSWORD": str(parts.get("password") or ""),
        "POSTGRES_SCHEMA": "public",
        # Writers wait this long (s) for the table lock that orders the log, then fail.
        "POSTGRES_LOCK_TIMEOUT": "10",
        # A request waits at most this long (s) for a connection (the library's default,
        # 30 s per operation, outlasts any client): PostgreSQL away answers 503 soon.
        "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        # Check a pooled connection before use, so the first request after a database
        # restart does not fail on a connection that died while idle.
        "POSTGRES_PRE_PING": "y",
        "AGGREGATE_CACHE_MAXSIZE": "1000",
    }


def mapper_env() -> dict[str, str]:
    """An environment that builds the application's mapper without opening any store."""
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": ":memory:"}


class EventLogReader(Protocol):
    """Async reads of the committed log, whichever store holds it."""

    async def head(self) -> int: ...

    async def of_originator(self, originator_id: UUID, after: int, limit: int = 1000
                            ) -> list[LoggedEvent]: ...

    async def of_originator_before(self, originator_id: UUID, before: int,
                                   limit: int = 500) -> list[LoggedEvent]: ...

    async def select(self, after: int, limit: int, type_name: str | None = None,
                     originator_id: UUID | None = None) -> list[LoggedEvent]: ...

    async def close(self) -> None: ...


async def open_event_log(settings: Settings, application: Application[UUID]
                         ) -> EventLogReader:
    url = postgres_url(settings)
    if url is None:
        return await EventLog.open(settings.event_store_path, application.mapper)
    from app.event_log_pg import PostgresEventLog

    table: str = getattr(application.recorder, "events_table_name", "chat_events")
    return await PostgresEventLog.open(url, table, application.mapper, CONNECT_TIMEOUT)


def read_models_for(settings: Settings) -> ReadModels:
    """The read models beside the event store: the SQLite file in DATA_DIR, or the schema
    `read_models` in the PostgreSQL database of EVENT_STORE."""
    url = postgres_url(settings)
    if url is None:
        return SQLiteReadModels(settings.read_model_path)
    return PostgresReadModels(url)
