"""The `localchat` command line on a PostgreSQL store (EVENT_STORE=postgresql://...).

The same events (Korean text) are in a SQLite data directory and in a PostgreSQL database:
written once by the real command application on SQLite, then copied record by record into
the library's PostgreSQL table (same ids, versions, topics, states and positions), and
projected on each store by the real runner. Then every command must print on PostgreSQL
what it prints on SQLite: event listings, exports, stats (but the sizes), the hash chain
and its head, a replayed conversation. Backup is pg_dump and restore is pg_restore into a
new, empty database; any other database is refused.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from app.cli import main
from app.config import Settings
from app.event_store import event_store_env, read_models_for
from domain.application import ChatApplication
from projections.runner import ProjectionRunner
from tests.postgres import PostgresCluster
from tests.server import ROOT
from tests.test_cli import CONFIG, REPLY, Store, lines, written


@dataclass
class Side:
    """One store's data directory and EVENT_STORE (empty: the SQLite file)."""

    data: Path
    url: str = ""

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        """The CLI in-process on this store: (exit status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        old = sys.stdout, sys.stderr, sys.stdin, os.environ.get("EVENT_STORE")
        sys.stdout, sys.stderr = out, err
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        os.environ["EVENT_STORE"] = self.url
        try:
            status = main(["--data-dir", str(self.data), *args])
        finally:
            sys.stdout, sys.stderr, sys.stdin = old[:3]
            if old[3] is None:
                del os.environ["EVENT_STORE"]
            else:
                os.environ["EVENT_STORE"] = old[3]
        return status, out.getvalue(), err.getvalue()

    def json(self, *args: str) -> list[dict[str, Any]]:
        status, out, err = self.run(*args, "--json")
        assert status == 0, err
        return lines(out)

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data, event_store=self.url)


class PgStore:
    """A PostgreSQL store written and projected as the server does it."""

    def __init__(self, side: Side) -> None:
        side.data.mkdir(parents=True, exist_ok=True)
        self.side = side
        self.chat = ChatApplication(env=event_store_env(side.settings))
        self.runner = ProjectionRunner(self.chat, read_models_for(side.settings))

    def close(self) -> None:
        self.runner.stop()
        self.chat.close()


def copy_log(source: ChatApplication, target: ChatApplication) -> None:
    """Every record of `source`, unchanged and in order, into `target`'s empty store: one
    insert each, so the positions are the same."""
    for notification in source.recorder.select_notifications(start=1, limit=100_000):
        target.recorder.insert_events([StoredEvent(
            originator_id=notification.originator_id,
            originator_version=notification.originator_version,
            topic=notification.topic, state=notification.state)])
    assert target.recorder.max_notification_id() == source.recorder.max_notification_id()


@dataclass
class Pair:
    sqlite: Side
    pg: Side
    pg_store: PgStore
    user: UUID
    session_id: UUID
    reply_id: UUID


@pytest.fixture
def pair(tmp_path: Path, postgres: PostgresCluster) -> Iterator[Pair]:
    lite = Store(tmp_path / "sqlite")
    _, user, session_id, reply_id = written(lite)
    pg = PgStore(Side(tmp_path / "pg", postgres.create_database()))
    try:
        copy_log(lite.chat, pg.chat)
        pg.runner.catch_up()
        lite.close()
        yield Pair(Side(lite.data), pg.side, pg, user, session_id, reply_id)
    finally:
        pg.close()


# -- the same output on both stores ----------------------------------------------------------


def test_events_listings_are_the_same_on_both_stores(pair: Pair) -> None:
    everything = pair.pg.json("events", "list", "--limit", "1000")
    assert everything == pair.sqlite.json("events", "list", "--limit", "1000")
    assert [e["position"] for e in everything] == list(range(1, len(everything) + 1))
    assert "안녕하세요, 오늘 날씨는?" in json.dumps(everything, ensure_ascii=False)
    for args in (("list", "--type", "Started"), ("list", "--user", "user_lee"),
                 ("list", "--aggregate", str(pair.session_id), "--type", "TokensGenerated"),
                 ("list", "--since", "1h", "--after", "3", "--limit", "5"),
                 ("tail", "-n", "3"), ("tail", "-n", "2", "--type", "ReplyCompleted")):
        shown = pair.pg.json("events", *args)
        assert shown, args
        assert shown == pair.sqlite.json("events", *args), args
    titles = [e["data"]["title"] for e in pair.pg.json("events", "list", "--type", "Started")]
    assert titles == ["관리자 메모", "감사 기록"]
    tokens = pair.pg.json("events", "list", "--aggregate", str(pair.session_id),
                          "--type", "TokensGenerated")
    assert "".join(e["data"]["text"] for e in tokens) == "".join(REPLY)
    # The human-readable lines too.
    assert pair.pg.run("events", "list")[1] == pair.sqlite.run("events", "list")[1]
    status, _, err = pair.pg.run("events", "list", "--user", "nobody_here")
    assert status == 2 and "nobody_here" in err


def test_export_and_replay_session_are_the_same_on_both_stores(pair: Pair,
                                                               tmp_path: Path) -> None:
    exported = pair.pg.json("export", "--user", "user_lee")
    assert exported == pair.sqlite.json("export", "--user", "user_lee")
    assert {e["originator_id"] for e in exported} >= {str(pair.user), str(pair.session_id)}
    assert exported[0]["data"]["password_hash"] == "[redacted]"
    target = tmp_path / "대화.jsonl"
    status, _, err = pair.pg.run("export", "--session", str(pair.session_id), "-o",
                                 str(target))
    chat = lines(target.read_text(encoding="utf-8"))
    assert status == 0 and f"{len(chat)} events" in err
    assert chat == pair.sqlite.json("export", "--session", str(pair.session_id))
    assert chat[0]["data"]["title"] == "감사 기록"
    assert pair.pg.run("export", "--user", "nobody_here")[0] == 2
    assert pair.pg.run("export", "--session", str(pair.user))[0] == 1  # a user, not a chat

    played = pair.pg.json("replay-session", str(pair.session_id), "--speed", "max")
    assert played == pair.sqlite.json("replay-session", str(pair.session_id), "--speed", "max")
    assert "".join(f["text"] for f in played if f["kind"] == "tokens") == "".join(REPLY)
    status, out, _ = pair.pg.run("replay-session", str(pair.session_id), "--speed", "max")
    assert status == 0 and "› 안녕하세요, 오늘 날씨는?" in out and "".join(REPLY) in out


def test_stats_and_verify_are_the_same_on_both_stores(pair: Pair) -> None:
    pg, lite = pair.pg.json("stats")[0], pair.sqlite.json("stats")[0]
    pg_bytes, lite_bytes = pg.pop("bytes"), lite.pop("bytes")
    assert pg == lite
    assert (pg["users"], pg["sessions"], pg["messages"]) == (2, 2, 4)
    assert pg["events_by_type"]["ChatSession.TokensGenerated"] == 2 * len(REPLY)
    assert all(p["lag"] == 0 for p in pg["projections"].values()) and pg["projections"]
    assert "events.sqlite" in lite_bytes and "events.sqlite" not in pg_bytes
    assert pg_bytes["postgresql:chat_events"] > 0 and pg_bytes["postgresql:read_models"] > 0
    status, out, _ = pair.pg.run("stats")
    assert status == 0 and f"{pg['chain_head']['position']}:{pg['chain_head']['hash']}" in out

    # The same records hash to the same chain on both stores.
    chain = pair.pg.json("verify", "--chain-only")[0]
    assert chain == pair.sqlite.json("verify", "--chain-only")[0]
    assert chain["ok"] and chain["chain_head"] == pg["chain_head"]
    head = f"{chain['chain_head']['position']}:{chain['chain_head']['hash']}"
    assert pair.pg.run("verify", "--chain-only", "--expect", head)[0] == 0
    status, out, err = pair.pg.run("verify")
    assert status == 0, out + err
    assert "hash chain intact" in out and "read models match" in out

    # An edited record in PostgreSQL is named, as on SQLite.
    with psycopg.connect(pair.pg.url, autocommit=True) as db:
        db.execute("UPDATE chat_events SET state = convert_to(replace(convert_from(state,"
                   " 'UTF8'), '감사 기록', '감사 기룩'), 'UTF8')"
                   " WHERE topic LIKE '%ChatSession.Started'"
                   " AND convert_from(state, 'UTF8') LIKE '%감사 기록%'")
        row = db.execute("SELECT notification_id FROM chat_events"
                         " WHERE convert_from(state, 'UTF8') LIKE '%감사 기룩%'").fetchone()
    assert row is not None
    status, out, _ = pair.pg.run("verify", "--chain-only", "--json")
    report = lines(out)[0]
    assert status == 1 and (report["first_bad_position"], report["problem"]) == (
        row[0], "altered")


def test_replay_and_rebuild_on_postgres_read_models(pair: Pair) -> None:
    report = pair.pg.json("replay", "--into", "replay_kept")[0]
    assert report["identical"] and report["position"] == pair.pg_store.chat.head()
    with psycopg.connect(pair.pg.url, autocommit=True) as db:
        kept = db.execute("SELECT title FROM replay_kept.sessions ORDER BY title").fetchall()
        assert [row[0] for row in kept] == ["감사 기록", "관리자 메모"]
        db.execute("UPDATE read_models.sessions SET title = '변조됨' WHERE title = '감사 기록'")
    status, out, _ = pair.pg.run("replay", "--into", "replay_kept")
    assert status == 2  # the schema exists: not overwritten
    status, out, _ = pair.pg.run("replay")
    assert status == 1 and "DIFFERS" in out and "변조됨" in out
    # The fixture's runner leads the projections, as a running server's would: the
    # command asks it to rebuild instead of writing beside it.
    status, out, err = pair.pg.run("rebuild", "sessions")
    assert status == 0 and "asked to rebuild sessions" in out, err
    assert pair.pg.run("replay")[0] == 1
    pair.pg_store.runner.stop()  # the server stopped: the command leads and rebuilds
    status, out, err = pair.pg.run("rebuild", "sessions")
    assert status == 0 and "sessions rebuilt" in out, err
    assert pair.pg.run("replay")[0] == 0
    assert pair.pg.json("stats")[0]["sessions"] == 2


# -- accounts ------------------------------------------------------------------------------


def test_account_commands_on_postgres(pair: Pair) -> None:
    pg, chat = pair.pg, pair.pg_store.chat
    status, out, err = pg.run("create-admin", "root_choi", "--email", "root@example.com",
                              "--password-stdin", "--json", stdin="긴 비밀번호 입니다\n")
    assert status == 0, err
    root = UUID(lines(out)[0]["user_id"])
    assert chat.get_user(root).is_admin
    user = chat.get_user(pair.user)
    assert not user.is_admin
    session_id, _ = chat.start_session(pair.user, "대기 중인 답변", CONFIG)
    _, queued, _ = chat.post_message(session_id, pair.user, "답을 기다립니다", 1)

    assert pg.run("grant-admin", "user_lee")[0] == 0
    assert chat.get_user(pair.user).is_admin
    assert pg.run("revoke-admin", "user_lee")[0] == 0
    assert not chat.get_user(pair.user).is_admin
    # admin_kim (the first account) and root_choi are the admins: demote both, refused
    # at the last one.
    assert pg.run("revoke-admin", "admin_kim")[0] == 0
    status, _, err = pg.run("revoke-admin", str(root))
    assert status == 1 and "last" in err

    status, out, err = pg.run("disable-user", "user_lee", "--json")
    assert status == 0, err
    assert lines(out)[0]["cancelled_replies"] == [str(queued)]
    assert chat.get_user(pair.user).disabled
    cancelled = pg.json("events", "list", "--aggregate", str(session_id))
    assert [e["data"]["reply_id"] for e in cancelled
            if e["type"] == "ChatSession.ReplyCancelled"] == [str(queued)]
    assert pg.run("enable-user", "user_lee")[0] == 0
    assert not chat.get_user(pair.user).disabled
    assert pg.run("disable-user", "nobody_here")[0] == 2

    # The read models (PostgreSQL's, through the runner) take the commands in.
    pair.pg_store.runner.catch_up()
    figures = pg.json("stats")[0]
    assert (figures["users"], figures["admins"], figures["disabled_users"]) == (3, 1, 0)


# -- backup and restore ----------------------------------------------------------------------


def events_of(side: Side) -> list[dict[str, Any]]:
    return side.json("events", "list", "--limit", "100000")


def test_backup_while_writing_then_restore_into_an_empty_database(
        pair: Pair, postgres: PostgresCluster, tmp_path: Path) -> None:
    chat = pair.pg_store.chat
    (pair.pg.data / "secret_key").write_text("비밀 열쇠")
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            session_id, position = chat.start_session(pair.user, f"백업 중 대화 {n}", CONFIG)
            acknowledged.append(position)
            acknowledged.append(chat.post_message(session_id, pair.user, f"질문 {n}번", 1)[2])
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acknowledged) < 20 and thread.is_alive():
            time.sleep(0.01)
        before = acknowledged[-1]
        status, out, err = pair.pg.run("backup", str(tmp_path / "backup"), "--json")
        during = len(acknowledged)
        while len(acknowledged) < during + 10 and thread.is_alive():  # it writes on
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert status == 0, err
    assert len(acknowledged) >= during + 10, "the writer stopped"
    report = lines(out)[0]
    assert report["events_head"] >= before
    assert "database.dump" in report["files"] and "secret_key" in report["files"]
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["events_head"] == report["events_head"]
    assert manifest["store"] == "postgresql" and "password" not in manifest["database"]

    # Into a new, empty database: every event up to the manifest's head, nothing after.
    # (The console script in a process of its own, as an operator runs it.)
    restored = Side(tmp_path / "restored", postgres.create_database("restored"))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "--data-dir", str(restored.data), "restore",
         str(tmp_path / "backup"), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "EVENT_STORE": restored.url})
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout)[0]["events_head"] == report["events_head"]
    assert (restored.data / "secret_key").read_text() == "비밀 열쇠"
    original = events_of(pair.pg)
    assert events_of(restored) == original[:report["events_head"]]
    assert original[report["events_head"]:]  # the writer's later events are not in it
    # The read models came along, from the same snapshot as the log: verify agrees.
    chain = restored.json("verify", "--chain-only")[0]
    assert chain["ok"] and chain["log_head"] == report["events_head"]
    assert chain["chain_head"]["position"] <= report["events_head"]
    status, out, _ = restored.run("verify")
    assert status == 0, out
    # The restored store takes new events after the restored ones.
    again = ChatApplication(env=event_store_env(restored.settings))
    try:
        _, position = again.start_session(pair.user, "복원 후 대화", CONFIG)
    finally:
        again.close()
    assert position > report["events_head"]


def test_restore_refuses_a_database_that_is_not_empty(
        pair: Pair, postgres: PostgresCluster, tmp_path: Path) -> None:
    assert pair.pg.run("backup", str(tmp_path / "backup"))[0] == 0
    head = pair.pg_store.chat.head()
    for force in ((), ("--force",)):
        status, _, err = pair.pg.run("restore", str(tmp_path / "backup"), *force)
        assert status == 1 and "not empty" in err and "chat_events" in err, err
    assert pair.pg_store.chat.head() == head
    assert events_of(pair.pg) == events_of(pair.sqlite)  # untouched

    # A database holding only someone's table is refused too; an empty read-model schema
    # (made by a command run too early) is not "something".
    other = Side(tmp_path / "other", postgres.create_database())
    with psycopg.connect(other.url, autocommit=True) as db:
        db.execute("CREATE TABLE 메모 (내용 TEXT)")
    status, _, err = other.run("restore", str(tmp_path / "backup"))
    assert status == 1 and "not empty" in err and "메모" in err
    empty = Side(tmp_path / "empty", postgres.create_database())
    with psycopg.connect(empty.url, autocommit=True) as db:
        db.execute("CREATE SCHEMA read_models")
        db.execute("CREATE EXTENSION pg_trgm SCHEMA read_models")  # as search makes it
    assert empty.run("restore", str(tmp_path / "backup"))[0] == 0
    assert events_of(empty) == events_of(pair.sqlite)

    # A backup of the other kind of store is named as such.
    assert pair.sqlite.run("backup", str(tmp_path / "sqlite-backup"))[0] == 0
    fresh = Side(tmp_path / "fresh", postgres.create_database())
    status, _, err = fresh.run("restore", str(tmp_path / "sqlite-backup"))
    assert status == 1 and "SQLite" in err
    status, _, err = Side(tmp_path / "lite").run("restore", str(tmp_path / "backup"))
    assert status == 1 and "PostgreSQL" in err
