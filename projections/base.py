"""What every projection is: tables, handlers by event name, and a position in the log."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, ClassVar

from eventsourcing.domain import DomainEventProtocol

from projections.database import dialect_of

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with a `Z`, the API's time format; sorts as text."""
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


class Projection:
    """Applies events to its own tables. Subclasses define `on_<Aggregate>_<Event>` handlers.

    Handlers must use only the event (never the clock or the model), so that a rebuild from
    position 0 writes exactly the same rows.
    """

    name: ClassVar[str]
    schema: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    # Raise when the tables change shape: the runner then drops them and replays the log.
    version: ClassVar[int] = 1

    # PostgreSQL's tables where SQLite's DDL does not fit it (SQLite's INTEGER PRIMARY KEY
    # is its rowid, BLOB is BYTEA there); None: the same `schema` on both.
    postgres_schema: ClassVar[str | None] = None

    def create(self, db: sqlite3.Connection) -> None:
        """Run the schema script (SQLite's executescript, or PostgresDB's: one simple query)."""
        postgres = dialect_of(db) == "postgresql"
        db.executescript(self.postgres_schema if postgres and self.postgres_schema
                         else self.schema)

    def drop(self, db: sqlite3.Connection) -> None:
        # On PostgreSQL, with what depends on the table (a view, a foreign key).
        cascade = " CASCADE" if dialect_of(db) == "postgresql" else ""
        for table in self.tables:
            db.execute(f"DROP TABLE IF EXISTS {table}{cascade}")

    def clear(self, db: sqlite3.Connection) -> None:
        for table in self.tables:
            db.execute(f"DELETE FROM {table}")

    def apply(
        self, db: sqlite3.Connection, event: DomainEventProtocol[Any], position: int
    ) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(db, event, position)


def row_dict(row: Any) -> dict[str, Any]:
    return dict(zip(row.keys(), tuple(row), strict=True))
