"""`backup`, `restore` and `export`: copies of the data, and one user's or chat's events."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from uuid import UUID

from app.audit.backup import BackupError, StoreInUse, backup, restore
from app.audit.browse import user_by_name_or_id
from app.audit.event_view import event_view
from app.audit.export import session_events, user_events
from app.audit.log import connect_readonly
from app.audit.store import mapper
from app.cli.common import OK, PROBLEM, Context, add_command
from app.usecases.errors import InvalidInput


def backup_command(ctx: Context, args: argparse.Namespace) -> int:
    try:
        report = backup(ctx.data_dir, args.dest)
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
    try:
        report = restore(args.src, ctx.data_dir, force=args.force)
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
    log = connect_readonly(ctx.settings.event_store_path)
    events_mapper = mapper(ctx.settings)
    try:
        if args.user:
            user_id = user_by_name_or_id(log, events_mapper, args.user)
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
        "hash-chain head.")
    parser.add_argument("dest", type=Path, help="a new (or empty) directory")
    parser = add_command(
        commands, "restore", restore_command, "put a backup in place",
        "Copy a backup made by `backup` into the data directory. Refuses a data directory\n"
        "that already holds events unless --force; stop the server before forcing.")
    parser.add_argument("src", type=Path, help="a directory made by `backup`")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing event store (server stopped!)")
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

