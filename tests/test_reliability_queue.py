"""Posts racing past the queue check cannot overfill the reply queue (issue 7, item 6)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.server import Api, ServerProcess

MAX_QUEUE = 2
LONG_PROMPT = "한국의 역사에 대해 아주 길고 자세하게 이야기해 주세요. " * 4


@pytest.fixture
def small_queue(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", MAX_QUEUE=str(MAX_QUEUE), N_PARALLEL="1")
    yield process.start()
    process.stop()


def test_concurrent_posts_never_exceed_max_queue(small_queue: ServerProcess) -> None:
    users = [Api(small_queue.url).register(f"queue_user{i}") for i in range(3)]
    busy = users[0].new_session(max_tokens=1500, temperature=0.9)
    running = users[0].post_message(busy["id"], LONG_PROMPT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the actor has taken it: the queue is empty again
        stats = users[0].get(f"/api/sessions/{busy['id']}/messages/").json()
        if any(m["id"] == running["reply"]["id"] and m["status"] == "streaming" for m in stats):
            break
        time.sleep(0.05)
    sessions = [(u, u.new_session(max_tokens=4)) for u in users for _ in range(4)]

    def post(pair: tuple[Api, dict[str, str]]) -> int:
        api, session = pair
        return api.post(f"/api/sessions/{session['id']}/messages/",
                        json={"content": "동시에 보내는 질문"}).status_code

    with ThreadPoolExecutor(len(sessions)) as pool:
        codes = list(pool.map(post, sessions))
    assert set(codes) <= {202, 503}, codes
    assert codes.count(202) <= MAX_QUEUE, codes
    users[0].post(f"/api/sessions/{busy['id']}/cancel/")
