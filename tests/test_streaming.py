"""The SSE stream: events come from the committed log, resume loses and repeats nothing."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.postgres import both_stores
from tests.server import Api, sse_events

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


def post(api: Api, session_id: str, content: str) -> dict[str, Any]:
    response = api.post(f"/api/sessions/{session_id}/messages/", json={"content": content})
    assert response.status_code == 202, response.text
    return dict(response.json())


def read_until_end(api: Api, session_id: str, reply_id: str, last_event_id: int | str,
                   stop_after_tokens: int | None = None) -> list[dict[str, Any]]:
    """Events of one reply from `last_event_id` on, until it ends (or N tokens were read)."""
    seen: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": str(last_event_id)}
    with api.http.stream("GET", f"/api/sessions/{session_id}/stream/", headers=headers,
                         timeout=httpx.Timeout(60, read=60)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response):
            if event["data"].get("reply_id") != reply_id:
                continue
            seen.append(event)
            tokens = sum(1 for e in seen if e["event"] == "token")
            if event["event"] in ("done", "error", "cancelled"):
                break
            if stop_after_tokens is not None and tokens >= stop_after_tokens:
                break
    return seen


def test_stream_shows_queued_tokens_and_done(user: Api) -> None:
    session = user.new_session(max_tokens=40, temperature=0)
    posted = post(user, session["id"], "안녕하세요! Say hello in one sentence.")
    reply_id = posted["reply"]["id"]
    assert isinstance(posted["last_event_id"], int)

    events = read_until_end(user, session["id"], reply_id, posted["last_event_id"])

    names = [e["event"] for e in events]
    assert names[0] == "queued" and events[0]["data"]["position"] >= 1
    assert names[-1] == "done"
    tokens = [e for e in events if e["event"] == "token"]
    assert tokens, "a reply streams at least one token event"
    assert [t["data"]["index"] for t in tokens] == list(range(len(tokens)))
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    done = events[-1]["data"]
    assert done["content"] == "".join(t["data"]["text"] for t in tokens)
    assert done["token_count"] >= len(tokens)
    assert done["processing_time"] > 0
    assert done["finish_reason"] in ("stop", "length")
    stored = user.wait_reply(session["id"], reply_id)
    assert stored["content"] == done["content"] and stored["status"] == "complete"


def test_resume_after_dropped_connection_loses_and_repeats_nothing(user: Api) -> None:
    session = user.new_session(max_tokens=200, temperature=0.8)
    posted = post(user, session["id"], LONG_PROMPT)
    reply_id = posted["reply"]["id"]

    first = read_until_end(user, session["id"], reply_id, posted["last_event_id"],
                           stop_after_tokens=3)  # then the connection drops
    last_id = first[-1]["id"]
    rest = read_until_end(user, session["id"], reply_id, last_id)

    everything = first + rest
    assert len({e["id"] for e in everything}) == len(everything), "an event was repeated"
    tokens = [e for e in everything if e["event"] == "token"]
    assert [t["data"]["index"] for t in tokens] == list(range(len(tokens))), "a token was lost"
    assert everything[-1]["event"] == "done"
    assert everything[-1]["data"]["content"] == "".join(t["data"]["text"] for t in tokens)


def test_resume_with_query_parameter_and_after_the_reply_ended(user: Api) -> None:
    session = user.new_session(max_tokens=24, temperature=0)
    posted = post(user, session["id"], "Name three colours.")
    reply_id = posted["reply"]["id"]
    user.wait_reply(session["id"], reply_id)

    # Connecting later replays everything after the id, from the log.
    url = f"/api/sessions/{session['id']}/stream/?last_event_id={posted['last_event_id']}"
    with user.http.stream("GET", url) as response:
        events = []
        for event in sse_events(response):
            events.append(event)
            if event["event"] == "done":
                break
    assert events[0]["event"] == "queued"
    assert events[-1]["data"]["reply_id"] == reply_id


def test_stream_of_a_second_reply_starts_after_the_first(user: Api) -> None:
    session = user.new_session(max_tokens=16, temperature=0)
    first = post(user, session["id"], "Hello")
    user.wait_reply(session["id"], first["reply"]["id"])
    second = post(user, session["id"], "And again")
    assert second["last_event_id"] > first["last_event_id"]
    events = read_until_end(user, session["id"], second["reply"]["id"], second["last_event_id"])
    assert all(e["data"]["reply_id"] == second["reply"]["id"] for e in events)
    assert int(events[0]["id"]) > second["last_event_id"]


def test_cancel_keeps_the_text_so_far(user: Api) -> None:
    session = user.new_session(max_tokens=1500, temperature=0.9)
    posted = post(user, session["id"], LONG_PROMPT)
    reply_id = posted["reply"]["id"]
    read_until_end(user, session["id"], reply_id, posted["last_event_id"], stop_after_tokens=2)

    response = user.post(f"/api/sessions/{session['id']}/cancel/")
    assert response.status_code == 202

    events = read_until_end(user, session["id"], reply_id, posted["last_event_id"])
    assert events[-1]["event"] == "cancelled"
    tokens = "".join(e["data"]["text"] for e in events if e["event"] == "token")
    assert events[-1]["data"]["content"] == tokens and tokens
    stored = user.wait_reply(session["id"], reply_id)
    assert stored["status"] == "cancelled" and stored["content"] == tokens


def test_queued_reply_waits_its_turn_and_can_be_cancelled(fresh_server: Any) -> None:
    # One decoding slot, so a second reply really waits (the default decodes 4 at once).
    fresh_server.env["N_PARALLEL"] = "1"
    fresh_server.start()
    other, user = Api(fresh_server.url).register(), Api(fresh_server.url).register()
    busy = other.new_session(max_tokens=1500, temperature=0.9)
    running = post(other, busy["id"], LONG_PROMPT)
    read_until_end(other, busy["id"], running["reply"]["id"], running["last_event_id"],
                   stop_after_tokens=1)

    mine = user.new_session(max_tokens=16)
    queued = post(user, mine["id"], "Are you there?")
    assert queued["reply"]["status"] == "queued"
    assert queued["reply"]["queue_position"] >= 2

    assert user.post(f"/api/sessions/{mine['id']}/cancel/").status_code == 202
    stored = user.wait_reply(mine["id"], queued["reply"]["id"])
    assert stored["status"] == "cancelled" and stored["content"] == ""
    other.post(f"/api/sessions/{busy['id']}/cancel/")
    assert other.wait_reply(busy["id"], running["reply"]["id"])["status"] == "cancelled"


def test_idle_stream_sends_pings(fresh_server: Any) -> None:
    fresh_server.env["SSE_PING_SECONDS"] = "0.5"
    fresh_server.start()
    api = Api(fresh_server.url).register()
    session = api.new_session()
    started = time.monotonic()
    with api.http.stream("GET", f"/api/sessions/{session['id']}/stream/") as response:
        for line in response.iter_lines():
            if line.startswith(":"):
                break
            assert time.monotonic() - started < 30, "no ping arrived"


def test_a_full_queue_answers_503_with_retry_after_and_records_nothing(
    fresh_server: Any,
) -> None:
    fresh_server.env["MAX_QUEUE"] = "1"
    fresh_server.start()
    api = Api(fresh_server.url).register()
    busy = api.new_session(max_tokens=1500, temperature=0.9)
    running = post(api, busy["id"], LONG_PROMPT)
    read_until_end(api, busy["id"], running["reply"]["id"], running["last_event_id"],
                   stop_after_tokens=1)  # now it is generating, not waiting
    waiting = post(api, busy["id"], "And then?")
    assert waiting["reply"]["queue_position"] == 2

    refused = api.post(f"/api/sessions/{busy['id']}/messages/", json={"content": "Third?"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["Retry-After"]) > 0
    # (The running reply keeps appending tokens, so the check is on what was refused.)
    posted_events = api.get("/api/admin/events/", params={
        "originator_id": busy["id"], "type": "UserMessagePosted", "limit": 100}).json()
    assert [e["data"]["content"] for e in posted_events["events"]] == [LONG_PROMPT, "And then?"]
    api.post(f"/api/sessions/{busy['id']}/cancel/")
