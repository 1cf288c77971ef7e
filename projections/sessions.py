"""The session list: one row per chat session, with its settings and counters."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, TypeAlias

from projections.base import Projection, iso, row_dict
from projections.database import PostgresDB, ReadDB, dialect_of

# A sync connection: the runner's (writing) or a reader's.
DB: TypeAlias = sqlite3.Connection | PostgresDB


class SessionsProjection(Projection):
    name = "sessions"
    tables = ("sessions",)
    schema = """
    CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        title TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        message_count BIGINT NOT NULL DEFAULT 0,
        config TEXT NOT NULL,
        deleted BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions (owner_id, deleted, updated_at);
    """

    def on_ChatSession_Started(self, db: DB, e: Any, _: int) -> None:
        stamp = iso(e.timestamp)
        db.execute(
            "INSERT INTO sessions (id, owner_id, title, created_at, updated_at, config)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (str(e.originator_id), str(e.owner_id), e.title or "New chat", stamp, stamp,
             json.dumps(e.config, ensure_ascii=False, sort_keys=True)),
        )

    def _touch(self, db: DB, e: Any, sql: str = "", *args: Any) -> None:
        extra = f", {sql}" if sql else ""
        db.execute(f"UPDATE sessions SET updated_at = ?{extra} WHERE id = ?",
                   (iso(e.timestamp), *args, str(e.originator_id)))

    def on_ChatSession_Renamed(self, db: DB, e: Any, _: int) -> None:
        self._touch(db, e, "title = ?", e.title)

    def on_ChatSession_Configured(self, db: DB, e: Any, _: int) -> None:
        row = db.execute("SELECT config FROM sessions WHERE id = ?",
                         (str(e.originator_id),)).fetchone()
        if row is None:
            raise LookupError(f"no session {e.originator_id} to configure")
        config = {**json.loads(row[0]), **e.changes}
        self._touch(db, e, "config = ?", json.dumps(config, ensure_ascii=False, sort_keys=True))

    def on_ChatSession_Deleted(self, db: DB, e: Any, _: int) -> None:
        self._touch(db, e, "deleted = 1")

    def on_ChatSession_UserMessagePosted(self, db: DB, e: Any, _: int) -> None:
        self._touch(db, e, "message_count = message_count + 1")

    def on_ChatSession_ReplyQueued(self, db: DB, e: Any, _: int) -> None:
        self._touch(db, e, "message_count = message_count + 1")

    def on_ChatSession_MessageImported(self, db: DB, e: Any, _: int) -> None:
        self._touch(db, e, "message_count = message_count + 1")


SUMMARY = "s.id, s.title, s.created_at, s.updated_at, s.message_count"


def _summary(row: Any) -> dict[str, Any]:
    return row_dict(row)


def _detail(row: Any) -> dict[str, Any]:
    session = row_dict(row)
    session["config"] = json.loads(session["config"])
    return session


def _not_api(dialect: str) -> str:
    """SQL true unless the session's config has origin "api".

    PostgreSQL's JSON operators fail on a whole document holding an escaped NUL (`\\u0000`,
    which json.dumps writes for a NUL in a system prompt) or a lone surrogate, so there the
    config's text is searched instead: written by json.dumps with sorted keys and default
    separators, a flat object whose keys are the application's own, it holds
    `"origin": "api"` exactly when its origin is "api" (a quote inside a string value is
    always escaped, so no value can imitate the pair).
    """
    if dialect == "postgresql":
        return "strpos(s.config, '\"origin\": \"api\"') = 0"
    return "COALESCE(json_extract(s.config, '$.origin'), '') != 'api'"


def _contains(dialect: str, column: str) -> str:
    """SQL true when `column` holds the next parameter (a `_like` pattern), ignoring ASCII
    case. SQLite's LIKE already does (lower() on both sides would double the cost of a
    search through every message); PostgreSQL's LIKE does not."""
    if dialect == "postgresql":
        return f"lower({column}) LIKE lower(?) ESCAPE '\\'"
    return f"{column} LIKE ? ESCAPE '\\'"


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_sessions(
    db: ReadDB, owner_id: str, q: str = "", limit: int = 50
) -> list[dict[str, Any]]:
    params: list[Any] = [owner_id]
    # Sessions the LLM API opened for one generation (config origin "api") are not chats
    # the user started: they stay out of the list, readable by id for audit.
    dialect = dialect_of(db)
    where = f"s.owner_id = ? AND s.deleted = 0 AND {_not_api(dialect)}"
    if q:
        where += (
            f" AND ({_contains(dialect, 's.title')} OR EXISTS (SELECT 1 FROM messages m"
            f" WHERE m.session_id = s.id AND {_contains(dialect, 'm.content')}))"
        )
        params += [_like(q), _like(q)]
    params.append(limit)
    async with db.execute(
        f"SELECT {SUMMARY} FROM sessions s WHERE {where}"
        " ORDER BY s.updated_at DESC, s.id LIMIT ?",
        params,
    ) as cursor:
        return [_summary(row) for row in await cursor.fetchall()]


async def get_session(
    db: ReadDB, owner_id: str, session_id: str
) -> dict[str, Any] | None:
    async with db.execute(
        f"SELECT {SUMMARY}, s.config FROM sessions s"
        " WHERE s.id = ? AND s.owner_id = ? AND s.deleted = 0",
        (session_id, owner_id),
    ) as cursor:
        row = await cursor.fetchone()
    return _detail(row) if row else None


async def count_sessions(db: ReadDB, owner_id: str | None = None) -> int:
    sql, params = "SELECT COUNT(*) FROM sessions WHERE deleted = 0", []
    if owner_id is not None:
        sql += " AND owner_id = ?"
        params.append(owner_id)
    async with db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
