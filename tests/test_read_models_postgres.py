"""The messages and sessions read models on PostgreSQL: the same events give the same rows
and every read function the same answer as on SQLite (Korean, emoji, NUL included).

Both stores are built by the projections from one log (the event store itself runs on
each store in turn), then every read function of `projections/messages.py` and
`projections/sessions.py` is asked the same questions on both. The one allowed difference
is the contract's: PostgreSQL's TEXT cannot hold NUL, so a NUL in a column reads back
as U+FFFD there (JSON columns keep it escaped, so it survives on both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.application import ChatApplication
from projections import messages as messages_read
from projections import sessions as sessions_read
from projections.base import Projection
from projections.batch import BatchProjection
from projections.database import PostgresReadModels, ReadModels, SQLiteReadModels
from projections.messages import MessagesProjection
from projections.runner import ProjectionRunner
from projections.sessions import SessionsProjection
from projections.stored_rows import LibrarySource
from tests.postgres import PostgresCluster, both_stores
from tests.test_domain import CONFIG
from tests.test_projections import finish, populate

pytestmark = both_stores  # the log itself on each event store; read models on both

UNKNOWN = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def chat(store_env: dict[str, str]) -> Iterator[ChatApplication]:
    app = ChatApplication(env=store_env)
    yield app
    app.close()


def populate_unicode(chat: ChatApplication) -> dict[str, UUID]:
    """Korean, emoji and NUL in titles, messages, tokens and configs; an edited message,
    an imported conversation with branches, an API session, replies left queued and
    streaming."""
    bob = chat.register_user("bob", "bob@example.com", "hash-bob")
    talk, _ = chat.start_session(bob.id, "한국어 대화 🎉", {**CONFIG,
                                                           "system_prompt": "짧게\x00 답해 🙂"})
    _, r1, _ = chat.post_message(talk, bob.id, "안녕 👋 Hello World", 1)
    finish(chat, talk, r1, ["반가워", "요 ", "🎉", "\x00", "끝"])
    m2, r2, _ = chat.post_message(talk, bob.id, "널 문자: a\x00b", 1)
    finish(chat, talk, r2, ["네"])
    _, r2b, _ = chat.edit_message(talk, bob.id, m2, "고친 질문 MIXED case", 1)
    finish(chat, talk, r2b, ["고친 ", "답 ", "😀"])
    chat.update_session(talk, bob.id, "이름 바꿈 🌸", {"temperature": 0.3})

    busy, _ = chat.start_session(bob.id, "100% 완료_끝", CONFIG)
    asked, streaming, _ = chat.post_message(busy, bob.id, "퍼센트 % 와 밑줄 _", 1)
    chat.change_reply(busy, lambda s: s.start_reply(streaming, 10, 0))
    chat.change_reply(busy, lambda s: s.add_tokens(streaming, "생성 중…", 2))
    chat.update_session(busy, bob.id, None, {"system_prompt": "새\x00프롬프트"})

    api, _ = chat.start_session(bob.id, "API 호출", {
        **CONFIG, "origin": "api", "api": "generate", "system_prompt": "\x00 API"})
    _, queued, _ = chat.post_message(api, bob.id, "API 질문 hello", 2)

    def turn(role: str, content: str, branch: dict[str, Any]) -> dict[str, Any]:
        return {"role": role, "content": content, "timestamp": "2026-01-02T03:04:05.000000Z",
                "status": "complete", "token_count": None if role == "user" else 4,
                "processing_time": None if role == "user" else 1.5,
                "metadata": {} if role == "user" else {"finish_reason": "stop"},
                "branch": branch}

    imported, _ = chat.import_session(bob.id, "가져온 대화 📥", CONFIG, [
        turn("user", "원래 질문", {"parent": None, "version_of": None, "on_branch": False}),
        turn("assistant", "원래 답", {"parent": 0, "version_of": None, "on_branch": False}),
        turn("user", "고친 질문", {"parent": None, "version_of": 0, "on_branch": True}),
        turn("assistant", "고친 답 😀", {"parent": 2, "version_of": None, "on_branch": True}),
    ], "localchat")
    return {"bob": bob.id, "talk": talk, "busy": busy, "api": api, "imported": imported,
            "asked": asked, "streaming": streaming, "queued": queued, "edited": m2}


def build(models: ReadModels, chat: ChatApplication, batch_size: int) -> None:
    """The two projections' tables from the whole log, as the runner writes them: each
    batch in one transaction, with the position `snapshot` reads."""
    projections: list[Projection] = [SessionsProjection(), MessagesProjection()]
    source = LibrarySource(chat)
    db = models.connect()
    try:
        for projection in projections:  # as the runner does: outside a transaction
            projection.create(db)
            projection.create(db)  # again: a restart finds the tables there
        db.execute("CREATE TABLE IF NOT EXISTS projection_positions"
                   " (name TEXT PRIMARY KEY, position BIGINT NOT NULL)")
        db.execute("INSERT INTO projection_positions (name, position) VALUES ('messages', 0)"
                   " ON CONFLICT (name) DO NOTHING")
        position = 0
        while True:
            records, events = source.read(position, batch_size)
            if not records:
                break
            pairs = list(zip(records, events, strict=True))
            db.execute("BEGIN")
            for projection in projections:
                if isinstance(projection, BatchProjection):
                    projection.apply_batch(db, pairs)
                else:
                    for record, event in pairs:
                        projection.apply(db, event, record.id)
            position = records[-1].id
            db.execute("UPDATE projection_positions SET position = ? WHERE name = 'messages'",
                       (position,))
            db.execute("COMMIT")
    finally:
        db.close()


def plain(value: Any) -> Any:
    """Rows as tuples and dicts, a NUL as U+FFFD (what PostgreSQL's TEXT holds instead)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "keys"):  # sqlite3.Row or PostgreSQL's Row: iterating gives values
        names = value.keys()
        return {k: plain(value[k]) for k in names}
    return value


async def answers(models: ReadModels) -> dict[str, Any]:
    """Every read function's answer to every question worth asking of this log."""
    db = models.connect()
    read = await models.connect_read()
    found: dict[str, Any] = {}
    try:
        found["table messages"] = [
            tuple(row) for row in db.execute("SELECT * FROM messages ORDER BY position")]
        found["table sessions"] = [
            tuple(row) for row in db.execute("SELECT * FROM sessions ORDER BY id")]
        found["columns"] = [[column[0] for column in db.execute(f"SELECT * FROM {t}").description]
                            for t in ("messages", "sessions")]
        messages = db.execute("SELECT id, session_id, role FROM messages"
                              " ORDER BY position").fetchall()
        sessions = db.execute("SELECT id, owner_id FROM sessions ORDER BY id").fetchall()
        owners = [*sorted({owner for _, owner in sessions}), UNKNOWN]

        for owner in owners:
            for q in ("", "hello", "HELLO", "mixed", "안녕", "%", "_", "완료_", "🎉", "api",
                      "없는 말", "\\"):
                found[f"list {owner} {q!r}"] = await sessions_read.list_sessions(read, owner, q)
            found[f"list {owner} limit 1"] = await sessions_read.list_sessions(
                read, owner, limit=1)
            found[f"count sessions {owner}"] = await sessions_read.count_sessions(read, owner)
            found[f"stats {owner}"] = await messages_read.user_stats(read, owner)
            found[f"daily {owner}"] = await messages_read.daily_usage(read, owner, "2000-01-01")
            found[f"daily {owner} none"] = await messages_read.daily_usage(
                read, owner, "2999-01-01")
            for session_id, _ in sessions:
                found[f"session {session_id} of {owner}"] = await sessions_read.get_session(
                    read, owner, session_id)
        found["count sessions"] = await sessions_read.count_sessions(read)
        found["count messages"] = await messages_read.count_messages(read)
        found["open replies"] = await messages_read.open_replies(read)

        for session_id, _ in [*sessions, (UNKNOWN, None)]:
            found[f"list messages {session_id}"] = await messages_read.list_messages(
                read, session_id)
            for limit in (None, 1, 3):
                found[f"snapshot {session_id} {limit}"] = await messages_read.snapshot(
                    read, session_id, limit)
            found[f"queued {session_id}"] = await messages_read.queued_replies(read, session_id)
            found[f"versions {session_id}"] = await messages_read.versions(read, session_id)
            found[f"branch fields {session_id}"] = await messages_read.branch_fields(
                read, session_id)
            found[f"every {session_id}"] = await messages_read.every_message(read, session_id)

        for message_id, session_id, role in [*messages, (UNKNOWN, UNKNOWN, "")]:
            found[f"message {message_id}"] = await messages_read.get_message(read, message_id)
            found[f"branch row {message_id}"] = await messages_read.branch_row(read, message_id)
            for limit in (1, 3):
                found[f"page before {message_id} {limit}"] = await messages_read.page_before(
                    read, session_id, message_id, limit)
            if role == "user":
                found[f"path {message_id}"] = await messages_read.path_through(
                    read, session_id, message_id)
            if role == "assistant":
                for max_chars in (5, 10_000):
                    found[f"history {message_id} {max_chars}"] = messages_read.history_before(
                        db, session_id, message_id, max_chars)
        with pytest.raises(LookupError):
            messages_read.history_before(db, UNKNOWN, UNKNOWN, 100)
        return found
    finally:
        await read.close()
        db.close()


def assert_same(on_sqlite: dict[str, Any], on_postgres: dict[str, Any]) -> None:
    assert on_postgres.keys() == on_sqlite.keys()
    for key, expected in on_sqlite.items():
        assert plain(on_postgres[key]) == plain(expected), key


def test_postgres_read_models_answer_as_sqlite_does(
    chat: ChatApplication, postgres: PostgresCluster, tmp_path: Path
) -> None:
    h = populate(chat).ids
    ids = populate_unicode(chat)
    lite = SQLiteReadModels(tmp_path / "read.sqlite")
    pg = PostgresReadModels(postgres.create_database("read"))
    build(lite, chat, 500)
    build(pg, chat, 7)  # small batches: a reply's tokens span several
    on_sqlite = asyncio.run(answers(lite))
    on_postgres = asyncio.run(answers(pg))

    assert_same(on_sqlite, on_postgres)

    # The answers are worth comparing: what each store found, checked on PostgreSQL.
    bob, talk = str(ids["bob"]), str(ids["talk"])
    listed = [s["title"] for s in on_postgres[f"list {bob} ''"]]
    assert listed == ["가져온 대화 📥", "100% 완료_끝", "이름 바꿈 🌸"]  # not the API's
    for q in ("hello", "HELLO", "mixed", "🎉"):  # ASCII case ignored, as SQLite's LIKE does
        assert [s["id"] for s in on_postgres[f"list {bob} {q!r}"]] == [talk], q
    assert [s["title"] for s in on_postgres[f"list {bob} '%'"]] == ["100% 완료_끝"]
    assert on_postgres[f"list {bob} 'api'"] == []
    assert on_postgres[f"list {bob} '없는 말'"] == []
    session = on_postgres[f"session {talk} of {bob}"]
    assert session["config"]["system_prompt"] == "짧게\x00 답해 🙂"  # escaped in JSON: kept
    assert session["config"]["temperature"] == 0.3
    assert on_postgres[f"session {talk} of {UNKNOWN}"] is None
    chat_messages = on_postgres[f"list messages {talk}"]
    assert [m["content"] for m in chat_messages] == [
        "안녕 👋 Hello World", "반가워요 🎉\ufffd끝", "고친 질문 MIXED case", "고친 답 😀"]
    assert [m["content"] for m in on_sqlite[f"list messages {talk}"]][1] == "반가워요 🎉\x00끝"
    assert on_postgres[f"versions {talk}"] and len(on_postgres[f"every {talk}"]) == 6
    assert {(str(ids["busy"]), str(ids["streaming"])),
            (str(ids["api"]), str(ids["queued"]))} <= set(on_postgres["open replies"])
    stats = on_postgres[f"stats {bob}"]
    assert stats["sessions"] == 4 and stats["messages"] == 14  # the API session too
    assert isinstance(stats["tokens_generated"], int) and stats["tokens_generated"] > 0
    assert sum(n for n, _ in on_postgres[f"daily {bob}"].values()) == 14
    assert on_postgres["count messages"] > 0 and on_postgres[f"count sessions {bob}"] == 4
    imported = on_postgres[f"branch fields {ids['imported']}"]
    assert sorted(f["on_branch"] for f in imported.values()) == [False, False, True, True]
    applied, shown = on_postgres[f"snapshot {talk} 3"]
    assert applied == chat.head() and len(shown) == 3
    assert on_postgres[f"history {ids['streaming']} 10000"] == [
        (str(ids["asked"]), "user", "퍼센트 % 와 밑줄 _")]
    old_version = on_postgres[f"path {ids['edited']}"]
    assert [m["content"] for m in old_version] == [
        "안녕 👋 Hello World", "반가워요 🎉\ufffd끝", "널 문자: a\ufffdb", "네"]
    assert len(on_postgres) == len(on_sqlite) > 300 and h


def test_the_runner_writes_them_on_postgres_as_on_sqlite(
    chat: ChatApplication, postgres: PostgresCluster, tmp_path: Path
) -> None:
    """The same through the runner (its transactions, positions and batch sizes)."""
    populate(chat)
    ids = populate_unicode(chat)
    found: dict[str, dict[str, Any]] = {}
    for models in (SQLiteReadModels(tmp_path / "read.sqlite"),
                   PostgresReadModels(postgres.create_database("runner"))):
        runner = ProjectionRunner(chat, models, [SessionsProjection(), MessagesProjection()])
        try:
            assert runner.catch_up() == chat.head()
        finally:
            runner.stop()
        found[models.dialect] = asyncio.run(answers(models))
    assert_same(found["sqlite"], found["postgresql"])
    applied, shown = found["postgresql"][f"snapshot {ids['imported']} None"]
    assert applied == chat.head() and [m["content"] for m in shown] == ["고친 질문", "고친 답 😀"]
