"""An edit made in one window reaches the other windows open on the same chat."""

from __future__ import annotations

from playwright.sync_api import BrowserContext, expect

from tests.server import Api, ServerProcess
from tests.test_branches import turn
from tests.test_browser import signed_in_page


def test_another_window_is_told_to_reload_after_an_edit(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    session = user.new_session(max_tokens=8)
    sid = session["id"]
    first = turn(user, sid, "처음 질문")
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{sid}")
    expect(page.locator("article.message--user")).to_have_count(1)
    expect(page.locator("#toasts .toast")).to_have_count(0)

    edited = user.post(f"/api/sessions/{sid}/messages/{first['message']['id']}/edit/",
                       json={"content": "고친 질문"})
    assert edited.status_code == 202, edited.text

    toast = page.locator("#toasts .toast")
    expect(toast).to_have_count(1, timeout=30_000)
    link = toast.get_by_role("link")
    expect(link).to_have_attribute("href", f"/chats/{sid}")
    link.click()
    expect(page.locator("article.message--user .message__body")).to_have_text("고친 질문")
    user.wait_reply(sid, edited.json()["reply"]["id"])
