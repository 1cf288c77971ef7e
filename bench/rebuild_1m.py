"""Rebuilding every projection from a million events, and the event browser on that log.

Writes a realistic log (bench/eventlog.py: users signing in, chats, replies streamed as
token batches), then measures, in one run:

1. the reference: reading and decoding every event through the library
   (`select_notifications` + `mapper.to_domain_event`), and the same through the runner's
   own read path (projections/stored_rows.py: the store's rows read with sqlite3, decoded
   with orjson into the same events);
2. the rebuild of every projection the runner keeps (`all_projections()`), into a fresh
   read-model file through the runner's own catch-up; the keyword-search projection is
   timed on its own as well, and the vector index (an embedding per message) is estimated
   from a sample, since it cannot come near the target;
3. where the time goes: CPU per event of each step, on a sample of the log (both read
   paths, then each projection on the runner's);
4. the event browser (app/audit/browse.py) and a chat's timeline (app/event_log.py) on the
   rebuilt read models: each query's median over five runs.

The machine is shared, so the load average is printed next to the figures, and the rebuild
is also given as a multiple of the reference measured in the same run.

    .venv/bin/python bench/rebuild_1m.py [--events 1000000] [--data DIR] [--vectors 64]

`--data DIR` keeps the generated log there and reuses it on the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from eventlog import generate, store  # bench/eventlog.py, beside this script

from app.audit.browse import EventBrowser, EventFilter
from app.audit.progress import Progress
from app.event_log import EventLog
from domain.application import ChatApplication
from projections.base import Projection
from projections.runner import (
    BATCH_SIZE,
    CATCH_UP_BATCH,
    ProjectionRunner,
    _apply_to,
    all_projections,
)
from projections.stored_rows import SQLiteRows, open_source

TARGET_SECONDS = 20.0
QUERY_TARGET_MS = 100.0
SLOW = ("search",)  # timed on their own (and reported separately if they miss the target)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def timed(work: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def read_and_decode(app: ChatApplication) -> int:
    """The reference: every notification read and decoded, in the runner's batch size."""
    after = count = 0
    mapper, recorder = app.mapper, app.recorder
    while True:
        batch = recorder.select_notifications(after, BATCH_SIZE, inclusive_of_start=False)
        if not batch:
            return count
        for notification in batch:
            mapper.to_domain_event(notification)
        count += len(batch)
        after = batch[-1].id


def fast_read_and_decode(app: ChatApplication) -> int:
    """The runner's read path: rows read with sqlite3, decoded by `FastDecoder`."""
    source = open_source(app)
    after = count = 0
    try:
        while True:
            records, _ = source.read(after, CATCH_UP_BATCH)
            if not records:
                return count
            count += len(records)
            after = records[-1].id
    finally:
        source.close()


def read_and_parse_raw(events_path: Path) -> int:
    """A floor below the library's: rows read with plain sqlite3 and their JSON parsed with
    orjson into dicts (no UUID, datetime or event objects): what a runner could approach by
    reading the store itself. ImportError without orjson (it comes with chromadb)."""
    import orjson

    db = sqlite3.connect(f"file:{events_path}?mode=ro", uri=True)
    after = count = 0
    while True:
        rows = db.execute("SELECT rowid, originator_id, originator_version, topic, state"
                          " FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?",
                          (after, BATCH_SIZE)).fetchall()
        if not rows:
            db.close()
            return count
        for row in rows:
            orjson.loads(row[4])
        count += len(rows)
        after = rows[-1][0]


def rebuild(app: ChatApplication, target: Path, projections: list[Projection]) -> int:
    runner = ProjectionRunner(app, target, projections)
    try:
        return runner.catch_up()
    finally:
        runner.stop()


def breakdown(app: ChatApplication, sample: int) -> dict[str, float]:
    """CPU microseconds per event of each step, on the first `sample` events: both read
    paths, then each projection fed as the runner feeds it (batches of CATCH_UP_BATCH)."""
    clock = time.process_time
    costs: dict[str, float] = {}
    started, after = clock(), 0
    notifications: list[Any] = []
    while len(notifications) < sample:
        batch = app.recorder.select_notifications(after, BATCH_SIZE, inclusive_of_start=False)
        if not batch:
            break
        notifications += batch
        after = batch[-1].id
    count = len(notifications)
    costs["library read"] = clock() - started
    started = clock()
    for notification in notifications:
        app.mapper.to_domain_event(notification)
    costs["library decode"] = clock() - started
    del notifications
    source = open_source(app)
    assert isinstance(source, SQLiteRows), "the runner's fast path does not apply here"
    started, after = clock(), 0
    records: list[Any] = []
    while len(records) < count:
        rows = source.rows(after, CATCH_UP_BATCH)
        records += rows
        after = rows[-1].id
    records = records[:count]
    costs["read"] = clock() - started
    started = clock()
    decode = source.decoder.decode
    events = [decode(record) for record in records]
    costs["decode"] = clock() - started
    source.close()
    with tempfile.TemporaryDirectory() as tmp:
        for projection in all_projections():
            db = sqlite3.connect(Path(tmp) / f"{projection.name}.sqlite", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            projection.create(db)
            started = clock()
            for i in range(0, count, CATCH_UP_BATCH):
                db.execute("BEGIN")
                _apply_to(db, {projection.name: projection}, {projection.name: 0},
                          records[i:i + CATCH_UP_BATCH], events[i:i + CATCH_UP_BATCH])
                db.execute("COMMIT")
            costs[projection.name] = clock() - started
            db.close()
    return {name: seconds / count * 1e6 for name, seconds in costs.items()}


def median_ms(query: Callable[[], Any], runs: int = 5) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = query()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def queries(read_models: Path, events_path: Path,
            app: ChatApplication) -> list[tuple[str, float, int]]:
    browser = EventBrowser(read_models, events_path, app.mapper)
    db = sqlite3.connect(read_models)
    head = app.head()
    heavy_user = UUID(db.execute(
        "SELECT u.user_id FROM event_index i JOIN event_users u ON u.id = i.user"
        " GROUP BY i.user ORDER BY COUNT(*) DESC LIMIT 1").fetchone()[0])
    longest_chat = UUID(db.execute(
        "SELECT session_id FROM messages GROUP BY session_id ORDER BY COUNT(*) DESC LIMIT 1"
    ).fetchone()[0])
    middle = db.execute("SELECT at FROM event_index WHERE position = ?",
                        (head // 2,)).fetchone()[0]
    db.close()
    from datetime import UTC, datetime, timedelta
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=middle)
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    cases: list[tuple[str, Callable[[], list[Any]]]] = [
        ("newest 100 events", lambda: browser.select(EventFilter(), limit=100,
                                                     newest_first=True)),
        ("100 events after the middle", lambda: browser.select(EventFilter(), after=head // 2)),
        ("type ReplyCompleted, newest 100", lambda: browser.select(
            EventFilter(types=["ChatSession.ReplyCompleted"]), limit=100, newest_first=True)),
        ("type ReplyCompleted, after the middle", lambda: browser.select(
            EventFilter(types=["ChatSession.ReplyCompleted"]), after=head // 2)),
        ("rare type (User.Registered), newest", lambda: browser.select(
            EventFilter(types=["User.Registered"]), newest_first=True)),
        ("type absent from the log (ReplyFailed)", lambda: browser.select(
            EventFilter(types=["ChatSession.ReplyFailed"]))),
        ("busiest user, newest 100", lambda: browser.select(
            EventFilter(user=heavy_user), newest_first=True)),
        ("busiest user + ReplyCompleted", lambda: browser.select(
            EventFilter(user=heavy_user, types=["ChatSession.ReplyCompleted"]))),
        ("one day in the middle, first 100", lambda: browser.select(
            EventFilter(since=day, until=day + timedelta(days=1)))),
        ("one day + ReplyCompleted", lambda: browser.select(
            EventFilter(since=day, until=day + timedelta(days=1),
                        types=["ChatSession.ReplyCompleted"]))),
        ("longest chat's events (aggregate)", lambda: browser.select(
            EventFilter(aggregate=longest_chat))),
    ]
    results = []
    for label, case in cases:
        ms, found = median_ms(case)
        results.append((label, ms, len(found)))

    async def timeline() -> tuple[float, int]:
        log = await EventLog.open(events_path, app.mapper)
        try:
            times, found = [], []
            for _ in range(5):
                started = time.perf_counter()
                found = await log.of_originator(longest_chat, 0, 1000)
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times), len(found)
        finally:
            await log.close()

    ms, count = asyncio.run(timeline())
    results.append(("timeline: longest chat, first 1000 events", ms, count))
    browser.close()
    return results


def vectors_estimate(read_models: Path, sample: int) -> tuple[float, float, int] | None:
    """(wall and CPU seconds per message, messages in the log), embedding a sample of the
    log's messages the way the vector follower does (16 at a time)."""
    try:
        from app.embeddings import MultilingualE5
    except ImportError:
        return None
    db = sqlite3.connect(read_models)
    total = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    texts = [row[0] for row in db.execute(
        "SELECT content FROM messages ORDER BY position LIMIT ?", (sample,))]
    db.close()
    embed = MultilingualE5()
    embed(texts[:4])  # load the model
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), 16):
        embed(texts[i:i + 16])
    return ((time.perf_counter() - wall) / len(texts), (time.process_time() - cpu) / len(texts),
            total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, help="keep (and reuse) the generated log here")
    parser.add_argument("--sample", type=int, default=200_000,
                        help="events for the per-step breakdown")
    parser.add_argument("--quick", action="store_true",
                        help="only the library reference and the rebuild (no search alone,"
                             " breakdown, vector estimate or queries)")
    parser.add_argument("--vectors", type=int, default=64,
                        help="messages embedded to estimate the vector index (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rebuild-bench-") as tmp:
        data = args.data or Path(tmp) / "data"
        events_path = data / "events.sqlite"
        if not events_path.exists():
            seconds, _, head = timed(lambda: generate(data, args.events))
            print(f"log written: {head:,} events in {seconds:.0f} s ({data})")
        app = store(data)
        head = app.head()
        size = events_path.stat().st_size / 1e6
        print(f"log: {head:,} events, {size:,.0f} MB; {load()}")

        wall, cpu, _ = timed(lambda: read_and_decode(app))
        print(f"reference: read + decode every event (library)  {wall:6.1f} s wall"
              f"  {cpu:6.1f} s CPU  {head / wall:9,.0f} events/s")
        reference, reference_cpu = wall, cpu
        if not args.quick:
            wall, cpu, _ = timed(lambda: fast_read_and_decode(app))
            print(f"the runner's read path: read + decode every event  {wall:6.1f} s wall"
                  f"  {cpu:6.1f} s CPU  {head / wall:9,.0f} events/s")
            try:
                wall, cpu, _ = timed(lambda: read_and_parse_raw(events_path))
                print(f"floor without the library: sqlite3 rows + orjson  {wall:6.1f} s wall"
                      f"  {cpu:6.1f} s CPU  {head / wall:9,.0f} events/s")
            except ImportError:
                pass

        core = [p for p in all_projections() if p.name not in SLOW]
        slow = [p for p in all_projections() if p.name in SLOW]
        read_models = Path(tmp) / "readmodels.sqlite"
        bar = Progress("rebuilding", head)
        wall, cpu, _ = timed(lambda: rebuild(app, read_models, core))
        bar.finish(head)
        verdict = "under" if wall < TARGET_SECONDS else "OVER"
        print(f"rebuild: {', '.join(p.name for p in core)}")
        cpu_verdict = "under" if cpu < TARGET_SECONDS else "OVER"
        print(f"  {wall:6.1f} s wall  {cpu:6.1f} s CPU  {head / wall:9,.0f} events/s"
              f"  {wall / reference:.1f}x the library reference's wall,"
              f" {cpu / reference_cpu:.1f}x its CPU; wall {verdict} the"
              f" {TARGET_SECONDS:.0f} s target, CPU {cpu_verdict} it ({load()})")
        if args.quick:
            app.close()
            return
        for projection in slow:
            wall, cpu, _ = timed(lambda p=projection: rebuild(
                app, Path(tmp) / f"{p.name}.sqlite", [p]))  # type: ignore[misc]
            print(f"  {projection.name} alone (reads and decodes the log again): {wall:6.1f} s"
                  f" wall  {cpu:6.1f} s CPU  {head / wall:9,.0f} events/s")

        costs = breakdown(app, args.sample)
        print(f"CPU per event, first {args.sample:,} events (us): "
              + "  ".join(f"{name} {us:.1f}" for name, us in costs.items()))

        if args.vectors:
            estimate = vectors_estimate(read_models, args.vectors)
            if estimate:
                wall, cpu, messages = estimate
                print(f"vector index, from embedding {args.vectors} of its messages:"
                      f" {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU per message;"
                      f" {messages:,} messages: ~{messages * wall / 60:.0f} min wall,"
                      f" ~{messages * cpu / 60:.0f} min CPU")

        print(f"event browser and timeline, median of 5 (target {QUERY_TARGET_MS:.0f} ms):")
        for label, ms, found in queries(read_models, events_path, app):
            flag = "" if ms < QUERY_TARGET_MS else "  OVER"
            print(f"  {label:<44} {ms:7.1f} ms  ({found} events){flag}")
        print(f"({load()})")
        app.close()


if __name__ == "__main__":
    main()
