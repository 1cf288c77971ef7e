"""When the disk says no: recognising storage failures (full, read-only, failing) by their
error codes, and checking at start that DATA_DIR can be written.

A full or read-only disk is an operating condition, not a bug: requests answer 503
`storage_unavailable` (app/errors.py) and the server goes on once the disk has room again;
at start it refuses with one line naming the directory (app/startup.py); while running,
`/healthz` reports it (`WritableProbe`)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from eventsourcing.persistence import OperationalError as StoreOperationalError

log = logging.getLogger(__name__)

# /healthz is polled every few seconds: one test write per CACHE_SECONDS at most, and a
# write still unanswered after PROBE_TIMEOUT (a hung disk) counts as a refusal.
CACHE_SECONDS = 5.0
PROBE_TIMEOUT = 3.0

# SQLite's primary result codes for a disk that refuses: busy/locked, read-only, I/O
# error, full, cannot open (https://sqlite.org/rescode.html).
SQLITE_STORAGE_CODES = {5, 6, 8, 10, 13, 14}
OS_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES,
                     errno.EPERM}


def storage_problem(error: BaseException) -> bool:
    """True if `error` (or the SQLite error the event store wrapped) is the disk refusing."""
    if isinstance(error, StoreOperationalError) and error.__cause__ is not None:
        error = error.__cause__
    psycopg = sys.modules.get("psycopg")  # loaded only with a PostgreSQL event store
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return True  # the database unreachable, shutting down, or no connection in time
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in SQLITE_STORAGE_CODES
    if isinstance(error, StoreOperationalError):
        return True  # the store's own operational failures (e.g. no connection in time)
    return isinstance(error, OSError) and error.errno in OS_STORAGE_ERRNOS


def why(error: BaseException) -> str:
    """A short reason for the operator (never shown to users): 'Read-only file system'."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error.__cause__ or error) or type(error).__name__


def check_writable(data_dir: Path) -> None:
    """Create DATA_DIR if needed and write, sync and remove a small file in it: raises
    OSError (read-only, full, not permitted) when the server could not save anything.
    Running as root, permission bits do not stop writes, so only a real write tells."""
    data_dir.mkdir(parents=True, exist_ok=True)
    probe = data_dir / f".write-check-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


class WritableProbe:
    """Whether DATA_DIR takes a write now, for /healthz: `check_writable` at most once per
    `ttl` seconds (callers in between get the last answer), in a thread of its own so the
    event loop never waits on the disk. A write unanswered after `timeout` counts as a
    refusal; while it hangs no second one starts, so a hung disk holds one thread only.

    The thread is a daemon, not the loop's executor: a write hung in the kernel would
    otherwise keep the server from exiting (the executor joins its threads at shutdown)."""

    def __init__(self, data_dir: Path, ttl: float = CACHE_SECONDS,
                 timeout: float = PROBE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._data_dir = data_dir
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._known: tuple[float, bool] | None = None  # (when, writable)
        self._running: asyncio.Future[BaseException | None] | None = None
        self._started = 0.0

    async def writable(self) -> bool:
        now = self._clock()
        if self._known is not None and now - self._known[0] < self._ttl:
            return self._known[1]
        if self._running is None:
            self._running, self._started = self._start(), now
        running = self._running
        left = max(self._started + self._timeout - now, 0.0)
        try:  # shielded: a caller giving up leaves the write to finish for the next one
            error = await asyncio.wait_for(asyncio.shield(running), left)
        except TimeoutError:
            error = TimeoutError(f"a test write took over {self._timeout:g} s")
        self._remember(error)
        return error is None

    def _start(self) -> asyncio.Future[BaseException | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BaseException | None] = loop.create_future()

        def settle(outcome: BaseException | None) -> None:
            if not future.done():
                future.set_result(outcome)  # a result, never an exception nobody reads

        def probe() -> None:
            outcome: BaseException | None = None
            try:
                check_writable(self._data_dir)
            except Exception as error:  # any failure to write is the disk saying no
                outcome = error
            with contextlib.suppress(RuntimeError):  # the loop closed while it hung
                loop.call_soon_threadsafe(settle, outcome)

        future.add_done_callback(self._finished)
        threading.Thread(target=probe, name="data-dir-probe", daemon=True).start()
        return future

    def _finished(self, future: asyncio.Future[BaseException | None]) -> None:
        if self._running is future:
            self._running = None

    def _remember(self, error: BaseException | None) -> None:
        was = self._known[1] if self._known is not None else True
        self._known = (self._clock(), error is None)
        if error is not None and was:  # logged when it changes, not at every poll
            log.error("DATA_DIR %s refuses writes: %s", self._data_dir, why(error))
        elif error is None and not was:
            log.info("DATA_DIR %s takes writes again", self._data_dir)
