"""Keyword search, SQLite (FTS5, trigram tokenizer) vs PostgreSQL (pg_trgm, bm25 in Python),
in one run over the same messages.

Both read models are written by `SearchProjection`'s own handlers from the same stream of
events (sessions of 20 owners, Korean messages of 5-60 words from a vocabulary of common
and rare words), then each query is asked of both through `keyword_search` as request
handlers ask it (the async read connection): the median time of `--rounds` rounds, and the
two stores' answers compared (the same messages in the same order, or the run fails).
Query kinds: a common word, a rare word, two words, a 1-character word (LIKE over the
owner's messages), a word found nowhere; and `SELECT 1`, what any query costs.

PostgreSQL is a throwaway cluster started here (tests/postgres.py: initdb/pg_ctl, a unix
socket in a temporary directory; as root it runs as `nobody`).

    nice -n 10 .venv/bin/python bench/search_stores.py                 # 20,000 messages
    nice -n 10 .venv/bin/python bench/search_stores.py --messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from projections.database import (  # noqa: E402
    PostgresReadModels,
    ReadModels,
    SQLiteReadModels,
)
from projections.search import SearchProjection, keyword_search  # noqa: E402
from tests.postgres import PostgresCluster  # noqa: E402

COMMON = ["날씨가", "맑고", "따뜻합니다", "강아지", "김치찌개", "서울", "오늘", "내일", "프로젝트",
          "코드", "문장", "질문", "답변", "Report", "weather"]
OWNERS = 20
SESSIONS = 1000
QUERIES = ["날씨가", "w1234", "김치찌개 report", "날", "없는단어"]


def corpus(messages: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = COMMON + [f"w{i}" for i in range(2000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
            for _ in range(messages)]


def write(models: ReadModels, texts: list[str]) -> float:
    """The read model through the projection's handlers, 1,000 events a transaction."""
    projection = SearchProjection()
    db = models.connect()
    started = time.perf_counter()
    try:
        projection.create(db)
        db.execute("BEGIN")
        for i in range(SESSIONS):
            projection.on_ChatSession_Started(db, SimpleNamespace(
                originator_id=UUID(int=i + 1), owner_id=f"owner{i % OWNERS}", title="대화",
                config={}), i + 1)
        for n, text in enumerate(texts):
            position = SESSIONS + n + 1
            projection.on_ChatSession_UserMessagePosted(db, SimpleNamespace(
                originator_id=UUID(int=n % SESSIONS + 1), message_id=UUID(int=position),
                content=text), position)
            if n % 1000 == 999:
                db.execute("COMMIT")
                db.execute("BEGIN")
        db.execute("COMMIT")
    finally:
        db.close()
    return time.perf_counter() - started


async def ask(models: ReadModels, rounds: int) -> dict[str, tuple[float, list[Any]]]:
    read = await models.connect_read()
    found: dict[str, tuple[float, list[Any]]] = {}
    try:
        times = []
        for _ in range(rounds):  # what any query costs: the connection's round trip
            started = time.perf_counter()
            await read.execute_fetchall("SELECT 1")
            times.append(time.perf_counter() - started)
        found["SELECT 1"] = (statistics.median(times) * 1000, [])
        for q in QUERIES:
            times, answer = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                answer = await keyword_search(read, "owner3", q, 20)
                times.append(time.perf_counter() - started)
            found[q] = (statistics.median(times) * 1000, answer)
    finally:
        await read.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    texts = corpus(args.messages, seed=1)
    cluster = PostgresCluster().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            stores: dict[str, ReadModels] = {
                "sqlite": SQLiteReadModels(Path(folder) / "read.sqlite"),
                "postgresql": PostgresReadModels(cluster.create_database("search")),
            }
            written = {name: write(models, texts) for name, models in stores.items()}
            pg = stores["postgresql"].connect()
            pg.execute("VACUUM ANALYZE search_text")
            pg.execute("VACUUM ANALYZE search_messages")
            pg.close()
            results = {name: asyncio.run(ask(models, args.rounds))
                       for name, models in stores.items()}
    finally:
        cluster.stop()

    print(f"{args.messages} messages, {OWNERS} owners, {SESSIONS} sessions; median of "
          f"{args.rounds} rounds; owner3's search, limit 20")
    print(f"written through the handlers: sqlite {written['sqlite']:.1f} s,"
          f" postgresql {written['postgresql']:.1f} s")
    print(f"{'query':<18}{'found':>6}{'sqlite ms':>12}{'postgresql ms':>15}{'PG/SQLite':>11}")
    for q in ["SELECT 1", *QUERIES]:
        lite_ms, lite = results["sqlite"][q]
        pg_ms, on_pg = results["postgresql"][q]
        if on_pg != lite:
            raise SystemExit(f"the stores' answers differ for {q!r}")
        print(f"{q:<18}{len(lite):>6}{lite_ms:>12.1f}{pg_ms:>15.1f}{pg_ms / lite_ms:>10.1f}x")
    print("checked: both stores found the same messages in the same order")


if __name__ == "__main__":
    main()
