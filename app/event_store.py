"""Where the event store is and how the eventsourcing library opens it.

Kept apart from the composition root so that tools (the command line) open the store
without importing the web app or the model runtime."""

from __future__ import annotations

from app.config import Settings


def event_store_env(settings: Settings) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(settings.event_store_path),
        "SQLITE_LOCK_TIMEOUT": "10",
        "AGGREGATE_CACHE_MAXSIZE": "1000",
    }
