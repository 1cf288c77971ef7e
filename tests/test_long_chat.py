"""Long chats: the page renders the newest 50 messages, older pages load as one scrolls."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.server import Api, ServerProcess
from tests.test_browser import signed_in_page
from tests.test_pages import browser_client

ARTICLE = re.compile(r'<article class="message[^"]*" id="msg-([0-9a-f-]+)"')
OLDER = re.compile(r'hx-get="/chats/[0-9a-f-]+/older\?before=([0-9a-f-]+)"')


def import_chat(api: Api, count: int, title: str = "긴 대화") -> dict[str, Any]:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"메시지 {i}번",
                 "timestamp": "2026-01-02T03:04:05Z"} for i in range(count)]
    response = api.post("/api/sessions/import/", json={
        "format": "localchat.session", "version": 1, "session": {"title": title},
        "messages": messages})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def long_chat(server: ServerProcess, admin: Api) -> tuple[Api, dict[str, Any]]:
    owner = Api(server.url).register()
    return owner, import_chat(owner, 2000)


def test_page_shows_the_newest_50_and_pages_walk_back_to_the_start(
    server: ServerProcess, long_chat: tuple[Api, dict[str, Any]]
) -> None:
    owner, session = long_chat
    stored = [m["id"] for m in owner.get(f"/api/sessions/{session['id']}/messages/").json()]
    assert len(stored) == 2000
    client, _csrf = browser_client(server, owner)
    html = client.get(f"/chats/{session['id']}").text
    shown = ARTICLE.findall(html)
    assert shown == stored[-50:]
    assert "메시지 1999번" in html and "메시지 1949번" not in html
    loaded = shown
    before = OLDER.findall(html)
    assert before == [stored[-50]]
    pages = 0
    while before:
        page = client.get(f"/chats/{session['id']}/older", params={"before": before[0]})
        assert page.status_code == 200
        loaded = ARTICLE.findall(page.text) + loaded
        before = OLDER.findall(page.text)
        pages += 1
    assert loaded == stored and pages == 39
    assert "The beginning of this chat." in page.text and "메시지 0번" in page.text


def test_older_pages_refuse_what_is_not_there(
    server: ServerProcess, user: Api, long_chat: tuple[Api, dict[str, Any]]
) -> None:
    owner, session = long_chat
    client, _csrf = browser_client(server, owner)
    first = owner.get(f"/api/sessions/{session['id']}/messages/").json()[0]["id"]
    path = f"/chats/{session['id']}/older"
    start = client.get(path, params={"before": first})
    assert start.status_code == 200 and not ARTICLE.findall(start.text)
    assert "The beginning of this chat." in start.text
    for before in ("00000000-0000-0000-0000-000000000000", "처음", ""):
        assert client.get(path, params={"before": before}).status_code == 404, before
    stranger, _ = browser_client(server, user)
    assert stranger.get(path, params={"before": first}).status_code == 404
    mine = user.new_session()
    assert stranger.get(f"/chats/{mine['id']}/older",
                        params={"before": first}).status_code == 404


def test_scrolling_up_loads_older_messages(context: BrowserContext,
                                           server: ServerProcess, user: Api) -> None:
    session = import_chat(user, 120, title="스크롤")
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{session['id']}")
    articles = page.locator("#messages article")
    expect(articles).to_have_count(50)
    expect(articles.last).to_contain_text("메시지 119번")
    to_top = "document.getElementById('conversation').scrollTop = 0"
    page.evaluate(to_top)
    expect(articles).not_to_have_count(50)  # the next page came in above
    page.evaluate(to_top)
    expect(page.locator("#chat-start")).to_be_attached()
    expect(articles).to_have_count(120)
    expect(articles.first).to_contain_text("메시지 0번")
    texts = page.locator("#messages article .message__body").all_inner_texts()
    assert texts == [f"메시지 {i}번" for i in range(120)], "in order, none twice"
