"""The user's own pages in Debian's chromium: profile, theme, usage chart, keyboard."""

from __future__ import annotations

from playwright.sync_api import BrowserContext, expect

from tests.server import ROOT, Api, ServerProcess
from tests.test_browser import LONG_PROMPT, send_in_chat, signed_in_page

ARTIFACTS = ROOT / "test-artifacts"
DARK_BG = "rgb(22, 22, 26)"  # --bg of the dark theme in app.css
LIGHT_BG = "rgb(255, 255, 255)"


def test_profile_name_and_password_in_the_browser(context: BrowserContext,
                                                  server: ServerProcess, user: Api) -> None:
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/profile")
    page.fill("#display_name", "이영희")
    page.click("#profile-form button[type=submit]")
    expect(page.locator("#profile-form .alert--success")).to_be_visible()
    page.fill("#current_password", "틀린 비밀번호")
    page.fill("#new_password", "새 비밀번호 아주 길게")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#password-form .field--invalid")).to_contain_text("is wrong")
    page.fill("#current_password", "correct horse")
    page.fill("#new_password", "새 비밀번호 아주 길게")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#password-form .alert--success")).to_contain_text("Password changed")
    page.goto(f"{server.url}/chats")
    expect(page.locator(".topbar__username")).to_have_text("이영희")
    page.click(".topbar__username")
    page.wait_for_url("**/profile")


def test_theme_toggle_is_remembered_across_pages(context: BrowserContext,
                                                 server: ServerProcess, user: Api) -> None:
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/profile")
    body_bg = "getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(body_bg)
    page.click("[data-theme-choice=dark]")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate(body_bg) != light
    page.goto(f"{server.url}/chats")
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).backgroundColor"
                         ) == DARK_BG
    page.goto(f"{server.url}/profile")
    expect(page.locator("[data-theme-choice=dark]")).to_have_attribute("aria-pressed", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "profile-dark.png"), full_page=True)
    page.click("[data-theme-choice=system]")
    page.reload()
    assert page.get_attribute("html", "data-theme") is None
    assert page.evaluate(body_bg) == light


def test_usage_page_chart(context: BrowserContext, server: ServerProcess, user: Api) -> None:
    session = user.new_session(max_tokens=8)
    posted = user.post_message(session["id"], "한 문장으로 답해 주세요.")
    user.wait_reply(session["id"], posted["reply"]["id"])
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/usage")
    expect(page.locator("#usage-messages")).to_have_text("2")
    expect(page.locator(".usage-chart--messages .usage-chart__bar")).to_have_count(1)
    box = page.locator(".usage-chart--messages").bounding_box()
    assert box and box["width"] > 300, "the chart fills its card"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)


def test_keyboard_help_search_and_escape_stops_the_reply(
    context: BrowserContext, server: ServerProcess, user: Api
) -> None:
    session = user.new_session(max_tokens=1500, temperature=0.9)
    page = send_in_chat(context, server, user, session["id"], LONG_PROMPT)
    reply = page.locator("article.message--assistant").last
    expect(reply.locator(".message__body")).not_to_have_text("", timeout=30_000)

    page.locator("body").click(position={"x": 5, "y": 300})  # focus out of the composer
    page.keyboard.press("?")
    expect(page.locator("#keys-help")).to_be_visible()
    expect(page.locator("#keys-help")).to_contain_text("Esc")
    page.keyboard.press("Escape")  # closes the help first, the reply keeps going
    expect(page.locator("#keys-help")).to_be_hidden()
    assert reply.get_attribute("data-status") in ("queued", "streaming")

    page.keyboard.press("Control+k")
    expect(page.locator("#search-q")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("article.message--assistant").last).to_have_attribute(
        "data-status", "cancelled", timeout=30_000)
    stored = user.get(f"/api/sessions/{session['id']}/messages/").json()[-1]
    assert stored["status"] == "cancelled"
