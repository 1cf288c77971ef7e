"""Messages of every session, including each reply's text as it grows."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, TypeAlias

from projections.base import ISO_FORMAT, iso
from projections.batch import Batch, BatchProjection
from projections.database import PostgresDB, ReadDB

# A sync connection: the runner's (writing) or a reader's.
DB: TypeAlias = sqlite3.Connection | PostgresDB


class MessagesProjection(BatchProjection):
    name = "messages"
    tables = ("messages",)
    # 2: in_reply_to; 3: branches (parent_id, version_of, on_branch); 4: imported branches
    version = 4
    schema = """
    CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        status TEXT NOT NULL,
        token_count BIGINT,
        processing_time DOUBLE PRECISION,
        metadata TEXT NOT NULL DEFAULT '{}',
        queue_position BIGINT,
        started_at TEXT,
        in_reply_to TEXT,
        parent_id TEXT,
        version_of TEXT,
        on_branch BIGINT NOT NULL DEFAULT 1
    );
    CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_id, position);
    CREATE INDEX IF NOT EXISTS messages_on_branch
        ON messages (session_id, on_branch, position);
    CREATE INDEX IF NOT EXISTS messages_by_version ON messages (version_of);
    CREATE INDEX IF NOT EXISTS messages_by_status ON messages (status);
    """

    # Events whose handlers neither read nor write an existing reply's text or token
    # count: a reply's pending token batches need not be written before them.
    TOKEN_NEUTRAL = frozenset({
        "ChatSession.UserMessagePosted", "ChatSession.UserMessageEdited",
        "ChatSession.MessageImported", "ChatSession.ReplyQueued",
        "ChatSession.ReplyStarted"})

    def __init__(self) -> None:
        self._handlers: dict[type, Any] = {}  # event class -> its on_* handler, or None

    def apply_batch(self, db: DB, batch: Batch) -> None:
        """Event by event, except for a reply's token batches: they are gathered and
        written as one UPDATE per reply, before the first event that reads or rewrites
        that text (a rebuild is mostly tokens). A reply completed within the batch gets
        its whole text from `ReplyCompleted`, so its token batches are not written at all.
        """
        # reply_id.int (UUIDs hash in Python) -> reply_id, its texts, its tokens
        pending: dict[int, tuple[Any, list[str], int]] = {}
        handlers = self._handlers
        for record, event in batch:
            e: Any = event
            kind = type(e)
            handler = handlers.get(kind, self)
            if handler is self:
                handler = handlers[kind] = getattr(
                    self, "on_" + kind.__qualname__.replace(".", "_"), None)
            if handler is None:
                continue
            name = kind.__qualname__
            if name == "ChatSession.TokensGenerated":
                reply = e.reply_id.int
                gathered = pending.get(reply)
                if gathered is None:
                    pending[reply] = (e.reply_id, [e.text], e.token_count)
                else:
                    gathered[1].append(e.text)
                    pending[reply] = (e.reply_id, gathered[1], gathered[2] + e.token_count)
                continue
            if pending:
                if name == "ChatSession.ReplyCompleted":
                    pending.pop(e.reply_id.int, None)  # its content and count replace them
                elif name not in self.TOKEN_NEUTRAL:
                    self._add_tokens(db, pending)
            handler(db, e, record.id)
        if pending:
            self._add_tokens(db, pending)

    def _add_tokens(self, db: DB,
                    pending: dict[int, tuple[Any, list[str], int]]) -> None:
        db.executemany(
            "UPDATE messages SET content = content || ?, token_count = token_count + ?"
            " WHERE id = ?",
            [("".join(texts), count, str(reply_id))
             for reply_id, texts, count in pending.values()])
        pending.clear()

    def on_ChatSession_UserMessagePosted(self, db: DB, e: Any, pos: int) -> None:
        session_id = str(e.originator_id)
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status,"
            " parent_id) VALUES (?, ?, ?, 'user', ?, ?, 'complete', ?)",
            (str(e.message_id), session_id, pos, e.content, iso(e.timestamp),
             _branch_tip(db, session_id)),
        )

    def on_ChatSession_UserMessageEdited(self, db: DB, e: Any, pos: int) -> None:
        """The new version follows what the edited message followed; the current branch
        becomes the path to it (the old one stays, off the branch, viewable)."""
        session_id = str(e.originator_id)
        parent_id, root = _stored(
            db, "SELECT parent_id, COALESCE(version_of, id) FROM messages WHERE id = ?",
            (str(e.message_id),))
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status,"
            " parent_id, version_of) VALUES (?, ?, ?, 'user', ?, ?, 'complete', ?, ?)",
            (str(e.new_message_id), session_id, pos, e.content, iso(e.timestamp), parent_id,
             root),
        )
        _follow_branch(db, session_id, str(e.new_message_id))

    def on_ChatSession_MessageImported(self, db: DB, e: Any, pos: int) -> None:
        # The message's own time from the file, not the import's.
        # A file's branches come as they were exported; without them (version 1 files,
        # other apps, events stored before) each message follows the branch so far.
        session_id = str(e.originator_id)
        branch = getattr(e, "branch", None)
        if branch is None:
            parent = _branch_tip(db, session_id) if e.role == "user" else None
            version_of, on_branch = None, True
        else:
            parent, version_of = branch["parent_id"], branch["version_of"]
            on_branch = bool(branch["on_branch"])
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status,"
            " token_count, processing_time, metadata, in_reply_to, parent_id, version_of,"
            " on_branch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(e.message_id), session_id, pos, e.role, e.content, e.sent_at,
             e.status, e.token_count, e.processing_time, _json(e.metadata),
             str(e.in_reply_to) if e.in_reply_to else None, parent, version_of,
             int(on_branch)),
        )

    def on_ChatSession_ReplyQueued(self, db: DB, e: Any, pos: int) -> None:
        # A reply is on the branch its message is on.
        db.execute(
            "INSERT INTO messages (id, session_id, position, role, content, timestamp, status,"
            " token_count, queue_position, in_reply_to, on_branch)"
            " VALUES (?, ?, ?, 'assistant', '', ?, 'queued', 0, ?, ?,"
            " COALESCE((SELECT on_branch FROM messages WHERE id = ?), 1))",
            (str(e.reply_id), str(e.originator_id), pos, iso(e.timestamp), e.queue_position,
             str(e.in_reply_to), str(e.in_reply_to)),
        )

    def on_ChatSession_ReplyStarted(self, db: DB, e: Any, _: int) -> None:
        db.execute("UPDATE messages SET status = 'streaming', started_at = ? WHERE id = ?",
                   (iso(e.timestamp), str(e.reply_id)))

    def on_ChatSession_TokensGenerated(self, db: DB, e: Any, _: int) -> None:
        db.execute(
            "UPDATE messages SET content = content || ?, token_count = token_count + ?"
            " WHERE id = ?",
            (e.text, e.token_count, str(e.reply_id)),
        )

    def on_ChatSession_ReplyCompleted(self, db: DB, e: Any, _: int) -> None:
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

    def on_ChatSession_ReplyFailed(self, db: DB, e: Any, _: int) -> None:
        metadata = {"finish_reason": "error", "error": {"code": e.code, "message": e.message}}
        self._end(db, e, "failed", None, metadata)

    def on_ChatSession_ReplyCancelled(self, db: DB, e: Any, _: int) -> None:
        self._end(db, e, "cancelled", e.content, {"finish_reason": "cancelled"})

    def on_ChatSession_ReplyInterrupted(self, db: DB, e: Any, _: int) -> None:
        self._end(db, e, "interrupted", e.content, {"finish_reason": "interrupted"})

    def _end(
        self, db: DB, e: Any, status: str, content: str | None,
        metadata: dict[str, Any],
    ) -> None:
        started_at, current = _stored(
            db, "SELECT started_at, content FROM messages WHERE id = ?", (str(e.reply_id),))
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


def _stored(db: DB, sql: str, params: tuple[Any, ...]) -> Any:
    """The row a handler reads back: an earlier event of the log wrote it."""
    row = db.execute(sql, params).fetchone()
    if row is None:
        raise LookupError(f"no row {params!r} for {sql!r}")
    return row


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _branch_tip(db: DB, session_id: str) -> str | None:
    """The newest user message on the session's current branch: a new one follows it."""
    row = db.execute(
        "SELECT id FROM messages WHERE session_id = ? AND on_branch = 1 AND role = 'user'"
        " ORDER BY position DESC LIMIT 1", (session_id,)).fetchone()
    return str(row[0]) if row else None


def _follow_branch(db: DB, session_id: str, tip: str) -> None:
    """Make the path from the first message to `tip` the session's current branch: those
    user messages, their replies, and replies that answer no user message (imported)."""
    chain: list[str] = []
    current: str | None = tip
    while current is not None:
        chain.append(current)
        row = db.execute("SELECT parent_id FROM messages WHERE id = ?", (current,)).fetchone()
        current = row[0] if row else None
    db.execute("UPDATE messages SET on_branch = 0 WHERE session_id = ?", (session_id,))
    db.executemany("UPDATE messages SET on_branch = 1 WHERE id = ?", [(c,) for c in chain])
    db.executemany("UPDATE messages SET on_branch = 1 WHERE in_reply_to = ? AND role ="
                   " 'assistant'", [(c,) for c in chain])
    db.execute("UPDATE messages SET on_branch = 1 WHERE session_id = ? AND role = 'assistant'"
               " AND in_reply_to = id", (session_id,))


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


async def list_messages(db: ReadDB, session_id: str) -> list[dict[str, Any]]:
    async with db.execute(
        f"SELECT {COLUMNS} FROM messages m WHERE m.session_id = ? AND m.on_branch = 1"
        " ORDER BY m.position",
        (session_id,),
    ) as cursor:
        return [message_view(row) for row in await cursor.fetchall()]


async def get_message(db: ReadDB, message_id: str) -> dict[str, Any] | None:
    async with db.execute(f"SELECT {COLUMNS} FROM messages m WHERE m.id = ?",
                          (message_id,)) as cursor:
        row = await cursor.fetchone()
    return message_view(row) if row else None


def history_before(
    db: DB, session_id: str, reply_id: str, max_chars: int
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
        " WHERE session_id = ? AND on_branch = 1 AND position < ? ORDER BY position DESC",
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


async def open_replies(db: ReadDB) -> list[tuple[str, str]]:
    """(session_id, reply_id) of every reply still queued or streaming."""
    async with db.execute(
        "SELECT session_id, id FROM messages WHERE status IN ('queued', 'streaming')"
        " ORDER BY position"
    ) as cursor:
        return [(row[0], row[1]) for row in await cursor.fetchall()]


async def user_stats(db: ReadDB, owner_id: str) -> dict[str, Any]:
    async with db.execute(
        "SELECT COUNT(DISTINCT s.id), COUNT(m.id),"
        " COALESCE(SUM(CASE WHEN m.role = 'assistant' THEN m.token_count END), 0),"
        " AVG(CASE WHEN m.role = 'assistant' AND m.status = 'complete'"
        "     THEN m.processing_time END)"
        " FROM sessions s LEFT JOIN messages m ON m.session_id = s.id"
        " WHERE s.owner_id = ? AND s.deleted = 0",
        (owner_id,),
    ) as cursor:
        sessions, messages, tokens, avg_time = await cursor.fetchone()
    return {
        "sessions": sessions,
        "messages": messages,
        "tokens_generated": tokens,
        "avg_processing_time": round(avg_time, 3) if avg_time is not None else 0.0,
    }


async def count_messages(db: ReadDB) -> int:
    async with db.execute(
        "SELECT COUNT(*) FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE s.deleted = 0"
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def snapshot(db: ReadDB, session_id: str, limit: int | None = None
                   ) -> tuple[int, list[dict[str, Any]]]:
    """(position, messages) read in one statement, hence from one consistent snapshot: the
    messages reflect exactly the events up to `position`, so a live stream resumed from
    there neither misses nor repeats anything. With `limit`, only the newest that many
    (read backwards along the branch index, so a long chat costs no more than a short one)."""
    newest = "" if limit is None else f" ORDER BY m.position DESC LIMIT {int(limit)}"
    async with db.execute(
        f"SELECT p.position AS applied, m.* FROM projection_positions p"
        f" LEFT JOIN (SELECT {COLUMNS}, m.position FROM messages m"
        f"  WHERE m.session_id = ? AND m.on_branch = 1{newest}) m ON 1 = 1"
        " WHERE p.name = 'messages' ORDER BY m.position",
        (session_id,),
    ) as cursor:
        rows = list(await cursor.fetchall())
    position = int(rows[0]["applied"]) if rows else 0
    messages = []
    for row in rows:
        if row["id"] is not None:
            message = dict(row)
            message.pop("applied")
            message.pop("position")
            messages.append(message_view(message))
    return position, messages


async def page_before(db: ReadDB, session_id: str, before_id: str,
                      limit: int) -> tuple[list[dict[str, Any]], bool] | None:
    """(the `limit` messages of the current branch just before `before_id`, oldest first;
    whether there are more before them), or None when `before_id` is not on the branch."""
    async with db.execute(
        "SELECT position FROM messages WHERE id = ? AND session_id = ? AND on_branch = 1",
        (before_id, session_id),
    ) as cursor:
        found = await cursor.fetchone()
    if found is None:
        return None
    async with db.execute(
        f"SELECT {COLUMNS} FROM messages m WHERE m.session_id = ? AND m.on_branch = 1"
        " AND m.position < ? ORDER BY m.position DESC LIMIT ?",
        (session_id, found[0], limit + 1),
    ) as cursor:
        rows = list(await cursor.fetchall())
    more = len(rows) > limit
    return [message_view(row) for row in reversed(rows[:limit])], more


async def daily_usage(db: ReadDB, owner_id: str,
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


async def queued_replies(db: ReadDB, session_id: str) -> list[str]:
    """The ids of the session's replies still waiting in the queue."""
    async with db.execute(
        "SELECT id FROM messages WHERE session_id = ? AND status = 'queued' ORDER BY position",
        (session_id,),
    ) as cursor:
        return [row[0] for row in await cursor.fetchall()]


# -- branches: a user message edited is a new version; the current branch is the path of
# versions the session follows now (on_branch), the others stay viewable.

BRANCH_COLUMNS = "m.id, m.session_id, m.role, m.position, m.parent_id, m.version_of, m.on_branch"


async def branch_row(db: ReadDB, message_id: str) -> dict[str, Any] | None:
    """Where a message stands: its session, role, parent, first version, on the branch."""
    async with db.execute(f"SELECT {BRANCH_COLUMNS} FROM messages m WHERE m.id = ?",
                          (message_id,)) as cursor:
        row = await cursor.fetchone()
    return dict(row) if row else None


async def versions(db: ReadDB, session_id: str) -> dict[str, list[str]]:
    """{first version's id: every version's id, oldest first} of the session's edited
    user messages (messages never edited are absent)."""
    async with db.execute(
        "SELECT m.id, COALESCE(m.version_of, m.id) FROM messages m"
        " WHERE m.session_id = ? AND m.role = 'user' AND (m.version_of IS NOT NULL OR"
        "  EXISTS (SELECT 1 FROM messages v WHERE v.version_of = m.id))"
        " ORDER BY m.position", (session_id,),
    ) as cursor:
        groups: dict[str, list[str]] = {}
        for message_id, root in await cursor.fetchall():
            groups.setdefault(root, []).append(message_id)
    return groups


async def path_through(db: ReadDB, session_id: str,
                       message_id: str) -> list[dict[str, Any]]:
    """The conversation as it went through one version of a message: the messages it
    followed, then at each later step the newest version that followed it."""
    async with db.execute(
        f"SELECT {BRANCH_COLUMNS}, m.in_reply_to FROM messages m WHERE m.session_id = ?"
        " ORDER BY m.position", (session_id,),
    ) as cursor:
        rows = [dict(row) for row in await cursor.fetchall()]
    users = {r["id"]: r for r in rows if r["role"] == "user"}
    if message_id not in users:
        return []
    path: list[str] = []
    current: str | None = message_id
    while current is not None:
        path.append(current)
        current = users[current]["parent_id"]
    path.reverse()
    newest_child: dict[str | None, str] = {}
    for user in users.values():  # in position order: the last one seen is the newest
        newest_child[user["parent_id"]] = user["id"]
    while path[-1] in newest_child:
        path.append(newest_child[path[-1]])
    on_path = set(path)
    shown = {r["id"] for r in rows if r["id"] in on_path or (
        r["role"] == "assistant" and (r["in_reply_to"] in on_path or r["in_reply_to"] == r["id"]))}
    async with db.execute(
        f"SELECT {COLUMNS} FROM messages m WHERE m.session_id = ? ORDER BY m.position",
        (session_id,),
    ) as cursor:
        return [message_view(row) for row in await cursor.fetchall() if row["id"] in shown]


async def branch_fields(db: ReadDB, session_id: str) -> dict[str, dict[str, Any]]:
    """{message id: {parent_id, version_of, on_branch}} of every message of the session,
    old branches included (what an export needs to carry the branches)."""
    async with db.execute(
        "SELECT id, parent_id, version_of, on_branch FROM messages WHERE session_id = ?",
        (session_id,),
    ) as cursor:
        return {row[0]: {"parent_id": row[1], "version_of": row[2], "on_branch": bool(row[3])}
                for row in await cursor.fetchall()}


async def every_message(db: ReadDB, session_id: str) -> list[dict[str, Any]]:
    """Every message of the session, old branches included, in order, each with where it
    stands (parent_id, version_of, on_branch, in_reply_to): what an export carries."""
    async with db.execute(
        f"SELECT {COLUMNS}, m.parent_id, m.version_of, m.on_branch, m.in_reply_to"
        " FROM messages m WHERE m.session_id = ? ORDER BY m.position", (session_id,),
    ) as cursor:
        rows = await cursor.fetchall()
    found = []
    for row in rows:
        message = message_view(row)
        message["on_branch"] = bool(message["on_branch"])
        found.append(message)
    return found
