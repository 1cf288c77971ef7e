"""`replay-session`: a past conversation streamed again, at the pace it was written."""

from __future__ import annotations

import argparse
from typing import Any
from uuid import UUID

from app.audit.export import session_events
from app.audit.log import open_log
from app.audit.playback import Frame, frames, parse_speed, play
from app.audit.store import mapper
from app.cli.common import OK, Context, add_command
from app.usecases.errors import InvalidInput


def _uuid(text: str, field: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(field, "must be an id (a UUID).") from None


def replay_session_command(ctx: Context, args: argparse.Namespace) -> int:
    speed = parse_speed(args.speed)
    session_id = _uuid(args.session_id, "session")
    reply_id = _uuid(args.reply, "reply") if args.reply else None
    log = open_log(ctx.settings)
    try:
        shown = frames(session_events(log, mapper(ctx.settings), session_id), reply_id)
    finally:
        log.close()
    if reply_id is not None and not shown:
        raise InvalidInput("reply", "no reply with that id in this session.")

    def show(frame: Frame) -> None:
        if ctx.json:
            ctx.emit({"at": round(frame.at, 3), "position": frame.position,
                      "kind": frame.kind, "text": frame.text, "reply_id": frame.reply_id})
        elif frame.kind == "user":
            ctx.out.write(f"\n› {frame.text}\n")
        elif frame.kind == "started":
            ctx.out.write("\n")
        elif frame.kind == "tokens":
            ctx.out.write(frame.text)
        elif frame.kind not in ("queued", "completed"):
            ctx.out.write(f"\n[{frame.kind}{': ' + frame.text if frame.text else ''}]")
        ctx.out.flush()

    play(shown, speed, args.max_gap, show)
    if not ctx.json:
        ctx.out.write("\n")
    return OK


def register(commands: Any) -> None:
    parser = add_command(
        commands, "replay-session", replay_session_command,
        "stream a past conversation again, with its original timing",
        "Print a chat session's conversation from its events: each user message, then\n"
        "the reply's tokens as they were recorded, with the original pauses between\n"
        "token batches (divided by --speed). Pauses between turns are cut to --max-gap.")
    parser.add_argument("session_id", help="the chat session's id")
    parser.add_argument("--reply", metavar="ID", help="only this reply")
    parser.add_argument("--speed", default="1x",
                        help="1x (as it happened), 10x, ... or max (no waiting)")
    parser.add_argument("--max-gap", type=float, default=2.0, metavar="SECONDS",
                        help="longest pause shown between two events (2)")
