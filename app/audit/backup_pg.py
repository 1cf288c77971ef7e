"""Backup and restore beside a PostgreSQL store: `pg_dump` and `pg_restore`.

The database (the library's events table and the `read_models` schema) goes into one
custom-format archive, `database.dump`, made by `pg_dump` from a snapshot this module
exports: the log head and the hash-chain head written into the manifest are read in that
same snapshot, so they describe exactly what the archive holds. pg_dump's locks (ACCESS
SHARE) never block the server's writers. What stays in DATA_DIR (the vector follower's
position, the vector index, the secret key, and a read-model file from before the read
models moved to PostgreSQL) is copied first, as app/audit/backup.py does: never ahead of
the log.

A restore goes into an empty database only (`pg_restore` in one transaction, all or
nothing); a database that holds anything is refused, --force or not: drop and create it.
The client binaries are Debian's (/usr/lib/postgresql/<version>/bin, the newest), else
whatever `pg_dump` is on PATH. The password, if the URL has one, goes to them in the
environment (PGPASSWORD), not on a command line other users can read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from app.audit.backup import (
    EVENTS,
    MANIFEST,
    SECRET,
    BackupError,
    BackupReport,
    copy_followers,
    put_followers,
)
from app.audit.log import events_table
from projections.database import SCHEMA, PostgresReadModels
from projections.hashchain import GENESIS

DUMP = "database.dump"
CONNECT_TIMEOUT = 5  # seconds


class DatabaseNotEmpty(BackupError):
    """A restore was aimed at a database that already holds something."""


def client(name: str) -> str:
    """The path of a PostgreSQL client program (pg_dump, pg_restore)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise BackupError(f"{name} not found (neither in /usr/lib/postgresql/*/bin nor on PATH):"
                      " install the PostgreSQL client (Debian: postgresql-client)")


def _run(program: str, url: str, *args: str) -> str:
    """Run a client program on the database of `url`; its output, or BackupError."""
    parts = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    env = dict(os.environ)
    password = parts.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    command = [client(program), f"--dbname={make_conninfo(**parts)}", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise BackupError(f"{program} failed (exit status {done.returncode}):"
                          f" {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def describe(url: str) -> str:
    """The database, without a password (for the manifest and messages)."""
    return PostgresReadModels(url).describe().rsplit("#", 1)[0]


def _heads(db: psycopg.Connection[Any], url: str) -> tuple[int, tuple[int, str]]:
    """The log head and the hash-chain head, in the connection's snapshot."""
    table = events_table()
    exists = db.execute("SELECT to_regclass(%s), to_regclass(%s)",
                        [f'public."{table}"', f'"{SCHEMA}".hash_chain']).fetchone()
    if exists is None or exists[0] is None:
        raise BackupError(f"no event store in {describe(url)}"
                          f" (no table {table})")
    row = db.execute(sql.SQL("SELECT MAX(notification_id) FROM {}").format(
        sql.Identifier(table))).fetchone()
    head = int(row[0] or 0) if row else 0
    chain = (0, GENESIS.hex())
    if exists[1] is not None:
        top = db.execute(sql.SQL("SELECT position, hash FROM {}.hash_chain"
                                 " ORDER BY position DESC LIMIT 1").format(
            sql.Identifier(SCHEMA))).fetchone()
        if top is not None:
            chain = (int(top[0]), bytes(top[1]).hex())
    return head, chain


def backup_postgres(url: str, data_dir: Path, target: Path) -> BackupReport:
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; back up into a new directory")
    pg_dump = client("pg_dump")  # before anything is written
    target.mkdir(parents=True, exist_ok=True)
    files = copy_followers(data_dir, target)  # first: never ahead of the log dumped last
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as db:
        # One snapshot for the heads and for pg_dump (it joins it with --snapshot); the
        # transaction stays open until the dump is done.
        db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        db.read_only = True
        snapshot_row = db.execute("SELECT pg_export_snapshot()").fetchone()
        assert snapshot_row is not None
        head, chain = _heads(db, url)
        _run(pg_dump, url, "--format=custom", "--no-owner", "--no-privileges",
             f"--snapshot={snapshot_row[0]}", f"--file={target / DUMP}")
        db.rollback()
    files.append(DUMP)
    _run(client("pg_restore"), url, "--list", str(target / DUMP))  # a readable archive
    files += _copy_secret(data_dir, target)
    report = BackupReport(target, head, chain, files)
    manifest = {**report.as_json(), "created_at": datetime.now(UTC).isoformat(),
                "source": str(data_dir.resolve()), "store": "postgresql",
                "database": describe(url)}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _copy_secret(source: Path, target: Path) -> list[str]:
    if (source / SECRET).is_file():
        shutil.copy2(source / SECRET, target / SECRET)
        return [SECRET]
    return []


def contents(db: psycopg.Connection[Any]) -> list[str]:
    """What the database holds outside PostgreSQL's own schemas: tables, views, sequences,
    types, functions (an empty schema is nothing, and so is an extension's own objects: a
    database made from a template with extensions is still empty)."""
    rows = db.execute("""
        WITH extension_member AS (
            SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
        SELECT n.nspname || '.' || c.relname FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
           AND (n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_%')
           AND (c.relkind <> 'c' OR NOT EXISTS (  -- a composite type's own, or its table's
                SELECT 1 FROM pg_type t JOIN extension_member e
                    ON e.classid = 'pg_type'::regclass AND e.objid = t.oid
                 WHERE t.typrelid = c.oid))
           AND NOT EXISTS (SELECT 1 FROM extension_member e
                            WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid)
        UNION ALL
        SELECT n.nspname || '.' || t.typname FROM pg_type t
          JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typtype IN ('d', 'e', 'r')
           AND (n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_%')
           AND NOT EXISTS (SELECT 1 FROM extension_member e
                            WHERE e.classid = 'pg_type'::regclass AND e.objid = t.oid)
        UNION ALL
        SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE (n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_%')
           AND NOT EXISTS (SELECT 1 FROM extension_member e
                            WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid)
        ORDER BY 1""").fetchall()
    return [str(row[0]) for row in rows]


def restore_postgres(source: Path, url: str, data_dir: Path) -> BackupReport:
    """Put a backup made by `backup_postgres` into the (empty) database of `url`, and the
    files that stay in DATA_DIR into `data_dir`."""
    manifest_path = source / MANIFEST
    if not (source / DUMP).is_file() or not manifest_path.is_file():
        if (source / EVENTS).is_file():
            raise BackupError(f"{source} is a backup of a SQLite store ({EVENTS}); restore it"
                              " with EVENT_STORE empty, into a data directory")
        raise BackupError(f"{source} is not a backup (no {DUMP} and {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    pg_restore = client("pg_restore")
    _run(pg_restore, url, "--list", str(source / DUMP))  # readable, before touching anything
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as db:
        found = contents(db)
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3
                                            else "")
            raise DatabaseNotEmpty(
                f"the database {describe(url)} is not empty ({shown}); restore into a new,"
                " empty database (createdb, then point EVENT_STORE at it): nothing was"
                " changed, and --force does not apply to a PostgreSQL store")
        # A command run before the restore may have made the read models' schema: it holds
        # nothing (at most an extension's objects), and the archive creates it.
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
    _run(pg_restore, url, "--no-owner", "--no-privileges", "--exit-on-error",
         "--single-transaction", str(source / DUMP))
    data_dir.mkdir(parents=True, exist_ok=True)
    files = [DUMP, *put_followers(source, data_dir)]
    files += _copy_secret(source, data_dir)
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as db:
        head, _ = _heads(db, url)
    chain = manifest.get("chain_head", {})
    return BackupReport(data_dir, head,
                        (int(chain.get("position", 0)), str(chain.get("hash", ""))), files)
