"""Commits of the other web workers, heard through PostgreSQL's LISTEN/NOTIFY.

The library's PostgreSQL recorder already sends `NOTIFY <events table>` (channel
`chat_events`) inside every insert transaction, after the table lock that orders the log;
PostgreSQL delivers it when that transaction commits, to every listening session (the
library's own `subscribe()` listens the same way). It carries no payload, so on each one
this thread reads the log's rows past the last position it saw (one indexed query: the
positions and aggregate ids, the state only of the event types asked for) and announces
them as a local commit is announced: head listeners get the new head, change listeners
the aggregates changed (streams, projections, the vector follower wake as for their own
process's commits). Positions are the log's notification ids in every worker, so a
`Last-Event-ID` from one worker resumes on another. This process's own commits are
skipped: the committing thread called their listeners already.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from domain.application import ChatApplication

log = logging.getLogger(__name__)

READ_BATCH = 1000
STOP_CHECK_SECONDS = 0.5  # how often the waiting thread looks whether it should stop
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0
CONNECT_SECONDS = 5

Event = DomainEventProtocol[UUID]
# (position, event) of other workers' commits, of the topics asked for, in log order.
EventsListener = Callable[[list[tuple[int, Event]]], None]


class Row(NamedTuple):
    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes | None  # only for the topics asked for


class LogNotifier:
    def __init__(self, url: str, chat: ChatApplication, topics: Collection[str] = (),
                 on_events: EventsListener | None = None) -> None:
        self._url = url
        self._chat = chat
        recorder: Any = chat.recorder
        table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
        self._listen = sql.SQL("LISTEN {}").format(sql.Identifier(recorder.channel_name))
        self._read = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic,"
            " CASE WHEN topic = ANY(%s) THEN state END"
            " FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(table)
        self._topics = list(topics)
        self._on_events = on_events
        self._mutex = threading.Lock()
        self._own: set[int] = set()  # positions this process committed, not yet read
        self.position = 0  # the last position read
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Follow the log from its head now; commits from then on are heard (the first
        read after LISTEN catches those landing while it was being set up)."""
        self.position = self._chat.head()
        self._chat.add_commit_listener(self._committed_here)
        self._thread = threading.Thread(target=self._run, name="log-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(STOP_CHECK_SECONDS * 4)
            self._thread = None

    def _committed_here(self, positions: list[int]) -> None:
        with self._mutex:
            self._own.update(p for p in positions if p > self.position)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        pause = RECONNECT_FIRST
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True,
                                     connect_timeout=CONNECT_SECONDS) as conn:
                    conn.execute(self._listen)
                    pause = RECONNECT_FIRST
                    self._read_new(conn)
                    while not self._stopping.is_set():
                        heard = any(True for _ in conn.notifies(timeout=STOP_CHECK_SECONDS,
                                                                stop_after=1))
                        if heard:
                            self._read_new(conn)
            except psycopg.Error as error:  # the database away or restarted
                log.warning("listening to the log failed (%s); again in %.1f s", error, pause)
            except Exception:
                log.exception("following the log failed; again in %.1f s", pause)
            self._stopping.wait(pause)
            pause = min(pause * 2, RECONNECT_MAX)

    def _read_new(self, conn: psycopg.Connection[Any]) -> None:
        """Every row past the last one read, announced in batches."""
        while True:
            rows = [Row(*r) for r in conn.execute(
                self._read, (self._topics, self.position, READ_BATCH)).fetchall()]
            if rows:
                self._announce(rows)
            if len(rows) < READ_BATCH:
                return

    def _announce(self, rows: Sequence[Row]) -> None:
        head = rows[-1].position
        with self._mutex:
            foreign = [row for row in rows if row.position not in self._own]
            self._own = {p for p in self._own if p > head}
            self.position = head
        if not foreign:
            return
        try:
            self._chat.announce(head, {row.originator_id for row in foreign})
            if self._on_events is not None:
                events = [(row.position, self._decode(row)) for row in foreign
                          if row.state is not None]
                if events:
                    self._on_events(events)
        except Exception:  # a listener's failure must not stop the others hearing the log
            log.exception("announcing positions up to %d failed", head)

    def _decode(self, row: Row) -> Event:
        return self._chat.mapper.to_domain_event(StoredEvent(
            originator_id=row.originator_id, originator_version=row.originator_version,
            topic=row.topic, state=bytes(row.state or b"")))
