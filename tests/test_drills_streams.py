"""The stream drill, quick version: 8 random disconnect/reconnect cycles with
Last-Event-ID (drills/streams.py runs 100): 0 lost, 0 repeated."""

from __future__ import annotations

from drills.streams import run
from tests.server import Api, ServerProcess


def test_random_reconnects_lose_and_repeat_nothing(server: ServerProcess, admin: Api) -> None:
    figures = run(server.url, cycles=8, seed=3, max_tokens=24)
    assert figures["cycles"] >= 8 and figures["replies"] >= 1
    assert figures["repeated_events"] == 0
    assert figures["mismatched_replies"] == 0 and figures["lost_chars"] == 0
