"""Command-line replay and audit over a data directory.

    .venv/bin/python -m app.cli events [--after N] [--limit N] [--type T] [--originator ID]
    .venv/bin/python -m app.cli verify     # replay the log into fresh read models, compare
    .venv/bin/python -m app.cli rebuild    # rebuild the read models from position 0

`DATA_DIR` (or --data-dir) selects the data. `rebuild` must run while the server is stopped;
`events` and `verify` are read-only and safe beside a running server.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path
from uuid import UUID

from app.api.admin import event_view
from app.config import Settings
from app.event_log import LoggedEvent
from app.services import event_store_env
from domain.application import ChatApplication
from projections.runner import ProjectionRunner, all_projections


def open_store(settings: Settings) -> ChatApplication:
    if not settings.event_store_path.is_file():
        sys.exit(f"no event store at {settings.event_store_path}")
    return ChatApplication(env=event_store_env(settings))


def events(settings: Settings, args: argparse.Namespace) -> int:
    chat = open_store(settings)
    originator = UUID(args.originator) if args.originator else None
    after, shown = args.after, 0
    while shown < args.limit:
        batch = chat.recorder.select_notifications(after, 500, inclusive_of_start=False)
        if not batch:
            break
        for notification in batch:
            after = notification.id
            logged = LoggedEvent(notification.id, chat.mapper.to_domain_event(notification))
            view = event_view(logged)
            if originator and logged.event.originator_id != originator:
                continue
            if args.type and args.type not in (view["type"], view["type"].split(".")[-1]):
                continue
            print(json.dumps(view, ensure_ascii=False))
            shown += 1
            if shown >= args.limit:
                break
    return 0


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for projection in all_projections() for table in projection.tables
        }
    finally:
        db.close()


def verify(settings: Settings, _args: argparse.Namespace) -> int:
    chat = open_store(settings)
    head = chat.head()
    with tempfile.TemporaryDirectory() as tmp:
        replayed = Path(tmp) / "replayed.sqlite"
        runner = ProjectionRunner(chat, replayed)
        runner.catch_up()
        runner.stop()
        live_runner = ProjectionRunner(chat, settings.read_model_path)
        positions = live_runner.positions()
        live_runner.stop()
        behind = {name: p for name, p in positions.items() if p != head}
        if behind:
            print(f"read models are behind the log head {head}: {behind}; start the server or"
                  " run 'rebuild', then verify again")
            return 1
        fresh, live = dump(replayed), dump(settings.read_model_path)
    differing = [table for table in fresh if fresh[table] != live[table]]
    for table in fresh:
        state = "DIFFERS" if table in differing else "identical"
        print(f"{table:<14} {len(fresh[table]):>8} rows  {state}")
    print(f"{head} events replayed; " + ("read models match the log" if not differing
                                           else "read models do NOT match the log"))
    return 1 if differing else 0


def rebuild(settings: Settings, _args: argparse.Namespace) -> int:
    chat = open_store(settings)
    runner = ProjectionRunner(chat, settings.read_model_path)
    for name in runner.names:
        runner.request_rebuild(name)
    position = runner.catch_up()
    runner.stop()
    print(f"read models rebuilt to position {position}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="defaults to $DATA_DIR or ./data")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("events", help="print events as JSON lines")
    listing.add_argument("--after", type=int, default=0)
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--type", help="e.g. ReplyCompleted or ChatSession.ReplyCompleted")
    listing.add_argument("--originator", help="an aggregate id")
    commands.add_parser("verify", help="replay the log and compare with the read models")
    commands.add_parser("rebuild", help="rebuild the read models (server stopped)")
    args = parser.parse_args(argv)
    settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
    handler = {"events": events, "verify": verify, "rebuild": rebuild}[args.command]
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
