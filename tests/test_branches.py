"""Editing a sent message: a new branch with a fresh reply; old versions stay viewable."""

from __future__ import annotations

import sqlite3
from typing import Any

from playwright.sync_api import BrowserContext, expect

from tests.server import ROOT, Api, ServerProcess
from tests.test_browser import send_in_chat, signed_in_page
from tests.test_pages import browser_client

ARTIFACTS = ROOT / "test-artifacts"


def turn(api: Api, session_id: str, text: str) -> dict[str, Any]:
    posted = api.post_message(session_id, text)
    api.wait_reply(session_id, posted["reply"]["id"])
    return posted


def contents(api: Api, session_id: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"] if m["role"] == "user" else "…")
            for m in api.get(f"/api/sessions/{session_id}/messages/").json()]


def history(server: ServerProcess, session_id: str, reply_id: str) -> list[str]:
    """What the model was given for a reply, read as the actor reads it."""
    from projections.messages import history_before

    db = sqlite3.connect(f"file:{server.data_dir / 'readmodels.sqlite'}?mode=ro", uri=True)
    try:
        return [content for _id, role, content in history_before(db, session_id, reply_id,
                                                                   100_000) if role == "user"]
    finally:
        db.close()


def test_edit_starts_a_branch_and_keeps_the_old_one(server: ServerProcess, user: Api) -> None:
    session = user.new_session(max_tokens=8)
    sid = session["id"]
    first = turn(user, sid, "첫 번째 질문")
    turn(user, sid, "두 번째 질문")
    third = turn(user, sid, "세 번째 질문")
    second_id = user.get(f"/api/sessions/{sid}/messages/").json()[2]["id"]

    edited = user.post(f"/api/sessions/{sid}/messages/{second_id}/edit/",
                       json={"content": "고친 두 번째 질문"})
    assert edited.status_code == 202, edited.text
    body = edited.json()
    assert body["message"]["content"] == "고친 두 번째 질문" and body["message"]["role"] == "user"
    assert body["reply"]["status"] == "queued"
    user.wait_reply(sid, body["reply"]["id"])
    assert contents(user, sid) == [("user", "첫 번째 질문"), ("assistant", "…"),
                                   ("user", "고친 두 번째 질문"), ("assistant", "…")]
    # The model saw the new branch only: the first question and the edited one.
    assert history(server, sid, body["reply"]["id"]) == ["첫 번째 질문", "고친 두 번째 질문"]

    versions = user.get(f"/api/sessions/{sid}/messages/{second_id}/versions/").json()
    assert [(v["content"], v["current"]) for v in versions["versions"]] == [
        ("두 번째 질문", False), ("고친 두 번째 질문", True)]
    # A message posted now continues the new branch.
    fourth = turn(user, sid, "네 번째 질문")
    assert history(server, sid, fourth["reply"]["id"]) == [
        "첫 번째 질문", "고친 두 번째 질문", "네 번째 질문"]
    assert first["message"]["id"] != body["message"]["id"]
    assert third["message"]["id"] not in {m["id"] for m in
                                          user.get(f"/api/sessions/{sid}/messages/").json()}

    # The old branch is viewable in the page, with everything that followed it.
    client, _csrf = browser_client(server, user)
    old = client.get(f"/chats/{sid}/versions/{second_id}").text
    for text in ("두 번째 질문", "세 번째 질문", "earlier version", "1 / 2"):
        assert text in old, text
    assert "고친 두 번째 질문" not in old and "네 번째 질문" not in old
    current = client.get(f"/chats/{sid}").text
    assert "고친 두 번째 질문" in current and "세 번째 질문" not in current
    assert "2 / 2" in current and "edited" in current
    back = client.get(f"/chats/{sid}/versions/{body['message']['id']}")
    assert back.status_code == 303 and back.headers["location"].startswith(f"/chats/{sid}#msg-")


def test_edits_that_cannot_be_done_change_nothing(server: ServerProcess, admin: Api,
                                                 user: Api, anon: Api) -> None:
    stranger = anon.register()
    theirs = stranger.new_session(max_tokens=8)
    their_message = turn(stranger, theirs["id"], "남의 메시지")
    mine = user.new_session(max_tokens=8)
    my_turn = turn(user, mine["id"], "내 메시지")
    head = admin.quiet_head()

    def edit(session_id: str, message_id: str, body: Any) -> Any:
        return user.post(f"/api/sessions/{session_id}/messages/{message_id}/edit/", json=body)

    tid, mid = their_message["message"]["id"], my_turn["message"]["id"]
    assert edit(theirs["id"], tid, {"content": "가로채기"}).status_code == 404
    assert edit(mine["id"], tid, {"content": "가로채기"}).status_code == 404
    assert edit(mine["id"], "없는-메시지", {"content": "수정"}).status_code == 404
    assert edit(mine["id"], "00000000-0000-0000-0000-000000000000",
                {"content": "수정"}).status_code == 404
    reply = edit(mine["id"], my_turn["reply"]["id"], {"content": "답을 고침"})
    assert reply.status_code == 400 and "message_id" in reply.json()["error"]["message"]
    for bad in ({"content": "   "}, {}, {"content": 3}):
        refused = edit(mine["id"], mid, bad)
        assert refused.status_code == 400 and "content" in refused.json()["error"]["message"]
    assert anon.post(f"/api/sessions/{mine['id']}/messages/{mid}/edit/",
                     json={"content": "x"}).status_code == 401
    assert user.get(f"/api/sessions/{theirs['id']}/messages/{tid}/versions/").status_code == 404
    assert admin.head() == head, "a refused edit recorded something"
    assert stranger.get(f"/api/sessions/{theirs['id']}/messages/").json()[0]["content"] == (
        "남의 메시지")


def test_editing_from_the_page(server: ServerProcess, user: Api) -> None:
    session = user.new_session(max_tokens=8)
    posted = turn(user, session["id"], "원래 질문")
    client, csrf = browser_client(server, user)
    path = f"/chats/{session['id']}/messages/{posted['message']['id']}/edit"
    assert client.post(path, data={"content": "바뀐 질문"}).status_code == 403  # no CSRF
    done = client.post(path, data={"content": "바뀐 질문"},
                       headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert done.status_code == 204 and done.headers["HX-Redirect"] == f"/chats/{session['id']}"
    assert [c for r, c in contents(user, session["id"]) if r == "user"] == ["바뀐 질문"]


def test_edit_and_view_versions_in_the_browser(context: BrowserContext,
                                               server: ServerProcess, user: Api) -> None:
    session = user.new_session(max_tokens=8)
    sid = session["id"]
    first = turn(user, sid, "처음 질문")
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{sid}")
    tools = page.locator(f"#tools-{first['message']['id']}")
    tools.locator("summary").click()
    box = tools.locator("textarea")
    expect(box).to_have_value("처음 질문")
    box.fill("고쳐 쓴 질문")
    tools.get_by_role("button", name="Save and send").click()

    expect(page.locator("article.message--user .message__body")).to_have_text(["고쳐 쓴 질문"])
    expect(page.locator(".versions__count")).to_have_text("2 / 2")
    expect(page.locator("article.message--assistant").last).to_have_attribute(
        "data-status", "complete", timeout=60_000)
    page.get_by_label("Previous version").click()
    page.wait_for_url(f"**/versions/{first['message']['id']}")
    expect(page.locator("article.message--user .message__body")).to_have_text(["처음 질문"])
    expect(page.locator(".viewing-version")).to_contain_text("earlier version")
    expect(page.locator("#composer")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "branch-old-version.png"), full_page=True)
    page.get_by_label("Next version").click()
    page.wait_for_url(f"**/chats/{sid}*")
    expect(page.locator("article.message--user .message__body")).to_have_text(["고쳐 쓴 질문"])


def test_a_message_sent_from_the_page_can_be_edited_without_reloading(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    session = user.new_session(max_tokens=8)
    page = send_in_chat(context, server, user, session["id"], "방금 보낸 질문")
    expect(page.locator("article.message--assistant").last).to_have_attribute(
        "data-status", "complete", timeout=60_000)
    tools = page.locator(".message-tools").last
    tools.locator("summary").click()
    tools.locator("textarea").fill("다시 쓴 질문")
    tools.get_by_role("button", name="Save and send").click()
    expect(page.locator("article.message--user .message__body")).to_have_text(["다시 쓴 질문"])
    expect(page.locator(".versions__count")).to_have_text("2 / 2")
