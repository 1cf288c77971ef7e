"""`stats`, `create-admin`, `disable-user`/`enable-user`, `grant-admin`/`revoke-admin`."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any
from uuid import UUID

from app.audit import accounts
from app.audit.export import find_user
from app.audit.log import open_log
from app.audit.stats import collect
from app.audit.store import mapper, open_application
from app.cli.common import OK, USAGE, Context, add_command
from app.usecases import fields
from app.usecases.errors import InvalidInput
from domain.errors import UsernameTaken


def stats_command(ctx: Context, _args: argparse.Namespace) -> int:
    figures = collect(ctx.settings)
    if ctx.json:
        ctx.emit(figures)
        return OK
    for key in ("events", "users", "admins", "disabled_users", "sessions", "messages"):
        if figures.get(key) is not None:
            ctx.say(f"{key.replace('_', ' '):<16} {figures[key]:>12,}")
    head = figures.get("chain_head")
    if head:
        ctx.say(f"{'chain head':<16} {head['position']}:{head['hash']}")
    for name, state in figures.get("projections", {}).items():
        ctx.say(f"{'projection':<16} {name:<12} at {state['position']:,}"
                + (f" ({state['lag']:,} behind)" if state["lag"] else ""))
    for name, count in figures["events_by_type"].items():
        ctx.say(f"{'events':<16} {name:<32} {count:>10,}")
    for name, size in figures["bytes"].items():
        ctx.say(f"{'size':<16} {name:<32} {size / 1e6:>8.1f} MB")
    return OK


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        return None
    return first


def create_admin_command(ctx: Context, args: argparse.Namespace) -> int:
    username = fields.username({"username": args.username})
    email = fields.email({"email": args.email})
    assert email is not None
    password = _password(args)
    if password is None:
        ctx.warn("the passwords differ; nothing was created")
        return USAGE
    fields.password({"password": password})
    ctx.settings.data_dir.mkdir(parents=True, exist_ok=True)
    from app.event_store import event_store_env
    from domain.application import ChatApplication

    chat = ChatApplication(env=event_store_env(ctx.settings))  # the first run creates it
    try:
        user_id = accounts.create_admin(chat, username, email, password)
    except UsernameTaken:
        raise InvalidInput("username", "that username is already taken.") from None
    finally:
        chat.close()
    if ctx.json:
        ctx.emit({"user_id": str(user_id), "username": username, "is_admin": True})
    else:
        ctx.say(f"administrator {username} created ({user_id})")
    return OK


def _user(ctx: Context, ref: str) -> UUID:
    log = open_log(ctx.settings)
    try:
        return find_user(log, mapper(ctx.settings), ref)
    finally:
        log.close()


def disable_user_command(ctx: Context, args: argparse.Namespace) -> int:
    user_id = _user(ctx, args.user)
    chat = open_application(ctx.settings)
    log = open_log(ctx.settings)
    try:
        done = accounts.disable_user(chat, log, chat.mapper, user_id)
    finally:
        log.close()
        chat.close()
    if ctx.json:
        ctx.emit({"user_id": str(user_id), "disabled": True, "position": done.position,
                  "cancelled_replies": [str(r) for r in done.cancelled]})
    else:
        ctx.say(f"{args.user} is disabled: signed out everywhere"
                + (f"; {len(done.cancelled)} open replies cancelled" if done.cancelled else ""))
    return OK


def _simple(method: str, done_text: str) -> Any:
    def command(ctx: Context, args: argparse.Namespace) -> int:
        user_id = _user(ctx, args.user)
        chat = open_application(ctx.settings)
        try:
            position = getattr(chat, method)(user_id)
        finally:
            chat.close()
        if ctx.json:
            ctx.emit({"user_id": str(user_id), "done": method, "position": position})
        else:
            ctx.say(f"{args.user} {done_text}")
        return OK
    return command


def register(commands: Any) -> None:
    add_command(commands, "stats", stats_command, "counts, sizes, projection lag, chain head",
                "Figures about the data directory: events (by type), users, chats,\n"
                "messages, how far each projection has got, the hash-chain head to write\n"
                "down, and the files' sizes.")
    parser = add_command(
        commands, "create-admin", create_admin_command, "create an administrator account",
        "Create an account with admin rights (also on an empty data directory). The\n"
        "password is asked for twice, or read from one line of standard input.")
    parser.add_argument("username")
    parser.add_argument("--email", required=True)
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input")
    parser = add_command(
        commands, "disable-user", disable_user_command, "disable an account",
        "Disable an account: its sign-in tokens stop working (a running server sees it\n"
        "within a second) and its queued replies are cancelled. The last active\n"
        "administrator cannot be disabled.")
    parser.add_argument("user", help="username or user id")
    for name, method, text, summary in (
        ("enable-user", "enable_user", "is enabled (and must sign in again)",
         "enable a disabled account"),
        ("grant-admin", "grant_admin", "is an administrator", "make a user an administrator"),
        ("revoke-admin", "revoke_admin", "is no longer an administrator",
         "take admin rights away (never from the last administrator)"),
    ):
        parser = add_command(commands, name, _simple(method, text), summary)
        parser.add_argument("user", help="username or user id")
