"""When the disk says no: recognising storage failures (full, read-only, failing) by their
error codes, and checking at start that DATA_DIR can be written.

A full or read-only disk is an operating condition, not a bug: requests answer 503
`storage_unavailable` (app/errors.py) and the server goes on once the disk has room again;
at start it refuses with one line naming the directory (app/startup.py)."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from pathlib import Path

from eventsourcing.persistence import OperationalError as StoreOperationalError

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
