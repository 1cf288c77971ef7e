"""Restarts and crashes lose nothing that was acknowledged."""

from __future__ import annotations

from typing import Any

from tests.postgres import both_stores
from tests.server import Api, ServerProcess
from tests.test_streaming import LONG_PROMPT, post, read_until_end

pytestmark = both_stores


def test_everything_survives_a_restart(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register("keeper", password="long enough")
    session = api.new_session(title="등대지기", max_tokens=24, temperature=0)
    posted = post(api, session["id"], "한국어로 인사해 주세요.")
    api.wait_reply(session["id"], posted["reply"]["id"])
    before = api.get(f"/api/sessions/{session['id']}/messages/").json()

    fresh_server.restart()

    assert api.get("/api/auth/me/").json()["username"] == "keeper"  # the token still works
    assert api.get(f"/api/sessions/{session['id']}/").json()["title"] == "등대지기"
    assert api.get(f"/api/sessions/{session['id']}/messages/").json() == before
    login = api.post("/api/auth/login/", json={"username": "keeper", "password": "long enough"})
    assert login.status_code == 200


def test_kill_mid_reply_leaves_it_interrupted_with_every_received_token(
    fresh_server: ServerProcess,
) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register()
    session = api.new_session(max_tokens=1500, temperature=0.9)
    posted = post(api, session["id"], LONG_PROMPT)
    reply_id = posted["reply"]["id"]
    received = read_until_end(api, session["id"], reply_id, posted["last_event_id"],
                              stop_after_tokens=5)
    text_received = "".join(e["data"]["text"] for e in received if e["event"] == "token")

    fresh_server.kill()
    fresh_server.start()

    reply = next(m for m in api.get(f"/api/sessions/{session['id']}/messages/").json()
                 if m["id"] == reply_id)
    assert reply["status"] == "interrupted"
    assert reply["content"].startswith(text_received) and text_received
    # A client resuming from its last id learns how the reply ended, without repeats.
    rest = read_until_end(api, session["id"], reply_id, received[-1]["id"])
    assert rest[-1]["event"] == "error" and rest[-1]["data"]["code"] == "interrupted"
    resumed = text_received + "".join(e["data"]["text"] for e in rest if e["event"] == "token")
    assert resumed == reply["content"]


def test_kill_with_a_queued_reply_marks_it_interrupted(fresh_server: ServerProcess) -> None:
    fresh_server.start()
    api = Api(fresh_server.url).register()
    busy = api.new_session(max_tokens=1500, temperature=0.9)
    running = post(api, busy["id"], LONG_PROMPT)
    waiting_session = api.new_session(max_tokens=16)
    waiting = post(api, waiting_session["id"], "Still there?")
    assert waiting["reply"]["queue_position"] >= 2

    fresh_server.kill()
    fresh_server.start()

    for session_id, reply_id in ((busy["id"], running["reply"]["id"]),
                                 (waiting_session["id"], waiting["reply"]["id"])):
        reply: dict[str, Any] = api.wait_reply(session_id, reply_id, timeout=10)
        assert reply["status"] == "interrupted"
    # The server goes on working after recovery.
    again = post(api, waiting_session["id"], "Hello again")
    assert api.wait_reply(waiting_session["id"], again["reply"]["id"])["status"] == "complete"
