"""The event store on SQLite and on PostgreSQL: the same log, read the same ways.

Every reader of the committed log (streams and the admin list: `EventLogReader`; the
projection runner's source; the admin event browser) must give, on either store, exactly
the events the library's own `select_notifications` and mapper give.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

import tests.postgres as pg
from app.audit.browse import EventFilter, resolve_type
from app.audit.browse_pg import PostgresEventBrowser, open_browser
from app.cli import main as cli
from app.config import Settings
from app.event_log import LoggedEvent
from app.event_store import event_store_env, open_event_log
from domain.application import ChatApplication
from domain.sessions import ChatSession
from projections.runner import ProjectionRunner
from projections.stored_rows import LibrarySource, SQLiteRows, open_source
from tests.postgres import both_stores, event_store_url
from tests.server import Api, ServerProcess, assert_error
from tests.test_domain import CONFIG, OUTCOME

pytestmark = both_stores


@pytest.fixture
def settings(request: pytest.FixtureRequest, store: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, event_store=event_store_url(request, store))


@pytest.fixture
def chat(settings: Settings) -> Iterator[ChatApplication]:
    app = ChatApplication(env=event_store_env(settings))
    yield app
    app.close()


def fill(chat: ChatApplication) -> tuple[UUID, UUID]:
    """Two users, a Korean chat with a finished reply: (user id, session id)."""
    chat.register_user("관리자", "admin@example.com", "hash")
    user = chat.register_user("김민지", "minji@example.com", "hash")
    session_id, _ = chat.start_session(user.id, "등대지기의 밤", CONFIG)
    _, reply_id, _ = chat.post_message(session_id, user.id, "폭풍 이야기를 들려주세요", 1)
    chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 12, 0))
    for word in ("옛날 ", "옛적에 ", "등대가"):
        def add(session: ChatSession, text: str = word) -> None:
            session.add_tokens(reply_id, text, 1)
        chat.change_reply(session_id, add)
    chat.change_reply(session_id, lambda s: s.complete_reply(reply_id, **OUTCOME))
    return user.id, session_id


def library_log(chat: ChatApplication) -> list[LoggedEvent]:
    notes = chat.recorder.select_notifications(0, 10_000, inclusive_of_start=False)
    return [LoggedEvent(n.id, chat.mapper.to_domain_event(n)) for n in notes]


def same(logged: list[LoggedEvent]) -> list[tuple[Any, ...]]:
    return [(e.position, type(e.event).__qualname__, e.event.originator_id,
             e.event.originator_version, vars(e.event)) for e in logged]


def test_the_async_log_reader_gives_the_librarys_events(
        chat: ChatApplication, settings: Settings) -> None:
    _, session_id = fill(chat)
    expected = library_log(chat)
    of_session = [e for e in expected if e.event.originator_id == session_id]
    completed = [e for e in expected if type(e.event).__name__ == "ReplyCompleted"]

    async def read() -> None:
        log = await open_event_log(settings, chat)
        try:
            assert await log.head() == chat.head() == expected[-1].position
            assert same(await log.select(0, 1000)) == same(expected)
            assert same(await log.select(expected[2].position, 3)) == same(expected[3:6])
            assert same(await log.of_originator(session_id, 0)) == same(of_session)
            assert same(await log.of_originator(session_id, of_session[1].position, 2)) == \
                same(of_session[2:4])
            newest = await log.of_originator_before(session_id, of_session[-1].position, 2)
            assert same(newest) == same(of_session[-3:-1][::-1])
            for name in ("ReplyCompleted", "ChatSession.ReplyCompleted"):
                assert same(await log.select(0, 100, name)) == same(completed)
            assert await log.select(0, 100, "%Completed") == []  # no pattern characters
            assert same(await log.select(0, 100, None, session_id)) == same(of_session)
        finally:
            await log.close()

    asyncio.run(read())
    assert "등대지기의 밤" in repr(same(expected))


def test_the_runner_reads_sqlite_directly_and_postgres_through_the_library(
        chat: ChatApplication, store: str, tmp_path: Path) -> None:
    fill(chat)
    source = open_source(chat)
    assert isinstance(source, SQLiteRows if store == "sqlite" else LibrarySource)
    runner = ProjectionRunner(chat, tmp_path / "readmodels.sqlite")
    try:
        assert runner.catch_up() == chat.head()
        assert set(runner.positions().values()) == {chat.head()}
    finally:
        runner.stop()


def test_the_event_browser_filters_the_same_events(
        chat: ChatApplication, settings: Settings, store: str) -> None:
    user_id, session_id = fill(chat)
    expected = library_log(chat)
    runner = ProjectionRunner(chat, settings.read_model_path)
    runner.catch_up()
    runner.stop()
    browser = open_browser(settings, chat)
    try:
        assert isinstance(browser, PostgresEventBrowser) == (store == "postgres")
        assert browser.log_head() == chat.head()
        assert browser.find_user("김민지") == user_id
        assert browser.find_user(str(user_id)) == user_id
        everything = browser.select(EventFilter(), limit=1000)
        assert same(everything) == same(expected)
        newest = browser.select(EventFilter(), limit=2, newest_first=True)
        assert same(newest) == same(expected[-2:])
        tokens = EventFilter(types=resolve_type("TokensGenerated"), aggregate=session_id)
        assert [type(e.event).__name__ for e in browser.select(tokens)] == \
            ["TokensGenerated"] * 3
        mine = browser.select(EventFilter(user=user_id, aggregate=session_id))
        assert same(mine) == same([e for e in expected if e.event.originator_id == session_id])
    finally:
        browser.close()


def test_the_store_commands_work_on_either_store(
        chat: ChatApplication, settings: Settings, store: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fill(chat)
    monkeypatch.setenv("EVENT_STORE", settings.event_store)
    # On PostgreSQL through pg_dump (tests/test_cli_postgres.py restores it).
    assert cli(["--data-dir", str(tmp_path), "--no-progress", "backup",
                str(tmp_path / "backup")]) == 0
    assert (tmp_path / "backup" / "manifest.json").is_file()
    assert cli(["--data-dir", str(tmp_path), "--no-progress", "rebuild"]) == 0
    assert "events replayed" in cli_output(capsys, ["--data-dir", str(tmp_path),
                                                    "--no-progress", "replay"])
    verify = ["--data-dir", str(tmp_path), "--no-progress", "verify", "--chain-only"]
    assert "hash chain intact" in cli_output(capsys, verify)
    tamper(settings, store, 3)  # one stored record gains a byte
    capsys.readouterr()
    assert cli(verify) == 1
    assert "BROKEN at position 3" in capsys.readouterr().out


def tamper(settings: Settings, store: str, position: int) -> None:
    if store == "postgres":
        with psycopg.connect(settings.event_store, autocommit=True) as pg_db:
            pg_db.execute("UPDATE chat_events SET state = state || ' '::bytea"
                          " WHERE notification_id = %s", [position])
        return
    db = sqlite3.connect(settings.event_store_path)
    with db:
        db.execute("UPDATE stored_events SET state = CAST(state || ' ' AS BLOB)"
                   " WHERE rowid = ?", (position,))
    db.close()


def cli_output(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert cli(argv) == 0
    return capsys.readouterr().out


def test_a_postgres_url_becomes_the_librarys_settings() -> None:
    env = event_store_env(Settings(
        event_store="postgresql://chat:p%C3%A4ss@db.example:6543/localchat"))
    assert (env["PERSISTENCE_MODULE"], env["POSTGRES_HOST"], env["POSTGRES_PORT"],
            env["POSTGRES_DBNAME"], env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == (
        "eventsourcing.postgres", "db.example", "6543", "localchat", "chat", "päss")
    socket = event_store_env(Settings(event_store="postgresql://me@/chat?host=/run/pg"))
    assert (socket["POSTGRES_HOST"], socket["POSTGRES_PORT"]) == ("/run/pg", "5432")
    default = event_store_env(Settings(data_dir=Path("/srv/채팅")))
    assert default["SQLITE_DBNAME"] == "/srv/채팅/events.sqlite"
    with pytest.raises(ValueError, match="postgresql://"):
        event_store_env(Settings(event_store="mysql://db/chat"))


def test_missing_server_binaries_fail_under_ci_and_skip_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake of PostgreSQL: only where the fixture looks for its binaries moves."""
    monkeypatch.setattr(pg, "BIN", tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install Debian's postgresql"):
        pg.require_binaries()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="initdb"):
        pg.require_binaries()


def test_postgres_going_away_answers_503_and_the_server_goes_on_after(tmp_path: Path) -> None:
    """A real outage: the server's own cluster is stopped under it, then started again."""
    pg.require_binaries()
    cluster = pg.PostgresCluster().start()
    server = ServerProcess(tmp_path / "data", cluster.create_database())
    try:
        server.start()
        api = Api(server.url).register("keeper")
        assert api.post("/api/sessions/", json={"title": "폭풍 전"}).status_code == 201
        cluster.pause()
        assert_error(api.post("/api/sessions/", json={"title": "폭풍 속"}), 503,
                     "storage_unavailable")
        health = api.get("/healthz")
        assert (health.status_code, health.json()["event_store"]) == (503, "error")
        cluster.resume()
        deadline = time.monotonic() + 60
        while (response := api.post("/api/sessions/", json={"title": "폭풍 뒤"})
               ).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)  # the pool reconnects on its own
        assert response.status_code == 201, response.text
        titles = [s["title"] for s in api.get("/api/sessions/").json()]
        assert "폭풍 속" not in titles and {"폭풍 전", "폭풍 뒤"} <= set(titles)
    finally:
        server.stop()
        cluster.stop()
