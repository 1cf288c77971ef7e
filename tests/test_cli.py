"""The `localchat` command line, on real SQLite data directories.

Most tests run the CLI in-process (`main([...])`) on a store written by the real command
application and projected by the real runner; one drives a real server and runs the CLI
beside it, as an operator would.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite
import pytest

from app.audit import playback
from app.audit.export import session_events
from app.audit.log import connect_readonly
from app.audit.store import mapper
from app.cli import main
from app.config import Settings
from app.event_store import event_store_env
from app.security import token_hash
from domain.application import ChatApplication
from projections import users as users_read
from projections.base import iso
from projections.runner import ProjectionRunner
from tests.server import ROOT, Api, ServerProcess

CONFIG = {"system_prompt": "당신은 친절한 도우미입니다.", "temperature": 0.7, "top_p": 0.95,
          "max_tokens": 64}
REPLY = ["안녕하세요", ", 무엇을", " 도와", "드릴까요", "?"]


class Store:
    """A data directory written the way the server writes it: commands, then projections."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.settings = Settings(data_dir=data)
        data.mkdir(parents=True, exist_ok=True)
        self.chat = ChatApplication(env=event_store_env(self.settings))
        self.runner = ProjectionRunner(self.chat, self.settings.read_model_path)

    def close(self) -> None:
        self.runner.stop()
        self.chat.close()

    def user(self, name: str) -> UUID:
        return self.chat.register_user(name, f"{name}@example.com", "not-a-real-hash").id

    def conversation(self, owner: UUID, title: str, question: str) -> tuple[UUID, UUID]:
        """A chat with one question and a completed reply: (session_id, reply_id)."""
        session_id, _ = self.chat.start_session(owner, title, CONFIG)
        _, reply_id, _ = self.chat.post_message(session_id, owner, question, 1)
        self.chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 12, 0))
        for piece in REPLY:
            self.chat.change_reply(session_id, lambda s, p=piece: s.add_tokens(reply_id, p, 1))
        self.chat.change_reply(session_id, lambda s: s.complete_reply(
            reply_id, token_count=len(REPLY), processing_time=0.1, time_to_first_token=0.01,
            model_version="test", model_params={}, prompt_template="chatml",
            finish_reason="stop"))
        return session_id, reply_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "data")
    yield made
    made.close()


def run(data: Path, *args: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    """The CLI in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr = out, err
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        status = main(["--data-dir", str(data), *args])
    finally:
        sys.stdout, sys.stderr, sys.stdin = old
    return status, out.getvalue(), err.getvalue()


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def written(store: Store) -> tuple[UUID, UUID, UUID, UUID]:
    """Two users, each with a chat and a reply; the projections caught up."""
    admin = store.user("admin_kim")
    user = store.user("user_lee")
    store.conversation(admin, "관리자 메모", "서버 상태는 어떤가요?")
    session_id, reply_id = store.conversation(user, "감사 기록", "안녕하세요, 오늘 날씨는?")
    store.runner.catch_up()
    return admin, user, session_id, reply_id


# -- events, export, replay-session, stats -----------------------------------------------


def test_events_list_and_tail_filter_like_the_browser(store: Store) -> None:
    admin, user, session_id, _ = written(store)
    status, out, _ = run(store.data, "events", "list", "--json", "--type", "Started")
    assert status == 0
    assert [e["data"]["title"] for e in lines(out)] == ["관리자 메모", "감사 기록"]

    _, out, _ = run(store.data, "events", "list", "--json", "--user", "user_lee")
    mine = lines(out)
    assert {e["originator_id"] for e in mine} >= {str(user), str(session_id)}
    assert str(admin) not in {e["originator_id"] for e in mine}
    assert [e["type"] for e in mine][:2] == ["User.Registered", "UsernameIndex.Claimed"]

    _, out, _ = run(store.data, "events", "list", "--json", "--aggregate", str(session_id),
                    "--type", "TokensGenerated")
    assert "".join(e["data"]["text"] for e in lines(out)) == "".join(REPLY)

    # A time range: everything is from the last minutes, nothing from before yesterday.
    _, out, _ = run(store.data, "events", "list", "--json", "--since", "1h")
    assert len(lines(out)) == store.chat.head()
    _, out, _ = run(store.data, "events", "list", "--json", "--until", "1d")
    assert lines(out) == []
    first = lines(run(store.data, "events", "list", "--json", "--limit", "1")[1])[0]
    _, out, _ = run(store.data, "events", "list", "--json", "--since", first["timestamp"],
                    "--until", first["timestamp"].replace("Z", "+00:00"))
    assert lines(out) == []  # until is exclusive

    status, out, _ = run(store.data, "events", "tail", "-n", "2", "--json")
    assert [e["position"] for e in lines(out)] == [store.chat.head() - 1, store.chat.head()]
    # The old form (before list/tail existed) still lists, as human-readable lines.
    status, out, _ = run(store.data, "events", "--type", "ReplyCompleted")
    assert status == 0 and out.count("ChatSession.ReplyCompleted") == 2

    status, _, err = run(store.data, "events", "list", "--type", "Exploded")
    assert status == 2 and "type:" in err and "ReplyFailed" in err


def test_tail_follow_prints_events_recorded_later(store: Store) -> None:
    admin, _, _, _ = written(store)
    session_id, _ = store.chat.start_session(admin, "처음 제목", CONFIG)
    store.chat.update_session(session_id, admin, "두 번째 제목", {})
    store.runner.catch_up()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--data-dir", str(store.data), "events", "tail",
         "-n", "1", "--follow", "--json", "--type", "Renamed", "--seconds", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        # The newest match first: from then on the command is following.
        assert json.loads(proc.stdout.readline())["data"]["title"] == "두 번째 제목"
        store.chat.update_session(session_id, admin, "나중에 바꾼 제목", {})
        store.chat.start_session(admin, "다른 대화", CONFIG)  # not a Renamed: not shown
        store.runner.catch_up()
        event = json.loads(proc.stdout.readline())
        assert event["type"] == "ChatSession.Renamed"
        assert event["data"]["title"] == "나중에 바꾼 제목"
    finally:
        proc.terminate()
        proc.wait(10)


def test_export_user_and_session_as_jsonl(store: Store, tmp_path: Path) -> None:
    admin, user, session_id, _ = written(store)
    status, out, _ = run(store.data, "export", "--user", "user_lee")
    exported = lines(out)
    assert status == 0
    assert {e["originator_id"] for e in exported} == {
        str(user), str(session_id), exported[1]["originator_id"]}  # + the username claim
    assert exported[0]["data"]["password_hash"] == "[redacted]"
    assert [e["position"] for e in exported] == sorted(e["position"] for e in exported)

    target = tmp_path / "chat.jsonl"
    status, _, err = run(store.data, "export", "--session", str(session_id), "-o", str(target))
    chat = lines(target.read_text(encoding="utf-8"))
    assert status == 0 and f"{len(chat)} events" in err
    assert chat[0]["data"]["title"] == "감사 기록"
    assert {e["originator_id"] for e in chat} == {str(session_id)}
    assert run(store.data, "export", "--user", "nobody_here")[0] == 2
    assert run(store.data, "export", "--session", str(admin))[0] == 1  # a user, not a chat


def test_replay_session_streams_the_reply_with_its_recorded_pace(store: Store) -> None:
    _, _, session_id, reply_id = written(store)
    status, out, _ = run(store.data, "replay-session", str(session_id), "--speed", "max")
    assert status == 0
    assert "› 안녕하세요, 오늘 날씨는?" in out and "".join(REPLY) in out

    status, out, _ = run(store.data, "replay-session", str(session_id), "--reply",
                         str(reply_id), "--speed", "max", "--json")
    frames = lines(out)
    assert [f["kind"] for f in frames] == ["queued", "started", *["tokens"] * len(REPLY),
                                           "completed"]
    assert [f["at"] for f in frames] == sorted(f["at"] for f in frames)

    # The waits are the recorded gaps divided by the speed, each capped at max_gap.
    log = connect_readonly(store.settings.event_store_path)
    shown = playback.frames(session_events(log, mapper(store.settings), session_id))
    log.close()
    gaps = [b.at - a.at for a, b in itertools.pairwise(shown)]
    waited: list[float] = []
    playback.play(shown, 10.0, 0.004, lambda frame: None, waited.append)
    assert waited == [w for w in (min(g / 10, 0.004) for g in gaps) if w > 0]
    assert playback.delays(shown, None, 2.0) == [0.0] * len(shown)
    assert run(store.data, "replay-session", str(session_id), "--speed", "0x")[0] == 2


def test_stats(store: Store) -> None:
    written(store)
    status, out, _ = run(store.data, "stats", "--json")
    figures = lines(out)[0]
    assert status == 0
    assert figures["events"] == store.chat.head()
    assert (figures["users"], figures["sessions"], figures["messages"]) == (2, 2, 4)
    assert figures["events_by_type"]["ChatSession.TokensGenerated"] == 2 * len(REPLY)
    assert figures["chain_head"]["position"] == store.chat.head()
    assert all(p["lag"] == 0 for p in figures["projections"].values())


# -- verify and replay: a tampered store ---------------------------------------------------


def copy_of(store: Store, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(store.data, target)
    return target


def tamper(data: Path, *statements: str) -> None:
    db = sqlite3.connect(data / "events.sqlite")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def first_bad(data: Path) -> tuple[int, Any, Any]:
    status, out, _ = run(data, "verify", "--chain-only", "--json")
    report = lines(out)[0]
    return status, report["first_bad_position"], report["problem"]


def test_verify_names_the_first_edited_deleted_or_reordered_position(
        store: Store, tmp_path: Path) -> None:
    written(store)
    head = store.chat.head()
    status, out, _ = run(store.data, "verify")
    assert status == 0 and "hash chain intact" in out and "read models match" in out

    edited = copy_of(store, tmp_path, "edited")
    tamper(edited, "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT),"
                   " '감사 기록', '감사 기룩') AS BLOB) WHERE topic LIKE '%ChatSession.Started'")
    position = sqlite3.connect(edited / "events.sqlite").execute(
        "SELECT rowid FROM stored_events WHERE CAST(state AS TEXT) LIKE '%감사 기룩%'"
    ).fetchone()[0]
    assert first_bad(edited) == (1, position, "altered")
    status, out, _ = run(edited, "verify")  # the full check names it and the replay differs
    assert status == 1 and f"BROKEN at position {position}" in out
    assert "sessions" in out and "DIFFERS" in out

    deleted = copy_of(store, tmp_path, "deleted")
    tamper(deleted, "DELETE FROM stored_events WHERE rowid = 7")
    assert first_bad(deleted) == (1, 7, "deleted")

    last = copy_of(store, tmp_path, "last-deleted")
    tamper(last, f"DELETE FROM stored_events WHERE rowid = {head}")
    assert first_bad(last) == (1, head, "deleted")

    swapped = copy_of(store, tmp_path, "swapped")  # two events trade places
    tamper(swapped, "UPDATE stored_events SET rowid = -1 WHERE rowid = 12",
           "UPDATE stored_events SET rowid = 12 WHERE rowid = 15",
           "UPDATE stored_events SET rowid = 15 WHERE rowid = -1")
    assert first_bad(swapped) == (1, 12, "altered")

    moved = copy_of(store, tmp_path, "moved")  # one event moved to the end of the log
    tamper(moved, f"UPDATE stored_events SET rowid = {head + 1} WHERE rowid = 9")
    assert first_bad(moved) == (1, 9, "deleted")

    # A chain rebuilt from the edited log matches it again, but not the head written down.
    status, out, _ = run(store.data, "stats", "--json")
    chain = lines(out)[0]["chain_head"]
    written_down = f"{chain['position']}:{chain['hash']}"
    assert run(edited, "rebuild", "hashchain")[0] == 0
    assert first_bad(edited) == (0, None, None)
    status, out, _ = run(edited, "verify", "--chain-only", "--expect", written_down)
    assert status == 1 and "written-down head" in out
    assert run(store.data, "verify", "--chain-only", "--expect", written_down)[0] == 0


def test_replay_into_a_directory_and_a_drifted_read_model(store: Store, tmp_path: Path) -> None:
    written(store)
    status, out, _ = run(store.data, "replay", "--into", str(tmp_path / "fresh"), "--json")
    report = lines(out)[0]
    assert status == 0 and report["identical"] and report["position"] == store.chat.head()
    assert (tmp_path / "fresh" / "readmodels.sqlite").is_file()

    db = sqlite3.connect(store.settings.read_model_path)
    db.execute("UPDATE sessions SET title = '변조됨' WHERE title = '감사 기록'")
    db.commit()
    db.close()
    status, out, _ = run(store.data, "replay")
    assert status == 1 and "DIFFERS" in out and "변조됨" in out
    status, out, _ = run(store.data, "rebuild")
    # The vector index is not one of the runner's read models: the command says so.
    assert status == 0 and "Not rebuilt: the vector index" in out
    status, out, _ = run(store.data, "rebuild", "sessions", "--json")
    assert status == 0 and lines(out)[0]["not_rebuilt"] == ["vectors"]
    assert run(store.data, "replay")[0] == 0


# -- backup and restore ----------------------------------------------------------------------


def test_backup_while_writing_then_restore_has_every_acknowledged_event(
        tmp_path: Path) -> None:
    live = Store(tmp_path / "live")
    live.chat.add_head_listener(live.runner.wake)
    live.runner.start()
    owner = live.user("writer_park")
    acknowledged: list[tuple[int, str]] = []  # (position, aggregate) a command returned
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            session_id, position = live.chat.start_session(owner, f"백업 중 대화 {n}", CONFIG)
            acknowledged.append((position, session_id.hex))
            _, _, position = live.chat.post_message(session_id, owner, f"질문 {n}번", 1)
            acknowledged.append((position, session_id.hex))
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acknowledged) < 60:
            time.sleep(0.01)
        before = list(acknowledged)
        status, out, err = run(live.data, "backup", str(tmp_path / "backup"), "--json")
        during = len(acknowledged)
        while len(acknowledged) < during + 20:  # the writer went on after the backup
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    live.close()
    assert status == 0, err
    report = lines(out)[0]
    assert report["events_head"] >= before[-1][0]
    assert acknowledged[-1][0] > report["events_head"]  # the backup did not wait for them
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["events_head"] == report["events_head"]

    restored = tmp_path / "restored"
    status, _, err = run(restored, "restore", str(tmp_path / "backup"))
    assert status == 0, err
    db = sqlite3.connect(restored / "events.sqlite")
    rows = dict(db.execute("SELECT rowid, originator_id FROM stored_events").fetchall())
    db.close()
    assert all(rows.get(position) == aggregate for position, aggregate in before)
    assert max(rows) == report["events_head"]
    status, out, _ = run(restored, "verify")
    assert status == 0, out

    # The live directory holds events: restoring over it needs --force (server stopped).
    head = ChatApplication(env=event_store_env(Settings(data_dir=live.data))).head()
    status, _, err = run(live.data, "restore", str(tmp_path / "backup"))
    assert status == 1 and "--force" in err
    assert ChatApplication(env=event_store_env(Settings(data_dir=live.data))).head() == head
    assert run(live.data, "restore", str(tmp_path / "backup"), "--force")[0] == 0
    restored_head = ChatApplication(env=event_store_env(Settings(data_dir=live.data))).head()
    assert restored_head == report["events_head"]
    assert run(tmp_path / "empty", "restore", str(tmp_path / "nothing"))[0] == 1


# -- accounts ----------------------------------------------------------------------------------


def token_user(store: Store, token: str) -> dict[str, Any] | None:
    store.runner.catch_up()

    async def lookup() -> dict[str, Any] | None:
        async with aiosqlite.connect(store.settings.read_model_path) as db:
            db.row_factory = aiosqlite.Row
            return await users_read.user_for_token(
                db, token_hash(token), timedelta(days=30), iso(datetime.now(UTC)))

    return asyncio.run(lookup())


def test_admin_accounts_disable_and_the_last_admin(store: Store) -> None:
    status, out, err = run(store.data, "create-admin", "root_choi", "--email",
                           "root@example.com", "--password-stdin", "--json",
                           stdin="긴 비밀번호 입니다\n")
    assert status == 0, err
    root = UUID(lines(out)[0]["user_id"])
    assert store.chat.get_user(root).is_admin
    user = store.user("user_jung")
    store.chat.log_in(user, token_hash("token-of-jung"), "127.0.0.1")
    session_id, _ = store.chat.start_session(user, "대기 중인 답변", CONFIG)
    _, queued, _ = store.chat.post_message(session_id, user, "답을 기다립니다", 1)
    assert token_user(store, "token-of-jung") is not None

    # The last active admin can be neither disabled nor demoted.
    status, _, err = run(store.data, "revoke-admin", "root_choi")
    assert status == 1 and "last" in err
    assert run(store.data, "disable-user", "root_choi")[0] == 1
    assert run(store.data, "grant-admin", "user_jung")[0] == 0
    assert run(store.data, "revoke-admin", "root_choi")[0] == 0
    assert run(store.data, "revoke-admin", "user_jung")[0] == 1  # now they are the last
    assert run(store.data, "grant-admin", "root_choi")[0] == 0

    status, out, _ = run(store.data, "disable-user", "user_jung", "--json")
    assert status == 0 and lines(out)[0]["cancelled_replies"] == [str(queued)]
    assert token_user(store, "token-of-jung") is None  # at once, for every token
    events = lines(run(store.data, "events", "list", "--json", "--aggregate",
                       str(session_id), "--type", "ReplyCancelled")[1])
    assert [e["data"]["reply_id"] for e in events] == [str(queued)]

    assert run(store.data, "enable-user", "user_jung")[0] == 0
    assert token_user(store, "token-of-jung") is None  # old tokens stay revoked
    store.chat.log_in(user, token_hash("new-token-of-jung"), "127.0.0.1")
    found = token_user(store, "new-token-of-jung")
    assert found is not None and found["is_admin"] and not found["disabled"]

    assert run(store.data, "create-admin", "bad name!", "--email", "x@example.com",
               "--password-stdin", stdin="long enough\n")[0] == 2
    assert run(store.data, "create-admin", "short_pw", "--email", "x@example.com",
               "--password-stdin", stdin="짧다\n")[0] == 2
    assert run(store.data, "disable-user", "nobody_here")[0] == 2


# -- beside a real server ------------------------------------------------------------------


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "--data-dir", str(data_dir), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_beside_a_running_server(fresh_server: ServerProcess, tmp_path: Path) -> None:
    fresh_server.start()
    Api(fresh_server.url).register("first_admin")
    user = Api(fresh_server.url).register("chat_user")
    session = user.new_session(title="감사 기록", max_tokens=8)
    posted = user.post_message(session["id"], "안녕하세요")
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    data = fresh_server.data_dir

    # Read-only commands and the backup work while the server runs.
    status, out, _ = run(data, "verify", "--json")
    assert status == 0, out
    assert all(check.get("ok", check.get("identical")) for check in lines(out))
    _, out, _ = run(data, "replay-session", session["id"], "--speed", "max", "--json")
    tokens = [f["text"] for f in lines(out) if f["kind"] == "tokens"]
    assert "".join(tokens) == reply["content"]
    assert run(data, "backup", str(tmp_path / "online"))[0] == 0

    # Disabling from the command line (the console script's entry, in a process of its
    # own) stops the user's token on the running server.
    assert user.get("/api/auth/me/").status_code == 200
    disabled = cli(data, "disable-user", "chat_user")
    assert disabled.returncode == 0, disabled.stderr
    deadline = time.monotonic() + 10
    while user.get("/api/auth/me/").status_code != 401 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert user.get("/api/auth/me/").status_code == 401
    fresh_server.stop()

    restored = tmp_path / "restored"
    assert run(restored, "restore", str(tmp_path / "online"))[0] == 0
    _, out, _ = run(restored, "events", "list", "--json", "--type", "Started")
    assert [e["data"]["title"] for e in lines(out)] == ["감사 기록"]
