"""Messages over the JSON API: post, list, regenerate, cancel, with the real model."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.postgres import both_stores
from tests.server import Api, assert_error, is_iso_utc
from tests.test_api_sessions import MODEL_ID

pytestmark = both_stores  # the API on the SQLite and the PostgreSQL store

LONG_PROMPT = "Write a very long and detailed story about a lighthouse keeper and a storm."
MESSAGE_KEYS = {"id", "role", "is_user", "content", "timestamp", "status", "token_count",
                "processing_time", "metadata"}


def reply_events(admin: Api, session_id: str, reply_id: str) -> list[dict[str, Any]]:
    return [e for e in admin.events(originator_id=session_id)
            if e["data"].get("reply_id") == reply_id]


def wait_for_event(admin: Api, session_id: str, types: set[str],
                   timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in admin.events(originator_id=session_id):
            if event["type"] in types:
                return event
        time.sleep(0.05)
    raise AssertionError(f"no {types} event in session {session_id}")


def assert_message_shape(message: dict[str, Any]) -> None:
    extra = set(message) - MESSAGE_KEYS
    assert set(message) >= MESSAGE_KEYS and extra <= {"queue_position"}, message
    assert str(uuid.UUID(message["id"])) == message["id"]
    assert message["role"] in ("user", "assistant")
    assert message["is_user"] is (message["role"] == "user")
    assert isinstance(message["content"], str)
    assert is_iso_utc(message["timestamp"])
    assert message["status"] in ("complete", "queued", "streaming", "cancelled", "failed",
                                 "interrupted")
    assert isinstance(message["token_count"], int)
    assert message["processing_time"] is None or isinstance(message["processing_time"], float)
    assert isinstance(message["metadata"], dict)


def test_post_answers_202_with_the_message_the_queued_reply_and_a_stream_position(
    user: Api, admin: Api
) -> None:
    session = user.new_session(max_tokens=16, temperature=0)
    before = admin.quiet_head()
    content = "안녕하세요! 한 문장으로 인사해 주세요. 🙂"
    response = user.post(f"/api/sessions/{session['id']}/messages/", json={"content": content})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"message", "reply", "last_event_id"}
    message, reply = body["message"], body["reply"]
    assert_message_shape(message)
    assert_message_shape(reply)
    assert (message["role"], message["is_user"], message["content"], message["status"]) == (
        "user", True, content, "complete")
    assert (message["token_count"], message["processing_time"], message["metadata"]) == (
        0, None, {})
    assert (reply["role"], reply["is_user"], reply["content"], reply["status"]) == (
        "assistant", False, "", "queued")
    assert isinstance(reply["queue_position"], int) and reply["queue_position"] >= 1
    assert (reply["token_count"], reply["metadata"]) == (0, {})
    assert isinstance(body["last_event_id"], int) and not isinstance(body["last_event_id"], bool)

    # last_event_id is the stream position just before the reply's queued event.
    recorded = admin.events(after=before, originator_id=session["id"])
    by_position = {e["position"]: e for e in recorded}
    posted = by_position[body["last_event_id"]]
    queued = by_position[body["last_event_id"] + 1]
    assert posted["type"] == "ChatSession.UserMessagePosted"
    assert posted["data"]["message_id"] == message["id"]
    assert posted["data"]["content"] == content
    assert queued["type"] == "ChatSession.ReplyQueued"
    assert queued["data"]["reply_id"] == reply["id"]
    assert queued["data"]["in_reply_to"] == message["id"]
    assert queued["data"]["queue_position"] == reply["queue_position"]


def test_a_reply_completes_and_the_list_shows_both_messages(user: Api, admin: Api,
                                                           store: str) -> None:
    session = user.new_session(max_tokens=24, temperature=0)
    content = "Say hello in one short sentence."
    posted = user.post_message(session["id"], content)
    done = user.wait_reply(session["id"], posted["reply"]["id"])

    response = user.get(f"/api/sessions/{session['id']}/messages/")
    assert response.status_code == 200
    listed = response.json()
    assert [m["id"] for m in listed] == [posted["message"]["id"], posted["reply"]["id"]]
    for message in listed:
        assert_message_shape(message)
        assert "queue_position" not in message
    assert listed[0]["content"] == content and listed[0]["timestamp"] <= listed[1]["timestamp"]
    reply = listed[1]
    assert reply == done
    assert reply["status"] == "complete" and reply["content"].strip()
    assert reply["token_count"] > 0
    assert isinstance(reply["processing_time"], float) and reply["processing_time"] > 0
    metadata = reply["metadata"]
    assert {"model_version", "model_params", "prompt_template", "finish_reason"} <= set(metadata)
    assert metadata["model_version"] == MODEL_ID
    assert metadata["finish_reason"] in ("stop", "length")
    assert metadata["model_params"]["max_tokens"] == 24
    assert metadata["model_params"]["temperature"] == 0.0
    assert isinstance(metadata["prompt_template"], str) and metadata["prompt_template"]

    # The stored text is exactly the pieces, numbered from 0, as the event log has them.
    events = reply_events(admin, session["id"], reply["id"])
    types = [e["type"].split(".")[1] for e in events]
    # On PostgreSQL a worker claims the reply before starting it (app/cluster/replies.py).
    assert types.count("ReplyClaimed") == (store == "postgres")
    types = [kind for kind in types if kind != "ReplyClaimed"]
    assert types[:2] == ["ReplyQueued", "ReplyStarted"] and types[-1] == "ReplyCompleted"
    pieces = [e["data"] for e in events if e["type"] == "ChatSession.TokensGenerated"]
    assert [p["index"] for p in pieces] == list(range(len(pieces)))
    assert "".join(p["text"] for p in pieces) == reply["content"]
    assert events[-1]["data"]["content"] == reply["content"]
    assert events[-1]["data"]["token_count"] == reply["token_count"]

    session_now = user.get(f"/api/sessions/{session['id']}/").json()
    assert session_now["message_count"] == 2
    assert session_now["title"] == content  # titled from the first message


def test_pieces_are_numbered_from_zero_for_every_reply(user: Api, admin: Api) -> None:
    session = user.new_session(max_tokens=8, temperature=0)
    first = user.post_message(session["id"], "Count to three.")
    user.wait_reply(session["id"], first["reply"]["id"])
    second = user.post_message(session["id"], "Now count to five.")
    user.wait_reply(session["id"], second["reply"]["id"])
    for posted in (first, second):
        pieces = [e["data"]["index"] for e in reply_events(admin, session["id"],
                                                           posted["reply"]["id"])
                  if e["type"] == "ChatSession.TokensGenerated"]
        assert pieces and pieces == list(range(len(pieces)))


def test_a_reply_stops_at_max_tokens(user: Api) -> None:
    session = user.new_session(max_tokens=4, temperature=0)
    posted = user.post_message(session["id"], LONG_PROMPT)
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    assert reply["status"] == "complete"
    assert reply["metadata"]["finish_reason"] == "length"
    assert reply["metadata"]["model_params"]["max_tokens"] == 4


def test_token_count_is_the_number_of_generated_tokens(user: Api, admin: Api) -> None:
    session = user.new_session(max_tokens=4, temperature=0)
    posted = user.post_message(session["id"], LONG_PROMPT)
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    streamed = sum(e["data"]["token_count"]
                   for e in reply_events(admin, session["id"], reply["id"])
                   if e["type"] == "ChatSession.TokensGenerated")
    assert reply["metadata"]["finish_reason"] == "length"
    assert (reply["token_count"], streamed) == (4, 4)


def test_a_reply_cut_inside_a_hangul_syllable_has_no_replacement_character(user: Api) -> None:
    session = user.new_session(max_tokens=16, temperature=0)
    content = "서울의 날씨는 어때요?\n줄바꿈과\t탭, 이모지 🌧️, 자모 \u1112\u1161\u11ab 그대로."
    posted = user.post_message(session["id"], content)
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    assert reply["metadata"]["finish_reason"] == "length"
    assert "\ufffd" not in reply["content"]


def test_regenerate_answers_202_with_a_new_reply_to_the_last_user_message(
    user: Api, admin: Api
) -> None:
    session = user.new_session(max_tokens=8, temperature=0)
    posted = user.post_message(session["id"], "Name a colour.")
    first = user.wait_reply(session["id"], posted["reply"]["id"])

    response = user.post(f"/api/sessions/{session['id']}/regenerate/")
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"message", "reply", "last_event_id"}
    assert body["message"] == posted["message"]
    reply = body["reply"]
    assert_message_shape(reply)
    assert reply["id"] not in (first["id"], posted["message"]["id"])
    assert (reply["status"], reply["content"], reply["role"]) == ("queued", "", "assistant")
    assert reply["queue_position"] >= 1
    [queued] = [e for e in admin.events(originator_id=session["id"])
                if e["position"] == body["last_event_id"] + 1]
    assert queued["type"] == "ChatSession.ReplyQueued"
    assert queued["data"]["reply_id"] == reply["id"]
    assert queued["data"]["in_reply_to"] == posted["message"]["id"]

    second = user.wait_reply(session["id"], reply["id"])
    assert second["status"] == "complete"
    listed = user.get(f"/api/sessions/{session['id']}/messages/").json()
    assert [m["id"] for m in listed] == [posted["message"]["id"], first["id"], reply["id"]]
    assert listed[1] == first  # the earlier reply is kept as it was
    assert user.get(f"/api/sessions/{session['id']}/").json()["message_count"] == 3


def test_regenerate_without_a_user_message_is_409(user: Api, admin: Api) -> None:
    session = user.new_session()
    before = admin.quiet_head()
    response = user.post(f"/api/sessions/{session['id']}/regenerate/")
    assert_error(response, 409, "nothing_to_regenerate")
    assert admin.head() == before
    assert user.get(f"/api/sessions/{session['id']}/messages/").json() == []


def test_cancel_ends_the_reply_as_cancelled_with_the_text_so_far(user: Api, admin: Api) -> None:
    session = user.new_session(max_tokens=2000, temperature=1.0)
    posted = user.post_message(session["id"], LONG_PROMPT)
    response = user.post(f"/api/sessions/{session['id']}/cancel/")
    assert response.status_code == 202
    assert response.json() == {"status": "cancelling"}
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    assert reply["status"] == "cancelled"
    assert reply["metadata"]["finish_reason"] == "cancelled"
    events = reply_events(admin, session["id"], reply["id"])
    assert events[-1]["type"] == "ChatSession.ReplyCancelled"
    pieces = "".join(e["data"]["text"] for e in events
                     if e["type"] == "ChatSession.TokensGenerated")
    assert reply["content"] == pieces == events[-1]["data"]["content"]
    # The session goes on: a new message gets a new reply.
    user.patch(f"/api/sessions/{session['id']}/", json={"max_tokens": 8})
    again = user.post_message(session["id"], "Hi")
    assert user.wait_reply(session["id"], again["reply"]["id"])["status"] == "complete"


def test_cancel_with_nothing_running_is_202_and_records_nothing(user: Api, admin: Api) -> None:
    session = user.new_session(max_tokens=8)
    posted = user.post_message(session["id"], "Hi")
    done = user.wait_reply(session["id"], posted["reply"]["id"])
    before = admin.quiet_head()
    response = user.post(f"/api/sessions/{session['id']}/cancel/")
    assert response.status_code == 202 and response.json() == {"status": "cancelling"}
    assert admin.head() == before
    assert user.wait_reply(session["id"], done["id"]) == done


def test_queue_positions_count_the_replies_ahead(user: Api, admin: Api) -> None:
    first = user.new_session(max_tokens=2000, temperature=1.0)
    second = user.new_session(max_tokens=2000, temperature=1.0)
    admin.quiet_head()  # nothing else is queued or generating
    a = user.post_message(first["id"], LONG_PROMPT)
    b = user.post_message(second["id"], LONG_PROMPT)
    try:
        assert a["reply"]["queue_position"] == 1
        assert b["reply"]["queue_position"] == 2
    finally:
        for session in (second, first):
            assert user.post(f"/api/sessions/{session['id']}/cancel/").status_code == 202
    assert user.wait_reply(second["id"], b["reply"]["id"])["status"] == "cancelled"
    assert user.wait_reply(first["id"], a["reply"]["id"])["status"] == "cancelled"


def test_deleting_a_session_stops_its_reply(user: Api, admin: Api) -> None:
    session = user.new_session(max_tokens=2000, temperature=1.0)
    user.post_message(session["id"], LONG_PROMPT)
    assert user.delete(f"/api/sessions/{session['id']}/").status_code == 204
    ended = wait_for_event(admin, session["id"], {"ChatSession.ReplyCancelled",
                                                  "ChatSession.ReplyCompleted"})
    assert ended["type"] == "ChatSession.ReplyCancelled"


def test_a_message_at_the_length_limit_is_accepted_and_fails_as_too_long(user: Api) -> None:
    session = user.new_session(max_tokens=16)
    content = "가" * 32_000  # far more tokens than the model's context
    posted = user.post_message(session["id"], content)
    assert posted["message"]["content"] == content
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    assert reply["status"] == "failed"
    assert reply["metadata"]["finish_reason"] == "error"
    assert reply["metadata"]["error"]["code"] == "context_too_long"
    assert reply["content"] == ""
    listed = user.get(f"/api/sessions/{session['id']}/messages/").json()
    assert listed[0]["content"] == content


def test_korean_messages_round_trip_exactly(user: Api) -> None:
    session = user.new_session(max_tokens=16, temperature=0)
    content = "서울의 날씨는 어때요?\n줄바꿈과\t탭, 이모지 🌧️, 자모 \u1112\u1161\u11ab 그대로."
    posted = user.post_message(session["id"], content)
    assert posted["message"]["content"] == content
    reply = user.wait_reply(session["id"], posted["reply"]["id"])
    listed = user.get(f"/api/sessions/{session['id']}/messages/").json()
    assert listed[0]["content"] == content
    assert listed[1]["content"] == reply["content"]
    # Byte tokens that split a syllable are joined again: nothing broken before the end.
    assert "\ufffd" not in reply["content"][:-1]
    found = user.get("/api/sessions/", params={"q": "날씨는 어때요"}).json()
    assert [s["id"] for s in found] == [session["id"]]
    assert found[0]["title"] == "서울의 날씨는 어때요?"
