"""Search over one's own messages (keyword + semantic) and retrieval for long-chat context.

In-process: a real ChatApplication on a temporary SQLite file, the keyword projection
driven by a real ProjectionRunner, the real ChromaDB index with the real multilingual
embedding model, followed by the real VectorFollower. Korean text throughout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import aiosqlite
import anyio
import pytest

from app.usecases.errors import InvalidInput
from app.usecases.search import (
    MAX_QUERY_CHARS,
    Hit,
    relevant_messages,
    search,
    search_messages,
    snippet,
)
from domain.application import ChatApplication
from projections import search as search_read
from projections.runner import ProjectionRunner
from projections.search import SearchProjection
from projections.vectors import VectorFollower, VectorIndex
from tests.test_domain import CONFIG, make_app
from tests.test_projections import finish

WEATHER = "오늘 서울 날씨가 맑고 따뜻합니다. 산책하기 좋겠어요."
DOG = "우리 강아지가 요즘 밥을 잘 안 먹어요. 어떻게 해야 할까요?"
STEW = "김치찌개 끓이는 법을 알려줘"
REPORT = "The quarterly REPORT is due on Friday."
SECRET = "비밀 프로젝트 코드명은 블루버드입니다"


@dataclass
class World:
    """An event store, the keyword read model and the vector index, all under one folder."""

    root: Path
    chat: ChatApplication
    runner: ProjectionRunner
    follower: VectorFollower
    users: dict[str, UUID] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def index(self) -> VectorIndex:
        return self.follower.index

    @property
    def read_model(self) -> Path:
        return self.root / "readmodels.sqlite"

    def user(self, name: str) -> UUID:
        self.users[name] = self.chat.register_user(name, f"{name}@example.com", "hash").id
        return self.users[name]

    def session(self, owner: str, title: str = "") -> UUID:
        session_id, _ = self.chat.start_session(self.users[owner], title, CONFIG)
        return session_id

    def say(self, owner: str, session_id: UUID, content: str, reply: str | None = None,
            ending: str = "complete") -> tuple[str, str]:
        """Posts `content` and, with `reply`, answers it: (message_id, reply_id)."""
        message_id, reply_id, _ = self.chat.post_message(
            session_id, self.users[owner], content, 1)
        if reply is not None:
            finish(self.chat, session_id, reply_id, [reply], ending)
        return str(message_id), str(reply_id)

    def settle(self) -> None:
        """Both indexes include everything recorded so far."""
        self.runner.catch_up()
        self.follower.catch_up()
        assert self.follower.position() == self.chat.head()

    def find(self, owner: str, q: str | None, limit: int = 20) -> list[Hit]:
        return anyio.run(self._find, owner, q, limit)

    async def _find(self, owner: str, q: str | None, limit: int) -> list[Hit]:
        async with aiosqlite.connect(self.read_model) as db:
            return await search_messages(db, self.index, str(self.users[owner]), q, limit)

    def keyword(self, owner: str, q: str) -> list[str]:
        async def run() -> list[str]:
            async with aiosqlite.connect(self.read_model) as db:
                found = await search_read.keyword_search(db, str(self.users[owner]), q, 20)
            return [f.message_id for f in found]
        return anyio.run(run)

    def close(self) -> None:
        self.follower.stop()
        self.runner.stop()
        self.chat.close()


def open_world(root: Path) -> World:
    chat = make_app(root / "events.sqlite")
    runner = ProjectionRunner(chat, root / "readmodels.sqlite", [SearchProjection()])
    follower = VectorFollower(chat, VectorIndex(root / "chroma"), root / "vectors.sqlite")
    return World(root, chat, runner, follower)


def populate(world: World) -> World:
    world.user("minji")
    world.user("junho")
    daily = world.session("minji", "일상")
    ids = world.ids
    ids["weather"], ids["weather_reply"] = world.say(
        "minji", daily, WEATHER, "네, 공원에 가 보세요.")
    ids["dog"], ids["dog_reply"] = world.say(
        "minji", daily, DOG, "사료를 바꿔 보거나 수의사와 상담해 보세요.")
    ids["stew"], _ = world.say("minji", daily, STEW)  # its reply is still queued
    work = world.session("minji", "업무")
    ids["report"], ids["failed_reply"] = world.say(
        "minji", work, REPORT, "partial answer", ending="fail")
    ids["script"], _ = world.say("minji", work, "<b>굵게</b> & <script>날씨가</script>")
    other = world.session("junho", "개인")
    ids["secret"], _ = world.say("junho", other, SECRET)
    world.settle()
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One populated world shared by the read-only tests of this module."""
    w = populate(open_world(tmp_path_factory.mktemp("search")))
    yield w
    w.close()


@pytest.fixture
def own_world(tmp_path: Path) -> Iterator[World]:
    """A populated world of the test's own, for tests that change or rebuild it."""
    w = populate(open_world(tmp_path))
    yield w
    w.close()


def ids_of(hits: list[Hit]) -> list[str]:
    return [hit.message_id for hit in hits]


# -- keyword -------------------------------------------------------------------------------


def test_a_korean_substring_matches_and_is_marked(world: World) -> None:
    hits = world.find("minji", "따뜻합")  # the middle of a word: trigram, not word tokens
    assert ids_of(hits)[0] == world.ids["weather"]
    assert "<mark>따뜻합</mark>니다" in hits[0].snippet
    assert hits[0].session_title == "일상"
    assert hits[0].session_id and hits[0].score > 0


def test_short_korean_words_fall_back_to_a_scan_of_ones_own_messages(world: World) -> None:
    # Two characters, and one: too short for trigrams.
    assert world.ids["weather"] in ids_of(world.find("minji", "날씨"))
    assert world.ids["dog"] in ids_of(world.find("minji", "밥"))
    assert world.keyword("minji", "블루") == []
    assert world.keyword("junho", "블루") == [world.ids["secret"]]


def test_every_word_must_match(world: World) -> None:
    assert world.keyword("minji", "강아지가 밥을") == [world.ids["dog"]]
    assert world.keyword("minji", "강아지가 김치찌개") == []


def test_english_matches_regardless_of_case_and_keeps_the_original_case(world: World) -> None:
    hits = world.find("minji", "report")
    assert ids_of(hits)[0] == world.ids["report"]
    assert "<mark>REPORT</mark>" in hits[0].snippet


def test_finished_replies_are_found_unfinished_and_failed_ones_are_not(world: World) -> None:
    assert world.keyword("minji", "수의사") == [world.ids["dog_reply"]]
    assert world.keyword("minji", "partial") == []


def test_snippets_are_escaped_html(world: World) -> None:
    hits = world.find("minji", "날씨가")
    script = next(hit for hit in hits if hit.message_id == world.ids["script"])
    assert script.snippet == (
        "&lt;b&gt;굵게&lt;/b&gt; &amp; &lt;script&gt;<mark>날씨가</mark>&lt;/script&gt;")


def test_search_returns_the_api_shape(world: World) -> None:
    @dataclass
    class Deps:
        read_db: aiosqlite.Connection
        vectors: VectorIndex | None

    async def run() -> list[dict[str, Any]]:
        async with aiosqlite.connect(world.read_model) as db:
            return await search(Deps(db, world.index), str(world.users["minji"]), "따뜻합", 5)

    results = anyio.run(run)
    assert set(results[0]) == {"session_id", "session_title", "message_id", "snippet", "score"}
    assert results[0]["message_id"] == world.ids["weather"]


# -- semantic ------------------------------------------------------------------------------


def test_a_paraphrase_without_a_shared_word_is_found(world: World) -> None:
    query = "반려견 식욕이 없음"  # "pet dog has no appetite": no word in common with DOG
    assert world.keyword("minji", query) == []
    assert ids_of(world.find("minji", query))[0] == world.ids["dog"]
    weather = ids_of(world.find("minji", "기온이 높고 화창한 날"))
    assert weather[0] == world.ids["weather"]
    assert world.ids["stew"] not in weather


def test_a_query_about_nothing_one_wrote_finds_nothing(world: World) -> None:
    assert world.find("minji", "자동차 보험료 비교") == []


def test_another_users_messages_are_never_found(world: World) -> None:
    for query in ("블루버드", "비밀 프로젝트 코드명", "기밀 작전의 이름", "블", "코드명은"):
        assert world.ids["secret"] not in ids_of(world.find("minji", query)), query
    assert ids_of(world.find("junho", "기밀 작전의 이름")) == [world.ids["secret"]]
    assert ids_of(world.find("junho", "블루버드")) == [world.ids["secret"]]
    assert world.find("junho", "따뜻합") == []


def test_edited_and_imported_messages_are_found(own_world: World) -> None:
    w = own_world
    daily = UUID(w.find("minji", "따뜻합")[0].session_id)
    new_id, _, _ = w.chat.edit_message(daily, w.users["minji"], UUID(w.ids["stew"]),
                                       "된장찌개 끓이는 법을 알려줘", 1)
    imported, _ = w.chat.import_session(w.users["minji"], "가져온 대화", CONFIG, [
        {"role": "user", "content": "제주도 한라산 등반 코스를 추천해 주세요",
         "timestamp": "2026-01-02T03:04:05.000000Z", "status": "complete",
         "token_count": None, "processing_time": None, "metadata": {}},
        {"role": "assistant", "content": "성판악 코스가 가장 완만합니다",
         "timestamp": "2026-01-02T03:04:06.000000Z", "status": "complete",
         "token_count": 5, "processing_time": 0.5, "metadata": {}},
    ], "localchat")
    w.settle()
    assert w.keyword("minji", "된장찌개") == [str(new_id)]
    assert [hit.session_id for hit in w.find("minji", "성판악")] == [str(imported)]
    related = w.index.related(str(imported), "산에 오르는 여행 준비", [], 2)
    assert [r.role for r in related] == ["user", "assistant"]


# -- deletion, rebuild, crash ----------------------------------------------------------------


def test_a_deleted_sessions_messages_are_not_found(own_world: World) -> None:
    w = own_world
    daily = UUID(w.find("minji", "따뜻합")[0].session_id)
    w.chat.delete_session(daily, w.users["minji"])
    w.runner.catch_up()
    # Before the vector index has seen the deletion: its suggestions are checked.
    for query in ("따뜻합", "날씨", "반려견 식욕이 없음", "수의사"):
        found = ids_of(w.find("minji", query))
        assert not {w.ids["weather"], w.ids["dog"], w.ids["dog_reply"]} & set(found), query
    w.follower.catch_up()
    assert w.index.related(str(daily), "날씨", [], 10) == []
    assert w.ids["report"] in ids_of(w.find("minji", "report"))


def test_a_reply_ending_after_its_session_was_deleted_stays_out(own_world: World) -> None:
    w = own_world
    session = w.session("minji")
    _, reply_id = w.say("minji", session, "유령 메시지 테스트")
    w.chat.delete_session(session, w.users["minji"])
    finish(w.chat, session, UUID(reply_id), ["유령 답변입니다"])
    w.settle()
    assert w.keyword("minji", "유령") == []
    assert w.index.related(str(session), "유령", [], 10) == []


def keyword_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {
            "sessions": sorted(db.execute("SELECT * FROM search_sessions").fetchall()),
            "messages": sorted(db.execute("SELECT * FROM search_messages").fetchall()),
            "text": sorted(db.execute("SELECT rowid, content FROM search_text").fetchall()),
        }
    finally:
        db.close()


def vector_rows(index: VectorIndex) -> list[tuple[str, str, str]]:
    got = index._collection.get(include=["documents", "metadatas"])
    return sorted((mid, doc or "", repr(sorted((meta or {}).items())))
                  for mid, doc, meta in zip(got["ids"], got["documents"] or [],
                                            got["metadatas"] or [], strict=True))


def test_rebuild_gives_the_same_indexes(own_world: World) -> None:
    w = own_world
    session = w.session("minji")
    w.say("minji", session, "곧 지워질 대화")
    w.chat.delete_session(session, w.users["minji"])
    w.settle()
    keyword, vectors = keyword_rows(w.read_model), vector_rows(w.index)
    results = [ids_of(w.find("minji", q)) for q in ("날씨", "반려견 식욕이 없음", "report")]
    assert len(vectors) == len(keyword["messages"]) == 8

    w.runner.request_rebuild("search")
    w.runner.catch_up()
    assert w.follower.rebuild() == w.chat.head()

    assert keyword_rows(w.read_model) == keyword
    assert vector_rows(w.index) == vectors
    assert [ids_of(w.find("minji", q)) for q in ("날씨", "반려견 식욕이 없음", "report")] == results


def test_a_crash_between_index_writes_and_the_position_repeats_nothing(
        own_world: World) -> None:
    """The crash is simulated by putting the stored position back, as if the commit after
    the ChromaDB writes had never happened: the replay must change nothing."""
    w = own_world
    before = vector_rows(w.index)
    w.follower.stop()
    db = sqlite3.connect(w.root / "vectors.sqlite")
    with db:
        db.execute("UPDATE vector_position SET position = 0")
        db.execute("DELETE FROM vector_sessions")
    db.close()

    w.follower = VectorFollower(w.chat, VectorIndex(w.root / "chroma"),
                                w.root / "vectors.sqlite")
    assert w.follower.position() == 0
    assert w.follower.catch_up() == w.chat.head()
    assert vector_rows(w.index) == before


def test_the_follower_thread_indexes_new_messages_and_remembers_its_position(
        own_world: World) -> None:
    w = own_world
    w.follower.start()
    session = w.session("minji", "여행")
    message_id, _ = w.say("minji", session, "다음 달에 제주도 한라산 등반을 계획하고 있어요")
    w.follower.wake()
    assert w.follower.wait_for(w.chat.head(), timeout=60)
    w.runner.catch_up()
    assert ids_of(w.find("minji", "산에 오르는 여행 준비"))[0] == message_id
    count, head = w.index.count(), w.chat.head()
    w.follower.stop()

    w.follower = VectorFollower(w.chat, VectorIndex(w.root / "chroma"),
                                w.root / "vectors.sqlite")
    assert w.follower.position() == head
    assert w.follower.catch_up() == head and w.index.count() == count


def test_the_follower_waits_while_replies_are_generated(own_world: World) -> None:
    """Embedding takes the cores the model decodes on: nothing is embedded while `busy`
    says replies are being generated; once it says no, the message is indexed."""
    w = own_world
    w.follower.stop()
    head_seen: list[tuple[int, int]] = []

    def busy() -> bool:  # asked by the follower's thread: is anything still not indexed?
        head_seen.append((w.follower.position(), w.chat.head()))
        return len(head_seen) < 4

    w.follower = VectorFollower(w.chat, VectorIndex(w.root / "chroma"),
                                w.root / "vectors.sqlite", busy=busy)
    session = w.session("minji", "산책")
    w.say("minji", session, "저녁마다 한강 공원을 걸어요")
    head = w.chat.head()
    w.follower.start()
    w.follower.wake()
    assert w.follower.wait_for(head, timeout=60)
    # Every answer "busy" was given while the new message was not yet indexed.
    assert len(head_seen) >= 4
    assert all(position < head == seen for position, seen in head_seen[:3])


def test_a_server_never_idle_still_gets_its_index(own_world: World) -> None:
    w = own_world
    w.follower.stop()
    asked = threading.Event()

    def always_busy() -> bool:
        asked.set()
        return True

    w.follower = VectorFollower(w.chat, VectorIndex(w.root / "chroma"),
                                w.root / "vectors.sqlite", busy=always_busy, max_defer=0.3)
    session = w.session("minji", "요리")
    w.say("minji", session, "된장찌개에 두부를 넣었어요")
    w.follower.start()
    w.follower.wake()
    assert w.follower.wait_for(w.chat.head(), timeout=60)
    assert asked.is_set()


# -- bad queries ---------------------------------------------------------------------------


@pytest.mark.parametrize(("q", "limit", "field"), [
    ("", 10, "q"), ("   \n\t", 10, "q"), (None, 10, "q"), ("가" * (MAX_QUERY_CHARS + 1), 10, "q"),
    ("날씨\x00", 10, "q"), ("날씨", 0, "limit"), ("날씨", 101, "limit"),
])
def test_bad_queries_are_refused(world: World, q: str | None, limit: int, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.find("minji", q, limit)
    assert refused.value.field == field


def test_the_longest_query_is_accepted(world: World) -> None:
    assert isinstance(world.find("minji", "날" * MAX_QUERY_CHARS), list)


def test_queries_with_fts_syntax_are_plain_text(world: World) -> None:
    for query in ('"날씨가', "NOT AND OR", "날씨* (맑고", "col:umn ^x", "100%", "a_b\\"):
        assert isinstance(world.find("minji", query), list), query


# -- snippets ------------------------------------------------------------------------------


def test_a_snippet_centres_on_the_first_match_and_marks_every_one() -> None:
    text = "가" * 300 + " 날씨 " + "나" * 20 + " 날씨 " + "다" * 300
    cut = snippet(text, ["날씨"])
    assert cut.startswith("…") and cut.endswith("…")
    assert cut.count("<mark>날씨</mark>") == 2
    assert len(cut.replace("<mark>", "").replace("</mark>", "")) <= 162


def test_a_snippet_without_a_literal_match_is_the_beginning() -> None:
    assert snippet("첫 줄\n둘째 줄 <i>", ["없는말"]) == "첫 줄 둘째 줄 &lt;i&gt;"


# -- context retrieval -----------------------------------------------------------------------


def test_relevant_messages_put_back_the_older_turns_about_the_new_message(
        world: World) -> None:
    daily = world.find("minji", "따뜻합")[0].session_id
    found = relevant_messages(world.index, daily, "우리 개가 사료를 거부해요",
                              [world.ids["dog_reply"]], 3)
    assert found[0][:2] == (world.ids["dog"], "user")
    assert found[0][2] == DOG
    assert world.ids["dog_reply"] not in [f[0] for f in found]
    assert len(found) <= 3 and all(isinstance(f[3], float) for f in found)
    # Only that session's messages.
    daily_ids = {world.ids[k] for k in ("weather", "weather_reply", "dog", "stew")}
    assert {f[0] for f in found} <= daily_ids
    assert relevant_messages(None, daily, "개", [], 3) == []
    assert relevant_messages(world.index, daily, "  ", [], 3) == []


def test_calls_of_the_llm_api_are_never_found(tmp_path: Path) -> None:
    """A /v1 or generate call runs as a hidden session (config origin "api"): its prompt
    and answer are the caller's API traffic, not a chat of theirs to search."""
    world = open_world(tmp_path)
    try:
        owner = world.user("api_user")
        hidden, _ = world.chat.start_session(owner, "", {**CONFIG, "origin": "api"})
        _, reply_id, _ = world.chat.post_message(hidden, owner, "블루버드 작전 개요", 1)
        finish(world.chat, hidden, reply_id, ["블루버드 작전은 비밀입니다"])
        chat = world.session("api_user", "대화")
        shown, _ = world.say("api_user", chat, "블루버드는 새 이름이에요")
        world.settle()
        assert [hit.message_id for hit in world.find("api_user", "블루버드")] == [shown]
    finally:
        world.close()
