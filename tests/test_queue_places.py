"""Places on the reply queue are held while a reply is recorded, so requests racing
through the recording cannot overfill the queue or one user's share (issue 7, item 6)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from app.inference.actor import InferenceActor, QueueFull, TooManyQueued, Tuning
from tests.test_actor import chat  # noqa: F401  (fixture)


def actor_with(chat: Any, **tuning: Any) -> InferenceActor:  # noqa: F811
    actor = InferenceActor(chat, lambda *_: None,  # type: ignore[arg-type]
                           Tuning(**{"timeout": 60, "flush_interval": 0.05, "flush_count": 8,
                                     **tuning}))
    actor.engine = object()  # type: ignore[assignment]  # only checked for "loaded"
    return actor


def test_a_users_share_counts_the_places_still_being_recorded(
    chat: Any, tmp_path: Path  # noqa: F811
) -> None:
    actor = actor_with(chat, max_queue=10, max_queued_per_user=2)
    with ExitStack() as held:
        assert held.enter_context(actor.place("민지")) == 1
        assert held.enter_context(actor.place("민지")) == 2
        with pytest.raises(TooManyQueued):  # two of hers are on their way to the queue
            held.enter_context(actor.place("민지"))
        assert held.enter_context(actor.place("준호")) == 3
    # Released places count no more.
    with actor.place("민지") as position:
        assert position == 1


def test_the_queue_counts_the_places_still_being_recorded(chat: Any) -> None:  # noqa: F811
    actor = actor_with(chat, max_queue=2)
    with actor.place("a"):
        actor.enqueue(uuid4(), uuid4(), 1, "a")  # taken while its place is still held
        with pytest.raises(QueueFull), actor.place("b"):
            pass
    with actor.place("b") as position:  # one waiting: room for one more
        assert position == 2
