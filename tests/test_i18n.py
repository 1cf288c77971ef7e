"""Two languages: complete catalogs, the choice (cookie, else Accept-Language), <html lang>,
dates in the page's language, switching and remembering, in HTTP and in chromium."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from babel.dates import format_date
from babel.messages.pofile import read_po
from playwright.sync_api import BrowserContext, expect

from tests.server import ROOT, Api, ServerProcess

LANGUAGES = ("en", "ko")


def html_lang(html: str) -> str:
    found = re.search(r'<html lang="([^"]+)"', html)
    assert found, html[:300]
    return found.group(1)


def test_catalogs_hold_every_message_translated(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run([str(pybabel), "extract", "-F", "locales/babel.cfg", "-k", "N_",
                    "--no-location", "-o", str(pot), "app", "templates"],
                   cwd=ROOT, check=True, capture_output=True)
    with pot.open("rb") as source:
        wanted = {m.id for m in read_po(source) if m.id}
    assert len(wanted) > 80 and "Sign in" in wanted and "Queued · position %(n)s" in wanted
    for language in LANGUAGES:
        path = ROOT / "locales" / language / "LC_MESSAGES" / "messages.po"
        with path.open("rb") as source:
            catalog = read_po(source, locale=language)
        done = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
        assert wanted <= done, f"{language}: untranslated {sorted(wanted - done)}"
        problems = [(m.id, errors) for m, errors in catalog.check() if errors]
        assert not problems, f"{language}: placeholders differ: {problems}"


def test_language_from_accept_language_and_cookie(server: ServerProcess) -> None:
    cases = [("ko-KR,ko;q=0.9,en;q=0.8", "ko", "로그인"), ("en-US,en;q=0.9", "en", "Sign in"),
             ("fr-FR, ko;q=0.5", "ko", "로그인"), ("xx, yy;q=0.9", "en", "Sign in"),
             ("", "en", "Sign in"), ("ko;q=0, en", "en", "Sign in")]
    for header, lang, text in cases:
        html = httpx.get(f"{server.url}/login", headers={"Accept-Language": header}).text
        assert html_lang(html) == lang and f">{text}</h1>" in html, header
    # The cookie wins; one naming a language we do not have is ignored.
    korean = httpx.get(f"{server.url}/login", cookies={"lang": "ko"},
                       headers={"Accept-Language": "en"}).text
    assert html_lang(korean) == "ko" and "처음이신가요?" in korean
    klingon = httpx.get(f"{server.url}/login", cookies={"lang": "tlh"},
                        headers={"Accept-Language": "ko"}).text
    assert html_lang(klingon) == "ko"


def test_switching_is_remembered_and_unknown_languages_are_refused(server: ServerProcess,
                                                                   user: Api) -> None:
    client = httpx.Client(base_url=server.url, cookies={"session": str(user.token)})
    refused = client.post("/language", data={"lang": "fr", "next": "/chats"})
    assert refused.status_code == 400 and "must be one of: en, ko." in refused.text
    assert "lang" not in refused.cookies
    switched = client.post("/language", data={"lang": "ko", "next": "/profile"})
    assert switched.status_code == 303 and switched.headers["location"] == "/profile"
    assert switched.cookies["lang"] == "ko"
    profile = client.get("/profile").text
    assert html_lang(profile) == "ko" and "비밀번호 변경" in profile
    chats = client.get("/chats", follow_redirects=True).text
    assert "새 대화" in chats and "로그아웃" in chats and "New chat" not in chats
    refused_ko = client.post("/language", data={"lang": "ja"})
    assert refused_ko.status_code == 400 and "다음 중 하나여야 합니다" in refused_ko.text
    assert client.cookies["lang"] == "ko", "a refused switch changes nothing"
    away = client.post("/language", data={"lang": "en", "next": "https://evil.example/"})
    assert away.headers["location"] == "/chats"


def test_dates_follow_the_language(server: ServerProcess, user: Api) -> None:
    today = datetime.now(UTC).date()
    for lang in LANGUAGES:
        client = httpx.Client(base_url=server.url,
                              cookies={"session": str(user.token), "lang": lang})
        usage = client.get("/usage").text
        assert format_date(today, "medium", locale=lang) in usage, lang
        joined = client.get("/profile").text
        assert format_date(today, "medium", locale=lang) in joined, lang
    korean = httpx.get(f"{server.url}/usage", cookies={"session": str(user.token),
                                                       "lang": "ko"}).text
    assert "일별 메시지" in korean and f"{today.month}월 {today.day}일" in korean


def test_korean_in_the_browser(context: BrowserContext, server: ServerProcess,
                               user: Api) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/login")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("button", name="한국어").click()
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    expect(page.locator("h1")).to_have_text("로그인")
    page.fill("#username", user.user["username"])
    page.fill("#password", "correct horse")
    page.get_by_role("button", name="로그인").click()
    page.wait_for_url("**/chats")
    expect(page.get_by_role("button", name="새 대화").first).to_be_visible()
    page.get_by_role("button", name="새 대화").first.click()
    page.wait_for_url("**/chats/*")
    expect(page.locator("#prompt")).to_have_attribute("placeholder", "메시지를 입력하세요…")
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    page.get_by_role("button", name="키보드 단축키").click()
    expect(page.locator("#keys-help")).to_contain_text("작성 중인 답변 중지")
