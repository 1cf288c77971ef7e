"""Backup and restore of a data directory, online: SQLite's backup API, file by file.

Each SQLite file is copied in one step of the backup API, a consistent snapshot of that
file even while the server writes (in WAL mode the copy reads a snapshot and writers never
wait for it). Whatever follows the log is copied *before* the log itself, each position
before what it describes: a copy may then be behind the copied log (the server catches it
up on start) but never ahead of it, which would make a follower skip events recorded after
the restore. In order: the read models, the vector follower's position (`vectors.sqlite`),
the vector index (`chroma/`: its writes are idempotent, so being ahead of its position only
repeats work), and last the event log. Every event committed before the backup started is
in it.

A backup directory holds those files, the `secret_key` if there is one, and
`manifest.json` (what was copied, the log head and the hash-chain head). Beside a
PostgreSQL store, app/audit/backup_pg.py backs up with `pg_dump` instead, reusing the
followers' copy from here.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.audit.log import head as log_head
from projections.hashchain import GENESIS

EVENTS, READ_MODELS, SECRET, CHROMA, MANIFEST = (
    "events.sqlite", "readmodels.sqlite", "secret_key", "chroma", "manifest.json")
VECTORS = "vectors.sqlite"  # the vector follower's position and the chat owners it saw
FOLLOWERS = (READ_MODELS, VECTORS)  # SQLite files that follow the log, copied before it


class BackupError(Exception):
    """The backup or restore was refused; nothing was overwritten."""


class StoreInUse(BackupError):
    """The target already holds an event log (`force` overwrites it)."""


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of `source` (live or not) as a single self-contained file."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # all pages in one step: one snapshot of the source
        dst.execute("PRAGMA journal_mode=DELETE")  # no -wal beside the copy
    finally:
        dst.close()
        src.close()


def _chain_head(read_models: Path) -> tuple[int, str]:
    db = sqlite3.connect(f"file:{read_models}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT position, hash FROM hash_chain ORDER BY position DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    return (int(row[0]), bytes(row[1]).hex()) if row else (0, GENESIS.hex())


def _events_head(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return log_head(db)
    finally:
        db.close()


def _check(path: Path) -> None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = db.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        db.close()
    if result != "ok":
        raise BackupError(f"{path.name} is damaged: {result}")


def _copy_chroma(source: Path, target: Path) -> None:
    """The vector index: its SQLite file through the backup API, the rest as files."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.sqlite3*"))
    for db in source.glob("*.sqlite3"):
        copy_sqlite(db, target / db.name)


@dataclass
class BackupReport:
    target: Path
    events_head: int
    chain: tuple[int, str]
    files: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"target": str(self.target), "events_head": self.events_head,
                "chain_head": {"position": self.chain[0], "hash": self.chain[1]},
                "files": self.files}


def copy_followers(data_dir: Path, target: Path) -> list[str]:
    """Copy what follows the log (read models, vector position, vector index) to `target`;
    the names copied. Called before the log itself is copied."""
    files = []
    for name in FOLLOWERS:
        if (data_dir / name).is_file():
            copy_sqlite(data_dir / name, target / name)
            files.append(name)
    if (data_dir / CHROMA).is_dir():
        _copy_chroma(data_dir / CHROMA, target / CHROMA)
        files.append(CHROMA + "/")
    return files


def backup(data_dir: Path, target: Path) -> BackupReport:
    source_events = data_dir / EVENTS
    if not source_events.is_file():
        raise BackupError(f"no event store at {source_events}")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; back up into a new directory")
    target.mkdir(parents=True, exist_ok=True)
    files = copy_followers(data_dir, target)  # first: never ahead of the log copied last
    copy_sqlite(source_events, target / EVENTS)
    files.append(EVENTS)
    if (data_dir / SECRET).is_file():
        shutil.copy2(data_dir / SECRET, target / SECRET)
        files.append(SECRET)
    _check(target / EVENTS)
    report = BackupReport(
        target, _events_head(target / EVENTS),
        _chain_head(target / READ_MODELS) if READ_MODELS in files else (0, GENESIS.hex()),
        files)
    manifest = {**report.as_json(), "created_at": datetime.now(UTC).isoformat(),
                "source": str(data_dir.resolve())}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def holds_events(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        return _events_head(path) > 0
    except sqlite3.DatabaseError:
        return True  # something is there; do not overwrite it without being told to


def put_followers(source: Path, data_dir: Path) -> list[str]:
    """Put a backup's followers of the log in place (after the log); the names put."""
    files = []
    for name in FOLLOWERS:
        if (source / name).is_file():
            copy_sqlite(source / name, data_dir / name)
            files.append(name)
        else:  # a follower of another log: it starts again from position 0
            for stale in data_dir.glob(name + "*"):
                stale.unlink()
    if (data_dir / CHROMA).exists():
        shutil.rmtree(data_dir / CHROMA)
    if (source / CHROMA).is_dir():
        shutil.copytree(source / CHROMA, data_dir / CHROMA)
        files.append(CHROMA + "/")
    return files


def restore(source: Path, data_dir: Path, force: bool = False) -> BackupReport:
    """Put a backup in place. Refuses a data directory that already holds events unless
    `force` (stop the server first: it keeps the old log's state in memory)."""
    manifest_path = source / MANIFEST
    if not (source / EVENTS).is_file() or not manifest_path.is_file():
        if (source / "database.dump").is_file():  # app/audit/backup_pg.py made it
            raise BackupError(f"{source} is a backup of a PostgreSQL store; restore it with"
                              " EVENT_STORE set to a new, empty database")
        raise BackupError(f"{source} is not a backup (no {EVENTS} and {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    _check(source / EVENTS)
    if holds_events(data_dir / EVENTS) and not force:
        raise StoreInUse(f"{data_dir / EVENTS} already holds events; stop the server and"
                         " restore with --force to replace them")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Through the backup API again, so an open connection sees the new file whole.
    copy_sqlite(source / EVENTS, data_dir / EVENTS)
    files = [EVENTS, *put_followers(source, data_dir)]
    if (source / SECRET).is_file():
        shutil.copy2(source / SECRET, data_dir / SECRET)
        files.append(SECRET)
    chain = manifest.get("chain_head", {})
    return BackupReport(data_dir, _events_head(data_dir / EVENTS),
                        (int(chain.get("position", 0)), str(chain.get("hash", ""))), files)
