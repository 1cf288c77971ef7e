"""Replay: rebuild every read model from the log into a fresh file and diff it with the live one.

Safe beside a running server. The live read models are first copied with SQLite's backup
API (one consistent moment), and the fresh ones are built by the real `ProjectionRunner`
from the same log, cut at the position the copy had reached, so the two describe the same
history and every difference is a fault: a projection that is not a pure function of the
log, a hand edit of the read models, or a log edited under them.

On PostgreSQL the same happens in schemas of the same database: the live tables copied in
one REPEATABLE READ transaction (one snapshot), the fresh ones built there by the runner,
compared with the same EXCEPT queries, and both schemas dropped afterwards.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from uuid import uuid4

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from domain.application import ChatApplication
from projections.base import Projection
from projections.database import (
    SCHEMA,
    PostgresDB,
    PostgresReadModels,
    ReadModels,
    SQLiteReadModels,
)
from projections.runner import ProjectionRunner, all_projections

SAMPLE_ROWS = 3
ProgressFn = Callable[[int], None]


class _LogUpTo:
    """The application as the runner uses it (`recorder`, `mapper`), its log cut at `stop`."""

    def __init__(self, application: ChatApplication, stop: int) -> None:
        self.mapper = application.mapper
        self.recorder = self
        self._recorder = application.recorder
        self._stop = stop

    def select_notifications(
        self, start: int | None, limit: int, stop: int | None = None,
        topics: Sequence[str] = (), *, inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        stop = self._stop if stop is None else min(stop, self._stop)
        return self._recorder.select_notifications(
            start, limit, stop=stop, topics=topics, inclusive_of_start=inclusive_of_start)

    def max_notification_id(self) -> int:
        return self._stop


def snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (the backup API, in one step)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def positions(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT name, position FROM projection_positions").fetchall())
    except sqlite3.OperationalError:  # no read models at all yet
        return {}
    finally:
        db.close()


def build(application: ChatApplication, target: Path | ReadModels, upto: int,
          progress: ProgressFn | None = None,
          projections: Sequence[Projection] | None = None) -> float:
    """Build fresh read models at `target` from the log up to position `upto`.

    Runs the runner's own catch-up (the code the server runs) in a thread; this thread
    reports progress from the committed positions. Returns the seconds taken."""
    runner = ProjectionRunner(cast(Application[Any], _LogUpTo(application, upto)),
                              target, projections)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            runner.catch_up()
        except BaseException as error:  # re-raised in the caller's thread
            failure.append(error)

    started = time.perf_counter()
    worker = threading.Thread(target=work, name="replay")
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
        if progress is not None:
            progress(min(runner.positions().values(), default=0))
    seconds = time.perf_counter() - started
    runner.stop()
    if failure:
        raise failure[0]
    return seconds


@dataclass
class TableDiff:
    table: str
    live_rows: int
    fresh_rows: int
    only_live: int = 0  # rows the live table has and the replay does not
    only_fresh: int = 0
    first_position: int | None = None  # lowest log position among differing rows, if known
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.only_live or self.only_fresh)


@dataclass
class ReplayReport:
    position: int  # both sides describe the log up to here
    tables: list[TableDiff]
    skipped: dict[str, int]  # live projections not at `position` (name -> their position)
    seconds: float = 0.0
    fresh_path: Path | None = None

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)

    @property
    def first_position(self) -> int | None:
        found = [t.first_position for t in self.tables if t.first_position is not None]
        return min(found) if found else None


def diff(live: Path, fresh: Path, projections: Sequence[Projection]) -> list[TableDiff]:
    """Row-by-row comparison of every projection table, in SQL (tables of a million rows)."""
    db = sqlite3.connect(f"file:{fresh}?mode=ro", uri=True)
    db.execute("ATTACH DATABASE ? AS live", (f"file:{live}?mode=ro",))
    try:
        return [_diff_table(db, table) for p in projections for table in p.tables]
    finally:
        db.close()


def _diff_table(db: Any, table: str, live: str = "live", fresh: str = "main") -> TableDiff:
    """One table of schema `live` against the same table of schema `fresh` (SQLite: the
    attached file and the main one; PostgreSQL: two schemas)."""
    columns = _columns(db, fresh, table)
    cols = ", ".join(f'"{c}"' for c in columns)
    live, fresh = _quoted(live), _quoted(fresh)
    live_rows = db.execute(f"SELECT COUNT(*) FROM {live}.{table}").fetchone()[0]
    fresh_rows = db.execute(f"SELECT COUNT(*) FROM {fresh}.{table}").fetchone()[0]
    result = TableDiff(table, live_rows, fresh_rows)
    only_live = f"SELECT {cols} FROM {live}.{table} EXCEPT SELECT {cols} FROM {fresh}.{table}"
    only_fresh = f"SELECT {cols} FROM {fresh}.{table} EXCEPT SELECT {cols} FROM {live}.{table}"
    # A subquery needs a name on PostgreSQL (`AS d`); SQLite takes one as well.
    result.only_live = db.execute(f"SELECT COUNT(*) FROM ({only_live}) AS d").fetchone()[0]
    result.only_fresh = db.execute(f"SELECT COUNT(*) FROM ({only_fresh}) AS d").fetchone()[0]
    if result.identical:
        return result
    for side, sql in (("live", only_live), ("replayed", only_fresh)):
        for row in db.execute(f"{sql} LIMIT {SAMPLE_ROWS}"):
            result.samples.append(
                {"side": side, **{k: _plain(v) for k, v in zip(columns, row, strict=True)}})
    if "position" in columns:
        lows = [db.execute(f"SELECT MIN(position) FROM ({sql}) AS d").fetchone()[0]
                for sql in (only_live, only_fresh)]
        found = [low for low in lows if low is not None]
        result.first_position = min(found) if found else None
    return result


def _columns(db: Any, schema: str, table: str) -> list[str]:
    if getattr(db, "dialect", "sqlite") == "postgresql":
        return [row[0] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ?"
            " AND table_name = ? ORDER BY ordinal_position", (schema, table))]
    return [row[1] for row in db.execute(f"PRAGMA {schema}.table_info({table})")]


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        value = bytes(value)
    return value.hex() if isinstance(value, bytes) else value


def replay(application: ChatApplication, live: Path | ReadModels,
           into: Path | str | None = None,
           progress_for: Callable[[int], ProgressFn | None] | None = None) -> ReplayReport:
    """Rebuild every read model into `into` (a temporary directory if None) and diff.

    `live` is the SQLite file (a Path or SQLiteReadModels) or PostgreSQL's read models;
    on PostgreSQL `into`, if given, names the schema the fresh read models are kept in."""
    if isinstance(live, SQLiteReadModels):
        live = live.path
    if isinstance(live, PostgresReadModels):
        return _replay_postgres(application, live, into, progress_for)
    if isinstance(into, str):
        raise TypeError("a replay beside SQLite read models is kept in a directory (a Path)")
    return _replay_sqlite(application, cast(Path, live), into, progress_for)


def _replay_sqlite(application: ChatApplication, live: Path, into: Path | None,
                   progress_for: Callable[[int], ProgressFn | None] | None) -> ReplayReport:
    projections = all_projections()
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        copy = Path(tmp) / "live.sqlite"
        if live.is_file():
            snapshot(live, copy)
        live_positions = positions(copy) if live.is_file() else {}
        names = [p.name for p in projections]
        at = min((live_positions.get(n, 0) for n in names), default=0)
        skipped = {n: live_positions.get(n, 0) for n in names
                   if live_positions.get(n, 0) != at}
        target_dir = into or Path(tmp)
        target_dir.mkdir(parents=True, exist_ok=True)
        fresh = target_dir / "readmodels.sqlite"
        if fresh.exists():
            raise FileExistsError(fresh)
        progress = progress_for(at) if progress_for else None
        seconds = build(application, fresh, at, progress, all_projections())
        if not live.is_file():  # nothing to compare with: an empty read model
            ProjectionRunner(cast(Application[Any], _LogUpTo(application, 0)), copy).stop()
        compared = [p for p in projections if p.name not in skipped]
        tables = diff(copy, fresh, compared)
    return ReplayReport(at, tables, skipped, seconds, fresh if into else None)


# -- PostgreSQL: the same, in schemas of the live database -----------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _BesideLive(PostgresReadModels):
    """Read models in a schema of their own that still see what the live schema holds
    besides tables (pg_trgm's operator classes, if the extension was created there)."""

    live_schema: str = SCHEMA

    def connect(self) -> PostgresDB:
        db = super().connect()
        db.execute(f"SET search_path TO {_quoted(self.schema)}, {_quoted(self.live_schema)},"
                   " public")
        return db


def _tables_of(db: Any, schema: str) -> set[str]:
    return {row[0] for row in db.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", (schema,))}


def snapshot_postgres(db: Any, live: str, copy: str, tables: Sequence[str]) -> None:
    """Copy the live tables that exist into schema `copy`, all from one snapshot (as
    SQLite's backup API gives one moment): the runner may commit meanwhile."""
    db.execute(f"CREATE SCHEMA {_quoted(copy)}")
    db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        present = _tables_of(db, live)
        for table in tables:
            if table in present:
                db.execute(f"CREATE TABLE {_quoted(copy)}.{_quoted(table)} AS"
                           f" SELECT * FROM {_quoted(live)}.{_quoted(table)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _replay_postgres(application: ChatApplication, live: PostgresReadModels,
                     into: Path | str | None,
                     progress_for: Callable[[int], ProgressFn | None] | None) -> ReplayReport:
    if isinstance(into, Path):
        raise TypeError("a replay beside PostgreSQL read models is kept in a schema (a str)")
    projections = all_projections()
    token = uuid4().hex[:12]
    copy = f"replay_{token}_live"
    fresh = into or f"replay_{token}_fresh"
    db = live.connect()
    try:
        if fresh in _tables_of_schemas(db):
            raise FileExistsError(fresh)
        tables = ["projection_positions", "projection_versions",
                  *(t for p in projections for t in p.tables)]
        snapshot_postgres(db, live.schema, copy, tables)
        try:
            had_live = "projection_positions" in _tables_of(db, copy)
            live_positions = dict(db.execute(
                f"SELECT name, position FROM {_quoted(copy)}.projection_positions"
            ).fetchall()) if had_live else {}
            names = [p.name for p in projections]
            at = min((live_positions.get(n, 0) for n in names), default=0)
            skipped = {n: live_positions.get(n, 0) for n in names
                       if live_positions.get(n, 0) != at}
            progress = progress_for(at) if progress_for else None
            built = _BesideLive(live.url, fresh, live.schema)
            try:
                seconds = build(application, built, at, progress, all_projections())
                if not had_live:  # nothing to compare with: empty read models
                    ProjectionRunner(cast(Application[Any], _LogUpTo(application, 0)),
                                     _BesideLive(live.url, copy, live.schema)).stop()
                compared = [p for p in projections if p.name not in skipped]
                tables_diff = [_diff_table(db, table, copy, fresh)
                               for p in compared for table in p.tables]
            finally:
                if into is None:
                    db.execute(f"DROP SCHEMA IF EXISTS {_quoted(fresh)} CASCADE")
        finally:
            db.execute(f"DROP SCHEMA IF EXISTS {_quoted(copy)} CASCADE")
    finally:
        db.close()
    return ReplayReport(at, tables_diff, skipped, seconds, None)


def _tables_of_schemas(db: Any) -> set[str]:
    return {row[0] for row in db.execute("SELECT schema_name FROM information_schema.schemata")}
