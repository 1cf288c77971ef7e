"""Hostile content drill, quick version (issue 7): XSS payloads in a title, a display
name, messages (Markdown too) and the chat list's filter, rendered in chromium.
Checked by machine, not by eye: no payload runs (a global flag it would set stays unset,
no dialog opens) and the CSP never has to block anything (a violation would mean markup
got through escaping)."""

from __future__ import annotations

from urllib.parse import quote

from playwright.sync_api import Browser, ConsoleMessage, Dialog

from tests.server import Api, ServerProcess

RUN = "window.__pwned=(window.__pwned||0)+1"
PAYLOADS = [
    f"<script>{RUN}</script>",
    f'<img src=x onerror="{RUN}">',
    f"<svg onload={RUN}>",
    f"[링크](javascript:{RUN})",
    f'"><iframe srcdoc="<script>parent.{RUN}</script>">',
    f"```html\n</code><script>{RUN}</script>\n```",
    f"<a href=\"#\" hx-get=\"/\" hx-trigger=\"load\" hx-on:htmx:load=\"{RUN}\">가</a>",
    f"{{{{ {RUN} }}}} <style>body{{display:none}}</style>",
]


def test_no_payload_runs_anywhere(browser: Browser, server: ServerProcess, admin: Api) -> None:
    user = Api(server.url).register()
    assert user.patch("/api/auth/me/", json={"display_name": PAYLOADS[1][:60]}
                      ).status_code == 200
    session = user.new_session(title=PAYLOADS[0], max_tokens=2)
    for payload in PAYLOADS:
        response = user.post(f"/api/sessions/{session['id']}/messages/",
                             json={"content": f"악성 입력: {payload}"})
        assert response.status_code in (202, 503), response.text

    # Replies are Markdown rendered on the server: payloads in assistant text arrive
    # through an import (the model cannot be made to write them on demand).
    imported = user.post("/api/sessions/import/", json={
        "format": "localchat.session", "version": 1,
        "session": {"title": PAYLOADS[4][:60]},
        "messages": [
            message
            for n, payload in enumerate(PAYLOADS)
            for message in (
                {"role": "user", "content": f"질문 {n}", "timestamp": "2026-11-25T00:00:00Z"},
                {"role": "assistant", "content": f"답변 {n}: {payload}",
                 "timestamp": "2026-11-25T00:00:01Z"},
            )
        ],
    })
    assert imported.status_code == 201, imported.text

    context = browser.new_context()
    context.add_cookies([{"name": "session", "value": user.token or "", "url": server.url}])
    page = context.new_page()
    violations: list[str] = []
    dialogs: list[str] = []
    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("console", on_console)
    page.on("dialog", on_dialog)
    for path in (f"/chats/{session['id']}", f"/chats/{imported.json()['id']}",
                 f"/chats?q={quote(PAYLOADS[1])}", "/profile"):
        page.goto(server.url + path, wait_until="load")
        page.wait_for_function("window.htmx !== undefined")
        page.wait_for_timeout(300)  # let htmx process the page and any swaps
        assert page.evaluate("window.__pwned") is None, path
    # The sidebar search shows snippets of the imported replies, payloads included.
    page.goto(f"{server.url}/chats/{imported.json()['id']}", wait_until="load")
    page.fill("#search-q", "답변")
    page.locator("#search-results li").first.wait_for(timeout=15_000)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None, "search results"
    context.close()
    assert dialogs == [] and violations == []
    user.post(f"/api/sessions/{session['id']}/cancel/")
