"""The runner's fast read path gives exactly what the library gives.

`projections/stored_rows.py` reads the SQLite store's rows itself and decodes them with
orjson instead of `select_notifications` + `Mapper.to_domain_event`. These tests write a
real log holding every event type the domain has (Korean text included) through the real
application and SQLite file, then compare each event of the fast path with the library's,
field by field and type by type; records whose JSON orjson would read differently from
`json` (wide integers, NaN, lone surrogates), unknown custom types and upcast classes must
come out as the mapper makes them too (or fail as it fails). Finally a rebuild through the
fast path must write the same read models as one through the library.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate, event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.audit.chain import verify_chain
from app.event_log import EventLog, LoggedEvent
from app.usecases.timeline import fold
from domain.application import ChatApplication
from domain.sessions import ChatSession
from domain.users import AdminSeat, User, UsernameIndex
from projections.messages import MessagesProjection
from projections.runner import ProjectionRunner
from projections.stored_rows import (
    FastDecoder,
    LibrarySource,
    SQLiteRows,
    StoredRow,
    open_source,
)

AGGREGATES = (User, UsernameIndex, AdminSeat, ChatSession)


def open_app(path: Path) -> ChatApplication:
    return ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                "SQLITE_DBNAME": str(path)})


def domain_event_types() -> set[str]:
    """Every event class the domain's aggregates define ("Aggregate.Event")."""
    return {f"{aggregate.__name__}.{name}" for aggregate in AGGREGATES
            for name, value in vars(aggregate).items()
            if isinstance(value, type) and issubclass(value, Aggregate.Event)
            and name not in ("Event", "Created")}


def write_every_event(app: ChatApplication) -> None:
    """At least one event of every type, through the aggregates and the real store."""
    admin = User(username="관리자", email="admin@example.com", password_hash="해시-1",
                 is_admin=True)
    admin.log_in("토큰-1", "127.0.0.1")
    admin.record_failed_login("10.0.0.1")
    admin.log_in("토큰-2", "::1", ttl=timedelta(0))  # expires 토큰-1 first
    admin.update_profile("관리자@example.com", "김관리")
    admin.change_password("해시-2", keep_token="토큰-2")
    admin.log_out("토큰-2")
    kim = User(username="김민지", email="minji@example.com", password_hash="해시-3",
               is_admin=False)
    seat = AdminSeat(user_id=admin.id)
    seat.add(kim.id)
    kim.grant_admin(admin.id)
    kim.revoke_admin(admin.id)
    seat.remove(kim.id)
    kim.disable(admin.id)
    kim.enable(admin.id)
    app.save(admin, kim, seat, UsernameIndex(username="관리자", user_id=admin.id),
             UsernameIndex(username="김민지", user_id=kim.id))

    chat = ChatSession(owner_id=kim.id, title="", config={
        "system_prompt": "당신은 친절한 도우미입니다.", "temperature": 0.7, "top_p": 0.95,
        "max_tokens": 512, "stop": ["\n\n", "끝"]})
    first = uuid4()
    chat.post_user_message(first, "안녕하세요, 오늘 날씨는 어떤가요? {\"_type_\": \"장난\"}")
    chat.configure({"temperature": 0.2, "tags": ["한국어", 1, 2.5, None, {"깊이": [True]}]})
    chat.rename("날씨 이야기")
    replies = [uuid4() for _ in range(6)]
    for reply in replies[:4]:  # one at a time, each ending its own way
        chat.queue_reply(reply, first, 1)
        chat.start_reply(reply, prompt_tokens=42, dropped_turns=0)
        if reply == replies[0]:
            for piece in ("맑고 ", "따뜻한 ", "하루가 ", "될 거예요. 🌤"):
                chat.add_tokens(reply, piece, 2)
            chat.complete_reply(reply, token_count=8, processing_time=0.41,
                                time_to_first_token=0.13, model_version="SmolLM2-135M",
                                model_params={"temperature": 0.2, "top_p": 0.95},
                                prompt_template="chatml", finish_reason="stop")
        elif reply == replies[1]:
            chat.add_tokens(reply, "중간에 ", 1)
            chat.fail_reply(reply, "model_error", "모델이 응답하지 않습니다")
        elif reply == replies[2]:
            chat.add_tokens(reply, "취소될 ", 1)
            chat.cancel_reply(reply)
        else:
            chat.add_tokens(reply, "끊긴 답", 2)
            chat.interrupt_reply(reply)
    for reply in replies[4:]:  # two waiting together: one written, one stopped unstarted
        chat.queue_reply(reply, first, 1)
    chat.claim_reply(replies[4], 7_340_032_123, "작업자-1")  # as a worker on PostgreSQL
    chat.start_reply(replies[4], prompt_tokens=42, dropped_turns=1)
    chat.add_tokens(replies[4], "함께 ", 1)
    chat.add_tokens(replies[4], "기다린 답", 2)
    chat.complete_reply(replies[4], token_count=3, processing_time=0.2,
                        time_to_first_token=0.1, model_version="SmolLM2-135M",
                        model_params={}, prompt_template="chatml", finish_reason="length")
    chat.cancel_reply(replies[5])
    chat.edit_user_message(first, uuid4(), "내일 날씨는요?")
    chat.import_messages([
        {"role": "user", "content": "가져온 질문", "timestamp": "2025-12-24T10:00:00.000000Z",
         "status": "complete", "token_count": None, "processing_time": None,
         "metadata": {}},
        {"role": "assistant", "content": "가져온 답", "timestamp":
         "2025-12-24T10:00:05.000000Z", "status": "complete", "token_count": 3,
         "processing_time": 1.5, "metadata": {"model_version": "다른 모델"},
         "branch": {"parent": 0, "version_of": None, "on_branch": True}},
    ], source="open-webui")
    chat.delete()
    app.save(chat)


@pytest.fixture
def every_event(tmp_path: Path) -> ChatApplication:
    app = open_app(tmp_path / "events.sqlite")
    write_every_event(app)
    return app


def same_value(fast: Any, library: Any) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True would hide a slip)."""
    if type(fast) is not type(library):
        return False
    if isinstance(fast, dict):
        return (list(fast) == list(library)
                and all(same_value(fast[k], library[k]) for k in fast))
    if isinstance(fast, list | tuple):
        return len(fast) == len(library) and all(
            same_value(a, b) for a, b in zip(fast, library, strict=True))
    if isinstance(fast, float):  # NaN is itself; 0.0 and -0.0 differ
        return (fast != fast and library != library) or (
            fast == library and math.copysign(1, fast) == math.copysign(1, library))
    if isinstance(fast, datetime):
        return fast == library and fast.utcoffset() == library.utcoffset()
    return bool(fast == library)


def assert_same_event(fast: Any, library: Any) -> None:
    assert type(fast) is type(library)
    assert sorted(vars(fast)) == sorted(vars(library))
    for field, value in vars(library).items():
        assert same_value(getattr(fast, field), value), (type(library).__qualname__, field)
    assert fast == library or "nan" in repr(library)  # NaN equals nothing, itself included


def test_the_fast_path_decodes_every_event_type_as_the_mapper_does(
        every_event: ChatApplication) -> None:
    app = every_event
    source = open_source(app)
    assert isinstance(source, SQLiteRows)  # a SQLite file: the fast path applies
    records, events = source.read(0, 10_000)
    notifications, expected = LibrarySource(app).read(0, 10_000)
    assert [type(e).__qualname__ for e in events] == [
        type(e).__qualname__ for e in expected]
    assert {type(e).__qualname__ for e in events} == domain_event_types()
    for record, notification in zip(records, notifications, strict=True):
        assert (record.id, record.originator_id, record.originator_version, record.topic,
                record.state) == (notification.id, UUID(str(notification.originator_id)).hex,
                                  notification.originator_version, notification.topic,
                                  notification.state)
    for fast, library in zip(events, expected, strict=True):
        assert_same_event(fast, library)
    # Records as the library reads them (ids already UUIDs) decode alike too.
    decoder = FastDecoder(app.mapper)
    for notification, library in zip(notifications, expected, strict=True):
        assert_same_event(decoder.decode(notification), library)
    # Read in small batches from any position, as the runner does.
    middle = records[len(records) // 2].id
    later, _ = source.read(middle, 3)
    assert [r.id for r in later] == [r.id for r in records if r.id > middle][:3]
    source.close()
    app.close()


def test_a_store_the_fast_path_does_not_know_is_read_by_the_library() -> None:
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": ":memory:"})
    write_every_event(app)
    source = open_source(app)
    assert isinstance(source, LibrarySource)
    _, events = source.read(0, 10_000)
    assert {type(e).__qualname__ for e in events} == domain_event_types()
    app.close()


class Note(Aggregate):
    """An aggregate of this test's own, for states the domain never writes."""

    @event("Written")
    def __init__(self, payload: Any) -> None:
        self.payload = payload


class Versioned(Aggregate):
    """A class raised to version 3: records stored at version 1 are upcast twice."""

    class Written(Aggregate.Created):
        class_version = 3
        text: str
        language: str
        words: int

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["language"] = "ko"

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["words"] = len(state["text"].split())

    @event(Written)
    def __init__(self, text: str, language: str, words: int) -> None:
        self.text = text


def row(app: ChatApplication, state: bytes | str, topic: str | None = None) -> StoredRow:
    note = Note(payload=None)
    stored = app.mapper.to_stored_event(note.collect_events()[0])
    body = state.encode() if isinstance(state, str) else state
    return StoredRow(7, note.id.hex, 1, topic or stored.topic, body)


def outcome(decode: Any, record: Any) -> tuple[str, Any]:
    try:
        return "event", decode(record)
    except Exception as error:  # the error itself is compared
        return "error", type(error)


def compare(app: ChatApplication, record: StoredRow) -> None:
    """The fast decoder's answer (or error) is the mapper's."""
    decoder = FastDecoder(app.mapper)
    library = app.mapper.to_domain_event
    from eventsourcing.persistence import StoredEvent
    stored = StoredEvent(UUID(record.originator_id), record.originator_version, record.topic,
                         record.state)
    fast_kind, fast = outcome(decoder.decode, record)
    library_kind, expected = outcome(library, stored)
    assert fast_kind == library_kind, (record.state, fast, expected)
    if fast_kind == "event":
        assert_same_event(fast, expected)
    else:
        assert fast is expected


STAMP = '"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-05T09:01:00.250000+09:00"}'


def note_state(payload: str, extra: str = "") -> str:
    """A Note.Written state with `payload` (JSON text) as written, and `extra` fields."""
    return "{" + STAMP + ',"originator_topic":"x","payload":' + payload + extra + "}"


def type_dict(name: str, data: str) -> str:
    return '{"_type_":"' + name + '","_data_":' + data + "}"


HEX = f'"{uuid4().hex}"'
ODD_STATES = [
    # Integers wider than 64 bits: orjson would read them as floats.
    note_state("123456789012345678901234567890"),
    note_state("[-9223372036854775809, 18446744073709551615]"),
    note_state("1e19"),
    note_state("NaN"),  # json reads it; orjson does not
    note_state('"\\ud800 외톨이"'),  # a lone surrogate
    # Custom types nested in lists and dicts, and type dicts wrapping type dicts.
    note_state("[" + type_dict("uuid_hex", HEX) + ',{"가":' + type_dict("decimal_str", '"1.10"')
               + "},[" + type_dict("datetime_iso", '"2026-01-05T09:01:00+00:00"') + "]]"),
    note_state(type_dict("decimal_str", '"3.0"'),
               ',"extra":' + type_dict("uuid_hex", type_dict("uuid_hex", HEX))),
    # Look-alikes that are plain dicts, and names no transcoding has.
    note_state('{"_type_":"uuid_hex"}'),
    note_state('{"_type_":"uuid_hex","_data_":' + HEX + ',"k":1}'),
    note_state('{"_data_":"x","other":"y"}'),
    note_state(type_dict("모름", '"x"')),
    note_state(type_dict("uuid_hex", "42")),
    note_state(type_dict("datetime_iso", '"어제"')),
    # Not an event's state at all.
    "[1, 2]", type_dict("uuid_hex", HEX), "{", "",
    note_state('"a"', ',"payload":"b"'),  # a repeated key
    note_state("-0.0", ',"class_version":1'),
]


@pytest.mark.parametrize("state", ODD_STATES)
def test_records_the_fast_path_cannot_vouch_for_are_decoded_by_the_mapper(
        state: str) -> None:
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": ":memory:"})
    compare(app, row(app, state))
    app.close()


def test_upcasting_runs_as_the_mapper_runs_it() -> None:
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": ":memory:"})
    topic = f"{__name__}:Versioned.Written"
    old = "{" + STAMP + f',"originator_topic":"{__name__}:Versioned","text":"오래된 기록 세 단어"}}'
    compare(app, row(app, old, topic))  # version 1: both upcasts
    compare(app, row(app, old[:-1] + ',"class_version":2,"language":"en"}', topic))
    compare(app, row(app, old[:-1] + ',"class_version":3,"language":"en","words":1}',
                     topic))
    event_ = FastDecoder(app.mapper).decode(row(app, old, topic))
    assert (event_.language, event_.words) == ("ko", 4)  # type: ignore[attr-defined]
    app.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text() | st.uuids() | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values)
def test_any_payload_the_mapper_writes_decodes_alike(payload: Any) -> None:
    app = ChatApplication(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                               "SQLITE_DBNAME": ":memory:"})
    note = Note(payload=payload)
    stored = app.mapper.to_stored_event(note.collect_events()[0])
    compare(app, StoredRow(1, note.id.hex, 1, stored.topic, stored.state))
    app.close()


def dump(path: Path) -> dict[str, list[Any]]:
    db = sqlite3.connect(path)
    tables = [name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " AND name NOT LIKE '%search%' ORDER BY name")]
    found = {table: sorted(map(repr, db.execute(f"SELECT * FROM {table}")))
             for table in tables}
    db.close()
    return found


def test_a_rebuild_through_the_fast_path_writes_what_the_library_path_writes(
        every_event: ChatApplication, tmp_path: Path) -> None:
    app = every_event
    fast = ProjectionRunner(app, tmp_path / "fast.sqlite")
    library = ProjectionRunner(app, tmp_path / "library.sqlite", source=LibrarySource(app))
    assert fast.catch_up() == library.catch_up() == app.head()
    fast.stop()
    library.stop()
    assert dump(tmp_path / "fast.sqlite") == dump(tmp_path / "library.sqlite")
    # The hash chain hashed the records as stored (app/audit/chain.py recomputes it).
    log_db = sqlite3.connect(tmp_path / "events.sqlite")
    read_db = sqlite3.connect(tmp_path / "fast.sqlite")
    report = verify_chain(log_db, read_db)
    assert report.ok and report.checked == app.head()
    # Messages: a reply's gathered token batches give what one event at a time gives.
    one_by_one = sqlite3.connect(tmp_path / "one_by_one.sqlite")
    projection = MessagesProjection()
    projection.create(one_by_one)
    records, events = LibrarySource(app).read(0, 10_000)
    for record, decoded in zip(records, events, strict=True):
        projection.apply(one_by_one, decoded, record.id)
    one_by_one.commit()
    fast_rows = sorted(map(repr, read_db.execute("SELECT * FROM messages")))
    assert fast_rows == sorted(map(repr, one_by_one.execute("SELECT * FROM messages")))
    contents = {row[0] for row in read_db.execute("SELECT content FROM messages")}
    assert "맑고 따뜻한 하루가 될 거예요. 🌤" in contents and "끊긴 답" in contents
    log_db.close()
    read_db.close()
    one_by_one.close()
    app.close()



def test_time_travel_folds_alike_without_decoding_finished_replies_tokens(
        every_event: ChatApplication, tmp_path: Path) -> None:
    """`fold` over events read lazily (decoded when looked at) gives, at every position of
    a chat, what it gives over events all decoded by the mapper and none left out; and the
    token batches of a reply completed by then are never decoded."""
    app = every_event
    notifications = app.recorder.select_notifications(0, 10_000)
    chat_id = next(UUID(str(n.originator_id)) for n in notifications
                   if n.topic.endswith("ChatSession.Started"))
    # A topic that is not the event's keeps `fold` from leaving any token batch out.
    library = [LoggedEvent(n.id, app.mapper.to_domain_event(n), topic="reference:No.Skip")
               for n in notifications if n.originator_id == chat_id]

    async def lazy() -> list[LoggedEvent]:
        log = await EventLog.open(tmp_path / "events.sqlite", app.mapper)
        try:
            return await log.of_originator(chat_id, 0)
        finally:
            await log.close()

    assert [e.position for e in asyncio.run(lazy())] == [e.position for e in library]
    for at in [None, *(e.position for e in library)]:
        assert fold(asyncio.run(lazy()), at) == fold(library, at), at
    events = asyncio.run(lazy())
    moment = fold(events)
    assert any(m["content"] == "맑고 따뜻한 하루가 될 거예요. 🌤" for m in moment.messages)
    undecoded = [e for e in events if e._event is None]
    assert undecoded and all(e.kind == "TokensGenerated" for e in undecoded)
    # The completed reply's four batches; the failed, stopped and cut replies' ones count.
    assert len(undecoded) == 4
    app.close()
