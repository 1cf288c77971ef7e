"""Chat sessions over the JSON API: list and search, create, read, update, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.postgres import both_stores
from tests.server import Api, assert_error, is_iso_utc

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
DEFAULT_CONFIG = {"system_prompt": "You are a helpful assistant.", "temperature": 0.7,
                  "max_tokens": 512, "top_p": 0.95, "model": MODEL_ID}
SUMMARY_KEYS = {"id", "title", "created_at", "updated_at", "message_count"}


def assert_session_shape(session: dict[str, Any]) -> None:
    assert set(session) == SUMMARY_KEYS | {"config"}
    assert str(uuid.UUID(session["id"])) == session["id"]
    assert isinstance(session["title"], str) and session["title"]
    assert is_iso_utc(session["created_at"]) and is_iso_utc(session["updated_at"])
    assert session["updated_at"] >= session["created_at"]
    assert isinstance(session["message_count"], int)
    config = session["config"]
    assert set(config) == set(DEFAULT_CONFIG)
    assert isinstance(config["system_prompt"], str) and isinstance(config["model"], str)
    assert isinstance(config["temperature"], float) and isinstance(config["top_p"], float)
    assert isinstance(config["max_tokens"], int) and not isinstance(config["max_tokens"], bool)


def test_create_with_defaults(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    response = user.post("/api/sessions/", json={})
    assert response.status_code == 201, response.text
    session = response.json()
    assert_session_shape(session)
    assert session["title"] == "New chat" and session["message_count"] == 0
    assert session["config"] == DEFAULT_CONFIG
    assert session["created_at"] == session["updated_at"]
    [started] = admin.events(after=before)
    assert started["type"] == "ChatSession.Started"
    assert started["originator_id"] == session["id"]
    assert started["data"]["owner_id"] == user.user["id"]
    # An empty body is the same as {}.
    bare = user.post("/api/sessions/")
    assert bare.status_code == 201 and bare.json()["config"] == DEFAULT_CONFIG


@pytest.mark.parametrize(("field", "value"), [
    ("title", "주간 회의록 (weekly)"),
    ("system_prompt", "당신은 친절한 비서입니다. Answer in Korean."),
    ("system_prompt", ""),
    ("temperature", 0),
    ("temperature", 1.35),
    ("max_tokens", 1),
    ("max_tokens", 64),
    ("top_p", 0.5),
    ("top_p", 1),
    ("model", MODEL_ID),
])
def test_create_with_each_field(user: Api, field: str, value: Any) -> None:
    session = user.new_session(**{field: value})
    assert_session_shape(session)
    if field == "title":
        assert session["title"] == value
        assert session["config"] == DEFAULT_CONFIG
    else:
        assert session["title"] == "New chat"
        assert session["config"] == {**DEFAULT_CONFIG, field: value}
    assert user.get(f"/api/sessions/{session['id']}/").json() == session


def test_create_with_every_field(user: Api) -> None:
    fields = {"title": "  Trimmed title  ", "system_prompt": "Be terse.", "temperature": 2,
              "max_tokens": 4095, "top_p": 0, "model": MODEL_ID}
    session = user.new_session(**fields)
    assert session["title"] == "Trimmed title"
    assert session["config"] == {"system_prompt": "Be terse.", "temperature": 2.0,
                                 "max_tokens": 4095, "top_p": 0.0, "model": MODEL_ID}
    # A blank title falls back to the default.
    assert user.new_session(title="   ")["title"] == "New chat"


def test_get_returns_the_session(user: Api) -> None:
    created = user.new_session(title="읽기", temperature=0.2)
    response = user.get(f"/api/sessions/{created['id']}/")
    assert response.status_code == 200
    assert response.json() == created
    # Ids are UUIDs: other spellings of the same UUID name the same session.
    assert user.get(f"/api/sessions/{created['id'].upper()}/").json() == created
    assert user.get(f"/api/sessions/{created['id'].replace('-', '')}/").json() == created


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_update_changes_only_the_given_fields(user: Api, admin: Api, method: str) -> None:
    created = user.new_session(title="Before", top_p=0.8)
    path = f"/api/sessions/{created['id']}/"
    before = admin.quiet_head()
    response = user.http.request(method, path, json={"title": " 이후 ", "temperature": 1.5,
                                                     "max_tokens": 100})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert_session_shape(updated)
    assert updated["id"] == created["id"] and updated["created_at"] == created["created_at"]
    assert updated["title"] == "이후"
    assert updated["config"] == {**DEFAULT_CONFIG, "top_p": 0.8, "temperature": 1.5,
                                 "max_tokens": 100}
    assert updated["updated_at"] > created["updated_at"]
    assert user.get(path).json() == updated
    assert [e["type"] for e in admin.events(after=before)] == [
        "ChatSession.Renamed", "ChatSession.Configured"]

    for field, value in (("system_prompt", "새 프롬프트"), ("top_p", 0.1), ("model", MODEL_ID)):
        changed = user.http.request(method, path, json={field: value}).json()
        assert changed["config"][field] == value and changed["title"] == "이후"

    # Nothing different: 200, the same session, no event.
    head = admin.quiet_head()
    same = user.http.request(method, path, json={"title": "이후", "top_p": 0.1})
    assert same.status_code == 200 and same.json() == user.get(path).json()
    assert user.http.request(method, path, json={}).status_code == 200
    assert admin.head() == head


def test_an_empty_title_cannot_replace_a_title(user: Api, admin: Api) -> None:
    created = user.new_session(title="Keep me")
    before = admin.quiet_head()
    for title in ("", "   "):
        response = user.put(f"/api/sessions/{created['id']}/", json={"title": title})
        assert_error(response, 400, "invalid_input", "title")
    assert admin.head() == before
    assert user.get(f"/api/sessions/{created['id']}/").json()["title"] == "Keep me"


def test_delete_answers_204_and_keeps_the_history_for_audit(user: Api, admin: Api) -> None:
    session = user.new_session(title="지울 세션", max_tokens=16)
    posted = user.post_message(session["id"], "Hello")
    user.wait_reply(session["id"], posted["reply"]["id"])
    path = f"/api/sessions/{session['id']}/"

    response = user.delete(path)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(user.get(path), 404, "not_found")
    assert_error(user.get(f"{path}messages/"), 404, "not_found")
    assert_error(user.delete(path), 404, "not_found")
    assert session["id"] not in [s["id"] for s in user.get("/api/sessions/").json()]
    history = admin.events(originator_id=session["id"])
    types = [e["type"] for e in history]
    assert types[0] == "ChatSession.Started" and types[-1] == "ChatSession.Deleted"
    assert "ChatSession.UserMessagePosted" in types and "ChatSession.ReplyCompleted" in types


def test_list_shape_and_order_most_recently_updated_first(user: Api) -> None:
    first = user.new_session(title="first")
    second = user.new_session(title="second")
    third = user.new_session(title="third")
    listed = user.get("/api/sessions/").json()
    assert [s["id"] for s in listed] == [third["id"], second["id"], first["id"]]
    for summary in listed:
        assert set(summary) == SUMMARY_KEYS
        assert is_iso_utc(summary["created_at"]) and is_iso_utc(summary["updated_at"])
    # Updating the oldest moves it to the top.
    user.patch(f"/api/sessions/{first['id']}/", json={"title": "first, renamed"})
    listed = user.get("/api/sessions/").json()
    assert [s["title"] for s in listed] == ["first, renamed", "third", "second"]
    summary = {k: v for k, v in user.get(f"/api/sessions/{second['id']}/").json().items()
               if k != "config"}
    assert listed[2] == summary


def test_list_shows_only_the_callers_sessions(user: Api, anon: Api) -> None:
    mine = user.new_session(title="mine")
    other = anon.register()
    other.new_session(title="theirs")
    assert [s["id"] for s in user.get("/api/sessions/").json()] == [mine["id"]]
    assert [s["title"] for s in other.get("/api/sessions/").json()] == ["theirs"]


def test_list_limit(user: Api) -> None:
    ids = [user.new_session(title=f"s{i}")["id"] for i in range(4)]
    assert [s["id"] for s in user.get("/api/sessions/", params={"limit": 2}).json()] == [
        ids[3], ids[2]]
    assert len(user.get("/api/sessions/", params={"limit": 1}).json()) == 1
    assert len(user.get("/api/sessions/", params={"limit": 500}).json()) == 4
    assert len(user.get("/api/sessions/", params={"limit": ""}).json()) == 4
    for bad in ("0", "501", "-1", "abc", "1.5"):
        assert_error(user.get("/api/sessions/", params={"limit": bad}), 400, "invalid_input",
                     "limit")


def test_list_search_by_title_and_message_text(user: Api) -> None:
    weather = user.new_session(title="날씨 이야기", max_tokens=16)
    cooking = user.new_session(title="Cooking Plans", max_tokens=16, temperature=0)
    user.new_session(title="Unrelated")
    posted = user.post_message(cooking["id"], "김치찌개 만드는 법 알려줘")
    user.wait_reply(cooking["id"], posted["reply"]["id"])

    def search(q: str) -> list[str]:
        response = user.get("/api/sessions/", params={"q": q})
        assert response.status_code == 200, response.text
        return [s["title"] for s in response.json()]

    assert search("날씨") == ["날씨 이야기"]  # by title
    assert search("김치찌개") == ["Cooking Plans"]  # by message text
    assert search("cooking") == ["Cooking Plans"]  # ASCII case-insensitive
    assert search("  날씨  ") == ["날씨 이야기"]  # surrounding spaces ignored
    assert search("없는 단어") == []
    assert sorted(search("")) == sorted(["날씨 이야기", "Cooking Plans", "Unrelated"])
    assert len(user.get("/api/sessions/", params={"q": "a", "limit": 1}).json()) == 1
    # LIKE wildcards are taken literally.
    assert search("%") == [] and search("_") == []
    user.patch(f"/api/sessions/{weather['id']}/", json={"title": "100% 날씨_예보"})
    assert search("%") == ["100% 날씨_예보"] and search("_") == ["100% 날씨_예보"]
    assert_error(user.get("/api/sessions/", params={"q": "x" * 501}), 400, "invalid_input", "q")
    assert user.get("/api/sessions/", params={"q": "x" * 500}).json() == []


def test_search_never_finds_other_users_messages(user: Api, anon: Api) -> None:
    other = anon.register()
    secret = f"비밀{uuid.uuid4().hex[:6]}"
    theirs = other.new_session(title=secret, max_tokens=16)
    posted = other.post_message(theirs["id"], secret)
    other.wait_reply(theirs["id"], posted["reply"]["id"])
    assert user.get("/api/sessions/", params={"q": secret}).json() == []
    assert [s["id"] for s in other.get("/api/sessions/", params={"q": secret}).json()] == [
        theirs["id"]]


def test_korean_and_other_unicode_round_trip_exactly(user: Api) -> None:
    decomposed = "\u1112\u1161\u11ab\u1100\u1173\u11af"  # 한글 as conjoining jamo (NFD)
    title = f"한국어 제목 🇰🇷 {decomposed} ﷽ e\u0301"
    prompt = "모든 답을 존댓말로 하세요.\n둘째 줄\t탭"
    session = user.new_session(title=title, system_prompt=prompt)
    assert session["title"] == title and session["config"]["system_prompt"] == prompt
    fetched = user.get(f"/api/sessions/{session['id']}/").json()
    assert fetched["title"] == title and fetched["config"]["system_prompt"] == prompt
    assert [s["title"] for s in user.get("/api/sessions/", params={"q": decomposed}).json()] \
        == [title]
    # Composed 한글 is a different string from the decomposed one and is not matched.
    assert user.get("/api/sessions/", params={"q": "한글"}).json() == []
