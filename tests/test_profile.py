"""The user's own pages and their API: profile, password change, usage by day, theme."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx

from tests.server import Api, ServerProcess
from tests.test_pages import browser_client

NEW_PASSWORD = "새 비밀번호 아주 길게"


def login(server: ServerProcess, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/auth/login/",
                      json={"username": username, "password": password})


def test_password_change_revokes_every_other_token(server: ServerProcess, user: Api) -> None:
    name = user.user["username"]
    other = login(server, name, "correct horse").json()["token"]
    other_api = Api(server.url, other)
    assert other_api.get("/api/auth/me/").status_code == 200

    changed = user.post("/api/auth/me/password/", json={
        "current_password": "correct horse", "new_password": NEW_PASSWORD})
    assert changed.status_code == 204, changed.text
    assert user.get("/api/auth/me/").status_code == 200, "the caller's own token is kept"
    assert other_api.get("/api/auth/me/").status_code == 401
    assert login(server, name, "correct horse").status_code == 401
    assert login(server, name, NEW_PASSWORD).status_code == 200


def test_bad_password_changes_are_refused_and_record_nothing(server: ServerProcess,
                                                             admin: Api, user: Api) -> None:
    head = admin.quiet_head()
    cases = [
        ({"current_password": "틀린 비밀번호", "new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": "correct horse", "new_password": "짧다"}, "password"),
        ({"current_password": "correct horse", "new_password": "correct horse"}, "new_password"),
        ({"new_password": NEW_PASSWORD}, "current_password"),
    ]
    for body, field in cases:
        response = user.post("/api/auth/me/password/", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["message"].startswith(f"{field}:"), response.text
    assert admin.head() == head
    assert login(server, user.user["username"], "correct horse").status_code == 200
    assert Api(server.url).post("/api/auth/me/password/", json={}).status_code == 401


def test_usage_by_day_counts_todays_messages_and_tokens(user: Api) -> None:
    session = user.new_session(max_tokens=16, title="사용량")
    posted = user.post_message(session["id"], "안녕하세요, 짧게 대답해 주세요.")
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    days = user.get("/api/auth/me/usage/", params={"days": 7}).json()["days"]
    assert len(days) == 7
    today = datetime.now(UTC).date().isoformat()
    assert days[-1] == {"day": today, "messages": 2, "tokens": reply["token_count"]}
    assert all(d["messages"] == 0 for d in days[:-1])
    totals = user.get("/api/auth/me/stats/").json()
    assert totals["messages"] == 2 and totals["tokens_generated"] == reply["token_count"]
    for bad in ("0", "367", "일주일"):
        refused = user.get("/api/auth/me/usage/", params={"days": bad})
        assert refused.status_code == 400 and "days" in refused.json()["error"]["message"]


def test_usage_page_draws_the_days_as_svg(server: ServerProcess, user: Api) -> None:
    session = user.new_session(max_tokens=8)
    posted = user.post_message(session["id"], "하나 둘 셋")
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    client, _csrf = browser_client(server, user)
    html = client.get("/usage").text
    today = datetime.now(UTC).date().isoformat()
    bars = re.findall(r'<rect class="usage-chart__bar" data-day="([\d-]+)" data-value="(\d+)"',
                      html)
    assert (today, "2") in bars and (today, str(reply["token_count"])) in bars
    assert len(bars) == 2, "quiet days draw no bar"
    assert '<div><dt>Messages</dt><dd id="usage-messages">2</dd>' in html
    assert "<script" not in html.split("</head>", 1)[1], "the chart needs no script"


def test_profile_page_saves_korean_name_and_shows_field_errors(server: ServerProcess,
                                                              user: Api) -> None:
    client, csrf = browser_client(server, user)
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    saved = client.post("/profile", data={"display_name": "  김민수  ",
                                          "email": "minsu@example.com"}, headers=headers)
    assert saved.status_code == 200 and "Saved." in saved.text
    me = user.get("/api/auth/me/").json()
    assert (me["display_name"], me["email"]) == ("김민수", "minsu@example.com")

    bad = client.post("/profile", data={"display_name": "김", "email": "메일 아님"},
                      headers=headers)
    assert bad.status_code == 400 and "field--invalid" in bad.text
    assert 'value="메일 아님"' in bad.text, "the typed value is kept for correction"
    assert user.get("/api/auth/me/").json()["email"] == "minsu@example.com"
    wrong = client.post("/profile/password", headers=headers,
                        data={"current_password": "아니", "new_password": NEW_PASSWORD})
    assert wrong.status_code == 400 and "is wrong" in wrong.text
    assert client.post("/profile", data={"display_name": "x"}).status_code == 403  # no CSRF
    assert client.get("/chats", follow_redirects=True).text.count("김민수") >= 1


def test_profile_password_change_keeps_the_browser_signed_in(server: ServerProcess,
                                                            user: Api) -> None:
    other = Api(server.url, login(server, user.user["username"], "correct horse").json()["token"])
    client, csrf = browser_client(server, user)
    changed = client.post("/profile/password",
                          headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
                          data={"current_password": "correct horse",
                                "new_password": NEW_PASSWORD})
    assert changed.status_code == 200 and "Password changed" in changed.text
    assert client.get("/profile").status_code == 200
    assert other.get("/api/auth/me/").status_code == 401


def test_theme_cookie_sets_data_theme_on_every_page(server: ServerProcess, user: Api) -> None:
    client, _csrf = browser_client(server, user)
    for value, expected in (("dark", ' data-theme="dark"'), ("light", ' data-theme="light"'),
                            ("<script>", ""), ("system", "")):
        client.cookies.set("theme", value)
        for path in ("/profile", "/chats", "/login"):
            html = client.get(path, follow_redirects=True).text
            tag = re.search(r"<html[^>]*>", html)
            assert tag and tag.group(0) == f'<html lang="en"{expected}>', (path, value)
    anonymous = httpx.get(f"{server.url}/profile")
    assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
