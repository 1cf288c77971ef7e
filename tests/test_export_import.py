"""Export and import of chats: LocalChat's own document round-trips, malformed files are
refused naming the problem with nothing written, Open WebUI and ChatGPT exports import."""

from __future__ import annotations

import copy
import json
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.server import CHROMIUM, CHROMIUM_FLAGS, Api, assert_error, is_iso_utc

FIXTURES = Path(__file__).parent / "fixtures"
# Decomposed jamo too: imports must not normalise (NFC) what users wrote.
KOREAN = "안녕하세요! 한국어 메시지입니다. 😀 조합형: " + unicodedata.normalize("NFD", "한국어")


def export(api: Api, session_id: str) -> dict[str, Any]:
    response = api.get(f"/api/sessions/{session_id}/export/")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json())


def import_(api: Api, document: Any) -> dict[str, Any]:
    response = api.post("/api/sessions/import/",
                        content=json.dumps(document, ensure_ascii=False).encode(),
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    return dict(response.json())


def same_content(document: dict[str, Any]) -> dict[str, Any]:
    """What an export -> import -> export keeps: all but the export time and the session's
    own times (those of the new session)."""
    kept = copy.deepcopy(document)
    kept.pop("exported_at")
    kept["session"].pop("created_at")
    kept["session"].pop("updated_at")
    return kept


@pytest.fixture(scope="module")
def answered(server: Any, admin: Api) -> tuple[Api, dict[str, Any]]:
    """A user with a Korean chat holding a finished reply from the real model."""
    user = Api(server.url).register()
    session = user.new_session(title="한국어 대화 · export", max_tokens=8, temperature=0,
                               system_prompt="한국어로 답하세요.")
    posted = user.post_message(session["id"], KOREAN)
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    assert reply["status"] == "complete"
    return user, session


def test_export_is_a_versioned_self_contained_document(
    answered: tuple[Api, dict[str, Any]]
) -> None:
    user, session = answered
    response = user.get(f"/api/sessions/{session['id']}/export/")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''" + quote("한국어 대화 · export.json", safe="") in disposition
    assert KOREAN in response.content.decode("utf-8")  # written as is, not \\u-escaped
    document = response.json()
    assert set(document) == {"format", "version", "exported_at", "session", "config",
                             "messages"}
    assert (document["format"], document["version"]) == ("localchat.session", 2)
    assert is_iso_utc(document["exported_at"])
    assert document["session"]["title"] == "한국어 대화 · export"
    assert document["config"]["system_prompt"] == "한국어로 답하세요."
    assert document["config"]["max_tokens"] == 8
    user_message, reply = document["messages"]
    assert (user_message["role"], user_message["content"]) == ("user", KOREAN)
    assert reply["role"] == "assistant" and reply["status"] == "complete"
    assert reply["content"] and reply["token_count"] > 0
    assert reply["metadata"]["finish_reason"] in ("stop", "length")
    assert set(reply) == {"id", "role", "content", "timestamp", "status", "token_count",
                          "processing_time", "metadata", "parent", "version_of", "on_branch"}
    assert (reply["id"], reply["parent"], reply["version_of"], reply["on_branch"]) == (
        1, 0, None, True)


def test_export_import_export_round_trips_content_and_metadata(
    answered: tuple[Api, dict[str, Any]], admin: Api
) -> None:
    user, session = answered
    first = export(user, session["id"])
    created = import_(user, first)
    assert created["id"] != session["id"]
    assert created["title"] == "한국어 대화 · export"
    assert created["message_count"] == 2
    second = export(user, created["id"])
    assert same_content(second) == same_content(first)
    # Korean bytes are the same too (no normalisation): the decomposed 한국어 stays.
    assert second["messages"][0]["content"].encode() == KOREAN.encode()
    # Nothing was generated or queued: one Started and one MessageImported per message.
    events = admin.events(originator_id=created["id"])
    assert [e["type"] for e in events] == ["ChatSession.Started"] + [
        "ChatSession.MessageImported"] * 2
    listed = user.get(f"/api/sessions/{created['id']}/messages/").json()
    assert [m["id"] for m in listed] != [m["id"] for m in user.get(
        f"/api/sessions/{session['id']}/messages/").json()]  # fresh ids


def test_an_imported_chat_continues_with_its_history(
    answered: tuple[Api, dict[str, Any]]
) -> None:
    user, session = answered
    created = import_(user, export(user, session["id"]))
    regenerated = user.post(f"/api/sessions/{created['id']}/regenerate/")
    assert regenerated.status_code == 202, regenerated.text
    reply = user.wait_reply(created["id"], regenerated.json()["reply"]["id"])
    assert reply["status"] == "complete"


def test_someone_elses_session_does_not_export(
    answered: tuple[Api, dict[str, Any]], user: Api
) -> None:
    _owner, session = answered
    assert_error(user.get(f"/api/sessions/{session['id']}/export/"), 404, "not_found")
    assert_error(user.get(f"/api/sessions/{session['id']}/export/?format=markdown"), 404)
    assert_error(user.get("/api/sessions/not-a-uuid/export/"), 404)


def test_markdown_export(answered: tuple[Api, dict[str, Any]]) -> None:
    user, session = answered
    response = user.get(f"/api/sessions/{session['id']}/export/?format=markdown")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert quote("한국어 대화 · export.md", safe="") in response.headers["content-disposition"]
    text = response.text
    reply = user.get(f"/api/sessions/{session['id']}/messages/").json()[1]
    assert text.startswith("# 한국어 대화 · export\n")
    assert "> 한국어로 답하세요." in text
    assert text.index("## User") < text.index(KOREAN) < text.index("## Assistant")
    assert reply["content"].rstrip("\n") in text
    assert_error(user.get(f"/api/sessions/{session['id']}/export/?format=pdf"), 400,
                 "invalid_input", "format")


# -- refused imports ------------------------------------------------------------------------


def valid_document() -> dict[str, Any]:
    return {
        "format": "localchat.session", "version": 1, "exported_at": "2026-01-02T03:04:05Z",
        "session": {"title": "가져오기", "created_at": None, "updated_at": None},
        "config": {"temperature": 0.5},
        "messages": [
            {"role": "user", "content": "질문", "timestamp": "2026-01-02T03:04:05.000000Z",
             "status": "complete", "token_count": 0, "processing_time": None, "metadata": {}},
            {"role": "assistant", "content": "답", "timestamp": "2026-01-02T03:04:06.000000Z",
             "status": "complete", "token_count": 1, "processing_time": 0.5,
             "metadata": {"finish_reason": "stop"}},
        ],
    }


def changed(path: str, value: Any) -> dict[str, Any]:
    """valid_document() with the value at a dotted path (list indexes as numbers) replaced;
    `...` as the value deletes it."""
    document = valid_document()
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del target[key]
    else:
        target[key] = value
    return document


LONG = "가" * 32_001
REFUSED = [
    ("wrong format name", changed("format", "other.thing"), "format"),
    ("wrong version", changed("version", 3), "version"),
    ("version as text", changed("version", "1"), "version"),
    ("missing messages", changed("messages", ...), "messages"),
    ("messages not a list", changed("messages", {"0": {}}), "messages"),
    ("missing session", changed("session", ...), "session"),
    ("missing role", changed("messages.1.role", ...), "messages[1].role"),
    ("unknown role", changed("messages.1.role", "system"), "messages[1].role"),
    ("content not text", changed("messages.0.content", 42), "messages[0].content"),
    ("oversized content", changed("messages.0.content", LONG), "messages[0].content"),
    ("NUL in content", changed("messages.0.content", "a\x00b"), "messages[0].content"),
    ("empty user message", changed("messages.0.content", "  "), "messages[0].content"),
    ("bad timestamp", changed("messages.0.timestamp", "어제"), "messages[0].timestamp"),
    ("unknown status", changed("messages.1.status", "done"), "messages[1].status"),
    ("negative tokens", changed("messages.1.token_count", -1), "messages[1].token_count"),
    ("metadata not an object", changed("messages.1.metadata", []), "messages[1].metadata"),
    ("unknown field", changed("messages.0.id", "x"), "messages[0].id"),
    ("oversized title", changed("session.title", "제" * 201), "session.title"),
    ("temperature out of range", changed("config.temperature", 5), "config.temperature"),
    ("oversized system prompt", changed("config.system_prompt", "x" * 8001),
     "config.system_prompt"),
    ("too many messages", changed("messages", valid_document()["messages"] * 1001),
     "messages"),
    ("not a chat export", {"hello": "world"}, "document"),
    ("a list of nothing known", [1, 2, 3], "document"),
    ("empty list", [], "document"),
    ("foreign chat malformed", [{"mapping": {"a": {"message": {"author": {}}}}}],
     "[0].mapping.a.message.author.role"),
]


@pytest.mark.parametrize("document,field", [(d, f) for _, d, f in REFUSED],
                         ids=[name for name, _, _ in REFUSED])
def test_a_malformed_document_is_400_naming_the_problem_and_writes_nothing(
    user: Api, admin: Api, document: Any, field: str
) -> None:
    before = admin.quiet_head()
    sessions = user.get("/api/sessions/").json()
    response = user.post("/api/sessions/import/", json=document)
    assert_error(response, 400, "invalid_input", field)
    assert admin.head() == before
    assert user.get("/api/sessions/").json() == sessions


def test_not_json_is_400_and_a_6mb_body_is_413(user: Api, admin: Api) -> None:
    before = admin.quiet_head()
    for body in (b"{", b"\xff\xfe", b"", b"[" * 100_000):
        response = user.post("/api/sessions/import/", content=body,
                             headers={"Content-Type": "application/json"})
        assert_error(response, 400, "invalid_json", "body")
    big = changed("messages.0.content", "가" * (6 * 1024 * 1024 // 3))
    response = user.post("/api/sessions/import/", json=big)
    assert_error(response, 413, "body_too_large")
    assert admin.head() == before


def test_one_bad_chat_in_a_file_writes_none_of_them(user: Api, admin: Api) -> None:
    chats = json.loads((FIXTURES / "chatgpt-conversations.json").read_text())
    chats[1]["mapping"]["q"]["message"]["content"]["parts"] = ["x" * 32_001]
    before = admin.quiet_head()
    response = user.post("/api/sessions/import/", json=chats)
    assert_error(response, 400, "invalid_input", "[1].mapping.q.message.content")
    assert admin.head() == before


def test_import_needs_a_signed_in_user(anon: Api) -> None:
    assert_error(anon.post("/api/sessions/import/", json=valid_document()), 401)


# -- foreign formats --------------------------------------------------------------------------


def messages_of(api: Api, session_id: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"])
            for m in api.get(f"/api/sessions/{session_id}/messages/").json()]


def test_open_webui_export_imports_the_displayed_branch_of_each_chat(user: Api) -> None:
    document = json.loads((FIXTURES / "openwebui-export.json").read_text())
    body = import_(user, document)
    assert body["format"] == "openwebui"
    first, second = body["sessions"]
    assert first["title"] == "서울 여행 계획"
    assert messages_of(user, first["id"]) == [
        ("user", "서울에서 3일 동안 뭘 하면 좋을까요?"),
        ("assistant", "첫째 날에는 경복궁과 북촌 한옥마을을 추천합니다."),
        ("user", "둘째 날은요?"),
        ("assistant", "둘째 날에는 **한강 공원**에서 자전거를 타 보세요."),
    ]
    listed = user.get(f"/api/sessions/{first['id']}/messages/").json()
    assert listed[0]["timestamp"] == "2024-05-29T16:26:40.000000Z"  # 1717000000
    assert listed[1]["metadata"] == {"model": "llama3:8b"}
    assert second["title"] == "Python 질문"
    assert messages_of(user, second["id"]) == [  # the system message is left out
        ("user", "리스트를 뒤집는 방법은?"),
        ("assistant", "`items[::-1]` 또는 `items.reverse()`를 쓰세요."),
    ]


def test_chatgpt_conversations_import_the_current_branch(user: Api) -> None:
    document = json.loads((FIXTURES / "chatgpt-conversations.json").read_text())
    body = import_(user, document)
    assert body["format"] == "chatgpt"
    first, second = body["sessions"]
    assert first["title"] == "김치찌개 레시피"
    # The hidden system message and the tool call are left out; the regenerated answer
    # that is not on the current branch too.
    assert messages_of(user, first["id"]) == [
        ("user", "김치찌개 끓이는 법 알려줘"),
        ("assistant", "1. 김치와 돼지고기를 볶습니다.\n2. 물을 붓고 끓입니다."),
        ("user", "두부도 넣어도 돼?"),
        ("assistant", "네, 마지막에 두부를 넣으면 좋아요."),
    ]
    assert messages_of(user, second["id"]) == [
        ("user", "Say hello in three languages."), ("assistant", "Hello · 안녕하세요 · Bonjour")]
    # One conversation on its own (not in a list) imports too.
    single = import_(user, document[1])
    assert [s["title"] for s in single["sessions"]] == ["Hello in English"]


def test_imported_messages_are_found_by_search(user: Api) -> None:
    document = json.loads((FIXTURES / "chatgpt-conversations.json").read_text())
    document[1]["mapping"]["q"]["message"]["content"]["parts"] = ["고유한검색어 찾기"]
    session = import_(user, [document[1]])["sessions"][0]
    response = user.get("/api/search/", params={"q": "고유한검색어"})
    if response.status_code == 404:
        pytest.skip("the search API is not wired in this tree")
    assert response.status_code == 200, response.text
    assert session["id"] in json.dumps(response.json())


# -- the page: no-JavaScript form post, and the buttons in a real browser --------------------


def test_the_import_form_without_javascript_posts_the_whole_file(
    user: Api, admin: Api
) -> None:
    raw = (FIXTURES / "openwebui-export.json").read_bytes()
    files = {"file": ("내보내기.json", raw, "application/json")}
    response = user.post("/chats/import", files=files, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/chats/")
    titles = [s["title"] for s in user.get("/api/sessions/").json()]
    assert titles[:2] == ["Python 질문", "서울 여행 계획"]  # newest first
    # A browser's cookie session must send the form's CSRF field.
    cookie_only = Api(user.url)
    cookie_only.http.cookies.set("session", user.token or "")
    before = admin.quiet_head()
    refused = cookie_only.post("/chats/import", files=files, data={"csrf": "wrong"},
                               follow_redirects=False)
    assert refused.status_code == 403
    assert admin.head() == before



# Records every text the import status line shows, in order.
WATCH_STATUS = """() => {
  window.seenStatus = [];
  const status = document.getElementById('import-status');
  new MutationObserver(() => window.seenStatus.push(status.textContent))
    .observe(status, {childList: true, characterData: true, subtree: true});
}"""


def test_export_and_import_through_the_buttons(server: Any, user: Api, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    session = import_(user, valid_document())
    many = []
    for number in range(1, 13):
        chat = json.loads((FIXTURES / "openwebui-export.json").read_text())[1]
        chat["title"] = f"가져온 대화 {number}"
        many.append(chat)
    upload = tmp_path / "openwebui-12.json"
    upload.write_text(json.dumps(many, ensure_ascii=False), encoding="utf-8")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860},
                                      accept_downloads=True)
        context.add_cookies([{"name": "session", "value": user.token or "",
                              "url": server.url}])
        page = context.new_page()
        page.goto(f"{server.url}/chats/{session['id']}")

        page.click("#export-menu summary")
        with page.expect_download() as download_info:
            page.click("#export-json")
        download = download_info.value
        assert download.suggested_filename == "가져오기.json"
        downloaded = json.loads(Path(download.path()).read_text(encoding="utf-8"))
        assert same_content(downloaded) == same_content(export(user, session["id"]))
        with page.expect_download() as download_info:
            page.click("#export-markdown")
        markdown = Path(download_info.value.path()).read_text(encoding="utf-8")
        assert markdown.startswith("# 가져오기\n") and "질문" in markdown

        page.evaluate(WATCH_STATUS)
        page.set_input_files("#import-file", str(upload))
        page.click("#import-submit")
        expect(page.locator("#import-status")).to_have_text("Imported 12 chats.",
                                                            timeout=30_000)
        seen = page.evaluate("window.seenStatus")
        progress = [text for text in seen if text.startswith("Importing")]
        assert progress == [f"Importing… {n} / 12" for n in range(1, 13)]
        items = page.locator("#session-list .session-item__link")
        expect(items.first).to_have_text("가져온 대화 12")
        expect(items).to_have_text([f"가져온 대화 {n}" for n in range(12, 0, -1)]
                                   + ["가져오기"])
        items.nth(5).click()  # 가져온 대화 7: the items work as links
        page.wait_for_url("**/chats/*")
        expect(page.locator("article.message--user .message__body")).to_have_text(
            "리스트를 뒤집는 방법은?")
        page.screenshot(path=str(tmp_path / "import.png"))
        context.close()
        browser.close()


# -- the event and the read models, without a server ----------------------------------------


def test_imported_messages_rebuild_identically_and_feed_the_next_reply(tmp_path: Path) -> None:
    """One MessageImported per message, past a snapshot (every 100 events): the read models
    hold the original times in order, a rebuild writes the same rows, the aggregate stays
    thin, and a later reply's history includes the imported turns."""
    import sqlite3
    from uuid import uuid4

    from projections.messages import history_before
    from projections.runner import ProjectionRunner
    from tests.test_domain import CONFIG, make_app
    from tests.test_projections import dump

    chat = make_app(tmp_path / "events.sqlite")
    messages = []
    for n in range(75):
        for role in ("user", "assistant"):
            messages.append({
                "role": role, "content": f"{role} {n} 한국어", "status": "complete",
                "timestamp": f"2025-03-01T10:{n // 60:02d}:{n % 60:02d}.000000Z",
                "token_count": 0 if role == "user" else n, "processing_time": None,
                "metadata": {} if role == "user" else {"finish_reason": "stop"},
            })
    owner = uuid4()
    session_id, _ = chat.import_session(owner, "가져온 긴 대화", CONFIG, messages, "localchat")
    path = tmp_path / "read.sqlite"
    runner = ProjectionRunner(chat, path)
    try:
        runner.catch_up()
        db = sqlite3.connect(path)
        stored = db.execute("SELECT id, role, content, timestamp, status, token_count FROM"
                            " messages WHERE session_id = ? ORDER BY position",
                            (str(session_id),)).fetchall()
        assert [(r[1], r[2], r[3], r[5]) for r in stored] == [
            (m["role"], m["content"], m["timestamp"], m["token_count"]) for m in messages]
        count = db.execute("SELECT message_count FROM sessions WHERE id = ?",
                           (str(session_id),)).fetchone()[0]
        assert count == 150
        indexed = db.execute("SELECT COUNT(*) FROM search_messages WHERE session_id = ?",
                             (str(session_id),)).fetchone()[0]
        assert indexed == 150

        before = dump(path)
        for name in runner.names:
            runner.request_rebuild(name)
            runner.catch_up()
            assert dump(path) == before, f"rebuilding {name} changed the read model"

        # Loaded again (from the snapshot at version 100): only the thin state.
        reloaded = make_app(tmp_path / "events.sqlite")
        session = reloaded.get_session(session_id, owner)
        assert session.open == {} and session.title == "가져온 긴 대화"
        assert str(session.last_user_message_id) == stored[-2][0]
        reloaded.close()

        _message, reply_id, _position = chat.regenerate(session_id, owner, 0)
        runner.catch_up()
        turns = history_before(db, str(session_id), str(reply_id), 10**9)
        # Every imported turn except the answer the new reply replaces.
        assert [t[2] for t in turns] == [m["content"] for m in messages[:-1]]
        db.close()
    finally:
        runner.stop()
        chat.close()
