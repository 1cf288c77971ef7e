"""Projections into SQLite vs PostgreSQL read models, in one run on the same log.

The log is bench/eventlog.py's realistic chats in a SQLite event store, read the same way
by both runners (the runner's fast read path), so only where the read models live differs:
a SQLite file (WAL, `synchronous=NORMAL`) or the schema `read_models` of a throwaway
PostgreSQL cluster started here (tests/postgres.py: a unix socket, `fsync=off` since read
models need not wait for the disk either, commits synchronous). Measured:

1. catch-up from position 0 (every projection, batches of 5,000 events): events/s;
2. following the log as the server does: one token batch appended, then one catch-up
   (one transaction); the two runners take turns on the same events: ms per catch-up;
3. a rebuild of every projection beside the live read models, swapped in (PostgreSQL: a
   schema of its own copied in by DELETE + INSERT ... SELECT in one transaction);
4. PostgreSQL only, two runners on one database: a follower's lag, from the leader's
   commit (its catch-up returning) to the follower's listener hearing the position
   (the leader's NOTIFY, then the follower reads the positions).

    .venv/bin/python bench/projections_stores.py [--events 50000] [--follow 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventlog import generate, store  # noqa: E402  (bench/, beside this script)

from domain.application import ChatApplication  # noqa: E402
from projections.database import PostgresReadModels  # noqa: E402
from projections.runner import ProjectionRunner  # noqa: E402
from tests.postgres import PostgresCluster  # noqa: E402

CONFIG = {"system_prompt": "You are a helpful assistant.", "temperature": 0.7,
          "top_p": 0.95, "max_tokens": 512}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"


class Appender:
    """One chat whose reply streams token batches: each `one()` commits one event."""

    def __init__(self, chat: ChatApplication) -> None:
        self.chat = chat
        user = chat.register_user("벤치", "bench@example.com", "hash")
        self.session_id, _ = chat.start_session(user.id, "벤치마크", CONFIG)
        _, self.reply_id, _ = chat.post_message(self.session_id, user.id, "안녕하세요", 1)
        chat.change_reply(self.session_id, lambda s: s.start_reply(self.reply_id, 10, 0))

    def one(self) -> None:
        self.chat.change_reply(self.session_id,
                               lambda s: s.add_tokens(self.reply_id, "토큰 여덟 개", 8))


class Heard:
    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.changed = threading.Condition()

    def __call__(self, position: int) -> None:
        with self.changed:
            self.at.setdefault(position, time.perf_counter())
            self.changed.notify_all()

    def wait(self, position: int) -> float:
        with self.changed:
            self.changed.wait_for(lambda: position in self.at, 30)
            return self.at[position]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--follow", type=int, default=300, help="single-event catch-ups")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-projections-"))
    cluster = PostgresCluster().start()
    try:
        head = generate(work / "log", args.events)
        chat = store(work / "log")
        url = cluster.create_database("bench")
        print(f"log: {head:,} events; {load()}")

        on_sqlite = ProjectionRunner(chat, work / "read.sqlite")
        on_pg = ProjectionRunner(chat, PostgresReadModels(url))
        seconds = {}
        for name, runner in (("SQLite", on_sqlite), ("PostgreSQL", on_pg)):
            seconds[name], reached = timed(runner.catch_up)
            assert reached == head
            print(f"1. catch-up from 0, {name}: {seconds[name]:.1f} s,"
                  f" {head / seconds[name]:,.0f} events/s")
        print(f"   PostgreSQL / SQLite: {seconds['PostgreSQL'] / seconds['SQLite']:.2f}x")

        appender = Appender(chat)
        on_sqlite.catch_up()
        on_pg.catch_up()
        follow: dict[str, list[float]] = {"SQLite": [], "PostgreSQL": []}
        for _ in range(args.follow):
            appender.one()
            for name, runner in (("SQLite", on_sqlite), ("PostgreSQL", on_pg)):
                spent, _ = timed(runner.catch_up)
                follow[name].append(spent)
        for name, values in follow.items():
            print(f"2. one new event, one catch-up, {name}: {ms(values)}")
        ratio = statistics.median(follow["PostgreSQL"]) / statistics.median(follow["SQLite"])
        print(f"   PostgreSQL / SQLite (medians): {ratio:.2f}x")

        for name, runner in (("SQLite", on_sqlite), ("PostgreSQL", on_pg)):
            for projection in runner.names:
                runner.request_rebuild(projection)
            spent, _ = timed(runner.catch_up)
            print(f"3. rebuild of every projection, swapped in, {name}: {spent:.1f} s")
        on_sqlite.stop()

        follower = ProjectionRunner(chat, PostgresReadModels(url))
        heard = Heard()
        follower.add_listener(heard)
        follower.catch_up()
        assert on_pg.is_leader and not follower.is_leader
        follower.start()
        lags = []
        for _ in range(args.follow):
            appender.one()
            position = on_pg.catch_up()
            committed = time.perf_counter()
            lags.append(max(0.0, heard.wait(position) - committed))
        print(f"4. PostgreSQL follower's lag behind the leader's commit: {ms(lags)}")
        follower.stop()
        on_pg.stop()
        chat.close()
        print(load())
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
