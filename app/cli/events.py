"""`events list` and `events tail`: the log, filtered like the admin event browser."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from uuid import UUID

from app.audit.browse import EventBrowser, EventFilter, parse_time, resolve_type
from app.audit.event_view import event_view
from app.audit.export import find_user
from app.audit.log import events_table, open_log
from app.audit.store import mapper
from app.cli.common import OK, Context, add_command
from app.event_log import LoggedEvent
from app.event_store import postgres_url, read_models_for
from app.usecases.errors import InvalidInput

POLL_SECONDS = 0.5


def _filter(ctx: Context, browser: EventBrowser, args: argparse.Namespace) -> EventFilter:
    where = EventFilter()
    for name in args.type or []:
        where.types += resolve_type(name)
    if args.aggregate:
        try:
            where.aggregate = UUID(args.aggregate)
        except ValueError:
            raise InvalidInput("aggregate", "must be an aggregate id (a UUID).") from None
    if args.user:
        log = open_log(ctx.settings)
        try:
            where.user = find_user(log, browser.mapper, args.user)
        finally:
            log.close()
    if args.since:
        where.since = parse_time(args.since, "since")
    if args.until:
        where.until = parse_time(args.until, "until")
    return where


def _line(logged: LoggedEvent) -> str:
    view = event_view(logged)
    data = json.dumps(view["data"], ensure_ascii=False)
    if len(data) > 120:
        data = data[:119] + "…"
    return (f"{view['position']:>9}  {view['timestamp']}  {view['type']:<30}"
            f"  {view['originator_id'][:8]}  {data}")


def _show(ctx: Context, events: list[LoggedEvent]) -> None:
    for logged in events:
        if ctx.json:
            ctx.emit(event_view(logged))
        else:
            ctx.say(_line(logged))
    ctx.out.flush()


def _open(ctx: Context) -> EventBrowser:
    settings = ctx.settings
    url = postgres_url(settings)
    if url is not None:  # the log's table, and the index in the read models' schema
        from app.audit.browse_pg import PostgresEventBrowser  # psycopg only for PostgreSQL

        return PostgresEventBrowser(read_models_for(settings), url, events_table(),
                                    mapper(settings))
    if not settings.event_store_path.is_file():
        raise FileNotFoundError(f"no event store at {settings.event_store_path}")
    return EventBrowser(settings.read_model_path, settings.event_store_path,
                        mapper(settings))


def _warn_if_behind(ctx: Context, browser: EventBrowser, where: EventFilter) -> None:
    if where.types or where.user or where.since or where.until:
        behind = browser.log_head() - browser.index_head()
        if behind > 0:
            ctx.warn(f"note: the event index is {behind} events behind the log; filtered"
                     " results end there (start the server or run 'rebuild').")


def list_events(ctx: Context, args: argparse.Namespace) -> int:
    browser = _open(ctx)
    try:
        where = _filter(ctx, browser, args)
        _warn_if_behind(ctx, browser, where)
        after, shown = args.after, 0
        while shown < args.limit:
            page = browser.select(where, after=after, limit=min(500, args.limit - shown))
            if not page:
                break
            _show(ctx, page)
            shown += len(page)
            after = page[-1].position
    finally:
        browser.close()
    return OK


def tail_events(ctx: Context, args: argparse.Namespace) -> int:
    browser = _open(ctx)
    try:
        where = _filter(ctx, browser, args)
        _warn_if_behind(ctx, browser, where)
        last = browser.select(where, limit=args.lines, newest_first=True)
        _show(ctx, last)
        after = last[-1].position if last else browser.log_head()
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while args.follow and (deadline is None or time.monotonic() < deadline):
            page = browser.select(where, after=after, limit=500)
            if page:
                _show(ctx, page)
                after = page[-1].position
            else:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        browser.close()
    return OK


FILTERS_HELP = """The filters are the admin event browser's and combine freely. Filtered listings
use the read models' event index; unfiltered ones read the log itself."""


def _filters(parser: argparse.ArgumentParser, shown: bool = True) -> None:
    def helped(text: str) -> str:
        return text if shown else argparse.SUPPRESS

    parser.add_argument("--type", action="append", metavar="T", help=helped(
        "an event type, e.g. ReplyFailed or ChatSession.ReplyFailed (repeatable)"))
    parser.add_argument("--aggregate", metavar="ID",
                        help=helped("one aggregate's events: a user's, a chat session's"))
    parser.add_argument("--user", metavar="U", help=helped(
        "everything of one user (username or id): the account and all their chats"))
    parser.add_argument("--since", metavar="TIME", help=helped(
        "from this time: ISO (2026-11-24, 2026-11-24T09:30Z) or an age (90m, 2h, 7d)"))
    parser.add_argument("--until", metavar="TIME", help=helped("before this time (same forms)"))


def register(commands: Any) -> None:
    events = add_command(commands, "events", list_events, "list or follow the event log",
                         "List (oldest first) or tail (newest, then follow) the event log.")
    actions = events.add_subparsers(dest="action", metavar="{list,tail}")
    listing = add_command(actions, "list", list_events, "events in log order",
                          "Events in log order, after a position.\n\n" + FILTERS_HELP)
    listing.add_argument("--after", type=int, default=0, metavar="POS",
                         help="start after this log position (default 0)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    _filters(listing)
    tail = add_command(actions, "tail", tail_events, "the newest events, then follow",
                       "The newest matching events; with --follow, new ones as they are"
                       " recorded (Ctrl-C stops).\n\n" + FILTERS_HELP)
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many to show (20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    _filters(tail)
    # `events` alone (or with the old flags) lists, as before the subcommands existed.
    events.add_argument("--after", type=int, default=0, help=argparse.SUPPRESS)
    events.add_argument("--limit", type=int, default=100, help=argparse.SUPPRESS)
    events.add_argument("--originator", dest="aggregate", help=argparse.SUPPRESS)
    _filters(events, shown=False)
