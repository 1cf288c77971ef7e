"""Streams (issue 7, item 8): woken only by their own chat, ended by sign-out and by the
session's deletion, capped per user."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from app.watch import ChangeWatch
from tests.server import Api, ServerProcess, sse_events


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", MAX_STREAMS_PER_USER="2")
    yield process.start()
    process.stop()


def follow(api: Api, session_id: str, opened: list[int]) -> list[str]:
    """Read a stream to its end; returns the event names seen."""
    names: list[str] = []
    with api.http.stream("GET", f"/api/sessions/{session_id}/stream/",
                         params={"last_event_id": 0}) as response:
        opened.append(response.status_code)
        if response.status_code != 200:
            return names
        for event in sse_events(response):
            names.append(event.get("event", ""))
    return names


def wait_open(opened: list[int], count: int) -> None:
    deadline = time.monotonic() + 60
    while len(opened) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(opened) >= count


def test_streams_end_on_sign_out_and_deletion_and_are_capped(capped: ServerProcess) -> None:
    owner = Api(capped.url).register("stream_owner", password="비밀번호 여덟자 이상")
    kept = owner.new_session(title="남는 대화")
    doomed = owner.new_session(title="지울 대화")
    opened: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        on_kept: Future[list[str]] = pool.submit(follow, owner, kept["id"], opened)
        on_doomed: Future[list[str]] = pool.submit(follow, owner, doomed["id"], opened)
        wait_open(opened, 2)
        # A third stream of the same user is refused before it starts.
        third = owner.get(f"/api/sessions/{kept['id']}/stream/")
        assert third.status_code == 429 and "Retry-After" in third.headers
        assert third.json()["error"]["code"] == "rate_limited"

        assert owner.delete(f"/api/sessions/{doomed['id']}/").status_code == 204
        on_doomed.result(timeout=60)  # ended by the deletion, not left open
        assert owner.post("/api/auth/logout/").status_code == 204
        on_kept.result(timeout=60)  # ended by the sign-out
    assert opened == [200, 200]


def test_a_change_wakes_only_the_streams_of_that_aggregate() -> None:
    async def run() -> tuple[bool, bool, int]:
        watch = ChangeWatch(asyncio.get_running_loop())
        mine, other = uuid4(), uuid4()
        waiter = watch.subscribe(mine)
        watch.changed_threadsafe(7, [other])
        await asyncio.sleep(0)
        woken_by_other = waiter.is_set()
        watch.changed_threadsafe(8, [mine])
        await asyncio.sleep(0)
        woken_by_mine = waiter.is_set()
        watch.unsubscribe(waiter, mine)
        return woken_by_other, woken_by_mine, watch.watched

    assert asyncio.run(run()) == (False, True, 0)


def test_the_shared_server_streams_still_work(server: ServerProcess, user: Api) -> None:
    session = user.new_session(title="스트림", max_tokens=4)
    posted = user.post_message(session["id"], "안녕하세요")
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {user.token}"}) as client, \
            client.stream("GET", f"/api/sessions/{session['id']}/stream/",
                          params={"last_event_id": posted["last_event_id"]}) as response:
        for event in sse_events(response):
            if event["event"] in ("done", "error"):
                break
    assert event["event"] == "done"
