"""Follows the event log and applies it to every projection, one thread, one writer.

eventsourcing's SQLite recorder cannot `subscribe`, so the runner is woken after each
commit (and polls every second as a fallback), then reads the log from the lowest position
any projection has applied. Each projection's rows and its position are written in the
same transaction, so a crash never applies an event twice or skips one.

The read models are a SQLite file or a schema in PostgreSQL (`projections.database`). On
PostgreSQL several workers share them: one runner leads (an advisory lock,
`projections.leader`) and applies the log, woken by the event store's NOTIFY; the others
follow, reading the committed positions when the leader's NOTIFY says they moved, and
take the lead when it dies. Positions move by compare-and-set, so even two runners that
both believe they lead never apply an event twice.

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
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.application import Application

from projections.base import Projection
from projections.batch import BatchProjection
from projections.database import (
    PostgresReadModels,
    ReadModels,
    SQLiteReadModels,
    dialect_of,
)
from projections.event_index import EventIndexProjection
from projections.hashchain import HashChainProjection
from projections.leader import (
    APPLIED_CHANNEL,
    CONNECT_TIMEOUT,
    REBUILD_CHANNEL,
    AdvisoryLock,
    Listener,
    lock_key,
    notify,
)
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
# The advisory lock of the runner that applies the log (per read-model schema).
LOCK_NAME = "localchat.projections"
# A leader's NOTIFY payload when its updates fail ("failing:<failures in a row>").
FAILING = "failing:"


class PositionsMoved(Exception):
    """Another runner committed positions this one had read before applying a batch (it
    applied those events): the batch is rolled back, and this runner follows."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the position of projection {name} moved under this runner")
        self.name = name


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
    """A connection to the read-model file at `path` (WAL, autocommit)."""
    return SQLiteReadModels(path).connect()


class ProjectionRunner:
    def __init__(
        self,
        application: Application,
        read_models: ReadModels | Path,
        projections: Sequence[Projection] | None = None,
        source: LogSource | None = None,
    ) -> None:
        """`read_models`: where the read models live; a Path means the SQLite file there."""
        self._application = application
        # How the log is read: by default the fastest way this store allows.
        self._source: LogSource = source or open_source(application)
        if isinstance(read_models, Path):
            read_models = SQLiteReadModels(read_models)
        self.read_models: ReadModels = read_models
        # The SQLite file, or None on PostgreSQL.
        self.path: Path | None = (read_models.path if isinstance(read_models, SQLiteReadModels)
                                  else None)
        self._pg: PostgresReadModels | None = None
        if read_models.dialect == "postgresql":
            if not isinstance(read_models, PostgresReadModels):
                raise TypeError(f"no runner for read models in {read_models.describe()}")
            self._pg = read_models
        self._projections = {p.name: p for p in (projections or all_projections())}
        if self.path is not None:
            set_aside_if_corrupt(self.path)
        # sqlite3.Connection or database.PostgresDB: the same calls.
        self._db: Any = read_models.connect()
        # On PostgreSQL only the holder of this lock applies the log; SQLite has one process.
        self._leadership: AdvisoryLock | None = None if self._pg is None else AdvisoryLock(
            self._pg.url, f"{LOCK_NAME}:{self._pg.schema}")
        self._prepare_all()
        # Positions for callers on other threads (the admin API on the event loop): a
        # connection of its own sees committed positions without waiting for a catch-up.
        self._reader: Any = read_models.connect()
        self._reader_lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        # Ends a failure's back-off early: stopping, or PostgreSQL answering again.
        self._retry_now = threading.Event()
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
        # The lowest position a follower last told its listeners.
        self._followed: int | None = None
        self._listener: Listener | None = None
        self._created_as: object | None = None  # the lock session _create_as_leader ran in
        self.failures = 0  # failed updates in a row
        # A follower: the leader said its updates fail (until it announces progress).
        self._leader_failing = False

    def _prepare_all(self) -> None:
        if self._pg is None:
            self._create_bookkeeping()
            for projection in self._projections.values():
                self._prepare(projection)
            return
        # Workers starting together prepare one at a time: concurrent CREATE ... IF NOT
        # EXISTS of one table can fail in PostgreSQL's catalog. One transaction: DDL is
        # transactional there, so a crash part-way leaves nothing half made.
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute("SELECT pg_advisory_xact_lock(?)",
                       (lock_key(f"{LOCK_NAME}.prepare:{self._pg.schema}"),))
            self._create_bookkeeping()
            for projection in self._projections.values():
                self._prepare(projection)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _create_bookkeeping(self) -> None:
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS projection_positions"
            " (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS projection_versions"
            " (name TEXT PRIMARY KEY, version BIGINT NOT NULL)"
        )

    def _prepare(self, projection: Projection) -> None:
        """Create the projection's tables; tables of an older shape are dropped and replayed.

        On SQLite each step is idempotent (executescript commits on its own), so a crash
        part-way through simply repeats the preparation at the next start."""
        row = self._db.execute("SELECT version FROM projection_versions WHERE name = ?",
                               (projection.name,)).fetchone()
        existing = self._existing_tables(projection.tables)
        # Tables from before versions were recorded are version 1.
        stored = row[0] if row else (1 if projection.tables[0] in existing
                                     else projection.version)
        changed = stored != projection.version
        if changed:
            log.info("projection %s changed shape (v%d -> v%d); replaying the log",
                     projection.name, stored, projection.version)
            projection.drop(self._db)
            self._db.execute("DELETE FROM projection_positions WHERE name = ?",
                             (projection.name,))
        # On PostgreSQL, DDL on a table the leader writes waits for its transaction (and
        # can deadlock with it): a worker joining a running cluster leaves them alone, and
        # runs the schema scripts when it takes the lead (`_create_as_leader`).
        if self._pg is None or changed or len(existing) < len(projection.tables):
            projection.create(self._db)
        self._db.execute("INSERT INTO projection_positions (name, position) VALUES (?, 0)"
                         " ON CONFLICT (name) DO NOTHING", (projection.name,))
        self._db.execute("INSERT INTO projection_versions (name, version) VALUES (?, ?)"
                         " ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                         (projection.name, projection.version))

    def _existing_tables(self, tables: Sequence[str]) -> set[str]:
        marks = ", ".join("?" * len(tables))
        if self._pg is None:
            rows = self._db.execute(f"SELECT name FROM sqlite_master WHERE name IN ({marks})",
                                    tuple(tables)).fetchall()
        else:
            rows = self._db.execute(
                "SELECT table_name FROM information_schema.tables"
                f" WHERE table_schema = ? AND table_name IN ({marks})",
                (self._pg.schema, *tables)).fetchall()
        return {row[0] for row in rows}

    @property
    def names(self) -> list[str]:
        return list(self._projections)

    @property
    def is_leader(self) -> bool:
        """This runner applies the log (always on SQLite; on PostgreSQL while it holds the
        cluster's lock, as of its last catch-up)."""
        return self._leadership is None or self._leadership.held

    def positions(self) -> dict[str, int]:
        """Committed positions, in the runner's order of projections; never waits for a
        running catch-up or rebuild."""
        with self._reader_lock:
            rows = self._live_reader().execute(
                "SELECT name, position FROM projection_positions").fetchall()
        found = dict(rows)  # PostgreSQL returns them in no particular order
        return {name: found[name] for name in self._projections if name in found}

    def _live_reader(self) -> Any:
        """The reader connection, a new one if PostgreSQL dropped it (hold _reader_lock)."""
        if self._pg is not None and (self._reader.raw.closed or self._reader.raw.broken):
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = self._pg.connect()
        return self._reader

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """`listener(position)` runs after each commit with the lowest applied position."""
        self._listeners.append(listener)

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        self.rebuild_chunk = self.rebuild_chunk or REBUILD_CHUNK
        if self._pg is not None:
            # The leader wakes on the event store's NOTIFY (commits of every worker), the
            # followers on the leader's.
            channels = [APPLIED_CHANNEL, REBUILD_CHANNEL]
            events = getattr(getattr(self._application, "recorder", None), "channel_name", None)
            if isinstance(events, str):
                channels.append(events)
            self._listener = Listener(self._pg.url, channels, self._on_notify).start()
            # What committed before the LISTEN took effect sent its NOTIFY to nobody: one
            # catch-up once it listens covers it (polling would, a second later).
            self._listener.wait_listening(CONNECT_TIMEOUT)
            self._wakeup.set()
        self._thread = threading.Thread(target=self._run, name="projections", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wakeup.set()
        self._retry_now.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._listener is not None:
            self._listener.stop()
        if self._rebuild is not None:
            self._rebuild.discard(self._db)
            self._rebuild = None
        with contextlib.suppress(Exception):  # a PostgreSQL connection may be dead already
            self._db.close()
        self._source.close()
        if self._leadership is not None and self._leadership.held:
            # After the last write: a follower takes over at once, not at its next try.
            self._leadership.release()
            self._tell_followers("")
        with self._reader_lock, contextlib.suppress(Exception):
            self._reader.close()
        if self._leadership is not None:
            self._leadership.release()

    def wake(self, _head: int | None = None) -> None:
        self._wakeup.set()

    def request_rebuild(self, name: str) -> None:
        """Rebuild `name` from the log; on PostgreSQL, by whichever runner leads."""
        if name not in self._projections:
            raise KeyError(name)
        if not self._lead():
            with self._reader_lock:
                notify(self._live_reader(), REBUILD_CHANNEL, name)  # autocommit: sent now
            return
        with self._rebuilds_lock:
            self._rebuilds.add(name)
        self._wakeup.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        """A notification (on the listening thread): wake the runner when it concerns it."""
        leading = self.is_leader
        if channel == REBUILD_CHANNEL:
            if not leading or payload not in self._projections:
                return
            with self._rebuilds_lock:
                self._rebuilds.add(payload)
        elif channel == APPLIED_CHANNEL:
            if leading:  # its own
                return
            if payload.startswith(FAILING):
                self._leader_failing = True
                with self._applied_changed:  # waiters stop waiting
                    self._applied_changed.notify_all()
                return
        elif channel and not leading:  # the event store's: for the leader
            return
        elif not channel:  # listening again after PostgreSQL was away: retry at once
            self._retry_now.set()
        self._wakeup.set()

    @property
    def failing(self) -> bool:
        """The last updates failed (here, or the leader's when this runner follows):
        writers should not wait for the read models."""
        return self.failures >= FAILING_AFTER or (self._leader_failing and not self.is_leader)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self.failures:  # back off: a broken file must not spin a core
                pause = min(RETRY_FIRST_SECONDS * 2 ** (self.failures - 1), RETRY_MAX_SECONDS)
                self._retry_now.wait(pause)
            else:
                self._wakeup.wait(POLL_SECONDS)
            self._wakeup.clear()
            self._retry_now.clear()
            try:
                self.catch_up()
                if self.failures:
                    log.info("projections recovered after %d failed updates", self.failures)
                self.failures = 0
            except Exception:  # keep following; the retry starts from the stored position
                self.failures += 1
                log.exception("projection update failed (%d in a row)", self.failures)
                if self._pg is not None and self.is_leader and self.failing:
                    self._tell_followers(f"{FAILING}{self.failures}")
                if self._pg is not None:  # PostgreSQL went away: the retry connects afresh
                    with self._lock, contextlib.suppress(Exception):
                        self._db.close()
                with self._applied_changed:  # waiters stop waiting once it is failing
                    self._applied_changed.notify_all()

    def _tell_followers(self, payload: str) -> None:
        with self._reader_lock, contextlib.suppress(Exception):  # PostgreSQL may be away
            notify(self._live_reader(), APPLIED_CHANNEL, payload)

    def catch_up(self) -> int:
        """Apply everything committed so far; returns the lowest position reached.

        A runner that does not lead (PostgreSQL, another worker holds the lock) applies
        nothing: it reads the committed positions the leader reached."""
        if not self._lead():
            return self._follow()
        try:
            with self._lock:
                self._reconnect_if_broken()
                self._create_as_leader()
                self._apply_rebuilds()
                count, positions = self._apply_batch(BATCH_SIZE)
                if count == BATCH_SIZE:
                    with _bulk_replay():  # behind: bigger reads until the head
                        count, positions = self._apply_batch(CATCH_UP_BATCH)
                        while count == CATCH_UP_BATCH:
                            count, positions = self._apply_batch(CATCH_UP_BATCH)
                low = min(positions.values())
        except PositionsMoved as moved:  # another runner applied them: nothing was written
            log.warning("%s; following the runner that moved it", moved)
            return self._follow()
        self._followed = low
        with self._applied_changed:
            self._applied = max(self._applied, low)
            self._applied_changed.notify_all()
        for listener in self._listeners:
            listener(low)
        return low

    def _lead(self) -> bool:
        """Whether this runner may apply the log now (taking the lead if it is free)."""
        if self._leadership is None:
            return True
        if self._leadership.try_acquire():
            return True
        if self._rebuild is not None:  # lost the lead mid-rebuild: the next leader redoes it
            with self._lock:
                fresh, self._rebuild = self._rebuild, None
                if fresh is not None:
                    fresh.discard(None)
                    self.rebuild_progress = {}
                    with self._rebuilds_lock:
                        self._rebuilds.update(fresh.names)
        return False

    def _follow(self) -> int:
        """What a runner that does not apply the log knows: the committed positions."""
        low = min(self.positions().values(), default=0)
        told, self._followed = self._followed, low
        if told is not None and low > told:  # the leader applies again
            self._leader_failing = False
        with self._applied_changed:
            self._applied = max(self._applied, low)
            self._applied_changed.notify_all()
        if low != told:
            for listener in self._listeners:
                listener(low)
        return low

    def _create_as_leader(self) -> None:
        """PostgreSQL: once per lead, the schema scripts again (what a projection's schema
        gained without a new version: an index), now that no other runner writes."""
        if self._leadership is None or self._created_as is self._leadership.session:
            return
        self._db.execute("BEGIN")
        try:
            for projection in self._projections.values():
                projection.create(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._created_as = self._leadership.session

    def _reconnect_if_broken(self) -> None:
        """PostgreSQL restarted or cut the connection: the next attempt uses a new one."""
        if self._pg is not None and (self._db.raw.closed or self._db.raw.broken):
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = self._pg.connect()

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
            try:
                self._rebuild = _FreshCopy.start(self.read_models, self._db, names,
                                                 self._projections)
            except BaseException:
                with self._rebuilds_lock:
                    self._rebuilds.update(names)
                raise
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
            fresh.discard(self._db)
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
                with _pipelined(fresh.db):
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
        """The fresh copy's rows replace the live ones, and the live log since its last
        pass is applied, in one transaction: readers see the old rows until the commit."""
        fresh.db.close()
        with fresh.attached(self._db) as source:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                positions = self._positions_locked()
                for name in fresh.names:
                    for table in self._projections[name].tables:
                        self._copy_table(table, source)
                    self._move_positions({name: positions[name]}, {name: fresh.position})
                while True:  # what the live log gained since the fresh copy's last pass
                    positions, records, events = self._next_batch(BATCH_SIZE)
                    if records:
                        self._apply(positions, records, events)
                    if len(records) < BATCH_SIZE:
                        break
                self._announce(min(self._positions_locked().values()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._rebuild = None
        fresh.discard(self._db)
        self.rebuild_progress = {}
        log.info("projections %s rebuilt from the log up to position %d (beside the live"
                 " ones, then swapped in)", ", ".join(fresh.names),
                 min(self._positions_locked().values()))

    def _copy_table(self, table: str, source: str) -> None:
        """Replace the live `table`'s rows with those of `source`.`table`."""
        if self._pg is None:
            columns = _copy_columns(self._db, table)
            self._db.execute(f"DELETE FROM main.{table}")
            self._db.execute(f"INSERT INTO main.{table} ({columns})"
                             f" SELECT {columns} FROM {source}.{table}")
            return
        live = _quoted(self._pg.schema)
        # Generated columns compute themselves; identity and serial columns are copied
        # as they are, and their sequences then continue after the highest copied value.
        rows = self._db.execute(
            "SELECT column_name, pg_get_serial_sequence("
            "quote_ident(table_schema) || '.' || quote_ident(table_name), column_name)"
            " FROM information_schema.columns WHERE table_schema = ? AND table_name = ?"
            " AND is_generated = 'NEVER' ORDER BY ordinal_position",
            (self._pg.schema, table)).fetchall()
        columns = ", ".join(_quoted(row[0]) for row in rows)
        self._db.execute(f"DELETE FROM {live}.{table}")
        self._db.execute(f"INSERT INTO {live}.{table} ({columns}) OVERRIDING SYSTEM VALUE"
                         f" SELECT {columns} FROM {source}.{table}")
        for column, sequence in rows:
            if sequence is not None:
                self._db.execute(
                    f"SELECT setval(?, COALESCE(MAX({_quoted(column)}), 0) + 1, false)"
                    f" FROM {live}.{table}", (sequence,))

    def _next_batch(self, size: int
                    ) -> tuple[dict[str, int], Sequence[StoredRecord], list[Event]]:
        positions = self._positions_locked()
        records, events = self._source.read(min(positions.values()), size)
        return positions, records, events

    def _apply(self, positions: dict[str, int], records: Sequence[StoredRecord],
               events: list[Event]) -> int:
        """Apply one batch to every projection that has not seen it (inside a transaction);
        returns the lowest position reached."""
        last = records[-1].id
        moved = {name: max(applied, last) for name, applied in positions.items()}
        # Positions first: a second writer with the same positions waits here for the
        # first one's commit, then finds them moved and applies nothing.
        self._move_positions(positions, moved)
        with _pipelined(self._db):
            _apply_to(self._db, self._projections, positions, records, events)
        return min(moved.values())

    def _move_positions(self, old: dict[str, int], new: dict[str, int]) -> None:
        """Compare-and-set each changed position (inside the caller's transaction): one
        statement per distinct move, usually one (every projection at the same position)."""
        moves: dict[tuple[int, int], list[str]] = {}
        for name, position in new.items():
            if position != old[name]:
                moves.setdefault((old[name], position), []).append(name)
        for (was, position), names in moves.items():
            marks = ", ".join("?" * len(names))
            cursor = self._db.execute(
                "UPDATE projection_positions SET position = ?"
                f" WHERE position = ? AND name IN ({marks})", (position, was, *names))
            if cursor.rowcount != len(names):
                raise PositionsMoved(", ".join(names))

    def _announce(self, low: int) -> None:
        """On PostgreSQL, wake the followers when this transaction commits."""
        if self._pg is not None:
            notify(self._db, APPLIED_CHANNEL, str(low))

    def _apply_batch(self, size: int = BATCH_SIZE) -> tuple[int, dict[str, int]]:
        """One batch in one transaction: (events read, the positions after it)."""
        positions, records, events = self._next_batch(size)
        if not records:
            return 0, positions
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._announce(self._apply(positions, records, events))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        last = records[-1].id
        return len(records), {name: max(applied, last) for name, applied in positions.items()}


def _apply_to(db: Any, projections: dict[str, Projection],
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


def _apply_handlers(db: Any, projections: list[Projection],
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


def _pipelined(db: Any) -> contextlib.AbstractContextManager[Any]:
    """On PostgreSQL, a batch's statements go out without waiting for each answer (psycopg's
    pipeline mode; a read waits for what was sent before it): most of a batch's time was
    round trips. An error surfaces at the next read or at the end, and the caller's
    transaction is rolled back as before."""
    if dialect_of(db) == "postgresql":
        return db.raw.pipeline()
    return contextlib.nullcontext()


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


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _FreshCopy:
    """Projections being rebuilt beside the live ones: in a file of their own (SQLite), or
    a schema of their own (PostgreSQL: `<schema>_rebuild_<random>`, so that a runner that
    lost the lead without noticing yet never writes into its successor's copy)."""

    names: list[str]
    db: Any
    projections: dict[str, Projection]
    path: Path | None = None
    schema: str | None = None
    position: int = 0

    @classmethod
    def start(cls, live: ReadModels, live_db: Any, names: list[str],
              projections: dict[str, Projection]) -> _FreshCopy:
        fresh = {name: type(projections[name])() for name in names}  # no shared caches
        if isinstance(live, PostgresReadModels):
            prefix = f"{live.schema}_rebuild_"
            for (stale,) in live_db.execute(
                    "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, ?)",
                    (prefix,)).fetchall():  # left by an earlier leader
                live_db.execute(f"DROP SCHEMA IF EXISTS {_quoted(stale)} CASCADE")
            schema = prefix + uuid.uuid4().hex[:8]
            db = PostgresReadModels(live.url, schema).connect()
            # New tables go into the copy's schema; what the live schema holds besides
            # tables (an extension's operator classes: pg_trgm's) stays visible.
            db.execute(f"SET search_path TO {_quoted(schema)}, {_quoted(live.schema)}, public")
            copy = cls(names, db, fresh, schema=schema)
        else:
            assert isinstance(live, SQLiteReadModels)
            path = live.path.with_name(f"{live.path.name}.rebuild")
            _remove(path)
            copy = cls(names, connect(path), fresh, path=path)
        for projection in fresh.values():
            projection.create(copy.db)
        return copy

    @contextlib.contextmanager
    def attached(self, live_db: Any) -> Iterator[str]:
        """Where the live connection reads the copy's tables from (by this prefix)."""
        if self.schema is not None:
            yield _quoted(self.schema)
            return
        live_db.execute("ATTACH DATABASE ? AS fresh", (str(self.path),))
        try:
            yield "fresh"
        finally:
            live_db.execute("DETACH DATABASE fresh")

    def discard(self, live_db: Any | None) -> None:
        """Close and remove the copy (on PostgreSQL through `live_db`, when it works)."""
        with contextlib.suppress(Exception):
            self.db.close()
        if self.path is not None:
            _remove(self.path)
        elif self.schema is not None and live_db is not None:
            try:
                live_db.execute(f"DROP SCHEMA IF EXISTS {_quoted(self.schema)} CASCADE")
            except Exception:  # left for the next rebuild to drop
                log.warning("could not drop the rebuild schema %s", self.schema, exc_info=True)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
