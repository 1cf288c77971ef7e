"""Reading the event store directly: records exactly as stored, and decoded events.

Audit reads go around the application on purpose: `verify` must see the bytes in the store
(not what the library makes of them), and reads must not load aggregates into a cache or
take the writers' lock. SQLite connections are read-only; in WAL mode they never block the
server. `AuditLog` is the same reads on either store: `SQLiteLog` on the file,
`app.audit.log_pg.PostgresLog` on the library's PostgreSQL table; `open_log` picks one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent

from app.config import Settings
from app.event_log import LoggedEvent

if TYPE_CHECKING:
    from app.audit.log_pg import PostgresLog

COLUMNS = "rowid, originator_id, originator_version, topic, state"
BATCH = 5000


@dataclass(frozen=True)
class Record:
    """One row of `stored_events`, untouched."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


def connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(path)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def head(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT MAX(rowid) FROM stored_events").fetchone()
    return int(row[0] or 0)


def to_record(row: Sequence[Any]) -> Record:
    position, originator_id, version, topic, state = row
    if isinstance(state, str):  # a hand edit may store text; hash what is there
        state = state.encode()
    return Record(position, str(originator_id), version, str(topic), bytes(state or b""))


def records(db: sqlite3.Connection, after: int = 0, upto: int | None = None,
            batch: int = BATCH) -> Iterator[Record]:
    """Every record after position `after` (up to `upto`), in log order, read in batches."""
    while True:
        sql = f"SELECT {COLUMNS} FROM stored_events WHERE rowid > ?"
        params: list[Any] = [after]
        if upto is not None:
            sql += " AND rowid <= ?"
            params.append(upto)
        rows = db.execute(sql + " ORDER BY rowid LIMIT ?", [*params, batch]).fetchall()
        for row in rows:
            yield to_record(row)
        if len(rows) < batch:
            return
        after = rows[-1][0]


def at_positions(db: sqlite3.Connection, positions: Sequence[int]) -> list[Record]:
    """The records at these positions, in log order (missing ones are left out)."""
    found: list[Record] = []
    for start in range(0, len(positions), 500):
        chunk = list(positions[start:start + 500])
        marks = ",".join("?" * len(chunk))
        found += [to_record(row) for row in db.execute(
            f"SELECT {COLUMNS} FROM stored_events WHERE rowid IN ({marks})", chunk)]
    return sorted(found, key=lambda r: r.position)


def of_originators(db: sqlite3.Connection, originator_ids: Sequence[UUID],
                   after: int = 0) -> list[Record]:
    """Every record of these aggregates after `after`, in log order."""
    found: list[Record] = []
    for start in range(0, len(originator_ids), 500):
        chunk = [oid.hex for oid in originator_ids[start:start + 500]]
        marks = ",".join("?" * len(chunk))
        found += [to_record(row) for row in db.execute(
            f"SELECT {COLUMNS} FROM stored_events WHERE originator_id IN ({marks})"
            " AND rowid > ?", [*chunk, after])]
    return sorted(found, key=lambda r: r.position)


def decode(mapper: Mapper[UUID], record: Record) -> LoggedEvent:
    stored = StoredEvent(originator_id=UUID(record.originator_id),
                         originator_version=record.originator_version,
                         topic=record.topic, state=record.state)
    return LoggedEvent(record.position, mapper.to_domain_event(stored))


class AuditLog(Protocol):
    """The audit reads of one store's records, in log order."""

    def close(self) -> None: ...

    def head(self) -> int: ...

    def records(self, after: int = 0, upto: int | None = None,
                batch: int = BATCH) -> Iterator[Record]: ...

    def of_originators(self, originator_ids: Sequence[UUID],
                       after: int = 0) -> list[Record]: ...

    def first(self, originator_id: UUID) -> Record | None:
        """An aggregate's first record (version 1), if it has one."""
        ...

    def with_topic(self, topic: str) -> Iterator[Record]: ...

    def counts_by_topic(self) -> dict[str, int]:
        """How many records each topic has, the most frequent first (then by topic)."""
        ...


class SQLiteLog:
    """`AuditLog` on the event store file (or an open connection to it)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> SQLiteLog:
        return cls(connect_readonly(path))

    def close(self) -> None:
        self.db.close()

    def head(self) -> int:
        return head(self.db)

    def records(self, after: int = 0, upto: int | None = None,
                batch: int = BATCH) -> Iterator[Record]:
        return records(self.db, after, upto, batch)

    def of_originators(self, originator_ids: Sequence[UUID],
                       after: int = 0) -> list[Record]:
        return of_originators(self.db, originator_ids, after)

    def first(self, originator_id: UUID) -> Record | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM stored_events WHERE originator_id = ?"
                              " AND originator_version = 1", (originator_id.hex,)).fetchone()
        return to_record(row) if row is not None else None

    def with_topic(self, topic: str) -> Iterator[Record]:
        for row in self.db.execute(f"SELECT {COLUMNS} FROM stored_events WHERE topic = ?"
                                   " ORDER BY rowid", (topic,)):
            yield to_record(row)

    def counts_by_topic(self) -> dict[str, int]:
        rows = self.db.execute("SELECT topic, COUNT(*) FROM stored_events GROUP BY topic")
        return dict(sorted(((str(t), int(n)) for t, n in rows), key=lambda r: (-r[1], r[0])))


def as_log(db: sqlite3.Connection | AuditLog) -> AuditLog:
    """Callers may still pass a plain connection to the SQLite file."""
    return SQLiteLog(db) if isinstance(db, sqlite3.Connection) else db


def events_table() -> str:
    """The library's events table on PostgreSQL: named after the application."""
    from domain.application import ChatApplication

    return f"{ChatApplication.name.lower()}_events"


def open_log(settings: Settings) -> AuditLog:
    """The settings' store, read-only: the SQLite file (which must exist) or PostgreSQL."""
    from app.event_store import postgres_url

    url = postgres_url(settings)
    if url is None:
        return SQLiteLog.open(settings.event_store_path)
    from app.audit.log_pg import PostgresLog  # psycopg only for PostgreSQL

    return PostgresLog(url, events_table())


def open_read_models(settings: Settings) -> Any | None:
    """A connection to the read models (`read_models_for`), or None where there are none
    yet: the SQLite file read-only, or PostgreSQL's schema."""
    from app.event_store import read_models_for

    read_models = read_models_for(settings)
    if read_models.dialect == "sqlite":
        path = settings.read_model_path
        return connect_readonly(path) if path.is_file() else None
    return read_models.connect()


def missing_table(db: Any) -> tuple[type[Exception], ...]:
    """What reading a read-model table that was never created raises on `db`'s store."""
    from projections.database import dialect_of

    if dialect_of(db) == "sqlite":
        return (sqlite3.OperationalError,)
    import psycopg  # only a PostgreSQL store needs it

    return (psycopg.errors.UndefinedTable,)


def open_records(settings: Settings) -> sqlite3.Connection | PostgresLog:
    """The store's records for `verify`: the SQLite file read-only, or the PostgreSQL table."""
    from app.event_store import postgres_url

    url = postgres_url(settings)
    if url is None:
        return connect_readonly(settings.event_store_path)
    from app.audit.log_pg import PostgresLog  # psycopg only for PostgreSQL

    return PostgresLog(url, events_table())


def head_of(log: sqlite3.Connection | AuditLog) -> int:
    return head(log) if isinstance(log, sqlite3.Connection) else log.head()
