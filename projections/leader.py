"""Which worker applies the log when several share one PostgreSQL database.

One runner in the cluster leads: it holds a session-level advisory lock on a connection
of its own, and PostgreSQL frees that lock when the session ends (the worker died, its
connection was cut), so another worker's next attempt takes it. The others follow: they
read the committed positions, woken by the leader's NOTIFY (sent in the transaction that
moves the positions, hence delivered at its commit) through a `Listener` thread.

The lock only keeps the others from wasting work: what keeps an event from being applied
twice is the runner's compare-and-set of its positions in the applying transaction.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# The leader's NOTIFY after each commit of positions (payload: the lowest position).
APPLIED_CHANNEL = "read_models_applied"
# A follower asks the leader for a rebuild (payload: the projection's name).
REBUILD_CHANNEL = "read_models_rebuild"
CONNECT_TIMEOUT = 5
LISTEN_WAIT_SECONDS = 0.5  # how long stop() may wait for the listening thread
RECONNECT_MAX_SECONDS = 5.0


def lock_key(name: str) -> int:
    """A stable 64-bit advisory-lock key for `name` (PostgreSQL's bigint: signed)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


class AdvisoryLock:
    """A session-level advisory lock held on a dedicated connection; thread-safe."""

    def __init__(self, url: str, name: str) -> None:
        self._url = url
        self.key = lock_key(name)
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        """As of the last `try_acquire`."""
        return self._held

    @property
    def session(self) -> object | None:
        """The holding connection (a new one after each loss), while held."""
        return self._conn if self._held else None

    @property
    def backend_pid(self) -> int | None:
        """The holding session's process id in PostgreSQL (for tests and logs)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def try_acquire(self) -> bool:
        """True while this session holds the lock: checks that the holding connection still
        lives, or tries to take the lock. Never waits for another holder."""
        with self._mutex:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._forget()
                    self._conn = _connect(self._url)
                if self._held:
                    self._conn.execute("SELECT 1")
                else:
                    row = self._conn.execute("SELECT pg_try_advisory_lock(%s)",
                                             (self.key,)).fetchone()
                    self._held = bool(row and row[0])
                    if self._held:
                        log.info("this worker leads the projections now (lock session %d)",
                                 self._conn.info.backend_pid)
            except psycopg.Error as error:
                if self._held:
                    log.warning("lost the projections lock: %s", error)
                self._forget()
            return self._held

    def release(self) -> None:
        """Give the lock up (closing its connection frees it in any case)."""
        with self._mutex:
            self._forget()

    def _forget(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                log.debug("closing the lock connection failed", exc_info=True)


class Listener:
    """A thread LISTENing on `channels` on a connection of its own; `on_notify(channel,
    payload)` runs on that thread for each notification. After a lost connection it
    reconnects (backing off) and reports `on_notify("", "")` once: notifications sent
    meanwhile are lost, anything may have happened."""

    def __init__(self, url: str, channels: Sequence[str],
                 on_notify: Callable[[str, str], None]) -> None:
        self._url = url
        self._channels = list(channels)
        self._on_notify = on_notify
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-models-listen",
                                        daemon=True)
        self._listening = threading.Event()

    def start(self) -> Listener:
        self._thread.start()
        return self

    def wait_listening(self, timeout: float) -> bool:
        """True once the LISTEN is in place (notifications from then on arrive)."""
        return self._listening.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=LISTEN_WAIT_SECONDS * 4 + CONNECT_TIMEOUT)

    def _run(self) -> None:
        pause = 0.0
        first = True
        while not self._stopping.is_set():
            if pause:
                self._stopping.wait(pause)
            try:
                with _connect(self._url) as conn:
                    for channel in self._channels:
                        conn.execute(f'LISTEN "{channel}"')
                    self._listening.set()
                    if not first:  # what was sent while we were away is lost
                        self._deliver("", "")
                    first, pause = False, 0.0
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=LISTEN_WAIT_SECONDS):
                            self._deliver(note.channel, note.payload)
                            if self._stopping.is_set():
                                break
            except psycopg.Error as error:
                self._listening.clear()
                pause = min(max(pause * 2, 0.25), RECONNECT_MAX_SECONDS)
                log.warning("read-model notifications lost (%s); listening again in %.2f s",
                            error, pause)


    def _deliver(self, channel: str, payload: str) -> None:
        try:
            self._on_notify(channel, payload)
        except Exception:  # one bad callback must not end the listening
            log.exception("handling a notification on %s failed", channel)


def notify(db: Any, channel: str, payload: str) -> None:
    """NOTIFY through a read-model connection; delivered when its transaction commits."""
    db.execute("SELECT pg_notify(?, ?)", (channel, payload))
