"""Which web workers are alive: each holds a PostgreSQL advisory lock on its own key.

A worker takes a session-level advisory lock `(CLASS_KEY, key)` on a connection of its
own and keeps that connection open while it runs. PostgreSQL releases the lock when the
connection ends, also when the process is killed (the server sees the socket close), so
a lock another worker can take is the lock of a dead worker. Keys are random; a key some
live worker holds already is refused by `pg_try_advisory_lock`, so live keys are unique.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading

import psycopg

log = logging.getLogger(__name__)

# The first half of every worker lock's key ("LCWR"): the two-int form keeps these apart
# from the one-bigint advisory locks (the projections' leader lock) in PostgreSQL's table.
CLASS_KEY = 0x4C435752
KEY_LIMIT = 2**31 - 1
CONNECT_SECONDS = 5


class WorkerLock:
    """This worker's lock and the check of others'. Thread-safe (one connection, locked)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._mutex = threading.Lock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.key = 0
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL session holding the lock (for tests and logs)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def acquire(self) -> int:
        """Connect and take a free key: this worker's id while its connection lives."""
        with self._mutex:
            self._conn = self._connect()
            while True:
                key = random.randint(1, KEY_LIMIT)
                if self._try_lock(self._conn, key):
                    self.key = key
                    log.info("web worker %s holds worker lock %d", self.name, key)
                    return key

    def is_dead(self, key: int) -> bool:
        """Whether the worker of `key` is gone: its lock can be taken (then let go at once).
        This worker's own key is alive (a session's advisory locks are re-entrant, so the
        lock itself cannot tell)."""
        if key == self.key:
            return False
        with self._mutex:
            conn = self._alive_connection()
            if not self._try_lock(conn, key):
                return False
            conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", (CLASS_KEY, key))
            return True

    def others_alive(self) -> bool:
        """Whether any other worker holds its lock in this database now."""
        with self._mutex:
            conn = self._alive_connection()
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = %s AND objsubid = 2 AND objid::bigint <> %s"
                " AND database = (SELECT oid FROM pg_database"
                "                 WHERE datname = current_database())",
                (CLASS_KEY, self.key)).fetchone()
        return bool(row and row[0])

    def check(self) -> None:
        """Keep the lock: after a lost connection (a database restart) take the same key
        again, so this worker's claims do not look dead for longer than that."""
        with self._mutex:
            self._alive_connection()

    def release(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()  # the lock goes with the connection
                self._conn = None

    def _alive_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.OperationalError:
                conn.close()
        conn = self._conn = self._connect()
        if self.key and not self._try_lock(conn, self.key):
            log.error("worker lock %d is held elsewhere after a reconnect", self.key)
        return conn

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_SECONDS,
                               application_name=f"localchat worker {self.name}")

    @staticmethod
    def _try_lock(conn: psycopg.Connection[tuple[object, ...]], key: int) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)",
                           (CLASS_KEY, key)).fetchone()
        return bool(row and row[0])
