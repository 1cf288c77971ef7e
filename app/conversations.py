"""What a reply answers: its session's settings and the turns before it.

The chat aggregate keeps no finished turns, so the history comes from the messages read
model, read only once the projections include the reply's own queueing (read-your-writes
for the inference actor's thread).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from domain.application import ChatApplication
from projections import messages as messages_read
from projections.runner import ProjectionRunner, connect

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


class ConversationReader:
    """Used from the actor's worker thread; one connection of its own."""

    def __init__(self, chat: ChatApplication, runner: ProjectionRunner, path: Path,
                 n_ctx: int) -> None:
        self._chat = chat
        self._runner = runner
        self._db: sqlite3.Connection = connect(path)
        self._lock = threading.Lock()
        self._max_chars = n_ctx * CHARS_PER_TOKEN_BOUND

    def __call__(self, session_id: UUID, reply_id: UUID, position: int) -> Conversation:
        if not self._runner.wait_for(position, SETTLE_SECONDS):
            raise HistoryUnavailable(f"read models did not reach position {position}")
        config = self._chat.get_session(session_id).config
        with self._lock:
            turns = messages_read.history_before(self._db, str(session_id), str(reply_id),
                                                 self._max_chars)
        return Conversation(config=dict(config), turns=turns)

    def close(self) -> None:
        with self._lock:
            self._db.close()
