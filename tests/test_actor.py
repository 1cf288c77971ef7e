"""The inference actor in-process: the real model, a real SQLite event store."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from app.config import Settings
from app.conversations import ConversationReader
from app.inference.actor import InferenceActor, Tuning
from app.inference.engine import Finished, PreparedPrompt, SamplingParams, Token, Turn
from app.inference.jobs import MODEL_FAILED
from app.inference.llama_engine import LlamaEngine
from domain.application import ChatApplication
from projections.runner import ProjectionRunner

CONFIG = {"system_prompt": "You are a helpful assistant.", "temperature": 0.0, "top_p": 0.95,
          "max_tokens": 32, "model": "test"}


@pytest.fixture(scope="module")
def engine() -> LlamaEngine:
    settings = Settings()
    return LlamaEngine(settings.model_path, n_ctx=1024, n_threads=2, n_gpu_layers=0)


Job = tuple[UUID, UUID, int]  # session, reply, position of its queueing


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[ChatApplication]:
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(tmp_path / "events.sqlite")})
    yield app
    app.close()


@pytest.fixture
def runner(chat: ChatApplication, tmp_path: Path) -> Iterator[ProjectionRunner]:
    """The read models the actor reads its conversations from, following the log."""
    runner = ProjectionRunner(chat, tmp_path / "readmodels.sqlite")
    chat.add_head_listener(runner.wake)
    runner.start()
    yield runner
    runner.stop()


def make_actor(chat: ChatApplication, runner: ProjectionRunner, engine: Any,
               timeout: float = 60) -> InferenceActor:
    reader = ConversationReader(chat, runner, runner.path, n_ctx=1024)
    actor = InferenceActor(chat, reader, Tuning(max_queue=4, timeout=timeout,
                                                flush_interval=0.05, flush_count=8))
    actor.engine = engine
    return actor


def queue(chat: ChatApplication, content: str, **config: Any) -> Job:
    owner = uuid4()
    session_id, _ = chat.start_session(owner, "t", {**CONFIG, **config})
    _, reply_id, position = chat.post_message(session_id, owner, content, 1)
    return session_id, reply_id, position


async def run_until_idle(actor: InferenceActor, jobs: list[Job]) -> None:
    for session_id, reply_id, position in jobs:
        actor.enqueue(session_id, reply_id, position)
    task = asyncio.create_task(actor.run())
    try:
        for _ in range(1200):
            await asyncio.sleep(0.05)
            if not actor.queue_depth and not actor.generating:
                return
        raise AssertionError("the actor did not finish its jobs")
    finally:
        task.cancel()


def reply_of(runner: ProjectionRunner, _session_id: UUID, reply_id: UUID,
             _position: int = 0) -> dict[str, Any]:
    runner.catch_up()
    db = sqlite3.connect(runner.path)
    db.row_factory = sqlite3.Row
    try:
        row = db.execute("SELECT status, content FROM messages WHERE id = ?",
                         (str(reply_id),)).fetchone()
    finally:
        db.close()
    return dict(row)


def events_of(chat: ChatApplication, session_id: UUID) -> list[Any]:
    stored = chat.recorder.select_events(session_id)
    return [chat.mapper.to_domain_event(s) for s in stored]


def test_generates_and_records_completion(
    chat: ChatApplication, runner: ProjectionRunner, engine: LlamaEngine
) -> None:
    job = queue(chat, "Say hello.")
    asyncio.run(run_until_idle(make_actor(chat, runner, engine), [job]))
    reply = reply_of(runner, *job)
    assert reply["status"] == "complete" and reply["content"]
    completed = events_of(chat, job[0])[-1]
    assert type(completed).__name__ == "ReplyCompleted"
    assert completed.model_version == engine.info.id
    assert completed.prompt_template.startswith("gguf:")
    assert completed.finish_reason in ("stop", "length")
    assert completed.token_count <= 32 and completed.processing_time > 0
    pieces = [e for e in events_of(chat, job[0]) if type(e).__name__ == "TokensGenerated"]
    assert [p.index for p in pieces] == list(range(len(pieces)))
    assert "".join(p.text for p in pieces) == completed.content
    assert sum(p.token_count for p in pieces) <= completed.token_count


def test_too_long_for_the_context_fails_clearly(chat: ChatApplication, runner: ProjectionRunner,
                                                engine: LlamaEngine) -> None:
    job = queue(chat, "word " * 3000)
    asyncio.run(run_until_idle(make_actor(chat, runner, engine), [job]))
    failed = events_of(chat, job[0])[-1]
    assert type(failed).__name__ == "ReplyFailed" and failed.code == "context_too_long"
    assert "1024" in failed.message


def test_old_turns_are_dropped_to_fit(
    chat: ChatApplication, runner: ProjectionRunner, engine: LlamaEngine
) -> None:
    owner = uuid4()
    session_id, _ = chat.start_session(owner, "t", {**CONFIG, "max_tokens": 16})
    for n in range(4):
        _, reply_id, _ = chat.post_message(session_id, owner, f"turn {n}: " + "long " * 300, 1)
        chat.change_reply(session_id, lambda s, r=reply_id: s.cancel_reply(r))
    _, reply_id, position = chat.post_message(session_id, owner, "And now, a short answer?", 1)
    asyncio.run(run_until_idle(make_actor(chat, runner, engine),
                               [(session_id, reply_id, position)]))
    started = next(e for e in events_of(chat, session_id)
                   if type(e).__name__ == "ReplyStarted" and e.reply_id == reply_id)
    assert started.dropped_turns >= 1 and started.prompt_tokens + 16 <= 1024
    assert reply_of(runner, session_id, reply_id)["status"] == "complete"


def test_a_dropped_turn_recalled_by_the_index_is_in_the_prompt_and_the_metadata(
    chat: ChatApplication, runner: ProjectionRunner, engine: LlamaEngine
) -> None:
    """The vector index is replaced by a fixed answer (what it would find is tested in
    tests/test_search.py); the actor, the reader and the real model are real."""
    owner = uuid4()
    session_id, _ = chat.start_session(owner, "t", {**CONFIG, "max_tokens": 16})
    first, _, _ = chat.post_message(session_id, owner, "내 고양이 이름은 나비야. " * 60, 1)
    for n in range(3):
        _, reply_id, _ = chat.post_message(session_id, owner, f"turn {n}: " + "long " * 300, 1)
        chat.change_reply(session_id, lambda s, r=reply_id: s.cancel_reply(r))
    _, reply_id, position = chat.post_message(session_id, owner, "내 고양이 이름이 뭐였지?", 1)
    actor = make_actor(chat, runner, engine)
    reader: Any = actor._conversations
    asked: list[list[str]] = []

    def recall(_session: UUID, _reply: UUID, query: str) -> Any:
        assert query == "내 고양이 이름이 뭐였지?"

        def found(kept: Any) -> list[tuple[str, str, str]]:
            asked.append(list(kept))
            return [(str(first), "user", "내 고양이 이름은 나비야.")]
        return found

    reader.recall = recall
    asyncio.run(run_until_idle(actor, [(session_id, reply_id, position)]))
    completed = next(e for e in events_of(chat, session_id)
                     if type(e).__name__ == "ReplyCompleted" and e.reply_id == reply_id)
    assert completed.model_params["recalled_message_ids"] == [str(first)]
    assert completed.model_params["dropped_turns"] >= 1
    assert asked and str(first) not in asked[0]  # the dropped turn was not in the prompt


def test_timeout_fails_and_keeps_the_text(
    chat: ChatApplication, runner: ProjectionRunner, engine: LlamaEngine
) -> None:
    job = queue(chat, "Write a long story about the sea.", max_tokens=500, temperature=0.9)
    asyncio.run(run_until_idle(make_actor(chat, runner, engine, timeout=0.3), [job]))
    failed = events_of(chat, job[0])[-1]
    assert type(failed).__name__ == "ReplyFailed" and failed.code == "timeout"
    assert reply_of(runner, *job)["content"], "the text written before the timeout stays"


class BrokenEngine:
    """A fake engine that fails mid-reply: the real model cannot be made to raise on demand."""

    def __init__(self, real: LlamaEngine) -> None:
        self.info = real.info
        self._real = real

    def prepare(self, system_prompt: str, history: list[Turn], max_tokens: int) -> PreparedPrompt:
        return self._real.prepare(system_prompt, history, max_tokens)

    def stream(self, prompt: PreparedPrompt, params: SamplingParams
               ) -> Iterator[Token | Finished]:
        yield Token("partial ")
        raise RuntimeError("GPU fell off the bus")


def test_a_model_error_fails_the_reply_and_the_actor_goes_on(
    chat: ChatApplication, runner: ProjectionRunner, engine: LlamaEngine
) -> None:
    actor = make_actor(chat, runner, BrokenEngine(engine))
    broken = queue(chat, "Hello?")
    asyncio.run(run_until_idle(actor, [broken]))
    failed = events_of(chat, broken[0])[-1]
    assert type(failed).__name__ == "ReplyFailed" and failed.code == "generation_failed"
    # The user is told the model failed; the exception (internals) stays in the log.
    assert failed.message == MODEL_FAILED and "GPU" not in failed.message
    assert reply_of(runner, *broken)["content"] == "partial "

    actor.engine = engine
    working = queue(chat, "Hello again?")
    asyncio.run(run_until_idle(actor, [working]))
    assert reply_of(runner, *working)["status"] == "complete"
