"""A user over their share of the reply queue gets 429 with Retry-After; others still queue."""

from __future__ import annotations

from pathlib import Path

from tests.server import Api, ServerProcess
from tests.test_streaming import LONG_PROMPT, post, read_until_end


def test_one_user_cannot_fill_the_queue(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", N_PARALLEL="1", MAX_QUEUED_PER_USER="1").start()
    try:
        greedy = Api(server.url).register("greedy")  # the first user: the admin
        other = Api(server.url).register("other")
        writing = greedy.new_session(max_tokens=1500, temperature=0.9)
        running = post(greedy, writing["id"], LONG_PROMPT)
        read_until_end(greedy, writing["id"], running["reply"]["id"], running["last_event_id"],
                       stop_after_tokens=1)  # generating now, no longer waiting
        waiting = post(greedy, greedy.new_session(max_tokens=16)["id"], "두 번째 질문입니다.")
        assert waiting["reply"]["status"] == "queued"

        third = greedy.new_session(max_tokens=16)
        before = greedy.get("/api/admin/events/", params={"originator_id": third["id"]}).json()
        refused = greedy.post(f"/api/sessions/{third['id']}/messages/",
                              json={"content": "세 번째 질문입니다."})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        after = greedy.get("/api/admin/events/", params={"originator_id": third["id"]}).json()
        assert after == before  # nothing recorded for the refused message

        # Another user's reply still queues.
        theirs = post(other, other.new_session(max_tokens=16)["id"], "안녕하세요?")
        assert theirs["reply"]["status"] == "queued"
        assert greedy.post(f"/api/sessions/{writing['id']}/cancel/").status_code == 202
    finally:
        server.stop()
