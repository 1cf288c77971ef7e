"""Read models: built from the log alone, so a rebuild or a fresh runner writes the same rows."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import pytest

import projections.runner as runner_module
from domain.application import ChatApplication
from projections.base import Projection
from projections.runner import ProjectionRunner, all_projections
from tests.postgres import both_stores
from tests.server import is_iso_utc
from tests.test_domain import CONFIG, OUTCOME

Dump = dict[str, list[tuple[Any, ...]]]
TABLES = [table for projection in all_projections() for table in projection.tables]


pytestmark = both_stores


@pytest.fixture
def chat(store_env: dict[str, str]) -> Iterator[ChatApplication]:
    app = ChatApplication(env=store_env)
    yield app
    app.close()


def dump(path: Path) -> Dump:
    """Every row of every projection table (and the positions), sorted."""
    db = sqlite3.connect(path)
    try:
        tables = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                  for t in TABLES}
        tables["projection_positions"] = sorted(
            db.execute("SELECT name, position FROM projection_positions").fetchall())
        return tables
    finally:
        db.close()


def rows(path: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute(sql, args).fetchall()]
    finally:
        db.close()


class History:
    """The ids of what `populate` recorded."""

    def __init__(self) -> None:
        self.ids: dict[str, UUID] = {}


def finish(chat: ChatApplication, session_id: UUID, reply_id: UUID, pieces: list[str],
           ending: str = "complete") -> None:
    chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 10, 0))
    for piece in pieces:
        chat.change_reply(session_id, lambda s, p=piece: s.add_tokens(reply_id, p, 1))
    if ending == "complete":
        chat.change_reply(session_id, lambda s: s.complete_reply(
            reply_id, **{**OUTCOME, "token_count": len(pieces)}))
    elif ending == "fail":
        chat.change_reply(session_id, lambda s: s.fail_reply(reply_id, "timeout", "too slow"))
    elif ending == "cancel":
        chat.change_reply(session_id, lambda s: s.cancel_reply(reply_id))
    elif ending == "interrupt":
        chat.change_reply(session_id, lambda s: s.interrupt_reply(reply_id))


def populate(chat: ChatApplication) -> History:
    """A log with every kind of event the projections handle."""
    h = History()
    admin = chat.register_user("Admin", "admin@example.com", "hash-admin")
    alice = chat.register_user("alice", "alice@example.com", "hash-alice")
    h.ids.update(admin=admin.id, alice=alice.id)
    chat.log_in(alice.id, "token-1", "10.0.0.1")
    chat.log_in(alice.id, "token-2", "10.0.0.2")
    chat.log_out(alice.id, "token-1")
    chat.record_failed_login(alice.id, "10.0.0.3")
    chat.update_profile(alice.id, "alice@example.org", "앨리스")

    chat_id, _ = chat.start_session(alice.id, "", CONFIG)
    h.ids["chat"] = chat_id
    m1, r1, _ = chat.post_message(chat_id, alice.id, "안녕하세요, 오늘 날씨 어때요?", 1)
    finish(chat, chat_id, r1, ["맑", "아요", "!"])
    m2, r2, _ = chat.post_message(chat_id, alice.id, "And tomorrow?", 1)
    finish(chat, chat_id, r2, ["Rain", " maybe"], ending="fail")
    _, r3, _ = chat.regenerate(chat_id, alice.id, 2)
    finish(chat, chat_id, r3, ["Sunny"], ending="cancel")
    _, r4, _ = chat.regenerate(chat_id, alice.id, 1)
    finish(chat, chat_id, r4, ["Cloudy", " later"], ending="interrupt")
    _, r5, _ = chat.post_message(chat_id, alice.id, "Thanks", 3)
    chat.change_reply(chat_id, lambda s: s.cancel_reply(r5))  # cancelled while queued
    h.ids.update(m1=m1, r1=r1, m2=m2, r2=r2, r3=r3, r4=r4, r5=r5)

    renamed_id, _ = chat.start_session(alice.id, "Work", CONFIG)
    chat.update_session(renamed_id, alice.id, "일 (업무)", {"temperature": 0.1, "top_p": 0.5})
    gone_id, _ = chat.start_session(alice.id, "Scratch", CONFIG)
    chat.post_message(gone_id, alice.id, "to be deleted", 1)
    chat.delete_session(gone_id, alice.id)
    admin_chat, _ = chat.start_session(admin.id, "Admin's", CONFIG)
    h.ids.update(renamed=renamed_id, gone=gone_id, admin_chat=admin_chat)
    return h


def test_projections_build_the_expected_rows(chat: ChatApplication, tmp_path: Path) -> None:
    h = populate(chat)
    path = tmp_path / "read.sqlite"
    runner = ProjectionRunner(chat, path)
    try:
        assert runner.catch_up() == chat.head()
        assert runner.positions() == {name: chat.head() for name in runner.names}
        assert runner.names == ["users", "sessions", "messages", "hashchain", "event_index",
                                "search"]
    finally:
        runner.stop()

    users = {r["username"]: r for r in rows(path, "SELECT * FROM users")}
    assert set(users) == {"Admin", "alice"}
    assert users["Admin"]["is_admin"] == 1 and users["alice"]["is_admin"] == 0
    assert users["alice"]["username_key"] == "alice"
    assert users["alice"]["email"] == "alice@example.org"
    assert users["alice"]["display_name"] == "앨리스"
    assert users["Admin"]["last_login_at"] is None
    assert is_iso_utc(users["alice"]["last_login_at"]) and is_iso_utc(users["alice"]["created_at"])
    tokens = {r["token_hash"]: r for r in rows(path, "SELECT * FROM auth_tokens")}
    assert set(tokens) == {"token-1", "token-2"}
    assert is_iso_utc(tokens["token-1"]["revoked_at"]) and tokens["token-2"]["revoked_at"] is None

    sessions = {r["id"]: r for r in rows(path, "SELECT * FROM sessions")}
    main = sessions[str(h.ids["chat"])]
    assert main["title"] == "안녕하세요, 오늘 날씨 어때요?"
    assert main["message_count"] == 8  # 3 user messages, 5 replies
    assert main["deleted"] == 0 and main["owner_id"] == str(h.ids["alice"])
    assert json.loads(main["config"]) == CONFIG
    work = sessions[str(h.ids["renamed"])]
    assert work["title"] == "일 (업무)"
    assert json.loads(work["config"]) == {**CONFIG, "temperature": 0.1, "top_p": 0.5}
    assert work["updated_at"] > work["created_at"]
    assert sessions[str(h.ids["gone"])]["deleted"] == 1
    assert sessions[str(h.ids["admin_chat"])]["owner_id"] == str(h.ids["admin"])

    messages = {r["id"]: r for r in rows(path, "SELECT * FROM messages")}
    r1, r2, r3, r4, r5 = (messages[str(h.ids[k])] for k in ("r1", "r2", "r3", "r4", "r5"))
    assert (r1["status"], r1["content"], r1["token_count"]) == ("complete", "맑아요!", 3)
    assert json.loads(r1["metadata"])["finish_reason"] == "stop"
    assert (r2["status"], r2["content"]) == ("failed", "Rain maybe")
    assert json.loads(r2["metadata"])["error"] == {"code": "timeout", "message": "too slow"}
    assert (r3["status"], r3["content"]) == ("cancelled", "Sunny")
    assert (r4["status"], r4["content"]) == ("interrupted", "Cloudy later")
    assert (r5["status"], r5["content"], r5["processing_time"]) == ("cancelled", "", None)
    assert r2["processing_time"] is not None and r2["processing_time"] >= 0
    user_message = messages[str(h.ids["m1"])]
    assert (user_message["role"], user_message["status"]) == ("user", "complete")
    in_chat = rows(path, "SELECT id FROM messages WHERE session_id = ? ORDER BY position",
                   str(h.ids["chat"]))
    assert len(in_chat) == main["message_count"]
    assert in_chat[0]["id"] == str(h.ids["m1"]) and in_chat[1]["id"] == str(h.ids["r1"])


def test_rebuilding_each_projection_writes_identical_rows(
    chat: ChatApplication, tmp_path: Path
) -> None:
    populate(chat)
    path = tmp_path / "read.sqlite"
    runner = ProjectionRunner(chat, path)
    try:
        runner.catch_up()
        before = dump(path)
        assert before["messages"] and before["sessions"] and before["users"]
        for name in runner.names:
            runner.request_rebuild(name)
            assert runner.catch_up() == chat.head()
            assert dump(path) == before, f"rebuilding {name} changed the read model"
        for name in runner.names:
            runner.request_rebuild(name)
        runner.catch_up()
        assert dump(path) == before
        assert runner.positions() == {name: chat.head() for name in runner.names}
        with pytest.raises(KeyError):
            runner.request_rebuild("nonexistent")
    finally:
        runner.stop()


def test_a_new_runner_from_position_zero_writes_identical_rows(
    chat: ChatApplication, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first runner follows the log as it grows, catching up after every command...
    incremental = tmp_path / "incremental.sqlite"
    follower = ProjectionRunner(chat, incremental)
    chat.add_head_listener(lambda _head: follower.catch_up())
    populate(chat)
    follower.stop()
    expected = dump(incremental)
    assert expected["projection_positions"] == [(n, chat.head()) for n in
                                                sorted(follower.names)]

    # ...a second reads the whole log at once...
    whole = tmp_path / "whole.sqlite"
    second = ProjectionRunner(chat, whole)
    assert second.catch_up() == chat.head()
    second.stop()
    assert dump(whole) == expected

    # ...and a third in batches smaller than the log.
    monkeypatch.setattr(runner_module, "BATCH_SIZE", 7)
    batched = tmp_path / "batched.sqlite"
    third = ProjectionRunner(chat, batched)
    assert third.catch_up() == chat.head()
    third.request_rebuild("messages")
    third.request_rebuild("users")
    assert third.catch_up() == chat.head()
    third.stop()
    assert dump(batched) == expected


def test_a_restarted_runner_continues_from_its_positions(
    chat: ChatApplication, tmp_path: Path
) -> None:
    path = tmp_path / "read.sqlite"
    user = chat.register_user("resume", "r@example.com", "hash")
    first = ProjectionRunner(chat, path)
    first.catch_up()
    first.stop()
    session_id, _ = chat.start_session(user.id, "after the restart", CONFIG)
    second = ProjectionRunner(chat, path)
    try:
        assert second.positions() == {name: 3 for name in second.names}
        assert second.catch_up() == chat.head() == 4
        assert rows(path, "SELECT title FROM sessions WHERE id = ?", str(session_id)) == [
            {"title": "after the restart"}]
        assert len(rows(path, "SELECT * FROM users")) == 1  # nothing applied twice
    finally:
        second.stop()


def test_listeners_hear_the_lowest_applied_position(
    chat: ChatApplication, tmp_path: Path
) -> None:
    populate(chat)
    runner = ProjectionRunner(chat, tmp_path / "read.sqlite")
    heard: list[int] = []
    runner.add_listener(heard.append)
    try:
        runner.catch_up()
        runner.request_rebuild("sessions")
        runner.catch_up()
    finally:
        runner.stop()
    assert heard == [chat.head(), chat.head()]


class Probe(Projection):
    """Looks at the committed `sessions` rows, from another connection, while a rebuild runs."""

    name = "probe"
    tables = ("probe",)
    schema = "CREATE TABLE IF NOT EXISTS probe (position INTEGER, visible INTEGER);"
    path: ClassVar[Path]

    def on_ChatSession_Started(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        other = sqlite3.connect(self.path)
        try:
            visible = other.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        finally:
            other.close()
        db.execute("INSERT INTO probe VALUES (?, ?)", (pos, visible))


def test_readers_never_see_a_half_rebuilt_read_model(
    chat: ChatApplication, tmp_path: Path
) -> None:
    populate(chat)
    path = tmp_path / "read.sqlite"
    Probe.path = path
    runner = ProjectionRunner(chat, path, [*all_projections(), Probe()])
    try:
        runner.catch_up()
        total = rows(path, "SELECT COUNT(*) AS n FROM sessions")[0]["n"]
        assert total == 4
        runner.request_rebuild("sessions")
        runner.request_rebuild("probe")
        runner.catch_up()
        # While the sessions table was being rebuilt, other connections still saw all of it.
        seen = rows(path, "SELECT visible FROM probe")
        assert [r["visible"] for r in seen] == [total] * 4
        assert runner.positions()["probe"] == chat.head()
    finally:
        runner.stop()


class PositionsProbe(Projection):
    """Asks the runner for its positions from another thread while a catch-up is applying."""

    name = "positions_probe"
    tables = ("positions_probe",)
    schema = "CREATE TABLE IF NOT EXISTS positions_probe (position INTEGER, seen TEXT);"
    runner: ClassVar[ProjectionRunner]

    def on_ChatSession_Started(self, db: sqlite3.Connection, e: Any, pos: int) -> None:
        answer: list[dict[str, int]] = []
        asker = threading.Thread(target=lambda: answer.append(self.runner.positions()))
        asker.start()
        asker.join(timeout=10)
        db.execute("INSERT INTO positions_probe VALUES (?, ?)",
                   (pos, json.dumps(answer[0]) if answer else "blocked"))


def test_positions_answer_at_once_during_a_catch_up(chat: ChatApplication,
                                                    tmp_path: Path) -> None:
    user = chat.register_user("positions", "p@example.com", "hash")
    path = tmp_path / "read.sqlite"
    runner = ProjectionRunner(chat, path, [*all_projections(), PositionsProbe()])
    PositionsProbe.runner = runner
    try:
        runner.catch_up()
        committed = chat.head()
        chat.start_session(user.id, "", CONFIG)
        runner.catch_up()
        seen = rows(path, "SELECT seen FROM positions_probe")
        # Not blocked behind the running catch-up, and showing only committed progress.
        assert [json.loads(r["seen"]) for r in seen] == [
            {name: committed for name in runner.names}]
    finally:
        runner.stop()


# -- the conversation a reply answers (read by the inference actor) ------------------------


def test_history_keeps_the_latest_answer_to_each_earlier_message(
    chat: ChatApplication, tmp_path: Path
) -> None:
    from projections import messages as messages_read

    user = chat.register_user("historian", "h@example.com", "hash")
    session_id, _ = chat.start_session(user.id, "", CONFIG)
    _, a1, _ = chat.post_message(session_id, user.id, "질문 하나", 1)
    finish(chat, session_id, a1, ["A1 old"])
    _, a1b, _ = chat.regenerate(session_id, user.id, 1)
    finish(chat, session_id, a1b, ["A1 ", "new"])
    _, a2, _ = chat.post_message(session_id, user.id, "Q2", 1)
    finish(chat, session_id, a2, ["half"], ending="fail")
    _, a3, _ = chat.post_message(session_id, user.id, "Q3", 1)
    _, a3b, _ = chat.regenerate(session_id, user.id, 1)

    runner = ProjectionRunner(chat, tmp_path / "read.sqlite")
    runner.catch_up()
    db = runner_module.connect(tmp_path / "read.sqlite")
    try:
        def history(reply_id: UUID, max_chars: int = 10_000) -> list[tuple[str, str]]:
            turns = messages_read.history_before(db, str(session_id), str(reply_id), max_chars)
            return [(role, content) for _id, role, content in turns]

        assert history(a3) == [("user", "질문 하나"), ("assistant", "A1 new"), ("user", "Q2"),
                               ("user", "Q3")]
        # A regenerated reply answers its message afresh: the answer it replaces is not in
        # its prompt (otherwise the model would see the question already answered).
        assert history(a1b) == [("user", "질문 하나")]
        assert history(a1) == [("user", "질문 하나")]
        assert history(a3b) == history(a3)
        # Only the newest turns are read once enough text is gathered.
        assert history(a3, max_chars=4) == [("user", "Q2"), ("user", "Q3")]
        with pytest.raises(LookupError):
            messages_read.history_before(db, str(session_id), str(user.id), 100)
    finally:
        db.close()
        runner.stop()


def test_a_projection_of_an_older_shape_is_dropped_and_replayed(
    chat: ChatApplication, tmp_path: Path
) -> None:
    populate(chat)
    path = tmp_path / "read.sqlite"
    runner = ProjectionRunner(chat, path)
    runner.catch_up()
    runner.stop()
    expected = dump(path)
    # Make the messages table look like a read model written by version 1.
    db = sqlite3.connect(path)
    db.execute("UPDATE projection_versions SET version = 1 WHERE name = 'messages'")
    db.execute("DROP TABLE messages")
    db.execute("CREATE TABLE messages (id TEXT PRIMARY KEY, stale INTEGER)")
    db.commit()
    db.close()

    runner = ProjectionRunner(chat, path)
    assert runner.positions()["messages"] == 0
    runner.catch_up()
    runner.stop()
    assert dump(path) == expected
