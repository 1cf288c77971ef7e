"""Semantic index: every message embedded into ChromaDB, kept up to date from the log.

Embedding is slow next to a SQLite write (tens of ms per message), so this projection is
not one of the runner's: it has a follower thread of its own, at the lowest CPU priority
and on one core, with its own position. The runner, and every handler waiting for it,
never waits for an embedding, and the model streaming tokens keeps its cores.

Durability: the follower's position and the session owners it has seen live in a small
SQLite file of their own. Each batch writes to ChromaDB first and commits its position
after; a crash between the two replays the batch, which is harmless because every write
is idempotent (upsert by message id, delete by session id).

What is indexed matches the keyword index (projections/search.py): user messages, and
assistant replies once they end with text. Search results are still checked against the
keyword read model, which is the authority on ownership and deletion.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import chromadb
import numpy as np
from chromadb.api.client import Client
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings
from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from app.embeddings import MultilingualE5, limit_threads_here
from domain.sessions import ChatSession

log = logging.getLogger(__name__)

COLLECTION = "messages"
READ_BATCH = 500          # notifications read from the log at a time
EMBED_BATCH = 16          # messages embedded per call; the position is committed after each
EMBED_CHARS = 8_000       # a longer message is embedded by its beginning (bounded work)
POLL_SECONDS = 1.0
BACKGROUND_NICE = 19      # lowest priority: token streaming always comes first
BACKGROUND_THREADS = 1
# A nice level is not enough: each time the scheduler lets an embedding run, a core leaves
# a decoding step, and the step waits for it (the model decodes on every core). So the
# follower waits while replies are being generated (`busy`), checking every
# QUIET_POLL_SECONDS; a server that is never idle still gets its index after MAX_DEFER_SECONDS.
# Woken by a commit, it first lets SETTLE_SECONDS pass: a posted message's reply is queued
# just after the message's commit, and would find the follower already embedding.
SETTLE_SECONDS = 0.2
QUIET_POLL_SECONDS = 0.1
MAX_DEFER_SECONDS = 10.0
# ChromaDB's native writer was seen to hang on a full disk while holding the GIL, freezing
# the whole server even after space was freed (drills/resources.py). Below this much free
# space the index does not write; the follower retries from its position later.
MIN_FREE_BYTES = 32 << 20

# The yardstick of "unrelated": everyday requests on many topics, Korean and English, and
# the short filler that chats are full of (short texts sit close to any short query).
UNRELATED = (
    "네", "아니요", "음", "ㅋㅋ", "?", "1", "ok", "yes", "hello", "test", "아래", "좋아요",
    "감사합니다", "테스트 메시지입니다", "두 번째 메시지",
    "회사에서 점심 메뉴를 고르는 중이에요", "이 문장을 영어로 번역해 줘",
    "수학 숙제를 도와줄 수 있어?", "새 노트북을 사려고 하는데 추천해 줘",
    "지하철 노선도를 보는 법", "감기에 걸렸을 때 먹으면 좋은 음식",
    "기타를 독학으로 배울 수 있을까요", "이메일 답장을 정중하게 써 줘",
    "우리 동네 도서관은 몇 시에 문을 닫나요", "아이 생일 파티 아이디어",
    "Tell me a fun fact about space.", "How do I reset my password?",
    "Write a short poem about autumn.", "What is the capital of Australia?",
    "Explain how compound interest works.", "주식 투자를 시작하는 방법",
    "집 청소를 효율적으로 하는 팁", "다이어트 중에 먹을 간식",
    "커피와 차 중에 뭐가 더 건강에 좋아?", "역사 시험 공부 계획을 세워 줘",
)

TOPICS = tuple(get_topic(getattr(ChatSession, name)) for name in (
    "Started", "Deleted", "UserMessagePosted", "UserMessageEdited", "MessageImported",
    "ReplyCompleted", "ReplyCancelled", "ReplyInterrupted",
) if hasattr(ChatSession, name))


@dataclass(frozen=True)
class Doc:
    message_id: str
    session_id: str
    owner_id: str
    role: str
    position: int
    content: str


@dataclass(frozen=True)
class Related:
    message_id: str
    role: str
    content: str
    score: float  # cosine similarity, 1.0 = same meaning


class VectorIndex:
    """The ChromaDB collection of message embeddings (a persistent client in one folder).

    Safe to share between threads: every call to ChromaDB holds one lock, and embeddings
    are computed outside it.
    """

    def __init__(self, directory: Path, embedder: MultilingualE5 | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self.embedder = embedder or MultilingualE5()
        self._client = cast(Client, chromadb.PersistentClient(
            path=str(directory),
            settings=Settings(anonymized_telemetry=False, allow_reset=False),
        ))
        self._lock = threading.Lock()
        self._collection = self._open()
        self._unrelated_lock = threading.Lock()
        self._unrelated_vectors: np.ndarray[Any, Any] | None = None

    def _open(self) -> Collection:
        return self._client.get_or_create_collection(
            COLLECTION,
            embedding_function=self.embedder,  # type: ignore[arg-type]
            configuration={"hnsw": {"space": "cosine"}},
        )

    def count(self) -> int:
        with self._lock:
            return self._collection.count()

    def upsert(self, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        vectors = self.embedder([doc.content[:EMBED_CHARS] for doc in docs])
        with self._lock:
            self._check_room()
            self._collection.upsert(
                ids=[doc.message_id for doc in docs],
                embeddings=vectors,
                documents=[doc.content for doc in docs],
                metadatas=[{"session_id": doc.session_id, "owner_id": doc.owner_id,
                            "role": doc.role, "position": doc.position} for doc in docs],
            )

    def delete_session(self, session_id: str) -> None:
        with self._lock:
            self._check_room()
            self._collection.delete(where={"session_id": session_id})

    def _check_room(self) -> None:
        free = os.statvfs(self._directory)
        if free.f_bavail * free.f_frsize < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, "too little free space to write the vector index")

    def clear(self) -> None:
        with self._lock:
            self._client.delete_collection(COLLECTION)
            self._collection = self._open()

    def search(self, owner_id: str, text: str, limit: int) -> list[tuple[str, float]]:
        """(message_id, cosine similarity) of the owner's messages that are about `text`,
        nearest first.

        Nearest neighbours always exist, and e5's similarities sit in a narrow band whose
        height depends on the query, so no fixed cut-off works. A message counts as
        related only when it is closer to the query than every one of the UNRELATED
        sentences: a bar set by the query itself.
        """
        vector = self.embedder.embed_query([text])
        bar = float(np.max(self._unrelated() @ np.asarray(vector[0], dtype=np.float32)))
        with self._lock:
            result = self._collection.query(
                query_embeddings=vector, n_results=limit, where={"owner_id": owner_id},
                include=["distances"],
            )
        distances = (result["distances"] or [[]])[0]
        nearest = [(mid, 1.0 - float(d)) for mid, d in zip(result["ids"][0], distances,
                                                           strict=True)]
        return [(mid, similarity) for mid, similarity in nearest if similarity > bar]

    def _unrelated(self) -> np.ndarray[Any, Any]:
        with self._unrelated_lock:
            if self._unrelated_vectors is None:
                self._unrelated_vectors = np.asarray(self.embedder(list(UNRELATED)),
                                                     dtype=np.float32)
            return self._unrelated_vectors

    def related(
        self, session_id: str, text: str, exclude_ids: Sequence[str], limit: int
    ) -> list[Related]:
        """The session's messages nearest in meaning to `text`, leaving out `exclude_ids`."""
        if limit <= 0:
            return []
        excluded = set(exclude_ids)
        vector = self.embedder.embed_query([text])
        with self._lock:
            result = self._collection.query(
                query_embeddings=vector, n_results=limit + len(excluded),
                where={"session_id": session_id},
                include=["documents", "metadatas", "distances"],
            )
        found = zip(result["ids"][0], (result["documents"] or [[]])[0],
                    (result["metadatas"] or [[]])[0], (result["distances"] or [[]])[0],
                    strict=True)
        related = [Related(mid, str(meta["role"]), doc or "", 1.0 - float(distance))
                   for mid, doc, meta, distance in found if mid not in excluded]
        return related[:limit]

    def close(self) -> None:
        with self._lock:
            self._client.close()


class VectorFollower:
    """Follows the event log into a VectorIndex, on a background thread of its own."""

    name = "vectors"

    def __init__(self, application: Application[Any], index: VectorIndex,
                 state_path: Path, busy: Callable[[], bool] = lambda: False,
                 max_defer: float = MAX_DEFER_SECONDS) -> None:
        self._application = application
        self.index = index
        self._busy = busy  # True while replies are generated: the follower waits
        self._max_defer = max_defer
        self._db = sqlite3.connect(state_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS vector_position (
                id INTEGER PRIMARY KEY CHECK (id = 0), position INTEGER NOT NULL);
            INSERT OR IGNORE INTO vector_position VALUES (0, 0);
            CREATE TABLE IF NOT EXISTS vector_sessions (
                id TEXT PRIMARY KEY, owner_id TEXT NOT NULL,
                deleted INTEGER NOT NULL DEFAULT 0);
        """)
        self._lock = threading.Lock()  # one catch-up or rebuild at a time
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._rebuild_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._progress = threading.Condition()
        self._position = int(
            self._db.execute("SELECT position FROM vector_position").fetchone()[0])

    # -- state ---------------------------------------------------------------------------

    def position(self) -> int:
        """The last log position whose messages are in the index (committed)."""
        with self._progress:
            return self._position

    def positions(self) -> dict[str, int]:
        return {self.name: self.position()}

    def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until the index includes `position` (tests, benchmarks, admin tools)."""
        with self._progress:
            return self._progress.wait_for(lambda: self._position >= position, timeout)

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vectors", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop between two batches (a batch in flight finishes), then close."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                log.warning("vector follower still busy after %.0f s; leaving it", timeout)
                return
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
                self.index.close()

    def wake(self, _head: int | None = None) -> None:
        self._wakeup.set()

    def request_rebuild(self) -> None:
        """Rebuild on the follower thread at its next wake-up."""
        self._rebuild_requested.set()
        self._wakeup.set()

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        except OSError:
            log.info("could not lower the vector follower's priority")
        limit_threads_here(BACKGROUND_THREADS)
        while not self._stopping.is_set():
            self._wakeup.wait(POLL_SECONDS)
            self._wakeup.clear()
            self._defer_while_busy()
            try:
                if self._rebuild_requested.is_set():
                    self._rebuild_requested.clear()
                    self.rebuild()
                else:
                    self.catch_up()
            except Exception:  # keep following; the next wake-up retries from the position
                log.exception("vector index update failed")

    def _defer_while_busy(self) -> None:
        self._stopping.wait(SETTLE_SECONDS)
        deadline = time.monotonic() + self._max_defer
        while (self._busy() and time.monotonic() < deadline
               and not self._stopping.is_set()):
            self._stopping.wait(QUIET_POLL_SECONDS)

    def rebuild(self) -> int:
        """Empty the index and replay the whole log into it. Returns the position reached.

        Semantic results are missing until it is done; keyword search is unaffected.
        """
        with self._lock:
            # Position first: a crash before the collection is emptied just replays all.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM vector_sessions")
            self._db.execute("UPDATE vector_position SET position = 0")
            self._db.execute("COMMIT")
            with self._progress:
                self._position = 0
            self.index.clear()
        return self.catch_up()

    def catch_up(self) -> int:
        """Index everything committed so far; returns the position reached."""
        with self._lock:
            while not self._stopping.is_set():
                head = self._application.recorder.max_notification_id() or 0
                start = self.position()
                if start >= head:
                    return start
                self._apply_until(start, head)
            return self.position()

    # -- applying (the caller holds self._lock) ---------------------------------------

    def _apply_until(self, start: int, head: int) -> None:
        """Apply the relevant events in (start, head], a read batch at a time."""
        notifications = self._application.recorder.select_notifications(
            start, READ_BATCH, stop=head, topics=TOPICS, inclusive_of_start=False)
        # A short read covers everything up to `head`: the events in between (tokens,
        # settings) concern no message text, so the position can move past them.
        end = head if len(notifications) < READ_BATCH else notifications[-1].id
        mapper = self._application.mapper
        batch = _Batch(self)
        try:
            for notification in notifications:
                batch.apply(mapper.to_domain_event(notification), notification.id)
                if len(batch.docs) >= EMBED_BATCH:
                    batch.commit(notification.id)
                    if self._stopping.is_set():
                        return
            batch.commit(end)
        finally:
            if self._db.in_transaction:  # a failure part-way: the batch is replayed later
                self._db.execute("ROLLBACK")

    def owner(self, session_id: str) -> tuple[str, bool] | None:
        row = self._db.execute("SELECT owner_id, deleted FROM vector_sessions WHERE id = ?",
                               (session_id,)).fetchone()
        return (str(row[0]), bool(row[1])) if row else None

    def execute(self, sql: str, *args: Any) -> None:
        """A statement in the batch's transaction (opened by the first one)."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(sql, args)

    def commit(self, position: int) -> None:
        self.execute("UPDATE vector_position SET position = ?", position)
        self._db.execute("COMMIT")
        with self._progress:
            self._position = position
            self._progress.notify_all()


class _Batch:
    """Events applied since the last commit: session rows in an open SQLite transaction,
    message texts waiting to be embedded."""

    def __init__(self, follower: VectorFollower) -> None:
        self._follower = follower
        self.docs: list[Doc] = []

    def apply(self, event: Any, position: int) -> None:
        follower, session_id = self._follower, str(event.originator_id)
        name = type(event).__qualname__
        if name == "ChatSession.Started":
            follower.execute("INSERT OR REPLACE INTO vector_sessions (id, owner_id)"
                             " VALUES (?, ?)", session_id, str(event.owner_id))
            return
        if name == "ChatSession.Deleted":
            # Texts queued for this session never reach the index.
            self.docs = [doc for doc in self.docs if doc.session_id != session_id]
            follower.index.delete_session(session_id)
            follower.execute("UPDATE vector_sessions SET deleted = 1 WHERE id = ?", session_id)
            return
        if name == "ChatSession.UserMessagePosted":
            message_id, role = str(event.message_id), "user"
        elif name == "ChatSession.UserMessageEdited":  # the new version of a message
            message_id, role = str(event.new_message_id), "user"
        elif name == "ChatSession.MessageImported":  # from an exported chat file
            message_id, role = str(event.message_id), str(event.role)
        else:
            message_id, role = str(event.reply_id), "assistant"
        owner = follower.owner(session_id)
        if owner is None or owner[1] or not event.content:
            return  # unknown or deleted session (a reply that ended after deletion), no text
        self.docs.append(Doc(message_id, session_id, owner[0], role, position, event.content))

    def commit(self, position: int) -> None:
        """Index the waiting texts, then record `position` (in that order: see the module)."""
        self._follower.index.upsert(self.docs)
        self._follower.commit(position)
        self.docs = []
