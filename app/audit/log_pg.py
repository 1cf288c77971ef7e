"""The PostgreSQL store's records exactly as stored, for `verify` (app/audit/chain.py).

The same records `app.audit.log.records` reads from the SQLite file, from the library's
events table: `notification_id` is the position, the originator id is written as the hex
text the hash chain hashes (projections/hashchain.py `record_bytes`)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import sql

from app.audit.log import BATCH, Record


class PostgresLog:
    def __init__(self, url: str, table: str) -> None:
        self._db = psycopg.connect(url, autocommit=True)
        self._table = sql.Identifier(table)

    def close(self) -> None:
        self._db.close()

    def head(self) -> int:
        row = self._db.execute(
            sql.SQL("SELECT MAX(notification_id) FROM {}").format(self._table)).fetchone()
        return int(row[0] or 0) if row else 0

    def records(self, after: int = 0, batch: int = BATCH) -> Iterator[Record]:
        """Every record after position `after`, in log order, read in batches."""
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
            " WHERE notification_id > %s ORDER BY notification_id LIMIT %s").format(self._table)
        while True:
            rows = self._db.execute(query, [after, batch]).fetchall()
            for position, originator_id, version, topic, state in rows:
                oid = originator_id.hex if hasattr(originator_id, "hex") else str(originator_id)
                yield Record(int(position), oid, int(version), str(topic), bytes(state or b""))
            if len(rows) < batch:
                return
            after = rows[-1][0]

