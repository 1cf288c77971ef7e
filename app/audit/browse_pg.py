"""The event browser on a PostgreSQL store: the same index queries on the read models
(PostgreSQL's, or a SQLite file), the log's own parts (rows by position, one aggregate's
positions, the head) read from the library's events table. `open_browser` picks the
browser for the settings' store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from psycopg import sql

from app.audit.browse import EventBrowser, resolve_user
from app.config import Settings
from app.event_store import postgres_url
from projections.database import ReadModels, SQLiteReadModels, dialect_of


def _read_only(path: Path) -> sqlite3.Connection:
    main = f"file:{path}?mode=ro" if path.is_file() else ":memory:"
    return sqlite3.connect(main, uri=True, check_same_thread=False)


class PostgresEventBrowser(EventBrowser):
    no_table = (sqlite3.OperationalError, psycopg.errors.UndefinedTable)

    def __init__(self, read_models: ReadModels | Path, url: str, table: str,
                 mapper: Mapper[UUID]) -> None:
        self.mapper = mapper
        if isinstance(read_models, SQLiteReadModels):
            read_models = read_models.path
        self.db = (_read_only(read_models) if isinstance(read_models, Path)
                   else read_models.connect())
        self.log = psycopg.connect(url, autocommit=True)
        self._table = sql.Identifier(table)
        self._table_name = table

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
        if dialect_of(self.db) == "postgresql":  # the index beside the log: a subquery
            quoted = '"' + self._table_name.replace('"', '""') + '"'
            return (f"position IN (SELECT notification_id FROM public.{quoted}"
                    " WHERE originator_id = ?)", [aggregate])
        # The index is in another database: the aggregate's positions go in as values
        # (one aggregate's events; SQLite takes up to 32766 of them).
        found = self._log_positions(low, high, aggregate, 32_000, False)
        if not found:
            return "0", []
        return f"position IN ({','.join('?' * len(found))})", list(found)


def open_browser(settings: Settings, application: Application[UUID],
                 read_models: ReadModels | None = None) -> EventBrowser:
    """The browser for the settings' event store, over `read_models` (the server's; by
    default the SQLite file in DATA_DIR)."""
    url = postgres_url(settings)
    if url is None:
        path = (read_models.path if isinstance(read_models, SQLiteReadModels)
                else settings.read_model_path)
        return EventBrowser(path, settings.event_store_path, application.mapper)
    table: str = getattr(application.recorder, "events_table_name", "chat_events")
    return PostgresEventBrowser(read_models or settings.read_model_path, url, table,
                                application.mapper)
