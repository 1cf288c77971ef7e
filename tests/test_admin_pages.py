"""Admin pages and their API: access, time travel, users, and the pages in a real browser.

Against the shared real server (tests/conftest.py) and its real model; a server without a
model for the last-admin rules, which need an admin seat of their own.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.server import Api, ServerProcess

KOREAN_PROMPT = ("등대지기와 폭풍에 대한 긴 이야기를 들려주세요."
                 " Tell a long story about a lighthouse.")
MESSAGE_FIELDS = ("id", "role", "content", "status", "token_count", "timestamp",
                  "processing_time", "metadata")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def author(server: ServerProcess, admin: Api) -> Api:
    """A user (not an admin) whose finished chat the admin looks into."""
    return Api(server.url).register()


@pytest.fixture(scope="module")
def finished_chat(author: Api) -> dict[str, Any]:
    """A Korean chat with one reply written by the real model (greedy, so several token
    batches), finished: {session, reply, final}."""
    session = author.new_session(title="등대 이야기", temperature=0, max_tokens=30)
    posted = author.post_message(session["id"], KOREAN_PROMPT)
    # Generous: the machine's two cores are shared with other test runs.
    final = author.wait_reply(session["id"], posted["reply"]["id"], timeout=300)
    assert final["status"] == "complete" and final["content"]
    return {"session": session, "reply": posted["reply"], "final": final}


def timeline(api: Api, session_id: str, at: int | None = None) -> dict[str, Any]:
    params = {} if at is None else {"at": at}
    response = api.get(f"/api/admin/sessions/{session_id}/timeline/", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def positions_of(events: list[dict[str, Any]], kind: str) -> list[int]:
    return [e["position"] for e in events if e["type"] == f"ChatSession.{kind}"]


# -- access --------------------------------------------------------------------------------


def admin_routes(session_id: str, user_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", "/admin"), ("GET", "/admin/live"), ("GET", "/admin/users"),
        ("POST", f"/admin/users/{user_id}/disable"), ("POST", f"/admin/users/{user_id}/grant"),
        ("GET", "/admin/events"), ("GET", "/admin/events/tail"), ("GET", "/admin/sessions"),
        ("GET", f"/admin/sessions/{session_id}"),
        ("GET", f"/admin/sessions/{session_id}/frame?step=0"),
        ("GET", "/admin/projections"), ("GET", "/admin/projections/table"),
        ("POST", "/admin/projections/messages/rebuild"),
        ("GET", "/api/admin/events/"), ("GET", "/api/admin/stats/"),
        ("GET", "/api/admin/projections/"), ("POST", "/api/admin/projections/messages/rebuild/"),
        ("GET", f"/api/admin/sessions/{session_id}/timeline/"),
        ("GET", f"/api/admin/sessions/{session_id}/timeline/?at=1"),
        ("GET", "/api/admin/users/"), ("POST", f"/api/admin/users/{user_id}/disable/"),
        ("POST", f"/api/admin/users/{user_id}/enable/"),
        ("POST", f"/api/admin/users/{user_id}/grant-admin/"),
        ("POST", f"/api/admin/users/{user_id}/revoke-admin/"),
    ]


def test_non_admins_get_403_on_every_admin_page_and_route(
    server: ServerProcess, admin: Api, user: Api, anon: Api
) -> None:
    session = user.new_session(title="남의 것")
    routes = admin_routes(session["id"], user.user["id"])
    for method, path in routes:
        response = user.http.request(method, path)
        assert response.status_code == 403, (method, path, response.status_code)
        if path.startswith("/api/"):
            assert response.json()["error"]["code"] == "forbidden"
        else:
            assert "Not allowed" in response.text
    for method, path in routes:  # and nothing of it reaches anyone signed out
        response = anon.http.request(method, path, follow_redirects=False)
        # Pages redirect to sign in; the API, actions, streams and fragments answer 401.
        fragment = "/frame" in path or path.endswith(("/live", "/tail", "/table"))
        if path.startswith("/api/") or method == "POST" or fragment:
            assert response.status_code == 401, (method, path, response.status_code)
        else:
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/login?next=")
    # The user is untouched by the refused calls.
    assert user.get("/api/auth/me/").status_code == 200


def test_chat_page_links_to_admin_for_admins_only(admin: Api, user: Api) -> None:
    mine = admin.new_session()
    assert 'id="admin-link"' in admin.get(f"/chats/{mine['id']}").text
    theirs = user.new_session()
    assert 'id="admin-link"' not in user.get(f"/chats/{theirs['id']}").text


# -- time travel -----------------------------------------------------------------------------


def test_timeline_api_at_several_positions(admin: Api, author: Api,
                                           finished_chat: dict[str, Any]) -> None:
    session_id = finished_chat["session"]["id"]
    final = finished_chat["final"]
    whole = timeline(admin, session_id)
    events = whole["events"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert {e["originator_id"] for e in events} == {session_id}
    assert "session" not in whole  # without `at`: the events only

    started = positions_of(events, "Started")[0]
    at_start = timeline(admin, session_id, started)
    assert at_start["session"]["title"] == "등대 이야기"
    assert at_start["session"]["owner_id"] == author.user["id"]
    assert at_start["messages"] == []
    assert timeline(admin, session_id, started - 1)["session"] is None

    posted = positions_of(events, "UserMessagePosted")[0]
    at_posted = timeline(admin, session_id, posted)
    assert [(m["role"], m["content"]) for m in at_posted["messages"]] == [
        ("user", KOREAN_PROMPT)]

    queued = positions_of(events, "ReplyQueued")[0]
    reply = timeline(admin, session_id, queued)["messages"][-1]
    assert (reply["role"], reply["status"], reply["content"]) == ("assistant", "queued", "")

    tokens = positions_of(events, "TokensGenerated")
    assert len(tokens) >= 2, "greedy 30 tokens arrive in several batches"
    texts = []
    for at in tokens:
        reply = timeline(admin, session_id, at)["messages"][-1]
        assert reply["status"] == "streaming"
        texts.append(reply["content"])
    for earlier, later in itertools.pairwise(texts):
        assert later.startswith(earlier) and len(later) > len(earlier)
    assert final["content"].startswith(texts[-1])
    assert len(texts[0]) < len(final["content"])

    # At the head, the fold gives exactly what the messages read model serves.
    head = timeline(admin, session_id, events[-1]["position"])
    served = author.get(f"/api/sessions/{session_id}/messages/").json()
    assert [{k: m[k] for k in MESSAGE_FIELDS} for m in head["messages"]] == [
        {k: m[k] for k in MESSAGE_FIELDS} for m in served]
    assert head["session"]["message_count"] == 2


def test_fold_matches_the_read_model_for_a_cancelled_reply(admin: Api, user: Api) -> None:
    session = user.new_session(max_tokens=400, temperature=0.9)
    posted = user.post_message(session["id"], "아주 긴 이야기를 써 주세요. " + KOREAN_PROMPT)
    assert user.post(f"/api/sessions/{session['id']}/cancel/").status_code in (200, 202, 204)
    ended = user.wait_reply(session["id"], posted["reply"]["id"], timeout=300)
    assert ended["status"] == "cancelled"
    events = timeline(admin, session["id"])["events"]
    head = timeline(admin, session["id"], events[-1]["position"])
    served = user.get(f"/api/sessions/{session['id']}/messages/").json()
    assert [{k: m[k] for k in MESSAGE_FIELDS} for m in head["messages"]] == [
        {k: m[k] for k in MESSAGE_FIELDS} for m in served]


def test_timeline_refuses_what_is_no_session(admin: Api, user: Api) -> None:
    assert admin.get(f"/api/admin/sessions/{uuid.uuid4()}/timeline/").status_code == 404
    assert admin.get("/api/admin/sessions/nonsense/timeline/").status_code == 404
    # A user's id is an aggregate, but no chat session.
    user_id = user.user["id"]
    assert admin.get(f"/api/admin/sessions/{user_id}/timeline/").status_code == 404
    session = user.new_session()
    response = admin.get(f"/api/admin/sessions/{session['id']}/timeline/?at=abc")
    assert response.status_code == 400


# -- users -----------------------------------------------------------------------------------


def test_disable_stops_tokens_at_once_and_cancels_replies(server: ServerProcess, admin: Api,
                                                         anon: Api) -> None:
    name = f"d{uuid.uuid4().hex[:9]}"
    victim = anon.register(name, password="비밀번호 correct horse")
    user_id = victim.user["id"]
    first = victim.new_session(max_tokens=1500, temperature=0.9)
    second = victim.new_session(max_tokens=1500, temperature=0.9)
    running = victim.post_message(first["id"], KOREAN_PROMPT)
    waiting = victim.post_message(second["id"], KOREAN_PROMPT)

    response = admin.post(f"/api/admin/users/{user_id}/disable/")
    assert response.status_code == 200, response.text
    assert response.json()["disabled"] is True
    assert victim.get("/api/auth/me/").status_code == 401  # at once, not eventually
    assert victim.get(f"/api/sessions/{first['id']}/messages/").status_code == 401

    def reply_status(session_id: str, reply_id: str) -> str:
        messages = timeline(admin, session_id, 2**40)["messages"]
        return str(next(m["status"] for m in messages if m["id"] == reply_id))

    deadline = time.monotonic() + 300
    ends: tuple[str, str] = ("", "")
    while time.monotonic() < deadline:
        ends = (reply_status(first["id"], running["reply"]["id"]),
                reply_status(second["id"], waiting["reply"]["id"]))
        if "queued" not in ends and "streaming" not in ends:
            break
        time.sleep(0.1)
    assert ends == ("cancelled", "cancelled")
    disabled = [e for e in admin.events(type="User.Disabled") if e["originator_id"] == user_id]
    assert len(disabled) == 1 and disabled[0]["data"]["by"] == admin.user["id"]
    signing_in = anon.post("/api/auth/login/", json={"username": name,
                                                     "password": "비밀번호 correct horse"})
    assert signing_in.status_code == 403
    assert signing_in.json()["error"]["code"] == "account_disabled"

    response = admin.post(f"/api/admin/users/{user_id}/enable/")
    assert response.status_code == 200 and response.json()["disabled"] is False
    assert victim.get("/api/auth/me/").status_code == 401  # old tokens stay revoked
    signing_in = anon.post("/api/auth/login/", json={"username": name,
                                                     "password": "비밀번호 correct horse"})
    assert signing_in.status_code == 200
    again = Api(server.url, signing_in.json()["token"])
    assert again.get("/api/auth/me/").json()["username"] == name

    listed = {u["id"]: u for u in admin.get("/api/admin/users/").json()}
    assert listed[user_id]["sessions"] == 2 and listed[user_id]["messages"] == 4
    assert listed[user_id]["disabled"] is False


def test_never_the_last_admin(tmp_path: Path) -> None:
    """A server of its own (no model needed): its first user is its only admin."""
    process = ServerProcess(tmp_path / "data", MODEL_PATH=str(tmp_path / "no-model.gguf"))
    process.start()
    try:
        first = Api(process.url).register("first_admin")
        first_id = first.user["id"]
        for action in ("revoke-admin", "disable"):
            response = first.post(f"/api/admin/users/{first_id}/{action}/")
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "last_admin"
        assert first.get("/api/auth/me/").json()["is_admin"] is True

        second = Api(process.url).register("second_user")
        second_id = second.user["id"]
        assert second.get("/api/admin/users/").status_code == 403
        granted = first.post(f"/api/admin/users/{second_id}/grant-admin/")
        assert granted.status_code == 200 and granted.json()["is_admin"] is True
        assert second.get("/api/admin/users/").status_code == 200

        assert first.post(f"/api/admin/users/{first_id}/revoke-admin/").status_code == 200
        assert first.get("/api/admin/users/").status_code == 403  # at once
        response = second.post(f"/api/admin/users/{second_id}/revoke-admin/")
        assert response.status_code == 409
        # A disabled admin is no active admin either: the seat counts only active ones.
        assert second.post(f"/api/admin/users/{second_id}/disable/").status_code == 409
        assert second.post(f"/api/admin/users/{uuid.uuid4()}/disable/").status_code == 404
        assert second.post(f"/api/admin/users/{first_id}/teleport/").status_code == 404
    finally:
        process.stop()


def test_sparkline_draws_runs_and_gaps() -> None:
    from app.pages.sparkline import points, sparkline

    runs = points([1.0, 2.0, None, 4.0, 2.0, None])
    assert len(runs) == 2 and [len(run) for run in runs] == [2, 2]
    highest = min(y for run in runs for _, y in run)  # SVG y grows downwards
    assert runs[1][0][1] == highest  # 4.0 is the top of the chart
    assert points([None, None]) == []
    empty = sparkline([None] * 12, "토큰/초")
    assert "<polyline" not in empty and "no data" in empty and "토큰/초" in empty
    one = sparkline([None, 3.5, None], "TTFT", " s")
    assert "<circle" in one and "3.5 s" in one
    assert "<script" not in sparkline([1.0, 2.0], "<script>x</script>")


# -- pages over HTTP ---------------------------------------------------------------------------


def test_pages_render_for_admins(admin: Api, author: Api,
                                 finished_chat: dict[str, Any]) -> None:
    session_id = finished_chat["session"]["id"]
    for path in ("/admin", "/admin/users", "/admin/events", "/admin/sessions",
                 f"/admin/sessions/{session_id}", "/admin/projections",
                 f"/admin/sessions?user={author.user['id']}"):
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
    dashboard = admin.get("/admin").text
    assert re.search(r'id="stat-chain-hash">[0-9a-f]{64}<', dashboard)
    assert "<svg" in dashboard and "<script>" not in dashboard.split("</head>", 1)[1]
    assert author.user["username"] in admin.get("/admin/users").text
    sessions = admin.get(f"/admin/sessions?user={author.user['id']}").text
    assert "등대 이야기" in sessions
    # A timeline link from the event browser opens the chat at that event.
    events = timeline(admin, session_id)["events"]
    queued = positions_of(events, "ReplyQueued")[0]
    at_queued = admin.get(f"/admin/sessions/{session_id}", params={"at": queued}).text
    step = [e["position"] for e in events].index(queued)
    assert f'data-step="{step}"' in at_queued and f'data-position="{queued}"' in at_queued
    assert 'data-status="queued"' in at_queued and KOREAN_PROMPT in at_queued


def test_pages_speak_korean_and_english(admin: Api) -> None:
    korean = admin.get("/admin/users", headers={"Accept-Language": "ko-KR,ko;q=0.9"}).text
    assert "대시보드" in korean and "사용자" in korean and "Dashboard" not in korean
    english = admin.get("/admin/users", headers={"Accept-Language": "en-US"}).text
    assert "Dashboard" in english and "대시보드" not in english


def test_event_browser_filters_and_pages(admin: Api, author: Api,
                                         finished_chat: dict[str, Any]) -> None:
    page = admin.get("/admin/events", params={"type": "UserMessagePosted",
                                               "user": author.user["username"]})
    assert page.status_code == 200
    types = set(re.findall(r'data-type="([^"]+)"', page.text))
    assert types == {"ChatSession.UserMessagePosted"}
    assert KOREAN_PROMPT in page.text  # pretty-printed, Korean as Korean
    # Store order, paginated by position: two pages of 3 never overlap and follow on.
    newest = admin.get("/admin/events", params={"limit": 3}).text
    shown = [int(p) for p in re.findall(r'data-position="(\d+)"', newest)]
    assert shown == sorted(shown) and len(shown) == 3
    older_link = re.search(r'href="\?([^"]*before=\d+[^"]*)"', newest)
    assert older_link
    older = admin.get("/admin/events?" + older_link.group(1).replace("&amp;", "&")).text
    before = [int(p) for p in re.findall(r'data-position="(\d+)"', older)]
    assert before and max(before) < min(shown)
    # Secrets never show: sign-ins carry token hashes, registrations password hashes.
    signins = admin.get("/admin/events", params={"type": "LoggedIn"}).text
    assert "[redacted]" in signins and "token_hash" in signins
    assert not re.search(r'"token_hash": "(?!\[redacted\])', signins)
    bad = admin.get("/admin/events", params={"type": "NoSuchThing"})
    assert bad.status_code == 400 and "type" in bad.text
    bad = admin.get("/admin/events", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "since" in bad.text


def test_projection_rebuild_from_the_page(admin: Api) -> None:
    response = admin.post("/admin/projections/sessions/rebuild")
    assert response.status_code == 200 and 'id="projection-sessions"' in response.text
    assert admin.post("/admin/projections/nope/rebuild").status_code == 404
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        table = admin.get("/admin/projections/table").text
        if "rebuilding" not in table:
            break
        time.sleep(0.1)
    assert admin.get("/api/admin/projections/").status_code == 200
    # The vector follower is listed with its own position (read-only: no rebuild button).
    row = re.search(r'<tr id="projection-vectors".*?</tr>', table, re.S)
    assert row and "/rebuild" not in row.group(0)
    numbers = [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row.group(0))]
    assert len(numbers) == 3 and numbers[2] == max(0, numbers[1] - numbers[0])


# -- in a real browser -------------------------------------------------------------------------


def admin_page(context: BrowserContext, server: ServerProcess, admin: Api) -> Page:
    assert admin.token
    context.add_cookies([{"name": "session", "value": admin.token, "url": server.url}])
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    return page


def test_dashboard_updates_live(context: BrowserContext, server: ServerProcess, admin: Api,
                                author: Api) -> None:
    page = admin_page(context, server, admin)
    page.goto(f"{server.url}/admin")
    events = page.locator("#stat-events")
    before = int(events.inner_text())
    expect(page.locator("#stat-chain-hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(page.locator("svg.sparkline")).to_have_count(2)
    author.new_session(title="대시보드 확인")  # a new event: the page follows by itself
    expect(events).not_to_have_text(str(before), timeout=15_000)
    assert int(events.inner_text()) > before
    expect(page.locator("#stat-chain-position")).not_to_have_text("0")

    # A reply being written shows up with its author, its chat and its tokens so far.
    chat = author.new_session(title="생성 중인 대화", max_tokens=1500, temperature=0.9)
    author.post_message(chat["id"], KOREAN_PROMPT)
    generating = page.locator("#generating")
    expect(generating).to_contain_text(author.user["username"], timeout=120_000)
    expect(generating).to_contain_text("생성 중인 대화")
    assert author.post(f"/api/sessions/{chat['id']}/cancel/").status_code in (200, 202, 204)
    expect(generating).not_to_contain_text("생성 중인 대화", timeout=60_000)


def test_event_browser_filters_and_tails_live(context: BrowserContext, server: ServerProcess,
                                              admin: Api, author: Api) -> None:
    page = admin_page(context, server, admin)
    page.goto(f"{server.url}/admin/events")
    page.fill("input[name=type]", "Renamed")
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/events?type=Renamed*")
    rows = page.locator("#event-rows tr")
    for kind in rows.evaluate_all("rows => rows.map(r => r.dataset.type)"):
        assert kind == "ChatSession.Renamed"

    page.click("#tail-link")
    expect(page.locator("#tailing")).to_be_visible()
    count = rows.count()
    session = author.new_session()
    title = f"실시간 꼬리 {uuid.uuid4().hex[:6]}"
    assert author.patch(f"/api/sessions/{session['id']}/", json={"title": title}
                        ).status_code == 200
    expect(rows).to_have_count(count + 1, timeout=15_000)
    row = rows.last
    expect(row).to_have_attribute("data-type", "ChatSession.Renamed")
    row.locator("summary").click()
    expect(row.locator("pre.payload")).to_contain_text(title)


def test_time_travel_scrubs_a_reply_back_to_its_first_tokens(
    context: BrowserContext, server: ServerProcess, admin: Api, finished_chat: dict[str, Any]
) -> None:
    session_id = finished_chat["session"]["id"]
    final = finished_chat["final"]["content"]
    events = timeline(admin, session_id)["events"]
    kinds = [e["type"] for e in events]
    first_tokens = kinds.index("ChatSession.TokensGenerated")

    page = admin_page(context, server, admin)
    page.goto(f"{server.url}/admin/sessions/{session_id}")
    frame = page.locator("#frame")
    reply = page.locator(".tt-message--assistant .tt-message__body").last
    expect(frame).to_have_attribute("data-step", str(len(events) - 1))
    expect(reply).to_have_text(final)

    slider = page.locator("#scrub")
    slider.focus()
    page.keyboard.press("Home")
    expect(frame).to_have_attribute("data-step", "0")
    expect(page.locator(".tt-message")).to_have_count(0)
    for _ in range(first_tokens):
        page.keyboard.press("ArrowRight")
    expect(frame).to_have_attribute("data-step", str(first_tokens))
    expect(page.locator(".tt-message--user .tt-message__body")).to_have_text(KOREAN_PROMPT)
    first_text = reply.inner_text()
    assert first_text and final.startswith(first_text) and len(first_text) < len(final)
    expect(page.locator(".tt-message--assistant")).to_have_attribute("data-status", "streaming")

    page.click("#step-next")  # the buttons move the slider along
    expect(frame).to_have_attribute("data-step", str(first_tokens + 1))
    expect(page.locator("#scrub")).to_have_value(str(first_tokens + 1))
    grown = reply.inner_text()
    assert grown.startswith(first_text) and final.startswith(grown)
    assert len(grown) > len(first_text) or kinds[first_tokens + 1] != "ChatSession.TokensGenerated"

    page.click("#step-last")
    expect(reply).to_have_text(final)
    expect(page.locator(".tt-message--assistant")).to_have_attribute("data-status", "complete")
    expect(page.locator("#scrub")).to_have_value(str(len(events) - 1))


def test_users_page_disables_and_enables(context: BrowserContext, server: ServerProcess,
                                         admin: Api, anon: Api) -> None:
    victim = anon.register()
    page = admin_page(context, server, admin)
    page.goto(f"{server.url}/admin/users")
    row = page.locator(f"#user-{victim.user['id']}")
    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".badge--failed")).to_have_text("disabled")
    assert victim.get("/api/auth/me/").status_code == 401
    row.get_by_role("button", name="Enable").click()
    expect(row.locator(".badge--failed")).to_have_count(0)
    # The last-admin rule shows as a message, and the row stays as it was.
    own = page.locator(f"#user-{admin.user['id']}")
    if len([u for u in admin.get("/api/admin/users/").json()
            if u["is_admin"] and not u["disabled"]]) == 1:
        own.get_by_role("button", name="Revoke admin").click()
        expect(page.locator("#toasts")).to_contain_text("administrator")
        expect(own.locator(".badge--admin")).to_be_visible()


def test_projections_page_rebuilds_and_stays_usable(context: BrowserContext,
                                                    server: ServerProcess, admin: Api) -> None:
    page = admin_page(context, server, admin)
    page.goto(f"{server.url}/admin/projections")
    row = page.locator("#projection-messages")
    row.get_by_role("button", name="Rebuild").click()
    expect(page.locator("#projection-messages .projection-state")).to_contain_text(
        re.compile("up to date|catching up|rebuild"))
    expect(page.locator("#projection-messages .projection-state")).to_contain_text(
        "up to date", timeout=30_000)
    page.click("a[href='/admin/events']")  # still usable
    page.wait_for_url("**/admin/events")
    expect(page.locator("#event-rows tr").first).to_be_visible()


def test_admin_sse_stream_answers(server: ServerProcess, admin: Api) -> None:
    """The dashboard stream sends the stats fragment as its first event."""
    with httpx.stream("GET", f"{server.url}/admin/live",
                      headers={"Authorization": f"Bearer {admin.token}"}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("data:") and "stat-events" in line:
                break
        assert "event: stats" in lines
