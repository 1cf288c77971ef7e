"""Async reads of the committed event log (the event store's SQLite file, read-only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent

from projections.read_connection import connect_read
from projections.stored_rows import FastDecoder, StoredRow


class LoggedEvent:
    """An event at its log position. Read from the log (`EventLog`), it is decoded the
    first time `event` is looked at: time travel folds a long chat without decoding the
    token batches its answer does not depend on (app/usecases/timeline.py)."""

    __slots__ = ("_decode", "_event", "_row", "position", "topic")

    def __init__(self, position: int, event: DomainEventProtocol[UUID] | None = None, *,
                 topic: str = "", row: Any = None,
                 decode: Callable[[Any], DomainEventProtocol[UUID]] | None = None) -> None:
        if event is None and (row is None or decode is None):
            raise ValueError("a logged event needs its event, or its row and a decoder")
        self.position = position
        self.topic = topic or (_topic(type(event)) if event is not None else "")
        self._event = event
        self._row = row
        self._decode = decode

    @property
    def event(self) -> DomainEventProtocol[UUID]:
        event = self._event
        if event is None:
            row, decode = self._row, self._decode
            if row is None or decode is None:  # another thread decoded it meanwhile
                assert self._event is not None
                return self._event
            event = self._event = decode(row)
            self._row = self._decode = None  # the encoded form is not needed again
        return event

    @property
    def kind(self) -> str:
        """The event's class name without its aggregate's ("TokensGenerated"), from the
        stored topic: known without decoding."""
        return self.topic.rpartition(".")[2]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoggedEvent):
            return NotImplemented
        return (self.position, self.event) == (other.position, other.event)

    def __hash__(self) -> int:
        return hash(self.position)

    def __repr__(self) -> str:
        return f"LoggedEvent(position={self.position!r}, event={self.event!r})"


def _topic(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class EventLog:
    def __init__(self, db: aiosqlite.Connection, mapper: Mapper[UUID],
                 fast_decode: bool = True) -> None:
        self._db = db
        self._mapper = mapper
        # The runner's faster decoder where the mapper allows it (same events: see
        # projections/stored_rows.py); a long chat's first time-travel view decodes
        # thousands of events. `fast_decode=False`: the mapper's own (benchmarks).
        self._decoder = (FastDecoder(mapper) if fast_decode and FastDecoder.supports(mapper)
                         else None)

    @classmethod
    async def open(cls, path: Path, mapper: Mapper[UUID], fast_decode: bool = True
                   ) -> EventLog:
        # Buffered, so one stream's query never pins another's snapshot
        # (projections/read_connection.py).
        db = await connect_read(f"file:{path}?mode=ro", uri=True, rows_by_name=False)
        return cls(db, mapper, fast_decode)

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
        return LoggedEvent(row[0], topic=row[3], row=row, decode=self._decode)

    def _decode(self, row: Any) -> DomainEventProtocol[UUID]:
        rowid, originator_id, version, topic, state = row
        if self._decoder is not None:
            return self._decoder.decode(StoredRow(rowid, originator_id, version, topic, state))
        stored = StoredEvent(
            originator_id=UUID(originator_id), originator_version=version, topic=topic,
            state=state,
        )
        return self._mapper.to_domain_event(stored)
