"""Search over HTTP: GET /api/search/, the sidebar's results fragment, and the jump to a
found message in the browser. Against the shared real server (real model, real stores)."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import BrowserContext, expect

from tests.postgres import both_stores
from tests.server import Api, ServerProcess, assert_error
from tests.test_browser import signed_in_page

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

GARDEN = "베란다 텃밭에서 방울토마토를 키우고 있는데 잎이 노랗게 변해요"


def chat_with(api: Api, *texts: str) -> tuple[str, list[str]]:
    """A session of `api`'s user holding `texts` as its user messages: (session, ids)."""
    session = api.new_session(title="텃밭 일기", max_tokens=8)
    ids = []
    for text in texts:
        posted = api.post_message(session["id"], text)
        ids.append(posted["message"]["id"])
        api.wait_reply(session["id"], posted["reply"]["id"])
    return session["id"], ids


def search(api: Api, q: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/search/", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return list(response.json())


def test_search_finds_ones_own_korean_messages(user: Api, anon: Api) -> None:
    session_id, (message_id,) = chat_with(user, GARDEN)
    found = search(user, "방울토마토")
    assert found[0]["message_id"] == message_id
    assert found[0]["session_id"] == session_id and found[0]["session_title"] == "텃밭 일기"
    assert "<mark>방울토마토</mark>" in found[0]["snippet"]
    assert isinstance(found[0]["score"], float)
    assert search(user, "방울토마토", limit=1) == found[:1]

    stranger = anon.register()
    assert search(stranger, "방울토마토") == []


def test_a_paraphrase_is_found_once_embedded(user: Api) -> None:
    _, (message_id,) = chat_with(user, GARDEN)
    query = "식물 이파리 변색"  # "plant leaf discolouration": no word in common with GARDEN
    deadline = time.monotonic() + 60  # the vector follower embeds in the background
    found: list[str] = []
    while time.monotonic() < deadline and message_id not in found:
        found = [hit["message_id"] for hit in search(user, query)]
        time.sleep(0.2)
    assert message_id in found


def test_bad_search_requests(user: Api, anon: Api) -> None:
    assert_error(user.get("/api/search/"), 400, "invalid_input", "q")
    assert_error(user.get("/api/search/", params={"q": "   "}), 400, "invalid_input", "q")
    assert_error(user.get("/api/search/", params={"q": "가" * 501}), 400, "invalid_input", "q")
    assert_error(user.get("/api/search/", params={"q": "a", "limit": "0"}), 400,
                 "invalid_input", "limit")
    assert_error(user.get("/api/search/", params={"q": "a", "limit": "x"}), 400,
                 "invalid_input", "limit")
    assert_error(anon.get("/api/search/", params={"q": "a"}), 401)


def test_deleted_sessions_are_not_searched(user: Api) -> None:
    session_id, _ = chat_with(user, "삭제될 대화의 고유한 문장 블루베리잼")
    assert search(user, "블루베리잼")
    assert user.delete(f"/api/sessions/{session_id}/").status_code == 204
    assert search(user, "블루베리잼") == []


def test_the_sidebar_fragment_links_to_the_message(user: Api, server: ServerProcess) -> None:
    session_id, (message_id,) = chat_with(user, "<b>굵은</b> 글씨의 방울토마토")
    assert user.token
    as_browser = {"Authorization": "", "Cookie": f"session={user.token}"}
    fragment = user.http.get("/search", params={"q": "방울토마토"}, headers=as_browser)
    assert fragment.status_code == 200
    assert f'href="/chats/{session_id}#msg-{message_id}"' in fragment.text
    assert "&lt;b&gt;굵은&lt;/b&gt;" in fragment.text and "<b>" not in fragment.text
    empty = user.http.get("/search", params={"q": " "}, headers=as_browser)
    assert empty.status_code == 200 and "search-result" not in empty.text


def test_a_result_opens_the_chat_at_the_highlighted_message(
        context: BrowserContext, server: ServerProcess, user: Api) -> None:
    filler = [f"채팅 {i}번째 메시지입니다" for i in range(12)]
    session_id, ids = chat_with(user, "첫 메시지: 오래된 구아바 이야기", *filler)
    other = user.new_session(title="다른 대화")
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{other['id']}")
    page.fill("#search-q", "구아바")
    result = page.locator(f'#search-results a[href$="#msg-{ids[0]}"]')
    expect(result).to_be_visible()
    expect(result.locator("mark")).to_have_text("구아바")
    result.click()
    page.wait_for_url(f"**/chats/{session_id}#msg-{ids[0]}")
    found = page.locator(f"#msg-{ids[0]}")
    expect(found).to_have_class("message message--user message--found")
    expect(found).to_be_in_viewport()
