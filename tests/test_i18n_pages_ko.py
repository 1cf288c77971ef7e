"""A Korean page (Accept-Language: ko) says nothing in English: the chat page (with its
search, import form, export menu, settings and a code block's copy button), the profile
page and an admin page, in chromium against the real server. Allowed: user content, the
brand, model names, file formats, key names and numbers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.server import Api, ServerProcess
from tests.test_profile_browser import browser  # noqa: F401  (fixture)

# Proper names and symbols that are not translated.
ALLOWED = {
    "LocalChat", "JSON", "Markdown", "Open", "WebUI", "ChatGPT", "Esc", "Ctrl", "Enter",
    "Shift", "UUID", "ReplyCompleted", "SQLite", "SSE", "ID", "id", "ms", "MB", "KB", "GB",
    "tok", "top_p", "Top", "API", "SHA", "UTC",
    "English",  # the language switcher names each language in itself
    # The read models' names (projections/), identifiers shown on the admin pages.
    "event_index", "hashchain", "messages", "search", "sessions", "users",
}
WORD = re.compile(r"[A-Za-z][A-Za-z_]+")
EVENT_TYPE = re.compile(r"\s*[A-Z]\w*\.[A-Z]\w*\s*")  # "ChatSession.Started": data
# User content and data (message bodies, titles, names, event types, model ids).
CONTENT = (".message__body, .tt-message__body, .session-item, .chat__title, .topbar__username, "
           ".avatar, code, pre, .code__lang, textarea, .mono, .search-result, "
           # the admin tables' user (name, email) and session (title, owner) cells
           "[id^='user-'] td:nth-child(-n+2), a[href^='/admin/sessions/'], "
           "td:has(> a[href^='/admin/sessions/']) + td, #timeline-title")

# Every visible text and every human-facing attribute, outside user content.
COLLECT = """(content) => {
  document.querySelectorAll('details').forEach((d) => { d.open = true; });
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest(content) || el.closest('script, style, [hidden]')) continue;
    if (!el.checkVisibility()) continue;
    texts.push(node.textContent);
  }
  for (const el of document.querySelectorAll('[placeholder], [title], [aria-label], [alt]')) {
    if (el.closest(content)) continue;
    for (const a of ['placeholder', 'title', 'aria-label', 'alt']) {
      if (el.hasAttribute(a)) texts.push(el.getAttribute(a));
    }
  }
  texts.push(document.title);
  return texts;
}"""


@pytest.fixture
def korean(browser: Browser) -> Iterator[BrowserContext]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1280, "height": 900},
                              extra_http_headers={"Accept-Language": "ko-KR,ko;q=0.9"})
    yield ctx
    ctx.close()


def english_words(page: Page, names: set[str]) -> list[str]:
    """The English words shown, less the allowed ones and `names` (model, username)."""
    texts: list[str] = page.evaluate(COLLECT, CONTENT)
    # (the default system prompt in its textarea is a setting's value, not UI text)
    texts = [t for t in texts if not EVENT_TYPE.fullmatch(t)]
    found = [f"{w} (in {t.strip()[:80]!r})" for t in texts for w in WORD.findall(t)
             if w not in ALLOWED and not any(w in n for n in names)]
    return sorted(set(found))


def chat_with_code_block(api: Api) -> str:
    """A chat holding a reply with a fenced code block (imported, so the reply is known)."""
    document = {
        "format": "localchat.session", "version": 1,
        "session": {"title": "코드 예제"},
        "messages": [
            {"role": "user", "content": "파이썬으로 인사하는 코드를 보여 주세요.",
             "timestamp": "2026-11-25T10:00:00Z"},
            {"role": "assistant", "content": "```python\nprint('안녕하세요')\n```",
             "timestamp": "2026-11-25T10:00:05Z"},
        ],
    }
    response = api.post("/api/sessions/import/", json=document)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_korean_pages_have_no_english_ui_text(korean: BrowserContext, server: ServerProcess,
                                              admin: Api) -> None:
    assert admin.token
    korean.add_cookies([{"name": "session", "value": admin.token, "url": server.url}])
    # The test server's model (tests/server.py) and the user's own name are content.
    names = {"SmolLM2-135M-Instruct.Q4_1.gguf", admin.user["username"]}
    session_id = chat_with_code_block(admin)
    page = korean.new_page()

    page.goto(f"{server.url}/chats/{session_id}")
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator(".code__copy")).to_have_text("복사")
    expect(page.locator("#search-q")).to_have_attribute("placeholder", "메시지 검색…")
    page.fill("#search-q", "없는낱말")
    expect(page.locator("#search-results")).to_contain_text("일치하는 메시지가 없습니다",
                                                          timeout=30_000)  # a busy machine
    assert english_words(page, names) == []

    page.fill("#search-q", "")
    page.locator(".code__copy").click()
    expect(page.locator(".code__copy")).to_have_text("복사됨")
    expect(page.locator(".code__copy")).to_have_text("복사")

    for path in ("/profile", "/usage", "/admin", "/admin/users", "/admin/sessions",
                 f"/admin/sessions/{session_id}", "/admin/events", "/admin/projections"):
        page.goto(f"{server.url}{path}")
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        page.wait_for_load_state("networkidle")
        assert english_words(page, names) == [], path
