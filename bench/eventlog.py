"""A realistic event log of any size, written straight into a real SQLite event store.

Users register and sign in, open chats, and exchange messages with the model: each reply is
queued, started, streamed as token batches (8 tokens per event, 50 ms apart, as the actor
commits them) and completed. The events come from the real aggregates, with timestamps set
on a simulated clock (months of use in seconds), and are stored with the application's own
mapper, a few thousand per transaction.

    .venv/bin/python bench/eventlog.py DATA_DIR [--events N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate

from domain.application import ChatApplication
from domain.sessions import ChatSession
from domain.users import AdminSeat, User, UsernameIndex

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WORDS = ("안녕하세요", "오늘", "날씨가", "정말", "좋네요", "the", "model", "answers", "질문",
         "에", "대해", "설명해", "드릴게요", "event", "sourcing", "로그", "는", "append-only",
         "입니다", "SQLite", "검색", "요약", "번역", "코드", "예시", ".", ",", "!")
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
CONFIG = {"system_prompt": "You are a helpful assistant.", "temperature": 0.7,
          "top_p": 0.95, "max_tokens": 512}


class Clock:
    """Simulated time: each event a little after the one before."""

    def __init__(self) -> None:
        self.now = START

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def stamped(aggregate: Aggregate, clock: Clock, gaps: Iterable[float]) -> list[Any]:
    events = list(aggregate.collect_events())
    for event, gap in zip(events, gaps, strict=True):
        object.__setattr__(event, "timestamp", clock.advance(gap))
    return events


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class LogWriter:
    def __init__(self, app: ChatApplication, target: int, seed: int = 7) -> None:
        self.app, self.target = app, target
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.buffer: list[Any] = []
        self.written = 0
        self.users: list[User] = []
        self.sessions: list[ChatSession] = []

    def flush(self) -> None:
        mapper = self.app.mapper
        self.app.recorder.insert_events([mapper.to_stored_event(e) for e in self.buffer])
        self.written += len(self.buffer)
        self.buffer = []

    def emit(self, events: list[Any]) -> None:
        self.buffer.extend(events)
        if len(self.buffer) >= 5000:
            self.flush()

    @property
    def count(self) -> int:
        return self.written + len(self.buffer)

    def new_user(self) -> None:
        n = len(self.users)
        name = f"사용자{n:04d}"
        user = User(username=name, email=f"user{n}@example.com", password_hash=PASSWORD_HASH,
                    is_admin=n == 0)
        user.log_in(f"{uuid4().hex}{uuid4().hex}", "127.0.0.1")
        index = UsernameIndex(username=name, user_id=user.id)
        self.emit(stamped(user, self.clock, (60.0, 0.3)))
        self.emit(stamped(index, self.clock, (0.0,)))
        if n == 0:
            self.emit(stamped(AdminSeat(user_id=user.id), self.clock, (0.0,)))
        self.users.append(user)

    def new_session(self) -> None:
        owner = self.rng.choice(self.users)
        session = ChatSession(owner_id=owner.id, title="", config=CONFIG)
        self.emit(stamped(session, self.clock, (5.0,)))
        self.sessions.append(session)

    def exchange(self) -> None:
        """One user message and its reply: 4 + ceil(tokens / 8) events."""
        session = self.rng.choice(self.sessions[-200:])  # recent chats are the busy ones
        message_id, reply_id = uuid4(), uuid4()
        session.post_user_message(message_id, sentence(self.rng, self.rng.randint(5, 40)))
        session.queue_reply(reply_id, message_id, 1)
        session.start_reply(reply_id, prompt_tokens=self.rng.randint(50, 900), dropped_turns=0)
        tokens = self.rng.randint(60, 400)
        batches = (tokens + 7) // 8
        for i in range(batches):
            count = min(8, tokens - 8 * i)
            session.add_tokens(reply_id, " " + sentence(self.rng, count), count)
        session.complete_reply(
            reply_id, token_count=tokens, processing_time=round(batches * 0.05, 3),
            time_to_first_token=0.13, model_version="SmolLM2-135M-Instruct.Q4_1",
            model_params={"temperature": 0.7, "top_p": 0.95, "max_tokens": 512},
            prompt_template="chatml", finish_reason="stop")
        pending = len(session.pending_events)
        # The first may rename the chat; then message, queued, started, tokens, completed.
        gaps = [self.rng.uniform(5, 600)] + [0.0] * (pending - batches - 2) + [0.13]
        gaps += [0.05] * (batches - 1) + [0.02]
        self.emit(stamped(session, self.clock, gaps))

    def write(self, progress: bool = True) -> None:
        for _ in range(20):
            self.new_user()
        self.new_session()
        last = 0.0
        while self.count < self.target:
            roll = self.rng.random()
            if roll < 0.004:
                self.new_user()
            elif roll < 0.15:
                self.new_session()
            else:
                self.exchange()
            if progress and time.monotonic() - last > 1:
                last = time.monotonic()
                print(f"\rwriting the log: {self.count:,}/{self.target:,} events",
                      end="", file=sys.stderr, flush=True)
        self.flush()
        if progress:
            print(f"\rwriting the log: {self.written:,} events" + " " * 20, file=sys.stderr)


def store(data_dir: Path) -> ChatApplication:
    data_dir.mkdir(parents=True, exist_ok=True)
    return ChatApplication(env={
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(data_dir / "events.sqlite"),
        "SQLITE_LOCK_TIMEOUT": "10",
    })


def generate(data_dir: Path, events: int) -> int:
    """Write a log of at least `events` events into `data_dir` (empty); returns its head."""
    app = store(data_dir)
    try:
        if app.head():
            raise SystemExit(f"{data_dir} already holds an event log")
        LogWriter(app, events).write()
        return app.head()
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    head = generate(args.data_dir, args.events)
    print(f"{head:,} events in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
