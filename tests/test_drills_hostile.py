"""Hostile content drill, quick version (issue 7; drills/hostile.py runs the whole corpus).

A handful of payloads from drills/xss_payloads.txt through every text path: a session
title (sidebar, page, a toast), a message, a display name, imported chats (ours with reply
metadata and a system prompt, Open WebUI, ChatGPT), Markdown replies (loaded, and every
state of one streaming), search queries (reflected, and snippets with highlights), and the
admin event browser (payloads pretty-printed, and its reflected filters), user list and
timeline. Rendered in chromium with the production CSP, checked by machine: no dialog, no
`window.__pwned`, no request to the counting URL, no CSP violation (nothing got through
escaping for the CSP to block), no live markup in the DOM; and every payload's tag is on
the page it should be on. A control inserts a payload unescaped and must be caught, so the
checks can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Request

from drills.hostile import (
    CONTROL,
    PROBE,
    SCAN,
    SIGNAL_PATH,
    STREAM_SNAPSHOTS,
    TAG,
    Payload,
    import_document,
    load_corpus,
    stream_snapshots,
)
from tests.server import Api, ServerProcess

# One of each kind: handler, SVG, srcdoc, Markdown javascript: link, htmx trigger, template
# braces, a tag closing the app's own markup, a fence closing its code block, meta refresh,
# CSS import, raw HTML inside Markdown, Korean around it.
PREFIXES = ("<img src=x onerror=", "<svg onload=", '<iframe srcdoc="<script>',
            "[클릭](javascript:", '<div hx-get="', "{{ ", "</span></a></li>",
            "```html\n</code></pre>", '<meta http-equiv="refresh" content="0;url=/',
            "<style>@import", "안녕하세요<img")


def chosen() -> list[Payload]:
    corpus = load_corpus()
    picked = [next(p for p in corpus if p.text.startswith(prefix)) for prefix in PREFIXES]
    assert len({p.n for p in picked}) == len(PREFIXES)
    return picked


@dataclass
class Watch:
    """What ran or was blocked in a browser context, whichever page it happened on."""

    dialogs: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        def on_dialog(dialog: Dialog) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        def on_request(request: Request) -> None:
            if SIGNAL_PATH in request.url or not request.url.startswith(
                    ("http://127.0.0.1", "data:", "blob:")):
                self.signals.append(request.url)

        page.on("dialog", on_dialog)
        page.on("request", on_request)


def check(page: Page, expect: set[int], where: str) -> dict[str, Any]:
    """The page as it stands: nothing live, nothing ran, nothing blocked, tags present."""
    page.wait_for_timeout(150)  # image errors, autofocus, htmx load triggers
    found: dict[str, Any] = page.evaluate(SCAN)
    assert found["live"] == [], (where, found["live"])
    assert found["pwned"] is None, where
    assert found["csp"] == [], (where, found["csp"])
    shown = {int(n) for n in TAG.findall(found["text"])}
    assert expect <= shown, (where, sorted(expect - shown))
    return found


@pytest.fixture
def pages(browser: Browser, server: ServerProcess) -> Iterator[tuple[Watch, Any]]:
    opened: list[BrowserContext] = []
    watch = Watch()

    def signed_in(api: Api) -> Page:
        context = browser.new_context()
        opened.append(context)
        context.add_cookies([{"name": "session", "value": api.token or "",
                              "url": server.url}])
        context.add_init_script(PROBE)
        page = context.new_page()
        watch.attach(page)
        return page

    yield watch, signed_in
    for context in opened:
        context.close()


def test_no_payload_runs_or_lives_on_any_path(
        server: ServerProcess, admin: Api, pages: tuple[Watch, Any]) -> None:
    watch, signed_in = pages
    payloads = chosen()
    every = {p.n for p in payloads}
    user = Api(server.url).register()
    named = next(p for p in payloads if len(p.tagged) <= 64)
    assert user.patch("/api/auth/me/", json={"display_name": named.tagged}).status_code == 200

    # Posted: a title and one message carrying every payload (a user's text is plain).
    session = user.new_session(title=payloads[0].tagged, max_tokens=1)
    user.post_message(session["id"], "\n".join(p.tagged for p in payloads))
    user.post(f"/api/sessions/{session['id']}/cancel/")

    # Imported: replies are Markdown, and only an import can make them hostile on demand.
    stamp = "2026-11-25T00:00:00Z"
    imported = user.post("/api/sessions/import/", json={
        "format": "localchat.session", "version": 1,
        "session": {"title": payloads[1].tagged},
        "config": {"system_prompt": payloads[2].tagged},
        "messages": [
            message for p in payloads for message in (
                {"role": "user", "content": f"{p.tag} 질문", "timestamp": stamp},
                {"role": "assistant", "content": f"{p.tag} 답변 {p.text}", "timestamp": stamp,
                 "metadata": {"model_params": {"recalled_message_ids": [p.text]}}},
            )
        ] + [{"role": "user", "content": "다시", "timestamp": stamp},
             {"role": "assistant", "content": "실패", "timestamp": stamp, "status": "failed",
              "metadata": {"error": {"message": payloads[3].tagged}}}],
    })
    assert imported.status_code == 201, imported.text
    imported_id = imported.json()["id"]
    # Open WebUI and ChatGPT files: titles, messages, foreign model names.
    foreign = [p for p in payloads if p.n % 3 in (1, 2)][:2]
    for p in foreign:
        assert user.post("/api/sessions/import/",
                         json=import_document(p)).status_code == 201

    page = signed_in(user)
    page.goto(f"{server.url}/chats/{session['id']}", wait_until="load")
    check(page, every | {named.n} | {p.n for p in foreign}, "chat page (posted)")
    page.goto(f"{server.url}/chats/{imported_id}", wait_until="load")
    check(page, every, "chat page (imported replies)")
    assert page.locator(".message__error", has_text=payloads[3].tag).count() == 1
    # A reply finishing in another chat: a toast names that chat.
    elsewhere = user.new_session(title=payloads[7].tagged, max_tokens=1)
    user.post_message(elsewhere["id"], "안녕")
    page.locator(".toast--notice", has_text=payloads[7].tag).wait_for(timeout=120_000)
    check(page, every, "toast naming another chat")

    # Every state of a reply streaming one payload after another, as the live page shows it.
    page.evaluate(STREAM_SNAPSHOTS, stream_snapshots(
        "\n\n".join(f"{p.tag} {p.text}" for p in payloads), 7))
    check(page, every, "streamed reply")

    # The search box: the query's words highlighted inside the payload messages.
    target = payloads[0]
    with page.expect_response(lambda r: "/search?" in r.url):
        page.fill("#search-q", target.tagged)
    page.locator("#search-results li").first.wait_for()
    assert page.locator("#search-results mark").count() >= 1
    check(page, {target.n}, "search results")
    page.goto(f"{server.url}/search?{urlencode({'q': payloads[4].tagged})}",
              wait_until="load")
    check(page, {payloads[4].n}, "search fragment opened directly")
    page.goto(f"{server.url}/profile", wait_until="load")
    check(page, {named.n}, "profile")

    staff = signed_in(admin)
    staff.goto(f"{server.url}/admin/events?"
               + urlencode({"user": user.user["id"], "limit": 500}), wait_until="load")
    check(staff, every | {named.n}, "admin event browser")
    staff.goto(f"{server.url}/admin/events?" + urlencode(
        {"type": payloads[5].tagged, "user": payloads[6].tagged}), wait_until="load")
    check(staff, {payloads[5].n, payloads[6].n}, "admin event filters")
    staff.goto(f"{server.url}/admin/sessions/{imported_id}", wait_until="load")
    check(staff, every, "admin timeline")
    staff.goto(f"{server.url}/admin/users", wait_until="load")
    check(staff, {named.n}, "admin user list")
    assert watch.dialogs == [] and watch.signals == []

    # Control: the same checks catch a payload that escaping did not stop.
    staff.evaluate(CONTROL, payloads[0].tagged)
    staff.wait_for_timeout(300)
    found = staff.evaluate(SCAN)
    assert found["live"] and found["csp"], found
