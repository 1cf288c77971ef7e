"""The load drill, quick version: 50 idle SSE clients on other chats, 2 streaming replies
and 3 users posting, on a server of its own (drills/load.py runs 1,000 idle clients, 4
replies and 20 posters, and prints the timings; nothing here is timed): every reply ends,
streamed texts reassemble exactly, idle streams see nothing of other chats, no 5xx."""

from __future__ import annotations

from drills.load import run


def test_idle_streams_and_posters_leave_every_reply_intact() -> None:
    figures = run(idle=50, replies=2, posters=3, rounds=1, max_tokens=16, post_interval=1.0)
    assert figures["problems"] == []
    assert figures["checks"] == {
        "mismatched_replies": 0, "unfinished_replies": 0, "idle_events_of_other_chats": 0,
        "idle_streams_refused": 0, "idle_streams_ended_early": 0, "responses_5xx": 0}
    assert figures["unloaded"]["replies"] == 2 and figures["loaded"]["replies"] == 2
    assert figures["loaded"]["posts"] >= 3  # each poster posted during the measurement
    assert figures["statuses"].get(202, 0) >= 2 * 2 + 3
