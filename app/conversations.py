"""What a reply answers: its session's settings and the turns before it.

The chat aggregate keeps no finished turns, so the history comes from the messages read
model, read only once the projections include the reply's own queueing (read-your-writes
for the inference actor's thread).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from app.inference.memory import RECALL_LIMIT, Recall
from app.usecases.search import relevant_messages
from domain.application import ChatApplication
from projections import messages as messages_read
from projections.database import ReadModels, SQLiteReadModels
from projections.runner import ProjectionRunner
from projections.vectors import VectorIndex

T = TypeVar("T")

SETTLE_SECONDS = 30.0
# An upper bound on characters per token: history beyond n_ctx * this can never fit.
CHARS_PER_TOKEN_BOUND = 8


class HistoryUnavailable(Exception):
    """The read models did not reach the reply in time."""


@dataclass(frozen=True)
class Conversation:
    config: dict[str, Any]
    # (message_id, role, content), oldest first.
    turns: list[tuple[str, str, str]] = field(default_factory=list)
    # Older turns exist than `turns` holds (reading stopped at the context's bound).
    cut: bool = False


class ConversationReader:
    """Used from the actor's worker thread; one connection of its own (a SQLite file's or
    PostgreSQL's: `read_models`, or a Path meaning the SQLite file there)."""

    def __init__(self, chat: ChatApplication, runner: ProjectionRunner,
                 read_models: ReadModels | Path, n_ctx: int) -> None:
        self._chat = chat
        self._runner = runner
        if isinstance(read_models, Path):
            read_models = SQLiteReadModels(read_models)
        self._read_models = read_models
        self._db = read_models.connect()
        self._lock = threading.Lock()
        self._max_chars = n_ctx * CHARS_PER_TOKEN_BOUND
        # Set once the vector index is open; without it replies keep the newest turns only.
        self.vectors: VectorIndex | None = None

    def __call__(self, session_id: UUID, reply_id: UUID, position: int) -> Conversation:
        if not self._runner.wait_for(position, SETTLE_SECONDS):
            raise HistoryUnavailable(f"read models did not reach position {position}")
        config = self._chat.get_session(session_id).config
        turns = self._read(lambda db: messages_read.history_before(
            db, str(session_id), str(reply_id), self._max_chars))
        cut = sum(len(content) for _id, _role, content in turns) >= self._max_chars
        return Conversation(config=dict(config), turns=turns, cut=cut)

    def recall(self, session_id: UUID, reply_id: UUID, query: str) -> Recall:
        """Earlier turns of the session most related to `query`, for long memory: only
        turns before the reply, never one already in the prompt (`kept`)."""
        def recall(kept: Sequence[str]) -> list[tuple[str, str, str]]:
            found = relevant_messages(self.vectors, str(session_id), query, kept, RECALL_LIMIT)
            if not found:
                return []
            ids = [message_id for message_id, *_ in found]
            earlier = {row[0] for row in self._read(lambda db: db.execute(
                f"SELECT id FROM messages WHERE session_id = ? AND id IN"
                f" ({', '.join('?' * len(ids))}) AND position <"
                " (SELECT position FROM messages WHERE id = ?)",
                (str(session_id), *ids, str(reply_id))).fetchall())}
            return [(message_id, role, content) for message_id, role, content, _ in found
                    if message_id in earlier]
        return recall

    def _read(self, query: Callable[[Any], T]) -> T:
        with self._lock:
            try:
                return query(self._db)
            except Exception:
                if not _broken(self._db):
                    raise
            # PostgreSQL restarted since the last reply: one new connection, one retry.
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = self._read_models.connect()
            return query(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _broken(db: Any) -> bool:
    """A PostgreSQL connection the server dropped (a SQLite file's never breaks)."""
    raw = getattr(db, "raw", None)
    return raw is not None and bool(raw.closed or raw.broken)
