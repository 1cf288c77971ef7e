"""The inference actor feeding the batching engine: the real model, real SQLite files.

Replies of several chats decode together and are recorded like any reply; users take turns
in the queue; a chat's next turn reuses its KV state.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from app.config import Settings
from app.conversations import ConversationReader
from app.inference.actor import InferenceActor, QueueFull, TooManyQueued, Tuning
from app.inference.batched_engine import BatchedEngine
from app.inference.fair_queue import FairQueue
from domain.application import ChatApplication
from projections.runner import ProjectionRunner
from tests.server import Api, ServerProcess

CONFIG = {"system_prompt": "You are a helpful assistant.", "temperature": 0.0, "top_p": 0.95,
          "max_tokens": 24, "model": "test"}
WORDS = ["사과", "바나나", "고양이", "김치"]
LONG = "Write a long story about the sea."

Reply = tuple[UUID, UUID, int]  # session, reply, position of its queueing


def repeat(word: str) -> str:
    return f"Repeat the word '{word}' three times."


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchedEngine]:
    # One thread: on a machine shared with other jobs, two spinning threads stall each other.
    engine = BatchedEngine(Settings().model_path, n_ctx=1024, n_parallel=2, n_threads=1,
                           n_batch=64)
    yield engine
    engine.close()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[ChatApplication]:
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": str(tmp_path / "events.sqlite")})
    yield app
    app.close()


@pytest.fixture
def runner(chat: ChatApplication, tmp_path: Path) -> Iterator[ProjectionRunner]:
    runner = ProjectionRunner(chat, tmp_path / "readmodels.sqlite")
    chat.add_head_listener(runner.wake)
    runner.start()
    yield runner
    runner.stop()


def make_actor(chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
               **tuning: Any) -> InferenceActor:
    reader = ConversationReader(chat, runner, runner.path, n_ctx=1024)
    settings: dict[str, Any] = {"max_queue": 32, "timeout": 120, "flush_interval": 0.05,
                                "flush_count": 8}
    actor = InferenceActor(chat, reader, Tuning(**{**settings, **tuning}))
    actor.engine = engine
    return actor


def new_session(chat: ChatApplication, owner: UUID, **config: Any) -> UUID:
    return chat.start_session(owner, "t", {**CONFIG, **config})[0]


def post(chat: ChatApplication, session_id: UUID, owner: UUID, content: str) -> Reply:
    _, reply_id, position = chat.post_message(session_id, owner, content, 1)
    return session_id, reply_id, position


async def until_idle(actor: InferenceActor, task: asyncio.Task[None] | None = None) -> None:
    task = task or asyncio.create_task(actor.run())
    try:
        for _ in range(2400):
            await asyncio.sleep(0.05)
            if not actor.queue_depth and not actor.generating:
                return
        raise AssertionError("the actor did not finish its replies")
    finally:
        task.cancel()


def run(actor: InferenceActor, replies: list[Reply], owners: list[str] | None = None) -> None:
    async def go() -> None:
        for n, (session_id, reply_id, position) in enumerate(replies):
            actor.enqueue(session_id, reply_id, position, owners[n] if owners else None)
        await until_idle(actor)
    asyncio.run(go())


def events_of(chat: ChatApplication, session_id: UUID) -> list[Any]:
    return [chat.mapper.to_domain_event(s) for s in chat.recorder.select_events(session_id)]


def ended(chat: ChatApplication, reply: Reply) -> Any:
    return next(e for e in reversed(events_of(chat, reply[0]))
                if type(e).__name__ in ("ReplyCompleted", "ReplyFailed", "ReplyCancelled",
                                        "ReplyInterrupted") and e.reply_id == reply[1])


def content(runner: ProjectionRunner, reply: Reply) -> str:
    runner.catch_up()
    db = sqlite3.connect(runner.path)
    try:
        row = db.execute("SELECT content FROM messages WHERE id = ?", (str(reply[1]),)).fetchone()
    finally:
        db.close()
    return str(row[0])


# -- the fair queue ------------------------------------------------------------------------

def test_the_queue_takes_turns_between_users() -> None:
    line: FairQueue[str] = FairQueue()
    for n in range(1, 6):
        line.push("many", f"many-{n}")
    line.push("one", "one-1")
    line.push("two", "two-1")
    line.push("two", "two-2")
    # Before a second item of "one": many-1, one-1, two-1 (a round), then many-2.
    assert line.ahead_of_new("one") == 4
    assert line.ahead_of_new("new") == 3  # one of each, then the newcomer
    order = [line.pop() for _ in range(len(line))]
    assert order == ["many-1", "one-1", "two-1", "many-2", "two-2", "many-3", "many-4",
                     "many-5"]
    assert line.pop() is None and len(line) == 0


def test_the_queue_skips_what_may_not_start_yet_without_losing_its_place() -> None:
    line: FairQueue[str] = FairQueue()
    line.push("a", "a-busy")
    line.push("a", "a-2")
    line.push("b", "b-1")
    assert line.pop(lambda item: item != "a-busy") == "a-2"
    assert line.pop(lambda item: item != "a-busy") == "b-1"
    assert line.pop() == "a-busy"
    line.push("c", "c-1")
    assert line.remove(lambda item: item.startswith("c")) == ["c-1"] and len(line) == 0


# -- the actor -----------------------------------------------------------------------------

def test_replies_of_several_chats_are_written_together_and_recorded(
    chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
) -> None:
    steps = engine.stats.steps
    owner = uuid4()
    replies = [post(chat, new_session(chat, owner), owner, repeat(word)) for word in WORDS]
    run(make_actor(chat, runner, engine), replies)
    for word, reply in zip(WORDS, replies, strict=True):
        completed = ended(chat, reply)
        assert type(completed).__name__ == "ReplyCompleted", completed
        pieces = [e for e in events_of(chat, reply[0]) if type(e).__name__ == "TokensGenerated"]
        assert "".join(p.text for p in pieces) == completed.content == content(runner, reply)
        assert sum(p.token_count for p in pieces) == completed.token_count
        assert word in completed.content
        assert not [w for w in WORDS if w != word and w in completed.content]
    tokens = sum(ended(chat, r).token_count for r in replies)
    assert engine.stats.steps - steps < tokens  # they shared steps


def test_the_replies_being_written_share_their_commits(
    chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tokens waiting at a flush go in one commit for all the replies being written: the
    commits per second stay the same however many replies decode together."""
    commits: list[list[UUID]] = []
    change_replies = chat.change_replies

    def counted(changes: Any) -> Any:
        commits.append([session_id for session_id, _change in changes])
        return change_replies(changes)

    monkeypatch.setattr(chat, "change_replies", counted)
    owner = uuid4()
    replies = [post(chat, new_session(chat, owner, max_tokens=48), owner, LONG)
               for _ in range(2)]
    # Only the interval commits (and each reply's first token, alone): no batch fills up.
    run(make_actor(chat, runner, engine, flush_interval=0.2, flush_count=1000), replies)
    assert any(len(set(sessions)) == 2 for sessions in commits), commits
    for reply in replies:
        completed = ended(chat, reply)
        assert type(completed).__name__ == "ReplyCompleted", completed
        pieces = [e for e in events_of(chat, reply[0]) if type(e).__name__ == "TokensGenerated"]
        assert "".join(p.text for p in pieces) == completed.content == content(runner, reply)
        assert sum(p.token_count for p in pieces) == completed.token_count


def test_a_reply_ended_elsewhere_leaves_the_shared_commit_to_the_others(
        chat: ChatApplication) -> None:
    owner = uuid4()
    (one, one_reply, _), (two, two_reply, _) = (
        post(chat, new_session(chat, owner), owner, "안녕") for _ in range(2))
    for session_id, reply_id in ((one, one_reply), (two, two_reply)):
        chat.change_reply(session_id, lambda s, r=reply_id: s.start_reply(r, 10, 0))
    chat.change_reply(one, lambda s: s.cancel_reply(one_reply))  # e.g. its user cancelled
    head = chat.head()
    refused = chat.change_replies([
        (one, lambda s: s.add_tokens(one_reply, "늦은", 1)),
        (two, lambda s: s.add_tokens(two_reply, "안녕하세요", 1)),
    ])
    assert refused[0] is not None and refused[1] is None
    added = [e for e in events_of(chat, two) if type(e).__name__ == "TokensGenerated"]
    assert [e.text for e in added] == ["안녕하세요"]
    assert not [e for e in events_of(chat, one) if type(e).__name__ == "TokensGenerated"]
    assert chat.head() == head + 1


def test_users_take_turns_so_many_replies_cannot_starve_one(
    chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
) -> None:
    busy, patient = uuid4(), uuid4()
    many = [post(chat, new_session(chat, busy, max_tokens=8), busy, repeat("사과"))
            for _ in range(5)]
    one = post(chat, new_session(chat, patient, max_tokens=8), patient, repeat("김치"))
    run(make_actor(chat, runner, engine), [*many, one],
        owners=[str(busy)] * len(many) + [str(patient)])
    # Replies start in the order the actor takes them off the queue.
    started_at = {n: next(e.timestamp for e in events_of(chat, r[0])
                          if type(e).__name__ == "ReplyStarted")
                  for n, r in enumerate([*many, one])}
    order = sorted(started_at, key=lambda n: started_at[n])
    assert order.index(len(many)) == 1, order  # the patient user's reply went second
    assert all(type(ended(chat, r)).__name__ == "ReplyCompleted" for r in [*many, one])


def test_one_user_may_queue_only_so_many(chat: ChatApplication, runner: ProjectionRunner,
                                         engine: BatchedEngine) -> None:
    actor = make_actor(chat, runner, engine, max_queued_per_user=2, max_queue=3)
    owner = uuid4()
    for _ in range(2):
        session_id = new_session(chat, owner)
        actor.enqueue(*post(chat, session_id, owner, "안녕하세요"), owner=str(owner))
    with pytest.raises(TooManyQueued) as refused:
        actor.next_position(str(owner))
    assert refused.value.retry_after >= 1
    # Another user still gets a place, and takes turns: second, not third.
    assert actor.next_position(str(uuid4())) == 2
    actor.enqueue(*post(chat, new_session(chat, owner), owner, "또"), owner="someone")
    with pytest.raises(QueueFull):
        actor.next_position(str(uuid4()))
    asyncio.run(until_idle(actor))


def test_a_returning_chat_reuses_its_cache(chat: ChatApplication, runner: ProjectionRunner,
                                           engine: BatchedEngine) -> None:
    owner = uuid4()
    session_id = new_session(chat, owner, system_prompt="당신은 도우미입니다.")
    first = post(chat, session_id, owner, repeat("바나나"))
    actor = make_actor(chat, runner, engine)
    run(actor, [first])
    second = post(chat, session_id, owner, repeat("고양이"))
    run(actor, [second])
    one, two = ended(chat, first), ended(chat, second)
    assert type(two).__name__ == "ReplyCompleted" and "고양이" in two.content
    assert two.model_params["cached_tokens"] >= one.model_params["prompt_tokens"]
    assert two.model_params["cached_tokens"] < two.model_params["prompt_tokens"]


def test_an_api_client_resending_its_history_reuses_its_previous_request(
        chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine) -> None:
    # /v1: every request is a new hidden session (origin "api") holding the history the
    # client resent. Its prompt continues the previous request's, whose slot it reuses.
    owner = uuid4()
    api = {"system_prompt": "당신은 API 도우미입니다.", "origin": "api"}
    first = post(chat, new_session(chat, owner, **api), owner, repeat("바나나"))
    actor = make_actor(chat, runner, engine)
    run(actor, [first])
    one = ended(chat, first)
    earlier: list[dict[str, Any]] = [
        {"role": role, "content": text, "timestamp": "2026-11-26T00:00:00.000000Z",
         "status": "complete", "token_count": None, "processing_time": None, "metadata": {}}
        for role, text in (("user", repeat("바나나")), ("assistant", one.content))]
    session_id, _ = chat.import_session(owner, "t", {**CONFIG, **api}, earlier, "api")
    second = post(chat, session_id, owner, repeat("고양이"))
    run(actor, [second])
    two = ended(chat, second)
    assert type(two).__name__ == "ReplyCompleted" and "고양이" in two.content
    assert two.model_params["cached_tokens"] >= one.model_params["prompt_tokens"]


def test_stop_strings_and_seed_come_from_the_session(
    chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
) -> None:
    owner = uuid4()
    free = post(chat, new_session(chat, owner), owner, repeat("고양이"))
    stopped = post(chat, new_session(chat, owner, stop=["고양이"]), owner, repeat("고양이"))
    seeded = [post(chat, new_session(chat, owner, temperature=1.0, seed=99, max_tokens=32),
                   owner, LONG) for _ in range(2)]
    actor = make_actor(chat, runner, engine)
    run(actor, [free, stopped])
    for reply in seeded:  # one at a time: batch shapes stay the same
        run(actor, [reply])
    text = ended(chat, free).content
    assert "고양이" in text and ended(chat, stopped).content == text[:text.index("고양이")]
    assert ended(chat, seeded[0]).content == ended(chat, seeded[1]).content


def test_cancelling_one_running_reply_leaves_the_others(
    chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
) -> None:
    owner = uuid4()
    victim = post(chat, new_session(chat, owner, max_tokens=400), owner, LONG)
    other = post(chat, new_session(chat, owner), owner, repeat("김치"))
    actor = make_actor(chat, runner, engine)

    async def go() -> None:
        actor.enqueue(*victim)
        actor.enqueue(*other)
        task = asyncio.create_task(actor.run())
        for _ in range(1200):
            await asyncio.sleep(0.02)
            if any(type(e).__name__ == "TokensGenerated" for e in events_of(chat, victim[0])):
                break
        assert actor.withdraw(victim[0]) == ([], True)
        await until_idle(actor, task)

    asyncio.run(go())
    assert type(ended(chat, victim)).__name__ == "ReplyCancelled"
    assert content(runner, victim)
    completed = ended(chat, other)
    assert type(completed).__name__ == "ReplyCompleted" and "김치" in completed.content


def test_shutdown_interrupts_running_replies_keeping_their_text(
    chat: ChatApplication, runner: ProjectionRunner, engine: BatchedEngine,
) -> None:
    owner = uuid4()
    replies = [post(chat, new_session(chat, owner, max_tokens=400), owner, LONG)
               for _ in range(2)]
    actor = make_actor(chat, runner, engine)

    async def go() -> None:
        for reply in replies:
            actor.enqueue(*reply)
        task = asyncio.create_task(actor.run())
        for _ in range(1200):
            await asyncio.sleep(0.02)
            if all(any(type(e).__name__ == "TokensGenerated" for e in events_of(chat, r[0]))
                   for r in replies):
                break
        actor.shutdown()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    for reply in replies:
        assert type(ended(chat, reply)).__name__ == "ReplyInterrupted"
        assert content(runner, reply)


# -- deleting a chat drops its KV state --------------------------------------------------------

def kv_file(data_dir: Path, session_id: str) -> list[Path]:
    """The chat's saved KV state (app.inference.kv_cache names files by the key's hash)."""
    name = hashlib.sha256(session_id.encode()).hexdigest()[:32] + ".kv"
    return list((data_dir / "kv-cache").rglob(name))


def test_deleting_a_chat_drops_its_slot_and_its_saved_state(tmp_path: Path) -> None:
    # One slot: a second chat's reply moves the first chat's state to disk.
    server = ServerProcess(tmp_path / "data", N_PARALLEL="1", N_THREADS="1").start()
    try:
        user = Api(server.url).register()

        def reply(session_id: str, word: str) -> None:
            posted = user.post_message(session_id, repeat(word))
            assert user.wait_reply(session_id, posted["reply"]["id"])["status"] == "complete"

        saved, resident, kept = (str(user.new_session(max_tokens=8)["id"]) for _ in range(3))
        reply(saved, "바나나")
        reply(resident, "사과")
        assert kv_file(server.data_dir, saved)  # evicted to disk
        for session_id in (saved, resident):
            assert user.delete(f"/api/sessions/{session_id}/").status_code == 204
        assert not kv_file(server.data_dir, saved)
        # The deleted chat's slot is free, so this reply saves nothing of it; the engine
        # drops forgotten chats before it admits a reply, so this also orders the check.
        reply(kept, "김치")
        assert not kv_file(server.data_dir, resident)
    finally:
        server.stop()
