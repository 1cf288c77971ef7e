"""The browser chat, driven in Debian's chromium against the real server and model."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from tests.server import ROOT, Api, ServerProcess

ARTIFACTS = ROOT / "test-artifacts"
LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


def signed_in_page(context: BrowserContext, server: ServerProcess, api: Api) -> Page:
    """A page whose cookie session is `api`'s user (signed in over the API)."""
    assert api.token
    context.add_cookies([{"name": "session", "value": api.token, "url": server.url}])
    return context.new_page()


def send_in_chat(context: BrowserContext, server: ServerProcess, api: Api, session_id: str,
                 text: str) -> Page:
    """Open the chat page of `api`'s session and send `text` from the composer."""
    page = signed_in_page(context, server, api)
    page.goto(f"{server.url}/chats/{session_id}")
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    return page


def reply_article(page: Page) -> Any:
    return page.locator("article.message--assistant").last


def test_register_sign_out_and_sign_in(context: BrowserContext, server: ServerProcess,
                                       admin: Api) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/register")
    page.fill("#username", "x")
    page.fill("#email", "not-an-email")
    page.fill("#password", "short")
    page.click("button[type=submit]")
    expect(page.locator(".field--invalid .field__error")).to_contain_text("3–32")

    name = f"web{int(time.time() * 1000) % 10**8}"
    page.fill("#username", name)
    page.fill("#email", f"{name}@example.com")
    page.fill("#password", "a good password")
    page.click("button[type=submit]")
    page.wait_for_url("**/chats")
    expect(page.locator(".topbar__username")).to_have_text(name)
    cookie = next(c for c in context.cookies() if c["name"] == "session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.goto(f"{server.url}/chats")
    page.wait_for_url("**/login?next=%2Fchats")

    page.fill("#username", name)
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator(".alert--error")).to_contain_text("wrong")
    page.fill("#password", "a good password")
    page.click("button[type=submit]")
    page.wait_for_url("**/chats")


def test_chat_streams_a_reply_and_saves_a_screenshot(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats")
    page.get_by_role("button", name="New chat").first.click()
    page.wait_for_url("**/chats/*")

    box = page.locator("#prompt")
    box.fill("첫 줄")
    box.press("Shift+Enter")
    box.type("second line: say hello in Korean, please.")
    assert box.input_value() == "첫 줄\nsecond line: say hello in Korean, please."
    box.press("Enter")

    expect(page.locator("article.message--user")).to_have_count(1)
    expect(page.locator("article.message--user .message__body")).to_have_text(
        "첫 줄\nsecond line: say hello in Korean, please.")
    expect(box).to_have_value("")
    reply = reply_article(page)
    expect(reply).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(reply.locator(".message__meta")).to_contain_text("tokens")
    session_id = page.url.rsplit("/", 1)[1]
    stored = user.get(f"/api/sessions/{session_id}/messages/").json()[-1]
    assert stored["status"] == "complete" and stored["content"]
    assert_same_as_fresh_load(page, f"msg-{stored['id']}")
    # The first message names the chat: the header and the sidebar follow live.
    expect(page.locator("#chat-title")).to_contain_text("첫 줄")
    expect(page.locator(".session-item--active")).to_contain_text("첫 줄")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)


def letters(text: str) -> str:
    """Text without spaces and punctuation: a reply renders as Markdown, and a half-written
    construct ("**bo") shows its marks until it is complete ("bold")."""
    return re.sub(r"[\W_]+", "", text)


def body_html(page: Page, reply_id: str) -> str:
    return page.locator(f"#{reply_id} .message__body").inner_html()


def assert_same_as_fresh_load(page: Page, reply_id: str) -> None:
    """The reply as the live stream left it is exactly what a fresh page load shows."""
    fresh = page.context.new_page()
    try:
        fresh.goto(page.url)
        assert body_html(fresh, reply_id) == body_html(page, reply_id)
    finally:
        fresh.close()


def watch_prefixes(page: Page, selector: str, timeout: float = 90) -> list[str]:
    """Sample the reply's text until it ends; every sample must be a prefix of the end text
    (compared by letters: Markdown marks show until their construct is complete)."""
    samples: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = page.evaluate(
            "s => { const a = document.querySelector(s);"
            " return a ? [a.dataset.status, a.querySelector('.message__body').innerText] : null }",
            selector)
        if state:
            samples.append(state[1])
            if state[0] not in ("queued", "streaming"):
                break
        time.sleep(0.03)
    final = letters(page.locator(f"{selector} .message__body").inner_text())
    for sample in samples:
        assert final.startswith(letters(sample)), f"text not in the reply: {sample!r}"
    return samples


def test_reload_mid_reply_continues_without_repeating(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    session = user.new_session(max_tokens=400, temperature=0.9)
    page = send_in_chat(context, server, user, session["id"], LONG_PROMPT)
    reply = reply_article(page)
    expect(reply).to_have_attribute("data-status", "streaming", timeout=30_000)
    expect(reply.locator(".message__body")).not_to_have_text("", timeout=30_000)

    page.reload()
    reply_id = reply_article(page).get_attribute("id")
    assert reply_id
    shown_after_reload = reply_article(page).locator(".message__body").inner_text()

    samples = watch_prefixes(page, f"#{reply_id}")
    assert shown_after_reload, "the reloaded page shows the text so far"
    assert len(set(samples)) > 2, "the reply kept growing after the reload"
    assert_same_as_fresh_load(page, reply_id)


def test_switching_away_and_back_mid_reply(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    other = user.new_session(title="다른 대화")
    session = user.new_session(max_tokens=400, temperature=0.9)
    page = send_in_chat(context, server, user, session["id"], LONG_PROMPT)
    expect(reply_article(page)).to_have_attribute("data-status", "streaming", timeout=30_000)

    page.click(f"a[href='/chats/{other['id']}']")
    page.wait_for_url(f"**/chats/{other['id']}")
    page.go_back()
    page.wait_for_url(f"**/chats/{session['id']}")
    reply_id = reply_article(page).get_attribute("id")

    assert reply_id
    watch_prefixes(page, f"#{reply_id}")
    assert_same_as_fresh_load(page, reply_id)


def test_stop_button_keeps_what_was_written(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    session = user.new_session(max_tokens=1500, temperature=0.9)
    page = send_in_chat(context, server, user, session["id"], LONG_PROMPT)
    reply = reply_article(page)
    expect(reply.locator(".message__body")).not_to_have_text("", timeout=30_000)
    reply.get_by_role("button", name="Stop").click()

    expect(reply_article(page)).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(reply_article(page).locator(".badge")).to_have_text("Stopped")
    stored = user.get(f"/api/sessions/{session['id']}/messages/").json()[-1]
    assert stored["status"] == "cancelled" and stored["content"]
    assert_same_as_fresh_load(page, f"msg-{stored['id']}")
    # A stopped reply can be written again.
    reply_article(page).get_by_role("button", name="Regenerate").click()
    expect(page.locator("article.message--assistant")).to_have_count(2)


def test_script_in_a_message_is_shown_as_text(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    session = user.new_session(max_tokens=16)
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{session['id']}")
    payload = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned=2'>"
    page.fill("#prompt", payload)
    page.press("#prompt", "Enter")
    expect(page.locator("article.message--user .message__body")).to_have_text(payload)
    page.reload()
    expect(page.locator("article.message--user .message__body")).to_have_text(payload)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("article.message--user script, article.message--user img").count() == 0


def test_another_users_chat_is_a_404(
    context: BrowserContext, server: ServerProcess, user: Api, anon: Api
) -> None:
    stranger = anon.register()
    theirs = stranger.new_session(title="private")
    page = signed_in_page(context, server, user)
    response = page.goto(f"{server.url}/chats/{theirs['id']}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Page not found")
    assert "private" not in page.content()
    events = page.request.get(f"{server.url}/chats/{theirs['id']}/events")
    assert events.status == 404


def test_rename_settings_and_delete(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    keep = user.new_session(title="keep me")
    session = user.new_session(title="old name")
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{session['id']}")

    item = page.locator(f"#session-{session['id']}")
    item.get_by_role("button", name="Rename").click()
    item.locator("input[name=title]").fill("새 이름")
    item.get_by_role("button", name="Save").click()
    expect(item.locator(".session-item__link")).to_have_text("새 이름")
    expect(page.locator("#chat-title")).to_have_text("새 이름")
    assert user.get(f"/api/sessions/{session['id']}/").json()["title"] == "새 이름"

    page.click("summary.settings__toggle")
    page.fill("#max_tokens", "0")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-form .field--invalid")).to_contain_text("between")
    page.fill("#max_tokens", "77")
    page.fill("#temperature", "0.3")
    page.click("#settings-form button[type=submit]")
    expect(page.locator(".settings__saved")).to_be_visible()
    config = user.get(f"/api/sessions/{session['id']}/").json()["config"]
    assert config["max_tokens"] == 77 and config["temperature"] == 0.3

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#session-{session['id']}").get_by_role("button", name="Delete").click()
    page.wait_for_url(f"**/chats/{keep['id']}")
    assert user.get(f"/api/sessions/{session['id']}/").status_code == 404
    expect(page.locator(f"#session-{session['id']}")).to_have_count(0)


def test_a_crash_mid_reply_shows_it_interrupted_after_the_page_reconnects(
    context: BrowserContext, fresh_server: ServerProcess
) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register()
    session = api.new_session(max_tokens=1500, temperature=0.9)
    page = send_in_chat(context, fresh_server, api, session["id"], LONG_PROMPT)
    expect(reply_article(page).locator(".message__body")).not_to_have_text("", timeout=30_000)

    fresh_server.kill()
    fresh_server.start()  # same port: the page's stream reconnects by itself

    reply = reply_article(page)
    expect(reply).to_have_attribute("data-status", "interrupted", timeout=30_000)
    expect(reply.locator(".badge")).to_have_text("Interrupted")
    stored = api.get(f"/api/sessions/{session['id']}/messages/").json()[-1]
    assert stored["content"] != ""
    assert_same_as_fresh_load(page, f"msg-{stored['id']}")
    reply.get_by_role("button", name="Regenerate").click()
    expect(page.locator("article.message--assistant")).to_have_count(2)
