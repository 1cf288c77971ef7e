"""localchat: look after a LocalChat data directory from the command line.

Audit the event log, check it has not been tampered with, rebuild and compare the read
models, back up and restore, export a user's or a chat's events, replay a conversation, and
manage accounts. Installed as the `localchat` console script; `python -m app.cli` is the
same program. One module per group of commands; the work itself is in app/audit. Every
command works on both event stores: the SQLite file in DATA_DIR, or the PostgreSQL database
of EVENT_STORE (backup and restore then use pg_dump and pg_restore).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from app.audit.backup import BackupError
from app.audit.store import NoEventStore
from app.cli import admin, archive, events, integrity, playback
from app.cli.common import PROBLEM, USAGE, Context, context, shared_options
from app.event_store import is_postgres
from app.usecases.errors import InvalidInput, UseCaseError
from domain.errors import DomainError

DESCRIPTION = """\
Look after a LocalChat data directory: the event log (every action ever taken), the read
models built from it, backups and accounts. Every command works on $DATA_DIR (or ./data,
or --data-dir DIR) and, with EVENT_STORE=postgresql://..., on that PostgreSQL database;
the read-only ones and `backup` are safe while the server runs."""

EPILOG = """\
examples:
  localchat events tail -f --type ReplyFailed     follow failed replies as they happen
  localchat events list --user alice --since 2h   what alice did in the last two hours
  localchat verify                                tamper check + read models vs the log
  localchat backup /srv/backups/2026-11-24        online backup; restore with `restore`
  localchat export --user alice > alice.jsonl     everything of one user, as JSON lines
  localchat replay-session 3f2c... --speed 10x    a past reply, streamed again

`localchat COMMAND --help` explains each command. --json makes output one JSON object
per line. Exit status: 0 done, 1 a check failed or the command was refused, 2 bad input."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="localchat", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    shared_options(top, top=True)
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (events, integrity, archive, playback, admin):
        group.register(commands)
    return top


def _database_errors(ctx: Context) -> tuple[type[Exception], ...]:
    """What a damaged or unreachable store raises: sqlite3's, and psycopg's on PostgreSQL."""
    if not is_postgres(ctx.settings):
        return (sqlite3.Error,)
    import psycopg  # only a PostgreSQL store needs it

    return (sqlite3.Error, psycopg.Error)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    ctx = context(args)
    try:
        database_errors = _database_errors(ctx)
    except ValueError as error:  # EVENT_STORE is neither empty nor a postgresql:// URL
        ctx.warn(str(error))
        return USAGE
    try:
        return int(args.handler(ctx, args))
    except InvalidInput as error:
        ctx.warn(f"{error.field}: {error.problem}")
        return USAGE
    except (UseCaseError, DomainError, BackupError, NoEventStore) as error:
        ctx.warn(str(error) or type(error).__name__)
        return PROBLEM
    except FileNotFoundError as error:
        ctx.warn(f"not found: {error}")
        return PROBLEM
    except database_errors as error:  # a damaged or foreign file, read models not built
        ctx.warn(f"database error: {error}")  # yet, PostgreSQL away
        return PROBLEM
    except BrokenPipeError:  # `localchat events list | head`
        sys.stderr.close()
        return 0
