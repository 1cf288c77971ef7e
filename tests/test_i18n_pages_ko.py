"""A Korean page (Accept-Language: ko) says nothing in English: the chat page (with its
search, import form, export menu, settings and a code block's copy button), the profile
page and an admin page, in chromium against the real server. Allowed: user content, the
brand, model names, file formats, key names and numbers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, FilePayload, Page, expect

from app import i18n
from app.pages import messages
from app.usecases import fields
from app.usecases.errors import Forbidden, InvalidInput, NotFound
from tests.server import Api, ServerProcess

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


@contextmanager
def i18n_language(language: str) -> Iterator[None]:
    token = i18n._current.set(language)
    try:
        yield
    finally:
        i18n._current.reset(token)


@pytest.fixture
def korean(browser: Browser) -> Iterator[BrowserContext]:
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


def choose_file(page: Page, name: str, content: bytes) -> None:
    payload: FilePayload = {"name": name, "mimeType": "application/json", "buffer": content}
    page.set_input_files("#import-file", files=[payload])


def test_import_progress_speaks_korean(korean: BrowserContext, server: ServerProcess,
                                       user: Api) -> None:
    """app.js's import texts come from the form's translated data-* attributes."""
    assert user.token
    korean.add_cookies([{"name": "session", "value": user.token, "url": server.url}])
    page = korean.new_page()
    page.goto(f"{server.url}/chats")
    choose_file(page, "잘못된.json", "{아님".encode())
    page.click("#import-submit")
    expect(page.locator("#import-status")).to_have_text("이 파일은 JSON이 아닙니다.")
    document = {"format": "localchat.session", "version": 1, "session": {"title": "가져온 대화"},
                "messages": [{"role": "user", "content": "안녕하세요",
                              "timestamp": "2026-11-25T10:00:00Z"}]}
    choose_file(page, "대화.json", json.dumps(document, ensure_ascii=False).encode())
    page.click("#import-submit")
    expect(page.locator("#import-status")).to_have_text("대화 1개를 가져왔습니다.",
                                                        timeout=30_000)
    expect(page.locator("#session-list")).to_contain_text("가져온 대화")
    # A chat the server refuses: its reason is the page adapter's Korean text.
    document["messages"] = [{"role": "user", "content": "", "timestamp": "2026-11-25T10:00:00Z"}]
    choose_file(page, "빈.json", json.dumps(document, ensure_ascii=False).encode())
    page.click("#import-submit")
    failed = "대화 1개 중 1번째를 가져오지 못했습니다"
    expect(page.locator("#import-status")).to_contain_text(failed, timeout=30_000)
    expect(page.locator("#import-status")).to_contain_text("비워 둘 수 없습니다")


def test_use_case_messages_in_korean_on_pages_english_in_the_api(server: ServerProcess) -> None:
    """A field's problem is Korean beside the field on a Korean page; the API keeps English."""
    with i18n_language("ko"):
        with pytest.raises(InvalidInput) as short:
            fields.password({"password": "짧다"})
        assert messages.problem(short.value) == "8자 이상이어야 합니다."
        assert messages.message(short.value) == "비밀번호: 8자 이상이어야 합니다."
        assert messages.message(NotFound("session")) == "이 대화는 없거나 당신의 대화가 아닙니다."
        unknown = Forbidden("어떤 알 수 없는 문장")
        assert messages.message(unknown) == "어떤 알 수 없는 문장"  # kept as it is
    response = httpx.post(f"{server.url}/api/auth/register/",
                          json={"username": "short_pw_user", "email": "a@example.com",
                                "password": "짧다"},
                          headers={"Accept-Language": "ko"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "password: must be at least 8 characters."
