"""`backup`, `restore` and `export`: copies of the data, and one user's or chat's events."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from uuid import UUID

from app.audit.backup import BackupError, StoreInUse, backup, restore
from app.audit.event_view import event_view
from app.audit.export import find_user, session_events, user_events
from app.audit.log import open_log
from app.audit.store import mapper
from app.cli.common import OK, PROBLEM, Context, add_command
from app.event_store import postgres_url
from app.usecases.errors import InvalidInput


def backup_command(ctx: Context, args: argparse.Namespace) -> int:
    url = postgres_url(ctx.settings)
    try:
        if url is None:
            report = backup(ctx.data_dir, args.dest)
        else:
            from app.audit.backup_pg import backup_postgres  # psycopg only for PostgreSQL

            report = backup_postgres(url, ctx.data_dir, args.dest)
    except BackupError as error:
        ctx.warn(str(error))
        return PROBLEM
    if ctx.json:
        ctx.emit(report.as_json())
    else:
        ctx.say(f"backed up {', '.join(report.files)} to {report.target}")
        ctx.say(f"log head {report.events_head}; hash chain head {report.chain[0]}"
                f" {report.chain[1]}")
    return OK


def restore_command(ctx: Context, args: argparse.Namespace) -> int:
    url = postgres_url(ctx.settings)
    try:
        if url is None:
            report = restore(args.src, ctx.data_dir, force=args.force)
        else:
            from app.audit.backup_pg import restore_postgres  # psycopg only for PostgreSQL

            report = restore_postgres(args.src, url, ctx.data_dir)
    except StoreInUse as error:
        ctx.warn(str(error))
        return PROBLEM
    except BackupError as error:
        ctx.warn(str(error))
        return PROBLEM
    if ctx.json:
        ctx.emit(report.as_json())
    else:
        ctx.say(f"restored {', '.join(report.files)} into {report.target};"
                f" log head {report.events_head}")
        ctx.say("run `verify` to check it; the server catches the read models up on start")
    return OK


def export_command(ctx: Context, args: argparse.Namespace) -> int:
    log = open_log(ctx.settings)
    events_mapper = mapper(ctx.settings)
    try:
        if args.user:
            user_id = find_user(log, events_mapper, args.user)
            events = user_events(log, events_mapper, user_id)
        else:
            try:
                session_id = UUID(args.session)
            except ValueError:
                raise InvalidInput("session", "must be a session id (a UUID).") from None
            events = session_events(log, events_mapper, session_id)
    finally:
        log.close()
    lines = (json.dumps(event_view(e), ensure_ascii=False) + "\n" for e in events)
    if args.output:
        with args.output.open("w", encoding="utf-8") as file:
            file.writelines(lines)
        ctx.warn(f"{len(events)} events written to {args.output}")
    else:
        ctx.out.writelines(lines)
    return OK


def register(commands: Any) -> None:
    parser = add_command(
        commands, "backup", backup_command, "copy the data directory, online",
        "Copy the event store, the read models, the secret key and the vector index (if\n"
        "any) into DEST, a new directory. Safe while the server runs: SQLite's backup\n"
        "API copies each file at one consistent moment, and every event committed before\n"
        "the backup started is in it. DEST/manifest.json records the log head and the\n"
        "hash-chain head.\n\n"
        "With EVENT_STORE=postgresql://..., the database (events and read models) goes\n"
        "into DEST/database.dump, made by pg_dump from one snapshot; the files that stay\n"
        "in DATA_DIR are copied beside it.")
    parser.add_argument("dest", type=Path, help="a new (or empty) directory")
    parser = add_command(
        commands, "restore", restore_command, "put a backup in place",
        "Copy a backup made by `backup` into the data directory. Refuses a data directory\n"
        "that already holds events unless --force; stop the server before forcing.\n\n"
        "With EVENT_STORE=postgresql://..., pg_restore puts SRC/database.dump into that\n"
        "database, which must be new and empty (createdb): any other is refused, --force\n"
        "or not.")
    parser.add_argument("src", type=Path, help="a directory made by `backup`")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing SQLite event store (server stopped!)")
    parser = add_command(
        commands, "export", export_command, "every event of a user or a chat, as JSON lines",
        "Every event of one user (account, username, admin changes and all their chats)\n"
        "or of one chat session, in log order, one JSON object per line (password and\n"
        "sign-in token hashes redacted).")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", metavar="U", help="a username or user id")
    which.add_argument("--session", metavar="ID", help="a chat session id")
    parser.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write to FILE instead of standard output")

