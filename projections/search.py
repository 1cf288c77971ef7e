"""Keyword search over messages: an FTS5 index with the trigram tokenizer.

Trigrams match any substring of three characters or more, which is what Korean needs
(no word segmentation, particles glued to nouns: "날씨가" must match "날씨가 좋다" and
"오늘 날씨가"). Shorter terms cannot use the index; they are matched with LIKE over the
owner's own messages only.

Indexed: user messages as posted, and assistant replies once they end with text
(completed, cancelled, interrupted). Each session's owner and deletion are tracked here,
so every query is confined to its owner's live sessions; a deleted session's messages
are removed from the index.

On PostgreSQL the text is a table with a pg_trgm GIN index on its FTS5 folding, and
projections/trigram.py matches and ranks as FTS5 does: the same messages, in the same
order, on both stores.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import aiosqlite

from projections import trigram
from projections.base import Projection
from projections.database import ReadDB, dialect_of

TRIGRAM = 3


class SearchProjection(Projection):
    name = "search"
    tables = ("search_sessions", "search_messages", "search_text")
    version = 3  # 2: edited messages; 3: sessions of the LLM API are not indexed
    # The FTS rowid of a message is the log position of the event that indexed it: unique,
    # and the same in every rebuild.
    schema = """
    CREATE TABLE IF NOT EXISTS search_sessions (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        title TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS search_sessions_by_owner ON search_sessions (owner_id, deleted);
    CREATE TABLE IF NOT EXISTS search_messages (
        position INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        role TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS search_messages_by_session
        ON search_messages (session_id, position);
    CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(content, tokenize='trigram');
    """
    # `folded`: what FTS5 indexes (the text up to its first NUL) folded as FTS5 folds it;
    # `chars`: that part's length (first: a sum over it need not step over the texts).
    # The trigram index serves LIKE on `folded`. A text repeats its message's columns, so
    # that a search joins the matches to the owner's sessions only: joined to
    # search_messages, the planner reads that whole table to hash it.
    postgres_schema = """
    CREATE TABLE IF NOT EXISTS search_sessions (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        title TEXT NOT NULL,
        deleted BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS search_sessions_by_owner ON search_sessions (owner_id, deleted);
    CREATE INDEX IF NOT EXISTS search_sessions_deleted ON search_sessions (id) WHERE deleted = 1;
    CREATE TABLE IF NOT EXISTS search_messages (
        position BIGINT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        role TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS search_messages_by_session
        ON search_messages (session_id, position);
    CREATE TABLE IF NOT EXISTS search_text (
        position BIGINT PRIMARY KEY,
        chars BIGINT NOT NULL,
        id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        folded TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS search_text_trigrams ON search_text
        USING gin (folded gin_trgm_ops);
    CREATE INDEX IF NOT EXISTS search_text_by_session ON search_text (session_id, position);
    """

    def create(self, db: sqlite3.Connection) -> None:
        if dialect_of(db) == "postgresql":
            # A trusted extension (PostgreSQL 13+): the database's owner may create it.
            db.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        super().create(db)

    def on_ChatSession_Started(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        if e.config.get("origin") == "api":  # a /v1 or generate call, not a chat of the user's
            return
        db.execute("INSERT INTO search_sessions (id, owner_id, title) VALUES (?, ?, ?)",
                   (str(e.originator_id), str(e.owner_id), e.title or "New chat"))

    def on_ChatSession_Renamed(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        db.execute("UPDATE search_sessions SET title = ? WHERE id = ?",
                   (e.title, str(e.originator_id)))

    def on_ChatSession_Deleted(self, db: sqlite3.Connection, e: Any, _: int) -> None:
        session_id = str(e.originator_id)
        db.execute("UPDATE search_sessions SET deleted = 1 WHERE id = ?", (session_id,))
        db.execute(f"DELETE FROM search_text WHERE {_text_key(db)} IN"
                   " (SELECT position FROM search_messages WHERE session_id = ?)",
                   (session_id,))
        db.execute("DELETE FROM search_messages WHERE session_id = ?", (session_id,))

    def on_ChatSession_UserMessagePosted(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        self._index(db, e, pos, str(e.message_id), "user", e.content)

    def on_ChatSession_UserMessageEdited(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        # The new version is a message of its own; the old one stays (its versions view).
        self._index(db, e, pos, str(e.new_message_id), "user", e.content)

    def on_ChatSession_MessageImported(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        self._index(db, e, pos, str(e.message_id), e.role, e.content)

    def on_ChatSession_ReplyCompleted(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        self._index(db, e, pos, str(e.reply_id), "assistant", e.content)

    def on_ChatSession_ReplyCancelled(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        self._index(db, e, pos, str(e.reply_id), "assistant", e.content)

    def on_ChatSession_ReplyInterrupted(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        self._index(db, e, pos, str(e.reply_id), "assistant", e.content)

    def _index(self, db: sqlite3.Connection, e: Any, pos: int, message_id: str, role: str,
               content: str) -> None:
        session_id = str(e.originator_id)
        live = db.execute("SELECT 1 FROM search_sessions WHERE id = ? AND deleted = 0",
                          (session_id,)).fetchone()
        # A reply can still end after its session was deleted: it stays out of the index.
        if not content or live is None:
            return
        db.execute("INSERT INTO search_messages (position, id, session_id, role)"
                   " VALUES (?, ?, ?, ?)", (pos, message_id, session_id, role))
        if dialect_of(db) == "postgresql":
            text = trigram.indexed(content)
            db.execute("INSERT INTO search_text (position, chars, id, session_id, role,"
                       " content, folded) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (pos, len(text), message_id, session_id, role, content,
                        trigram.fold(text)))
        else:
            db.execute("INSERT INTO search_text (rowid, content) VALUES (?, ?)", (pos, content))


def _text_key(db: object) -> str:
    """The column of `search_text` holding a message's position: FTS5 has only its rowid."""
    return "position" if dialect_of(db) == "postgresql" else "rowid"


@dataclass(frozen=True)
class Found:
    message_id: str
    session_id: str
    session_title: str
    role: str
    content: str


def terms(q: str) -> list[str]:
    """The query's words; a query is all of them (AND), each matched as a substring."""
    return q.split()


def _fts_query(words: list[str]) -> str:
    # Each word as a quoted FTS5 string, so punctuation is never query syntax.
    return " AND ".join('"' + word.replace('"', '""') + '"' for word in words)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


FOUND = "m.id, m.session_id, s.title, m.role, t.content"
FOUND_IN_TEXT = "t.id, t.session_id, s.title, t.role, t.content"  # PostgreSQL's search_text


def _found(row: Any) -> Found:
    return Found(message_id=row[0], session_id=row[1], session_title=row[2], role=row[3],
                 content=row[4])


async def keyword_search(
    db: aiosqlite.Connection | ReadDB, owner_id: str, q: str, limit: int
) -> list[Found]:
    """The owner's messages containing every word of `q` (case-insensitive), best first.

    Words of three characters or more go through the trigram index (ranked by bm25);
    shorter ones are checked with LIKE on the rows it found. A query with only short
    words scans the owner's own messages, newest first.
    """
    words = terms(q)
    long_words = [w for w in words if len(w) >= TRIGRAM]
    short_words = [w for w in words if len(w) < TRIGRAM]
    if not words:
        return []
    if dialect_of(db) == "postgresql":
        return await _keyword_search_postgres(db, owner_id, long_words, short_words, limit)
    likes = "".join(" AND t.content LIKE ? ESCAPE '\\'" for _ in short_words)
    params: list[Any]
    if long_words:
        sql = (
            f"SELECT {FOUND} FROM search_text t"
            " JOIN search_messages m ON m.position = t.rowid"
            " JOIN search_sessions s ON s.id = m.session_id"
            f" WHERE search_text MATCH ? AND s.owner_id = ? AND s.deleted = 0{likes}"
            " ORDER BY t.rank, m.position DESC LIMIT ?"
        )
        params = [_fts_query(long_words), owner_id, *map(_like, short_words), limit]
    else:
        # CROSS JOIN fixes the order: the owner's sessions, their messages, then each text
        # by rowid. The LIKE never runs over anybody else's messages.
        sql = (
            f"SELECT {FOUND} FROM search_sessions s"
            " CROSS JOIN search_messages m CROSS JOIN search_text t"
            " WHERE s.owner_id = ? AND s.deleted = 0 AND m.session_id = s.id"
            f" AND t.rowid = m.position{likes}"
            " ORDER BY m.position DESC LIMIT ?"
        )
        params = [owner_id, *map(_like, short_words), limit]
    async with db.execute(sql, params) as cursor:
        return [_found(row) for row in await cursor.fetchall()]


@dataclass(frozen=True)
class _Totals:
    """The text table's counts for bm25 as of a state of the table: its last position and
    how many sessions were deleted then (texts are only ever added at a new last position,
    and only removed with their session)."""

    top: int
    gone: int
    rows: int
    tokens: int


# The last counts each read connection's searches made: the next search counts only the texts
# after their `top` (when no session was deleted since), not the whole table again. Read by
# the search's own statement, in its snapshot. (A rebuild by a newer version of this
# projection that indexes other texts, while this process runs, would go unnoticed.)
_totals: WeakKeyDictionary[Any, _Totals] = WeakKeyDictionary()
_TOTALS_SINCE = (
    "(SELECT MAX(position) FROM search_text),"
    " (SELECT COUNT(*) FROM search_sessions WHERE deleted = 1),"
    " (SELECT COUNT(*) FROM search_text WHERE position > ?),"
    # A sum of INTEGER adds in BIGINT; one of BIGINT would add in NUMERIC, 5x slower.
    " (SELECT COALESCE(SUM(CAST(GREATEST(chars - 2, 0) AS INTEGER)), 0)"
    " FROM search_text WHERE position > ?)"
)


async def _keyword_search_postgres(
    db: aiosqlite.Connection | ReadDB, owner_id: str, long_words: list[str],
    short_words: list[str], limit: int,
) -> list[Found]:
    """`keyword_search` on PostgreSQL: the same rows in the same order (projections/trigram.py).

    Every word is matched on `folded` (long ones through the trigram index); the few short
    words for which FTS5's folding finds more than SQLite's LIKE are checked again here. The
    owner's matches are then ranked here by FTS5's bm25, with the whole table's counts read
    by the same statement (one snapshot, as FTS5 has)."""
    folded = [trigram.fold(w) for w in long_words]
    likes = [_like(trigram.fold(w)) for w in [*long_words, *short_words]]
    conditions = " AND t.folded LIKE ? ESCAPE '\\'" * len(likes)
    recheck = [trigram.ascii_fold(w) for w in short_words if not trigram.like_is_fold(w)]
    matches = (f"FROM search_sessions s JOIN search_text t ON t.session_id = s.id"
               f" WHERE s.owner_id = ? AND s.deleted = 0{conditions}")
    if not long_words:
        sql = f"SELECT {FOUND_IN_TEXT}, t.chars {matches} ORDER BY t.position DESC"
        params: list[Any] = [owner_id, *likes]
        if not recheck:
            sql += " LIMIT ?"
            params.append(limit)
        async with db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        return [_found(row) for row in rows if _contains(row[4], row[5], recheck)][:limit]
    distinct = list(dict.fromkeys(folded))
    hits = "".join(", (SELECT COUNT(*) FROM search_text WHERE folded LIKE ? ESCAPE '\\')"
                   for _ in distinct)
    sql = (
        f"SELECT {FOUND_IN_TEXT}, t.position, t.chars, {_TOTALS_SINCE}{hits} {matches}")
    known = _totals.get(db)
    since = known.top if known is not None else -1
    while True:
        params = [since, since, *map(_like, distinct), owner_id, *likes]
        async with db.execute(sql, params) as cursor:
            rows = [row for row in await cursor.fetchall()
                    if _contains(row[4], row[6], recheck)]
        if not rows:
            return []
        top, gone, more_rows, more_tokens = (int(value) for value in rows[0][7:11])
        if since < 0:
            totals = _Totals(top, gone, more_rows, more_tokens)
            break
        if known is not None and gone == known.gone and top >= known.top:
            totals = _Totals(top, gone, known.rows + more_rows, known.tokens + more_tokens)
            break
        since = -1  # texts were deleted (or the table rebuilt): count them all again
    _totals[db] = totals
    hits_of = {word: int(count) for word, count in zip(distinct, rows[0][11:], strict=True)}
    counts = [hits_of[word] for word in folded]
    table_rows, total_tokens = totals.rows, totals.tokens

    def rank(row: Any) -> tuple[float, int]:
        position, chars = int(row[5]), int(row[6])
        text = trigram.fold(row[4][:chars])
        freqs = [trigram.occurrences(text, word) for word in folded]
        score = trigram.bm25(freqs, trigram.tokens(chars), table_rows, total_tokens, counts)
        return score, -position

    return [_found(row) for row in sorted(rows, key=rank)[:limit]]


def _contains(content: str, chars: int, words: list[str]) -> bool:
    """Whether SQLite's LIKE finds each of `words` (ASCII-folded) in the indexed text."""
    if not words:
        return True
    text = trigram.ascii_fold(content[:chars])
    return all(word in text for word in words)


async def visible_messages(
    db: aiosqlite.Connection | ReadDB, owner_id: str, message_ids: list[str]
) -> dict[str, Found]:
    """Those of `message_ids` that are in the owner's live sessions, by id."""
    if not message_ids:
        return {}
    marks = ", ".join("?" for _ in message_ids)
    async with db.execute(
        f"SELECT {FOUND} FROM search_messages m"
        " JOIN search_sessions s ON s.id = m.session_id"
        f" JOIN search_text t ON t.{_text_key(db)} = m.position"
        f" WHERE m.id IN ({marks}) AND s.owner_id = ? AND s.deleted = 0",
        [*message_ids, owner_id],
    ) as cursor:
        return {row[0]: _found(row) for row in await cursor.fetchall()}
