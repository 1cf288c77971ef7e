"""The request handlers' shared read-model connection, safe for read-your-writes.

One aiosqlite connection serves every request, and aiosqlite runs each call (`execute`,
then `fetchall`, then `close`) as its own job on the connection's thread. Between a
query's `execute` and its last fetch, the statement is active, so SQLite keeps the
connection's read transaction open on the snapshot taken at `execute`; any other
request's query queued in that gap reads the same, older snapshot. A handler that has
waited for the projections to include its write could then read back a database
without its own message (issue 7, items 10 and 11). Here a query runs and fetches all its
rows in one job, so no statement is ever left active between jobs and every query reads
the latest committed state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiosqlite
from aiosqlite.context import contextmanager


class BufferedCursor:
    """The rows of a finished query, with the read side of aiosqlite's Cursor."""

    def __init__(self, rows: list[Any], description: Any) -> None:
        self._rows = rows
        self._next = 0
        self.description = description
        self.rowcount = -1

    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchmany(self, size: int = 1) -> list[Any]:
        rows = self._rows[self._next:self._next + size]
        self._next += len(rows)
        return rows

    async def fetchall(self) -> list[Any]:
        rows = self._rows[self._next:]
        self._next = len(self._rows)
        return rows

    async def close(self) -> None:
        self._rows = []

    def __aiter__(self) -> BufferedCursor:
        return self

    async def __anext__(self) -> Any:
        if self._next >= len(self._rows):
            raise StopAsyncIteration
        return await self.fetchone()

    async def __aenter__(self) -> BufferedCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def _query(conn: sqlite3.Connection, sql: str,
           parameters: Iterable[Any]) -> tuple[list[Any], Any]:
    cursor = conn.execute(sql, list(parameters))
    try:
        return cursor.fetchall(), cursor.description
    finally:
        cursor.close()


class ReadConnection(aiosqlite.Connection):
    dialect: ClassVar[Literal["sqlite"]] = "sqlite"

    @contextmanager
    async def execute(  # type: ignore[override]
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> BufferedCursor:
        rows, description = await self._execute(_query, self._conn, sql, parameters or [])
        return BufferedCursor(rows, description)

    async def execute_fetchall(  # type: ignore[override]
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> list[Any]:
        rows, _description = await self._execute(_query, self._conn, sql, parameters or [])
        return list(rows)


async def connect_read(path: Path | str, *, uri: bool = False,
                       rows_by_name: bool = True) -> ReadConnection:
    connection = ReadConnection(lambda: sqlite3.connect(path, uri=uri), iter_chunk_size=64)
    await connection
    if rows_by_name:
        connection.row_factory = aiosqlite.Row
    return connection
