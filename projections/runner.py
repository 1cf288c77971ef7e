"""Follows the event log and applies it to every projection, one thread, one writer.

eventsourcing's SQLite recorder cannot `subscribe`, so the runner is woken after each
commit (and polls every second as a fallback), then reads the log from the lowest position
any projection has applied. Each projection's rows and its position are written in the
same transaction, so a crash never applies an event twice or skips one.

The log is read through `projections.stored_rows.open_source`: the store's rows read and
decoded directly where it knows the store (SQLite on a file), the library's
`select_notifications` and mapper anywhere else; both give the same events.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.application import Application

from projections.base import Projection
from projections.batch import BatchProjection
from projections.event_index import EventIndexProjection
from projections.hashchain import HashChainProjection
from projections.messages import MessagesProjection
from projections.search import SearchProjection
from projections.sessions import SessionsProjection
from projections.stored_rows import Event, LogSource, StoredRecord, open_source
from projections.users import UsersProjection

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Events per transaction while far behind (a rebuild, a start after a long stop): fewer
# commits, and a reply's token batches more often start and end in one read.
CATCH_UP_BATCH = 5000
# Batches a rebuild replays per pass while the server runs (the live log goes between).
REBUILD_CHUNK = 20
POLL_SECONDS = 1.0
# After a failed update: retry after 0.5 s, 1 s, 2 s ... at most 30 s apart; after
# FAILING_AFTER failures in a row the read models count as failing (health, fast 503s).
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
FAILING_AFTER = 2


def all_projections() -> list[Projection]:
    return [UsersProjection(), SessionsProjection(), MessagesProjection(),
            HashChainProjection(), EventIndexProjection(), SearchProjection()]


def set_aside_if_corrupt(path: Path) -> bool:
    """Move a read-model file SQLite cannot read aside (kept for a post-mortem), so a fresh
    one is built from the log: read models are disposable, the log is the truth."""
    if not path.exists():
        return False
    try:
        db = sqlite3.connect(path)
        try:
            row = db.execute("PRAGMA quick_check").fetchone()
        finally:
            db.close()
        if row and row[0] == "ok":
            return False
        problem = str(row[0]) if row else "no answer"
    except sqlite3.DatabaseError as error:
        problem = str(error)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(part.with_name(f"{part.name}.corrupt-{stamp}"))
    log.error("read models in %s are corrupt (%s); set aside, rebuilding from the log",
              path, problem)
    return True


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # Read models can always be rebuilt from the log, so they need not wait for the disk.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class ProjectionRunner:
    def __init__(
        self,
        application: Application,
        path: Path,
        projections: Sequence[Projection] | None = None,
        source: LogSource | None = None,
    ) -> None:
        self._application = application
        # How the log is read: by default the fastest way this store allows.
        self._source: LogSource = source or open_source(application)
        self.path = path
        self._projections = {p.name: p for p in (projections or all_projections())}
        set_aside_if_corrupt(path)
        self._db = connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS projection_positions"
            " (name TEXT PRIMARY KEY, position INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS projection_versions"
            " (name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        for projection in self._projections.values():
            self._prepare(projection)
        # Positions for callers on other threads (the admin API on the event loop): a
        # connection of its own sees committed positions without waiting for a catch-up.
        self._reader = connect(path)
        self._reader_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._rebuilds: set[str] = set()
        # name -> position a running rebuild has reached (read by the admin pages).
        self.rebuild_progress: dict[str, int] = {}
        self._rebuild: _FreshCopy | None = None
        # Batches per rebuild pass; None (offline: the command line, the start) means all.
        self.rebuild_chunk: int | None = None
        self._rebuilds_lock = threading.Lock()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[int], None]] = []
        self._applied = 0
        self._applied_changed = threading.Condition()
        self.failures = 0  # failed updates in a row

    def _prepare(self, projection: Projection) -> None:
        """Create the projection's tables; tables of an older shape are dropped and replayed.

        Each step is idempotent (executescript commits on its own), so a crash part-way
        through simply repeats the preparation at the next start."""
        row = self._db.execute("SELECT version FROM projection_versions WHERE name = ?",
                               (projection.name,)).fetchone()
        existed = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                                   (projection.tables[0],)).fetchone() is not None
        # Tables from before versions were recorded are version 1.
        stored = row[0] if row else (1 if existed else projection.version)
        if stored != projection.version:
            log.info("projection %s changed shape (v%d -> v%d); replaying the log",
                     projection.name, stored, projection.version)
            projection.drop(self._db)
            self._db.execute("DELETE FROM projection_positions WHERE name = ?",
                             (projection.name,))
        projection.create(self._db)
        self._db.execute("INSERT OR IGNORE INTO projection_positions VALUES (?, 0)",
                         (projection.name,))
        self._db.execute("INSERT OR REPLACE INTO projection_versions VALUES (?, ?)",
                         (projection.name, projection.version))

    @property
    def names(self) -> list[str]:
        return list(self._projections)

    def positions(self) -> dict[str, int]:
        """Committed positions; never waits for a running catch-up or rebuild."""
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT name, position FROM projection_positions").fetchall()
        return {name: position for name, position in rows if name in self._projections}

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """`listener(position)` runs after each commit with the lowest applied position."""
        self._listeners.append(listener)

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        self.rebuild_chunk = self.rebuild_chunk or REBUILD_CHUNK
        self._thread = threading.Thread(target=self._run, name="projections", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._db.close()
        self._source.close()
        with self._reader_lock:
            self._reader.close()

    def wake(self, _head: int | None = None) -> None:
        self._wakeup.set()

    def request_rebuild(self, name: str) -> None:
        if name not in self._projections:
            raise KeyError(name)
        with self._rebuilds_lock:
            self._rebuilds.add(name)
        self._wakeup.set()

    @property
    def failing(self) -> bool:
        """The last updates failed: writers should not wait for the read models."""
        return self.failures >= FAILING_AFTER

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.failures:  # back off: a broken file must not spin a core
                pause = min(RETRY_FIRST_SECONDS * 2 ** (self.failures - 1), RETRY_MAX_SECONDS)
                self._stopping.wait(pause)
            else:
                self._wakeup.wait(POLL_SECONDS)
            self._wakeup.clear()
            try:
                self.catch_up()
                if self.failures:
                    log.info("projections recovered after %d failed updates", self.failures)
                self.failures = 0
            except Exception:  # keep following; the retry starts from the stored position
                self.failures += 1
                log.exception("projection update failed (%d in a row)", self.failures)
                with self._applied_changed:  # waiters stop waiting once it is failing
                    self._applied_changed.notify_all()

    def catch_up(self) -> int:
        """Apply everything committed so far; returns the lowest position reached."""
        with self._lock:
            self._apply_rebuilds()
            if self._apply_batch(BATCH_SIZE) == BATCH_SIZE:
                with _bulk_replay():  # behind: bigger reads until the head
                    while self._apply_batch(CATCH_UP_BATCH) == CATCH_UP_BATCH:
                        pass
            low = min(self._positions_locked().values())
        with self._applied_changed:
            self._applied = max(self._applied, low)
            self._applied_changed.notify_all()
        for listener in self._listeners:
            listener(low)
        return low

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until every projection has applied `position`; False on timeout.

        For threads (the inference actor) that must read what was just written."""
        self.wake()
        with self._applied_changed:
            self._applied_changed.wait_for(
                lambda: self._applied >= position or self.failing, timeout)
            return self._applied >= position

    # -- applying (callers hold self._lock) --------------------------------------------

    def _positions_locked(self) -> dict[str, int]:
        rows = self._db.execute("SELECT name, position FROM projection_positions").fetchall()
        return {name: position for name, position in rows if name in self._projections}

    def _apply_rebuilds(self) -> None:
        """Rebuild the requested projections beside the live file, then swap them in.

        The replay from position 0 goes into a fresh file, a few batches per pass
        (`rebuild_chunk`), and each pass also applies the live log: writers keep
        settling against the live read models for the whole rebuild. Once the fresh copy
        reaches the head, its rows replace the live ones in one transaction that also
        applies whatever arrived meanwhile: readers never see a half-empty read model,
        and the applied position never goes backwards. Offline (no runner thread: the
        command line, the start) a rebuild runs to its end at once.
        """
        if self._rebuild is None:
            with self._rebuilds_lock:
                names = sorted(self._rebuilds)
                self._rebuilds.clear()
            if not names:
                return
            self._rebuild = _FreshCopy.start(self.path, names, self._projections)
        fresh = self._rebuild
        limit = self.rebuild_chunk
        try:
            # Offline, a rebuild reads big batches; online, small ones (the live log and
            # its writers wait between passes).
            with _bulk_replay() if limit is None else contextlib.nullcontext():
                done = self._replay_into(fresh, limit)
            if done:
                self._swap_in(fresh)
            else:
                self._wakeup.set()  # more to do: the next pass continues after the live log
        except BaseException:
            self._rebuild = None
            fresh.discard()
            self.rebuild_progress = {}
            with self._rebuilds_lock:
                self._rebuilds.update(fresh.names)
            raise

    def _replay_into(self, fresh: _FreshCopy, limit: int | None) -> bool:
        """Up to `limit` batches into the fresh copy; True once it reached the head."""
        size = CATCH_UP_BATCH if limit is None else BATCH_SIZE
        passes = 0
        while limit is None or passes < limit:
            records, events = self._source.read(fresh.position, size)
            if records:
                fresh.db.execute("BEGIN")
                _apply_to(fresh.db, fresh.projections,
                          dict.fromkeys(fresh.names, fresh.position), records, events)
                fresh.db.execute("COMMIT")
                fresh.position = records[-1].id
                self.rebuild_progress = dict.fromkeys(fresh.names, fresh.position)
                passes += 1
            if len(records) < size:
                return True
        return False

    def _swap_in(self, fresh: _FreshCopy) -> None:
        fresh.db.close()
        self._db.execute("ATTACH DATABASE ? AS fresh", (str(fresh.path),))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for name in fresh.names:
                    for table in self._projections[name].tables:
                        columns = _copy_columns(self._db, table)
                        self._db.execute(f"DELETE FROM main.{table}")
                        self._db.execute(f"INSERT INTO main.{table} ({columns})"
                                         f" SELECT {columns} FROM fresh.{table}")
                    self._db.execute("UPDATE projection_positions SET position = ?"
                                     " WHERE name = ?", (fresh.position, name))
                while True:  # what the live log gained since the fresh copy's last pass
                    positions, records, events = self._next_batch(BATCH_SIZE)
                    if records:
                        self._apply(positions, records, events)
                    if len(records) < BATCH_SIZE:
                        break
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        finally:
            self._db.execute("DETACH DATABASE fresh")
        self._rebuild = None
        fresh.discard()
        self.rebuild_progress = {}
        log.info("projections %s rebuilt from the log up to position %d (beside the live"
                 " file, then swapped in)", ", ".join(fresh.names),
                 min(self._positions_locked().values()))

    def _next_batch(self, size: int
                    ) -> tuple[dict[str, int], Sequence[StoredRecord], list[Event]]:
        positions = self._positions_locked()
        records, events = self._source.read(min(positions.values()), size)
        return positions, records, events

    def _apply(self, positions: dict[str, int], records: Sequence[StoredRecord],
               events: list[Event]) -> None:
        """Apply one batch to every projection that has not seen it (inside a transaction)."""
        _apply_to(self._db, self._projections, positions, records, events)
        for name, applied in positions.items():
            self._db.execute(
                "UPDATE projection_positions SET position = ? WHERE name = ?",
                (max(applied, records[-1].id), name),
            )

    def _apply_batch(self, size: int = BATCH_SIZE) -> int:
        positions, records, events = self._next_batch(size)
        if not records:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._apply(positions, records, events)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(records)


def _apply_to(db: sqlite3.Connection, projections: dict[str, Projection],
              positions: dict[str, int], records: Sequence[StoredRecord],
              events: list[Event]) -> None:
    """Apply a batch to each projection that has not seen it, in `db` (no positions).

    Projections of `on_*` handlers that are all at the same position go through the batch
    together, in one pass: most events (token batches) concern none of them, and looking
    each event's class up once, not once per projection, is what that costs then."""
    first = records[0].id
    whole = list(zip(records, events, strict=True))
    plain: list[Projection] = []
    for name, projection in projections.items():
        applied = positions[name]
        pairs = whole if applied < first else [
            (r, e) for r, e in zip(records, events, strict=True) if r.id > applied]
        if isinstance(projection, BatchProjection):  # one call, records and events
            projection.apply_batch(db, pairs)
        elif type(projection).apply is Projection.apply and pairs is whole:
            plain.append(projection)
        else:
            for record, event in pairs:
                projection.apply(db, event, record.id)
    if plain:
        _apply_handlers(db, plain, whole)


def _apply_handlers(db: sqlite3.Connection, projections: list[Projection],
                    batch: list[tuple[StoredRecord, Event]]) -> None:
    """Each event to the `on_*` handlers the projections have for its class, in log order
    (each projection sees its events in order; they write tables of their own)."""
    key = tuple(projections)
    found = _HANDLERS.get(key)
    if found is None:
        if len(_HANDLERS) >= 32:  # runners come and go (tests, rebuilds): stay small
            _HANDLERS.clear()
        found = _HANDLERS[key] = {}
    for record, event in batch:
        kind = type(event)
        handlers = found.get(kind)
        if handlers is None:
            method = "on_" + kind.__qualname__.replace(".", "_")
            handlers = found[kind] = tuple(
                handler for p in projections
                if (handler := getattr(p, method, None)) is not None)
        for handler in handlers:
            handler(db, event, record.id)


# (projections) -> event class -> their handlers for it.
_HANDLERS: dict[tuple[Projection, ...], dict[type, tuple[Any, ...]]] = {}


@contextlib.contextmanager
def _bulk_replay() -> Iterator[None]:
    """While many batches are replayed: Python's cycle collector runs after every 700 new
    objects by default, and each run walks the batch of decoded events still alive (5,000
    events, several objects each), about a tenth of a rebuild's CPU. Events hold no
    cycles, so it runs once per 100,000 new objects meanwhile (process-wide; the old
    thresholds come back at the end)."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 100_000), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _copy_columns(db: sqlite3.Connection, table: str) -> str:
    """The columns to copy a table by, its rowid included when it has one (FTS tables
    and tables without an integer key are addressed by rowid)."""
    names = [row[1] for row in db.execute(f"PRAGMA main.table_info({table})")]
    sql = db.execute("SELECT sql FROM main.sqlite_master WHERE name = ?", (table,)).fetchone()
    without_rowid = bool(sql and sql[0] and "WITHOUT ROWID" in sql[0].upper())
    return ", ".join(names if without_rowid else ["rowid", *names])


@dataclass
class _FreshCopy:
    """Projections being rebuilt in a file of their own beside the live one."""

    names: list[str]
    path: Path
    db: sqlite3.Connection
    projections: dict[str, Projection]
    position: int = 0

    @classmethod
    def start(cls, live: Path, names: list[str],
              projections: dict[str, Projection]) -> _FreshCopy:
        path = live.with_name(f"{live.name}.rebuild")
        _remove(path)
        db = connect(path)
        fresh = {name: type(projections[name])() for name in names}  # no shared caches
        for projection in fresh.values():
            projection.create(db)
        return cls(names, path, db, fresh)

    def discard(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        _remove(self.path)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
