"""Use-case errors carry a template and its values: the pages translate the template and
fill in the values (Korean or English), the JSON API answers the English text of API.md.
A failed reply is told in the page's language by its failure code. Against a real server
of its own, whose sign-up throttle is set low so a real 429 can be met."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from app import i18n
from app.pages.render import TEMPLATES
from tests.server import Api, ServerProcess

TOO_LONG_KO = "대화가 모델의 컨텍스트에 비해 너무 깁니다"
TOO_LONG_EN = "The conversation is too long for the model's context"


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two sign-ups per address per 10 minutes: the third is refused with 429."""
    process = ServerProcess(tmp_path_factory.mktemp("i18n-errors"),
                            REGISTER_MAX_PER_ADDRESS="2", REGISTER_WINDOW_SECONDS="600").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def owner(throttled: ServerProcess) -> Api:
    return Api(throttled.url).register()


def register_page(url: str, language: str, password: str, username: str) -> httpx.Response:
    """Sign up through the page's form (its CSRF token and nonce cookie) in `language`."""
    browser = httpx.Client(base_url=url, cookies={"lang": language})
    form = browser.get("/register").text
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form)
    assert token, form[:500]
    return browser.post("/register", data={"username": username, "email": "가@example.com",
                                           "password": password, "csrf_token": token.group(1)})


def shown(response: httpx.Response) -> str:
    return html.unescape(response.text)


def test_a_too_short_password_in_korean_and_in_english(throttled: ServerProcess,
                                                       owner: Api) -> None:
    korean = register_page(throttled.url, "ko", "짧은암호", "short_ko")
    assert korean.status_code == 400
    assert "8자 이상이어야 합니다." in shown(korean)
    assert "must be at least" not in shown(korean)
    english = register_page(throttled.url, "en", "짧은암호", "short_en")
    assert english.status_code == 400
    assert "must be at least 8 characters." in shown(english)
    # The JSON API keeps API.md's English whatever the browser prefers.
    api = httpx.post(f"{throttled.url}/api/auth/register/",
                     json={"username": "short_api", "email": "a@example.com", "password": "짧다"},
                     headers={"Accept-Language": "ko"})
    assert api.status_code == 400
    assert api.json()["error"] == {"code": "invalid_input",
                                   "message": "password: must be at least 8 characters."}


def test_a_rate_limit_says_its_seconds_in_korean_and_in_english(throttled: ServerProcess,
                                                               owner: Api) -> None:
    Api(throttled.url).register()  # the second sign-up from this address: the last allowed
    korean = register_page(throttled.url, "ko", "correct horse", "limited_ko")
    assert korean.status_code == 429
    seconds = int(korean.headers["Retry-After"])
    assert 0 < seconds <= 600
    assert f"이 주소에서 가입 시도가 너무 많습니다. {seconds}초 후에 다시 시도해 주세요." \
        in shown(korean), \
        shown(korean)[:2000]
    english = register_page(throttled.url, "en", "correct horse", "limited_en")
    assert english.status_code == 429
    seconds = int(english.headers["Retry-After"])
    assert (f"Too many sign-ups from this address. Try again in {seconds} seconds."
            in shown(english))
    api = httpx.post(f"{throttled.url}/api/auth/register/",
                     json={"username": "limited_api", "email": "a@example.com",
                           "password": "correct horse"}, headers={"Accept-Language": "ko"})
    assert api.status_code == 429
    seconds = int(api.headers["Retry-After"])
    assert api.json()["error"] == {
        "code": "rate_limited",
        "message": f"Too many sign-ups from this address. Try again in {seconds} seconds."}


def test_a_failed_reply_is_told_in_the_page_language(throttled: ServerProcess,
                                                      owner: Api) -> None:
    session = owner.new_session(max_tokens=16)
    posted = owner.post(f"/api/sessions/{session['id']}/messages/",
                        json={"content": "가" * 32_000})  # far past the model's context
    assert posted.status_code == 202, posted.text
    reply = owner.wait_reply(session["id"], posted.json()["reply"]["id"])
    assert reply["status"] == "failed"
    error = reply["metadata"]["error"]
    stored = error["message"]  # English, as recorded: the log is never rewritten
    assert error["code"] == "context_too_long" and stored and TOO_LONG_KO not in stored
    pages = {}
    for language in ("ko", "en"):
        page = httpx.get(f"{throttled.url}/chats/{session['id']}",
                         cookies={"session": str(owner.token), "lang": language})
        assert page.status_code == 200
        failure = re.search(r'<p class="message__error">(.*?)</p>', page.text, re.S)
        assert failure, page.text[-3000:]
        pages[language] = failure.group(1).strip()
    assert pages["ko"].startswith(TOO_LONG_KO), pages["ko"]
    assert pages["en"].startswith(TOO_LONG_EN), pages["en"]
    assert stored not in pages["ko"]


@pytest.mark.parametrize(("language", "code", "expected"), [
    ("ko", "timeout", "답변이 너무 오래 걸려 중단되었습니다."),
    ("en", "timeout", "The reply took too long and was stopped."),
    ("ko", "generation_failed", "모델이 이 답변을 작성하다가 실패했습니다."),
    ("ko", "interrupted", "답변을 생성하는 중에 서버가 멈췄습니다."),
    # A code the page does not know: the stored text, as it was recorded.
    ("ko", "some_future_code", "Stored text <kept> as recorded."),
])
def test_failure_codes_and_the_fallback(language: str, code: str, expected: str) -> None:
    """The failure macro alone, for codes the real model cannot be made to produce here."""
    template = TEMPLATES.env.get_template("chat/_failure.html")
    token = i18n._current.set(language)
    try:
        said = str(template.module.failure(  # type: ignore[attr-defined]
            {"code": code, "message": "Stored text <kept> as recorded."}))
    finally:
        i18n._current.reset(token)
    assert html.unescape(said).strip().startswith(expected), said
    assert "<kept>" not in said  # the stored text is escaped like any other

