"""The crash drill, quick version: 2 kill -9 rounds with 4 users chatting (drills/crash.py
runs 100): every acknowledged write survives, no reply is left open, and the read models
equal a replay of the log."""

from __future__ import annotations

from drills.crash import run


def test_kill_9_loses_nothing_acknowledged() -> None:
    figures = run(kills=2, seed=5)
    assert figures["kills"] == 2 and figures["sessions"] >= 1
    assert figures["problems"] == []
