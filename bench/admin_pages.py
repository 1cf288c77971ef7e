"""The admin pages on a million-event log: the event browser and a chat's time travel.

Each case is the admin use case (app/usecases/admin.py) plus the HTML the page renders,
timed next to its reference measured in the same run: the bare index query beneath it
(app/audit/browse.py for the event browser; for time travel, reading the chat's events and
decoding them with the library's mapper, as `EventLog.of_originator` did before it took the
runner's faster decoder, projections/stored_rows.py). The target is under 100 ms per
answer. Time travel is timed cold (the chat opened for the first time: every event read
and decoded) and warm (scrubbing: the decoded events are kept, so a step only folds). The
log is the realistic one of bench/eventlog.py; its read models are built once by the
runner (without the keyword-search projection, which these pages do not read).

    .venv/bin/python bench/admin_pages.py --data DIR [--events 1000000]

`--data DIR` keeps the log and read models there and reuses them on the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventlog import generate, store  # bench/eventlog.py, beside this script

from app.audit.browse import EventBrowser, EventFilter
from app.event_log import EventLog
from app.pages.admin import pretty, pretty_data
from app.pages.render import fragment
from app.services import Services
from app.usecases import admin
from projections.event_index import EventIndexProjection
from projections.hashchain import HashChainProjection
from projections.messages import MessagesProjection
from projections.runner import ProjectionRunner
from projections.sessions import SessionsProjection
from projections.users import UsersProjection

TARGET_MS = 100.0
RUNS = 7


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


async def median_ms(work: Callable[[], Awaitable[Any]]) -> float:
    await work()  # warm the page cache once: every case starts equal
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def read_models(data: Path, app: Any) -> Path:
    path = data / "readmodels.sqlite"
    runner = ProjectionRunner(app, path, [UsersProjection(), SessionsProjection(),
                                          MessagesProjection(), HashChainProjection(),
                                          EventIndexProjection()])
    try:
        started = time.perf_counter()
        runner.catch_up()
        print(f"read models up to date ({time.perf_counter() - started:.0f} s): {path}")
    finally:
        runner.stop()
    return path


async def run(data: Path, app: Any, read_path: Path) -> None:
    events_path = data / "events.sqlite"
    import aiosqlite

    event_log = await EventLog.open(events_path, app.mapper)
    library_log = await EventLog.open(events_path, app.mapper, fast_decode=False)
    read_db = await aiosqlite.connect(read_path)
    read_db.row_factory = aiosqlite.Row
    services = cast(Services, SimpleNamespace(
        settings=SimpleNamespace(read_model_path=read_path, event_store_path=events_path,
                                 event_store=""),  # "": the SQLite file
        chat=app, event_log=event_log, read_db=read_db))
    db = sqlite3.connect(read_path)
    longest = str(db.execute(
        "SELECT session_id FROM messages GROUP BY session_id ORDER BY COUNT(*) DESC LIMIT 1"
    ).fetchone()[0])
    owner = str(db.execute("SELECT owner_id FROM sessions WHERE id = ?",
                           (longest,)).fetchone()[0])
    db.close()
    browser = EventBrowser(read_path, events_path, app.mapper)
    head = browser.log_head()
    positions = [e.position for e in await admin.session_events(services, longest)]
    print(f"log head {head:,}; the longest chat has {len(positions):,} events; {load()}")

    async def page(query: admin.EventQuery, **kw: Any) -> str:
        shown = await admin.browse_events(services, query, **kw)
        return fragment("admin/_event_rows.html", events=[pretty(v) for v in shown.events])

    async def frame(step: int | None) -> str:
        f = await admin.frame(services, longest, step=step)
        return fragment("admin/_frame.html", f=f, sync=True, session_id=longest,
                        event_json=pretty_data(f.event))

    async def cold_frame(step: int | None) -> str:
        admin.SESSION_EVENTS = admin.SessionEventCache()  # as if never opened before
        return await frame(step)

    async def bare(where: EventFilter, **kw: Any) -> None:
        await asyncio.to_thread(browser.select, where, **kw)

    async def chat_events(upto: int) -> None:
        after = 0
        while True:
            got = await library_log.of_originator(UUID(longest), after, admin.EVENT_PAGE)
            for logged in got:  # read lazily: decode each, as before
                logged.event  # noqa: B018
            if len(got) < admin.EVENT_PAGE or got[-1].position > upto:
                return
            after = got[-1].position

    completed = ["ChatSession.ReplyCompleted"]
    cases: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = [
        ("events: newest page (50)",
         lambda: page(admin.EventQuery()),
         lambda: bare(EventFilter(), limit=50, newest_first=True)),
        ("events: page after the middle",
         lambda: page(admin.EventQuery(), after=head // 2),
         lambda: bare(EventFilter(), after=head // 2, limit=50)),
        ("events: type ReplyCompleted, newest",
         lambda: page(admin.EventQuery(type="ReplyCompleted")),
         lambda: bare(EventFilter(types=completed), limit=50, newest_first=True)),
        ("events: one user + ReplyCompleted",
         lambda: page(admin.EventQuery(type="ReplyCompleted", user=owner)),
         lambda: bare(EventFilter(types=completed, user=UUID(owner)), limit=50,
                      newest_first=True)),
        ("events: one aggregate (longest chat)",
         lambda: page(admin.EventQuery(aggregate=longest)),
         lambda: bare(EventFilter(aggregate=UUID(longest)), limit=50, newest_first=True)),
        ("time travel: longest chat opened (cold)",
         lambda: cold_frame(None), lambda: chat_events(positions[-1])),
        ("time travel: longest chat, last event",
         lambda: frame(None), lambda: chat_events(positions[-1])),
        ("time travel: scrubbed to the middle",
         lambda: frame(len(positions) // 2),
         lambda: chat_events(positions[len(positions) // 2])),
        ("timeline API: longest chat at the middle",
         lambda: admin.timeline(services, longest, positions[len(positions) // 2]),
         lambda: chat_events(positions[-1])),
    ]
    print(f"\n{'case':42} {'page ms':>9} {'reference ms':>13} {'ratio':>6}  target")
    for label, case, reference in cases:
        reference_ms = await median_ms(reference)
        case_ms = await median_ms(case)
        verdict = "ok" if case_ms < TARGET_MS else "MISSED"
        print(f"{label:42} {case_ms:9.1f} {reference_ms:13.1f} {case_ms / reference_ms:6.1f}"
              f"  {verdict} (<{TARGET_MS:.0f} ms)")
    browser.close()
    await event_log.close()
    await library_log.close()
    await read_db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="the log and read models live (and are reused) here")
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    if not (args.data / "events.sqlite").exists():
        started = time.perf_counter()
        head = generate(args.data, args.events)
        print(f"log written: {head:,} events in {time.perf_counter() - started:.0f} s")
    app = store(args.data)
    try:
        asyncio.run(run(args.data, app, read_models(args.data, app)))
    finally:
        app.close()


if __name__ == "__main__":
    main()
