"""localchat: look after a LocalChat data directory from the command line.

Audit the event log, check it has not been tampered with, rebuild and compare the read
models, back up and restore, export a user's or a chat's events, replay a conversation, and
manage accounts. Installed as the `localchat` console script; `python -m app.cli` is the
same program. One module per group of commands; the work itself is in app/audit.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from app.audit.backup import BackupError
from app.audit.store import NoEventStore
from app.cli import admin, archive, events, integrity, playback
from app.cli.common import PROBLEM, USAGE, context, shared_options
from app.event_store import SQLiteOnly, require_sqlite
from app.usecases.errors import InvalidInput, UseCaseError
from domain.errors import DomainError

DESCRIPTION = """\
Look after a LocalChat data directory: the event log (every action ever taken), the read
models built from it, backups and accounts. Every command works on $DATA_DIR (or ./data,
or --data-dir DIR); the read-only ones and `backup` are safe while the server runs."""

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


# Commands that read or copy the SQLite file itself, and what to do instead on PostgreSQL.
SQLITE_ONLY = {
    "backup": "use pg_dump (and copy DATA_DIR's read models and secret key)",
    "restore": "use pg_restore into an empty database, then `localchat rebuild`",
    "export": "not available yet",
    "events": "use the admin event browser or GET /api/admin/events/",
    "stats": "use the admin dashboard or GET /api/admin/stats/",
    "replay-session": "use the admin time-travel page",
    "disable-user": "use the admin pages", "enable-user": "use the admin pages",
    "grant-admin": "use the admin pages", "revoke-admin": "use the admin pages",
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    ctx = context(args)
    try:
        if args.command in SQLITE_ONLY:
            require_sqlite(ctx.settings, args.command, SQLITE_ONLY[args.command])
        return int(args.handler(ctx, args))
    except SQLiteOnly as error:
        ctx.warn(str(error))
        return PROBLEM
    except InvalidInput as error:
        ctx.warn(f"{error.field}: {error.problem}")
        return USAGE
    except (UseCaseError, DomainError, BackupError, NoEventStore) as error:
        ctx.warn(str(error) or type(error).__name__)
        return PROBLEM
    except FileNotFoundError as error:
        ctx.warn(f"not found: {error}")
        return PROBLEM
    except sqlite3.Error as error:  # a damaged or foreign file, read models not built yet
        ctx.warn(f"database error: {error}")
        return PROBLEM
    except BrokenPipeError:  # `localchat events list | head`
        sys.stderr.close()
        return 0
