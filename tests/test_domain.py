"""The command side, in-process: aggregates, their events and the rules commands enforce."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest

from domain.application import SNAPSHOT_INTERVAL, ChatApplication
from domain.errors import NotFound, NothingToRegenerate, ReplyNotOpen, UsernameTaken
from domain.sessions import AUTO_TITLE_CHARS, ChatSession, auto_title
from domain.users import AdminSeat, User, UsernameIndex
from tests.postgres import both_stores

CONFIG = {"system_prompt": "Be brief.", "temperature": 0.5, "top_p": 0.9, "max_tokens": 32,
          "model": "test-model"}
OUTCOME: dict[str, Any] = {
    "token_count": 3, "processing_time": 0.25, "time_to_first_token": 0.05,
    "model_version": "test-model", "model_params": {"temperature": 0.5},
    "prompt_template": "chatml:abc", "finish_reason": "stop",
}


def make_app(path: Path) -> ChatApplication:
    return ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(path)})


pytestmark = both_stores


@pytest.fixture
def chat(store_env: dict[str, str]) -> Iterator[ChatApplication]:
    app = ChatApplication(env=store_env)
    yield app
    app.close()


def types_since(chat: ChatApplication, after: int) -> list[str]:
    """Qualified type names of the events recorded after position `after`, in log order."""
    notes = chat.recorder.select_notifications(after, 10_000, inclusive_of_start=False)
    return [type(chat.mapper.to_domain_event(n)).__qualname__ for n in notes]


def events_since(chat: ChatApplication, after: int) -> list[Any]:
    notes = chat.recorder.select_notifications(after, 10_000, inclusive_of_start=False)
    return [chat.mapper.to_domain_event(n) for n in notes]


def refused(chat: ChatApplication, error: type[Exception], command: Callable[[], Any]) -> None:
    """The command raises `error` and records nothing."""
    before = chat.recorder.max_notification_id()
    with pytest.raises(error):
        command()
    assert chat.recorder.max_notification_id() == before


def user_and_session(chat: ChatApplication, title: str = "") -> tuple[User, UUID]:
    user = chat.register_user(f"u{uuid4().hex[:8]}", "u@example.com", "hash")
    session_id, _ = chat.start_session(user.id, title, CONFIG)
    return user, session_id


# -- users ---------------------------------------------------------------------------------


def test_first_user_claims_the_admin_seat_and_later_users_do_not(chat: ChatApplication) -> None:
    assert chat.head() == 0
    first = chat.register_user("first", "first@example.com", "hash-1")
    assert first.is_admin is True
    assert types_since(chat, 0) == ["User.Registered", "UsernameIndex.Claimed",
                                    "AdminSeat.Claimed"]
    seat = chat.repository.get(AdminSeat.create_id())
    assert seat.user_id == first.id
    assert AdminSeat.create_id() == uuid5(NAMESPACE_URL, "/admin-seat")

    head = chat.head()
    second = chat.register_user("second", "second@example.com", "hash-2")
    third = chat.register_user("third", "third@example.com", "hash-3")
    assert second.is_admin is False and third.is_admin is False
    assert types_since(chat, head) == ["User.Registered", "UsernameIndex.Claimed"] * 2
    assert chat.repository.get(AdminSeat.create_id()).user_id == first.id
    stored = chat.get_user(second.id)
    assert (stored.username, stored.email, stored.password_hash, stored.is_admin) == (
        "second", "second@example.com", "hash-2", False)


def test_usernames_are_unique_regardless_of_case(chat: ChatApplication) -> None:
    alice = chat.register_user("Alice", "a@example.com", "hash")
    for other in ("Alice", "alice", "ALICE", "aLiCe"):
        refused(chat, UsernameTaken, lambda o=other: chat.register_user(o, "x@example.com", "h"))
    assert UsernameIndex.create_id("Alice") == UsernameIndex.create_id("alice")
    assert UsernameIndex.create_id("Alice") == uuid5(NAMESPACE_URL, "/usernames/alice")
    assert chat.repository.get(UsernameIndex.create_id("ALICE")).user_id == alice.id
    found = chat.find_user("aLICE")
    assert found is not None and found.id == alice.id and found.username == "Alice"
    assert chat.find_user("bob") is None
    # Case folding is Unicode-aware: "Straße" and "STRASSE" are one name.
    chat.register_user("Straße", "s@example.com", "hash")
    refused(chat, UsernameTaken, lambda: chat.register_user("STRASSE", "t@example.com", "h"))


def test_get_user_refuses_unknown_ids_and_other_aggregates(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    with pytest.raises(NotFound):
        chat.get_user(uuid4())
    with pytest.raises(NotFound):
        chat.get_user(session_id)
    assert chat.get_user(user.id).id == user.id


def test_log_in_and_log_out_track_token_hashes(chat: ChatApplication) -> None:
    user = chat.register_user("tokens", "t@example.com", "hash")
    head = chat.head()
    assert chat.log_in(user.id, "hash-a", "10.0.0.1") == head + 1
    chat.log_in(user.id, "hash-b", "10.0.0.2")
    assert chat.get_user(user.id).active_tokens == {"hash-a", "hash-b"}
    logged_in = events_since(chat, head)
    assert [(e.token_hash, e.address) for e in logged_in] == [
        ("hash-a", "10.0.0.1"), ("hash-b", "10.0.0.2")]

    position = chat.log_out(user.id, "hash-a")
    assert position == chat.head() == head + 3
    assert types_since(chat, head + 2) == ["User.LoggedOut"]
    assert chat.get_user(user.id).active_tokens == {"hash-b"}
    # Logging out a token that is not active records nothing and returns the head.
    before = chat.head()
    assert chat.log_out(user.id, "hash-a") == before
    assert chat.log_out(user.id, "never-issued") == before
    assert chat.head() == before


def test_failed_sign_in_is_recorded_with_the_address(chat: ChatApplication) -> None:
    user = chat.register_user("audited", "a@example.com", "hash")
    head = chat.head()
    chat.record_failed_login(user.id, "192.0.2.7")
    [failed] = events_since(chat, head)
    assert type(failed).__qualname__ == "User.LoginFailed"
    assert failed.address == "192.0.2.7" and failed.originator_id == user.id
    refused(chat, NotFound, lambda: chat.record_failed_login(uuid4(), "192.0.2.7"))


def test_update_profile_records_only_changes(chat: ChatApplication) -> None:
    user = chat.register_user("profile", "old@example.com", "hash")
    head = chat.head()
    chat.update_profile(user.id, "new@example.com", "김민준")
    [updated] = events_since(chat, head)
    assert updated.changes == {"email": "new@example.com", "display_name": "김민준"}
    stored = chat.get_user(user.id)
    assert (stored.email, stored.display_name) == ("new@example.com", "김민준")
    head = chat.head()
    assert chat.update_profile(user.id, "new@example.com", None) == head
    assert chat.update_profile(user.id, None, "김민준") == head
    assert chat.head() == head
    chat.update_profile(user.id, None, "")
    assert events_since(chat, head)[0].changes == {"display_name": ""}


# -- sessions ------------------------------------------------------------------------------


def test_start_session_defaults_the_title_and_keeps_the_config(chat: ChatApplication) -> None:
    user = chat.register_user("owner", "o@example.com", "hash")
    head = chat.head()
    session_id, position = chat.start_session(user.id, "", CONFIG)
    assert position == head + 1 == chat.head()
    session = chat.get_session(session_id, user.id)
    assert session.title == "New chat" and session.titled_by_user is False
    assert session.config == CONFIG and session.config is not CONFIG
    assert session.owner_id == user.id and session.deleted is False
    assert session.open == {} and session.last_user_message_id is None

    named_id, _ = chat.start_session(user.id, "계획", CONFIG)
    named = chat.get_session(named_id, user.id)
    assert named.title == "계획" and named.titled_by_user is True


def test_rename_configure_and_delete(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    head = chat.head()
    chat.update_session(session_id, user.id, "여행 계획", {"temperature": 1.2, "max_tokens": 64})
    renamed, configured = events_since(chat, head)
    assert type(renamed).__qualname__ == "ChatSession.Renamed"
    assert (renamed.title, renamed.by_user) == ("여행 계획", True)
    assert configured.changes == {"temperature": 1.2, "max_tokens": 64}
    session = chat.get_session(session_id, user.id)
    assert session.title == "여행 계획"
    assert session.config == {**CONFIG, "temperature": 1.2, "max_tokens": 64}

    # The same title and unchanged settings record nothing.
    head = chat.head()
    assert chat.update_session(session_id, user.id, "여행 계획", {"temperature": 1.2}) == head
    assert chat.update_session(session_id, user.id, None, {}) == head
    assert chat.head() == head
    # Only the settings that differ are recorded.
    chat.update_session(session_id, user.id, None, {"temperature": 1.2, "top_p": 0.5})
    assert [e.changes for e in events_since(chat, head)] == [{"top_p": 0.5}]

    head = chat.head()
    assert chat.delete_session(session_id, user.id) == head + 1
    assert types_since(chat, head) == ["ChatSession.Deleted"]
    refused(chat, NotFound, lambda: chat.get_session(session_id, user.id))
    refused(chat, NotFound, lambda: chat.delete_session(session_id, user.id))
    refused(chat, NotFound, lambda: chat.update_session(session_id, user.id, "x", {}))
    refused(chat, NotFound, lambda: chat.post_message(session_id, user.id, "hi", 1))
    refused(chat, NotFound, lambda: chat.regenerate(session_id, user.id, 1))
    # The history stays: without an owner the deleted session is still readable for audit.
    assert chat.get_session(session_id).deleted is True


def test_someone_elses_session_is_not_found(chat: ChatApplication) -> None:
    owner, session_id = user_and_session(chat)
    other = chat.register_user("intruder", "i@example.com", "hash")
    chat.post_message(session_id, owner.id, "mine", 1)
    refused(chat, NotFound, lambda: chat.get_session(session_id, other.id))
    refused(chat, NotFound, lambda: chat.update_session(session_id, other.id, "stolen", {}))
    refused(chat, NotFound, lambda: chat.delete_session(session_id, other.id))
    refused(chat, NotFound, lambda: chat.post_message(session_id, other.id, "hi", 1))
    refused(chat, NotFound, lambda: chat.regenerate(session_id, other.id, 1))
    refused(chat, NotFound, lambda: chat.get_session(uuid4()))
    refused(chat, NotFound, lambda: chat.get_session(owner.id))  # a user is not a session
    assert chat.get_session(session_id, owner.id).title == "mine"


# -- messages and replies ------------------------------------------------------------------


def test_post_message_records_the_message_and_queues_a_reply(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat, title="Chosen")
    head = chat.head()
    message_id, reply_id, position = chat.post_message(session_id, user.id, "안녕하세요", 3)
    assert position == chat.head() == head + 2
    posted, queued = events_since(chat, head)
    assert type(posted).__qualname__ == "ChatSession.UserMessagePosted"
    assert (posted.message_id, posted.content) == (message_id, "안녕하세요")
    assert type(queued).__qualname__ == "ChatSession.ReplyQueued"
    assert (queued.reply_id, queued.in_reply_to, queued.queue_position) == (
        reply_id, message_id, 3)
    session = chat.get_session(session_id, user.id)
    assert session.last_user_message_id == message_id
    assert session.open_replies() == [reply_id]
    assert session.open_reply(reply_id)["status"] == "queued"
    assert session.title == "Chosen"  # a title the user chose is never replaced


def test_first_message_titles_the_session_once(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    head = chat.head()
    chat.post_message(session_id, user.id, "  서울의   날씨는\n어때요?  ", 1)
    assert types_since(chat, head) == ["ChatSession.Renamed", "ChatSession.UserMessagePosted",
                                       "ChatSession.ReplyQueued"]
    renamed = events_since(chat, head)[0]
    assert (renamed.title, renamed.by_user) == ("서울의 날씨는", False)
    head = chat.head()
    chat.post_message(session_id, user.id, "second message", 1)
    assert "ChatSession.Renamed" not in types_since(chat, head)
    assert chat.get_session(session_id).title == "서울의 날씨는"
    # The user may still rename it afterwards, once; the same title again records nothing.
    chat.update_session(session_id, user.id, "서울의 날씨는", {})
    assert chat.get_session(session_id).titled_by_user is True
    head = chat.head()
    chat.update_session(session_id, user.id, "서울의 날씨는", {})
    assert chat.head() == head


@pytest.mark.parametrize(("content", "title"), [
    ("Hello there", "Hello there"),
    ("first line\nsecond line", "first line"),
    ("\n\n  \n  indented first\nnext", "indented first"),
    ("한국어 제목", "한국어 제목"),
    ("가" * AUTO_TITLE_CHARS, "가" * AUTO_TITLE_CHARS),
    ("가" * (AUTO_TITLE_CHARS + 1), "가" * AUTO_TITLE_CHARS + "…"),
    ("단어 " * 30, ("단어 " * 20).strip() + "…"),
    ("word " * 11 + "abcdefghij", ("word " * 11).strip() + "…"),
    ("   ", "New chat"),
])
def test_auto_title(content: str, title: str) -> None:
    assert auto_title(content) == title
    assert len(auto_title(content)) <= AUTO_TITLE_CHARS + 1


def test_reply_life_cycle_numbers_pieces_per_reply(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    _, first, _ = chat.post_message(session_id, user.id, "one", 1)
    _, second, _ = chat.post_message(session_id, user.id, "two", 2)
    head = chat.head()

    chat.change_reply(session_id, lambda s: s.start_reply(first, 12, 0))
    assert chat.get_session(session_id).open_reply(first)["status"] == "streaming"
    for piece in ("Hel", "lo", " 세계"):
        chat.change_reply(session_id, lambda s, p=piece: s.add_tokens(first, p, 2))
    chat.change_reply(session_id, lambda s: s.complete_reply(first, **OUTCOME))
    chat.change_reply(session_id, lambda s: s.start_reply(second, 20, 1))
    chat.change_reply(session_id, lambda s: s.add_tokens(second, "Bye", 1))
    chat.change_reply(session_id, lambda s: s.add_tokens(second, "!", 1))

    recorded = events_since(chat, head)
    assert [type(e).__qualname__.split(".")[1] for e in recorded] == [
        "ReplyStarted", "TokensGenerated", "TokensGenerated", "TokensGenerated",
        "ReplyCompleted", "ReplyStarted", "TokensGenerated", "TokensGenerated"]
    tokens = [(e.reply_id, e.index, e.text, e.token_count) for e in recorded
              if type(e).__qualname__ == "ChatSession.TokensGenerated"]
    assert tokens == [(first, 0, "Hel", 2), (first, 1, "lo", 2), (first, 2, " 세계", 2),
                      (second, 0, "Bye", 1), (second, 1, "!", 1)]
    started = recorded[0]
    assert (started.prompt_tokens, started.dropped_turns) == (12, 0)
    completed = recorded[4]
    assert completed.content == "Hello 세계"
    assert {k: getattr(completed, k) for k in OUTCOME} == OUTCOME

    session = chat.get_session(session_id)
    # A finished reply leaves the aggregate's state; the read models keep it.
    assert session.open_replies() == [second]
    reply = session.open_reply(second)
    assert (reply["status"], reply["content"], reply["pieces"], reply["tokens"]) == (
        "streaming", "Bye!", 2, 2)


ENDINGS: dict[str, Callable[[ChatSession, UUID], None]] = {
    "complete": lambda s, r: s.complete_reply(r, **OUTCOME),
    "fail": lambda s, r: s.fail_reply(r, "generation_failed", "boom"),
    "cancel": lambda s, r: s.cancel_reply(r),
    "interrupt": lambda s, r: s.interrupt_reply(r),
}
STATUS = {"complete": "complete", "fail": "failed", "cancel": "cancelled",
          "interrupt": "interrupted"}
EVENT = {"complete": "ReplyCompleted", "fail": "ReplyFailed", "cancel": "ReplyCancelled",
         "interrupt": "ReplyInterrupted"}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_closed_reply_refuses_tokens_and_a_second_ending(
    chat: ChatApplication, ending: str
) -> None:
    user, session_id = user_and_session(chat)
    _, reply_id, _ = chat.post_message(session_id, user.id, "hello", 1)
    chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 5, 0))
    chat.change_reply(session_id, lambda s: s.add_tokens(reply_id, "partial ", 1))
    head = chat.head()
    chat.change_reply(session_id, lambda s: ENDINGS[ending](s, reply_id))
    [ended] = events_since(chat, head)
    assert type(ended).__qualname__ == f"ChatSession.{EVENT[ending]}"
    if ending in ("complete", "cancel", "interrupt"):
        assert ended.content == "partial "  # the text produced so far
    else:
        assert (ended.code, ended.message) == ("generation_failed", "boom")
    session = chat.get_session(session_id)
    assert session.open_replies() == []
    version = session.version

    refused(chat, ReplyNotOpen,
            lambda: chat.change_reply(session_id, lambda s: s.add_tokens(reply_id, "x", 1)))
    refused(chat, ReplyNotOpen,
            lambda: chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 5, 0)))
    for second in ENDINGS.values():
        refused(chat, ReplyNotOpen,
                lambda second=second: chat.change_reply(
                    session_id, lambda s: second(s, reply_id)))
    # A refused command leaves the stored aggregate as it was.
    again = chat.get_session(session_id)
    assert again.version == version and again.open == {}


def test_a_queued_reply_can_be_cancelled_before_it_starts(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    _, reply_id, _ = chat.post_message(session_id, user.id, "hello", 2)
    head = chat.head()
    chat.change_reply(session_id, lambda s: s.cancel_reply(reply_id))
    [cancelled] = events_since(chat, head)
    assert (cancelled.reply_id, cancelled.content) == (reply_id, "")
    refused(chat, ReplyNotOpen,
            lambda: chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 1, 0)))


def test_only_assistant_replies_take_tokens(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    message_id, _, _ = chat.post_message(session_id, user.id, "hello", 1)
    refused(chat, ReplyNotOpen,
            lambda: chat.change_reply(session_id, lambda s: s.add_tokens(message_id, "x", 1)))
    refused(chat, ReplyNotOpen,
            lambda: chat.change_reply(session_id, lambda s: s.add_tokens(uuid4(), "x", 1)))
    refused(chat, NotFound,
            lambda: chat.change_reply(uuid4(), lambda s: s.cancel_reply(message_id)))


def test_regenerate_needs_a_user_message(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    refused(chat, NothingToRegenerate, lambda: chat.regenerate(session_id, user.id, 1))

    message_id, first, _ = chat.post_message(session_id, user.id, "Tell me a joke", 1)
    chat.change_reply(session_id, lambda s: s.start_reply(first, 5, 0))
    chat.change_reply(session_id, lambda s: s.add_tokens(first, "Knock knock", 2))
    chat.change_reply(session_id, lambda s: s.complete_reply(first, **OUTCOME))
    head = chat.head()
    answered, second, position = chat.regenerate(session_id, user.id, 4)
    assert answered == message_id and second not in (first, message_id)
    assert position == chat.head() == head + 1
    [queued] = events_since(chat, head)
    assert (queued.reply_id, queued.in_reply_to, queued.queue_position) == (
        second, message_id, 4)
    session = chat.get_session(session_id)
    assert session.open_replies() == [second]


def test_every_command_returns_the_position_it_recorded(chat: ChatApplication) -> None:
    user, session_id = user_and_session(chat)
    _, reply_id, position = chat.post_message(session_id, user.id, "hi", 1)
    assert position == chat.head()
    assert chat.change_reply(session_id, lambda s: s.start_reply(reply_id, 1, 0)) == chat.head()
    assert chat.log_in(user.id, "t", "a") == chat.head()
    assert chat.update_session(session_id, user.id, "T", {}) == chat.head()
    assert chat.delete_session(session_id, user.id) == chat.head()


def test_head_listeners_hear_every_commit(chat: ChatApplication) -> None:
    heard: list[int] = []
    chat.add_head_listener(heard.append)
    user, session_id = user_and_session(chat)
    chat.post_message(session_id, user.id, "hi", 1)
    # register (3 events), start session, auto-title + message + reply
    assert heard == [3, 4, 7]
    assert heard[-1] == chat.head()


def test_state_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    first = make_app(path)
    user, session_id = user_and_session(first)
    _, reply_id, _ = first.post_message(session_id, user.id, "지속성", 1)
    first.change_reply(session_id, lambda s: s.start_reply(reply_id, 1, 0))
    first.change_reply(session_id, lambda s: s.add_tokens(reply_id, "네", 1))
    head = first.head()
    first.close()

    second = make_app(path)
    try:
        assert second.head() == head
        session = second.get_session(session_id, user.id)
        assert session.title == "지속성"
        assert session.open_reply(reply_id)["content"] == "네"
        assert session.open_reply(reply_id)["pieces"] == 1
        refused(second, UsernameTaken,
                lambda: second.register_user(second.get_user(user.id).username.upper(),
                                             "x@example.com", "h"))
        assert second.register_user("later", "l@example.com", "h").is_admin is False
    finally:
        second.close()


# -- a chat's cost does not grow with its history ------------------------------------------


def answer_many(chat: ChatApplication, turns: int) -> tuple[Any, UUID]:
    user, session_id = user_and_session(chat)
    for n in range(turns):
        _, reply_id, _ = chat.post_message(session_id, user.id, f"질문 {n} " * 20, 1)
        chat.change_reply(session_id, lambda s, r=reply_id: s.start_reply(r, 1, 0))
        chat.change_reply(session_id, lambda s, r=reply_id: s.add_tokens(r, "답변 " * 50, 50))
        chat.change_reply(session_id, lambda s, r=reply_id: s.complete_reply(r, **OUTCOME))
    return user, session_id


def test_the_aggregate_state_stays_the_same_size_as_the_chat_grows(
    chat: ChatApplication,
) -> None:
    _, short = answer_many(chat, 3)
    _, long = answer_many(chat, 60)
    sizes = [len(pickle.dumps(chat.get_session(s).__dict__)) for s in (short, long)]
    # Equal up to the different counters and ids: no finished turn is held.
    assert abs(sizes[0] - sizes[1]) < 64, sizes


def test_a_long_chat_loads_from_a_snapshot_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    first = make_app(path)
    user, session_id = answer_many(first, 60)  # 5 events a turn: 300+ events
    version = first.get_session(session_id).version
    first.close()

    second = make_app(path)
    try:
        assert second.snapshots is not None
        [snapshot] = list(second.snapshots.get(session_id, desc=True, limit=1))
        assert version - snapshot.originator_version < SNAPSHOT_INTERVAL
        replayed = list(second.events.get(session_id, gt=snapshot.originator_version))
        assert len(replayed) == version - snapshot.originator_version
        session = second.get_session(session_id, user.id)
        assert session.version == version and session.open == {}
        # Commands still work on the loaded state.
        _, reply_id, _ = second.post_message(session_id, user.id, "계속", 1)
        assert second.get_session(session_id).open_replies() == [reply_id]
    finally:
        second.close()
