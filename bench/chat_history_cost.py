"""A chat's cost must not grow with its history (issue: "one home for the use cases").

For chats of 50, 500 and 2,000 messages, on a real SQLite event store with the aggregate
cache on, prints:
- the median cost of one token-batch commit in that chat's next reply;
- the first post to that chat after a restart (the chat is loaded from its latest
  snapshot plus the events since);
and each figure's ratio to the 50-message chat, measured in the same run. Target: every
ratio within 1.5x.

    .venv/bin/python bench/chat_history_cost.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from uuid import UUID, uuid4

from domain.application import ChatApplication

SIZES = (50, 500, 2000)  # messages: a user message and its reply are two
BATCHES_PER_REPLY = 6
MEASURED_BATCHES = 200
RESTARTS = 5
OUTCOME = {
    "token_count": 48, "processing_time": 0.5, "time_to_first_token": 0.05,
    "model_version": "bench", "model_params": {}, "prompt_template": "chatml:bench",
    "finish_reason": "stop",
}


def open_app(path: Path) -> ChatApplication:
    return ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(path), "AGGREGATE_CACHE_MAXSIZE": "1000"})


def answer(app: ChatApplication, session_id: UUID, owner: UUID, batches: int) -> UUID:
    _, reply_id, _ = app.post_message(session_id, owner, "서울의 날씨는 어때요? " * 8, 1)
    app.change_reply(session_id, lambda s: s.start_reply(reply_id, 100, 0))
    for _ in range(batches):
        app.change_reply(session_id, lambda s: s.add_tokens(reply_id, " 맑고 따뜻합니다" * 4, 8))
    return reply_id


def build_chat(app: ChatApplication, messages: int) -> tuple[UUID, UUID]:
    owner = uuid4()
    session_id, _ = app.start_session(owner, "bench", {"temperature": 0.7})
    for _ in range(messages // 2):
        reply_id = answer(app, session_id, owner, BATCHES_PER_REPLY)
        app.change_reply(session_id, lambda s, r=reply_id: s.complete_reply(r, **OUTCOME))
    return owner, session_id


def token_batch_ms(app: ChatApplication, session_id: UUID, owner: UUID) -> float:
    reply_id = answer(app, session_id, owner, 0)
    app.change_reply(session_id, lambda s: s.start_reply(reply_id, 100, 0))
    costs = []
    for _ in range(MEASURED_BATCHES):
        started = time.perf_counter()
        app.change_reply(session_id, lambda s: s.add_tokens(reply_id, " 맑음" * 8, 8))
        costs.append(time.perf_counter() - started)
    app.change_reply(session_id, lambda s: s.complete_reply(reply_id, **OUTCOME))
    return statistics.median(costs) * 1000


def first_post_after_restart_ms(path: Path, session_id: UUID, owner: UUID) -> float:
    costs = []
    for _ in range(RESTARTS):
        app = open_app(path)
        started = time.perf_counter()
        _, reply_id, _ = app.post_message(session_id, owner, "다시 시작해도 빠른가요?", 1)
        costs.append(time.perf_counter() - started)
        app.change_reply(session_id, lambda s, r=reply_id: s.cancel_reply(r))
        app.close()
    return statistics.median(costs) * 1000


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        warm = open_app(Path(tmp) / "warm-up.sqlite")  # imports, caches, the disk
        owner, session_id = build_chat(warm, 10)
        token_batch_ms(warm, session_id, owner)
        warm.close()
        for size in SIZES:
            path = Path(tmp) / f"events-{size}.sqlite"
            app = open_app(path)
            owner, session_id = build_chat(app, size)
            events = app.head()
            batch = token_batch_ms(app, session_id, owner)
            app.close()
            restart = first_post_after_restart_ms(path, session_id, owner)
            rows.append((size, events, batch, restart))
            print(f"built {size} messages ({events} events)", flush=True)
    base_batch, base_restart = rows[0][2], rows[0][3]
    print()
    print(f"{'messages':>8} {'events':>7} {'token batch ms':>15} {'ratio':>6}"
          f" {'first post after restart ms':>28} {'ratio':>6}")
    for size, events, batch, restart in rows:
        print(f"{size:>8} {events:>7} {batch:>15.3f} {batch / base_batch:>6.2f}"
              f" {restart:>28.3f} {restart / base_restart:>6.2f}")
    worst = max(max(b / base_batch, r / base_restart) for _, _, b, r in rows)
    print(f"\nworst ratio to the 50-message chat: {worst:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
