"""Messages of every session, including each reply's text as it grows."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

import aiosqlite

from projections.base import ISO_FORMAT, Projection, iso


class MessagesProjection(Projection):
    name = "messages"
    tables = ("messages",)
    version = 2  # 2: in_reply_to
    schema = """
    CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        status TEXT NOT NULL,
        token_count INTEGER,
        processing_time REAL,
        metadata TEXT NOT NULL DEFAULT '{}',
        queue_position INTEGER,
        started_at TEXT,
        in_reply_to TEXT
    );
    CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, position);
    CREATE INDEX IF NOT EXISTS messages_by_status ON messages (status);
    """

    def on_ChatSession_UserMessagePosted(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status)"
            " VALUES (?, ?, ?, 'user', ?, ?, 'complete')",
            (str(e.message_id), str(e.originator_id), pos, e.content, iso(e.timestamp)),
        )

    def on_ChatSession_MessageImported(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        # The message's own time from the file, not the import's.
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status,"
            " token_count, processing_time, metadata, in_reply_to)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(e.message_id), str(e.originator_id), pos, e.role, e.content, e.sent_at,
             e.status, e.token_count, e.processing_time, _json(e.metadata),
             str(e.in_reply_to) if e.in_reply_to else None),
        )

    def on_ChatSession_ReplyQueued(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status,"
            " token_count, queue_position, in_reply_to)"
            " VALUES (?, ?, ?, 'assistant', '', ?, 'queued', 0, ?, ?)",
            (str(e.reply_id), str(e.originator_id), pos, iso(e.timestamp), e.queue_position,
             str(e.in_reply_to)),
        )

    def on_ChatSession_ReplyStarted(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute("UPDATE messages SET status = 'streaming', started_at = ? WHERE id = ?",
                   (iso(e.timestamp), str(e.reply_id)))

    def on_ChatSession_TokensGenerated(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute(
            "UPDATE messages SET content = content || ?, token_count = token_count + ?"
            " WHERE id = ?",
            (e.text, e.token_count, str(e.reply_id)),
        )

    def on_ChatSession_ReplyCompleted(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        metadata = {
            "model_version": e.model_version,
            "model_params": e.model_params,
            "prompt_template": e.prompt_template,
            "finish_reason": e.finish_reason,
            "time_to_first_token": e.time_to_first_token,
        }
        db.execute(
            "UPDATE messages SET status = 'complete', content = ?, token_count = ?,"
            " processing_time = ?, metadata = ? WHERE id = ?",
            (e.content, e.token_count, e.processing_time, _json(metadata), str(e.reply_id)),
        )

    def on_ChatSession_ReplyFailed(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        metadata = {"finish_reason": "error", "error": {"code": e.code, "message": e.message}}
        self._end(db, e, "failed", None, metadata)

    def on_ChatSession_ReplyCancelled(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        self._end(db, e, "cancelled", e.content, {"finish_reason": "cancelled"})

    def on_ChatSession_ReplyInterrupted(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        self._end(db, e, "interrupted", e.content, {"finish_reason": "interrupted"})

    def _end(
        self, db: sqlite3.Connection, e: Any, status: str, content: str | None,
        metadata: dict[str, Any],
    ) -> None:
        row = db.execute("SELECT started_at, content FROM messages WHERE id = ?",
                         (str(e.reply_id),)).fetchone()
        started_at, current = row
        elapsed = None
        if started_at:
            started = datetime.strptime(started_at, ISO_FORMAT)
            elapsed = round((e.timestamp.replace(tzinfo=None) - started).total_seconds(), 3)
        db.execute(
            "UPDATE messages SET status = ?, content = ?, processing_time = ?, metadata = ?"
            " WHERE id = ?",
            (status, current if content is None else content, elapsed, _json(metadata),
             str(e.reply_id)),
        )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


COLUMNS = (
    "m.id, m.role, m.content, m.timestamp, m.status, m.token_count, m.processing_time,"
    " m.metadata, m.queue_position"
)


def message_view(row: Any) -> dict[str, Any]:
    message = dict(row)
    message["is_user"] = message["role"] == "user"
    message["metadata"] = json.loads(message["metadata"])
    if message["role"] == "user":
        message["token_count"] = message["token_count"] or 0
    if message["status"] != "queued":
        del message["queue_position"]
    return message


async def list_messages(db: aiosqlite.Connection, session_id: str) -> list[dict[str, Any]]:
    async with db.execute(
        f"SELECT {COLUMNS} FROM messages m WHERE m.session_id = ? ORDER BY m.position",
        (session_id,),
    ) as cursor:
        return [message_view(row) for row in await cursor.fetchall()]


async def get_message(db: aiosqlite.Connection, message_id: str) -> dict[str, Any] | None:
    async with db.execute(f"SELECT {COLUMNS} FROM messages m WHERE m.id = ?",
                          (message_id,)) as cursor:
        row = await cursor.fetchone()
    return message_view(row) if row else None


def history_before(
    db: sqlite3.Connection, session_id: str, reply_id: str, max_chars: int
) -> list[tuple[str, str, str]]:
    """The conversation a reply answers, oldest first: (message_id, role, content).

    Every user message before the reply, each followed by its latest completed answer;
    earlier answers to the message this reply answers are left out (a regenerated reply
    replaces them rather than following them). Read newest first and cut once `max_chars`
    are gathered, so a long chat costs no more than the model's context can take.
    """
    found = db.execute(
        "SELECT position, in_reply_to FROM messages WHERE id = ? AND session_id = ?",
        (reply_id, session_id),
    ).fetchone()
    if found is None:
        raise LookupError(f"no reply {reply_id} in session {session_id}")
    position, answering = found
    turns: list[tuple[str, str, str]] = []
    answered: set[str] = set()
    chars = 0
    for message_id, role, content, status, in_reply_to in db.execute(
        "SELECT id, role, content, status, in_reply_to FROM messages"
        " WHERE session_id = ? AND position < ? ORDER BY position DESC",
        (session_id, position),
    ):
        if role == "assistant":
            if (status != "complete" or not content or in_reply_to == answering
                    or in_reply_to in answered):
                continue
            answered.add(in_reply_to)
        turns.append((message_id, role, content))
        chars += len(content)
        if chars >= max_chars:
            break
    turns.reverse()
    return turns


async def open_replies(db: aiosqlite.Connection) -> list[tuple[str, str]]:
    """(session_id, reply_id) of every reply still queued or streaming."""
    async with db.execute(
        "SELECT session_id, id FROM messages WHERE status IN ('queued', 'streaming')"
        " ORDER BY position"
    ) as cursor:
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def user_stats(db: aiosqlite.Connection, owner_id: str) -> dict[str, Any]:
    async with db.execute(
        "SELECT COUNT(DISTINCT s.id), COUNT(m.id),"
        " COALESCE(SUM(CASE WHEN m.role = 'assistant' THEN m.token_count END), 0),"
        " AVG(CASE WHEN m.role = 'assistant' AND m.status = 'complete'"
        "     THEN m.processing_time END)"
        " FROM sessions s LEFT JOIN messages m ON m.session_id = s.id"
        " WHERE s.owner_id = ? AND s.deleted = 0",
        (owner_id,),
    ) as cursor:
        sessions, messages, tokens, avg_time = await cursor.fetchone()  # type: ignore[misc]
    return {
        "sessions": sessions,
        "messages": messages,
        "tokens_generated": tokens,
        "avg_processing_time": round(avg_time, 3) if avg_time is not None else 0.0,
    }


async def count_messages(db: aiosqlite.Connection) -> int:
    async with db.execute(
        "SELECT COUNT(*) FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE s.deleted = 0"
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def snapshot(db: aiosqlite.Connection, session_id: str) -> tuple[int, list[dict[str, Any]]]:
    """(position, messages) read in one statement, hence from one consistent snapshot: the
    messages reflect exactly the events up to `position`, so a live stream resumed from
    there neither misses nor repeats anything."""
    async with db.execute(
        f"SELECT p.position AS applied, {COLUMNS} FROM projection_positions p"
        " LEFT JOIN messages m ON m.session_id = ? WHERE p.name = 'messages'"
        " ORDER BY m.position",
        (session_id,),
    ) as cursor:
        rows = list(await cursor.fetchall())
    position = int(rows[0]["applied"]) if rows else 0
    messages = []
    for row in rows:
        if row["id"] is not None:
            message = dict(row)
            message.pop("applied")
            messages.append(message_view(message))
    return position, messages


async def daily_usage(db: aiosqlite.Connection, owner_id: str,
                      since_day: str) -> dict[str, tuple[int, int]]:
    """{UTC day "YYYY-MM-DD": (messages, tokens generated)} of the user's chats that are
    not deleted, from `since_day` on; days without messages are absent."""
    async with db.execute(
        "SELECT substr(m.timestamp, 1, 10) AS day, COUNT(*),"
        " COALESCE(SUM(CASE WHEN m.role = 'assistant' THEN m.token_count END), 0)"
        " FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE s.owner_id = ? AND s.deleted = 0 AND m.timestamp >= ? GROUP BY day",
        (owner_id, since_day),
    ) as cursor:
        return {row[0]: (int(row[1]), int(row[2])) for row in await cursor.fetchall()}


async def queue_positions(db: aiosqlite.Connection, session_id: str) -> dict[str, int]:
    """{reply_id: place in the reply queue (1 = next)} of the session's queued replies, as
    the actor counts it: the replies queued before it, plus one if a reply is running."""
    async with db.execute(
        "SELECT m.id, (SELECT COUNT(*) FROM messages q WHERE q.status = 'queued'"
        "   AND q.position < m.position)"
        " + EXISTS (SELECT 1 FROM messages r WHERE r.status = 'streaming') + 1"
        " FROM messages m WHERE m.session_id = ? AND m.status = 'queued'",
        (session_id,),
    ) as cursor:
        return {row[0]: int(row[1]) for row in await cursor.fetchall()}
