"""Async reads of the committed event log in a PostgreSQL store (the library's table).

The same reads as `app.event_log.EventLog` makes of the SQLite file, on the table the
library's `PostgresApplicationRecorder` writes: `notification_id` is the log position
(the library takes a table lock around each insert, so positions become visible in order;
a rolled-back insert may leave a gap, which readers of "after N" never notice).
"""

from __future__ import annotations

from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from app.event_log import LoggedEvent
from projections.stored_rows import FastDecoder

# Connections for concurrent readers (streams, the admin pages): a read is one short query.
POOL_MAX = 4


class PgRow(NamedTuple):
    """A row of the library's events table (the originator id as PostgreSQL's uuid)."""

    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


class PostgresEventLog:
    def __init__(self, pool: AsyncConnectionPool[Any], table: str, mapper: Mapper[UUID],
                 fast_decode: bool = True) -> None:
        self._pool = pool
        self._mapper = mapper
        self._decoder = (FastDecoder(mapper) if fast_decode and FastDecoder.supports(mapper)
                         else None)
        name = sql.Identifier(table)
        columns = sql.SQL("SELECT notification_id, originator_id, originator_version, topic,"
                          " state FROM {} ").format(name)
        self._head = sql.SQL("SELECT MAX(notification_id) FROM {}").format(name)
        self._after = columns + sql.SQL(
            "WHERE originator_id = %s AND notification_id > %s"
            " ORDER BY originator_version LIMIT %s")
        self._before = columns + sql.SQL(
            "WHERE originator_id = %s AND notification_id < %s"
            " ORDER BY originator_version DESC LIMIT %s")
        self._columns = columns

    @classmethod
    async def open(cls, url: str, table: str, mapper: Mapper[UUID], timeout: float = 5.0,
                   fast_decode: bool = True) -> PostgresEventLog:
        # Autocommit: a read never leaves a transaction open between queries. A checked
        # connection: one that died while idle (a database restart) is replaced, not used.
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url, min_size=1, max_size=POOL_MAX, open=False, kwargs={"autocommit": True},
            timeout=timeout, check=AsyncConnectionPool.check_connection)
        await pool.open(wait=True)
        return cls(pool, table, mapper, fast_decode)

    async def close(self) -> None:
        await self._pool.close()

    async def _rows(self, query: sql.Composable, params: list[Any]) -> list[LoggedEvent]:
        async with self._pool.connection() as db:
            cursor = await db.execute(query, params)
            rows = await cursor.fetchall()
        return [self._logged(PgRow(*row)) for row in rows]

    async def head(self) -> int:
        async with self._pool.connection() as db:
            cursor = await db.execute(self._head)
            row = await cursor.fetchone()
        return int(row[0] or 0) if row else 0

    async def of_originator(
        self, originator_id: UUID, after: int, limit: int = 1000
    ) -> list[LoggedEvent]:
        """One aggregate's events with positions after `after`."""
        return await self._rows(self._after, [originator_id, after, limit])

    async def of_originator_before(
        self, originator_id: UUID, before: int, limit: int = 500
    ) -> list[LoggedEvent]:
        """One aggregate's events with positions before `before`, newest first."""
        return await self._rows(self._before, [originator_id, before, limit])

    async def select(
        self, after: int, limit: int, type_name: str | None = None,
        originator_id: UUID | None = None,
    ) -> list[LoggedEvent]:
        """Events in log order after `after`, optionally of one type or one aggregate
        (`type_name` alone, "ReplyCompleted", or with its aggregate's name)."""
        query = self._columns + sql.SQL("WHERE notification_id > %s")
        params: list[Any] = [after]
        if type_name:
            # A suffix compared as text: no pattern characters to escape in the name.
            query += sql.SQL(" AND (right(topic, %s) = %s OR right(topic, %s) = %s)")
            params += [len(type_name) + 1, f":{type_name}", len(type_name) + 1,
                       f".{type_name}"]
        if originator_id is not None:
            query += sql.SQL(" AND originator_id = %s")
            params.append(originator_id)
        query += sql.SQL(" ORDER BY notification_id LIMIT %s")
        params.append(limit)
        return await self._rows(query, params)

    def _logged(self, row: PgRow) -> LoggedEvent:
        if self._decoder is not None:
            return LoggedEvent(row.id, self._decoder.decode(row))
        stored = StoredEvent(originator_id=row.originator_id,
                             originator_version=row.originator_version, topic=row.topic,
                             state=row.state)
        return LoggedEvent(row.id, self._mapper.to_domain_event(stored))
