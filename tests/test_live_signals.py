"""Live signals: queue places as the queue moves, other chats' finished replies, and the
connection indicator; over the signals stream and in Debian's chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, expect

from app.config import Settings
from tests.server import Api, ServerProcess
from tests.test_browser import LONG_PROMPT, send_in_chat, signed_in_page


def signals_until(api: Api, session_id: str, after: int, wanted: str,
                  timeout: float = 90) -> list[str]:
    """The signal fragments from `after` on, read until one contains `wanted`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    with api.http.stream("GET", "/signals", params={"session": session_id,
                                                    "last_event_id": after},
                         timeout=httpx.Timeout(timeout)) as response:
        assert response.status_code == 200, response.read()
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line == "" and data:
                seen.append("\n".join(data))
                data = []
                if wanted in seen[-1]:
                    return seen
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no signal with {wanted!r}; saw {seen}")


def wait_status(api: Api, session_id: str, reply_id: str, statuses: set[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for m in api.get(f"/api/sessions/{session_id}/messages/").json():
            if m["id"] == reply_id and m["status"] in statuses:
                return
        time.sleep(0.05)
    raise AssertionError(f"reply {reply_id} never reached {statuses}")


@pytest.fixture
def busy_queue(user: Api) -> Iterator[list[tuple[dict[str, Any], dict[str, Any]]]]:
    """Every decoding slot of the engine busy with a long reply, and two more chats whose
    replies wait behind them (the last one is third in line at most)."""
    made = []
    for n in range(Settings().n_parallel + 2):
        session = user.new_session(title=f"{n + 1}번째 대화", max_tokens=1500, temperature=0.9)
        made.append((session, user.post_message(session["id"], LONG_PROMPT)))
    wait_status(user, made[0][0]["id"], made[0][1]["reply"]["id"], {"streaming"})
    yield made
    for session, _posted in made:
        user.post(f"/api/sessions/{session['id']}/cancel/")


def test_queue_place_moves_when_replies_ahead_end(user: Api, busy_queue: Any) -> None:
    (first, _), *_middle, (last, posted) = busy_queue
    reply_id = posted["reply"]["id"]
    place = posted["reply"]["queue_position"]
    assert place > Settings().n_parallel, "the last reply waits"
    user.post(f"/api/sessions/{first['id']}/cancel/")  # a slot frees; the queue moves up
    seen = signals_until(user, last["id"], posted["last_event_id"] + 1,
                         f"position {place - 1}")
    assert any(f'#msg-{reply_id} .badge--queued' in s for s in seen)


def test_a_finished_reply_elsewhere_is_signalled_to_its_owner_only(
    server: ServerProcess, user: Api, anon: Api
) -> None:
    stranger = anon.register()
    theirs = stranger.new_session(max_tokens=8, title="남의 대화")
    open_chat = user.new_session(max_tokens=8, title="열린 대화")
    other = user.new_session(max_tokens=8, title="끝난 대화 <b>")
    # The open chat's own reply finishes first: its page shows it, so it is no notice.
    start = user.post_message(open_chat["id"], "하나")["last_event_id"]
    stranger.post_message(theirs["id"], "안녕?")
    user.post_message(other["id"], "안녕?")
    seen = signals_until(user, open_chat["id"], start, f'href="/chats/{other["id"]}"')
    notice = seen[-1]
    assert "“끝난 대화 &lt;b&gt;”" in notice and "session-item__unread" in notice
    assert f'#session-link-{other["id"]}' in notice
    assert not any(theirs["id"] in s for s in seen), "someone else's chat was signalled"
    assert not any(f'href="/chats/{open_chat["id"]}"' in s for s in seen)


def test_signals_refuse_bad_input(server: ServerProcess, user: Api, anon: Api) -> None:
    stranger = anon.register()
    theirs = stranger.new_session()
    mine = user.new_session()
    assert user.get("/signals", params={"session": theirs["id"]}).status_code == 404
    assert user.get("/signals", params={"session": "없는-대화"}).status_code == 404
    assert user.get("/signals").status_code == 404
    bad = user.get("/signals", params={"session": mine["id"], "last_event_id": "어제"})
    assert bad.status_code == 400
    assert anon.get("/signals", params={"session": mine["id"]}).status_code == 401


def test_browser_queue_badge_moves_and_notice_opens_the_chat(
    context: BrowserContext, server: ServerProcess, user: Api, busy_queue: Any
) -> None:
    (first, _), *_middle, (last, posted) = busy_queue
    page = signed_in_page(context, server, user)
    page.goto(f"{server.url}/chats/{last['id']}")
    badge = page.locator(f"#msg-{posted['reply']['id']} .badge--queued")
    place = int(badge.inner_text().rsplit(" ", 1)[1])
    assert place > Settings().n_parallel
    user.post(f"/api/sessions/{first['id']}/cancel/")
    expect(badge).to_contain_text(f"position {place - 1}", timeout=30_000)

    quick = user.new_session(max_tokens=8, title="빠른 답")
    for session, _posted in busy_queue:
        user.post(f"/api/sessions/{session['id']}/cancel/")
    # Reload so the quick chat has its sidebar item, then finish a reply there.
    page.reload()
    user.post_message(quick["id"], "한 번 더")
    notice = page.locator(f"#toasts a[href='/chats/{quick['id']}']")
    expect(notice).to_contain_text("빠른 답", timeout=60_000)
    expect(page.locator(f"#session-link-{quick['id']} .session-item__unread")).to_have_count(1)
    notice.click()
    page.wait_for_url(f"**/chats/{quick['id']}")


def test_connection_indicator_through_a_restart(context: BrowserContext,
                                                fresh_server: ServerProcess) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register()
    session = api.new_session(max_tokens=1500, temperature=0.9)
    page = send_in_chat(context, fresh_server, api, session["id"], LONG_PROMPT)
    reply = page.locator("article.message--assistant").last
    expect(reply.locator(".message__body")).not_to_have_text("", timeout=30_000)
    indicator = page.locator("#connection")
    expect(indicator).to_be_hidden()

    fresh_server.stop()
    expect(indicator).to_be_visible(timeout=15_000)
    expect(indicator).to_have_attribute("data-state", "lost")
    expect(indicator).to_contain_text("Connection lost")
    fresh_server.start()
    expect(indicator).to_have_attribute("data-state", "open", timeout=90_000)
    expect(indicator).to_contain_text("Reconnected")
    expect(reply).to_have_attribute("data-status", "interrupted", timeout=30_000)
    stored = api.get(f"/api/sessions/{session['id']}/messages/").json()[-1]
    assert reply.locator(".message__body").inner_text() == stored["content"] != ""
    expect(indicator).to_be_hidden(timeout=10_000)
