"""How much batching tokens into events saves: commits per reply, in one process.

Records the same 512-token reply twice on a real SQLite event store: once with one event
(one commit) per token, once the way the inference actor does it (a commit per 8 tokens),
and prints tokens recorded per second for each and the ratio.

    .venv/bin/python bench/token_commits.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from uuid import uuid4

from domain.application import ChatApplication

TOKENS = 512
BATCH = 8


def record_reply(app: ChatApplication, tokens_per_commit: int) -> float:
    owner = uuid4()
    session_id, _ = app.start_session(owner, "bench", {})
    _, reply_id, _ = app.post_message(session_id, owner, "hello", 1)
    app.change_reply(session_id, lambda s: s.start_reply(reply_id, 10, 0))
    started = time.perf_counter()
    for _ in range(TOKENS // tokens_per_commit):
        text = " word" * tokens_per_commit
        app.change_reply(session_id, lambda s, t=text: s.add_tokens(reply_id, t,
                                                                      tokens_per_commit))
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        app = ChatApplication(env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(Path(tmp) / "events.sqlite"),
            "AGGREGATE_CACHE_MAXSIZE": "100",
        })
        record_reply(app, BATCH)  # warm up
        single = record_reply(app, 1)
        batched = record_reply(app, BATCH)
        app.close()
    print(f"one commit per token:     {TOKENS / single:8.0f} tokens/s ({single * 1000:.0f} ms"
          f" for {TOKENS} tokens)")
    print(f"one commit per {BATCH} tokens:  {TOKENS / batched:8.0f} tokens/s"
          f" ({batched * 1000:.0f} ms)")
    print(f"batching is {single / batched:.1f}x faster; the model makes ~100 tokens/s")


if __name__ == "__main__":
    main()
