"""The event browser on a PostgreSQL store: the same index queries on the read models
(SQLite), the log's own parts (rows by position, one aggregate's positions, the head) read
from the library's events table. `open_browser` picks the browser for the settings' store.
"""

from __future__ import annotations

import sqlite3
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from psycopg import sql

from app.audit.browse import EventBrowser, resolve_user
from app.config import Settings
from app.event_store import postgres_url


class PostgresEventBrowser(EventBrowser):
    def __init__(self, read_model_path: Any, url: str, table: str,
                 mapper: Mapper[UUID]) -> None:
        self.mapper = mapper
        main = f"file:{read_model_path}?mode=ro" if read_model_path.is_file() else ":memory:"
        self.db = sqlite3.connect(main, uri=True, check_same_thread=False)
        self.log = psycopg.connect(url, autocommit=True)
        self._table = sql.Identifier(table)

    def close(self) -> None:
        self.db.close()
        self.log.close()

    def find_user(self, ref: str) -> UUID:
        def first(originator_id: UUID) -> Any:
            return self.log.execute(sql.SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state"
                " FROM {} WHERE originator_id = %s AND originator_version = 1"
            ).format(self._table), [originator_id]).fetchone()
        return resolve_user(first, self.mapper, ref)

    def log_head(self) -> int:
        row = self.log.execute(
            sql.SQL("SELECT MAX(notification_id) FROM {}").format(self._table)).fetchone()
        return int(row[0] or 0) if row else 0

    def _rows(self, positions: list[int]) -> list[Any]:
        return self.log.execute(sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM {} WHERE notification_id = ANY(%s) ORDER BY notification_id"
        ).format(self._table), [positions]).fetchall()

    def _log_positions(self, low: int, high: int, aggregate: UUID | None, limit: int,
                       newest_first: bool) -> list[int]:
        query = sql.SQL("SELECT notification_id FROM {} WHERE notification_id BETWEEN %s"
                        " AND %s").format(self._table)
        params: list[Any] = [low, high]
        if aggregate is not None:
            query += sql.SQL(" AND originator_id = %s")
            params.append(aggregate)
        query += sql.SQL(" ORDER BY notification_id DESC LIMIT %s" if newest_first
                         else " ORDER BY notification_id LIMIT %s")
        return sorted(int(row[0]) for row in self.log.execute(query, [*params, limit]))

    def _of_aggregate(self, aggregate: UUID, low: int, high: int) -> tuple[str, list[Any]]:
        # The index is in another database: the aggregate's positions go in as values
        # (one aggregate's events; SQLite takes up to 32766 of them).
        found = self._log_positions(low, high, aggregate, 32_000, False)
        if not found:
            return "0", []
        return f"position IN ({','.join('?' * len(found))})", list(found)


def open_browser(settings: Settings, application: Application[UUID]) -> EventBrowser:
    url = postgres_url(settings)
    if url is None:
        return EventBrowser(settings.read_model_path, settings.event_store_path,
                            application.mapper)
    table: str = getattr(application.recorder, "events_table_name", "chat_events")
    return PostgresEventBrowser(settings.read_model_path, url, table, application.mapper)
