"""The app's own read-model queries on PostgreSQL give what they give on SQLite.

One event log (a PostgreSQL store, Korean text throughout) is projected by the real runner
into both read-model stores: the SQLite file and the `read_models` schema of the same
database. Every reader in `app/` that runs SQL on the read models itself (the actor's
conversation reader, the admin figures, the event browser, the hash-chain check, replay)
must then answer the same on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID

import psycopg
import pytest

from app.audit.browse import EventFilter, resolve_type
from app.audit.browse_pg import PostgresEventBrowser
from app.audit.chain import verify_chain
from app.audit.log_pg import PostgresLog
from app.audit.replay import replay
from app.config import Settings
from app.conversations import ConversationReader
from app.event_store import event_store_env
from app.services import Services
from app.usecases import admin
from domain.application import ChatApplication
from domain.sessions import ChatSession
from projections.database import PostgresReadModels, ReadModels, SQLiteReadModels
from projections.runner import ProjectionRunner
from projections.vectors import VectorFollower, VectorIndex
from tests.postgres import PostgresCluster
from tests.test_domain import CONFIG, OUTCOME

STORES = ("sqlite", "postgres")


@dataclass
class World:
    chat: ChatApplication
    settings: Settings
    url: str
    read_models: dict[str, ReadModels]
    runners: dict[str, ProjectionRunner] = field(default_factory=dict)
    ids: dict[str, UUID] = field(default_factory=dict)
    position: int = 0  # where the last reply was queued

    @property
    def table(self) -> str:
        return str(getattr(self.chat.recorder, "events_table_name", "chat_events"))


def _reply(chat: ChatApplication, session_id: UUID, reply_id: UUID, words: list[str],
           finish: bool = True) -> None:
    chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 12, 0))
    for word in words:
        def add(session: ChatSession, text: str = word) -> None:
            session.add_tokens(reply_id, text, 1)
        chat.change_reply(session_id, add)
    if finish:
        outcome = {**OUTCOME, "token_count": len(words)}
        chat.change_reply(session_id, lambda s: s.complete_reply(reply_id, **outcome))


def fill(world: World) -> None:
    """Three users (one disabled), a Korean chat of three turns with a regenerated answer
    and a last reply still queued, a deleted chat, and a reply being written now."""
    chat, ids = world.chat, world.ids
    ids["admin"] = chat.register_user("관리자", "admin@example.com", "hash").id
    ids["minji"] = minji = chat.register_user("김민지", "minji@example.com", "hash").id
    ids["seojun"] = seojun = chat.register_user("박서준", "seojun@example.com", "hash").id
    ids["chat"], _ = chat.start_session(minji, "등대지기의 밤", CONFIG)
    session = ids["chat"]
    _, ids["reply1"], _ = chat.post_message(session, minji, "폭풍 이야기를 들려주세요", 1)
    _reply(chat, session, ids["reply1"], ["옛날 ", "옛적에 ", "등대가 ", "있었어요."])
    _, ids["reply2"], _ = chat.post_message(session, minji, "등대는 어디에 있나요?", 1)
    _reply(chat, session, ids["reply2"], ["바닷가 ", "절벽 위에요."])
    _, ids["reply2b"], _ = chat.regenerate(session, minji, 1)
    _reply(chat, session, ids["reply2b"], ["제주도 ", "남쪽 ", "섬에 ", "있어요."])
    _, ids["reply3"], world.position = chat.post_message(
        session, minji, "고마워요. 마지막으로 폭풍 이야기를 한 문장만", 1)
    ids["gone"], _ = chat.start_session(seojun, "삭제될 대화 🌊", CONFIG)
    chat.delete_session(ids["gone"], seojun)
    ids["live"], _ = chat.start_session(seojun, "지금 쓰는 중", CONFIG)
    _, ids["streaming"], _ = chat.post_message(ids["live"], seojun, "한강 이야기", 1)
    _reply(chat, ids["live"], ids["streaming"], ["한강은 ", "서울을 "], finish=False)
    chat.disable_user(seojun, ids["admin"])


@pytest.fixture
def world(postgres: PostgresCluster, tmp_path: Path) -> Iterator[World]:
    url = postgres.create_database()
    settings = Settings(data_dir=tmp_path, event_store=url)
    chat = ChatApplication(env=event_store_env(settings))
    world = World(chat, settings, url, {
        "sqlite": SQLiteReadModels(tmp_path / "readmodels.sqlite"),
        "postgres": PostgresReadModels(url),
    })
    fill(world)
    try:
        for store in STORES:
            runner = ProjectionRunner(chat, world.read_models[store])
            world.runners[store] = runner
            assert runner.catch_up() == chat.head()
        yield world
    finally:
        for runner in world.runners.values():
            runner.stop()
        chat.close()


def both(world: World, answer: Any) -> dict[str, Any]:
    return {store: answer(store) for store in STORES}


# -- the inference actor's conversation reader ------------------------------------------


def test_conversation_reader_reads_the_same_history(world: World) -> None:
    ids = world.ids
    readers = both(world, lambda store: ConversationReader(
        world.chat, world.runners[store], world.read_models[store], n_ctx=1024))
    try:
        answers = {store: reader(ids["chat"], ids["reply3"], world.position)
                   for store, reader in readers.items()}
    finally:
        for reader in readers.values():
            reader.close()
    assert answers["postgres"] == answers["sqlite"]
    turns = [(role, content) for _id, role, content in answers["postgres"].turns]
    # The regenerated answer replaced the first one; the queued reply is not history yet.
    assert turns == [
        ("user", "폭풍 이야기를 들려주세요"), ("assistant", "옛날 옛적에 등대가 있었어요."),
        ("user", "등대는 어디에 있나요?"), ("assistant", "제주도 남쪽 섬에 있어요."),
        ("user", "고마워요. 마지막으로 폭풍 이야기를 한 문장만"),
    ]
    assert answers["postgres"].cut is False


def test_recall_leaves_out_what_came_after_the_reply_on_both_stores(world: World,
                                                                   tmp_path: Path) -> None:
    ids = world.ids
    vectors = VectorIndex(tmp_path / "chroma")
    follower = VectorFollower(world.chat, vectors, tmp_path / "vectors.sqlite")
    follower.catch_up()
    found: dict[str, list[tuple[str, str, str]]] = {}
    for store in STORES:
        reader = ConversationReader(world.chat, world.runners[store],
                                    world.read_models[store], n_ctx=1024)
        reader.vectors = vectors
        try:  # as the second reply was answered: only turns before it may come back
            found[store] = reader.recall(ids["chat"], ids["reply2b"], "폭풍 이야기")([])
        finally:
            reader.close()
    vectors.close()
    assert found["postgres"] == found["sqlite"]
    contents = [content for _id, _role, content in found["postgres"]]
    assert "폭풍 이야기를 들려주세요" in contents
    assert "고마워요. 마지막으로 폭풍 이야기를 한 문장만" not in contents  # after the reply


def test_the_reader_reconnects_when_postgres_drops_its_connection(world: World) -> None:
    ids = world.ids
    reader = ConversationReader(world.chat, world.runners["postgres"],
                                world.read_models["postgres"], n_ctx=1024)
    try:
        before = reader(ids["chat"], ids["reply3"], world.position)
        # The reader's connection (the one whose last query read the history) is cut, as
        # a database restart or an idle timeout cuts it.
        with psycopg.connect(world.url, autocommit=True) as db:
            killed = db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND query LIKE '%status, in_reply_to FROM messages%'").fetchall()
        assert killed == [(True,)]
        assert reader(ids["chat"], ids["reply3"], world.position) == before
    finally:
        reader.close()


# -- the admin use cases ----------------------------------------------------------------


def _services(world: World, store: str, read_db: Any) -> Services:
    """What the admin use cases below read of `Services`: the settings, the application,
    the read models and their request connection (the rest of the server is not needed)."""
    return cast(Services, SimpleNamespace(settings=world.settings, chat=world.chat,
                                          read_models=world.read_models[store],
                                          read_db=read_db))


def test_admin_figures_are_the_same(world: World) -> None:
    ids = world.ids

    async def figures(store: str) -> dict[str, Any]:
        read_db = await world.read_models[store].connect_read()
        services = _services(world, store, read_db)
        try:
            return {
                "users": await admin.list_users(services),
                "user": await admin.get_user(services, str(ids["minji"])),
                "sessions": await admin.list_sessions(services),
                "of_seojun": await admin.list_sessions(services, str(ids["seojun"])),
                "generating": await admin.generating_now(services),
            }
        finally:
            await read_db.close()

    async def main() -> dict[str, dict[str, Any]]:
        return {store: await figures(store) for store in STORES}

    answers = asyncio.run(main())
    assert answers["postgres"] == answers["sqlite"]
    found = answers["postgres"]
    users = {user["username"]: user for user in found["users"]}
    assert list(users) == ["관리자", "김민지", "박서준"]
    assert users["관리자"]["is_admin"] is True and users["박서준"]["disabled"] is True
    minji = found["user"]
    assert (minji["sessions"], minji["messages"], minji["tokens"]) == (1, 7, 10)
    assert type(minji["tokens"]) is int
    assert {s["title"] for s in found["of_seojun"]} == {"삭제될 대화 🌊", "지금 쓰는 중"}
    assert [g["title"] for g in found["generating"]] == ["지금 쓰는 중"]
    assert found["generating"][0]["username"] == "박서준"


def test_the_event_browser_filters_the_same(world: World) -> None:
    ids = world.ids
    queries = [
        admin.EventQuery(),
        admin.EventQuery(type="ReplyCompleted"),
        admin.EventQuery(user="김민지"),
        admin.EventQuery(user=str(ids["seojun"]), type="TokensGenerated"),
        admin.EventQuery(aggregate=str(ids["chat"]), type="TokensGenerated"),
        admin.EventQuery(aggregate=str(ids["live"])),
        admin.EventQuery(since="1h", until=(datetime.now(UTC) + timedelta(hours=1)).isoformat()),
        admin.EventQuery(until="2000-01-01"),
    ]

    async def pages(store: str) -> list[Any]:
        services = _services(world, store, None)
        found: list[Any] = []
        for query in queries:
            page = await admin.browse_events(services, query, limit=5)
            found.append((page.events, page.has_older, page.has_newer, page.head))
            found.append(await admin.events_after(services, query, 0, world.chat.head()))
        found.append(await admin.throughput(services, now=datetime.now(UTC)))
        return found

    async def main() -> dict[str, list[Any]]:
        return {store: await pages(store) for store in STORES}

    answers = asyncio.run(main())
    assert answers["postgres"] == answers["sqlite"]
    # found[2 * i + 1]: every event the i-th query matches.
    completed = answers["postgres"][3]
    assert len(completed) == 3 and all(e["type"] == "ChatSession.ReplyCompleted"
                                       for e in completed)
    assert len(answers["postgres"][7]) == 2  # 박서준's two token batches
    assert answers["postgres"][15] == []  # nothing before 2000
    assert answers["postgres"][-1].replies == 3

    # The index head and a user found by name, read straight from the browser.
    read_models = world.read_models["postgres"]
    browser = PostgresEventBrowser(read_models, world.url, world.table, world.chat.mapper)
    try:
        assert browser.index_head() == world.chat.head()
        assert browser.find_user("박서준") == ids["seojun"]
        mine = browser.select(EventFilter(types=resolve_type("UserMessagePosted"),
                                          user=ids["minji"]))
        assert [e.event.content for e in mine] == [  # type: ignore[attr-defined]
            "폭풍 이야기를 들려주세요", "등대는 어디에 있나요?",
            "고마워요. 마지막으로 폭풍 이야기를 한 문장만"]
    finally:
        browser.close()


# -- the hash chain and replay ----------------------------------------------------------


def test_the_hash_chain_is_verified_on_postgres_read_models(world: World) -> None:
    reports = {}
    for store in STORES:
        log, read_db = PostgresLog(world.url, world.table), world.read_models[store].connect()
        try:
            reports[store] = verify_chain(log, read_db)
        finally:
            read_db.close()
            log.close()
    assert reports["postgres"] == reports["sqlite"]
    assert reports["postgres"].ok and reports["postgres"].checked == world.chat.head()

    read_db = world.read_models["postgres"].connect()
    try:
        read_db.execute("UPDATE hash_chain SET hash = ? WHERE position = 5", (b"\x00" * 32,))
        log = PostgresLog(world.url, world.table)
        try:
            broken = verify_chain(log, read_db)
        finally:
            log.close()
    finally:
        read_db.close()
    assert (broken.ok, broken.first_bad, broken.problem) == (False, 5, "altered")


def test_replay_on_postgres_read_models(world: World) -> None:
    reports = both(world, lambda store: replay(world.chat, world.read_models[store]))
    assert reports["postgres"].identical, reports["postgres"].tables
    assert reports["postgres"].position == reports["sqlite"].position == world.chat.head()
    assert [(t.table, t.live_rows, t.fresh_rows) for t in reports["postgres"].tables] == \
        [(t.table, t.live_rows, t.fresh_rows) for t in reports["sqlite"].tables]

    read_db = world.read_models["postgres"].connect()
    try:
        read_db.execute("UPDATE messages SET content = ? WHERE id = ?",
                        ("손으로 고친 답", str(world.ids["reply1"])))
        report = replay(world.chat, world.read_models["postgres"])
        # The schemas it worked in are gone.
        left = read_db.execute("SELECT schema_name FROM information_schema.schemata"
                               " WHERE schema_name LIKE 'replay%'").fetchall()
    finally:
        read_db.close()
    assert left == []
    differs = [t for t in report.tables if not t.identical]
    assert [(t.table, t.only_live, t.only_fresh) for t in differs] == [("messages", 1, 1)]
    samples = {s["side"]: s["content"] for s in differs[0].samples}
    assert samples == {"live": "손으로 고친 답", "replayed": "옛날 옛적에 등대가 있었어요."}
    assert differs[0].first_position is not None
