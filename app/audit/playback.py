"""Replaying a past conversation with its original timing, from the session's events.

Every token batch was committed as an event with its own timestamp, so the gaps between
them are the pace the user saw. Long pauses between turns (the user reading, typing or
away for a day) are shortened to `max_gap` seconds: the replay shows the stream, not the
waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from app.event_log import LoggedEvent
from app.usecases.errors import InvalidInput

# What each event shows: (kind, text of the event or None).
ENDINGS = {"ReplyCompleted": "completed", "ReplyFailed": "failed",
           "ReplyCancelled": "cancelled", "ReplyInterrupted": "interrupted"}


@dataclass(frozen=True)
class Frame:
    at: float  # seconds after the first frame, as recorded
    position: int
    kind: str  # "user", "queued", "started", "tokens", or an ending
    text: str
    reply_id: str | None


def parse_speed(text: str) -> float | None:
    """ "1x", "10x", "2.5x" -> the factor; "max" -> None (no waiting at all)."""
    if text.strip().lower() == "max":
        return None
    try:
        factor = float(text.strip().lower().removesuffix("x"))
    except ValueError:
        factor = 0.0
    if factor <= 0 or factor != factor:
        raise InvalidInput("speed", "must be a factor like 1x or 10x, or max.")
    return factor


def frames(events: Sequence[LoggedEvent], reply_id: UUID | None = None) -> list[Frame]:
    """The session's conversation as frames; with `reply_id`, only that reply's."""
    shown: list[Frame] = []
    start = None
    for logged in events:
        event: Any = logged.event
        kind = type(event).__qualname__.split(".")[-1]
        rid = getattr(event, "reply_id", None)
        if reply_id is not None and rid != reply_id:
            continue
        start = start or event.timestamp
        at = (event.timestamp - start).total_seconds()
        frame: tuple[str, str] | None = None
        if kind == "UserMessagePosted":
            frame = ("user", event.content)
        elif kind == "ReplyQueued":
            frame = ("queued", "")
        elif kind == "ReplyStarted":
            frame = ("started", "")
        elif kind == "TokensGenerated":
            frame = ("tokens", event.text)
        elif kind in ENDINGS:
            detail = getattr(event, "message", "") if kind == "ReplyFailed" else ""
            frame = (ENDINGS[kind], detail)
        if frame is not None:
            shown.append(Frame(at, logged.position, frame[0], frame[1],
                               str(rid) if rid else None))
    return shown


def delays(shown: Sequence[Frame], speed: float | None, max_gap: float) -> list[float]:
    """Seconds to wait before each frame: the recorded gap / speed, each at most `max_gap`
    (after the speed-up); zero throughout at speed "max"."""
    waits, previous = [], None
    for frame in shown:
        gap = 0.0 if previous is None or speed is None else (frame.at - previous) / speed
        waits.append(min(max(gap, 0.0), max_gap))
        previous = frame.at
    return waits


def play(shown: Sequence[Frame], speed: float | None, max_gap: float,
         show: Callable[[Frame], None], sleep: Callable[[float], None] = time.sleep) -> float:
    """Show each frame after its delay; returns the total time waited."""
    waited = 0.0
    for frame, wait in zip(shown, delays(shown, speed, max_gap), strict=True):
        if wait > 0:
            sleep(wait)
            waited += wait
        show(frame)
    return waited
