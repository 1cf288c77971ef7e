"""Async reads of the committed event log (the event store's SQLite file, read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent

from app.read_connection import connect_read


@dataclass(frozen=True)
class LoggedEvent:
    position: int
    event: DomainEventProtocol[UUID]


class EventLog:
    def __init__(self, db: aiosqlite.Connection, mapper: Mapper[UUID]) -> None:
        self._db = db
        self._mapper = mapper

    @classmethod
    async def open(cls, path: Path, mapper: Mapper[UUID]) -> EventLog:
        # Buffered, so one stream's query never pins another's snapshot (read_connection).
        db = await connect_read(f"file:{path}?mode=ro", uri=True, rows_by_name=False)
        return cls(db, mapper)

    async def close(self) -> None:
        await self._db.close()

    async def head(self) -> int:
        async with self._db.execute("SELECT MAX(rowid) FROM stored_events") as cursor:
            row = await cursor.fetchone()
        return int(row[0] or 0) if row else 0

    async def of_originator(
        self, originator_id: UUID, after: int, limit: int = 1000
    ) -> list[LoggedEvent]:
        """One aggregate's events with positions after `after`."""
        sql = (
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " WHERE originator_id = ? AND rowid > ?"
        )
        params: list[Any] = [originator_id.hex, after]
        sql += " ORDER BY originator_version LIMIT ?"
        params.append(limit)
        async with self._db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        return [self._logged(row) for row in rows]

    async def of_originator_before(
        self, originator_id: UUID, before: int, limit: int = 500
    ) -> list[LoggedEvent]:
        """One aggregate's events with positions before `before`, newest first."""
        async with self._db.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " WHERE originator_id = ? AND rowid < ? ORDER BY originator_version DESC LIMIT ?",
            (originator_id.hex, before, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [self._logged(row) for row in rows]

    async def select(
        self, after: int, limit: int, type_name: str | None = None,
        originator_id: UUID | None = None,
    ) -> list[LoggedEvent]:
        """Events in log order after `after`, optionally of one type or one aggregate.

        `type_name` is an event's class name, alone ("ReplyCompleted") or qualified by its
        aggregate ("ChatSession.ReplyCompleted").
        """
        sql = (
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " WHERE rowid > ?"
        )
        params: list[Any] = [after]
        if type_name:
            # GLOB, not LIKE: type names are case-sensitive and "_" is no wildcard in them.
            pattern = "".join(f"[{c}]" if c in "*?[]" else c for c in type_name)
            sql += " AND (topic GLOB ? OR topic GLOB ?)"
            params += [f"*:{pattern}", f"*.{pattern}"]
        if originator_id is not None:
            sql += " AND originator_id = ?"
            params.append(originator_id.hex)
        sql += " ORDER BY rowid LIMIT ?"
        params.append(limit)
        async with self._db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        return [self._logged(row) for row in rows]

    def _logged(self, row: Any) -> LoggedEvent:
        rowid, originator_id, version, topic, state = row
        stored = StoredEvent(
            originator_id=UUID(originator_id), originator_version=version, topic=topic,
            state=state,
        )
        return LoggedEvent(rowid, self._mapper.to_domain_event(stored))
