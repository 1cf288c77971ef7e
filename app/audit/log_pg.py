"""The PostgreSQL store's records exactly as stored: `AuditLog` (app/audit/log.py) on the
library's events table, for `verify`, `export`, `events`, `stats` and the account commands.

The same records `app.audit.log.SQLiteLog` reads from the SQLite file: `notification_id` is
the position, the originator id is written as the hex text the hash chain hashes
(projections/hashchain.py `record_bytes`) and the SQLite file stores."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from app.audit.log import BATCH, Record

CONNECT_TIMEOUT = 5  # seconds: a database that is away fails the command soon


def _record(row: Sequence[Any]) -> Record:
    position, originator_id, version, topic, state = row
    oid = originator_id.hex if isinstance(originator_id, UUID) else str(originator_id)
    return Record(int(position), oid, int(version), str(topic), bytes(state or b""))


class PostgresLog:
    def __init__(self, url: str, table: str) -> None:
        # Autocommit: no transaction stays open between reads (it would hold back vacuum).
        self._db = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        self._table = sql.Identifier(table)
        self._columns = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {} ").format(self._table)

    def close(self) -> None:
        self._db.close()

    def head(self) -> int:
        row = self._db.execute(
            sql.SQL("SELECT MAX(notification_id) FROM {}").format(self._table)).fetchone()
        return int(row[0] or 0) if row else 0

    def records(self, after: int = 0, upto: int | None = None,
                batch: int = BATCH) -> Iterator[Record]:
        """Every record after position `after` (up to `upto`), in log order, in batches."""
        query = self._columns + sql.SQL("WHERE notification_id > %s")
        params: list[Any] = []
        if upto is not None:
            query += sql.SQL(" AND notification_id <= %s")
            params.append(upto)
        query += sql.SQL(" ORDER BY notification_id LIMIT %s")
        while True:
            rows = self._db.execute(query, [after, *params, batch]).fetchall()
            for row in rows:
                yield _record(row)
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def of_originators(self, originator_ids: Sequence[UUID],
                       after: int = 0) -> list[Record]:
        """Every record of these aggregates after `after`, in log order."""
        rows = self._db.execute(
            self._columns + sql.SQL("WHERE originator_id = ANY(%s) AND notification_id > %s"
                                    " ORDER BY notification_id"),
            [list(originator_ids), after]).fetchall()
        return [_record(row) for row in rows]

    def first(self, originator_id: UUID) -> Record | None:
        row = self._db.execute(
            self._columns + sql.SQL("WHERE originator_id = %s AND originator_version = 1"),
            [originator_id]).fetchone()
        return _record(row) if row is not None else None

    def with_topic(self, topic: str) -> Iterator[Record]:
        # A server-side cursor: the Started events of a big log are read as they are used.
        with self._db.transaction(), self._db.cursor(name="with_topic") as cursor:
            cursor.execute(self._columns + sql.SQL("WHERE topic = %s ORDER BY notification_id"),
                           [topic])
            for row in cursor:
                yield _record(row)

    def counts_by_topic(self) -> dict[str, int]:
        rows = self._db.execute(
            sql.SQL("SELECT topic, COUNT(*) FROM {} GROUP BY topic").format(self._table))
        # Ordered here, not in SQL: the database's collation must not change the order.
        return dict(sorted(((str(t), int(n)) for t, n in rows), key=lambda r: (-r[1], r[0])))
